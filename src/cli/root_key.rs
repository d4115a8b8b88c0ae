//! The root key of an existing store whatever its source: a key file (located as `rootkey.rs`
//! says) or a passphrase (Argon2id, parameters from the keystore) read from a descriptor, a
//! systemd credential or a terminal without echo; and `ssefs change-root-key`. Prints no secret.

use super::rootkey::root_key_location;
use crate::crypto::Key256;
use crate::keystore::{
    Keystore, KeystoreError, MIN_PASSPHRASE_LEN, PassphraseKdf, create_root_key_file, keystore_dir,
    load_root_key_file, read_passphrase_kdf,
};
use crate::store::Store;
use clap::Args;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The credential name for a passphrase given by systemd (`LoadCredential=passphrase:...`).
pub const PASSPHRASE_CREDENTIAL: &str = "passphrase";
/// The environment variable naming a descriptor to read the passphrase from (for commands
/// without `--passphrase-fd`, such as `ssefs mount`).
pub const PASSPHRASE_FD_ENV: &str = "SSEFS_PASSPHRASE_FD";
/// The longest passphrase read.
const MAX_PASSPHRASE_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error("{0}")]
    Passphrase(String),
}

/// A passphrase, wiped when dropped.
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    fn new(mut bytes: Vec<u8>) -> Result<Passphrase, RootKeyError> {
        // One trailing newline is the end of the line, not part of the passphrase.
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let bytes = Zeroizing::new(bytes);
        if bytes.is_empty() {
            return Err(RootKeyError::Passphrase("the passphrase is empty".into()));
        }
        Ok(Passphrase(bytes))
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

/// Reads a passphrase from the open descriptor `fd` (to its end or the first newline).
pub fn read_passphrase_fd(fd: i32) -> Result<Passphrase, RootKeyError> {
    let bad =
        |what: String| RootKeyError::Passphrase(format!("passphrase descriptor {fd}: {what}"));
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("not an open file descriptor".into()));
    }
    // SAFETY: the descriptor is open and handed to this process to be read and closed.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.take(MAX_PASSPHRASE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    let bytes = Zeroizing::new(bytes);
    if bytes.len() > MAX_PASSPHRASE_LEN {
        return Err(bad(format!("longer than {MAX_PASSPHRASE_LEN} bytes")));
    }
    let line = bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(&bytes[..], |end| &bytes[..=end]);
    Passphrase::new(line.to_vec())
}

fn read_passphrase_file(path: &Path) -> Result<Passphrase, RootKeyError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        RootKeyError::Passphrase(format!("passphrase credential {}: {e}", path.display()))
    })?);
    Passphrase::new(bytes.to_vec())
}

fn prompt(text: &str) -> Result<Passphrase, RootKeyError> {
    let typed = rpassword::prompt_password(text)
        .map_err(|e| RootKeyError::Passphrase(format!("cannot read the passphrase: {e}")))?;
    Passphrase::new(Zeroizing::new(typed).as_bytes().to_vec())
}

fn fd_from_env() -> Result<Option<i32>, RootKeyError> {
    match std::env::var(PASSPHRASE_FD_ENV) {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| {
            RootKeyError::Passphrase(format!("{PASSPHRASE_FD_ENV}={v:?} is not a descriptor"))
        }),
        _ => Ok(None),
    }
}

/// The passphrase of an existing store: from `fd` (or `$SSEFS_PASSPHRASE_FD`), else the
/// credential `$CREDENTIALS_DIRECTORY/passphrase`, else asked on the terminal.
pub fn existing_passphrase(store: &Path, fd: Option<i32>) -> Result<Passphrase, RootKeyError> {
    if let Some(fd) = fd.map_or_else(fd_from_env, |fd| Ok(Some(fd)))? {
        return read_passphrase_fd(fd);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join(PASSPHRASE_CREDENTIAL);
        if path.exists() {
            return read_passphrase_file(&path);
        }
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("Passphrase for store {}: ", store.display()));
    }
    Err(RootKeyError::Passphrase(format!(
        "the root key of store {} comes from a passphrase: give --passphrase-fd N (or \
         {PASSPHRASE_FD_ENV}=N), the credential {PASSPHRASE_CREDENTIAL}, or run on a terminal",
        store.display()
    )))
}

/// A new passphrase: from `fd`, else typed twice on the terminal. At least 8 bytes.
pub fn new_passphrase(fd: Option<i32>) -> Result<Passphrase, RootKeyError> {
    let passphrase = match fd {
        Some(fd) => read_passphrase_fd(fd)?,
        None if std::io::stdin().is_terminal() => {
            let first = prompt("New passphrase: ")?;
            let again = prompt("New passphrase again: ")?;
            if first.expose_secret() != again.expose_secret() {
                return Err(RootKeyError::Passphrase("the passphrases differ".into()));
            }
            first
        }
        None => {
            return Err(RootKeyError::Passphrase(
                "give the new passphrase with --new-passphrase-fd N or run on a terminal".into(),
            ));
        }
    };
    if passphrase.expose_secret().len() < MIN_PASSPHRASE_LEN {
        return Err(RootKeyError::Passphrase(format!(
            "the passphrase is shorter than {MIN_PASSPHRASE_LEN} bytes"
        )));
    }
    Ok(passphrase)
}

/// The root key of the store at `store`: the key file `explicit` when given; else, when the
/// keystore records passphrase parameters, the key derived from the passphrase (see
/// [`existing_passphrase`]); else the key file at the usual place.
pub fn load_root_key(
    store: &Path,
    explicit: Option<&Path>,
    passphrase_fd: Option<i32>,
) -> Result<Key256, RootKeyError> {
    if explicit.is_none() {
        if let Some(kdf) = read_passphrase_kdf(&keystore_dir(store))? {
            let passphrase = existing_passphrase(store, passphrase_fd)?;
            return Ok(kdf.derive(passphrase.expose_secret())?);
        }
    }
    let location = root_key_location(explicit, store)?;
    Ok(load_root_key_file(&location.path)?)
}

/// Opens a store's keystore with its root key from any source.
pub fn open_keystore(
    store: &Path,
    explicit: Option<&Path>,
    passphrase_fd: Option<i32>,
) -> Result<Keystore, String> {
    let key = load_root_key(store, explicit, passphrase_fd).map_err(|e| e.to_string())?;
    Keystore::open(&keystore_dir(store), &key).map_err(|e| match e {
        KeystoreError::WrongRootKey => format!(
            "store {}: wrong root key{}",
            store.display(),
            if explicit.is_none()
                && read_passphrase_kdf(&keystore_dir(store)).is_ok_and(|k| k.is_some())
            {
                " (wrong passphrase?)"
            } else {
                ""
            }
        ),
        e => format!("store {}: {e}", store.display()),
    })
}

#[derive(Args, Debug)]
pub struct ChangeRootKeyArgs {
    #[arg(long, value_name = "STORE")]
    pub store: PathBuf,
    /// The current root key file [default: the store's passphrase, or the key file as for
    /// `ssefs mount`].
    #[arg(long, value_name = "FILE")]
    pub root_key: Option<PathBuf>,
    /// Read the current passphrase from this file descriptor.
    #[arg(long, value_name = "N")]
    pub passphrase_fd: Option<i32>,
    /// The new root key file: used if it exists, else created (32 random bytes, mode 0600).
    #[arg(long, value_name = "FILE", required_unless_present = "new_passphrase")]
    pub new_root_key: Option<PathBuf>,
    /// Derive the new root key from a new passphrase (typed twice, or --new-passphrase-fd).
    #[arg(long, conflicts_with = "new_root_key")]
    pub new_passphrase: bool,
    /// Read the new passphrase from this file descriptor.
    #[arg(long, value_name = "N", requires = "new_passphrase")]
    pub new_passphrase_fd: Option<i32>,
}

/// Runs `ssefs change-root-key`: refused while the store is mounted (the daemon holds the old
/// key), one keystore transaction, no object touched.
pub fn run_change(args: &ChangeRootKeyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open_locked(&args.store)
        .map_err(|e| format!("{e}; unmount the store before changing its root key"))?;
    let keystore = open_keystore(store.root(), args.root_key.as_deref(), args.passphrase_fd)?;
    let (new_key, kdf, created) = match &args.new_root_key {
        Some(path) => {
            if let Some(parent) = path.parent() {
                let inside = parent
                    .canonicalize()
                    .is_ok_and(|p| p.starts_with(store.root()));
                if inside {
                    return Err(format!(
                        "the new root key {} would be inside the store; keep it apart",
                        path.display()
                    )
                    .into());
                }
            }
            if std::fs::symlink_metadata(path).is_ok() {
                (load_root_key_file(path)?, None, None)
            } else {
                (create_root_key_file(path)?, None, Some(path.clone()))
            }
        }
        None => {
            let passphrase = new_passphrase(args.new_passphrase_fd)?;
            let kdf = PassphraseKdf::generate()?;
            (kdf.derive(passphrase.expose_secret())?, Some(kdf), None)
        }
    };
    let changed = keystore.change_root_key(&new_key, kdf.as_ref());
    let change = match changed {
        Ok(change) => change,
        Err(e) => {
            if let Some(path) = created {
                let _ = std::fs::remove_file(path);
            }
            return Err(format!("the root key is unchanged: {e}").into());
        }
    };
    drop(store);
    println!(
        "re-wrapped {} master key version(s), {} CMK material(s) and {} import parameter(s) \
         under the new root key{}; the old root key no longer opens this store (keystore \
         backups made before still need it)",
        change.master_keys,
        change.cmk_materials,
        change.import_params,
        match (&args.new_root_key, created.is_some()) {
            (Some(path), true) => format!(" (new key file {}: back it up)", path.display()),
            (Some(path), false) => format!(" {}", path.display()),
            (None, _) => " (derived from the new passphrase)".to_string(),
        }
    );
    Ok(())
}

/// Creates a store whose root key comes from a passphrase (`ssefs init --passphrase`).
pub fn run_init(
    store: &Path,
    passphrase_fd: Option<i32>,
) -> Result<(), Box<dyn std::error::Error>> {
    let passphrase = new_passphrase(passphrase_fd)?;
    let store_id = super::init::init_with_passphrase(store, passphrase.expose_secret())?;
    println!(
        "created store {} (id {store_id}) whose root key is derived from your passphrase; \
         without the passphrase nothing in the store can be read",
        store.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_newline_ends_the_passphrase_and_empty_is_refused() {
        assert_eq!(
            Passphrase::new(b"abc\n".to_vec()).unwrap().expose_secret(),
            b"abc"
        );
        assert_eq!(
            Passphrase::new(b"abc\r\n".to_vec())
                .unwrap()
                .expose_secret(),
            b"abc"
        );
        assert_eq!(
            Passphrase::new(b"a b ".to_vec()).unwrap().expose_secret(),
            b"a b "
        );
        assert!(Passphrase::new(b"\n".to_vec()).is_err());
        assert!(Passphrase::new(Vec::new()).is_err());
    }

    #[test]
    fn a_passphrase_is_read_from_a_pipe_up_to_the_first_newline() {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the write end is ours; written and closed here.
        let mut w = unsafe { File::from_raw_fd(fds[1]) };
        std::io::Write::write_all(&mut w, b"correct horse\nrest").unwrap();
        drop(w);
        let p = read_passphrase_fd(fds[0]).unwrap();
        assert_eq!(p.expose_secret(), b"correct horse");
        assert!(read_passphrase_fd(-1).is_err());
        assert!(read_passphrase_fd(987_654).is_err());
    }
}

//! The one way every command gets a store's root key: `--root-key FILE`, `--passphrase-fd N`,
//! a PKCS#11 token (`--pkcs11-module`, `--token-label`, `--key-label`, `--pin-fd N`),
//! `$SSEFS_ROOT_KEY_FILE`, `$SSEFS_PASSPHRASE_FD`, `$SSEFS_PKCS11_PIN_FD`, the systemd
//! credentials `root-key`, `passphrase` and `pkcs11-pin`, the per-store key file in the user's
//! config directory, or the terminal; and the `--store` and key arguments every command
//! shares. Checks the owner and mode of every secret file it reads; loading and parsing a key
//! file and talking to a token are the keystore's. Prints no secret.

use crate::crypto::Key256;
use crate::keystore::{
    Keystore, KeystoreError, StoreId, TokenKeyName, TokenPin, TokenRoot, keystore_dir,
    load_root_key_file, new_token_root, read_passphrase_kdf, read_token_root, unwrap_token_root,
};
use clap::Args;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{IsTerminal, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable naming the root key file.
pub const ROOT_KEY_ENV: &str = "SSEFS_ROOT_KEY_FILE";
/// The environment variable naming a descriptor to read the passphrase from.
pub const PASSPHRASE_FD_ENV: &str = "SSEFS_PASSPHRASE_FD";
/// The credential name for systemd's `LoadCredential=root-key:...`.
pub const ROOT_KEY_CREDENTIAL: &str = "root-key";
/// The credential name for a passphrase given by systemd (`LoadCredential=passphrase:...`).
pub const PASSPHRASE_CREDENTIAL: &str = "passphrase";
/// The environment variable naming a descriptor to read a token's PIN from.
pub const PIN_FD_ENV: &str = "SSEFS_PKCS11_PIN_FD";
/// The credential name for a token's PIN given by systemd (`LoadCredential=pkcs11-pin:...`).
pub const PIN_CREDENTIAL: &str = "pkcs11-pin";
/// The longest passphrase read.
const MAX_PASSPHRASE_LEN: usize = 4096;

/// `--store STORE` (and, for a store in an object store, `--endpoint` and `--region`),
/// shared by every command that works on a store by name.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// The store: the backing directory made by `ssefs init`, or s3://BUCKET[/PREFIX] for a
    /// store in an S3-compatible object store.
    #[arg(long, global = true, value_name = "STORE")]
    pub store: Option<PathBuf>,
    /// The object store's URL, for an s3:// store (http://HOST:PORT or https://HOST)
    /// [default: $AWS_ENDPOINT_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The object store's region, for an s3:// store [default: $AWS_REGION, else us-east-1].
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// The store as the user named it, when `store` is a working copy of a remote store's
    /// keystore: what messages call it.
    #[arg(skip)]
    pub named: Option<PathBuf>,
}

impl StoreArgs {
    /// The store path; an error naming the option when it was not given, or when it names a
    /// remote store (the commands that work on one are given a local working copy instead).
    pub fn path(&self) -> Result<&Path, RootKeyError> {
        let path = self.store.as_deref().ok_or(RootKeyError::MissingStore)?;
        if path.to_str().is_some_and(crate::store::remote::is_remote) {
            return Err(RootKeyError::RemoteStore(path.to_path_buf()));
        }
        Ok(path)
    }

    /// The store as the user named it, for messages (the URL of a remote store, not its
    /// working copy).
    pub fn name(&self) -> &Path {
        self.named
            .as_deref()
            .or(self.store.as_deref())
            .unwrap_or(Path::new(""))
    }
}

/// How to give the root key of an existing store, shared by every command that needs one.
#[derive(Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// The root key file [default: $SSEFS_ROOT_KEY_FILE, else $CREDENTIALS_DIRECTORY/root-key,
    /// else ~/.config/ssefs/keys/STORE-ID.key].
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "passphrase_fd"
    )]
    pub root_key: Option<PathBuf>,
    /// For a store whose root key comes from a passphrase: read the passphrase from this file
    /// descriptor [default: $SSEFS_PASSPHRASE_FD, else $CREDENTIALS_DIRECTORY/passphrase, else
    /// asked on the terminal].
    #[arg(long, global = true, value_name = "N")]
    pub passphrase_fd: Option<i32>,
    /// For a store whose root of trust is a PKCS#11 token: the module to load [default: the
    /// one the keystore records].
    #[arg(long, global = true, value_name = "LIB", conflicts_with_all = ["root_key", "passphrase_fd"])]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the token holding the store's key [default: the one the keystore records].
    #[arg(long, global = true, value_name = "T", conflicts_with_all = ["root_key", "passphrase_fd"])]
    pub token_label: Option<String>,
    /// The label of the store's AES key in the token [default: the one the keystore records].
    #[arg(long, global = true, value_name = "K", conflicts_with_all = ["root_key", "passphrase_fd"])]
    pub key_label: Option<String>,
    /// Read the token's user PIN from this file descriptor [default: $SSEFS_PKCS11_PIN_FD, else
    /// $CREDENTIALS_DIRECTORY/pkcs11-pin, else asked on the terminal].
    #[arg(long, global = true, value_name = "N", conflicts_with_all = ["root_key", "passphrase_fd"])]
    pub pin_fd: Option<i32>,
}

impl KeyArgs {
    /// Whether any token option was given.
    fn names_a_token(&self) -> bool {
        self.pkcs11_module.is_some()
            || self.token_label.is_some()
            || self.key_label.is_some()
            || self.pin_fd.is_some()
    }

    /// The recorded token root with the module and labels given on the command line put in
    /// place of the recorded ones (a module installed elsewhere, a token relabelled).
    fn token_root(&self, mut root: TokenRoot) -> TokenRoot {
        if let Some(module) = &self.pkcs11_module {
            root.name.module = module.clone();
        }
        if let Some(token) = &self.token_label {
            root.name.token = token.clone();
        }
        if let Some(key) = &self.key_label {
            root.name.key = key.clone();
        }
        root
    }
}

/// The token key of a new root of trust (`ssefs init`, `change-root-key`): all three names.
pub fn token_key_name(
    module: Option<&Path>,
    token: Option<&str>,
    key: Option<&str>,
) -> Result<TokenKeyName, RootKeyError> {
    match (module, token, key) {
        (Some(module), Some(token), Some(key)) if !token.is_empty() && !key.is_empty() => {
            Ok(TokenKeyName {
                module: module.to_path_buf(),
                token: token.to_string(),
                key: key.to_string(),
            })
        }
        _ => Err(RootKeyError::IncompleteToken),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    #[error("--store STORE is required (the backing directory made by `ssefs init`)")]
    MissingStore,
    #[error("{} is a remote store, which this command does not support yet", .0.display())]
    RemoteStore(PathBuf),
    /// No root key was given and none is at the default place.
    #[error(
        "no root key at {} (from {origin}): the file {} does not exist; give the root key of \
         store {} with --root-key FILE, ${ROOT_KEY_ENV}=FILE, the systemd credential \
         {ROOT_KEY_CREDENTIAL} (LoadCredential={ROOT_KEY_CREDENTIAL}:FILE), or put it at the \
         default place ~/.config/ssefs/keys/STORE-ID.key",
        path.display(),
        path.display(),
        store.display()
    )]
    MissingKeyFile {
        store: PathBuf,
        path: PathBuf,
        origin: &'static str,
    },
    /// No root key was given and there is no default place.
    #[error(
        "no root key for store {}: neither $HOME nor $XDG_CONFIG_HOME is set, so there is no \
         default place; give it with --root-key FILE, ${ROOT_KEY_ENV}=FILE or the systemd \
         credential {ROOT_KEY_CREDENTIAL} (LoadCredential={ROOT_KEY_CREDENTIAL}:FILE)",
        store.display()
    )]
    NoKeyLocation { store: PathBuf },
    /// A passphrase store and no way to read the passphrase.
    #[error(
        "the root key of store {} comes from a passphrase and none was given: give \
         --passphrase-fd N, ${PASSPHRASE_FD_ENV}=N, the systemd credential \
         {PASSPHRASE_CREDENTIAL} (LoadCredential={PASSPHRASE_CREDENTIAL}:FILE), or run on a \
         terminal",
        store.display()
    )]
    MissingPassphrase { store: PathBuf },
    #[error(
        "--passphrase-fd was given, but the root key of store {} is a key file, not a \
         passphrase: give --root-key FILE (or ${ROOT_KEY_ENV}) instead",
        store.display()
    )]
    NotAPassphraseStore { store: PathBuf },
    /// A token store and no way to read the PIN.
    #[error(
        "the root of trust of store {} is the key {key:?} in token {token:?}, and no PIN was \
         given: give --pin-fd N, ${PIN_FD_ENV}=N, the systemd credential {PIN_CREDENTIAL} \
         (LoadCredential={PIN_CREDENTIAL}:FILE), or run on a terminal",
        store.display()
    )]
    MissingPin {
        store: PathBuf,
        token: String,
        key: String,
    },
    #[error(
        "token options (--pkcs11-module, --token-label, --key-label, --pin-fd) were given, but \
         the root key of store {} is not in a token",
        store.display()
    )]
    NotATokenStore { store: PathBuf },
    #[error(
        "a token root of trust needs all of --pkcs11-module LIB, --token-label T and \
         --key-label K"
    )]
    IncompleteToken,
    #[error("${PIN_FD_ENV}={0:?} is not a descriptor number")]
    PinFdEnv(String),
    #[error("store {}: wrong root key{}", store.display(), if *passphrase { " (wrong passphrase?)" } else { "" })]
    WrongRootKey { store: PathBuf, passphrase: bool },
    #[error(
        "{} is owned by uid {owner}; a secret file must be owned by you (uid {me}) or root: \
         run `chown {me} {}`",
        path.display(),
        path.display()
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{} has mode {mode:04o}, which gives group or others access to a secret; run \
         `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} descriptor {fd}: {problem}")]
    PassphraseFd {
        what: &'static str,
        fd: i32,
        problem: String,
    },
    #[error("${PASSPHRASE_FD_ENV}={0:?} is not a descriptor number")]
    PassphraseFdEnv(String),
    #[error("{0}")]
    Passphrase(&'static str),
    #[error("the passphrase is shorter than {0} bytes")]
    PassphraseTooShort(usize),
    #[error("cannot read the passphrase from the terminal: {0}")]
    Terminal(std::io::Error),
    #[error("store {}: {source}", store.display())]
    Store {
        store: PathBuf,
        source: KeystoreError,
    },
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

impl RootKeyError {
    fn store(store: &Path) -> impl FnOnce(KeystoreError) -> RootKeyError + '_ {
        move |source| RootKeyError::Store {
            store: store.to_path_buf(),
            source,
        }
    }
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
            return Err(RootKeyError::Passphrase("the passphrase is empty"));
        }
        Ok(Passphrase(bytes))
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

/// The effective uid of this process, the owner a secret file must have (or root).
fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses a secret file (root key, passphrase credential, key material) owned by someone
/// other than this process's user or root, or readable or writable by group or others.
pub fn check_secret_file(path: &Path, meta: &Metadata) -> Result<(), RootKeyError> {
    let me = my_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(RootKeyError::ForeignOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(RootKeyError::InsecureMode {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Opens a secret file for reading after [`check_secret_file`] on the open file.
pub fn open_secret_file(path: &Path, what: &'static str) -> Result<File, RootKeyError> {
    let read_error = |source| RootKeyError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    check_secret_file(path, &meta)?;
    Ok(file)
}

/// Makes this process undumpable (no core file, no ptrace by other users, `/proc/PID` owned
/// by root): called at the start of every command that unwraps keys.
pub fn make_undumpable() {
    if let Err(e) = crate::sys::make_undumpable() {
        eprintln!("ssefs: warning: cannot disable core dumps: {e}");
    }
}

/// Reads a passphrase from the open descriptor `fd` (to its end or the first newline).
pub fn read_passphrase_fd(fd: i32) -> Result<Passphrase, RootKeyError> {
    read_secret_fd(fd, "passphrase")
}

/// Reads a passphrase or PIN (`what`, for messages) from the open descriptor `fd`, to its
/// end or the first newline.
fn read_secret_fd(fd: i32, what: &'static str) -> Result<Passphrase, RootKeyError> {
    let bad = |problem: String| RootKeyError::PassphraseFd { what, fd, problem };
    let file = File::from(
        crate::sys::adopt_inherited_fd(fd)
            .map_err(|_| bad("not an open file descriptor".into()))?,
    );
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PASSPHRASE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
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
    read_secret_file(path, "the passphrase credential")
}

/// A passphrase or PIN credential file: private, to its end, one trailing newline dropped.
fn read_secret_file(path: &Path, what: &'static str) -> Result<Passphrase, RootKeyError> {
    let mut file = open_secret_file(path, what)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|source| RootKeyError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    Passphrase::new(bytes.to_vec())
}

fn prompt(text: &str) -> Result<Passphrase, RootKeyError> {
    let typed = rpassword::prompt_password(text).map_err(RootKeyError::Terminal)?;
    Passphrase::new(Zeroizing::new(typed).as_bytes().to_vec())
}

/// The process environment, as the location functions take it (tests pass their own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn env_var(env: Env<'_>, name: &str) -> Option<OsString> {
    env(name).filter(|v| !v.is_empty())
}

fn fd_from_env(env: Env<'_>) -> Result<Option<i32>, RootKeyError> {
    fd_from(env, PASSPHRASE_FD_ENV, RootKeyError::PassphraseFdEnv)
}

fn fd_from(
    env: Env<'_>,
    name: &str,
    bad: fn(String) -> RootKeyError,
) -> Result<Option<i32>, RootKeyError> {
    match env_var(env, name) {
        Some(v) => {
            let text = v.to_string_lossy().into_owned();
            text.parse().map(Some).map_err(|_| bad(text))
        }
        None => Ok(None),
    }
}

/// The user PIN of the token holding `name`: from `fd` (or `$SSEFS_PKCS11_PIN_FD`), else the
/// credential `$CREDENTIALS_DIRECTORY/pkcs11-pin`, else asked on the terminal. Never from the
/// command line or a plain environment variable.
pub fn token_pin(
    store: &Path,
    fd: Option<i32>,
    name: &TokenKeyName,
) -> Result<TokenPin, RootKeyError> {
    let env: Env<'_> = &process_env;
    let fd = match fd {
        Some(fd) => Some(fd),
        None => fd_from(env, PIN_FD_ENV, RootKeyError::PinFdEnv)?,
    };
    let pin = if let Some(fd) = fd {
        read_secret_fd(fd, "PIN")?
    } else {
        let credential = env_var(env, "CREDENTIALS_DIRECTORY")
            .map(|dir| PathBuf::from(dir).join(PIN_CREDENTIAL))
            .filter(|path| path.exists());
        match credential {
            Some(path) => read_secret_file(&path, "the PIN credential")?,
            None if std::io::stdin().is_terminal() => {
                prompt(&format!("User PIN of token {:?}: ", name.token))?
            }
            None => {
                return Err(RootKeyError::MissingPin {
                    store: store.to_path_buf(),
                    token: name.token.clone(),
                    key: name.key.clone(),
                });
            }
        }
    };
    TokenPin::new(pin.expose_secret()).map_err(|e| RootKeyError::Keystore(e.into()))
}

/// A new root secret for `store_id`, encrypted by the token key `name` (created when `create`
/// and absent), with the PIN from [`token_pin`].
pub fn new_token_secret(
    store: &Path,
    name: &TokenKeyName,
    pin_fd: Option<i32>,
    store_id: &StoreId,
    create: bool,
) -> Result<(Key256, TokenRoot), RootKeyError> {
    let pin = token_pin(store, pin_fd, name)?;
    new_token_root(name, &pin, store_id, create).map_err(RootKeyError::store(store))
}

/// The root secret that `root` (recorded in the keystore or a backup, the command line's
/// names in place) gives in its token.
pub fn token_root_key(
    store: &Path,
    key: &KeyArgs,
    root: TokenRoot,
    store_id: &StoreId,
) -> Result<Key256, RootKeyError> {
    let root = key.token_root(root);
    let pin = token_pin(store, key.pin_fd, &root.name)?;
    unwrap_token_root(&root, &pin, store_id).map_err(RootKeyError::store(store))
}

/// The passphrase of an existing store: from `fd` (or `$SSEFS_PASSPHRASE_FD`), else the
/// credential `$CREDENTIALS_DIRECTORY/passphrase`, else asked on the terminal.
pub fn existing_passphrase(store: &Path, fd: Option<i32>) -> Result<Passphrase, RootKeyError> {
    let env: Env<'_> = &process_env;
    if let Some(fd) = fd.map_or_else(|| fd_from_env(env), |fd| Ok(Some(fd)))? {
        return read_passphrase_fd(fd);
    }
    if let Some(dir) = env_var(env, "CREDENTIALS_DIRECTORY") {
        let path = PathBuf::from(dir).join(PASSPHRASE_CREDENTIAL);
        if path.exists() {
            return read_passphrase_file(&path);
        }
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("Passphrase for store {}: ", store.display()));
    }
    Err(RootKeyError::MissingPassphrase {
        store: store.to_path_buf(),
    })
}

/// A new passphrase: from `fd`, else typed twice on the terminal. At least 8 bytes.
pub fn new_passphrase(fd: Option<i32>, option: &'static str) -> Result<Passphrase, RootKeyError> {
    let passphrase = match fd {
        Some(fd) => read_passphrase_fd(fd)?,
        None if std::io::stdin().is_terminal() => {
            let first = prompt("New passphrase: ")?;
            let again = prompt("New passphrase again: ")?;
            if first.expose_secret() != again.expose_secret() {
                return Err(RootKeyError::Passphrase("the passphrases differ"));
            }
            first
        }
        None => {
            return Err(RootKeyError::Passphrase(option));
        }
    };
    if passphrase.expose_secret().len() < crate::keystore::MIN_PASSPHRASE_LEN {
        return Err(RootKeyError::PassphraseTooShort(
            crate::keystore::MIN_PASSPHRASE_LEN,
        ));
    }
    Ok(passphrase)
}

/// How the root key path was chosen (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKeyOrigin {
    /// `--root-key FILE`.
    Option,
    /// `$SSEFS_ROOT_KEY_FILE`.
    Environment,
    /// `$CREDENTIALS_DIRECTORY/root-key` (systemd `LoadCredential=`).
    Credential,
    /// `$XDG_CONFIG_HOME/ssefs/keys/<store-id>.key` (or `~/.config/...`).
    ConfigDir,
}

impl RootKeyOrigin {
    fn describe(self) -> &'static str {
        match self {
            RootKeyOrigin::Option => "--root-key",
            RootKeyOrigin::Environment => ROOT_KEY_ENV,
            RootKeyOrigin::Credential => "the credential root-key",
            RootKeyOrigin::ConfigDir => "the default place",
        }
    }
}

/// A root key path and how it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootKeyLocation {
    pub path: PathBuf,
    pub origin: RootKeyOrigin,
}

/// The root key location, in order: `explicit`, `$SSEFS_ROOT_KEY_FILE`,
/// `$CREDENTIALS_DIRECTORY/root-key` if that file exists, else
/// `$XDG_CONFIG_HOME/ssefs/keys/<store-id>.key` (`$HOME/.config/...` when `XDG_CONFIG_HOME`
/// is unset or not absolute). Empty variables count as unset. `store_id` is asked for only
/// when the last case applies.
pub fn locate_root_key(
    explicit: Option<&Path>,
    env: Env<'_>,
    store_id: impl FnOnce() -> Result<StoreId, KeystoreError>,
) -> Result<RootKeyLocation, KeystoreError> {
    let var = |name: &str| env_var(env, name).map(PathBuf::from);
    let at = |path: PathBuf, origin| RootKeyLocation { path, origin };
    if let Some(path) = explicit {
        return Ok(at(path.to_path_buf(), RootKeyOrigin::Option));
    }
    if let Some(path) = var(ROOT_KEY_ENV) {
        return Ok(at(path, RootKeyOrigin::Environment));
    }
    if let Some(dir) = var("CREDENTIALS_DIRECTORY") {
        let path = dir.join(ROOT_KEY_CREDENTIAL);
        if path.exists() {
            return Ok(at(path, RootKeyOrigin::Credential));
        }
    }
    let config = var("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| home.join(".config")))
        .ok_or(KeystoreError::NoRootKeyLocation)?;
    let file = format!("{}.key", store_id()?);
    Ok(at(
        config.join("ssefs").join("keys").join(file),
        RootKeyOrigin::ConfigDir,
    ))
}

/// The root key location of an existing store, `explicit` (`--root-key`) first.
pub fn root_key_location(
    explicit: Option<&Path>,
    store: &Path,
) -> Result<RootKeyLocation, RootKeyError> {
    locate_root_key(explicit, &process_env, || {
        Keystore::read_store_id(&keystore_dir(store))
    })
    .map_err(|e| match e {
        KeystoreError::NoRootKeyLocation => RootKeyError::NoKeyLocation {
            store: store.to_path_buf(),
        },
        e => RootKeyError::store(store)(e),
    })
}

/// Loads the key file at `location` after checking its owner and mode; a missing file is a
/// [`RootKeyError::MissingKeyFile`] that lists the ways to give one.
pub fn load_key_file(store: &Path, location: &RootKeyLocation) -> Result<Key256, RootKeyError> {
    let path = &location.path;
    match std::fs::metadata(path) {
        Ok(meta) => check_secret_file(path, &meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RootKeyError::MissingKeyFile {
                store: store.to_path_buf(),
                path: path.clone(),
                origin: location.origin.describe(),
            });
        }
        Err(source) => {
            return Err(RootKeyError::Read {
                what: "the root key file",
                path: path.clone(),
                source,
            });
        }
    }
    Ok(load_root_key_file(path)?)
}

/// Whether the store's root key comes from a passphrase (its keystore records the KDF).
fn passphrase_kdf(store: &Path) -> Result<Option<crate::keystore::PassphraseKdf>, RootKeyError> {
    read_passphrase_kdf(&keystore_dir(store)).map_err(RootKeyError::store(store))
}

/// The root key of the store at `store` from whatever `key` and the environment give: the
/// key file `--root-key`; else, when the keystore records a token root of trust, the secret
/// the token decrypts (see [`token_pin`]); else, when the keystore records passphrase parameters, the key
/// derived from the passphrase (see [`existing_passphrase`]); else the key file found by
/// [`locate_root_key`].
pub fn load_root_key(store: &Path, key: &KeyArgs) -> Result<Key256, RootKeyError> {
    if key.root_key.is_none() {
        let dir = keystore_dir(store);
        if let Some(root) = read_token_root(&dir).map_err(RootKeyError::store(store))? {
            let store_id = Keystore::read_store_id(&dir).map_err(RootKeyError::store(store))?;
            return token_root_key(store, key, root, &store_id);
        }
        if key.names_a_token() {
            return Err(RootKeyError::NotATokenStore {
                store: store.to_path_buf(),
            });
        }
        if let Some(kdf) = passphrase_kdf(store)? {
            let passphrase = existing_passphrase(store, key.passphrase_fd)?;
            return kdf
                .derive(passphrase.expose_secret())
                .map_err(RootKeyError::store(store));
        }
        if key.passphrase_fd.is_some() {
            return Err(RootKeyError::NotAPassphraseStore {
                store: store.to_path_buf(),
            });
        }
    }
    let location = root_key_location(key.root_key.as_deref(), store)?;
    load_key_file(store, &location)
}

/// Opens a store's keystore with its root key from any source.
pub fn open_keystore(store: &Path, key: &KeyArgs) -> Result<Keystore, RootKeyError> {
    let root_key = load_root_key(store, key)?;
    open_with(store, key, &root_key)
}

/// Opens a store's keystore with a root key already loaded by [`load_root_key`].
pub fn open_with(store: &Path, key: &KeyArgs, root_key: &Key256) -> Result<Keystore, RootKeyError> {
    Keystore::open(&keystore_dir(store), root_key).map_err(|e| match e {
        KeystoreError::WrongRootKey => RootKeyError::WrongRootKey {
            store: store.to_path_buf(),
            passphrase: key.root_key.is_none() && matches!(passphrase_kdf(store), Ok(Some(_))),
        },
        e => RootKeyError::store(store)(e),
    })
}

/// Whether an error only says that no root key was given (so a command that can work
/// without one may go on and say what it could not verify).
pub fn is_missing_key(e: &RootKeyError) -> bool {
    matches!(
        e,
        RootKeyError::MissingKeyFile { .. }
            | RootKeyError::NoKeyLocation { .. }
            | RootKeyError::MissingPassphrase { .. }
            | RootKeyError::MissingPin { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_trailing_newline_ends_the_passphrase_and_empty_is_refused() {
        let text = |b: &[u8]| {
            Passphrase::new(b.to_vec())
                .unwrap()
                .expose_secret()
                .to_vec()
        };
        assert_eq!(text(b"abc\n"), b"abc");
        assert_eq!(text(b"abc\r\n"), b"abc");
        assert_eq!(text(b"a b "), b"a b ");
        assert!(Passphrase::new(b"\n".to_vec()).is_err());
        assert!(Passphrase::new(Vec::new()).is_err());
    }

    #[test]
    fn a_passphrase_is_read_from_a_pipe_up_to_the_first_newline() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut w = File::from(w);
        std::io::Write::write_all(&mut w, b"correct horse\nrest").unwrap();
        drop(w);
        let fd = std::os::fd::IntoRawFd::into_raw_fd(r);
        let p = read_passphrase_fd(fd).unwrap();
        assert_eq!(p.expose_secret(), b"correct horse");
        assert!(read_passphrase_fd(-1).is_err());
        assert!(read_passphrase_fd(987_654).is_err());
    }

    #[test]
    fn a_secret_file_must_be_private_and_owned_by_the_caller_or_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"x").unwrap();
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            open_secret_file(&path, "a secret").unwrap();
        }
        for mode in [0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = open_secret_file(&path, "a secret").unwrap_err();
            assert!(matches!(err, RootKeyError::InsecureMode { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if my_uid() == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let err = open_secret_file(&path, "a secret").unwrap_err();
            assert!(
                matches!(err, RootKeyError::ForeignOwner { owner: 65534, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("chown 0"), "{err}");
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn id() -> StoreId {
        StoreId::from_bytes([0x11; 16])
    }

    fn never() -> Result<StoreId, KeystoreError> {
        panic!("the store id is not needed here")
    }

    #[test]
    fn explicit_option_wins() {
        let env = env_of(&[(ROOT_KEY_ENV, "/env.key"), ("HOME", "/home/u")]);
        let got = locate_root_key(Some(Path::new("/opt.key")), &env, never).unwrap();
        assert_eq!(got.path, Path::new("/opt.key"));
        assert_eq!(got.origin, RootKeyOrigin::Option);
    }

    #[test]
    fn environment_comes_before_credentials_and_config() {
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("root-key"), [0u8; 32]).unwrap();
        let creds_dir = creds.path().to_str().unwrap();
        let env = env_of(&[
            (ROOT_KEY_ENV, "/env.key"),
            ("CREDENTIALS_DIRECTORY", creds_dir),
            ("HOME", "/home/u"),
        ]);
        let got = locate_root_key(None, &env, never).unwrap();
        assert_eq!(got.path, Path::new("/env.key"));
        assert_eq!(got.origin, RootKeyOrigin::Environment);

        let env = env_of(&[(ROOT_KEY_ENV, ""), ("CREDENTIALS_DIRECTORY", creds_dir)]);
        let got = locate_root_key(None, &env, never).unwrap();
        assert_eq!(got.path, creds.path().join("root-key"));
        assert_eq!(got.origin, RootKeyOrigin::Credential);
    }

    #[test]
    fn a_credentials_directory_without_the_key_falls_through() {
        let creds = tempfile::tempdir().unwrap();
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", "/cfg"),
        ]);
        let got = locate_root_key(None, &env, || Ok(id())).unwrap();
        assert_eq!(
            got.path,
            Path::new("/cfg/ssefs/keys/11111111111111111111111111111111.key")
        );
        assert_eq!(got.origin, RootKeyOrigin::ConfigDir);
    }

    #[test]
    fn home_config_is_used_when_xdg_is_unset_empty_or_relative() {
        for xdg in [None, Some(""), Some("relative/cfg")] {
            let mut pairs = vec![("HOME", "/home/u")];
            if let Some(x) = xdg {
                pairs.push(("XDG_CONFIG_HOME", x));
            }
            let got = locate_root_key(None, &env_of(&pairs), || Ok(id())).unwrap();
            assert_eq!(
                got.path,
                Path::new("/home/u/.config/ssefs/keys/11111111111111111111111111111111.key"),
                "{xdg:?}"
            );
        }
    }

    #[test]
    fn no_home_and_no_xdg_is_a_clear_error() {
        let err = locate_root_key(None, &env_of(&[]), || Ok(id())).unwrap_err();
        assert!(matches!(err, KeystoreError::NoRootKeyLocation), "{err}");
        assert!(err.to_string().contains("--root-key"));
    }

    #[test]
    fn a_missing_key_lists_every_way_to_give_one() {
        let file = RootKeyError::MissingKeyFile {
            store: "/s".into(),
            path: "/k".into(),
            origin: "the default place",
        }
        .to_string();
        for way in [
            "--root-key",
            ROOT_KEY_ENV,
            ROOT_KEY_CREDENTIAL,
            ".config/ssefs/keys",
        ] {
            assert!(file.contains(way), "{file}");
        }
        let pass = RootKeyError::MissingPassphrase { store: "/s".into() }.to_string();
        for way in [
            "--passphrase-fd",
            PASSPHRASE_FD_ENV,
            PASSPHRASE_CREDENTIAL,
            "terminal",
        ] {
            assert!(pass.contains(way), "{pass}");
        }
    }
}

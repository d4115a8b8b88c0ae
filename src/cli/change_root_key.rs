//! `ssefs change-root-key`: every master key and CMK material re-wrapped under a new root key
//! (a key file, a passphrase, or a random secret encrypted by a PKCS#11 token key) in one
//! keystore transaction, only while unmounted. The old key comes the way every command gets
//! it (`root_key`); objects are not touched.

use super::root_key::{
    KeyArgs, RootKeyError, StoreArgs, load_key_file, load_root_key, new_passphrase,
    new_token_secret, open_with, token_key_name,
};
use super::root_key::{RootKeyLocation, RootKeyOrigin};
use crate::crypto::Key256;
use crate::keystore::{KeystoreError, PassphraseKdf, RootRecord, TokenRoot, create_root_key_file};
use crate::store::{Store, StoreError};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ChangeRootKeyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The new root key file: used if it exists, else created (32 random bytes, mode 0600).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["new_passphrase", "new_pkcs11_module"]
    )]
    pub new_root_key: Option<PathBuf>,
    /// Derive the new root key from a new passphrase (typed twice, or --new-passphrase-fd).
    #[arg(long, conflicts_with_all = ["new_root_key", "new_pkcs11_module"])]
    pub new_passphrase: bool,
    /// Move the root of trust into a PKCS#11 token: this module holds it; the key
    /// --new-key-label in token --new-token-label (created non-extractable if absent)
    /// encrypts a new random root secret.
    #[arg(
        long,
        value_name = "LIB",
        conflicts_with = "new_root_key",
        requires_all = ["new_token_label", "new_key_label"]
    )]
    pub new_pkcs11_module: Option<PathBuf>,
    /// The label of the new token.
    #[arg(long, value_name = "T", requires = "new_pkcs11_module")]
    pub new_token_label: Option<String>,
    /// The label of the AES-256 key in the new token.
    #[arg(long, value_name = "K", requires = "new_pkcs11_module")]
    pub new_key_label: Option<String>,
    /// Read the new token's user PIN from this file descriptor [default: as for --pin-fd].
    #[arg(long, value_name = "N", requires = "new_pkcs11_module")]
    pub new_pin_fd: Option<i32>,
    /// Read the new passphrase from this file descriptor.
    #[arg(long, value_name = "N", requires = "new_passphrase")]
    pub new_passphrase_fd: Option<i32>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeRootKeyError {
    #[error("{0}; unmount the store before changing its root key")]
    Mounted(StoreError),
    #[error("{0}")]
    Store(StoreError),
    #[error("the new root key {} would be inside the store; keep it apart", .0.display())]
    InsideStore(PathBuf),
    #[error("the root key is unchanged: {0}")]
    Unchanged(KeystoreError),
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

/// What a run did, for its one line.
enum NewKey {
    /// An existing key file.
    Existing(PathBuf),
    /// A key file made by this run.
    Created(PathBuf),
    Passphrase,
    /// A secret encrypted by a token key.
    Token(Box<TokenRoot>),
}

/// Runs `ssefs change-root-key`: refused while the store is mounted (the daemon holds the old
/// key), one keystore transaction, no object touched.
pub fn run(args: &ChangeRootKeyArgs) -> Result<(), ChangeRootKeyError> {
    let store = Store::open_locked(args.store.path()?).map_err(|e| match e {
        e @ StoreError::AlreadyMounted(_) => ChangeRootKeyError::Mounted(e),
        e => ChangeRootKeyError::Store(e),
    })?;
    let root = store.root().to_path_buf();
    let old_key = load_root_key(&root, &args.key)?;
    let keystore = open_with(&root, &args.key, &old_key)?;
    let (new_key, kdf, what) = match &args.new_root_key {
        None if args.new_pkcs11_module.is_some() => {
            let name = token_key_name(
                args.new_pkcs11_module.as_deref(),
                args.new_token_label.as_deref(),
                args.new_key_label.as_deref(),
            )?;
            let (secret, token) =
                new_token_secret(&root, &name, args.new_pin_fd, keystore.store_id(), true)?;
            (secret, None, NewKey::Token(Box::new(token)))
        }
        Some(path) => {
            if let Some(parent) = path.parent() {
                let inside = parent.canonicalize().is_ok_and(|p| p.starts_with(&root));
                if inside {
                    return Err(ChangeRootKeyError::InsideStore(path.clone()));
                }
            }
            if std::fs::symlink_metadata(path).is_ok() {
                let location = RootKeyLocation {
                    path: path.clone(),
                    origin: RootKeyOrigin::Option,
                };
                let key = load_key_file(&root, &location)?;
                (key, None, NewKey::Existing(path.clone()))
            } else {
                let key = create_root_key_file(path)?;
                (key, None, NewKey::Created(path.clone()))
            }
        }
        None => {
            let passphrase = new_passphrase(
                args.new_passphrase_fd,
                "give the new passphrase with --new-passphrase-fd N or run on a terminal",
            )?;
            let kdf = PassphraseKdf::generate()?;
            let key = kdf.derive(passphrase.expose_secret())?;
            (key, Some(kdf), NewKey::Passphrase)
        }
    };
    let new_file = match &what {
        NewKey::Existing(path) | NewKey::Created(path) => Some(path.display().to_string()),
        NewKey::Passphrase | NewKey::Token(_) => None,
    };
    if same_key(&old_key, &new_key) {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "changed": false, "new_root_key": new_file })
            );
            return Ok(());
        }
        // Only a key file can be the same: a new passphrase always gets a new salt.
        println!(
            "the new root key{} is already the current root key of store {}; nothing changed",
            match &what {
                NewKey::Existing(path) | NewKey::Created(path) => format!(" {}", path.display()),
                NewKey::Passphrase | NewKey::Token(_) => String::new(),
            },
            root.display()
        );
        return Ok(());
    }
    let record = match (&what, &kdf) {
        (NewKey::Token(token), _) => RootRecord::Token(token),
        (_, Some(kdf)) => RootRecord::Passphrase(kdf),
        (_, None) => RootRecord::KeyFile,
    };
    let change = match keystore.change_root_key_to(&new_key, record) {
        Ok(change) => change,
        Err(e) => {
            if let NewKey::Created(path) = &what {
                let _ = std::fs::remove_file(path);
            }
            return Err(ChangeRootKeyError::Unchanged(e));
        }
    };
    drop(store);
    if args.json {
        let token = match &what {
            NewKey::Token(token) => serde_json::json!({
                "module": token.name.module.display().to_string(),
                "token": token.name.token,
                "key": token.name.key,
                "mechanism": token.mechanism.name(),
            }),
            _ => serde_json::Value::Null,
        };
        let out = serde_json::json!({
            "changed": true,
            "token": token,
            "master_keys": change.master_keys,
            "cmk_materials": change.cmk_materials,
            "import_params": change.import_params,
            "new_root_key": new_file,
            "created": matches!(what, NewKey::Created(_)),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "re-wrapped {} master key version(s), {} CMK material(s) and {} import parameter(s) \
         under the new root key{}; the old root key no longer opens this store (keystore \
         backups made before still need it)",
        change.master_keys,
        change.cmk_materials,
        change.import_params,
        match &what {
            NewKey::Created(path) => format!(" (new key file {}: back it up)", path.display()),
            NewKey::Existing(path) => format!(" {}", path.display()),
            NewKey::Passphrase => " (derived from the new passphrase)".to_string(),
            NewKey::Token(token) => format!(
                " (a new secret encrypted by the key {:?} in token {:?})",
                token.name.key, token.name.token
            ),
        }
    );
    Ok(())
}

/// Whether two keys are the same, compared without an early exit.
fn same_key(a: &Key256, b: &Key256) -> bool {
    a.expose_secret()
        .iter()
        .zip(b.expose_secret())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

//! `ssefs init STORE`: creates the store (`Store::create`: the directory, `.ssefs/` with `tmp/`
//! and `lock`), the keystore with master key version 1, and finds or creates the root key. On
//! failure it removes only what it created. Prints paths, never key material.

use super::root_key::{
    RootKeyError, RootKeyLocation, check_secret_file, locate_root_key, new_passphrase,
    new_token_secret,
};
use crate::keystore::{
    Keystore, KeystoreError, PassphraseKdf, StoreId, TokenKeyName, create_root_key_file,
    load_root_key_file, missing_parent_dirs,
};
use crate::store::{Store, StoreError, is_store};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the root key {} would be inside the store {}; keep it apart from the store",
        key.display(),
        store.display()
    )]
    RootKeyInsideStore { key: PathBuf, store: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialised {
    pub store: PathBuf,
    pub store_id: StoreId,
    pub root_key: RootKeyLocation,
    /// Whether the root key file was created (rather than an existing one used).
    pub root_key_created: bool,
}

/// Runs `ssefs init` and prints its one line.
pub fn run(store: &Path, root_key: Option<&Path>) -> Result<(), InitError> {
    let done = init(store, root_key, &|name| std::env::var_os(name))?;
    println!(
        "created store {} with the {} root key {}; keep the root key apart from the \
         store and back it up: without it nothing in the store can be read",
        done.store.display(),
        if done.root_key_created {
            "new"
        } else {
            "existing"
        },
        done.root_key.path.display(),
    );
    Ok(())
}

/// Runs `ssefs init --passphrase`: a store whose root key is derived from a new passphrase.
pub fn run_with_passphrase(store: &Path, passphrase_fd: Option<i32>) -> Result<(), InitError> {
    let passphrase = new_passphrase(
        passphrase_fd,
        "give the passphrase with --passphrase-fd N or run on a terminal",
    )?;
    let store_id = init_with_passphrase(store, passphrase.expose_secret())?;
    println!(
        "created store {} (id {store_id}) whose root key is derived from your passphrase; \
         without the passphrase nothing in the store can be read",
        store.display()
    );
    Ok(())
}

/// Runs `ssefs init --pkcs11-module LIB --token-label T --key-label K`: a store whose root
/// secret is encrypted by a non-extractable AES-256 key in a PKCS#11 token (made there if the
/// token has no key of that label).
pub fn run_with_token(
    store: &Path,
    name: &TokenKeyName,
    pin_fd: Option<i32>,
) -> Result<(), InitError> {
    Store::check_new(store)?;
    let store_id = StoreId::generate()?;
    let (secret, root) = new_token_secret(store, name, pin_fd, &store_id, true)?;
    make_store(store, store_id, &secret, |keystore| {
        Ok(keystore.record_token_root(&root)?)
    })?;
    println!(
        "created store {} (id {store_id}) whose root secret is encrypted by the key {:?} in \
         token {:?} ({}); without that key nothing in the store can be read",
        store.display(),
        name.key,
        name.token,
        root.mechanism.name()
    );
    Ok(())
}

/// Creates a store at `store`, with the root key at `root_key` or the default location.
pub fn init(
    store: &Path,
    root_key: Option<&Path>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Initialised, InitError> {
    Store::check_new(store)?;
    let store_id = StoreId::generate()?;
    let location = locate_root_key(root_key, env, || Ok(store_id))?;
    refuse_key_inside_store(&location.path, store)?;

    let mut made = UndoLog::default();
    let result = build(store, store_id, &location, &mut made);
    match result {
        Ok(root_key_created) => Ok(Initialised {
            store: store.to_path_buf(),
            store_id,
            root_key: location,
            root_key_created,
        }),
        Err(e) => {
            made.undo();
            Err(e)
        }
    }
}

/// Every step that creates something (the root key file recorded in `made`; the store
/// removes itself on failure); returns whether the root key file was created.
fn build(
    store: &Path,
    store_id: StoreId,
    location: &RootKeyLocation,
    made: &mut UndoLog,
) -> Result<bool, InitError> {
    let (key, key_created) = obtain_root_key(&location.path, made)?;
    make_store(store, store_id, &key, |_| Ok(()))?;
    Ok(key_created)
}

/// Creates a store whose root key is derived from `passphrase` with Argon2id (the salt and
/// cost are recorded in the keystore; there is no key file). Returns the new store's id.
pub fn init_with_passphrase(store: &Path, passphrase: &[u8]) -> Result<StoreId, InitError> {
    Store::check_new(store)?;
    let store_id = StoreId::generate()?;
    let kdf = PassphraseKdf::generate()?;
    let key = kdf.derive(passphrase)?;
    make_store(store, store_id, &key, |keystore| {
        Ok(keystore.record_passphrase_kdf(&kdf)?)
    })?;
    Ok(store_id)
}

/// The store (made by `Store::create`) and the keystore under `key` in it, then `complete`
/// on the new keystore, all durable; on any failure the new store is removed again.
fn make_store(
    store: &Path,
    store_id: StoreId,
    key: &crate::crypto::Key256,
    complete: impl FnOnce(&Keystore) -> Result<(), InitError>,
) -> Result<(), InitError> {
    let new = Store::create(store)?;
    let keystore = Keystore::create_with_store_id(&new.meta_dir(), key, store_id)?;
    complete(&keystore)?;
    drop(keystore);
    new.finish()?;
    Ok(())
}

/// Loads the root key if its file exists (mode-checked), else creates it.
fn obtain_root_key(
    path: &Path,
    made: &mut UndoLog,
) -> Result<(crate::crypto::Key256, bool), InitError> {
    if std::fs::symlink_metadata(path).is_ok() {
        let meta = std::fs::metadata(path).map_err(io_error("examine", path))?;
        check_secret_file(path, &meta)?;
        return Ok((load_root_key_file(path)?, false));
    }
    made.dirs.extend(missing_parent_dirs(path));
    match create_root_key_file(path) {
        Ok(key) => {
            made.files.push(path.to_path_buf());
            Ok((key, true))
        }
        Err(e) => Err(e.into()),
    }
}

/// The root key must not be kept with the data it protects: not inside the new store, nor
/// inside any existing store (checked on absolute paths).
fn refuse_key_inside_store(key: &Path, store: &Path) -> Result<(), InitError> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(io_error("resolve", p));
    let (key_abs, store_abs) = (absolute(key)?, absolute(store)?);
    let inside = |store: &Path| InitError::RootKeyInsideStore {
        key: key.to_path_buf(),
        store: store.to_path_buf(),
    };
    if key_abs.starts_with(&store_abs) {
        return Err(inside(store));
    }
    match key_abs.ancestors().skip(1).find(|dir| is_store(dir)) {
        Some(other) => Err(inside(other)),
        None => Ok(()),
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitError {
    let path = path.to_path_buf();
    move |source| InitError::Io {
        action,
        path,
        source,
    }
}

/// What this run created, removed newest first on failure. Directories are removed only
/// when empty, so nothing this run did not create is ever deleted.
#[derive(Default)]
struct UndoLog {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl UndoLog {
    fn undo(self) {
        for file in self.files.iter().rev() {
            let _ = std::fs::remove_file(file);
        }
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

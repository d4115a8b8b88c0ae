//! The root key: the one secret kept outside the store.

use super::KeystoreError;
use crate::crypto::Key256;
use std::path::Path;

/// Where the root key comes from.
#[derive(Clone, Debug)]
pub enum RootKeySource {
    File(std::path::PathBuf),
}

/// Creates a new root key file (32 random bytes, mode 0600); refuses to overwrite.
pub fn create_root_key_file(path: &Path) -> Result<Key256, KeystoreError> {
    let _ = path;
    todo!("keystore: create_root_key_file")
}

/// Loads a root key file; refuses one readable or writable by group or others.
pub fn load_root_key_file(path: &Path) -> Result<Key256, KeystoreError> {
    let _ = path;
    todo!("keystore: load_root_key_file")
}

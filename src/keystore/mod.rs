//! The keystore: a SQLite database in `STORE/.ssefs/keystore.db` holding master key versions,
//! CMKs (material versions, aliases, state, grants), bucket default encryption and the audit
//! log, every secret wrapped under the root key. Knows nothing of FUSE or object files.

mod error;
mod rootkey;

pub use error::KeystoreError;
pub use rootkey::{RootKeySource, create_root_key_file, load_root_key_file};

use crate::crypto::{Algorithm, Key256, KeyRef};
use std::path::Path;

/// A bucket's default encryption rule (PutBucketEncryption).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRule {
    pub algorithm: Algorithm,
    /// A CMK id or alias; only with `Algorithm::Kms`. `None` means the default CMK.
    pub kms_key_id: Option<String>,
}

/// An open keystore. Cheap to share behind an `Arc`; safe to use from many threads.
pub struct Keystore {
    _private: (),
}

impl Keystore {
    /// Creates `dir/keystore.db` (the directory must exist, mode 0700), the schema and master
    /// key version 1, all durable before returning. Fails if a keystore already exists.
    pub fn create(dir: &Path, root_key: &Key256) -> Result<Self, KeystoreError> {
        let _ = (dir, root_key);
        todo!("keystore: create")
    }
    /// Opens an existing keystore, migrating its schema; a wrong root key is `WrongRootKey`.
    pub fn open(dir: &Path, root_key: &Key256) -> Result<Self, KeystoreError> {
        let _ = (dir, root_key);
        todo!("keystore: open")
    }
    /// The newest master key version and its key, for new `AES256` objects.
    pub fn current_master_key(&self) -> Result<(u32, Key256), KeystoreError> {
        todo!("keystore: current_master_key")
    }
    /// The key-encryption key an object header names (`None` for `KeyRef::None`).
    pub fn resolve(&self, key_ref: &KeyRef) -> Result<Option<Key256>, KeystoreError> {
        let _ = key_ref;
        todo!("keystore: resolve")
    }
    pub fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, KeystoreError> {
        let _ = bucket;
        todo!("keystore: bucket_rule")
    }
    pub fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), KeystoreError> {
        let _ = (bucket, rule);
        todo!("keystore: put_bucket_rule")
    }
    pub fn delete_bucket_rule(&self, bucket: &str) -> Result<(), KeystoreError> {
        let _ = bucket;
        todo!("keystore: delete_bucket_rule")
    }
}

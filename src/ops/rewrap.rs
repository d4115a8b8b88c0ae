//! The offline rewrap: re-wraps the DEK of each selected object of an unmounted store (held
//! under its lock) under the newest version of its key, rewriting only the header in place
//! (`fs::rewrap_object`, as the mount does) and keeping the backing file's times. The CLI
//! walks the objects, shows progress and counts; the mounted rewrap goes through the mount.

use super::scan::{inventory, open_backing_file};
use crate::crypto::{CryptoError, KeyRef, Object, peek_header};
use crate::fs::{Caller, FsError, KeyUse, Rewrap, rewrap_object};
use crate::keystore::{Keystore, KeystoreError};
use crate::store::{Store, TimeUpdate};
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Errors of the offline rewrap.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error("the offline rewrap needs the store lock")]
    NotLocked,
    #[error("only bucket {held} is locked for this rewrap, not {asked}")]
    OtherBucket { held: String, asked: String },
    #[error("there is no bucket {0}")]
    NoBucket(String),
    #[error("--key {key}: {source}")]
    UnknownKey { key: String, source: KeystoreError },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Which objects a rewrap selects (`--key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFilter {
    Any,
    Master,
    Cmk(String),
}

impl KeyFilter {
    /// The filter for `--key`: none, `master` (AES256 objects), or a CMK id or alias.
    pub fn new(keystore: &Keystore, key: Option<&str>) -> Result<KeyFilter, RewrapError> {
        match key {
            None => Ok(KeyFilter::Any),
            Some("master") => Ok(KeyFilter::Master),
            Some(key) => keystore
                .cmk_info(key)
                .map(|info| KeyFilter::Cmk(info.key_id))
                .map_err(|source| RewrapError::UnknownKey {
                    key: key.to_string(),
                    source,
                }),
        }
    }

    /// Whether an object wrapped under `key_ref` is affected (unencrypted objects never are).
    pub fn selects(&self, key_ref: &KeyRef) -> bool {
        match (self, key_ref) {
            (_, KeyRef::None) => false,
            (KeyFilter::Any, _) => true,
            (KeyFilter::Master, KeyRef::Master { .. }) => true,
            (KeyFilter::Cmk(wanted), KeyRef::Cmk { key_id, .. }) => wanted == key_id,
            _ => false,
        }
    }
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Rewrapped,
    AlreadyCurrent,
    /// Not encrypted or under another key than the filter's.
    NotAffected,
}

/// The newest version of each key, asked of the keystore once per run (a rotation during the
/// run is still honoured: the rewrap itself takes the newest version).
pub struct NewestVersions<'a> {
    keystore: &'a Keystore,
    known: HashMap<Option<String>, u32>,
}

impl<'a> NewestVersions<'a> {
    pub fn new(keystore: &'a Keystore) -> Self {
        NewestVersions {
            keystore,
            known: HashMap::new(),
        }
    }

    /// Whether `key_ref` already is the newest version of its key.
    pub fn is_current(&mut self, key_ref: &KeyRef) -> Result<bool, KeystoreError> {
        let (key, version) = match key_ref {
            KeyRef::None => return Ok(true),
            KeyRef::Master { version } => (None, *version),
            KeyRef::Cmk { key_id, version } => (Some(key_id.clone()), *version),
        };
        if let Some(newest) = self.known.get(&key) {
            return Ok(version >= *newest);
        }
        // From the keystore's metadata: finding the newest version unwraps no key.
        let newest = match &key {
            None => self
                .keystore
                .master_versions()?
                .iter()
                .map(|v| v.version)
                .max(),
            Some(key_id) => self.keystore.cmk_info(key_id)?.newest_version,
        }
        .unwrap_or(version);
        self.known.insert(key, newest);
        Ok(version >= newest)
    }
}

/// A rewrap of an unmounted store, holding its lock.
pub struct OfflineRewrap<'a> {
    store: &'a Store,
    keystore: &'a Keystore,
    filter: &'a KeyFilter,
}

impl<'a> OfflineRewrap<'a> {
    /// Refuses a store opened without the lock: the mount could be writing the objects.
    pub fn new(
        store: &'a Store,
        keystore: &'a Keystore,
        filter: &'a KeyFilter,
    ) -> Result<Self, RewrapError> {
        if !store.is_locked() && store.locked_bucket().is_none() {
            return Err(RewrapError::NotLocked);
        }
        Ok(OfflineRewrap {
            store,
            keystore,
            filter,
        })
    }

    /// The objects to consider (of `bucket` only, if given), and the directories that could
    /// not be listed with their errors.
    #[allow(clippy::type_complexity)]
    pub fn objects(
        &self,
        bucket: Option<&str>,
    ) -> Result<(Vec<PathBuf>, Vec<(PathBuf, String)>), RewrapError> {
        // A handle that holds only one bucket's lock may touch only that bucket.
        let bucket = match (self.store.is_locked(), self.store.locked_bucket()) {
            (false, Some(held)) if bucket.is_some_and(|b| b != held) => {
                return Err(RewrapError::OtherBucket {
                    held: held.to_string(),
                    asked: bucket.unwrap_or_default().to_string(),
                });
            }
            (false, Some(held)) => Some(held),
            _ => bucket,
        };
        let inv = inventory(self.store);
        if let Some(bucket) = bucket {
            if !inv.buckets.iter().any(|b| b == bucket) {
                return Err(RewrapError::NoBucket(bucket.to_string()));
            }
        }
        let objects = inv
            .objects
            .into_iter()
            .filter(|rel| bucket.is_none_or(|b| rel.starts_with(b)))
            .collect();
        Ok((objects, inv.unreadable))
    }

    /// Re-wraps the object `rel` unless the filter leaves it out or it is already current.
    /// Its contents and times stay as they were; only the header changes.
    pub fn rewrap(
        &self,
        rel: &Path,
        newest: &mut NewestVersions<'_>,
    ) -> Result<Outcome, RewrapError> {
        let file = open_backing_file(self.store, rel, true)?;
        let header = peek_header(&file)?;
        if !self.filter.selects(&header.key_ref) {
            return Ok(Outcome::NotAffected);
        }
        if newest.is_current(&header.key_ref)? {
            return Ok(Outcome::AlreadyCurrent);
        }
        let node = self.store.open_path(rel)?;
        let before = self.store.backing().stat(node.as_fd())?;
        let kek = self.keystore.resolve(&header.key_ref)?;
        let store_key = self.keystore.store_key()?;
        let mut object = Object::open(file, &store_key, kek.as_ref())?;
        // Offline, the operator holding the root key is the caller (and is audited as such).
        let path = || rel.display().to_string();
        let user = KeyUse::new(Caller::this_process(), &path);
        let outcome = rewrap_object(&mut object, self.keystore, &user)?;
        // Not closed: closing would also end a write session a crash left open; the object
        // stays exactly as it was apart from its header.
        let (atime, mtime) = (TimeUpdate::At(before.atime), TimeUpdate::At(before.mtime));
        if let Err(e) = self
            .store
            .backing()
            .utimens(node.as_fd(), Some(atime), Some(mtime))
        {
            log::warn!("{}: cannot keep the times: {e}", rel.display());
        }
        Ok(match outcome {
            Rewrap::Rewrapped { .. } => Outcome::Rewrapped,
            Rewrap::AlreadyCurrent => Outcome::AlreadyCurrent,
            Rewrap::NotEncrypted => Outcome::NotAffected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_filter_selects_encrypted_objects_of_its_key_only() {
        let master = KeyRef::Master { version: 1 };
        let cmk = KeyRef::Cmk {
            key_id: "k".into(),
            version: 2,
        };
        assert!(!KeyFilter::Any.selects(&KeyRef::None));
        assert!(KeyFilter::Any.selects(&master) && KeyFilter::Any.selects(&cmk));
        assert!(KeyFilter::Master.selects(&master) && !KeyFilter::Master.selects(&cmk));
        assert!(KeyFilter::Cmk("k".into()).selects(&cmk));
        assert!(!KeyFilter::Cmk("other".into()).selects(&cmk));
        assert!(!KeyFilter::Cmk("k".into()).selects(&master));
    }

    #[test]
    fn an_unlocked_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(crate::store::layout::meta_dir(dir.path())).unwrap();
        let key = crate::crypto::Key256::generate().unwrap();
        let keystore = Keystore::create(&crate::store::layout::meta_dir(dir.path()), &key).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(
            OfflineRewrap::new(&store, &keystore, &KeyFilter::Any),
            Err(RewrapError::NotLocked)
        ));
        let locked = Store::open_locked(dir.path()).unwrap();
        let rewrap = OfflineRewrap::new(&locked, &keystore, &KeyFilter::Any).unwrap();
        assert!(matches!(
            rewrap.objects(Some("photos")),
            Err(RewrapError::NoBucket(_))
        ));
    }
}

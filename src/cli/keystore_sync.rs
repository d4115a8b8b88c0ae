//! A remote store's mount keeps its keystore in step with the keystore object that every
//! host shares: at mount, at every interval, when a command on this host asks, and at
//! unmount. Each round takes the store's newest keystore, carries onto it what this mount
//! added by itself (audit records, usage counters) and the maintenance that is due
//! (deletions, rotation by age), writes it back over the version read (`If-Match`, so
//! another host's change is never overwritten: a lost race is run again on the newer
//! keystore), and makes it the mount's keystore. See docs/REMOTE.md "Many hosts".

use crate::keystore::{Carried, Keystore};
use crate::store::remote::{Mirror, MirrorError, WorkingCopy};
use std::sync::Arc;
use std::time::Duration;

/// The default interval between two syncs: the most a key change made on another host
/// takes to reach this mount (`-o keystore_refresh=SECS`).
pub const DEFAULT_KEYSTORE_REFRESH: Duration = Duration::from_secs(10);
/// How many times a round that lost the race for the keystore object is run again.
const ATTEMPTS: u32 = 6;

/// What a full round left: the keystore's fingerprint, the store's version, and when.
type Quiet = (Vec<u8>, String, std::time::Instant);

/// The longest time between two full rounds (the deletions and rotations that fall due).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Another host had changed the keystore, and this mount took the change.
    pub took: bool,
    /// This mount wrote the keystore (its records, or maintenance that was due).
    pub wrote: bool,
    pub carried: Carried,
}

/// Keeps a mount's keystore in step with its remote store's.
pub struct KeystoreSync {
    mirror: Arc<Mirror>,
    keystore: Arc<Keystore>,
    master_days: u32,
    /// One round at a time (the background thread, misses and changes all sync), and what
    /// the last full one left. A round that finds it unchanged does nothing more than one
    /// HEAD, but for a full round every [`MAINTENANCE_INTERVAL`] (deletion dates and
    /// rotation ages pass with time alone).
    running: std::sync::Mutex<Option<Quiet>>,
}

impl KeystoreSync {
    pub fn new(mirror: Arc<Mirror>, keystore: Arc<Keystore>, master_days: u32) -> Self {
        KeystoreSync {
            mirror,
            keystore,
            master_days,
            running: std::sync::Mutex::new(None),
        }
    }

    /// The master key version new objects go under now (0 if the keystore cannot say).
    pub fn master_version(&self) -> u32 {
        self.keystore
            .current_master_key()
            .map(|(version, _)| version)
            .unwrap_or(0)
    }

    /// One round, run again (with a short jittered wait) when another host wrote the
    /// keystore between this round's read and write.
    pub fn sync(&self) -> Result<Synced, String> {
        let mut last = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempt = 1;
        loop {
            match self.round(&mut last) {
                Err(SyncError::Mirror(e)) if attempt < ATTEMPTS && is_conflict(&e) => {
                    attempt += 1;
                    let mut jitter = [0u8; 1];
                    let _ = getrandom::fill(&mut jitter);
                    std::thread::sleep(Duration::from_millis(
                        (20u64 << attempt) + u64::from(jitter[0]),
                    ));
                }
                Err(e) => return Err(e.to_string()),
                Ok(done) => return Ok(done),
            }
        }
    }

    fn round(&self, last: &mut Option<Quiet>) -> Result<Synced, SyncError> {
        let fingerprint = self.keystore.fingerprint()?;
        let changed = self.mirror.changed_keystore()?;
        let took = changed.is_some();
        if !took
            && last.as_ref().is_some_and(|(seen, etag, at)| {
                *seen == fingerprint
                    && self.mirror.keystore_etag().as_deref() == Some(etag)
                    && at.elapsed() < MAINTENANCE_INTERVAL
            })
        {
            return Ok(Synced::default());
        }
        let scratch = WorkingCopy::empty().map_err(|e| SyncError::Local(e.to_string()))?;
        let since = scratch.root().join("since.db");
        self.keystore.snapshot(&since)?;
        let (bytes, etag) = match changed {
            Some((bytes, etag)) => (bytes, etag),
            None => {
                let base = self.mirror.keystore_base();
                let bytes = std::fs::read(&base)
                    .map_err(|e| SyncError::Local(format!("{}: {e}", base.display())))?;
                let etag = self.mirror.keystore_etag().unwrap_or_default();
                (bytes, etag)
            }
        };
        let shared = scratch.root().join("shared.db");
        write_private(&shared, &bytes)?;
        let carried = self
            .keystore
            .carry(&shared, &self.mirror.keystore_base(), &since)?;
        let maintained = self.keystore.maintain(&shared, self.master_days)?;
        let wrote = !carried.is_empty() || maintained;
        if !took && !wrote {
            *last = Some((fingerprint, etag, std::time::Instant::now()));
            return Ok(Synced::default());
        }
        if wrote {
            let bytes = read_settled(&shared)?;
            self.mirror.publish_keystore(bytes, &etag)?;
        } else {
            self.mirror.took_keystore(&etag, &bytes)?;
        }
        self.keystore.adopt(&shared, &since)?;
        *last = self.mirror.keystore_etag().and_then(|etag| {
            let fingerprint = self.keystore.fingerprint().ok()?;
            Some((fingerprint, etag, std::time::Instant::now()))
        });
        Ok(Synced {
            took,
            wrote,
            carried,
        })
    }
}

fn is_conflict(e: &MirrorError) -> bool {
    matches!(e, MirrorError::Remote(e) if e.is_conflict())
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Keystore(#[from] crate::keystore::KeystoreError),
    #[error("{0}")]
    Local(String),
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), SyncError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| SyncError::Local(format!("{}: {e}", path.display())))
}

/// The bytes of a keystore file no connection has open (its write-ahead log folded in).
fn read_settled(path: &std::path::Path) -> Result<Vec<u8>, SyncError> {
    let [wal, _] = crate::store::layout::companion_files(path);
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(SyncError::Local(format!(
            "{} still has a write-ahead log",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| SyncError::Local(format!("{}: {e}", path.display())))
}

/// The key source of a remote store's mount: the mount's keystore, synced at once after a
/// change made through the mount (a bucket's default encryption), and synced before it
/// answers that a bucket has no rule or that a key is unknown (another host may have made
/// it since the last sync; at most one such sync a second). So a bucket made on one host
/// never takes objects without its rule on another, and an object under a key made
/// elsewhere opens as soon as it is seen.
pub struct SharedKeys {
    keystore: Arc<Keystore>,
    sync: Arc<KeystoreSync>,
    last_miss: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The least time between two syncs forced by a miss.
const MISS_SYNC_INTERVAL: Duration = Duration::from_secs(1);

impl SharedKeys {
    pub fn new(keystore: Arc<Keystore>, sync: Arc<KeystoreSync>) -> SharedKeys {
        SharedKeys {
            keystore,
            sync,
            last_miss: std::sync::Mutex::new(None),
        }
    }

    /// Syncs for a miss unless one did within [`MISS_SYNC_INTERVAL`]; true if it synced.
    fn synced_for_miss(&self) -> bool {
        {
            let mut last = self.last_miss.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < MISS_SYNC_INTERVAL) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.sync.sync() {
            Ok(_) => true,
            Err(e) => {
                log::warn!("keystore not synced with the object store: {e}");
                false
            }
        }
    }

    fn synced_after_change(&self) {
        if let Err(e) = self.sync.sync() {
            log::warn!(
                "a keystore change made through the mount is not in the object store yet \
                 (sent with the next sync): {e}"
            );
        }
    }
}

fn is_unknown_key(e: &crate::fs::FsError) -> bool {
    use crate::keystore::KeystoreError;
    matches!(
        e,
        crate::fs::FsError::UnknownKey(_)
            | crate::fs::FsError::Keystore(
                KeystoreError::UnknownKey(_) | KeystoreError::UnknownMasterKey(_)
            )
    )
}

impl crate::fs::KeySource for SharedKeys {
    fn bucket_rule(
        &self,
        bucket: &str,
    ) -> Result<Option<crate::keystore::BucketRule>, crate::fs::FsError> {
        let rule = self.keystore.bucket_rule(bucket)?;
        if rule.is_none() && self.synced_for_miss() {
            return Ok(self.keystore.bucket_rule(bucket)?);
        }
        Ok(rule)
    }
    fn put_bucket_rule(
        &self,
        bucket: &str,
        rule: &crate::keystore::BucketRule,
    ) -> Result<(), crate::fs::FsError> {
        self.keystore.put_bucket_rule(bucket, rule)?;
        self.synced_after_change();
        Ok(())
    }
    fn delete_bucket_rule(&self, bucket: &str) -> Result<(), crate::fs::FsError> {
        self.keystore.delete_bucket_rule(bucket)?;
        self.synced_after_change();
        Ok(())
    }
    fn validate_rule(
        &self,
        rule: &crate::keystore::BucketRule,
        caller: &crate::keystore::Caller,
    ) -> Result<crate::keystore::BucketRule, crate::fs::FsError> {
        crate::fs::KeySource::validate_rule(&*self.keystore, rule, caller)
    }
    fn current_master_key(&self) -> Result<(u32, crate::crypto::Key256), crate::fs::FsError> {
        crate::fs::KeySource::current_master_key(&*self.keystore)
    }
    fn master_key(
        &self,
        version: u32,
    ) -> Result<Option<crate::crypto::Key256>, crate::fs::FsError> {
        let key = crate::fs::KeySource::master_key(&*self.keystore, version)?;
        if key.is_none() && self.synced_for_miss() {
            return crate::fs::KeySource::master_key(&*self.keystore, version);
        }
        Ok(key)
    }
    fn cmk_for_new_object(
        &self,
        id_or_alias: Option<&str>,
        caller: &crate::keystore::Caller,
        object_path: &str,
    ) -> Result<(String, u32, crate::crypto::Key256), crate::fs::FsError> {
        let first = crate::fs::KeySource::cmk_for_new_object(
            &*self.keystore,
            id_or_alias,
            caller,
            object_path,
        );
        match first {
            Err(e) if is_unknown_key(&e) && self.synced_for_miss() => {
                crate::fs::KeySource::cmk_for_new_object(
                    &*self.keystore,
                    id_or_alias,
                    caller,
                    object_path,
                )
            }
            other => other,
        }
    }
    fn cmk_for_object(
        &self,
        key_id: &str,
        version: u32,
        caller: &crate::keystore::Caller,
        object_path: &str,
    ) -> Result<crate::crypto::Key256, crate::fs::FsError> {
        let first = crate::fs::KeySource::cmk_for_object(
            &*self.keystore,
            key_id,
            version,
            caller,
            object_path,
        );
        match first {
            Err(e) if is_unknown_key(&e) && self.synced_for_miss() => {
                crate::fs::KeySource::cmk_for_object(
                    &*self.keystore,
                    key_id,
                    version,
                    caller,
                    object_path,
                )
            }
            other => other,
        }
    }
    fn store_key(&self) -> Result<crate::crypto::StoreKey, crate::fs::FsError> {
        crate::fs::KeySource::store_key(&*self.keystore)
    }
}

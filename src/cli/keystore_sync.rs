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
}

impl KeystoreSync {
    pub fn new(mirror: Arc<Mirror>, keystore: Arc<Keystore>, master_days: u32) -> Self {
        KeystoreSync {
            mirror,
            keystore,
            master_days,
        }
    }

    /// One round, run again (with a short jittered wait) when another host wrote the
    /// keystore between this round's read and write.
    pub fn sync(&self) -> Result<Synced, String> {
        let mut attempt = 1;
        loop {
            match self.round() {
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

    fn round(&self) -> Result<Synced, SyncError> {
        let scratch = WorkingCopy::empty().map_err(|e| SyncError::Local(e.to_string()))?;
        let since = scratch.root().join("since.db");
        self.keystore.snapshot(&since)?;
        let changed = self.mirror.changed_keystore()?;
        let took = changed.is_some();
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
            return Ok(Synced::default());
        }
        if wrote {
            let bytes = read_settled(&shared)?;
            self.mirror.publish_keystore(bytes, &etag)?;
        } else {
            self.mirror.took_keystore(&etag, &bytes)?;
        }
        self.keystore.adopt(&shared, &since)?;
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

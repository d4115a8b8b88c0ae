//! How mounts of one store share it on a host. A whole-store mount holds the store lock
//! (`.ssefs/lock`) exclusively; a single-bucket mount holds it shared and its bucket's lock
//! (`.ssefs/bucket-locks/NAME`) exclusively. So any number of different buckets may be mounted
//! at once, each at most once, and never beside a whole-store mount. Knows nothing of FUSE.

use super::lock_probe::flock_holders;
use super::{LOCK_FILE, LocalBacking, META_DIR, Store, StoreError};
use rustix::fs::FlockOperation;
use rustix::io::Errno;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The directory of `.ssefs/` that holds one lock file per mounted bucket.
pub const BUCKET_LOCK_DIR: &str = "bucket-locks";

/// How long a bucket mount waits for the shared store lock: another bucket mount holds it
/// exclusively for a moment while it starts (see [`BucketLock::acquire`]); a whole-store
/// mount holds it for good.
const SHARED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Why a bucket cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum BucketLockError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "store {0} is mounted whole (or an offline tool holds it); a bucket of it cannot be \
         mounted beside that on this host"
    )]
    MountedWhole(PathBuf),
    #[error("bucket {bucket} of store {store} is already mounted{}", on_mountpoint(.mountpoint))]
    BucketMounted {
        store: PathBuf,
        bucket: String,
        mountpoint: Option<PathBuf>,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn on_mountpoint(mountpoint: &Option<PathBuf>) -> String {
    mountpoint
        .as_ref()
        .map(|m| format!(" on {}", m.display()))
        .unwrap_or_default()
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> BucketLockError + '_ {
    move |source| BucketLockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The locks a single-bucket mount holds: the store lock shared, its bucket's lock
/// exclusively. Both go when this is dropped.
#[derive(Debug)]
pub struct BucketLock {
    _store_lock: File,
    bucket_lock: File,
}

impl BucketLock {
    /// Opens the store at `path` for mounting its bucket `bucket` (a valid bucket name).
    /// Taking the store lock shared, it first tries it exclusively: when that works no other
    /// daemon uses the store, so leftover temporary files are removed (as a whole-store mount
    /// does) and the mountpoint a dead whole-store mount left in the lock file is cleared.
    pub fn acquire(path: &Path, bucket: &str) -> Result<(Store, BucketLock), BucketLockError> {
        let mut store = Store::open_with(path, Arc::new(LocalBacking), false)?;
        let meta = store.meta_dir();
        let store_lock = open_lock_file(&meta.join(LOCK_FILE))?;
        let alone =
            try_flock(&store_lock, FlockOperation::NonBlockingLockExclusive).map_err(at(&meta))?;
        if alone {
            store_lock.set_len(0).map_err(at(&meta.join(LOCK_FILE)))?;
        }
        // Leftover temporaries go only while no other daemon can be using the store.
        store.hold_bucket(bucket, alone)?;
        // Turns an exclusive lock into a shared one, or waits a moment for another bucket
        // mount to do the same.
        let started = Instant::now();
        while !try_flock(&store_lock, FlockOperation::NonBlockingLockShared).map_err(at(&meta))? {
            if started.elapsed() > SHARED_LOCK_WAIT {
                return Err(BucketLockError::MountedWhole(store.root().to_path_buf()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = meta.join(BUCKET_LOCK_DIR);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(at(&dir)(e)),
        }
        let path = dir.join(bucket);
        let bucket_lock = open_lock_file(&path)?;
        if !try_flock(&bucket_lock, FlockOperation::NonBlockingLockExclusive).map_err(at(&path))? {
            return Err(BucketLockError::BucketMounted {
                store: store.root().to_path_buf(),
                bucket: bucket.to_string(),
                mountpoint: recorded_mountpoint(&path),
            });
        }
        let lock = BucketLock {
            _store_lock: store_lock,
            bucket_lock,
        };
        Ok((store, lock))
    }

    /// Writes `mountpoint` into the bucket's lock file, so tools find this mount.
    pub fn record_mountpoint(&self, mountpoint: &Path) -> io::Result<()> {
        let mut text = mountpoint.as_os_str().as_bytes().to_vec();
        text.push(b'\n');
        self.bucket_lock.set_len(0)?;
        self.bucket_lock.write_all_at(&text, 0)
    }
}

fn open_lock_file(path: &Path) -> Result<File, BucketLockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(at(path))
}

/// A non-blocking `flock(operation)`: `Ok(false)` when someone else's lock is in the way.
fn try_flock(file: &File, operation: FlockOperation) -> io::Result<bool> {
    match rustix::fs::flock(file, operation) {
        Ok(()) => Ok(true),
        Err(e) if e == Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The first line of a lock file, if any.
fn recorded_mountpoint(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read(path).ok()?;
    let line = text.split(|&b| b == b'\n').next()?;
    (!line.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(line)))
}

/// A bucket mounted on its own, as its lock tells (read without touching the lock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketMount {
    pub bucket: String,
    /// Where the daemon said it mounted the bucket.
    pub mountpoint: Option<PathBuf>,
    /// The daemon's pid (0 when it lives in another pid namespace).
    pub pids: Vec<u32>,
}

/// The buckets of `store` mounted on their own on this host now, by name.
pub fn bucket_mounts(store: &Path) -> io::Result<Vec<BucketMount>> {
    let dir = store.join(META_DIR).join(BUCKET_LOCK_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let locks = std::fs::read_to_string("/proc/locks")?;
    let mut mounts = Vec::new();
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let pids = flock_holders(&locks, major, minor, meta.ino());
        if pids.is_empty() || !meta.is_file() {
            continue;
        }
        mounts.push(BucketMount {
            bucket: entry.file_name().to_string_lossy().into_owned(),
            mountpoint: recorded_mountpoint(&entry.path()),
            pids,
        });
    }
    mounts.sort_by(|a, b| a.bucket.cmp(&b.bucket));
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TMP_DIR;

    fn new_store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(META_DIR)).unwrap();
        dir
    }

    #[test]
    fn buckets_mount_side_by_side_each_once_and_never_beside_a_whole_mount() {
        let dir = new_store();
        let (_a, lock_a) = BucketLock::acquire(dir.path(), "photos").unwrap();
        lock_a.record_mountpoint(Path::new("/mnt/p")).unwrap();
        let (_b, _lock_b) = BucketLock::acquire(dir.path(), "docs").unwrap();
        let err = BucketLock::acquire(dir.path(), "photos").unwrap_err();
        assert!(
            matches!(&err, BucketLockError::BucketMounted { bucket, mountpoint, .. }
                if bucket == "photos" && mountpoint.as_deref() == Some(Path::new("/mnt/p"))),
            "{err}"
        );
        let err = Store::open_locked(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyMounted(_)), "{err}");
        let mounts = bucket_mounts(dir.path()).unwrap();
        let names: Vec<&str> = mounts.iter().map(|m| m.bucket.as_str()).collect();
        assert_eq!(names, ["docs", "photos"]);
        assert_eq!(mounts[1].mountpoint.as_deref(), Some(Path::new("/mnt/p")));
        assert_eq!(mounts[1].pids, [std::process::id()]);
    }

    #[test]
    fn a_whole_mount_refuses_bucket_mounts_and_released_locks_free_the_store() {
        let dir = new_store();
        let whole = Store::open_locked(dir.path()).unwrap();
        let err = BucketLock::acquire(dir.path(), "photos").unwrap_err();
        assert!(matches!(err, BucketLockError::MountedWhole(_)), "{err}");
        drop(whole);
        let (store, lock) = BucketLock::acquire(dir.path(), "photos").unwrap();
        drop((store, lock));
        assert!(bucket_mounts(dir.path()).unwrap().is_empty(), "released");
        Store::open_locked(dir.path()).unwrap();
    }

    #[test]
    fn bucket_mounts_starting_at_the_same_moment_both_succeed() {
        // Each start holds the store lock exclusively for a moment; the other must wait for
        // it rather than take it for a whole-store mount.
        for round in 0..20 {
            let dir = new_store();
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                let starts: Vec<_> = ["photos", "docs"]
                    .into_iter()
                    .map(|bucket| {
                        let (path, barrier) = (dir.path(), &barrier);
                        scope.spawn(move || {
                            barrier.wait();
                            BucketLock::acquire(path, bucket)
                        })
                    })
                    .collect();
                let held: Vec<_> = starts.into_iter().map(|s| s.join().unwrap()).collect();
                for result in &held {
                    assert!(result.is_ok(), "round {round}: {result:?}");
                }
            });
        }
    }

    #[test]
    fn the_first_bucket_mount_clears_leftovers_of_a_dead_daemon() {
        let dir = new_store();
        let whole = Store::open_locked(dir.path()).unwrap();
        whole.record_mountpoint(Path::new("/mnt/old")).unwrap();
        drop(whole);
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        std::fs::write(tmp.join("create-0123456789abcdef01234567"), b"x").unwrap();
        let (_store, _lock) = BucketLock::acquire(dir.path(), "photos").unwrap();
        assert!(!tmp.join("create-0123456789abcdef01234567").exists());
        let lock_file = dir.path().join(META_DIR).join(LOCK_FILE);
        assert!(std::fs::read(lock_file).unwrap().is_empty());
        // A second bucket mount leaves the first one's temporary files alone.
        std::fs::write(tmp.join("create-4567456789abcdef01234567"), b"x").unwrap();
        let (_store2, _lock2) = BucketLock::acquire(dir.path(), "docs").unwrap();
        assert!(tmp.join("create-4567456789abcdef01234567").exists());
    }
}

//! Who holds a store's lock, read from `/proc/locks` without touching the lock: tools that
//! work beside a mount (fsck, status, restore) ask this instead of taking the lock.
//! Reads only; knows nothing of objects, keys or FUSE.

use super::layout::lock_path;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The process ids holding a `flock` on `STORE/.ssefs/lock` (empty when nobody does, or when
/// the lock file does not exist). A pid from another pid namespace may show as 0.
pub fn lock_holders(store: &Path) -> io::Result<Vec<u32>> {
    let meta = match std::fs::metadata(lock_path(store)) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let locks = std::fs::read_to_string("/proc/locks")?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    Ok(flock_holders(&locks, major, minor, meta.ino()))
}

/// The pids of the granted `FLOCK` entries of `/proc/locks` on device `major:minor`, inode
/// `ino`. Lines of waiters (`->`) are skipped.
pub(super) fn flock_holders(locks: &str, major: u32, minor: u32, ino: u64) -> Vec<u32> {
    let mut pids = Vec::new();
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.get(1) != Some(&"FLOCK") {
            continue;
        }
        let (Some(pid), Some(id)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let mut parts = id.split(':');
        let parsed = (
            parts.next().and_then(|m| u32::from_str_radix(m, 16).ok()),
            parts.next().and_then(|m| u32::from_str_radix(m, 16).ok()),
            parts.next().and_then(|i| i.parse::<u64>().ok()),
        );
        if parsed == (Some(major), Some(minor), Some(ino)) {
            if let Ok(pid) = pid.parse() {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The mountpoint the daemon holding the store lock recorded in it, if the lock is held now
/// (a daemon that died leaves its last mountpoint behind, with no holder).
pub fn locked_mountpoint(store: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if lock_holders(store).ok()?.is_empty() {
        return None;
    }
    let text = std::fs::read(lock_path(store)).ok()?;
    let line = text.split(|&b| b == b'\n').next()?;
    (!line.is_empty()).then(|| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_flocks_on_the_inode_are_found() {
        let locks = "1: POSIX  ADVISORY  READ 27862 fe:00:77 128 128\n\
                     2: FLOCK  ADVISORY  WRITE 4242 fe:00:77 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4343 fe:00:77 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 99 fe:01:77 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 98 fe:00:78 0 EOF\n";
        assert_eq!(flock_holders(locks, 0xfe, 0, 77), [4242]);
    }

    #[test]
    fn a_held_store_lock_is_seen_and_its_release_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(crate::store::layout::meta_dir(dir.path())).unwrap();
        assert!(lock_holders(dir.path()).unwrap().is_empty());
        let store = super::super::Store::open_locked(dir.path()).unwrap();
        assert_eq!(lock_holders(dir.path()).unwrap().len(), 1);
        drop(store);
        assert!(lock_holders(dir.path()).unwrap().is_empty());
    }
}

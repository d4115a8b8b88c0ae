//! The backing directory: where objects live as files, `.ssefs/` (keystore, lock, temporary
//! files), atomic create and replace, and the store lock. Knows nothing of FUSE or keys.

mod backing;
pub mod bucket_lock;
pub mod lock_probe;

pub use backing::{
    Backing, DirEntryInfo, FsUsage, LocalBacking, RenameMode, Stat, TimeUpdate, Timestamp,
};

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the store's metadata directory, hidden from the mount.
pub const META_DIR: &str = ".ssefs";
/// Temporary files (atomic create and replace) live in `META_DIR/TMP_DIR`.
pub const TMP_DIR: &str = "tmp";
/// The lock file a mounted daemon holds with `flock(LOCK_EX)`.
pub const LOCK_FILE: &str = "lock";
/// Prefix of the temporary files of atomic creates (only a mounted daemon makes them).
const CREATE_PREFIX: &str = "create-";
/// Prefix of the temporary files of atomic replaces.
const REPLACE_PREFIX: &str = "replace-";
/// Prefix of the temporary files of re-encryptions: the new object before the swap, or the
/// old one after it (only a mounted daemon makes them).
const REENCRYPT_PREFIX: &str = "reencrypt-";

/// Errors opening or locking a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} does not exist")]
    NotFound(PathBuf),
    #[error("store {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not an ssefs store (no {META_DIR}/ directory; run `ssefs init` first)")]
    NotAStore(PathBuf),
    #[error("store {0} is already mounted by another ssefs daemon")]
    AlreadyMounted(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open backing directory. Holds `O_PATH` descriptors for the root and the temporary
/// directory and, when opened for mounting, the store lock.
pub struct Store {
    root: PathBuf,
    root_fd: OwnedFd,
    tmp_fd: OwnedFd,
    lock: Option<File>,
    backing: Arc<dyn Backing>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("locked", &self.lock.is_some())
            .finish()
    }
}

impl Store {
    /// Opens the store at `path` for mounting: checks it, takes the store lock (failing with
    /// `AlreadyMounted` if another daemon holds it) and removes leftover temporary creates.
    pub fn open_locked(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, Arc::new(LocalBacking), true)
    }

    /// Opens a store with a chosen [`Backing`] (fault injection in tests); `lock` says
    /// whether to take the store lock.
    pub fn open_with(
        path: &Path,
        backing: Arc<dyn Backing>,
        lock: bool,
    ) -> Result<Store, StoreError> {
        let root = Self::check_root(path)?;
        let meta = root.join(META_DIR);
        if !meta.is_dir() {
            return Err(StoreError::NotAStore(root));
        }
        let lock = if lock {
            Some(Self::lock(&root, &meta)?)
        } else {
            None
        };
        let tmp = meta.join(TMP_DIR);
        match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(at(&tmp)(e)),
        }
        let root_fd = open_dir_path(&root)?;
        let tmp_fd = open_dir_path(&tmp)?;
        let store = Store {
            root,
            root_fd,
            tmp_fd,
            lock,
            backing,
        };
        if store.lock.is_some() {
            store.remove_stale_creates(&tmp);
        }
        Ok(store)
    }

    /// Writes `mountpoint` into the held store lock file, so tools find the mount of this
    /// store even when its `fsname` is not the store's path. A no-op without the lock.
    pub fn record_mountpoint(&self, mountpoint: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::FileExt;
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        let mut text = mountpoint.as_os_str().as_bytes().to_vec();
        text.push(b'\n');
        lock.set_len(0)?;
        lock.write_all_at(&text, 0)
    }

    fn check_root(path: &Path) -> Result<PathBuf, StoreError> {
        let root = match path.canonicalize() {
            Ok(root) => root,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(path.to_path_buf()));
            }
            Err(e) => return Err(at(path)(e)),
        };
        if !root.is_dir() {
            return Err(StoreError::NotADirectory(root));
        }
        Ok(root)
    }

    fn lock(root: &Path, meta: &Path) -> Result<File, StoreError> {
        let path = meta.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(at(&path))?;
        // SAFETY: plain system call on a valid descriptor.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StoreError::AlreadyMounted(root.to_path_buf()));
            }
            return Err(at(&path)(e));
        }
        Ok(file)
    }

    /// Temporary creates and re-encryptions left by a daemon that died: nobody else makes
    /// `create-*` or `reencrypt-*` files, and we hold the lock, so they are garbage (never
    /// visible objects).
    fn remove_stale_creates(&self, tmp: &Path) {
        let Ok(entries) = std::fs::read_dir(tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if bytes.starts_with(CREATE_PREFIX.as_bytes())
                || bytes.starts_with(REENCRYPT_PREFIX.as_bytes())
            {
                if let Err(e) = self.backing.unlink_at(self.tmp_fd.as_fd(), &name, false) {
                    log::warn!("cannot remove stale temporary file {name:?}: {e}");
                }
            }
        }
    }

    /// The canonical path of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `STORE/.ssefs`, where the keystore lives.
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }
    /// An `O_PATH` descriptor of the store root.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }
    pub fn backing(&self) -> &Arc<dyn Backing> {
        &self.backing
    }

    /// Starts an atomic create: a new, empty, unnamed-to-users file with exactly `mode` in the
    /// temporary directory. Write its contents, then [`PendingFile::publish`] it.
    pub fn begin_create(&self, mode: u32) -> io::Result<(PendingFile<'_>, File)> {
        self.begin_temp(CREATE_PREFIX, mode)
    }

    /// Starts a re-encryption: a new, empty file with exactly `mode` in the temporary
    /// directory, to be swapped with the object by [`PendingFile::exchange`].
    pub fn begin_reencrypt(&self, mode: u32) -> io::Result<(PendingFile<'_>, File)> {
        self.begin_temp(REENCRYPT_PREFIX, mode)
    }

    /// `fsync` of a directory behind an `O_PATH` descriptor (makes renames in it durable).
    pub fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.backing
            .reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?
            .sync_all()
    }

    /// `fsync` of the temporary directory.
    pub fn sync_temp_dir(&self) -> io::Result<()> {
        self.sync_dir(self.tmp_fd.as_fd())
    }

    /// Replaces `dir/name` atomically with a file `write` fills: temporary file, `fsync`,
    /// `rename` over the old one, `fsync` of the directory. The old contents stay in place
    /// if anything fails.
    pub fn replace_atomically(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: u32,
        write: impl FnOnce(&File) -> io::Result<()>,
    ) -> io::Result<()> {
        let (pending, file) = self.begin_temp(REPLACE_PREFIX, mode)?;
        write(&file)?;
        file.sync_all()?;
        drop(file);
        pending.publish(dir, name, RenameMode::Replace)?;
        self.backing
            .reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?
            .sync_all()
    }

    fn begin_temp(&self, prefix: &str, mode: u32) -> io::Result<(PendingFile<'_>, File)> {
        loop {
            let mut random = [0u8; 12];
            getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
            let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
            let name = OsString::from(format!("{prefix}{hex}"));
            match self.backing.create_at(self.tmp_fd.as_fd(), &name, mode) {
                Ok(file) => {
                    let pending = PendingFile {
                        store: self,
                        name,
                        done: false,
                    };
                    return Ok((pending, file));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn open_dir_path(path: &Path) -> Result<OwnedFd, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(at(path))?;
    Ok(OwnedFd::from(file))
}

/// A temporary file not yet in place; removed on drop unless published.
pub struct PendingFile<'a> {
    store: &'a Store,
    name: OsString,
    done: bool,
}

impl PendingFile<'_> {
    /// Moves the file to `dir/name`. With `RenameMode::NoReplace`, an existing `name` gives
    /// `AlreadyExists` and the temporary file is removed.
    pub fn publish(
        mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mode: RenameMode,
    ) -> io::Result<()> {
        let store = self.store;
        store
            .backing
            .rename_at(store.tmp_fd.as_fd(), &self.name, dir, name, mode)?;
        self.done = true;
        Ok(())
    }

    /// Swaps the file with `dir/name` in one `renameat2(RENAME_EXCHANGE)`: afterwards the
    /// temporary name holds what was at `dir/name`, removed when this is dropped (or swapped
    /// back by a second exchange).
    pub fn exchange(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let store = self.store;
        store.backing.rename_at(
            store.tmp_fd.as_fd(),
            &self.name,
            dir,
            name,
            RenameMode::Exchange,
        )
    }

    /// The attributes of the node now at the temporary name.
    pub fn stat(&self) -> io::Result<Stat> {
        let store = self.store;
        store.backing.stat_at(store.tmp_fd.as_fd(), &self.name)
    }
}

impl Drop for PendingFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            let store = self.store;
            if let Err(e) = store
                .backing
                .unlink_at(store.tmp_fd.as_fd(), &self.name, false)
            {
                log::warn!("cannot remove temporary file {:?}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(META_DIR)).unwrap();
        dir
    }

    #[test]
    fn refuses_a_directory_without_meta_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open_locked(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore(_)), "{err}");
        let err = Store::open_locked(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    }

    #[test]
    fn a_second_lock_fails_and_is_released_on_drop() {
        let dir = new_store();
        let first = Store::open_locked(dir.path()).unwrap();
        let err = Store::open_locked(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("already mounted by another ssefs daemon")
        );
        drop(first);
        Store::open_locked(dir.path()).unwrap();
    }

    #[test]
    fn publish_does_not_replace_and_cleans_up() {
        use std::io::Write;
        let dir = new_store();
        let store = Store::open_locked(dir.path()).unwrap();
        std::fs::write(dir.path().join("taken"), b"old").unwrap();
        let (pending, mut file) = store.begin_create(0o640).unwrap();
        file.write_all(b"new").unwrap();
        let err = pending
            .publish(store.root_fd(), OsStr::new("taken"), RenameMode::NoReplace)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"old");
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

        let (pending, mut file) = store.begin_create(0o640).unwrap();
        file.write_all(b"fresh").unwrap();
        pending
            .publish(store.root_fd(), OsStr::new("fresh"), RenameMode::NoReplace)
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("fresh")).unwrap(), b"fresh");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("fresh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
    }

    #[test]
    fn replace_atomically_keeps_old_contents_on_failure() {
        let dir = new_store();
        let store = Store::open_locked(dir.path()).unwrap();
        std::fs::write(dir.path().join("f"), b"old").unwrap();
        let err = store
            .replace_atomically(store.root_fd(), OsStr::new("f"), 0o600, |_| {
                Err(io::Error::other("disk on fire"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"old");
        store
            .replace_atomically(store.root_fd(), OsStr::new("f"), 0o600, |f| {
                use std::io::Write;
                (&*f).write_all(b"new")
            })
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn stale_creates_are_removed_when_locking() {
        let dir = new_store();
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("create-dead"), b"x").unwrap();
        std::fs::write(tmp.join("reencrypt-dead"), b"x").unwrap();
        std::fs::write(tmp.join("replace-other"), b"x").unwrap();
        let _store = Store::open_locked(dir.path()).unwrap();
        assert!(!tmp.join("create-dead").exists());
        assert!(!tmp.join("reencrypt-dead").exists());
        assert!(tmp.join("replace-other").exists());
    }
}

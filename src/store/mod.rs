//! The backing directory: the only way to make or open a store (`Store::create`, `Store::open`,
//! `Store::open_locked`), where objects live as files, `.ssefs/` (named in `layout`), atomic
//! create and re-encryption swaps, and the store lock. Knows nothing of FUSE or keys.

mod backing;
pub mod bucket_lock;
pub mod layout;
pub mod lock_probe;
mod pool;
pub mod remote;

pub use backing::{
    Backing, DirEntryInfo, FsUsage, LocalBacking, RenameMode, Stat, TimeUpdate, Timestamp,
};
pub use layout::{LOCK_FILE, META_DIR, TMP_DIR, TempKind};

use layout::TEMP_RANDOM_BYTES;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Errors opening, creating or locking a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} does not exist")]
    NotFound(PathBuf),
    #[error("store {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not an ssefs store (no {META_DIR}/ directory; run `ssefs init` first)")]
    NotAStore(PathBuf),
    #[error("{0} is already an ssefs store")]
    AlreadyAStore(PathBuf),
    #[error("{0} exists and is not empty; a new store needs an empty or missing directory")]
    NotEmpty(PathBuf),
    #[error("store {0} is already mounted by another ssefs daemon")]
    AlreadyMounted(PathBuf),
    #[error("cannot create {what} {path}: {source}")]
    Create {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn creating<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Create {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `dir` is an ssefs store (has a [`META_DIR`] directory).
pub fn is_store(dir: &Path) -> bool {
    layout::meta_dir(dir).is_dir()
}

/// An open backing directory. Holds `O_PATH` descriptors for the root and the temporary
/// directory and, when opened for mounting, the store lock.
pub struct Store {
    root: PathBuf,
    root_fd: OwnedFd,
    /// `None` only in a store opened without the lock whose temporary directory is missing
    /// (an unlocked open changes nothing).
    tmp_fd: Option<OwnedFd>,
    lock: Option<File>,
    /// The bucket whose lock (`bucket_lock`) the owner of this handle holds, for a
    /// single-bucket mount or an offline tool working beside one.
    bucket: Option<String>,
    backing: Arc<dyn Backing>,
    /// Unnamed files made ahead for creates, started by the first create.
    pool: OnceLock<Option<pool::UnnamedPool>>,
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
    /// `AlreadyMounted` if another daemon holds it) and removes leftover temporary files.
    pub fn open_locked(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, Arc::new(LocalBacking), true)
    }

    /// Opens the store at `path` without the lock, to read it beside a mount (fsck, status):
    /// creates and removes nothing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, Arc::new(LocalBacking), false)
    }

    /// Opens a store with a chosen [`Backing`] (fault injection in tests); `lock` says
    /// whether to take the store lock (and with it, make the temporary directory if missing
    /// and remove leftover temporary files).
    pub fn open_with(
        path: &Path,
        backing: Arc<dyn Backing>,
        lock: bool,
    ) -> Result<Store, StoreError> {
        let root = Self::check_root(path)?;
        let meta = layout::meta_dir(&root);
        if !meta.is_dir() {
            return Err(StoreError::NotAStore(root));
        }
        let lock = if lock { Some(Self::lock(&root)?) } else { None };
        let tmp = meta.join(TMP_DIR);
        if lock.is_some() {
            match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(at(&tmp)(e)),
            }
        }
        let root_fd = open_dir_path(&root)?;
        let tmp_fd = match open_dir_path(&tmp) {
            Ok(fd) => Some(fd),
            Err(StoreError::Io { source, .. })
                if lock.is_none() && source.kind() == io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let store = Store {
            root,
            root_fd,
            tmp_fd,
            lock,
            bucket: None,
            backing,
            pool: OnceLock::new(),
        };
        if store.lock.is_some() {
            store.remove_leftover_temporaries();
        }
        Ok(store)
    }

    /// Refuses `path` as a new store unless it is missing or an empty directory; returns
    /// whether it exists. [`Store::create`] checks the same; callers that must do other
    /// work first (find a root key) ask this before.
    pub fn check_new(path: &Path) -> Result<bool, StoreError> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(at(path)(e)),
        };
        if !meta.is_dir() {
            return Err(StoreError::NotADirectory(path.to_path_buf()));
        }
        if std::fs::symlink_metadata(layout::meta_dir(path)).is_ok() {
            return Err(StoreError::AlreadyAStore(path.to_path_buf()));
        }
        let mut entries = std::fs::read_dir(path).map_err(at(path))?;
        if entries.next().is_some() {
            return Err(StoreError::NotEmpty(path.to_path_buf()));
        }
        Ok(true)
    }

    /// Makes a new store at `path` (missing, or an empty directory): the directory, `.ssefs/`,
    /// `.ssefs/tmp/` (all 0700) and the lock file (0600). The caller puts the keystore into
    /// [`NewStore::meta_dir`] and then calls [`NewStore::finish`]; dropped unfinished, the
    /// new store is removed again (only what this made, and the keystore files).
    pub fn create(path: &Path) -> Result<NewStore, StoreError> {
        let existed = Self::check_new(path)?;
        let mut new = NewStore {
            root: path.to_path_buf(),
            made_root: !existed,
            made: Vec::new(),
            finished: false,
        };
        if !existed {
            make_dir(path)?;
        }
        let meta = layout::meta_dir(path);
        make_dir(&meta)?;
        new.made.push(meta.clone());
        make_dir(&meta.join(TMP_DIR))?;
        new.made.push(meta.join(TMP_DIR));
        let lock = layout::lock_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
            .map_err(creating("file", &lock))?;
        new.made.push(lock.clone());
        file.sync_all().map_err(at(&lock))?;
        Ok(new)
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

    fn lock(root: &Path) -> Result<File, StoreError> {
        let path = layout::lock_path(root);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(at(&path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StoreError::AlreadyMounted(root.to_path_buf()));
            }
            Err(e) => return Err(at(&path)(e.into())),
        }
        Ok(file)
    }

    /// Removes the temporary files a daemon that died left: only a lock holder makes them
    /// and we hold the lock, so each is garbage (see [`TempKind`]); other names stay.
    fn remove_leftover_temporaries(&self) {
        for (name, kind) in self.temporaries().unwrap_or_default() {
            if let Some(kind) = kind {
                if let Err(e) = self.unlink_temporary(&name) {
                    log::warn!("cannot remove a leftover {kind:?} temporary {name:?}: {e}");
                }
            }
        }
    }

    /// The entries of the temporary directory, each with its kind (`None`: not a name
    /// ssefs makes), sorted by name. Empty when the directory is missing.
    pub fn temporaries(&self) -> io::Result<Vec<(OsString, Option<TempKind>)>> {
        let Some(tmp) = &self.tmp_fd else {
            return Ok(Vec::new());
        };
        let mut out: Vec<_> = self
            .backing
            .read_dir(tmp.as_fd())?
            .into_iter()
            .filter(|e| e.file_type == libc::S_IFREG || e.file_type == 0)
            .map(|e| {
                let kind = TempKind::parse(&e.name);
                (e.name, kind)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes the temporary file `name` if it is one ssefs makes (any other name gives
    /// `InvalidInput`). Only a caller holding the lock may: else it could be in use.
    pub fn remove_temporary(&self, name: &OsStr) -> io::Result<()> {
        if self.lock.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "temporary files are removed only under the store lock",
            ));
        }
        if TempKind::parse(name).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a temporary file ssefs makes",
            ));
        }
        self.unlink_temporary(name)
    }

    fn unlink_temporary(&self, name: &OsStr) -> io::Result<()> {
        match self.backing.unlink_at(self.tmp_fd()?, name, false) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Readies a store opened without the store lock for a single-bucket mount (or a tool
    /// beside one) that holds `bucket`'s lock: makes the temporary directory if missing and,
    /// when `alone` (the caller held the store lock exclusively a moment ago, so no other
    /// daemon uses the store), removes leftover temporaries as a locked open does.
    pub(super) fn hold_bucket(&mut self, bucket: &str, alone: bool) -> Result<(), StoreError> {
        let tmp = self.meta_dir().join(TMP_DIR);
        if self.tmp_fd.is_none() {
            match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(at(&tmp)(e)),
            }
            self.tmp_fd = Some(open_dir_path(&tmp)?);
        }
        if alone {
            self.remove_leftover_temporaries();
        }
        self.bucket = Some(bucket.to_string());
        Ok(())
    }

    /// The bucket whose lock the owner of this handle holds ([`Store::hold_bucket`]).
    pub fn locked_bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// The canonical path of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `STORE/.ssefs`, where the keystore lives.
    pub fn meta_dir(&self) -> PathBuf {
        layout::meta_dir(&self.root)
    }
    /// Whether this handle holds the store lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }
    /// An `O_PATH` descriptor of the store root.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }
    pub fn backing(&self) -> &Arc<dyn Backing> {
        &self.backing
    }

    fn tmp_fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.tmp_fd
            .as_ref()
            .map(|fd| fd.as_fd())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// An `O_PATH` descriptor of `rel` (relative to the store root), reached one component at
    /// a time without following a symlink. `rel` may not leave the store (`..`, absolute).
    pub fn open_path(&self, rel: &Path) -> io::Result<OwnedFd> {
        let mut fd = self.backing.open_path_at(self.root_fd(), OsStr::new("."))?;
        for component in rel.components() {
            match component {
                Component::Normal(name) => fd = self.backing.open_path_at(fd.as_fd(), name)?,
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a store path must be relative and stay inside the store",
                    ));
                }
            }
        }
        Ok(fd)
    }

    /// Opens the regular file `rel` (relative to the store root) for reading, or for reading
    /// and writing; never follows a symlink.
    pub fn open_file(&self, rel: &Path, write: bool) -> io::Result<File> {
        let fd = self.open_path(rel)?;
        if !self.backing.stat(fd.as_fd())?.is_file() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        self.backing.reopen(fd.as_fd(), flags)
    }

    /// The entries of the directory `rel` (relative to the store root).
    pub fn list_dir(&self, rel: &Path) -> io::Result<Vec<DirEntryInfo>> {
        let fd = self.open_path(rel)?;
        self.backing.read_dir(fd.as_fd())
    }

    /// Starts an atomic create of a file to be named in `dir`: a new, empty file with exactly
    /// `mode` that users cannot see yet. Write its contents, then [`PendingCreate::publish`]
    /// it. Where the backing can, the file has no name at all until then (`O_TMPFILE`), and a
    /// crash leaves nothing behind: most often one a thread made ahead in the temporary
    /// directory's filesystem (`pool.rs`), else one made at once beside `dir`. Elsewhere it
    /// is a named file in the temporary directory, renamed into place.
    pub fn begin_create(
        &self,
        dir: BorrowedFd<'_>,
        mode: u32,
    ) -> io::Result<(PendingCreate<'_>, File)> {
        // Only a mounting (locked) store creates anything.
        let tmp = self.tmp_fd()?;
        if let Some(file) = self.ready_file(tmp) {
            if mode != pool::POOL_MODE {
                self.backing.chmod(file.as_fd(), mode)?;
            }
            return Ok((PendingCreate::Unnamed(self), file));
        }
        if let Some(file) = self.backing.create_unnamed(dir, mode)? {
            return Ok((PendingCreate::Unnamed(self), file));
        }
        let (pending, file) = self.begin_temp(TempKind::Create, mode)?;
        Ok((PendingCreate::Named(pending), file))
    }

    /// An unnamed file made ahead (mode [`pool::POOL_MODE`]), where the backing makes them.
    fn ready_file(&self, tmp: BorrowedFd<'_>) -> Option<File> {
        if !self.backing.makes_files_ahead() {
            return None;
        }
        self.pool
            .get_or_init(|| {
                let dir = tmp.try_clone_to_owned().ok()?;
                let backing = Arc::clone(&self.backing);
                pool::UnnamedPool::start(move || {
                    backing.create_unnamed(dir.as_fd(), pool::POOL_MODE)
                })
            })
            .as_ref()?
            .take()
    }

    /// Starts a re-encryption: a new, empty file with exactly `mode` in the temporary
    /// directory, to be swapped with the object by [`PendingFile::exchange`].
    pub fn begin_reencrypt(&self, mode: u32) -> io::Result<(PendingFile<'_>, File)> {
        self.begin_temp(TempKind::Reencrypt, mode)
    }

    /// `fsync` of a directory behind an `O_PATH` descriptor (makes renames in it durable).
    pub fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.backing
            .reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?
            .sync_all()
    }

    /// `fsync` of the temporary directory.
    pub fn sync_temp_dir(&self) -> io::Result<()> {
        self.sync_dir(self.tmp_fd()?)
    }

    fn begin_temp(&self, kind: TempKind, mode: u32) -> io::Result<(PendingFile<'_>, File)> {
        let tmp = self.tmp_fd()?;
        loop {
            let mut random = [0u8; TEMP_RANDOM_BYTES];
            getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
            let name = OsString::from(kind.name(&random));
            match self.backing.create_at(tmp, &name, mode) {
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

fn make_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(creating("directory", path))
}

fn sync_dir_path(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// A store [`Store::create`] made and its caller has not finished (the keystore is still to
/// be put in). Removed again when dropped unfinished.
#[derive(Debug)]
pub struct NewStore {
    root: PathBuf,
    made_root: bool,
    /// What `create` made inside the store, in order.
    made: Vec<PathBuf>,
    finished: bool,
}

impl NewStore {
    /// The store's path, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `STORE/.ssefs`, where the caller creates the keystore.
    pub fn meta_dir(&self) -> PathBuf {
        layout::meta_dir(&self.root)
    }

    /// Makes the new store durable (the meta directory, the store directory and, when
    /// `create` made it, its parent synced) and keeps it.
    pub fn finish(mut self) -> Result<(), StoreError> {
        sync_dir_path(&self.meta_dir())?;
        sync_dir_path(&self.root)?;
        if self.made_root {
            let parent = match self.root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            sync_dir_path(&parent)?;
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for NewStore {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The keystore files the caller may have made; then what `create` made, newest
        // first. Directories go only when empty, so nothing else is ever deleted.
        let keystore = layout::keystore_path(&self.root);
        for file in layout::companion_files(&keystore)
            .into_iter()
            .chain([keystore.clone()])
        {
            let _ = std::fs::remove_file(file);
        }
        for path in self.made.iter().rev() {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
        if self.made_root {
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// A file [`Store::begin_create`] made that is not in place yet: unnamed (dropped with its
/// last descriptor) or a temporary file (removed on drop unless published).
pub enum PendingCreate<'a> {
    Unnamed(&'a Store),
    Named(PendingFile<'a>),
}

impl PendingCreate<'_> {
    /// Whether the file has no name until published.
    pub fn is_unnamed(&self) -> bool {
        matches!(self, PendingCreate::Unnamed(_))
    }

    /// Gives `file` (the file `begin_create` returned with this) the name `dir/name`, never
    /// replacing what is there: an existing `name` gives `AlreadyExists`, and the new file
    /// goes away.
    pub fn publish(self, file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match self {
            PendingCreate::Unnamed(store) => store.backing.link_unnamed(file, dir, name),
            PendingCreate::Named(pending) => pending.publish(dir, name, RenameMode::NoReplace),
        }
    }
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
            .rename_at(store.tmp_fd()?, &self.name, dir, name, mode)?;
        self.done = true;
        Ok(())
    }

    /// Swaps the file with `dir/name` in one `renameat2(RENAME_EXCHANGE)`: afterwards the
    /// temporary name holds what was at `dir/name`, removed when this is dropped (or swapped
    /// back by a second exchange).
    pub fn exchange(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let store = self.store;
        store
            .backing
            .rename_at(store.tmp_fd()?, &self.name, dir, name, RenameMode::Exchange)
    }

    /// The attributes of the node now at the temporary name.
    pub fn stat(&self) -> io::Result<Stat> {
        let store = self.store;
        store.backing.stat_at(store.tmp_fd()?, &self.name)
    }
}

impl Drop for PendingFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            let store = self.store;
            let removed = store
                .tmp_fd()
                .and_then(|tmp| store.backing.unlink_at(tmp, &self.name, false));
            if let Err(e) = removed {
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
        let (pending, mut file) = store.begin_create(store.root_fd(), 0o640).unwrap();
        assert!(matches!(pending, PendingCreate::Unnamed(_)));
        file.write_all(b"new").unwrap();
        let err = pending
            .publish(&file, store.root_fd(), OsStr::new("taken"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"old");
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

        let (pending, mut file) = store.begin_create(store.root_fd(), 0o640).unwrap();
        file.write_all(b"fresh").unwrap();
        pending
            .publish(&file, store.root_fd(), OsStr::new("fresh"))
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("fresh")).unwrap(), b"fresh");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("fresh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
    }

    const HEX: &str = "00112233445566778899aabb";

    #[test]
    fn leftover_temporaries_are_removed_when_locking_and_nothing_else() {
        let dir = new_store();
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        std::fs::create_dir_all(&tmp).unwrap();
        for name in [
            format!("create-{HEX}"),
            format!("reencrypt-{HEX}"),
            format!("replace-{HEX}"),
            "create-notes".to_string(),
        ] {
            std::fs::write(tmp.join(name), b"x").unwrap();
        }
        let unlocked = Store::open(dir.path()).unwrap();
        let kinds: Vec<Option<TempKind>> = unlocked
            .temporaries()
            .unwrap()
            .into_iter()
            .map(|(_, kind)| kind)
            .collect();
        // Sorted by name: create-0011…, create-notes, reencrypt-…, replace-….
        assert_eq!(
            kinds,
            [
                Some(TempKind::Create),
                None,
                Some(TempKind::Reencrypt),
                None
            ]
        );
        let err = unlocked
            .remove_temporary(OsStr::new(&format!("create-{HEX}")))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        drop(unlocked);
        let store = Store::open_locked(dir.path()).unwrap();
        assert!(!tmp.join(format!("create-{HEX}")).exists());
        assert!(!tmp.join(format!("reencrypt-{HEX}")).exists());
        assert!(tmp.join(format!("replace-{HEX}")).exists());
        assert!(tmp.join("create-notes").exists());
        let err = store
            .remove_temporary(OsStr::new("create-notes"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn creates_from_files_made_ahead_get_their_mode_and_leave_nothing_behind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = new_store();
        let store = Store::open_locked(dir.path()).unwrap();
        // More than the pool holds, so some come from it and some are made at once.
        for i in 0..100u32 {
            let mode = [0o644, 0o600, 0o755][i as usize % 3];
            let (pending, file) = store.begin_create(store.root_fd(), mode).unwrap();
            let name = format!("f{i}");
            pending
                .publish(&file, store.root_fd(), OsStr::new(&name))
                .unwrap();
            let meta = std::fs::metadata(dir.path().join(&name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{name}");
        }
        // One more never published goes away with its descriptor.
        let (pending, file) = store.begin_create(store.root_fd(), 0o644).unwrap();
        drop((pending, file));
        let tmp = dir.path().join(META_DIR).join(TMP_DIR);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 100 + 1, "100 files and the meta directory");
    }

    #[test]
    fn an_unlocked_open_creates_nothing() {
        let dir = new_store();
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.is_locked());
        assert!(!dir.path().join(META_DIR).join(TMP_DIR).exists());
        assert!(store.temporaries().unwrap().is_empty());
        assert!(store.begin_create(store.root_fd(), 0o600).is_err());
    }

    #[test]
    fn create_makes_the_layout_and_removes_it_unless_finished() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let new = Store::create(&path).unwrap();
        std::fs::write(new.meta_dir().join(layout::KEYSTORE_FILE), b"db").unwrap();
        drop(new);
        assert!(!path.exists(), "an unfinished store is removed");

        std::fs::create_dir(&path).unwrap();
        let new = Store::create(&path).unwrap();
        new.finish().unwrap();
        for dir in [path.join(META_DIR), path.join(META_DIR).join(TMP_DIR)] {
            let meta = std::fs::metadata(&dir).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{dir:?}");
        }
        let lock = std::fs::metadata(layout::lock_path(&path)).unwrap();
        assert_eq!(lock.permissions().mode() & 0o7777, 0o600);
        assert!(matches!(
            Store::create(&path),
            Err(StoreError::AlreadyAStore(_))
        ));
        assert!(is_store(&path));
        Store::open_locked(&path).unwrap();

        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("f"), b"x").unwrap();
        assert!(matches!(Store::create(&full), Err(StoreError::NotEmpty(_))));
        assert!(full.join("f").exists() && !full.join(META_DIR).exists());
        assert!(matches!(
            Store::create(&full.join("f")),
            Err(StoreError::NotADirectory(_))
        ));
    }

    #[test]
    fn store_paths_stay_inside_and_follow_no_symlink() {
        let dir = new_store();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/o"), b"obj").unwrap();
        std::os::unix::fs::symlink("o", dir.path().join("b/l")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut text = String::new();
        use std::io::Read;
        store
            .open_file(Path::new("b/o"), false)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "obj");
        assert!(store.open_file(Path::new("b/l"), false).is_err());
        assert!(store.open_file(Path::new("../x"), false).is_err());
        assert!(store.open_file(Path::new("/etc/passwd"), false).is_err());
        let names: Vec<_> = store
            .list_dir(Path::new("b"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names.len(), 2);
    }
}

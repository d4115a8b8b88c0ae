//! The filesystem core: buckets, inodes, open handles and the SSE policy. Decides every
//! operation; knows nothing of `fuser` (see `fuse/`) and is tested without a kernel mount.
//! Namespace operations live here; file data in `object.rs`, attributes in `xattr.rs`.

#![forbid(unsafe_code)]

mod error;
mod inode;
mod object;
mod open_object;
mod policy;
mod reencrypt;
mod rewrap;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fds;
#[cfg(test)]
mod tests_inodes;
#[cfg(test)]
mod tests_sse;
mod upgrade;
mod view;
mod xattr;

pub use error::FsError;
pub use inode::ROOT_INO;
pub(crate) use open_object::BackingFile;
pub(crate) use policy::KeyUse;
pub use policy::{
    AES256, DefaultSse, KMS, KeySource, UnknownAlgorithm, algorithm_name, is_bucket_name,
    parse_sse_algorithm, validate_bucket_name,
};
pub use reencrypt::Reencryption;
pub(crate) use rewrap::rewrap_object;
pub use rewrap::{REWRAP_ATTR, Rewrap};
pub use view::{BUCKET_ATTR, BucketRootError, RootView};
pub use xattr::{FILE_ID_ATTR, KEY_VERSION_ATTR, SSE_ATTR, SSE_KEY_ID_ATTR};

use crate::store::{FsUsage, Stat, Store, Timestamp};
use inode::{Inode, InodeTable, Origin};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether the kernel may keep a file's cached pages from one open to the next. It may: the
/// mount holds the store's lock (a single-bucket mount: its bucket's lock, and the store's
/// shared, which keeps whole-store mounts out), so every change to an object's plaintext
/// passes through this mount, and so through the kernel's cache (re-encryption and rewrap
/// change the ciphertext, never the plaintext). Every open is still checked (permissions, KMS
/// grants) here.
pub const KEEP_PAGE_CACHE: bool = true;

impl BucketFs {
    /// Whether the kernel may keep a file's cached pages from one open to the next: see
    /// [`KEEP_PAGE_CACHE`]; never when other hosts share the store.
    pub fn keeps_page_cache(&self) -> bool {
        KEEP_PAGE_CACHE && !self.options.shared
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain maps and
/// counters updated in one step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who asks: the uid, gid and pid of the calling process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    /// This process as the caller (the CLI acting on the store directly).
    pub fn this_process() -> Caller {
        let (uid, gid, pid) = crate::sys::process_ids();
        Caller { uid, gid, pid }
    }

    /// The caller as the keystore's CMK checks want it: with its supplementary groups, read
    /// from `/proc/PID/status` (best effort: none when the process is gone or its status
    /// cannot be read, so only uid and primary-gid grants then apply).
    pub(crate) fn with_groups(self) -> crate::keystore::Caller {
        crate::keystore::Caller {
            uid: self.uid,
            gid: self.gid,
            groups: supplementary_groups(self.pid),
            pid: self.pid,
        }
    }
}

impl Caller {
    /// Whether the caller keeps set-user-ID and set-group-ID bits when it writes or truncates
    /// a file: `CAP_FSETID` in its effective set (from `/proc/PID/status`; when that cannot be
    /// read, only root keeps them).
    pub(crate) fn keeps_setid(self) -> bool {
        const CAP_FSETID: u32 = 4;
        let effective = (self.pid != 0)
            .then(|| std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok())
            .flatten()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("CapEff:"))
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            });
        match effective {
            Some(caps) => caps & (1 << CAP_FSETID) != 0,
            None => self.uid == 0,
        }
    }
}

/// The `Groups:` line of `/proc/PID/status`; empty when it cannot be read.
fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|gid| gid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount-wide choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsOptions {
    pub read_only: bool,
    pub default_sse: DefaultSse,
    /// Other hosts change the store's objects too (a remote store): the kernel drops a
    /// file's cached pages at each open, so an open sees the version it opened.
    pub shared: bool,
}

/// What kind of node an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Directory,
    RegularFile,
    Symlink,
    NamedPipe,
    Socket,
    CharDevice,
    BlockDevice,
}

impl NodeKind {
    fn from_mode(file_type: u32) -> Option<NodeKind> {
        match file_type {
            libc::S_IFDIR => Some(NodeKind::Directory),
            libc::S_IFREG => Some(NodeKind::RegularFile),
            libc::S_IFLNK => Some(NodeKind::Symlink),
            libc::S_IFIFO => Some(NodeKind::NamedPipe),
            libc::S_IFSOCK => Some(NodeKind::Socket),
            libc::S_IFCHR => Some(NodeKind::CharDevice),
            libc::S_IFBLK => Some(NodeKind::BlockDevice),
            _ => None,
        }
    }
}

/// The attributes of a node as the mount shows them (regular files: the plaintext size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    /// Tells this node from earlier nodes that had the same inode number.
    pub generation: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: NodeKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// The changes of a `setattr`; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeUpdate>,
    pub mtime: Option<TimeUpdate>,
    /// The open handle the change comes through, if any.
    pub handle: Option<u64>,
}

/// A new access or modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUpdate {
    Now,
    At(SystemTime),
}

impl TimeUpdate {
    fn to_store(self) -> crate::store::TimeUpdate {
        match self {
            TimeUpdate::Now => crate::store::TimeUpdate::Now,
            TimeUpdate::At(t) => crate::store::TimeUpdate::At(timestamp(t)),
        }
    }
}

/// What a rename does to a node already at the new name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replaces it.
    Replace,
    /// Fails with `EEXIST` (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swaps the two (`RENAME_EXCHANGE`).
    Exchange,
}

impl RenameMode {
    fn to_store(self) -> crate::store::RenameMode {
        match self {
            RenameMode::Replace => crate::store::RenameMode::Replace,
            RenameMode::NoReplace => crate::store::RenameMode::NoReplace,
            RenameMode::Exchange => crate::store::RenameMode::Exchange,
        }
    }
}

/// One directory entry; `offset` is the offset of the entry after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub offset: u64,
    pub kind: NodeKind,
    pub name: OsString,
}

/// An open file or directory.
enum Handle {
    File(object::FileHandle),
    Dir(Vec<DirEntry>),
}

/// The filesystem of a mounted store: buckets at the root, objects below (or one bucket as
/// the root: see `view.rs`).
pub struct BucketFs {
    store: Store,
    keys: Arc<dyn KeySource>,
    /// The store's id and object-authentication key, which every object must be tagged under.
    store_key: crate::crypto::StoreKey,
    options: FsOptions,
    inodes: InodeTable,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    view: RootView,
}

fn system_time(ts: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(ts.nanos));
    let time = if ts.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(ts.secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(ts.secs.unsigned_abs()))
    };
    time.and_then(|t| t.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// A time as the store keeps it (seconds and nanoseconds, before the epoch too).
fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(before) => {
            let d = before.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => Timestamp { secs, nanos: 0 },
                n => Timestamp {
                    secs: secs - 1,
                    nanos: 1_000_000_000 - n,
                },
            }
        }
    }
}

fn check_name(name: &OsStr) -> Result<(), FsError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(FsError::InvalidName(name.to_os_string()));
    }
    Ok(())
}

impl BucketFs {
    /// A filesystem over an open (locked) store and its key source.
    pub fn new(
        store: Store,
        keys: Arc<dyn KeySource>,
        options: FsOptions,
    ) -> Result<BucketFs, FsError> {
        let backing = Arc::clone(store.backing());
        let root_fd = backing.open_path_at(store.root_fd(), OsStr::new("."))?;
        let root_stat = backing.stat(store.root_fd())?;
        Ok(BucketFs {
            inodes: InodeTable::new(backing, root_fd, &root_stat, inode::path_fd_budget()),
            store,
            store_key: keys.store_key()?,
            keys,
            options,
            handles: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            view: RootView::Store,
        })
    }

    pub fn options(&self) -> FsOptions {
        self.options
    }
    pub fn store_root(&self) -> &Path {
        self.store.root()
    }

    fn backing(&self) -> &dyn crate::store::Backing {
        self.store.backing().as_ref()
    }

    fn writable(&self) -> Result<(), FsError> {
        if self.options.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// The path of a node relative to the store, for log lines.
    fn display_path(&self, inode: &Inode) -> String {
        if !inode.is_dir() {
            // The descriptor of a file created unnamed and then linked does not carry its
            // name (`Backing::create_unnamed`); its parent's does.
            if let Some((parent, name)) = inode.recent_names().into_iter().next() {
                return format!("{}/{}", self.display_path(&parent), name.to_string_lossy());
            }
        }
        let path = inode.fd().and_then(|fd| self.backing().path_of(fd.as_fd()));
        match path {
            Ok(path) => match path.strip_prefix(self.store.root()) {
                Ok(rel) => rel.display().to_string(),
                Err(_) => path.display().to_string(),
            },
            Err(_) => format!("inode {}", inode.ino),
        }
    }

    /// `fstat` of the node behind an inode.
    fn stat_node(&self, inode: &Inode) -> std::io::Result<Stat> {
        self.backing().stat(inode.fd()?.as_fd())
    }

    /// The bucket a node (below the root) belongs to.
    fn bucket_of(&self, inode: &Inode) -> Result<String, FsError> {
        if let Some(bucket) = self.mounted_bucket() {
            return Ok(bucket.to_string());
        }
        if !inode.is_dir() {
            // As in `display_path`: a file's name is its parent's business. All of a file's
            // names are in one bucket.
            if let Some((parent, _)) = inode.recent_names().into_iter().next() {
                return self.bucket_of(&parent);
            }
        }
        let path = self.backing().path_of(inode.fd()?.as_fd())?;
        let rel = path
            .strip_prefix(self.store.root())
            .map_err(|_| FsError::NotFound)?;
        let first = rel.components().next().ok_or(FsError::NotFound)?;
        let name = first.as_os_str();
        Ok(validate_bucket_name(name)
            .map_err(|_| FsError::NotFound)?
            .to_string())
    }

    fn attr_of(&self, inode: &Inode, stat: &Stat) -> Result<Attr, FsError> {
        let kind = NodeKind::from_mode(stat.file_type()).ok_or(FsError::NotFound)?;
        let size = if stat.is_file() {
            self.plaintext_size(inode, stat)
        } else {
            stat.size
        };
        Ok(Attr {
            ino: inode.ino,
            generation: inode.generation,
            size,
            blocks: stat.blocks,
            atime: system_time(stat.atime),
            mtime: system_time(stat.mtime),
            ctime: system_time(stat.ctime),
            kind,
            perm: (stat.mode & 0o7777) as u16,
            nlink: u32::try_from(stat.nlink).unwrap_or(u32::MAX),
            uid: stat.uid,
            gid: stat.gid,
            rdev: stat.rdev as u32,
            blksize: stat.blksize,
        })
    }

    /// Looks `name` up in `parent` and counts one kernel lookup of the result (`origin`:
    /// whether the operation just made that node).
    fn enter(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        origin: Origin,
    ) -> Result<(Arc<Inode>, Attr), FsError> {
        let stat = self.backing().stat_at(parent.fd()?.as_fd(), name)?;
        let inode = self.inodes.remember(parent, name, &stat, origin)?;
        match self.attr_of(&inode, &stat) {
            Ok(attr) => Ok((inode, attr)),
            Err(e) => {
                self.inodes.forget(inode.ino, 1);
                Err(e)
            }
        }
    }

    /// The owner of a new node: the caller, with the group inherited from a set-group-ID
    /// parent directory (and the bit inherited by new directories).
    fn new_owner(
        &self,
        caller: Caller,
        parent: &Inode,
        mode: u32,
    ) -> Result<(u32, u32, u32), FsError> {
        let parent_stat = self.backing().stat(parent.fd()?.as_fd())?;
        if parent_stat.mode & libc::S_ISGID != 0 {
            let mode = if mode & libc::S_IFMT == libc::S_IFDIR {
                mode | libc::S_ISGID
            } else {
                mode
            };
            Ok((caller.uid, parent_stat.gid, mode))
        } else {
            Ok((caller.uid, caller.gid, mode))
        }
    }

    /// Gives a freshly made node to its owner, removing it if that fails.
    fn chown_new(
        &self,
        parent: &Inode,
        name: &OsStr,
        uid: u32,
        gid: u32,
        is_dir: bool,
    ) -> Result<(), FsError> {
        let owned = self
            .backing()
            .open_path_at(parent.fd()?.as_fd(), name)
            .and_then(|fd| {
                self.backing()
                    .chown(std::os::fd::AsFd::as_fd(&fd), Some(uid), Some(gid))
            });
        if let Err(e) = owned {
            if let Ok(dir) = parent.fd() {
                let _ = self.backing().unlink_at(dir.as_fd(), name, is_dir);
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        self.visible(parent, name)?;
        let parent = self.inodes.get(parent)?;
        Ok(self.enter(&parent, name, Origin::Found)?.1)
    }

    pub fn forget(&self, ino: u64, lookups: u64) {
        self.inodes.forget(ino, lookups);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let inode = self.inodes.get(ino)?;
        let stat = self.backing().stat(inode.fd()?.as_fd())?;
        self.attr_of(&inode, &stat)
    }

    pub fn setattr(&self, caller: Caller, ino: u64, changes: SetAttr) -> Result<Attr, FsError> {
        self.writable()?;
        let inode = self.inodes.get(ino)?;
        // A closed object whose size is cached keeps it when only its metadata changes.
        let before = (changes.size.is_none() && inode.is_file())
            .then(|| self.stat_node(&inode).ok())
            .flatten();
        if let Some(mode) = changes.mode {
            if inode.is_symlink() {
                return Err(FsError::Io(std::io::Error::from_raw_os_error(
                    libc::EOPNOTSUPP,
                )));
            }
            self.backing().chmod(inode.fd()?.as_fd(), mode)?;
        }
        if changes.uid.is_some() || changes.gid.is_some() {
            self.backing()
                .chown(inode.fd()?.as_fd(), changes.uid, changes.gid)?;
        }
        if let Some(size) = changes.size {
            self.truncate(caller, &inode, size, changes.handle)?;
            if changes.mode.is_none() {
                self.clear_setid(&inode, Some(caller))?;
            }
        }
        if changes.atime.is_some() || changes.mtime.is_some() {
            let (atime, mtime) = (changes.atime, changes.mtime);
            self.set_times(
                &inode,
                atime.map(TimeUpdate::to_store),
                mtime.map(TimeUpdate::to_store),
            )?;
        }
        let stat = self.stat_node(&inode)?;
        if let Some(before) = before {
            inode.carry_size_cache(&before, &stat);
        }
        self.attr_of(&inode, &stat)
    }

    /// Clears a file's set-user-ID bit, and its set-group-ID bit when it is group-executable,
    /// as a write or truncate by a caller without `CAP_FSETID` must: the mount asks the kernel
    /// to leave this to it (`FUSE_HANDLE_KILLPRIV_V2`), which saves a request per write.
    /// `by`: the caller, whose capabilities are looked up only when there are bits to clear
    /// (`None`: the kernel already decided they must go). (A change of owner needs nothing
    /// here: the store's own `chown` clears them.)
    pub(crate) fn clear_setid(&self, inode: &Inode, by: Option<Caller>) -> Result<(), FsError> {
        if !inode.is_file() {
            return Ok(());
        }
        let fd = inode.fd()?;
        let mode = self.backing().stat(fd.as_fd())?.mode & 0o7777;
        let mut cleared = mode & !libc::S_ISUID;
        if mode & libc::S_IXGRP != 0 {
            cleared &= !libc::S_ISGID;
        }
        if cleared != mode && !by.is_some_and(Caller::keeps_setid) {
            self.backing().chmod(fd.as_fd(), cleared)?;
        }
        Ok(())
    }

    fn set_times(
        &self,
        inode: &Inode,
        atime: Option<crate::store::TimeUpdate>,
        mtime: Option<crate::store::TimeUpdate>,
    ) -> Result<(), FsError> {
        let _times = lock(&inode.times);
        if !inode.is_symlink() {
            return Ok(self.backing().utimens(inode.fd()?.as_fd(), atime, mtime)?);
        }
        let (parent, name) = self.current_name(inode)?;
        Ok(self
            .backing()
            .utimens_at(parent.fd()?.as_fd(), &name, atime, mtime)?)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let inode = self.inodes.get(ino)?;
        Ok(self.backing().readlink(inode.fd()?.as_fd())?)
    }

    /// Creates a FIFO, socket or (through `create`) regular file; device nodes are refused.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<Attr, FsError> {
        self.writable()?;
        check_name(name)?;
        match mode & libc::S_IFMT {
            libc::S_IFREG => {
                let (attr, fh) =
                    self.create(caller, parent, name, mode, libc::O_EXCL | libc::O_WRONLY)?;
                self.release(fh)?;
                return Ok(attr);
            }
            libc::S_IFIFO | libc::S_IFSOCK => {}
            libc::S_IFCHR | libc::S_IFBLK => return Err(FsError::DeviceNode),
            _ => return Err(FsError::InvalidName(name.to_os_string())),
        }
        if self.at_store_root(parent) {
            return Err(FsError::NotABucket);
        }
        let parent = self.inodes.get(parent)?;
        let (uid, gid, mode) = self.new_owner(caller, &parent, mode)?;
        self.backing()
            .mknod_at(parent.fd()?.as_fd(), name, mode, u64::from(rdev))?;
        self.chown_new(&parent, name, uid, gid, false)?;
        Ok(self.enter(&parent, name, Origin::Made)?.1)
    }

    /// Creates a directory; at the root, a bucket with the mount's default encryption.
    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<Attr, FsError> {
        self.writable()?;
        check_name(name)?;
        let bucket = if self.at_store_root(parent) {
            Some(validate_bucket_name(name)?)
        } else {
            None
        };
        let parent = self.inodes.get(parent)?;
        let (uid, gid, mode) = self.new_owner(caller, &parent, mode | libc::S_IFDIR)?;
        self.backing()
            .mkdir_at(parent.fd()?.as_fd(), name, mode & 0o7777)?;
        self.chown_new(&parent, name, uid, gid, true)?;
        if let Some(bucket) = bucket {
            let recorded =
                view::record_default_rule(self.keys.as_ref(), self.options.default_sse, bucket);
            if let Err(e) = recorded {
                if let Ok(dir) = parent.fd() {
                    let _ = self.backing().unlink_at(dir.as_fd(), name, true);
                }
                return Err(e);
            }
            log::info!("created bucket {bucket}");
        }
        Ok(self.enter(&parent, name, Origin::Made)?.1)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        self.writable()?;
        self.visible(parent, name)?;
        let parent = self.inodes.get(parent)?;
        Ok(self
            .backing()
            .unlink_at(parent.fd()?.as_fd(), name, false)?)
    }

    /// Removes an empty directory; at the root, a bucket and its encryption rule.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        self.writable()?;
        self.visible(parent, name)?;
        let is_bucket = self.at_store_root(parent);
        let parent = self.inodes.get(parent)?;
        self.backing().unlink_at(parent.fd()?.as_fd(), name, true)?;
        if is_bucket {
            if let Some(bucket) = name.to_str() {
                if let Err(e) = self.keys.delete_bucket_rule(bucket) {
                    log::warn!("bucket {bucket} removed but its encryption rule stays: {e}");
                }
                log::info!("removed bucket {bucket}");
            }
        }
        Ok(())
    }

    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Result<Attr, FsError> {
        self.writable()?;
        check_name(name)?;
        if self.at_store_root(parent) {
            return Err(FsError::NotABucket);
        }
        let parent = self.inodes.get(parent)?;
        self.backing()
            .symlink_at(target.as_os_str(), parent.fd()?.as_fd(), name)?;
        self.chown_new(&parent, name, caller.uid, caller.gid, false)?;
        Ok(self.enter(&parent, name, Origin::Made)?.1)
    }

    /// Renames within and across buckets. Objects keep their encryption (the header moves
    /// with the file); buckets themselves cannot be renamed (`EXDEV`, so `mv` copies).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> Result<(), FsError> {
        self.writable()?;
        check_name(new_name)?;
        self.visible(parent, name)?;
        if self.at_store_root(parent) || self.at_store_root(new_parent) {
            return Err(FsError::BucketRename);
        }
        let old_dir = self.inodes.get(parent)?;
        let new_dir = self.inodes.get(new_parent)?;
        self.backing().rename_at(
            old_dir.fd()?.as_fd(),
            name,
            new_dir.fd()?.as_fd(),
            new_name,
            mode.to_store(),
        )?;
        self.note_link_name(&new_dir, new_name);
        if mode == RenameMode::Exchange {
            self.note_link_name(&old_dir, name);
        }
        Ok(())
    }

    /// Remembers the new name of a known inode after a rename.
    fn note_link_name(&self, dir: &Arc<Inode>, name: &OsStr) {
        let stat = dir
            .fd()
            .and_then(|fd| self.backing().stat_at(fd.as_fd(), name));
        if let Ok(stat) = stat {
            if let Some(inode) = self.inodes.find(&stat) {
                inode.note_name(dir, name);
            }
        }
    }

    /// A name that leads to `inode` now: the most recent remembered one that still does
    /// (names go stale through renames and unlinks that the inode's own record never sees).
    pub(super) fn current_name(&self, inode: &Inode) -> Result<(Arc<Inode>, OsString), FsError> {
        for (dir, name) in inode.recent_names() {
            let leads_here = dir
                .fd()
                .and_then(|fd| self.backing().stat_at(fd.as_fd(), &name))
                .is_ok_and(|st| self.inodes.find(&st).is_some_and(|i| i.ino == inode.ino));
            if leads_here {
                return Ok((dir, name));
            }
        }
        Err(FsError::NotFound)
    }

    /// A new hard link; both names share one inode (and one open object).
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Result<Attr, FsError> {
        self.writable()?;
        check_name(new_name)?;
        if self.at_store_root(new_parent) {
            return Err(FsError::NotABucket);
        }
        let inode = self.inodes.get(ino)?;
        let dir = self.inodes.get(new_parent)?;
        self.backing()
            .link_at(inode.fd()?.as_fd(), dir.fd()?.as_fd(), new_name)?;
        Ok(self.enter(&dir, new_name, Origin::Found)?.1)
    }

    fn new_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(fh, Arc::new(handle));
        fh
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>, FsError> {
        self.handles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle(fh))
    }

    fn take_handle(&self, fh: u64) -> Result<Arc<Handle>, FsError> {
        self.handles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh)
            .ok_or(FsError::BadHandle(fh))
    }

    /// Opens a directory: its entries are read once, so offsets stay stable.
    pub fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let inode = self.inodes.get(ino)?;
        let listed = self.backing().read_dir(inode.fd()?.as_fd())?;
        let mut entries = Vec::with_capacity(listed.len() + 2);
        let parent_ino = if ino == ROOT_INO {
            ROOT_INO
        } else {
            self.backing()
                .stat_at(inode.fd()?.as_fd(), OsStr::new(".."))
                .map(|st| self.inodes.ino_of(st.ino))?
        };
        entries.push((ino, NodeKind::Directory, OsString::from(".")));
        entries.push((parent_ino, NodeKind::Directory, OsString::from("..")));
        for entry in listed {
            if self.visible(ino, &entry.name).is_err() {
                continue;
            }
            let kind = match NodeKind::from_mode(entry.file_type) {
                Some(kind) => kind,
                None => match self.backing().stat_at(inode.fd()?.as_fd(), &entry.name) {
                    Ok(st) => NodeKind::from_mode(st.file_type()).unwrap_or(NodeKind::RegularFile),
                    Err(_) => continue,
                },
            };
            entries.push((self.inodes.ino_of(entry.ino), kind, entry.name));
        }
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                offset: i as u64 + 1,
                kind,
                name,
            })
            .collect();
        Ok(self.new_handle(Handle::Dir(entries)))
    }

    /// The entries of an open directory from `offset` on (0 is the start).
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<DirEntry>, FsError> {
        match &*self.handle(fh)? {
            Handle::Dir(entries) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(entries.len());
                Ok(entries[start..].to_vec())
            }
            Handle::File(_) => Err(FsError::BadHandle(fh)),
        }
    }

    /// The entries of an open directory from `offset` on, each with its attributes, handed
    /// to `add` until it says the reply is full (`true`; that entry was not taken). Every
    /// entry taken but `.` and `..` counts as a kernel lookup (the kernel links the others
    /// as if looked up); an entry gone meanwhile is left out.
    pub fn readdirplus(
        &self,
        dir: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Attr) -> bool,
    ) -> Result<(), FsError> {
        for entry in self.readdir(fh, offset)? {
            let dot = entry.name == "." || entry.name == "..";
            let attr = if dot {
                self.getattr(entry.ino).or_else(|_| self.getattr(dir))
            } else {
                self.lookup(dir, &entry.name)
            };
            let Ok(attr) = attr else {
                continue;
            };
            if add(&entry, &attr) {
                if !dot {
                    self.forget(attr.ino, 1);
                }
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) -> Result<(), FsError> {
        match &*self.take_handle(fh)? {
            Handle::Dir(_) => Ok(()),
            Handle::File(_) => Err(FsError::BadHandle(fh)),
        }
    }

    pub fn fsyncdir(&self, ino: u64) -> Result<(), FsError> {
        let inode = self.inodes.get(ino)?;
        let dir = self
            .backing()
            .reopen(inode.fd()?.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(dir.sync_all()?)
    }

    /// Usage of the backing filesystem.
    pub fn statfs(&self) -> Result<FsUsage, FsError> {
        Ok(self.backing().statvfs(self.store.root_fd())?)
    }

    /// `access(2)` for mounts without `default_permissions`: the classic owner/group/other
    /// check against the caller's primary group; root passes except for execute.
    pub fn access(&self, caller: Caller, ino: u64, mask: i32) -> Result<(), FsError> {
        let inode = self.inodes.get(ino)?;
        let stat = self.backing().stat(inode.fd()?.as_fd())?;
        if mask & libc::W_OK != 0 && self.options.read_only {
            return Err(FsError::ReadOnly);
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        let mode = stat.mode;
        if caller.uid == 0 {
            let any_exec = mode & 0o111 != 0 || stat.is_dir();
            return if mask & libc::X_OK == 0 || any_exec {
                Ok(())
            } else {
                Err(FsError::AccessDenied)
            };
        }
        let bits = if caller.uid == stat.uid {
            (mode >> 6) & 7
        } else if caller.gid == stat.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if (mask as u32) & 7 & !bits != 0 {
            return Err(FsError::AccessDenied);
        }
        Ok(())
    }

    /// The lookup count the table holds for an inode (diagnostics and tests).
    pub fn lookup_count(&self, ino: u64) -> Option<u64> {
        self.inodes.lookups(ino)
    }

    /// Lets at most `limit` inodes keep an `O_PATH` descriptor (tests).
    #[cfg(test)]
    pub(crate) fn limit_path_fds(&self, limit: usize) {
        self.inodes.path_fds().set_limit(limit);
    }

    /// How many inodes keep an `O_PATH` descriptor now (tests).
    #[cfg(test)]
    pub(crate) fn path_fds_held(&self) -> usize {
        self.inodes.path_fds().held()
    }
}

//! The FUSE adapter: the only file that imports `fuser`. It translates kernel requests into
//! calls on `fs::` and `fs::` errors into errnos, and decides nothing itself; [`serve`] runs
//! a mount until it is unmounted (by `umount`, or SIGTERM/SIGINT).

use crate::fs::{Attr, BucketFs, Caller, FsError, KEEP_PAGE_CACHE, NodeKind, SetAttr};
use crate::store::{RenameMode, TimeUpdate, Timestamp};
use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, SessionACL,
    TimeOrNow, WriteFlags,
};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache entries and attributes.
const TTL: Duration = Duration::from_secs(1);
/// The largest write the kernel is asked to send at once.
const MAX_WRITE: u32 = 1 << 20;
/// Request-serving threads (each with its own cloned `/dev/fuse` descriptor). Eight rather
/// than four: the kernel's asynchronous requests (`RELEASE`, `FORGET`, readahead) then less
/// often keep a synchronous one waiting (extracting a tree: about 12% faster; peak RSS
/// +1 MiB).
const THREADS: usize = 8;

/// How to mount: the kernel-facing options of `ssefs mount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    /// Shown as the source in `/proc/mounts` (the store path by default).
    pub fsname: String,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    pub auto_unmount: bool,
    pub noexec: bool,
    pub noatime: bool,
}

/// The [`fuser::Filesystem`] over a [`BucketFs`].
pub struct FuseAdapter {
    fs: Arc<BucketFs>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<BucketFs>) -> Self {
        FuseAdapter { fs }
    }
}

fn errno(e: &FsError) -> Errno {
    log::debug!("request failed: {e}");
    Errno::from_i32(e.errno())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Directory => FileType::Directory,
        NodeKind::RegularFile => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::NamedPipe => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

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

fn time_update(t: Option<TimeOrNow>) -> Option<TimeUpdate> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeUpdate::Now,
        TimeOrNow::SpecificTime(t) => TimeUpdate::At(timestamp(t)),
    })
}

fn reply_entry(reply: ReplyEntry, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(attr.generation)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Answers an xattr request: the size when asked for 0 bytes, the data if it fits, else ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, FsError>) {
    match result {
        Ok(value) => match u32::try_from(value.len()) {
            Ok(len) if size == 0 => reply.size(len),
            Ok(len) if len <= size => reply.data(&value),
            Ok(_) | Err(_) => reply.error(Errno::ERANGE),
        },
        Err(e) => reply.error(errno(&e)),
    }
}

/// The open flags of a file handle: whether the kernel keeps the file's cached pages.
fn file_open_flags() -> FopenFlags {
    if KEEP_PAGE_CACHE {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(nearest);
        }
        // Optional speed-ups: ignore those the kernel lacks.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // The kernel stops asking for `security.capability` before every write; ssefs
        // clears set-user-ID and set-group-ID bits itself (on writes, truncates, `O_TRUNC`).
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Listings carry each entry's attributes (the kernel decides when that pays), so
        // `ls -l` and `find` need no lookup per entry.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.fs.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_update(atime),
            mtime: time_update(mtime),
            handle: fh.map(|fh| fh.0),
        };
        match self.fs.setattr(caller(req), ino.0, changes) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.fs.mknod(caller(req), parent.0, name, mode, rdev),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.fs.mkdir(caller(req), parent.0, name, mode));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.fs.symlink(caller(req), parent.0, link_name, target),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        } else if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else {
            RenameMode::Replace
        };
        reply_empty(
            reply,
            self.fs.rename(parent.0, name, newparent.0, newname, mode),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(caller(req), ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), file_open_flags()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = self.fs.write(fh.0, offset, data).and_then(|n| {
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                self.fs.clear_setid_after_write(fh.0)?;
            }
            Ok(n)
        });
        match written {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Writes are durable in the store as they are answered, so a close has nothing to flush:
    /// `ENOSYS` tells the kernel not to send `FLUSH` again (one round trip less per close).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.release(fh.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fsync(fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// `readdir` with each entry looked up (counted as a lookup, except `.` and `..`, which
    /// the kernel does not link); an entry gone meanwhile is left out, and one that does not
    /// fit in the reply is forgotten again.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.fs.readdir(fh.0, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        for e in entries {
            let dot = e.name == "." || e.name == "..";
            let attr = if dot {
                self.fs.getattr(e.ino).or_else(|_| self.fs.getattr(ino.0))
            } else {
                self.fs.lookup(ino.0, &e.name)
            };
            let Ok(attr) = attr else {
                continue;
            };
            let full = reply.add(
                INodeNo(attr.ino),
                e.offset,
                &e.name,
                &TTL,
                &file_attr(&attr),
                Generation(attr.generation),
            );
            if full {
                if !dot {
                    self.fs.forget(attr.ino, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.releasedir(fh.0));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(u) => reply.statfs(
                u.blocks,
                u.blocks_free,
                u.blocks_available,
                u.files,
                u.files_free,
                u.block_size,
                u.name_max,
                u.fragment_size,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.fs.setxattr(caller(req), ino.0, name, value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.fs.getxattr(ino.0, name));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.fs.listxattr(ino.0));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.removexattr(caller(req), ino.0, name));
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.access(caller(req), ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(caller(req), parent.0, name, mode, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(attr.generation),
                FileHandle(fh),
                file_open_flags(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn fuser_config(config: &MountConfig) -> Config {
    let mut options = vec![
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("ssefs".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    let flags = [
        (config.default_permissions, MountOption::DefaultPermissions),
        (config.read_only, MountOption::RO),
        (config.auto_unmount, MountOption::AutoUnmount),
        (config.noexec, MountOption::NoExec),
        (config.noatime, MountOption::NoAtime),
    ];
    options.extend(flags.into_iter().filter(|(on, _)| *on).map(|(_, o)| o));
    let mut fuser_config = Config::default();
    fuser_config.mount_options = options;
    fuser_config.acl = if config.allow_other {
        SessionACL::All
    } else if config.allow_root || config.auto_unmount {
        // fusermount's auto_unmount needs an ACL; the daemon runs as root, so
        // "root and owner" admits exactly who the default would.
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    fuser_config.n_threads = Some(THREADS);
    fuser_config.clone_fd = true;
    fuser_config
}

/// Raises the soft open-file limit to the hard one: every open object holds a backing
/// descriptor. A failure is logged and the mount goes on under the old limit.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer, then a valid in-pointer, for each call.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            false
        } else if limit.rlim_cur >= limit.rlim_max {
            true
        } else {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        log::debug!("open-file limit: {}", limit.rlim_cur);
    } else {
        log::warn!(
            "cannot raise the open-file limit: {}",
            io::Error::last_os_error()
        );
    }
}

/// Lets the kernel read ahead as much as one request carries: FUSE mounts start with 128 KiB,
/// which cuts sequential reads into small requests. Needs root; otherwise nothing changes.
fn raise_readahead(mountpoint: &Path) {
    let Some(device) = mount_device(mountpoint) else {
        log::debug!("no mountinfo entry for {}", mountpoint.display());
        return;
    };
    let setting = format!("/sys/class/bdi/{device}/read_ahead_kb");
    if let Err(e) = std::fs::write(&setting, format!("{}", MAX_WRITE / 1024)) {
        log::debug!("cannot raise the readahead ({setting}): {e}");
    }
}

/// The `major:minor` device of the mount at `mountpoint`, from `/proc/self/mountinfo` (which
/// escapes spaces, tabs, newlines and backslashes in octal).
fn mount_device(mountpoint: &Path) -> Option<String> {
    let wanted = mountpoint.to_str()?;
    let escaped = wanted
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The last entry is the topmost mount there.
    table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let point = fields.nth(1)?;
        (point == escaped).then(|| device.to_string())
    })
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts), so one thread can
/// wait for them with `sigwait`.
fn block_termination_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Mounts with mount(2) as type `fuse.ssefs` (fuser's own mount says plain `fuse`); `None`
/// when not permitted (not root), so the caller falls back to fusermount3.
fn mount_direct(config: &MountConfig, acl: SessionACL) -> io::Result<Option<OwnedFd>> {
    use std::os::unix::ffi::OsStrExt;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        // SAFETY: getuid/getgid cannot fail.
        unsafe { libc::getuid() },
        unsafe { libc::getgid() },
    );
    if config.default_permissions {
        data.push_str(",default_permissions");
    }
    if acl != SessionACL::Owner {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    for (on, flag) in [
        (config.read_only, libc::MS_RDONLY),
        (config.noexec, libc::MS_NOEXEC),
        (config.noatime, libc::MS_NOATIME),
    ] {
        if on {
            flags |= flag;
        }
    }
    let invalid = |_| io::Error::from_raw_os_error(libc::EINVAL);
    let source = CString::new(config.fsname.as_bytes()).map_err(invalid)?;
    let target = CString::new(config.mountpoint.as_os_str().as_bytes()).map_err(invalid)?;
    let data = CString::new(data).map_err(invalid)?;
    // SAFETY: all strings are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"fuse.ssefs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(OwnedFd::from(dev)))
}

/// Ends a mount: a plain unmount, or a lazy one if it is busy.
fn unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `path` is NUL-terminated.
    if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
        let e = io::Error::last_os_error();
        log::warn!(
            "unmount failed ({e}); detaching {} lazily",
            mountpoint.display()
        );
        lazy_unmount(mountpoint);
    }
}

/// Mounts `fs` and serves requests until the filesystem is unmounted: by `umount`,
/// `fusermount3 -u`, or SIGTERM/SIGINT (which unmount it, lazily if it is busy).
/// `on_mounted` runs once the kernel has accepted the mount.
pub fn serve(fs: BucketFs, config: &MountConfig, on_mounted: impl FnOnce()) -> io::Result<()> {
    let adapter = FuseAdapter::new(Arc::new(fs));
    let signals = block_termination_signals()?;
    let options = fuser_config(config);
    let direct = if config.auto_unmount {
        None // only fusermount3 can watch the daemon and unmount when it dies
    } else {
        mount_direct(config, options.acl)?
    };
    let mountpoint = config.mountpoint.clone();
    let (session, mut unmounter) = match direct {
        Some(fd) => {
            let acl = options.acl;
            let session = Session::from_fd(adapter, fd, acl, options).inspect_err(|_| {
                lazy_unmount(&config.mountpoint);
            })?;
            (session, None)
        }
        None => {
            let mut session = Session::new(adapter, &config.mountpoint, &options)?;
            let unmounter = session.unmount_callable();
            (session, Some(unmounter))
        }
    };
    raise_readahead(&config.mountpoint);
    on_mounted();
    std::thread::Builder::new()
        .name("ssefs-signals".to_string())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `signals` is an initialised set; `signal` is a valid out-pointer.
            if unsafe { libc::sigwait(&signals, &mut signal) } != 0 {
                return;
            }
            log::info!(
                "signal {signal} received: unmounting {}",
                mountpoint.display()
            );
            match unmounter.as_mut().map(|u| u.unmount()) {
                None => unmount(&mountpoint),
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    log::warn!(
                        "unmount failed ({e}); detaching {} lazily",
                        mountpoint.display()
                    );
                    lazy_unmount(&mountpoint);
                }
            }
        })?;
    session.run()
}

fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `path` is NUL-terminated.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        log::error!(
            "cannot detach {}: {}",
            mountpoint.display(),
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_before_and_after_the_epoch() {
        for (secs, nanos) in [
            (0i64, 0u32),
            (1_700_000_000, 5),
            (-1, 999_999_999),
            (-10, 1),
        ] {
            let ts = Timestamp { secs, nanos };
            let time = if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nanos)
            } else {
                UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos)
            };
            assert_eq!(timestamp(time), ts);
        }
    }

    #[test]
    fn mount_options_carry_the_store_name_and_safety_flags() {
        let config = MountConfig {
            mountpoint: PathBuf::from("/mnt"),
            fsname: "/srv/store".into(),
            allow_other: false,
            allow_root: false,
            default_permissions: true,
            read_only: true,
            auto_unmount: false,
            noexec: false,
            noatime: false,
        };
        let c = fuser_config(&config);
        assert!(
            c.mount_options
                .contains(&MountOption::FSName("/srv/store".into()))
        );
        assert!(
            c.mount_options
                .contains(&MountOption::Subtype("ssefs".into()))
        );
        assert!(c.mount_options.contains(&MountOption::RO));
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(c.mount_options.contains(&MountOption::NoDev));
        assert_eq!(c.acl, SessionACL::Owner);
        assert_eq!(c.n_threads, Some(THREADS));
    }
}

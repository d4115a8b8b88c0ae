//! The request adapter: the [`fuser::Filesystem`] over a [`BucketFs`]. Translates kernel
//! requests into calls on `fs::` and `fs::` answers and errors into replies and errnos, and
//! decides nothing itself. Knows nothing of mounting (see `session.rs`).

use crate::fs::{Attr, BucketFs, Caller, FsError, NodeKind, RenameMode, SetAttr, TimeUpdate};
use crate::keystore::KeystoreError;
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// How long the kernel may cache entries and attributes.
const TTL: Duration = Duration::from_secs(1);
/// The largest write the kernel is asked to send at once (also the readahead window).
pub(super) const MAX_WRITE: u32 = 1 << 20;

/// The [`fuser::Filesystem`] over a [`BucketFs`].
pub struct FuseAdapter {
    fs: Arc<BucketFs>,
    io_uring: bool,
}

impl FuseAdapter {
    pub fn new(fs: Arc<BucketFs>) -> Self {
        FuseAdapter {
            fs,
            io_uring: false,
        }
    }

    /// Asks for FUSE over io_uring at INIT (granted only where root set the `fuse` module's
    /// `enable_uring`): requests are then handed over on the caller's CPU.
    pub fn with_io_uring(mut self, on: bool) -> Self {
        self.io_uring = on;
        self
    }

    /// How long the kernel may keep an entry and its attributes: none at all on a store
    /// other hosts share (every `stat` and path walk asks the mount, which asks the store
    /// after its own `metadata_ttl`).
    fn ttl(&self) -> Duration {
        if self.fs.options().shared {
            Duration::ZERO
        } else {
            TTL
        }
    }
}

/// Whether a mount has logged a keystore failure already.
static KEYSTORE_FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

fn errno(e: &FsError) -> Errno {
    if first_keystore_failure(e) {
        log::error!(
            "the keystore failed: {e}; requests that need it get EIO (check it with `ssefs \
             fsck`, restore it with `ssefs keystore restore`)"
        );
    } else {
        log::debug!("request failed: {e}");
    }
    Errno::from_i32(e.errno())
}

/// Whether `e` is the keystore itself failing (its database unreadable or damaged), for the
/// first time in this process: that is logged once, with its cause.
fn first_keystore_failure(e: &FsError) -> bool {
    let keystore_failed = match e {
        FsError::Keystore(k) => k.is_damage() || matches!(k, KeystoreError::Database(_)),
        _ => false,
    };
    keystore_failed && !KEYSTORE_FAILURE_LOGGED.swap(true, Ordering::Relaxed)
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

fn time_update(t: Option<TimeOrNow>) -> Option<TimeUpdate> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeUpdate::Now,
        TimeOrNow::SpecificTime(t) => TimeUpdate::At(t),
    })
}

fn reply_entry(reply: ReplyEntry, ttl: Duration, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(attr.generation)),
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
fn file_open_flags(fs: &BucketFs) -> FopenFlags {
    if fs.keeps_page_cache() {
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
        if self.io_uring {
            match config.add_capabilities(InitFlags::FUSE_OVER_IO_URING) {
                Ok(()) => log::debug!("asking for FUSE over io_uring"),
                Err(_) => log::debug!(
                    "FUSE over io_uring not offered (the fuse module's enable_uring is off)"
                ),
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.ttl(), self.fs.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl(), &file_attr(&attr)),
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
            Ok(attr) => reply.attr(&self.ttl(), &file_attr(&attr)),
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
            self.ttl(),
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
        reply_entry(
            reply,
            self.ttl(),
            self.fs.mkdir(caller(req), parent.0, name, mode),
        );
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
            self.ttl(),
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
        reply_entry(reply, self.ttl(), self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(caller(req), ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), file_open_flags(&self.fs)),
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
        // Decrypted straight into the reply's buffer (the ring entry's, over io_uring).
        reply.data_with(size as usize, |out| {
            self.fs.read_into(fh.0, offset, out).map_err(|e| errno(&e))
        });
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

    /// A close. On a local store writes are durable as they are answered, so a close has
    /// nothing to flush: `ENOSYS` tells the kernel not to send `FLUSH` again (one round trip
    /// less per close). On a store other hosts share, a writer's close ends its session and
    /// uploads ([`BucketFs::flush`]).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if self.fs.flushes() {
            reply_empty(reply, self.fs.flush(fh.0));
        } else {
            // The kernel then sends no more flushes: one round trip less per close.
            reply.error(Errno::ENOSYS);
        }
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

    /// `readdir` with each entry's attributes; `fs` counts the lookups of what the reply
    /// takes.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl();
        let listed = self.fs.readdirplus(ino.0, fh.0, offset, |entry, attr| {
            reply.add(
                INodeNo(attr.ino),
                entry.offset,
                &entry.name,
                &ttl,
                &file_attr(attr),
                Generation(attr.generation),
            )
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
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

    /// No ioctl is implemented: `ENOTTY`, the answer a file that is not a terminal or
    /// device gives (every `isatty` asks), without a warning.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        log::trace!("ioctl {cmd:#x}: not supported");
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    /// Not implemented, quietly: `ENOSYS` makes the kernel copy through reads and writes
    /// itself from then on.
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Not implemented, quietly: `ENOSYS` makes the kernel answer `lseek` itself (no
    /// `SEEK_DATA`/`SEEK_HOLE` knowledge of holes) from then on.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Not implemented, quietly: `ENOSYS` makes the kernel answer `EOPNOTSUPP` itself
    /// from then on.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
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
                &self.ttl(),
                &file_attr(&attr),
                Generation(attr.generation),
                FileHandle(fh),
                file_open_flags(&self.fs),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keystore_failure_is_logged_once_and_answered_with_eio() {
        let damaged = || FsError::Keystore(KeystoreError::Corrupt("page 3".to_string()));
        let refused = FsError::Keystore(KeystoreError::UnknownAlias("alias/x".to_string()));
        assert!(!first_keystore_failure(&refused), "a refusal is no failure");
        assert!(first_keystore_failure(&damaged()));
        assert!(!first_keystore_failure(&damaged()), "logged once");
        assert_eq!(errno(&damaged()), Errno::EIO);
    }
}

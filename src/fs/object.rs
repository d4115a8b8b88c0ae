//! Objects: creating them atomically under the bucket's rule, opening an inode's one shared
//! open object (`open_object`) and closing it with the last handle, and the plaintext size
//! `stat` shows.

use super::inode::{Inode, ObjectSlot, Origin, SizeCache};
use super::open_object::{BackingFile, OpenObject};
use super::policy::{KeyUse, check_object_key, new_object_key, object_kek};
use super::{Attr, BucketFs, Caller, FsError, Handle, check_name, lock};
use crate::crypto::{DEFAULT_BLOCK_SIZE, HeaderInfo, Object, peek_header};
use crate::store::{Stat, TimeUpdate};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

/// An open regular file.
pub(crate) struct FileHandle {
    inode: Arc<Inode>,
    object: Arc<OpenObject>,
    append: bool,
    writable: bool,
}

/// Logs a refused use of a key (no grant, key not Enabled, unknown key) with the object's
/// path; the keystore's audit log has the details.
pub(super) fn key_refusal(user: &KeyUse<'_>, error: FsError) -> FsError {
    if matches!(
        error.errno(),
        libc::EACCES | libc::EKEYREVOKED | libc::ENOKEY
    ) {
        log::info!("object {}: key refused: {error}", user.object_path());
    }
    error
}

fn wants_write(flags: i32) -> bool {
    matches!(flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
}

impl BucketFs {
    /// Opens the backing file for the shared object: read-write unless the mount (or the
    /// backing filesystem) is read-only.
    fn open_backing(&self, inode: &Inode) -> Result<File, FsError> {
        if !self.options.read_only {
            match self.backing().reopen(inode.fd()?.as_fd(), libc::O_RDWR) {
                Ok(file) => return Ok(file),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.backing().reopen(inode.fd()?.as_fd(), libc::O_RDONLY)?)
    }

    pub(super) fn backing_file(&self, file: File) -> BackingFile {
        BackingFile::new(file, Arc::clone(self.store.backing()))
    }

    fn open_object(
        &self,
        inode: &Inode,
        user: &KeyUse<'_>,
    ) -> Result<Object<BackingFile>, FsError> {
        let file = self.backing_file(self.open_backing(inode)?);
        let header = peek_header(&file)?;
        let kek = object_kek(self.keys.as_ref(), &header.key_ref, user)?;
        let object = Object::open(file, &self.store_key, kek.as_ref())?;
        if object.is_dirty() {
            // Only a writer that stopped mid-session (or someone who put back such a header)
            // leaves DIRTY behind: its block map cannot be checked until it is closed.
            log::warn!(
                "object {} was being written when its writer stopped: its blocks are checked \
                 one by one, its block map only once it is closed again",
                self.display_path(inode)
            );
        }
        Ok(object)
    }

    /// Logs an integrity failure of an object with its path (never its contents).
    fn note(&self, inode: &Inode, error: FsError) -> FsError {
        if error.is_integrity_failure() {
            log::warn!("object {}: {error}", self.display_path(inode));
        }
        error
    }

    /// The shared open object of an inode, opening it (one key unwrap) for the first user.
    /// Every acquisition of an object under a CMK is a use of the key by `caller`: checked
    /// (grant and key state, read afresh from the keystore) and audited as one `Decrypt`,
    /// also when the object is already open and its data key cached.
    pub(super) fn acquire_object(
        &self,
        caller: Caller,
        inode: &Arc<Inode>,
    ) -> Result<Arc<OpenObject>, FsError> {
        let path = || self.display_path(inode);
        let user = KeyUse::new(caller, &path);
        let mut slot = lock(&inode.object);
        if let Some(slot) = slot.as_mut() {
            check_object_key(self.keys.as_ref(), &slot.object.key_ref(), &user)
                .map_err(|e| key_refusal(&user, e))?;
            slot.users += 1;
            return Ok(Arc::clone(&slot.object));
        }
        let object = self
            .open_object(inode, &user)
            .map_err(|e| self.note(inode, key_refusal(&user, e)))?;
        inode.set_open_file(Some(Arc::clone(&object.io().file)));
        let object = OpenObject::new(object);
        *slot = Some(ObjectSlot {
            object: Arc::clone(&object),
            users: 1,
        });
        Ok(object)
    }

    /// Drops one user; the last one closes the object (under the slot lock, so a new open
    /// cannot race with the close) and leaves its size in the cache.
    pub(super) fn release_object(&self, inode: &Inode) -> Result<(), FsError> {
        let mut slot = lock(&inode.object);
        let Some(current) = slot.as_mut() else {
            return Ok(());
        };
        current.users = current.users.saturating_sub(1);
        if current.users > 0 {
            return Ok(());
        }
        let object = Arc::clone(&current.object);
        *slot = None;
        let closed = self.keeping_times(inode, || object.close()).map_err(|e| {
            log::warn!("closing object {} failed: {e}", self.display_path(inode));
            e
        });
        let closed = closed.map(|done| {
            done.map(|(size, io)| {
                // After the times were put back: a store that uploads at close (remote)
                // must not leave the close's own times showing while it does.
                drop(io);
                size
            })
        });
        if let Ok(Some(size)) = closed {
            if let Ok(stat) = self.stat_node(inode) {
                *lock(&inode.size_cache) = Some(SizeCache {
                    backing_size: stat.size,
                    mtime: stat.mtime,
                    ctime: stat.ctime,
                    plaintext_size: size,
                });
            }
        }
        inode.set_open_file(None);
        closed.map(|_| ())
    }

    /// Runs bookkeeping that rewrites the backing file without changing the object (the
    /// header at `fsync` and close) and puts back the times it disturbed: a `utimensat`
    /// that came before the (asynchronous) release must survive it, as `cp -p` expects.
    fn keeping_times<T>(
        &self,
        inode: &Inode,
        bookkeeping: impl FnOnce() -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let _times = lock(&inode.times);
        let before = self.stat_node(inode);
        let result = bookkeeping();
        if let (Ok(before), Ok(after)) = (before, self.stat_node(inode)) {
            if after.mtime != before.mtime || after.atime != before.atime {
                let (atime, mtime) = (TimeUpdate::At(before.atime), TimeUpdate::At(before.mtime));
                let restored = inode
                    .fd()
                    .and_then(|fd| self.backing().utimens(fd.as_fd(), Some(atime), Some(mtime)));
                if let Err(e) = restored {
                    log::warn!(
                        "cannot restore the times of {}: {e}",
                        self.display_path(inode)
                    );
                }
            }
        }
        result
    }

    /// The plaintext size of an object: from the open object, the cache, or its header.
    /// A backing file without a readable header shows size 0 (opening it gives `EIO`).
    pub(super) fn plaintext_size(&self, inode: &Inode, stat: &Stat) -> u64 {
        if let Some(slot) = lock(&inode.object).as_ref() {
            return slot.object.size();
        }
        if let Some(cache) = *lock(&inode.size_cache) {
            if cache.matches(stat) {
                return cache.plaintext_size;
            }
        }
        match self.read_header(inode) {
            Ok(header) => {
                *lock(&inode.size_cache) = Some(SizeCache {
                    backing_size: stat.size,
                    mtime: stat.mtime,
                    ctime: stat.ctime,
                    plaintext_size: header.size,
                });
                header.size
            }
            Err(e) => {
                log::debug!(
                    "object {}: no readable header: {e}",
                    self.display_path(inode)
                );
                0
            }
        }
    }

    /// The (unauthenticated) header of an object, without any key.
    pub(super) fn read_header(&self, inode: &Inode) -> Result<HeaderInfo, FsError> {
        // O_NOATIME: a `stat` through the mount must not change the object's access time.
        let flags = libc::O_RDONLY | libc::O_NOATIME;
        let file = self.backing_file(self.backing().reopen(inode.fd()?.as_fd(), flags)?);
        Ok(peek_header(&file)?)
    }

    fn file_handle(&self, fh: u64) -> Result<Arc<Handle>, FsError> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::File(_) => Ok(handle),
            Handle::Dir(_) => Err(FsError::BadHandle(fh)),
        }
    }

    fn install_handle(&self, inode: Arc<Inode>, object: Arc<OpenObject>, flags: i32) -> u64 {
        self.new_handle(Handle::File(FileHandle {
            inode,
            object,
            append: flags & libc::O_APPEND != 0,
            writable: wants_write(flags),
        }))
    }

    /// Opens an object; `O_TRUNC` with write access empties it. An object under a CMK needs
    /// `caller` to be allowed to decrypt with it (for reading and for writing alike).
    pub fn open(&self, caller: Caller, ino: u64, flags: i32) -> Result<u64, FsError> {
        let inode = self.inodes.get(ino)?;
        if inode.is_dir() {
            return Err(FsError::IsADirectory);
        }
        if !inode.is_file() {
            return Err(FsError::NotPermitted);
        }
        if wants_write(flags) || flags & libc::O_TRUNC != 0 {
            self.writable()?;
        }
        let object = self.acquire_object(caller, &inode)?;
        if flags & libc::O_TRUNC != 0 && wants_write(flags) {
            let truncated = object
                .mutate(|o| Ok(o.set_size(0)?))
                .and_then(|()| self.clear_setid(&inode, Some(caller)));
            if let Err(e) = truncated {
                let _ = self.release_object(&inode);
                return Err(e);
            }
        }
        Ok(self.install_handle(inode, object, flags))
    }

    /// Creates a new object with the bucket's encryption and opens it. The object appears
    /// under its name only complete (header written): it is linked or renamed into place
    /// without replacing anything.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, u64), FsError> {
        self.writable()?;
        check_name(name)?;
        if self.at_store_root(parent) {
            return Err(FsError::NotABucket);
        }
        let dir = self.inodes.get(parent)?;
        let bucket = self.bucket_of(&dir)?;
        let path = || format!("{}/{}", self.display_path(&dir), name.to_string_lossy());
        let user = KeyUse::new(caller, &path);
        let key = new_object_key(self.keys.as_ref(), &bucket, &user)
            .map_err(|e| key_refusal(&user, e))?;
        let (uid, gid, _) = self.new_owner(caller, &dir, mode)?;
        let dir_fd = dir.fd()?;
        let (pending, file) = self.store.begin_create(dir_fd.as_fd(), mode & 0o7777)?;
        self.backing().chown(file.as_fd(), Some(uid), Some(gid))?;
        let created = Object::create(
            self.backing_file(file),
            &self.store_key,
            key.algorithm,
            key.key_ref,
            key.kek.as_ref(),
            DEFAULT_BLOCK_SIZE,
        )?;
        let file = Arc::clone(&created.io().file);
        let mut stat = self.backing().stat(file.as_fd())?;
        let object = OpenObject::new(created);
        let preloaded = self
            .inodes
            .preload(Arc::clone(&file), &stat, Arc::clone(&object));
        let inode = Arc::clone(&preloaded.inode);
        let unnamed = pending.is_unnamed();
        match pending.publish(&file, dir_fd.as_fd(), name) {
            Ok(()) => {
                inode.note_name(&dir, name);
                if unnamed {
                    // Stated before its link, with no links (the kernel refuses to link a
                    // file it believes has none) and the ctime the link changed.
                    match self.serve_by_name(&inode, dir_fd.as_fd(), name, &stat) {
                        Some(linked) => stat = linked,
                        None => stat.nlink = 1,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                self.inodes.withdraw(preloaded);
                // Someone else created it first: open theirs, as open(O_CREAT) would.
                let (theirs, _) = self.enter(&dir, name, Origin::Found)?;
                let fh = self.open(caller, theirs.ino, flags).inspect_err(|_| {
                    self.inodes.forget(theirs.ino, 1);
                })?;
                return Ok((self.getattr(theirs.ino)?, fh));
            }
            Err(e) => {
                self.inodes.withdraw(preloaded);
                return Err(e.into());
            }
        }
        let attr = self
            .attr_of(&inode, &stat)
            .inspect_err(|_| self.inodes.forget(inode.ino, 1))?;
        Ok((attr, self.install_handle(inode, object, flags)))
    }

    /// A file created unnamed (`Store::begin_create`) keeps a descriptor without a name after
    /// its link: its backing path reads as deleted, and it cannot be linked again through
    /// `/proc`. The inode is served from then on by a descriptor opened by its new name, so
    /// it is like every other open object; the object's I/O stays on the first descriptor
    /// (the same file). If that fails, the first descriptor serves, and it is logged.
    /// Returns the attributes of the linked file.
    fn serve_by_name(
        &self,
        inode: &Inode,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        made: &Stat,
    ) -> Option<Stat> {
        let named = self
            .backing()
            .open_path_at(dir, name)
            .and_then(|fd| self.backing().reopen(fd.as_fd(), libc::O_RDWR))
            .and_then(|file| {
                let st = self.backing().stat(file.as_fd())?;
                if (st.dev, st.ino) == (made.dev, made.ino) {
                    Ok((file, st))
                } else {
                    Err(io::Error::other("the name leads to another file"))
                }
            });
        match named {
            Ok((file, st)) => {
                inode.set_open_file(Some(Arc::new(file)));
                Some(st)
            }
            Err(e) => {
                log::warn!(
                    "new object {}: cannot open it by its name: {e}",
                    self.display_path(inode)
                );
                None
            }
        }
    }

    /// Reads up to `size` bytes at `offset` (fewer only at the end of the object).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let len = {
            let handle = self.file_handle(fh)?;
            let Handle::File(file) = &*handle else {
                return Err(FsError::BadHandle(fh));
            };
            let available = file.object.size().saturating_sub(offset);
            usize::try_from(available.min(u64::from(size))).unwrap_or(0)
        };
        let mut buf = vec![0u8; len];
        let n = self.read_into(fh, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads up to `out.len()` bytes at `offset` into `out` (fewer only at the end of the
    /// object); returns how many.
    pub fn read_into(&self, fh: u64, offset: u64, out: &mut [u8]) -> Result<usize, FsError> {
        let handle = self.file_handle(fh)?;
        let Handle::File(file) = &*handle else {
            return Err(FsError::BadHandle(fh));
        };
        let available = file.object.size().saturating_sub(offset);
        let len = usize::try_from(available)
            .unwrap_or(usize::MAX)
            .min(out.len());
        file.object
            .read_at(offset, &mut out[..len])
            .map_err(|e| self.note(&file.inode, e))
    }

    /// Writes `data` at `offset` (at the end for `O_APPEND` handles); returns the count.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize, FsError> {
        self.writable()?;
        let handle = self.file_handle(fh)?;
        let Handle::File(file) = &*handle else {
            return Err(FsError::BadHandle(fh));
        };
        if !file.writable {
            return Err(FsError::BadHandle(fh));
        }
        file.object
            .write_at(file.append, offset, data)
            .map_err(|e| self.note(&file.inode, e))?;
        Ok(data.len())
    }

    /// After a write by a caller without `CAP_FSETID` (the kernel says so with each write):
    /// clears the file's set-user-ID and set-group-ID bits as [`BucketFs::clear_setid`] does.
    pub fn clear_setid_after_write(&self, fh: u64) -> Result<(), FsError> {
        let handle = self.file_handle(fh)?;
        let Handle::File(file) = &*handle else {
            return Err(FsError::BadHandle(fh));
        };
        self.clear_setid(&file.inode, None)
    }

    /// Makes everything written through any handle of this object durable.
    pub fn fsync(&self, fh: u64) -> Result<(), FsError> {
        let handle = self.file_handle(fh)?;
        let Handle::File(file) = &*handle else {
            return Err(FsError::BadHandle(fh));
        };
        if self.options.read_only {
            return Ok(());
        }
        self.keeping_times(&file.inode, || {
            file.object.mutate(|object| Ok(object.sync()?))
        })
        .map_err(|e| self.note(&file.inode, e))
    }

    /// A `close` of a descriptor of `fh`. On a store other hosts share, a writer's close
    /// ends its write session and syncs (so the object store holds the whole new version
    /// when `close` returns: close-to-open consistency); elsewhere nothing is done (the
    /// mount answers `flush` with `ENOSYS` then).
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        let handle = self.file_handle(fh)?;
        let Handle::File(file) = &*handle else {
            return Err(FsError::BadHandle(fh));
        };
        if !self.options.shared || self.options.read_only || !file.writable {
            return Ok(());
        }
        self.keeping_times(&file.inode, || {
            file.object.mutate(|object| Ok(object.settle()?))
        })
        .map_err(|e| self.note(&file.inode, e))
    }

    /// Whether a `close` needs the daemon ([`BucketFs::flush`]).
    pub fn flushes(&self) -> bool {
        self.options.shared && !self.options.read_only
    }

    /// Closes a handle; the last handle of an object closes the object.
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        match &*self.take_handle(fh)? {
            Handle::File(file) => self.release_object(&file.inode),
            Handle::Dir(_) => Err(FsError::BadHandle(fh)),
        }
    }

    /// Truncates or extends an object (holes read as zeros), through its handle if given.
    pub(super) fn truncate(
        &self,
        caller: Caller,
        inode: &Arc<Inode>,
        size: u64,
        fh: Option<u64>,
    ) -> Result<(), FsError> {
        if inode.is_dir() {
            return Err(FsError::IsADirectory);
        }
        if !inode.is_file() {
            return Err(FsError::Io(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        if let Some(fh) = fh {
            if let Ok(handle) = self.file_handle(fh) {
                if let Handle::File(file) = &*handle {
                    return file
                        .object
                        .mutate(|o| Ok(o.set_size(size)?))
                        .map_err(|e| self.note(inode, e));
                }
            }
        }
        let object = self.acquire_object(caller, inode)?;
        let result = object
            .mutate(|o| Ok(o.set_size(size)?))
            .map_err(|e| self.note(inode, e));
        let released = self.release_object(inode);
        result.and(released)
    }
}

//! Objects: creating them atomically under the bucket's rule, the one shared open object per
//! inode (read lock for reads, write lock for writes and truncates, closed with the last
//! handle), and the plaintext size `stat` shows.

use super::inode::{Inode, ObjectSlot, Origin, SizeCache, lock};
use super::policy::{KeyUse, check_object_key, new_object_key, object_kek};
use super::{Attr, BucketFs, Caller, FsError, Handle, check_name};
use crate::crypto::{DEFAULT_BLOCK_SIZE, HeaderInfo, KeyRef, Object, ObjectIo, peek_header};
use crate::store::{RenameMode, Stat, TimeUpdate};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Positional I/O on a backing file, as the crypto layer wants it, through the store's
/// [`Backing`](crate::store::Backing) (where a test may inject faults).
pub(crate) struct BackingFile {
    pub(crate) file: Arc<File>,
    backing: Arc<dyn crate::store::Backing>,
}

impl BackingFile {
    /// An open backing file whose I/O goes through `backing` (offline tools use this too).
    pub(crate) fn new(file: File, backing: Arc<dyn crate::store::Backing>) -> BackingFile {
        BackingFile {
            file: Arc::new(file),
            backing,
        }
    }
}

impl ObjectIo for BackingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self
                .backing
                .read_at(&self.file, &mut buf[done..], offset + done as u64)
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self
                .backing
                .write_at(&self.file, &buf[done..], offset + done as u64)
            {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.backing.set_len(&self.file, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.backing.sync_data(&self.file)
    }
    fn will_need(&self, offset: u64, len: u64) {
        self.backing.will_need(&self.file, offset, len);
    }
    fn start_writeback(&self, offset: u64, len: u64) {
        self.backing.start_writeback(&self.file, offset, len);
    }
}

/// How far ahead of a sequential reader the backing pages are read (plaintext bytes).
const READ_AHEAD: u64 = 4 << 20;
/// Reads this large or larger may be part of a sequential stream: the kernel's own readahead
/// sends sequential reads as large requests; small ones are random access, which reading
/// ahead would only slow down.
const STREAM_REQUEST: u64 = 64 << 10;
/// How far a read may land from where the last one ended and still count as sequential: the
/// kernel sends readahead requests concurrently, so they may arrive out of order.
const STREAM_SLACK: u64 = 2 << 20;
/// A sequential writer's backing pages start going to the device in steps of this many
/// bytes, so that the device works while the writer encrypts and a closing `fsync` finds
/// little left to write.
const WRITE_BEHIND: u64 = 8 << 20;

/// Where the last reads and writes of an object ended, to recognise sequential access.
#[derive(Default)]
struct Stream {
    /// The end of the last read.
    read_end: u64,
    /// The backing pages of plaintext below this offset have been read ahead.
    read_ahead_to: u64,
    /// The end of the last write.
    write_end: u64,
    /// The start of the sequential run of writes not yet handed to writeback.
    write_behind_from: u64,
}

impl Stream {
    /// Notes a read of `asked` bytes at `offset` that returned up to `end` in an object of
    /// `size` bytes; returns the plaintext range to read ahead, if any.
    fn on_read(&mut self, offset: u64, asked: u64, end: u64, size: u64) -> Option<(u64, u64)> {
        let sequential = asked >= STREAM_REQUEST && offset.abs_diff(self.read_end) <= STREAM_SLACK;
        self.read_end = if sequential {
            self.read_end.max(end)
        } else {
            end
        };
        let from = self.read_ahead_to.max(end);
        let to = end.saturating_add(READ_AHEAD).min(size);
        if sequential && from < to && to - from >= READ_AHEAD / 2 {
            self.read_ahead_to = to;
            Some((from, to - from))
        } else {
            None
        }
    }

    /// Notes a write of `at..end`; returns the plaintext range to hand to writeback, if any.
    fn on_write(&mut self, at: u64, end: u64) -> Option<(u64, u64)> {
        if at != self.write_end {
            self.write_behind_from = at;
        }
        self.write_end = end;
        let from = self.write_behind_from;
        (end - from >= WRITE_BEHIND).then(|| {
            self.write_behind_from = end;
            (from, end - from)
        })
    }
}

/// The one open object of an inode, shared by all its handles.
pub(crate) struct OpenObject {
    object: RwLock<Option<Object<BackingFile>>>,
    /// The plaintext size, readable without the lock (for `getattr`).
    size: AtomicU64,
    /// The key the object is wrapped under now, readable without the object's lock (each
    /// new handle checks the caller may still use it).
    key_ref: Mutex<KeyRef>,
    /// Sequential access, for read-ahead and write-behind hints.
    stream: Mutex<Stream>,
}

impl OpenObject {
    fn new(object: Object<BackingFile>) -> Arc<Self> {
        Arc::new(OpenObject {
            size: AtomicU64::new(object.size()),
            key_ref: Mutex::new(object.info().key_ref.clone()),
            stream: Mutex::new(Stream::default()),
            object: RwLock::new(Some(object)),
        })
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn key_ref(&self) -> KeyRef {
        lock(&self.key_ref).clone()
    }

    /// Reads at `offset`; a sequential reader's next backing pages are read ahead.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let guard = self.object.read().map_err(|_| FsError::Poisoned)?;
        let object = guard.as_ref().ok_or(FsError::Poisoned)?;
        let n = object.read_at(offset, buf)?;
        let end = offset + n as u64;
        let ahead = lock(&self.stream).on_read(offset, buf.len() as u64, end, object.size());
        if let Some((from, len)) = ahead {
            object.will_need(from, len);
        }
        Ok(n)
    }

    /// Writes `data` at `offset` (at the end when `append`); a sequential writer's backing
    /// pages are handed to writeback every [`WRITE_BEHIND`] bytes.
    fn write_at(&self, append: bool, offset: u64, data: &[u8]) -> Result<(), FsError> {
        self.mutate(|object| {
            let at = if append { object.size() } else { offset };
            object.write_at(at, data)?;
            let behind = lock(&self.stream).on_write(at, at + data.len() as u64);
            if let Some((from, len)) = behind {
                object.start_writeback(from, len);
            }
            Ok(())
        })
    }

    /// Runs a mutation under the write lock and publishes the new size.
    pub(super) fn mutate<T>(
        &self,
        change: impl FnOnce(&mut Object<BackingFile>) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let mut guard = self.object.write().map_err(|_| FsError::Poisoned)?;
        let object = guard.as_mut().ok_or(FsError::Poisoned)?;
        let result = change(object);
        self.size.store(object.size(), Ordering::Release);
        result
    }

    /// Runs `build` on the object under the write lock; when it returns a new object, that
    /// one takes the old one's place before the lock is released (readers and writers see
    /// one or the other, never a mix). Returns `build`'s answer and the replaced object.
    pub(super) fn replace<T>(
        &self,
        build: impl FnOnce(&Object<BackingFile>) -> Result<(T, Option<Object<BackingFile>>), FsError>,
    ) -> Result<(T, Option<Object<BackingFile>>), FsError> {
        let mut guard = self.object.write().map_err(|_| FsError::Poisoned)?;
        let object = guard.as_ref().ok_or(FsError::Poisoned)?;
        let (answer, new) = build(object)?;
        let old = match new {
            Some(new) => {
                self.size.store(new.size(), Ordering::Release);
                *lock(&self.key_ref) = new.info().key_ref.clone();
                guard.replace(new)
            }
            None => None,
        };
        Ok((answer, old))
    }

    fn close(&self) -> Result<Option<u64>, FsError> {
        let mut guard = self.object.write().map_err(|_| FsError::Poisoned)?;
        match guard.take() {
            Some(object) => {
                let size = object.size();
                object.close()?;
                Ok(Some(size))
            }
            None => Ok(None),
        }
    }
}

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
        Ok(Object::open(file, &self.store_key, kek.as_ref())?)
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
    /// under its name only complete (header written), through an atomic no-replace rename.
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
        let (pending, file) = self.store.begin_create(mode & 0o7777)?;
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
        let stat = self.backing().stat(file.as_fd())?;
        let object = OpenObject::new(created);
        let dir_fd = dir.fd()?;
        let preloaded = self.inodes.preload(file, &stat, Arc::clone(&object));
        let inode = Arc::clone(&preloaded.inode);
        match pending.publish(dir_fd.as_fd(), name, RenameMode::NoReplace) {
            Ok(()) => inode.note_name(&dir, name),
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

    /// Reads up to `size` bytes at `offset` (fewer only at the end of the object).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let handle = self.file_handle(fh)?;
        let Handle::File(file) = &*handle else {
            return Err(FsError::BadHandle(fh));
        };
        let available = file.object.size().saturating_sub(offset);
        let len = usize::try_from(available.min(u64::from(size))).unwrap_or(0);
        let mut buf = vec![0u8; len];
        let n = file
            .object
            .read_at(offset, &mut buf)
            .map_err(|e| self.note(&file.inode, e))?;
        buf.truncate(n);
        Ok(buf)
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

#[cfg(test)]
mod stream_tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sequential_reads_are_read_ahead_once_per_half_window() {
        let mut s = Stream::default();
        let size = 64 * MIB;
        assert_eq!(s.on_read(0, MIB, MIB, size), Some((MIB, READ_AHEAD)));
        // The next megabyte is inside the window read ahead: nothing new yet.
        assert_eq!(s.on_read(MIB, MIB, 2 * MIB, size), None);
        // Half the window consumed: the next stretch, from where the last one ended.
        let ahead = s.on_read(2 * MIB, MIB, 3 * MIB, size).unwrap();
        assert_eq!(ahead, (MIB + READ_AHEAD, 2 * MIB));
        // Requests arriving out of order still count as sequential.
        assert_eq!(
            s.on_read(4 * MIB, MIB, 5 * MIB, size),
            Some((MIB + READ_AHEAD + 2 * MIB, 2 * MIB))
        );
        assert!(s.on_read(3 * MIB, MIB, 4 * MIB, size).is_none());
        // Never past the end of the object.
        let mut s = Stream::default();
        assert_eq!(s.on_read(0, MIB, MIB, 3 * MIB), Some((MIB, 2 * MIB)));
        assert_eq!(s.on_read(MIB, MIB, 2 * MIB, 3 * MIB), None);
    }

    #[test]
    fn small_or_scattered_reads_are_not_read_ahead() {
        let mut s = Stream::default();
        let size = 256 * MIB;
        for (i, offset) in [0, 4096, 8192, 100 * MIB, 7 * MIB].into_iter().enumerate() {
            assert_eq!(
                s.on_read(offset, 4096, offset + 4096, size),
                None,
                "read {i}"
            );
        }
        // A large read far from the last one starts a new stream, read ahead from there.
        assert_eq!(s.on_read(200 * MIB, MIB, 201 * MIB, size), None);
        assert_eq!(
            s.on_read(201 * MIB, MIB, 202 * MIB, size),
            Some((202 * MIB, READ_AHEAD))
        );
    }

    #[test]
    fn sequential_writes_go_to_writeback_in_steps() {
        let mut s = Stream::default();
        let mut handed = Vec::new();
        for i in 0..20 {
            if let Some(range) = s.on_write(i * MIB, (i + 1) * MIB) {
                handed.push(range);
            }
        }
        assert_eq!(
            handed,
            vec![(0, WRITE_BEHIND), (WRITE_BEHIND, WRITE_BEHIND)]
        );
        // A jump elsewhere starts a new run; rewriting the same block is not sequential.
        assert_eq!(s.on_write(100 * MIB, 100 * MIB + 4096), None);
        for _ in 0..4096 {
            assert_eq!(s.on_write(0, 4096), None);
        }
    }
}

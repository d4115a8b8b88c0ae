//! The one shared open object of an inode (read lock for reads, write lock for writes and
//! truncates, closed with the last handle), its positional I/O on the backing file and the
//! sequential-access hints it gives the store. Knows nothing of inodes, names or FUSE.

use super::{FsError, lock};
use crate::crypto::{KeyRef, Object, ObjectIo};
use std::fs::File;
use std::io;
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

impl Drop for BackingFile {
    fn drop(&mut self) {
        self.backing.closed(&self.file);
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
    fn publish(&self) -> io::Result<()> {
        self.backing.publish(&self.file)
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
    pub(super) fn new(object: Object<BackingFile>) -> Arc<Self> {
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

    pub(super) fn key_ref(&self) -> KeyRef {
        lock(&self.key_ref).clone()
    }

    /// Reads at `offset`; a sequential reader's next backing pages are read ahead.
    pub(super) fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
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
    pub(super) fn write_at(&self, append: bool, offset: u64, data: &[u8]) -> Result<(), FsError> {
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

    /// Closes the object: its size, and its backing file, for the caller to drop once it
    /// has put back the times the close disturbed (dropping it tells the store the object
    /// was closed, which a remote store answers with an upload).
    pub(super) fn close(&self) -> Result<Option<(u64, BackingFile)>, FsError> {
        let mut guard = self.object.write().map_err(|_| FsError::Poisoned)?;
        match guard.take() {
            Some(object) => {
                let size = object.size();
                let io = object.close()?;
                Ok(Some((size, io)))
            }
            None => Ok(None),
        }
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

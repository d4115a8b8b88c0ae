//! Positional I/O on the backing bytes of one object ([`ObjectIo`]), for a `std::fs::File`
//! and for an in-memory buffer. Byte movement only: no format knowledge, no keys.

use std::io;
use std::sync::{Mutex, MutexGuard};

/// Positional I/O on the backing bytes of one object.
pub trait ObjectIo: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// True when the backing bytes are empty (never the case for an object).
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    /// At the end of a write session: the bytes made durable, and, where others read the
    /// same store (a remote store), theirs to see. By default `sync_data`.
    fn publish(&self) -> io::Result<()> {
        self.sync_data()
    }
    /// A hint: `len` bytes at `offset` will be read soon (start reading them ahead).
    fn will_need(&self, _offset: u64, _len: u64) {}
    /// A hint: start writing `len` bytes at `offset` to the device now, without waiting.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
}

impl ObjectIo for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// An in-memory [`ObjectIo`], for tests and for tools that build objects in memory.
#[derive(Default, Debug)]
pub struct MemoryIo {
    pub bytes: Mutex<Vec<u8>>,
}

impl MemoryIo {
    /// A memory store holding `bytes` (for example a copy of another object's backing bytes).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Mutex::new(bytes),
        }
    }
    /// A copy of the stored bytes.
    pub fn snapshot(&self) -> io::Result<Vec<u8>> {
        Ok(self.lock()?.clone())
    }
    fn lock(&self) -> io::Result<MutexGuard<'_, Vec<u8>>> {
        self.bytes
            .lock()
            .map_err(|_| io::Error::other("memory object lock poisoned"))
    }
}

impl ObjectIo for MemoryIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let bytes = self.lock()?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = self.lock()?;
        let start = usize::try_from(offset).map_err(|_| too_large())?;
        let end = start.checked_add(buf.len()).ok_or_else(too_large)?;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock()?.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| too_large())?;
        self.lock()?.resize(len, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

fn too_large() -> io::Error {
    io::Error::from_raw_os_error(libc::EFBIG)
}

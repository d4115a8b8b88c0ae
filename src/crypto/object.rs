//! An encrypted object over any random-access byte store ([`ObjectIo`]): header, block
//! layout, sealing and opening blocks, read/write at any offset, truncate, commit, rewrap.

use super::{CryptoError, Key256};
use std::io;

/// Plaintext bytes per block unless the header says otherwise.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

/// How an object's data is protected (`x-oss-server-side-encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    None,
    Aes256,
    Kms,
}

/// Which key-encryption key wraps an object's DEK.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRef {
    None,
    Master { version: u32 },
    Cmk { key_id: String, version: u32 },
}

/// What the header says, parsed but not yet authenticated (for `stat` and for choosing the KEK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    pub version: u16,
    pub algorithm: Algorithm,
    pub key_ref: KeyRef,
    pub block_size: u32,
    pub file_id: [u8; 16],
    pub size: u64,
}

/// Positional I/O on the backing bytes of one object.
pub trait ObjectIo: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns fewer only at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
}

/// An in-memory [`ObjectIo`], for tests and for tools that build objects in memory.
#[derive(Default, Debug)]
pub struct MemoryIo {
    pub bytes: std::sync::Mutex<Vec<u8>>,
}

/// What a full verification of an object found (for `fsck`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub problems: Vec<String>,
}

/// Reads and structurally parses the header without any key.
pub fn peek_header(io: &dyn ObjectIo) -> Result<HeaderInfo, CryptoError> {
    let _ = io;
    todo!("crypto: peek_header")
}

/// An open object: the authenticated header, the derived keys and the backing I/O.
pub struct Object<I: ObjectIo> {
    io: I,
}

impl<I: ObjectIo> Object<I> {
    /// Creates an empty object (size 0) with a fresh DEK and file ID, and writes its header.
    /// `kek` is `None` exactly when `algorithm` is `None`.
    pub fn create(
        io: I,
        algorithm: Algorithm,
        key_ref: KeyRef,
        kek: Option<&Key256>,
        block_size: u32,
    ) -> Result<Self, CryptoError> {
        let _ = (io, algorithm, key_ref, kek, block_size);
        todo!("crypto: create")
    }
    /// Opens and authenticates an existing object; `kek` is the key named by its header.
    pub fn open(io: I, kek: Option<&Key256>) -> Result<Self, CryptoError> {
        let _ = (io, kek);
        todo!("crypto: open")
    }
    pub fn info(&self) -> &HeaderInfo {
        todo!("crypto: info")
    }
    pub fn size(&self) -> u64 {
        todo!("crypto: size")
    }
    /// Reads plaintext at `offset`; returns fewer bytes only at the end of the object.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, CryptoError> {
        let _ = (offset, buf);
        todo!("crypto: read_at")
    }
    /// Writes plaintext at `offset`, extending the object (holes read as zeros).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), CryptoError> {
        let _ = (offset, data);
        todo!("crypto: write_at")
    }
    /// Truncates or extends to `size` bytes.
    pub fn set_size(&mut self, size: u64) -> Result<(), CryptoError> {
        let _ = size;
        todo!("crypto: set_size")
    }
    /// Makes everything written so far durable (commit header, then `sync_data`).
    pub fn sync(&mut self) -> Result<(), CryptoError> {
        todo!("crypto: sync")
    }
    /// Marks the object clean (no write session open), trims the backing bytes and syncs nothing.
    pub fn close(self) -> Result<I, CryptoError> {
        todo!("crypto: close")
    }
    /// Re-wraps the DEK under another KEK by rewriting only the header.
    pub fn rewrap(&mut self, key_ref: KeyRef, kek: Option<&Key256>) -> Result<(), CryptoError> {
        let _ = (key_ref, kek);
        todo!("crypto: rewrap")
    }
    /// Authenticates every block (for `fsck`).
    pub fn verify(&self) -> Result<VerifyReport, CryptoError> {
        todo!("crypto: verify")
    }
    pub fn io(&self) -> &I {
        &self.io
    }
}

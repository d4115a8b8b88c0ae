//! The encrypted object format: keys, key wrapping, the object header and the block layout.
//! This module knows no paths, no SQLite and no FUSE, and imports nothing from the rest of the
//! crate: it takes keys, a file ID, block numbers and bytes (through [`ObjectIo`]).
//! The byte-level specification is `docs/FORMAT.md`.

mod error;
mod keys;
mod object;

pub use error::CryptoError;
pub use keys::{Key256, WrappedKey, unwrap_key, wrap_key};
pub use object::{
    Algorithm, DEFAULT_BLOCK_SIZE, HeaderInfo, KeyRef, MemoryIo, Object, ObjectIo, VerifyReport,
    peek_header,
};

/// A per-object data encryption key (random, 256 bits, never stored in clear).
pub type DataKey = Key256;
/// A key-encryption key: a master key version, a CMK material version or the root key.
pub type KeyEncryptionKey = Key256;

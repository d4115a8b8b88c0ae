//! The encrypted object format: keys, key wrapping, the object header and the block layout.
//! This module knows no paths, no SQLite and no FUSE, and imports nothing from the rest of the
//! crate: it takes keys, a file ID, block numbers and bytes (through [`ObjectIo`]).
//! The byte-level specification is `docs/FORMAT.md`.

#![forbid(unsafe_code)]

mod active;
mod block;
#[cfg(test)]
mod block_map_tests;
mod error;
mod header;
mod io;
mod keys;
mod layout;
mod object;
#[cfg(test)]
mod object_tests;
mod parallel;

pub use error::CryptoError;
pub use header::{Algorithm, HeaderInfo, KeyRef};
pub use io::{MemoryIo, ObjectIo};
pub use keys::{Key256, StoreKey, WRAPPED_KEY_LEN, WrappedKey, unwrap_key, wrap_key};
pub use layout::{FORMAT_V1, FORMAT_V2, FORMAT_VERSION};
pub use layout::{MAX_BLOCK_SIZE, MAX_OBJECT_SIZE, MIN_BLOCK_SIZE};
pub use object::{DEFAULT_BLOCK_SIZE, Object, VerifyReport, check_kek, peek_header};

// Reproducible building blocks for known-answer tests, fuzzing and benchmarks.
#[doc(hidden)]
pub use block::{BlockCipher, Slot};
#[doc(hidden)]
pub use header::dek_context;
#[doc(hidden)]
pub use keys::wrap_key_with_nonce;
#[doc(hidden)]
pub use object::parse_header_bytes;

/// A per-object data encryption key (random, 256 bits, never stored in clear).
pub type DataKey = Key256;
/// A key-encryption key: a master key version, a CMK material version or the root key.
pub type KeyEncryptionKey = Key256;

//! Errors of the crypto layer. Every authentication failure is one variant, so the
//! filesystem maps it to `EIO` in one place and never returns unauthenticated plaintext.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not an ssefs object (bad magic)")]
    NotAnObject,
    #[error("unsupported object format version {0}")]
    UnsupportedVersion(u16),
    /// An object of an older format version, which this ssefs reads but does not write.
    #[error("object format version {0} is read-only; run `ssefs upgrade` to write it")]
    ReadOnlyVersion(u16),
    #[error("malformed object: {0}")]
    Malformed(String),
    /// A MAC did not verify: tampering, truncation, a swapped block or the wrong key.
    #[error("authentication failed: {0}")]
    Authentication(String),
    #[error("the operating system's random number generator failed")]
    Random,
}

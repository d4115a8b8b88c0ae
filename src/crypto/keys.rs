//! Secret key types (zeroized on drop, no printing `Debug`) and the authenticated,
//! context-bound key wrap used for DEKs, master keys and CMK material.

use super::CryptoError;

/// A 256-bit secret. Zeroized on drop; `Debug` prints only a placeholder.
pub struct Key256 {
    bytes: zeroize::Zeroizing<[u8; 32]>,
}

impl Key256 {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        todo!("crypto: generate")
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let _ = bytes;
        todo!("crypto: from_bytes")
    }
    /// The raw key bytes, for deriving subkeys and for writing a root key file.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256(<redacted>)")
    }
}

/// A wrapped (encrypted and authenticated) 256-bit secret: nonce ‖ ciphertext ‖ tag.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey(pub Vec<u8>);

/// Wraps `secret` under `kek`, bound to `context` (which must be given again to unwrap).
pub fn wrap_key(kek: &Key256, context: &[u8], secret: &Key256) -> Result<WrappedKey, CryptoError> {
    let _ = (kek, context, secret);
    todo!("crypto: wrap_key")
}

/// Unwraps; a wrong `kek`, wrong `context` or modified bytes give `CryptoError::Authentication`.
pub fn unwrap_key(
    kek: &Key256,
    context: &[u8],
    wrapped: &WrappedKey,
) -> Result<Key256, CryptoError> {
    let _ = (kek, context, wrapped);
    todo!("crypto: unwrap_key")
}

//! Secret key types (zeroized on drop, no printing `Debug`), HKDF subkey derivation and the
//! authenticated, context-bound key wrap used for DEKs, master keys and CMK material.
//! Pure functions over bytes: no I/O, no knowledge of where keys are kept.

use super::CryptoError;
use aes::Aes256;
use aes::cipher::{KeyInit, KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// HMAC-SHA256 keyed state; cloned for every message so the key schedule is paid once.
pub(super) type HmacSha256 = Hmac<Sha256>;
type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// Bytes of a wrapped 256-bit secret: nonce (16) ‖ ciphertext (32) ‖ tag (32).
pub const WRAPPED_KEY_LEN: usize = 80;
const WRAP_NONCE_LEN: usize = 16;
const WRAP_DOMAIN: &[u8] = b"ssefs/wrap/v1";

/// A 256-bit secret. Zeroized on drop; `Debug` prints only a placeholder.
pub struct Key256 {
    bytes: Zeroizing<[u8; 32]>,
}

impl Key256 {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(bytes.as_mut())?;
        Ok(Self { bytes })
    }
    /// A key from exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| {
            CryptoError::Malformed(format!("a key must be 32 bytes, not {}", bytes.len()))
        })?;
        Ok(Self::from_array(array))
    }
    pub(super) fn from_array(array: [u8; 32]) -> Self {
        Self {
            bytes: Zeroizing::new(array),
        }
    }
    /// The raw key bytes, for deriving subkeys and for writing a root key file.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.bytes
    }
    /// A second copy of the same secret (also zeroized on drop).
    pub fn duplicate(&self) -> Self {
        Self::from_array(*self.bytes)
    }
}

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256(<redacted>)")
    }
}

/// What binds objects to one store: the store's 16-byte id and its random 256-bit
/// object-authentication key (kept in the store's keystore, wrapped under the root key).
/// Every header and block tag of a version 2 object is keyed by it, `none` objects included.
pub struct StoreKey {
    id: [u8; 16],
    key: Key256,
    min_version: u16,
}

impl StoreKey {
    /// A store key that accepts only objects of the current format version.
    pub fn new(id: [u8; 16], key: Key256) -> Self {
        Self {
            id,
            key,
            min_version: super::layout::FORMAT_VERSION,
        }
    }
    /// The same key accepting objects from format `version` on (a store not yet upgraded).
    pub fn with_min_version(self, version: u16) -> Self {
        Self {
            min_version: version,
            ..self
        }
    }
    /// The oldest object format version this store still accepts.
    pub fn min_version(&self) -> u16 {
        self.min_version
    }
    /// The store id, written into every version 2 header and DEK wrap context.
    pub fn id(&self) -> &[u8; 16] {
        &self.id
    }
    /// The object-authentication key itself (for wrapping it in the keystore).
    pub fn auth_key(&self) -> &Key256 {
        &self.key
    }
    /// A second copy (the key is zeroized on drop in both).
    pub fn duplicate(&self) -> Self {
        Self::new(self.id, self.key.duplicate()).with_min_version(self.min_version)
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// A wrapped (encrypted and authenticated) 256-bit secret: nonce ‖ ciphertext ‖ tag.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey(pub Vec<u8>);

/// Fills `buf` from the operating system's CSPRNG.
pub(super) fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Random)
}

/// HKDF-SHA256(salt, ikm, info), 32 bytes of output.
pub(super) fn derive_subkey(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
    if hkdf.expand(info, okm.as_mut()).is_err() {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    okm
}

/// An HMAC-SHA256 keyed with a 32-byte key. HMAC zero-pads keys shorter than its 64-byte
/// block, so padding here is the standard construction and cannot fail.
pub(super) fn hmac_with_key(key: &[u8; 32]) -> HmacSha256 {
    let mut padded = Zeroizing::new([0u8; 64]);
    padded[..32].copy_from_slice(key);
    <HmacSha256 as KeyInit>::new(&(*padded).into())
}

/// An AES-256 key schedule for `key`.
pub(super) fn aes_with_key(key: &[u8; 32]) -> Aes256 {
    <Aes256 as KeyInit>::new(&(*key).into())
}

/// Wraps `secret` under `kek`, bound to `context` (which must be given again to unwrap).
pub fn wrap_key(kek: &Key256, context: &[u8], secret: &Key256) -> Result<WrappedKey, CryptoError> {
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    fill_random(&mut nonce)?;
    wrap_key_with_nonce(kek, context, secret, &nonce)
}

/// [`wrap_key`] with a caller-chosen nonce: only for reproducible test vectors. A nonce must
/// never be reused under one KEK.
#[doc(hidden)]
pub fn wrap_key_with_nonce(
    kek: &Key256,
    context: &[u8],
    secret: &Key256,
    nonce: &[u8; 16],
) -> Result<WrappedKey, CryptoError> {
    let context_len = framed_len(context)?;
    let (enc, mac) = wrap_subkeys(kek);
    let mut ct = Zeroizing::new(*secret.expose_secret());
    Aes256Ctr::new(&(*enc).into(), &(*nonce).into()).apply_keystream(ct.as_mut());
    let tag = wrap_tag(&mac, context_len, context, nonce, ct.as_ref())
        .finalize()
        .into_bytes();
    let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
    out.extend_from_slice(nonce);
    out.extend_from_slice(ct.as_ref());
    out.extend_from_slice(&tag);
    Ok(WrappedKey(out))
}

/// Unwraps; a wrong `kek`, wrong `context` or modified bytes give `CryptoError::Authentication`.
pub fn unwrap_key(
    kek: &Key256,
    context: &[u8],
    wrapped: &WrappedKey,
) -> Result<Key256, CryptoError> {
    let bytes = wrapped.0.as_slice();
    if bytes.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Malformed(format!(
            "a wrapped key must be {WRAPPED_KEY_LEN} bytes, not {}",
            bytes.len()
        )));
    }
    let context_len = framed_len(context)?;
    let (nonce, rest) = bytes.split_at(WRAP_NONCE_LEN);
    let (ct, tag) = rest.split_at(32);
    let (enc, mac) = wrap_subkeys(kek);
    wrap_tag(&mac, context_len, context, nonce, ct)
        .verify_slice(tag)
        .map_err(|_| CryptoError::Authentication("wrapped key: wrong key or context".into()))?;
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(ct);
    let nonce: [u8; WRAP_NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| CryptoError::Malformed("wrapped key nonce has the wrong length".into()))?;
    Aes256Ctr::new(&(*enc).into(), &nonce.into()).apply_keystream(secret.as_mut());
    Ok(Key256::from_array(*secret))
}

fn wrap_subkeys(kek: &Key256) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let ikm = kek.expose_secret();
    (
        derive_subkey(&[], ikm, b"ssefs/v1/wrap-enc"),
        derive_subkey(&[], ikm, b"ssefs/v1/wrap-mac"),
    )
}

/// The context's length as framed in the tag (a u32): longer contexts are refused.
fn framed_len(context: &[u8]) -> Result<u32, CryptoError> {
    u32::try_from(context.len())
        .map_err(|_| CryptoError::Malformed("key wrap context longer than 4 GiB".into()))
}

fn wrap_tag(
    mac_key: &[u8; 32],
    context_len: u32,
    context: &[u8],
    nonce: &[u8],
    ct: &[u8],
) -> HmacSha256 {
    let mut mac = hmac_with_key(mac_key);
    mac.update(WRAP_DOMAIN);
    mac.update(&context_len.to_le_bytes());
    mac.update(context);
    mac.update(nonce);
    mac.update(ct);
    mac
}

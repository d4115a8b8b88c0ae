//! Secret key types (zeroized on drop, no printing `Debug`) and the authenticated,
//! context-bound key wrap used for DEKs, master keys and CMK material.

use super::CryptoError;
use aes::Aes256;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Bytes in a wrapped key: 16-byte nonce, 32-byte ciphertext, 32-byte tag.
const WRAPPED_LEN: usize = 16 + 32 + 32;
const WRAP_ENC_INFO: &[u8] = b"ssefs/v1/wrap-enc";
const WRAP_MAC_INFO: &[u8] = b"ssefs/v1/wrap-mac";
const WRAP_TAG_LABEL: &[u8] = b"ssefs/wrap/v1";

/// A 256-bit secret. Zeroized on drop; `Debug` prints only a placeholder.
pub struct Key256 {
    bytes: zeroize::Zeroizing<[u8; 32]>,
}

impl Key256 {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| CryptoError::Random)?;
        Ok(Self { bytes })
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| {
            CryptoError::Malformed(format!("a key is 32 bytes, not {}", bytes.len()))
        })?;
        Ok(Self {
            bytes: Zeroizing::new(array),
        })
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
    let (enc, mac) = wrap_subkeys(kek)?;
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut ct = *secret.expose_secret();
    Ctr128BE::<Aes256>::new(&(*enc).into(), &nonce.into()).apply_keystream(&mut ct);
    let tag = wrap_tag(&mac, context, &nonce, &ct)?
        .finalize()
        .into_bytes();
    let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
    wrapped.extend_from_slice(&nonce);
    wrapped.extend_from_slice(&ct);
    wrapped.extend_from_slice(&tag);
    Ok(WrappedKey(wrapped))
}

/// Unwraps; a wrong `kek`, wrong `context` or modified bytes give `CryptoError::Authentication`.
pub fn unwrap_key(
    kek: &Key256,
    context: &[u8],
    wrapped: &WrappedKey,
) -> Result<Key256, CryptoError> {
    if wrapped.0.len() != WRAPPED_LEN {
        return Err(CryptoError::Malformed(format!(
            "a wrapped key is {WRAPPED_LEN} bytes, not {}",
            wrapped.0.len()
        )));
    }
    let (nonce, rest) = wrapped.0.split_at(16);
    let (ct, tag) = rest.split_at(32);
    let (enc, mac) = wrap_subkeys(kek)?;
    wrap_tag(&mac, context, nonce, ct)?
        .verify_slice(tag)
        .map_err(|_| CryptoError::Authentication("wrapped key".into()))?;
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(ct);
    let nonce: [u8; 16] = nonce
        .try_into()
        .map_err(|_| CryptoError::Malformed("wrapped key nonce".into()))?;
    Ctr128BE::<Aes256>::new(&(*enc).into(), &nonce.into()).apply_keystream(secret.as_mut_slice());
    Key256::from_bytes(secret.as_slice())
}

/// A 256-bit subkey, zeroized on drop.
type Subkey = Zeroizing<[u8; 32]>;

/// The wrap encryption and MAC subkeys: HKDF-SHA256 (empty salt) of the KEK.
fn wrap_subkeys(kek: &Key256) -> Result<(Subkey, Subkey), CryptoError> {
    let hkdf = Hkdf::<Sha256>::new(Some(&[]), kek.expose_secret());
    let mut enc = Zeroizing::new([0u8; 32]);
    let mut mac = Zeroizing::new([0u8; 32]);
    hkdf.expand(WRAP_ENC_INFO, enc.as_mut_slice())
        .and_then(|()| hkdf.expand(WRAP_MAC_INFO, mac.as_mut_slice()))
        .map_err(|_| CryptoError::Malformed("HKDF output length".into()))?;
    Ok((enc, mac))
}

/// HMAC-SHA256 over "ssefs/wrap/v1" ‖ u32-LE len(context) ‖ context ‖ nonce ‖ ciphertext.
fn wrap_tag(
    mac_key: &[u8; 32],
    context: &[u8],
    nonce: &[u8],
    ct: &[u8],
) -> Result<Hmac<Sha256>, CryptoError> {
    let context_len = u32::try_from(context.len())
        .map_err(|_| CryptoError::Malformed("wrap context longer than 4 GiB".into()))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(mac_key)
        .map_err(|_| CryptoError::Malformed("HMAC key length".into()))?;
    mac.update(WRAP_TAG_LABEL);
    mac.update(&context_len.to_le_bytes());
    mac.update(context);
    mac.update(nonce);
    mac.update(ct);
    Ok(mac)
}

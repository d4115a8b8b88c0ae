//! Identifiers and check values the keystore records: the random store id, CMK ids, the
//! root-key check and the CMK material check. Public values only; no secret leaves here.

use super::KeystoreError;
use crate::crypto::{CryptoError, Key256};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The root check of a sealed keystore (schema with row seals and later).
const ROOT_CHECK_INFO: &[u8] = b"ssefs/v2/root-check";
/// The root check of a keystore written before the seal: accepted once, at the open that
/// seals it, and then replaced (so deleting the seal cannot pass for "not sealed yet").
const LEGACY_ROOT_CHECK_INFO: &[u8] = b"ssefs/v1/root-check";
const MATERIAL_CHECK_INFO: &[u8] = b"ssefs/v1/material-check";

/// The random 128-bit id of a store, recorded in its keystore; readable without the root key.
/// Shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreId([u8; 16]);

impl StoreId {
    pub fn generate() -> Result<Self, KeystoreError> {
        Ok(Self(random_bytes()?))
    }
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    /// Parses 32 lowercase hex digits.
    pub fn parse(hex: &str) -> Option<Self> {
        if hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        (Self(bytes).to_string() == hex).then_some(Self(bytes))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreId({self})")
    }
}

/// A new CMK id: a random UUID (version 4 layout), e.g. `0f8e2c1a-93b4-4d6e-a1f0-5c7d9e3b2a14`.
pub(super) fn new_key_id() -> Result<String, KeystoreError> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// `HMAC-SHA256(HKDF-SHA256(root key, info "ssefs/v1/root-check"), store id bytes)`.
pub(super) fn root_check(root_key: &Key256, store_id: &StoreId) -> Result<Vec<u8>, KeystoreError> {
    Ok(keyed_check(root_key, ROOT_CHECK_INFO, store_id.as_bytes())?
        .finalize()
        .into_bytes()
        .to_vec())
}

/// Compares a recorded root check with the one `root_key` gives, in constant time.
/// Which root check a keystore records, once it matched the root key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RootCheck {
    /// The keystore is sealed: its seal must hold.
    Sealed,
    /// Written before the seal: sealed (and its wraps moved forward) at this open.
    Legacy,
}

pub(super) fn verify_root_check(
    root_key: &Key256,
    store_id: &StoreId,
    recorded: &[u8],
) -> Result<RootCheck, KeystoreError> {
    if keyed_check(root_key, ROOT_CHECK_INFO, store_id.as_bytes())?
        .verify_slice(recorded)
        .is_ok()
    {
        return Ok(RootCheck::Sealed);
    }
    keyed_check(root_key, LEGACY_ROOT_CHECK_INFO, store_id.as_bytes())?
        .verify_slice(recorded)
        .map(|()| RootCheck::Legacy)
        .map_err(|_| KeystoreError::WrongRootKey)
}

/// The root check a keystore written before the seal recorded (to build old keystores).
pub(super) fn legacy_root_check(
    root_key: &Key256,
    store_id: &StoreId,
) -> Result<Vec<u8>, KeystoreError> {
    Ok(
        keyed_check(root_key, LEGACY_ROOT_CHECK_INFO, store_id.as_bytes())?
            .finalize()
            .into_bytes()
            .to_vec(),
    )
}

/// `HMAC-SHA256(HKDF-SHA256(material, info "ssefs/v1/material-check"), key id)`: recognises
/// the same material when it is imported again, without revealing it.
pub(super) fn material_check(material: &Key256, key_id: &str) -> Result<Vec<u8>, KeystoreError> {
    Ok(
        keyed_check(material, MATERIAL_CHECK_INFO, key_id.as_bytes())?
            .finalize()
            .into_bytes()
            .to_vec(),
    )
}

/// Whether `material` is the material whose check `recorded` is, compared in constant time.
pub(super) fn material_matches(
    material: &Key256,
    key_id: &str,
    recorded: &[u8],
) -> Result<bool, KeystoreError> {
    Ok(
        keyed_check(material, MATERIAL_CHECK_INFO, key_id.as_bytes())?
            .verify_slice(recorded)
            .is_ok(),
    )
}

/// A fresh random import token: 32 lowercase hex digits (128 bits).
pub(super) fn new_import_token() -> Result<String, KeystoreError> {
    let bytes: [u8; 16] = random_bytes()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// 32 random bytes from the operating system, for seeds.
pub(super) fn random_seed() -> Result<zeroize::Zeroizing<[u8; 32]>, KeystoreError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|_| CryptoError::Random)?;
    Ok(seed)
}

fn keyed_check(key: &Key256, info: &[u8], message: &[u8]) -> Result<Hmac<Sha256>, KeystoreError> {
    let mut subkey = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&[]), key.expose_secret())
        .expand(info, subkey.as_mut_slice())
        .map_err(|_| CryptoError::Malformed("HKDF output length".into()))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(subkey.as_slice())
        .map_err(|_| CryptoError::Malformed("HMAC key length".into()))?;
    mac.update(message);
    Ok(mac)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeystoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_id_hex_round_trips_and_rejects_bad_text() {
        let id = StoreId::generate().unwrap();
        let hex = id.to_string();
        assert_eq!(hex.len(), 32);
        assert_eq!(StoreId::parse(&hex), Some(id));
        let fixed = StoreId::from_bytes([0xab; 16]);
        assert_eq!(fixed.to_string(), "ab".repeat(16));
        assert_eq!(StoreId::parse(&"AB".repeat(16)), None);
        assert_eq!(StoreId::parse("abc"), None);
        assert_eq!(StoreId::parse(&"g".repeat(32)), None);
        assert_eq!(StoreId::parse(&"é".repeat(16)), None);
    }

    #[test]
    fn key_ids_look_like_uuids_and_differ() {
        let a = new_key_id().unwrap();
        let b = new_key_id().unwrap();
        assert_ne!(a, b);
        let parts: Vec<_> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn root_check_depends_on_key_and_store() {
        let k1 = Key256::generate().unwrap();
        let k2 = Key256::generate().unwrap();
        let s1 = StoreId::generate().unwrap();
        let s2 = StoreId::generate().unwrap();
        let c = root_check(&k1, &s1).unwrap();
        verify_root_check(&k1, &s1, &c).unwrap();
        assert!(matches!(
            verify_root_check(&k2, &s1, &c),
            Err(KeystoreError::WrongRootKey)
        ));
        assert!(matches!(
            verify_root_check(&k1, &s2, &c),
            Err(KeystoreError::WrongRootKey)
        ));
        assert!(matches!(
            verify_root_check(&k1, &s1, &c[..31]),
            Err(KeystoreError::WrongRootKey)
        ));
    }
}

//! Sealing and opening one block: the per-object block keys (AES-256-CTR and HMAC-SHA256,
//! derived once from the DEK, the file ID and, from version 2, the store key), the 56-byte
//! slot and its encoding in format versions 1 and 2.
//! Knows nothing of where slots and pages sit in the backing file (that is `layout`).

use super::header::object_subkey;
use super::keys::{HmacSha256, StoreKey, aes_with_key, hmac_with_key};
use super::layout::{FORMAT_V1, key_schedule};
use super::layout::{SLOT_LEN, SLOT_PAIR_LEN};
use super::{CryptoError, Key256};
use aes::Aes256;
use aes::cipher::{InnerIvInit, StreamCipher, StreamCipherCoreWrapper};
use hmac::Mac;

const BLOCK_DOMAIN_V1: &[u8] = b"ssefs/block/v1";
const BLOCK_DOMAIN_V2: &[u8] = b"ssefs/block/v2";
/// Random IV bytes of a version 2 slot; the last 4 bytes of the counter block start at 0.
pub const IV_LEN_V2: usize = 12;

type CtrOverRef<'a> = StreamCipherCoreWrapper<ctr::CtrCore<&'a Aes256, ctr::flavors::Ctr128BE>>;

/// One slot: which generation of a block it describes, how many bytes, its IV and tag.
/// Version 1: `gen u32 | len u32 | iv [16] | tag [32]`; version 2: `gen u64 | len u32 |
/// iv [12] | tag [32]`, whose IV is kept here with 4 zero bytes after it (the initial counter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub generation: u64,
    pub len: u32,
    pub iv: [u8; 16],
    pub tag: [u8; 32],
}

impl Slot {
    /// Decodes a slot of format `version` from the first 56 bytes of `bytes` (missing bytes
    /// read as zeros).
    pub fn decode(bytes: &[u8], version: u16) -> Self {
        let mut raw = [0u8; SLOT_LEN];
        let n = bytes.len().min(SLOT_LEN);
        raw[..n].copy_from_slice(&bytes[..n]);
        let mut iv = [0u8; 16];
        let mut tag = [0u8; 32];
        tag.copy_from_slice(&raw[24..56]);
        let le = |r: &[u8]| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(r);
            u64::from_le_bytes(b)
        };
        if version == FORMAT_V1 {
            iv.copy_from_slice(&raw[8..24]);
            Self {
                generation: le(&raw[0..4]),
                len: le(&raw[4..8]) as u32,
                iv,
                tag,
            }
        } else {
            iv[..IV_LEN_V2].copy_from_slice(&raw[12..24]);
            Self {
                generation: le(&raw[0..8]),
                len: le(&raw[8..12]) as u32,
                iv,
                tag,
            }
        }
    }

    /// The 56 on-disk bytes of this slot in format `version`.
    pub fn encode(&self, version: u16) -> [u8; SLOT_LEN] {
        let mut raw = [0u8; SLOT_LEN];
        if version == FORMAT_V1 {
            raw[0..4].copy_from_slice(&(self.generation as u32).to_le_bytes());
            raw[4..8].copy_from_slice(&self.len.to_le_bytes());
            raw[8..24].copy_from_slice(&self.iv);
        } else {
            raw[0..8].copy_from_slice(&self.generation.to_le_bytes());
            raw[8..12].copy_from_slice(&self.len.to_le_bytes());
            raw[12..24].copy_from_slice(&self.iv[..IV_LEN_V2]);
        }
        raw[24..56].copy_from_slice(&self.tag);
        raw
    }
}

/// Slot A and slot B of one block, as read from its meta page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotPair(pub [Slot; 2]);

impl SlotPair {
    /// Decodes a slot pair from up to 112 bytes (a meta page cut by the end of file reads as
    /// zeros, i.e. never written).
    pub fn decode(bytes: &[u8], version: u16) -> Self {
        let a = Slot::decode(bytes, version);
        let b = Slot::decode(
            bytes
                .get(SLOT_LEN..SLOT_PAIR_LEN.min(bytes.len()))
                .unwrap_or(&[]),
            version,
        );
        Self([a, b])
    }
    /// True when neither slot was ever written.
    pub fn is_empty(&self) -> bool {
        self.0[0].generation == 0 && self.0[1].generation == 0
    }
    /// Slot indexes with a non-zero generation, highest generation first.
    pub fn candidates(&self) -> impl Iterator<Item = usize> + '_ {
        let first = usize::from(self.0[1].generation > self.0[0].generation);
        [first, 1 - first]
            .into_iter()
            .filter(|&i| self.0[i].generation > 0)
    }
}

/// The block keys of one object: `K_enc` as an AES-256 key schedule (absent for algorithm
/// `none`, whose blocks are stored in clear) and `K_mac` as a keyed HMAC state that already
/// absorbed the tag prefix common to every block of the object.
#[doc(hidden)]
#[derive(Clone)]
pub struct BlockCipher {
    version: u16,
    aes: Option<Aes256>,
    mac_prefix: HmacSha256,
}

impl BlockCipher {
    /// Derives the block keys of a format `version` object from its DEK, file ID and (from
    /// version 2) the store key. `encrypt` is false for algorithm `none` (the tag is still
    /// computed, with the all-zero DEK, and from version 2 under the store key).
    pub fn new(
        version: u16,
        dek: &Key256,
        store: &StoreKey,
        file_id: &[u8; 16],
        encrypt: bool,
    ) -> Self {
        let version = key_schedule(version);
        let aes = encrypt
            .then(|| aes_with_key(&object_subkey(version, dek, store, file_id, "block-enc")));
        let mut mac_prefix =
            hmac_with_key(&object_subkey(version, dek, store, file_id, "block-mac"));
        mac_prefix.update(if version == FORMAT_V1 {
            BLOCK_DOMAIN_V1
        } else {
            BLOCK_DOMAIN_V2
        });
        mac_prefix.update(&version.to_le_bytes());
        mac_prefix.update(file_id);
        Self {
            version,
            aes,
            mac_prefix,
        }
    }

    /// Encrypts `data` (one block's `len` bytes) in place under `iv` and returns its slot.
    /// A version 2 IV keeps only its first 12 bytes (the rest of the counter block is zero).
    pub fn seal(&self, block: u64, generation: u64, iv: &[u8; 16], data: &mut [u8]) -> Slot {
        let mut iv = *iv;
        if self.version != FORMAT_V1 {
            iv[IV_LEN_V2..].fill(0);
        }
        let iv = &iv;
        self.apply_keystream(iv, data);
        let len = data.len() as u32;
        let tag = self
            .tag(block, generation, len, iv, data)
            .finalize()
            .into_bytes();
        let mut slot = Slot {
            generation,
            len,
            iv: *iv,
            tag: [0u8; 32],
        };
        slot.tag.copy_from_slice(&tag);
        slot
    }

    /// True when `slot` authenticates `ct` (exactly `slot.len` bytes) as block `block`.
    pub fn authenticates(&self, block: u64, slot: &Slot, ct: &[u8]) -> bool {
        if ct.len() != slot.len as usize {
            return false;
        }
        self.tag(block, slot.generation, slot.len, &slot.iv, ct)
            .verify_slice(&slot.tag)
            .is_ok()
    }

    /// Decrypts authenticated ciphertext in place.
    pub fn decrypt(&self, slot: &Slot, data: &mut [u8]) {
        self.apply_keystream(&slot.iv, data);
    }

    /// Opens one block for a test vector or a benchmark: verifies `slot` over
    /// `data[..slot.len]`, then decrypts it in place and returns its length.
    pub fn open(&self, block: u64, slot: &Slot, data: &mut [u8]) -> Result<usize, CryptoError> {
        let len = slot.len as usize;
        let ct = data.get_mut(..len).ok_or_else(|| {
            CryptoError::Authentication(format!("block {block}: data page is short"))
        })?;
        if !self.authenticates(block, slot, ct) {
            return Err(CryptoError::Authentication(format!(
                "block {block}: tag does not verify"
            )));
        }
        self.decrypt(slot, ct);
        Ok(len)
    }

    fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        if let Some(aes) = &self.aes {
            let core =
                ctr::CtrCore::<&Aes256, ctr::flavors::Ctr128BE>::inner_iv_init(aes, &(*iv).into());
            let mut ctr: CtrOverRef<'_> = StreamCipherCoreWrapper::from_core(core);
            ctr.apply_keystream(data);
        }
    }

    fn tag(&self, block: u64, generation: u64, len: u32, iv: &[u8; 16], ct: &[u8]) -> HmacSha256 {
        let mut mac = self.mac_prefix.clone();
        mac.update(&block.to_le_bytes());
        if self.version == FORMAT_V1 {
            mac.update(&(generation as u32).to_le_bytes());
            mac.update(&len.to_le_bytes());
            mac.update(iv);
        } else {
            mac.update(&generation.to_le_bytes());
            mac.update(&len.to_le_bytes());
            mac.update(&iv[..IV_LEN_V2]);
        }
        mac.update(ct);
        mac
    }
}

impl std::fmt::Debug for BlockCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockCipher(<redacted>)")
    }
}

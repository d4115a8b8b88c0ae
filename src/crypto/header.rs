//! The object header record (at most 512 bytes at offset 0): the types it describes
//! (algorithm, key reference), its encoding in format versions 1 and 2, a parser that rejects
//! every malformed input without panicking, the header tag and the DEK wrap context.
//! Works on byte slices only; reading and writing the backing file is `object`'s job.

use super::keys::{HmacSha256, StoreKey, WRAPPED_KEY_LEN, derive_subkey, hmac_with_key};
use super::layout::{FORMAT_V1, FORMAT_V2, FORMAT_VERSION, Layout, MAX_OBJECT_SIZE, key_schedule};
use super::{CryptoError, Key256, WrappedKey};
use hmac::Mac;
use zeroize::Zeroizing;

/// The most bytes a header record may take; page 0 beyond the record is zero.
pub const HEADER_MAX_LEN: usize = 512;
const MAGIC: &[u8; 8] = b"ssefsOBJ";
const HEADER_DOMAIN_V1: &[u8] = b"ssefs/header/v1";
const HEADER_DOMAIN_V2: &[u8] = b"ssefs/header/v2";
const HEADER_DOMAIN_V3: &[u8] = b"ssefs/header/v3";
const DEK_DOMAIN_V1: &[u8] = b"ssefs/dek/v1";
const DEK_DOMAIN_V2: &[u8] = b"ssefs/dek/v2";
const TAG_LEN: usize = 32;

/// Flag bit 0: a write session is open, or was interrupted by a crash.
pub const FLAG_DIRTY: u8 = 1;
/// Flag bit 1: blocks with no slot written read as zeros.
pub const FLAG_SPARSE: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_DIRTY | FLAG_SPARSE;

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

/// A complete header: what [`HeaderInfo`] shows plus flags, sequence number, wrapped DEK and
/// the version 2 fields (all zero in a version 1 header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub info: HeaderInfo,
    pub flags: u8,
    pub seq: u64,
    pub wrapped_dek: Option<WrappedKey>,
    /// The store the object belongs to.
    pub store_id: [u8; 16],
    /// Every block generation ever used in this object is at most this.
    pub gen_limit: u64,
    /// Blocks from `cut_block` on were cut by the last size decrease, when every generation
    /// used so far was at most `cut_gen`: a slot there with `gen <= cut_gen` is stale.
    pub cut_block: u64,
    pub cut_gen: u64,
    /// Version 3: the root of the object's block map (every meta page) when it was last
    /// written; checked when the object is opened clean. Zero in older versions.
    pub root: [u8; 32],
}

/// A parsed but unauthenticated header and the length of its record without the tag.
pub struct ParsedHeader {
    pub header: Header,
    body_len: usize,
}

impl Header {
    pub fn is_dirty(&self) -> bool {
        self.flags & FLAG_DIRTY != 0
    }
    pub fn is_sparse(&self) -> bool {
        self.flags & FLAG_SPARSE != 0
    }

    /// The record (body and tag) in a zero-padded 512-byte buffer, and the record length.
    pub fn encode(
        &self,
        header_mac: &HmacSha256,
    ) -> Result<([u8; HEADER_MAX_LEN], usize), CryptoError> {
        let mut out = [0u8; HEADER_MAX_LEN];
        let body_len = self.encode_body(&mut out)?;
        let tag = header_tag(self.info.version, header_mac, &out[..body_len]);
        let end = body_len + TAG_LEN;
        out[body_len..end].copy_from_slice(&tag);
        Ok((out, end))
    }

    fn encode_body(&self, out: &mut [u8; HEADER_MAX_LEN]) -> Result<usize, CryptoError> {
        let info = &self.info;
        let (key_id, key_version) = key_fields(&info.key_ref);
        let n = key_id_len(&info.key_ref)?;
        let wrapped: &[u8] = self.wrapped_dek.as_ref().map_or(&[], |w| w.0.as_slice());
        check_key_ref(info.algorithm, &info.key_ref)?;
        check_wrapped_len(info.algorithm, wrapped.len())?;
        let mut w = Writer { out, at: 0 };
        w.put(MAGIC);
        w.put(&info.version.to_le_bytes());
        w.put(&[algorithm_byte(info.algorithm), self.flags]);
        w.put(&info.block_size.to_le_bytes());
        w.put(&info.file_id);
        match info.version {
            FORMAT_V1 => {}
            FORMAT_V2 | FORMAT_VERSION => w.put(&self.store_id),
            other => return Err(CryptoError::UnsupportedVersion(other)),
        }
        w.put(&self.seq.to_le_bytes());
        w.put(&info.size.to_le_bytes());
        if info.version != FORMAT_V1 {
            w.put(&self.gen_limit.to_le_bytes());
            w.put(&self.cut_block.to_le_bytes());
            w.put(&self.cut_gen.to_le_bytes());
        }
        if info.version == FORMAT_VERSION {
            w.put(&self.root);
        }
        w.put(&[kind_byte(&info.key_ref)]);
        w.put(&key_version.to_le_bytes());
        w.put(&[n]);
        w.put(key_id);
        w.put(&(wrapped.len() as u16).to_le_bytes());
        w.put(wrapped);
        Ok(w.at)
    }
}

/// Writes fields one after another into the 512-byte record (every record fits: at most
/// 160 + 255 + 80 + 32 bytes).
struct Writer<'a> {
    out: &'a mut [u8; HEADER_MAX_LEN],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

impl ParsedHeader {
    /// Parses a header record from the start of `bytes` (page 0, or a prefix of it).
    /// Never panics; checks structure only (see [`ParsedHeader::authenticate`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes = &bytes[..bytes.len().min(HEADER_MAX_LEN)];
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(CryptoError::NotAnObject);
        }
        let mut reader = Reader { bytes, at: 8 };
        let version = reader.u16()?;
        if !matches!(version, FORMAT_V1 | FORMAT_V2 | FORMAT_VERSION) {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        let algorithm = parse_algorithm(reader.u8()?)?;
        let flags = reader.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(malformed(format!("unknown header flags {flags:#04x}")));
        }
        let block_size = reader.u32()?;
        Layout::new(block_size)?;
        let file_id: [u8; 16] = reader.array()?;
        let store_id: [u8; 16] = match version {
            FORMAT_V1 => [0; 16],
            _ => reader.array()?,
        };
        let seq = reader.u64()?;
        let size = reader.u64()?;
        if size > MAX_OBJECT_SIZE {
            return Err(malformed(format!("size {size} exceeds the largest object")));
        }
        let (gen_limit, cut_block, cut_gen) = match version {
            FORMAT_V1 => (0, 0, 0),
            _ => (reader.u64()?, reader.u64()?, reader.u64()?),
        };
        let root: [u8; 32] = match version {
            FORMAT_VERSION => reader.array()?,
            _ => [0; 32],
        };
        let kind = reader.u8()?;
        let key_version = reader.u32()?;
        let n = usize::from(reader.u8()?);
        let key_id = reader.take(n)?;
        let key_ref = parse_key_ref(kind, key_version, key_id)?;
        check_key_ref(algorithm, &key_ref)?;
        let w = usize::from(reader.u16()?);
        check_wrapped_len(algorithm, w)?;
        let wrapped = reader.take(w)?;
        let body_len = reader.at;
        reader.take(TAG_LEN)?;
        let header = Header {
            info: HeaderInfo {
                version,
                algorithm,
                key_ref,
                block_size,
                file_id,
                size,
            },
            flags,
            seq,
            wrapped_dek: (w > 0).then(|| WrappedKey(wrapped.to_vec())),
            store_id,
            gen_limit,
            cut_block,
            cut_gen,
            root,
        };
        Ok(Self { header, body_len })
    }

    /// Checks the header tag of the record in `bytes` (the same bytes given to `parse`).
    pub fn authenticate(
        self,
        bytes: &[u8],
        header_mac: &HmacSha256,
    ) -> Result<Header, CryptoError> {
        let body = bytes
            .get(..self.body_len)
            .ok_or_else(|| malformed("header is truncated".into()))?;
        let tag = bytes
            .get(self.body_len..self.body_len + TAG_LEN)
            .ok_or_else(|| malformed("header is truncated".into()))?;
        let mut mac = header_mac.clone();
        mac.update(header_domain(self.header.info.version));
        mac.update(body);
        mac.verify_slice(tag)
            .map_err(|_| CryptoError::Authentication("header tag does not verify".into()))?;
        Ok(self.header)
    }
}

/// The context a DEK is wrapped under. Version 2: `"ssefs/dek/v2" ‖ u8 16 ‖ store id ‖
/// algorithm ‖ kind ‖ key version u32 ‖ n u8 ‖ key id ‖ file ID`; version 1 has no store id
/// (and `v1` in the label). A wrapped DEK only unwraps in its own store, object and label.
#[doc(hidden)]
pub fn dek_context(
    version: u16,
    store_id: &[u8; 16],
    algorithm: Algorithm,
    key_ref: &KeyRef,
    file_id: &[u8; 16],
) -> Result<Vec<u8>, CryptoError> {
    let (key_id, key_version) = key_fields(key_ref);
    let n = key_id_len(key_ref)?;
    let mut context = Vec::with_capacity(DEK_DOMAIN_V2.len() + 24 + key_id.len() + 16);
    if version > FORMAT_VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    match key_schedule(version) {
        FORMAT_V1 => context.extend_from_slice(DEK_DOMAIN_V1),
        FORMAT_V2 => {
            context.extend_from_slice(DEK_DOMAIN_V2);
            context.push(store_id.len() as u8);
            context.extend_from_slice(store_id);
        }
        other => return Err(CryptoError::UnsupportedVersion(other)),
    }
    context.push(algorithm_byte(algorithm));
    context.push(kind_byte(key_ref));
    context.extend_from_slice(&key_version.to_le_bytes());
    context.push(n);
    context.extend_from_slice(key_id);
    context.extend_from_slice(file_id);
    Ok(context)
}

/// The keyed header MAC of an object. Version 2: `K_hdr = HKDF(file ID, DEK ‖ K_store,
/// "ssefs/v2/header-mac")`, so only this store's keystore can forge a header (`none` objects
/// too); version 1: `HKDF(file ID, DEK, "ssefs/v1/header-mac")`.
pub fn header_mac(version: u16, dek: &Key256, store: &StoreKey, file_id: &[u8; 16]) -> HmacSha256 {
    hmac_with_key(&object_subkey(version, dek, store, file_id, "header-mac"))
}

/// `HKDF(file ID, ikm, "ssefs/vN/" ‖ name)` with `ikm = DEK ‖ K_store` for versions 2 and 3
/// (both `N = 2`: version 3 keeps version 2's keys) and `DEK` for version 1.
pub fn object_subkey(
    version: u16,
    dek: &Key256,
    store: &StoreKey,
    file_id: &[u8; 16],
    name: &str,
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(dek.expose_secret());
    let version = key_schedule(version);
    let ikm: &[u8] = if version == FORMAT_V1 {
        &ikm[..32]
    } else {
        ikm[32..].copy_from_slice(store.auth_key().expose_secret());
        &ikm[..]
    };
    let info = format!("ssefs/v{version}/{name}");
    derive_subkey(file_id, ikm, info.as_bytes())
}

/// Checks that `algorithm` and `key_ref` belong together (none-none, AES256-master, KMS-CMK)
/// and that a CMK key id has 1..=255 bytes.
pub fn check_key_ref(algorithm: Algorithm, key_ref: &KeyRef) -> Result<(), CryptoError> {
    let matches = matches!(
        (algorithm, key_ref),
        (Algorithm::None, KeyRef::None)
            | (Algorithm::Aes256, KeyRef::Master { .. })
            | (Algorithm::Kms, KeyRef::Cmk { .. })
    );
    if !matches {
        return Err(malformed(format!(
            "algorithm {algorithm:?} cannot use key reference {}",
            kind_name(key_ref)
        )));
    }
    key_id_len(key_ref).map(|_| ())
}

fn header_domain(version: u16) -> &'static [u8] {
    match version {
        FORMAT_V1 => HEADER_DOMAIN_V1,
        FORMAT_V2 => HEADER_DOMAIN_V2,
        _ => HEADER_DOMAIN_V3,
    }
}

fn header_tag(version: u16, header_mac: &HmacSha256, body: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = header_mac.clone();
    mac.update(header_domain(version));
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn key_fields(key_ref: &KeyRef) -> (&[u8], u32) {
    match key_ref {
        KeyRef::None => (&[], 0),
        KeyRef::Master { version } => (&[], *version),
        KeyRef::Cmk { key_id, version } => (key_id.as_bytes(), *version),
    }
}

fn key_id_len(key_ref: &KeyRef) -> Result<u8, CryptoError> {
    let (key_id, _) = key_fields(key_ref);
    match key_ref {
        KeyRef::Cmk { .. } if key_id.is_empty() || key_id.len() > 255 => Err(malformed(format!(
            "a CMK key id must have 1 to 255 bytes, not {}",
            key_id.len()
        ))),
        _ => Ok(key_id.len() as u8),
    }
}

fn check_wrapped_len(algorithm: Algorithm, len: usize) -> Result<(), CryptoError> {
    let expected = match algorithm {
        Algorithm::None => 0,
        Algorithm::Aes256 | Algorithm::Kms => WRAPPED_KEY_LEN,
    };
    if len != expected {
        return Err(malformed(format!(
            "wrapped DEK of {len} bytes where {algorithm:?} needs {expected}"
        )));
    }
    Ok(())
}

fn algorithm_byte(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::None => 0,
        Algorithm::Aes256 => 1,
        Algorithm::Kms => 2,
    }
}

fn parse_algorithm(byte: u8) -> Result<Algorithm, CryptoError> {
    match byte {
        0 => Ok(Algorithm::None),
        1 => Ok(Algorithm::Aes256),
        2 => Ok(Algorithm::Kms),
        other => Err(malformed(format!("unknown algorithm {other}"))),
    }
}

fn kind_byte(key_ref: &KeyRef) -> u8 {
    match key_ref {
        KeyRef::None => 0,
        KeyRef::Master { .. } => 1,
        KeyRef::Cmk { .. } => 2,
    }
}

fn kind_name(key_ref: &KeyRef) -> &'static str {
    match key_ref {
        KeyRef::None => "none",
        KeyRef::Master { .. } => "master key",
        KeyRef::Cmk { .. } => "CMK",
    }
}

fn parse_key_ref(kind: u8, version: u32, key_id: &[u8]) -> Result<KeyRef, CryptoError> {
    let key_ref = match kind {
        0 if version != 0 => return Err(malformed("key version without a key".into())),
        0 => KeyRef::None,
        1 => KeyRef::Master { version },
        2 => {
            let key_id =
                std::str::from_utf8(key_id).map_err(|_| malformed("key id is not UTF-8".into()))?;
            KeyRef::Cmk {
                key_id: key_id.to_owned(),
                version,
            }
        }
        other => return Err(malformed(format!("unknown key reference kind {other}"))),
    };
    if kind != 2 && !key_id.is_empty() {
        return Err(malformed("key id given for a key that is not a CMK".into()));
    }
    Ok(key_ref)
}

fn malformed(message: String) -> CryptoError {
    CryptoError::Malformed(message)
}

/// A bounds-checked cursor over the header bytes: running past the end is `Malformed`.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CryptoError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| malformed("header is truncated".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CryptoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, CryptoError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, CryptoError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, CryptoError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, CryptoError> {
        self.array().map(u64::from_le_bytes)
    }
}

//! An encrypted object over any random-access byte store ([`ObjectIo`]): open and create,
//! read/write at any offset, truncate, commit, rewrap, verify; the dual-slot write order that
//! keeps every block readable across a process kill. No paths, no key lookup: the caller
//! passes the key-encryption key named by the header.

use super::active::NewestActive;
use super::block::{BlockCipher, Slot, SlotPair};
use super::header::object_subkey;
use super::header::{Algorithm, HeaderInfo, KeyRef};
use super::header::{
    FLAG_DIRTY, FLAG_SPARSE, HEADER_MAX_LEN, Header, ParsedHeader, check_key_ref, dek_context,
    header_mac,
};
use super::keys::hmac_with_key;
use super::keys::{HmacSha256, StoreKey, fill_random, wrap_key, wrap_key_with_nonce};
use super::layout::{
    FORMAT_V1, FORMAT_V2, FORMAT_VERSION, GROUP_TAG_LEN, Layout, MAX_OBJECT_SIZE, SLOT_LEN,
    SLOT_PAIR_LEN,
};
use super::parallel::{disjoint_mut, run_split};
use super::{CryptoError, Key256, ObjectIo, WrappedKey, unwrap_key};
use hmac::Mac;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::io;
use std::sync::OnceLock;

/// Plaintext bytes per block unless the header says otherwise.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Plaintext bytes moved per backing read or write of a large request.
const CHUNK_BYTES: u64 = 1 << 20;
/// Generations reserved by one header write: the header records the highest generation a
/// block may use, so a write session pays one header write per this many block writes.
const GENERATION_RESERVE: u64 = 1 << 16;
/// Meta pages whose reading ahead is asked for at once while the block map is built.
const MAP_READ_BATCH: u64 = 256;
/// Domain of the digest of one meta page in the block map.
const META_DOMAIN: &[u8] = b"ssefs/meta/v3";
/// Domain of the root of the block map in a version 3 header.
const ROOT_DOMAIN: &[u8] = b"ssefs/root/v3";

/// `SHA-256("ssefs/meta/v3" ‖ page)`: the digest of one whole meta page (slot pairs, group tag
/// and padding; an unwritten group or one past the end of the file is `P` zero bytes).
type MetaDigest = [u8; 32];

fn meta_digest(page: &[u8]) -> MetaDigest {
    let mut hash = Sha256::new();
    hash.update(META_DOMAIN);
    hash.update(page);
    hash.finalize().into()
}

/// What a full verification of an object found (for `fsck`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    /// Blocks (and meta pages) that fail authentication.
    pub problems: Vec<String>,
    /// The block map does not match the header's root (version 3, clean): a block or group
    /// was put back or erased, or a power loss kept an older page after the header was
    /// written. The blocks are then checked each on its own (`problems`).
    pub block_map: Option<String>,
}

/// Reads and structurally parses the header without any key.
pub fn peek_header(io: &dyn ObjectIo) -> Result<HeaderInfo, CryptoError> {
    let (bytes, n) = read_header_bytes(io)?;
    Ok(ParsedHeader::parse(&bytes[..n])?.header.info)
}

/// Checks that `kek` unwraps the object's DEK in store `store_id` (needs no store key): tells
/// whether a key belongs to an object without authenticating the object.
pub fn check_kek(io: &dyn ObjectIo, store_id: &[u8; 16], kek: &Key256) -> Result<(), CryptoError> {
    let (bytes, n) = read_header_bytes(io)?;
    let header = ParsedHeader::parse(&bytes[..n])?.header;
    let info = &header.info;
    unwrap_dek(
        info.version,
        store_id,
        info.algorithm,
        &info.key_ref,
        Some(kek),
        header.wrapped_dek.as_ref(),
        &info.file_id,
    )
    .map(drop)
}

/// Structurally parses a header record from raw bytes (for fuzzing and diagnostics).
#[doc(hidden)]
pub fn parse_header_bytes(bytes: &[u8]) -> Result<HeaderInfo, CryptoError> {
    Ok(ParsedHeader::parse(bytes)?.header.info)
}

fn read_header_bytes(io: &dyn ObjectIo) -> Result<([u8; HEADER_MAX_LEN], usize), CryptoError> {
    let mut bytes = [0u8; HEADER_MAX_LEN];
    let n = io.read_at(&mut bytes, 0)?;
    Ok((bytes, n))
}

thread_local! {
    /// Ciphertext scratch for `read_at`, reused across calls so reads do not allocate.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where the slot pairs and data pages of blocks `first..=last` sit in a chunk buffer: the
/// first group's slot pairs, then everything from `first`'s data page to `last`'s (which
/// includes the whole meta page of every later group).
#[derive(Clone, Copy)]
struct Chunk {
    layout: Layout,
    first: u64,
    last: u64,
    meta_len: usize,
    /// Body bytes that exist in the backing file (set by `read_chunk`).
    body_read: usize,
}

impl Chunk {
    /// The chunk's meta region is the whole meta page of `first`'s group (its slot pairs and
    /// group tag); later groups' meta pages lie inside the body.
    fn new(layout: Layout, first: u64, last: u64) -> Self {
        let meta_len = layout.block_len();
        Self {
            layout,
            first,
            last,
            meta_len,
            body_read: 0,
        }
    }
    /// Bytes of the body when `last` has `last_len` bytes of data.
    fn body_len(&self, last_len: usize) -> usize {
        (self.layout.data_offset(self.last) - self.layout.data_offset(self.first)) as usize
            + last_len
    }
    fn meta_offset(&self) -> u64 {
        self.layout.meta_page_offset(self.first)
    }
    /// Buffer index of the meta page of block `k`'s group.
    fn meta_page_index(&self, k: u64) -> usize {
        let offset = self.layout.meta_page_offset(k);
        if offset == self.meta_offset() {
            0
        } else {
            self.meta_len + (offset - self.body_offset()) as usize
        }
    }
    fn body_offset(&self) -> u64 {
        self.layout.data_offset(self.first)
    }
    fn slot_index(&self, k: u64) -> usize {
        let slot = self.layout.slot_pair_offset(k);
        if slot < self.body_offset() {
            (slot - self.meta_offset()) as usize
        } else {
            self.meta_len + (slot - self.body_offset()) as usize
        }
    }
    fn data_index(&self, k: u64) -> usize {
        self.meta_len + (self.layout.data_offset(k) - self.body_offset()) as usize
    }
    /// How many bytes of block `k`'s data page exist in the backing file.
    fn data_available(&self, k: u64) -> usize {
        let start = (self.layout.data_offset(k) - self.body_offset()) as usize;
        self.body_read
            .saturating_sub(start)
            .min(self.layout.block_len())
    }
    /// Buffer indexes of the meta pages of the groups after the first one, with their group.
    fn later_meta_pages(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let n = self.layout.blocks_per_group();
        let first_group = self.first / n;
        (first_group + 1..=self.last / n).map(move |g| {
            let offset = self.layout.meta_page_offset(g * n);
            (self.meta_len + (offset - self.body_offset()) as usize, g)
        })
    }
    /// Buffer indexes of every meta page in the chunk, with their group.
    fn meta_pages(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let first_group = self.first / self.layout.blocks_per_group();
        std::iter::once((0, first_group)).chain(self.later_meta_pages())
    }
}

/// One block read and opened on its own: its slots, which one authenticated the data page
/// (`None` for a hole) and how many plaintext bytes it holds (in `Object::page`).
#[derive(Clone, Copy)]
struct LoadedBlock {
    pair: SlotPair,
    active: Option<usize>,
    len: usize,
}

/// One block of a chunk being read: its slots, its data page (opened in place) and what
/// opening it gave.
struct OpenJob<'a> {
    k: u64,
    pair: SlotPair,
    hole_ok: bool,
    data: &'a mut [u8],
    opened: Result<Option<(usize, usize)>, CryptoError>,
}

/// One block of a chunk ready to be sealed: its content is at `data_at..data_at + len` in the
/// chunk buffer, its new slot goes to `slot_at`.
struct PreparedBlock {
    k: u64,
    generation: u64,
    iv: [u8; 16],
    data_at: usize,
    len: usize,
    slot_at: usize,
}

/// One block of a chunk being written: its new content (sealed in place) and the slot that
/// sealing it gives, to be stored at `slot_at` in the chunk buffer.
struct SealJob<'a> {
    k: u64,
    generation: u64,
    iv: [u8; 16],
    data: &'a mut [u8],
    slot_at: usize,
    slot: Slot,
}

/// An open object: the authenticated header, the derived keys and the backing I/O.
pub struct Object<I: ObjectIo> {
    io: I,
    header: Header,
    dek: Key256,
    cipher: BlockCipher,
    header_mac: HmacSha256,
    /// Keyed HMAC state of the group tags (version 2).
    group_mac: HmacSha256,
    layout: Layout,
    /// The header in memory may differ from the one on disk (a header write failed).
    header_unsaved: bool,
    /// Known: no block past the committed size has a slot or data, and the last block holds
    /// no bytes past the committed size. False after opening, until checked or repaired.
    tail_clean: bool,
    /// Blocks written or verified here whose newest slot authenticates the data page.
    newest_active: NewestActive,
    write_buf: Vec<u8>,
    page: Vec<u8>,
    /// One meta page, for reading and rewriting a single group's slots.
    meta: Vec<u8>,
    ivs: Vec<u8>,
    /// Blocks of the current chunk that fill a hole inside the committed size, and their length.
    hole_fills: Vec<(u64, usize)>,
    /// The next block generation to use (version 2: one counter for the whole object, never
    /// reused, always above every generation on disk).
    gen_next: u64,
    /// Only the newest slot of a block may authenticate it: true while this process knows
    /// that every write it started finished (opened clean, no failed write since).
    strict: bool,
    /// A crash or a failed write may have left a block whose newest slot does not verify:
    /// closing repairs such blocks before it clears DIRTY.
    recovering: bool,
    /// The block map (versions 2 and 3): the digest of every group's meta page as this
    /// object last wrote it, built from the backing file on first use. Built from a clean
    /// version 3 object it must match the header's root; every meta page read afterwards must
    /// match its entry, so no group, slot pair or hole can be put back, replayed or erased
    /// while the object is open. Groups past its end are unwritten (all-zero meta pages).
    groups: OnceLock<Vec<MetaDigest>>,
    /// The digest of an all-zero meta page of this block size.
    zero_digest: OnceLock<MetaDigest>,
    /// The last meta page this object wrote, with its group: a page read back unchanged is
    /// known without hashing it again (a write session reads back what it just wrote).
    last_written: std::sync::Mutex<Option<(u64, Vec<u8>)>>,
    /// Keyed HMAC state of the root of the block map (version 3).
    root_mac: HmacSha256,
    /// The block map built from the backing file must match the header's root: the object
    /// was opened clean in version 3 (else the map is taken as found: a version 2 object, or
    /// one whose write session a crash interrupted).
    check_root: bool,
}

impl<I: ObjectIo> Object<I> {
    /// Creates an empty object (size 0) with a fresh DEK and file ID, and writes its header.
    /// `kek` is `None` exactly when `algorithm` is `None`.
    pub fn create(
        io: I,
        store: &StoreKey,
        algorithm: Algorithm,
        key_ref: KeyRef,
        kek: Option<&Key256>,
        block_size: u32,
    ) -> Result<Self, CryptoError> {
        let dek = match algorithm {
            Algorithm::None => Key256::from_array([0u8; 32]),
            Algorithm::Aes256 | Algorithm::Kms => Key256::generate()?,
        };
        let mut file_id = [0u8; 16];
        fill_random(&mut file_id)?;
        let wrapped_dek = wrap_dek(
            FORMAT_VERSION,
            store.id(),
            algorithm,
            &key_ref,
            kek,
            &dek,
            &file_id,
            None,
        )?;
        Self::create_from_parts(
            io,
            store,
            algorithm,
            key_ref,
            block_size,
            dek,
            file_id,
            wrapped_dek,
        )
    }

    /// [`Object::create`] with a caller-chosen DEK, file ID and wrap nonce: only for
    /// reproducible test vectors.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn create_with_secrets(
        io: I,
        store: &StoreKey,
        algorithm: Algorithm,
        key_ref: KeyRef,
        kek: Option<&Key256>,
        block_size: u32,
        dek: Key256,
        file_id: [u8; 16],
        wrap_nonce: [u8; 16],
    ) -> Result<Self, CryptoError> {
        if algorithm == Algorithm::None && dek.expose_secret() != &[0u8; 32] {
            return Err(CryptoError::Malformed(
                "algorithm none uses the all-zero DEK".into(),
            ));
        }
        let wrapped_dek = wrap_dek(
            FORMAT_VERSION,
            store.id(),
            algorithm,
            &key_ref,
            kek,
            &dek,
            &file_id,
            Some(&wrap_nonce),
        )?;
        Self::create_from_parts(
            io,
            store,
            algorithm,
            key_ref,
            block_size,
            dek,
            file_id,
            wrapped_dek,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn create_from_parts(
        io: I,
        store: &StoreKey,
        algorithm: Algorithm,
        key_ref: KeyRef,
        block_size: u32,
        dek: Key256,
        file_id: [u8; 16],
        wrapped_dek: Option<WrappedKey>,
    ) -> Result<Self, CryptoError> {
        let layout = Layout::for_version(block_size, FORMAT_VERSION)?;
        let header = Header {
            info: HeaderInfo {
                version: FORMAT_VERSION,
                algorithm,
                key_ref,
                block_size,
                file_id,
                size: 0,
            },
            flags: 0,
            seq: 0,
            wrapped_dek,
            store_id: *store.id(),
            gen_limit: 0,
            cut_block: 0,
            cut_gen: 0,
            root: [0; 32],
        };
        let mut object = Self::assemble(io, store, header, dek, layout);
        object.strict = true;
        object.groups = OnceLock::from(Vec::new());
        // Only when needed: ext4 takes a truncation to 0 for a file being rewritten and then
        // flushes it to disk at close (auto_da_alloc), a write-back per new object.
        if object.io.len()? != 0 {
            object.io.set_len(0)?;
        }
        object.write_header()?;
        object.io.set_len(layout.block_size())?;
        object.tail_clean = true;
        Ok(object)
    }

    /// Opens and authenticates an existing object; `kek` is the key named by its header.
    /// A version 2 object must belong to `store` (its store id and every tag); a version 1
    /// object opens read-only, with the weaker checks of its format.
    pub fn open(io: I, store: &StoreKey, kek: Option<&Key256>) -> Result<Self, CryptoError> {
        let (bytes, n) = read_header_bytes(&io)?;
        let bytes = &bytes[..n];
        let parsed = ParsedHeader::parse(bytes)?;
        let info = &parsed.header.info;
        if info.version < store.min_version() {
            return Err(CryptoError::Authentication(format!(
                "object format version {} is no longer accepted in this store",
                info.version
            )));
        }
        if info.version != FORMAT_V1 && parsed.header.store_id != *store.id() {
            return Err(CryptoError::Authentication(
                "the object belongs to another store".into(),
            ));
        }
        let dek = unwrap_dek(
            info.version,
            store.id(),
            info.algorithm,
            &info.key_ref,
            kek,
            parsed.header.wrapped_dek.as_ref(),
            &info.file_id,
        )?;
        let layout = Layout::for_version(info.block_size, info.version)?;
        let header_mac = header_mac(info.version, &dek, store, &info.file_id);
        let header = parsed.authenticate(bytes, &header_mac)?;
        let mut object = Self::assemble(io, store, header, dek, layout);
        object.strict = !object.header.is_dirty();
        object.recovering = object.header.is_dirty();
        object.check_root = object.version() == FORMAT_VERSION && !object.header.is_dirty();
        if !object.header.is_dirty() {
            object.check_committed_length()?;
            // That check's block and meta page buffers are not kept: reads go through the
            // thread's scratch buffers, and a write allocates them again (with 10,000 files
            // open, 80 MiB less).
            object.page = Vec::new();
            object.meta = Vec::new();
        }
        Ok(object)
    }

    fn assemble(io: I, store: &StoreKey, header: Header, dek: Key256, layout: Layout) -> Self {
        let file_id = header.info.file_id;
        let version = header.info.version;
        let encrypt = header.info.algorithm != Algorithm::None;
        Self {
            io,
            cipher: BlockCipher::new(version, &dek, store, &file_id, encrypt),
            header_mac: header_mac(version, &dek, store, &file_id),
            group_mac: hmac_with_key(&object_subkey(version, &dek, store, &file_id, "group-mac")),
            root_mac: hmac_with_key(&object_subkey(version, &dek, store, &file_id, "root-mac")),
            groups: OnceLock::new(),
            zero_digest: OnceLock::new(),
            last_written: std::sync::Mutex::new(None),
            check_root: false,
            gen_next: header.gen_limit + 1,
            strict: false,
            recovering: false,
            header,
            dek,
            layout,
            header_unsaved: false,
            tail_clean: false,
            newest_active: NewestActive::default(),
            write_buf: Vec::new(),
            // Allocated by the first block load (`take_page`).
            page: Vec::new(),
            meta: Vec::new(),
            ivs: Vec::new(),
            hole_fills: Vec::new(),
        }
    }

    /// The bytes its block and meta page buffers hold (tests: an idle open object keeps none).
    #[cfg(test)]
    pub(super) fn buffered_bytes(&self) -> usize {
        self.page.capacity() + self.meta.capacity()
    }

    pub fn info(&self) -> &HeaderInfo {
        &self.header.info
    }
    pub fn size(&self) -> u64 {
        self.header.info.size
    }
    /// True while a write session is open (or was interrupted and not yet closed).
    pub fn is_dirty(&self) -> bool {
        self.header.is_dirty()
    }
    /// True when blocks that were never written read as zeros.
    pub fn is_sparse(&self) -> bool {
        self.header.is_sparse()
    }

    /// Hints that plaintext `offset..offset + len` will be read soon: its backing pages are
    /// read ahead. Changes nothing the object reads or writes.
    pub fn will_need(&self, offset: u64, len: u64) {
        let (start, len) = self.layout.backing_span(offset, len);
        self.io.will_need(start, len);
    }

    /// Hints that plaintext `offset..offset + len`, written, may go to the device now: its
    /// backing pages start being written back, without waiting. Durability still comes only
    /// from [`Object::sync`].
    pub fn start_writeback(&self, offset: u64, len: u64) {
        let (start, len) = self.layout.backing_span(offset, len);
        self.io.start_writeback(start, len);
    }

    /// Reads plaintext at `offset`; returns fewer bytes only at the end of the object.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, CryptoError> {
        let size = self.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let end = size.min(offset.saturating_add(buf.len() as u64));
        let out = &mut buf[..(end - offset) as usize];
        let result = READ_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.read_range(offset, out, &mut scratch),
            Err(_) => self.read_range(offset, out, &mut Vec::new()),
        });
        if result.is_err() {
            // Never leave partly decrypted bytes behind an error.
            out.fill(0);
        }
        result.map(|()| out.len())
    }

    fn read_range(
        &self,
        offset: u64,
        out: &mut [u8],
        scratch: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let p = self.layout.block_size();
        let end = offset + out.len() as u64;
        let (first, last) = (offset / p, (end - 1) / p);
        let mut start = first;
        while start <= last {
            let stop = last.min(start + self.chunk_blocks() - 1);
            let chunk = self.read_chunk(start, stop, scratch)?;
            self.check_chunk_meta(&chunk, scratch)?;
            let pairs: Vec<SlotPair> = (start..=stop)
                .map(|k| {
                    SlotPair::decode(
                        &scratch[chunk.slot_index(k)..][..SLOT_PAIR_LEN],
                        self.version(),
                    )
                })
                .collect();
            let holes_ok: Vec<bool> = (start..=stop)
                .zip(&pairs)
                .map(|(k, pair)| {
                    pair.is_empty()
                        && self.hole_is_authentic(k, &scratch[chunk.meta_page_index(k)..])
                })
                .collect();
            let pages = (start..=stop).map(|k| (chunk.data_index(k), chunk.data_available(k)));
            let mut jobs: Vec<OpenJob<'_>> = disjoint_mut(scratch, pages)
                .into_iter()
                .zip(start..=stop)
                .zip(pairs.into_iter().zip(holes_ok))
                .map(|((data, k), (pair, hole_ok))| OpenJob {
                    k,
                    pair,
                    hole_ok,
                    data,
                    opened: Ok(None),
                })
                .collect();
            run_split(&mut jobs, |job| {
                job.opened = self.open_block(job.k, &job.pair, job.hole_ok, job.data);
            });
            for job in jobs {
                let len = job.opened?.map_or(0, |(_, len)| len);
                let block_start = job.k * p;
                let from = offset.max(block_start) - block_start;
                let to = end.min(block_start + p) - block_start;
                let dest =
                    &mut out[(block_start + from - offset) as usize..][..(to - from) as usize];
                copy_block_bytes(&job.data[..len], from as usize, dest);
            }
            start = stop + 1;
        }
        Ok(())
    }

    /// Reads the slot pairs and data pages of blocks `first..=last` into `buf`; bytes past the
    /// end of file read as zeros.
    fn read_chunk(&self, first: u64, last: u64, buf: &mut Vec<u8>) -> Result<Chunk, CryptoError> {
        let mut chunk = Chunk::new(self.layout, first, last);
        let total = chunk.meta_len + chunk.body_len(self.layout.block_len());
        buf.resize(total, 0);
        let (meta, body) = buf.split_at_mut(chunk.meta_len);
        let n = self.io.read_at(meta, chunk.meta_offset())?;
        meta[n..].fill(0);
        let n = self.io.read_at(body, chunk.body_offset())?;
        body[n..].fill(0);
        chunk.body_read = n;
        Ok(chunk)
    }

    fn chunk_blocks(&self) -> u64 {
        (CHUNK_BYTES / self.layout.block_size()).max(1)
    }

    /// Opens block `k` in place: the first slot (highest generation first) whose tag verifies
    /// over `data` gives `(slot, len)` and leaves the plaintext in `data[..len]`. `None` is a
    /// hole of a sparse object; anything else is an authentication error.
    /// `hole_ok`: the group tag vouches that this empty slot pair was never written.
    fn open_block(
        &self,
        k: u64,
        pair: &SlotPair,
        hole_ok: bool,
        data: &mut [u8],
    ) -> Result<Option<(usize, usize)>, CryptoError> {
        match self.find_active(k, pair, data) {
            Some(i) => {
                let slot = &pair.0[i];
                let len = slot.len as usize;
                self.cipher.decrypt(slot, &mut data[..len]);
                Ok(Some((i, len)))
            }
            None if pair.is_empty() && self.header.is_sparse() && hole_ok => Ok(None),
            None if pair.is_empty() && self.header.is_sparse() => Err(CryptoError::Authentication(
                format!("block {k}: its group tag does not vouch for a hole"),
            )),
            None => Err(CryptoError::Authentication(format!(
                "block {k}: no slot authenticates its data page"
            ))),
        }
    }

    /// The slot that authenticates `data` (the bytes of block `k`'s data page that exist).
    fn find_active(&self, k: u64, pair: &SlotPair, data: &[u8]) -> Option<usize> {
        let newest = newest_slot(pair);
        pair.candidates().find(|&i| {
            let slot = &pair.0[i];
            if !self.may_be_active(k, slot, i == newest) {
                return false;
            }
            let len = slot.len as usize;
            len <= self.layout.block_len()
                && data
                    .get(..len)
                    .is_some_and(|ct| self.cipher.authenticates(k, slot, ct))
        })
    }

    /// Whether `slot` of block `k` may authenticate it at all. From version 2: a slot cut
    /// away by the last size decrease (block past the cut, generation not newer than it) never
    /// does, nor one whose generation the header never reserved; an older slot does only when
    /// a write may have been interrupted (`strict` is false), so a block's previous version
    /// cannot be put back once its new version was written.
    fn may_be_active(&self, k: u64, slot: &Slot, newest: bool) -> bool {
        if self.version() == FORMAT_V1 {
            return true;
        }
        let cut = k >= self.header.cut_block && slot.generation <= self.header.cut_gen;
        let unreserved = slot.generation > self.header.gen_limit;
        !cut && !unreserved && (newest || !self.strict)
    }

    fn version(&self) -> u16 {
        self.header.info.version
    }

    /// Takes `count` consecutive generations from the object's counter, first recording in
    /// the header (before any slot uses them) a limit above them when the reserve runs out.
    fn allocate_generations(&mut self, count: u64) -> Result<u64, CryptoError> {
        let first = self.gen_next;
        let last = first
            .checked_add(count - 1)
            .filter(|&last| last < u64::MAX - GENERATION_RESERVE)
            .ok_or_else(|| CryptoError::Malformed("generation counter exhausted".into()))?;
        if last > self.header.gen_limit {
            self.header.gen_limit = last + GENERATION_RESERVE;
            self.write_header()?;
        }
        self.gen_next = last + 1;
        Ok(first)
    }

    /// Version 1 objects are read-only: writing one needs `ssefs upgrade` first. A version 2
    /// object is written as version 3.
    fn check_writable(&self) -> Result<(), CryptoError> {
        match self.version() {
            FORMAT_V2 | FORMAT_VERSION => Ok(()),
            other => Err(CryptoError::ReadOnlyVersion(other)),
        }
    }

    /// The block page, taken out of `self` and one block long (put it back when done).
    fn take_page(&mut self) -> Vec<u8> {
        let mut page = std::mem::take(&mut self.page);
        page.resize(self.layout.block_len(), 0);
        page
    }

    /// Reads and opens block `k` alone; its plaintext is left in `self.page[..len]`.
    fn load_block(&mut self, k: u64) -> Result<LoadedBlock, CryptoError> {
        self.load_block_checked(k, true)
    }

    /// [`Object::load_block`]; `check_map`: check its meta page against the block map.
    fn load_block_checked(&mut self, k: u64, check_map: bool) -> Result<LoadedBlock, CryptoError> {
        let mut meta = std::mem::take(&mut self.meta);
        let read = self.read_meta_page(k, &mut meta, check_map);
        let at = (k % self.layout.blocks_per_group()) as usize * SLOT_PAIR_LEN;
        let pair = SlotPair::decode(&meta[at..at + SLOT_PAIR_LEN], self.version());
        let hole_ok =
            pair.is_empty() && self.header.is_sparse() && self.hole_is_authentic(k, &meta);
        self.meta = meta;
        read?;
        let mut page = self.take_page();
        let opened = self
            .io
            .read_at(&mut page, self.layout.data_offset(k))
            .map_err(CryptoError::from)
            .and_then(|n| self.open_block(k, &pair, hole_ok, &mut page[..n]));
        self.page = page;
        let (active, len) = match opened? {
            Some((i, len)) => (Some(i), len),
            None => (None, 0),
        };
        if let Some(i) = active {
            self.remember_active(k, &pair, i);
        }
        Ok(LoadedBlock { pair, active, len })
    }

    /// Rewrites block `k` with the first `len` bytes of `self.page`, into the slot that is not
    /// active: slot first, then data.
    fn store_block(&mut self, k: u64, loaded: &LoadedBlock, len: usize) -> Result<(), CryptoError> {
        let target = target_slot(&loaded.pair, loaded.active);
        let generation = self.allocate_generations(1)?;
        let mut iv = [0u8; 16];
        fill_random(&mut iv)?;
        self.newest_active.remove(k);
        let slot = self.cipher.seal(k, generation, &iv, &mut self.page[..len]);
        let at = (k % self.layout.blocks_per_group()) as usize * SLOT_PAIR_LEN + target * SLOT_LEN;
        let encoded = slot.encode(self.version());
        self.rewrite_meta_page(k, |meta| meta[at..at + SLOT_LEN].copy_from_slice(&encoded))?;
        self.io
            .write_at(&self.page[..len], self.layout.data_offset(k))?;
        // The slot just written has the highest generation.
        self.newest_active.insert(k);
        Ok(())
    }

    /// Remembers which slot of block `k` authenticates its data, when it is the newest one
    /// (the usual case; an older active slot is found again by verifying when needed).
    fn remember_active(&mut self, k: u64, pair: &SlotPair, slot: usize) {
        if slot == newest_slot(pair) {
            self.newest_active.insert(k);
        } else {
            self.newest_active.remove(k);
        }
    }

    /// Writes plaintext at `offset`, extending the object (holes read as zeros).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), CryptoError> {
        if data.is_empty() {
            return Ok(());
        }
        self.check_writable()?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_OBJECT_SIZE)
            .ok_or_else(too_large)?;
        let size = self.size();
        let leaves_hole = offset / self.layout.block_size() > self.layout.block_count(size);
        self.begin_mutation(leaves_hole)?;
        if end > size && !self.tail_clean {
            self.clean_tail()?;
        }
        if let Err(e) = self.write_blocks(offset, data, size) {
            self.forget_state();
            return Err(e);
        }
        if end > size {
            self.header.info.size = end;
            self.write_header()?;
        }
        Ok(())
    }

    fn write_blocks(&mut self, offset: u64, data: &[u8], size: u64) -> Result<(), CryptoError> {
        let p = self.layout.block_size();
        let end = offset + data.len() as u64;
        let (first, last) = (offset / p, (end - 1) / p);
        let mut start = first;
        while start <= last {
            let stop = last.min(start + self.chunk_blocks() - 1);
            let mut buf = std::mem::take(&mut self.write_buf);
            let result = self.write_chunk(start, stop, offset, data, size, &mut buf);
            self.write_buf = buf;
            result?;
            start = stop + 1;
        }
        Ok(())
    }

    /// Seals blocks `first..=last` of a write of `data` at `offset` and writes them with two
    /// ascending writes: the first group's slots, then the data pages (and later meta pages).
    /// Each block's new slot goes to the slot that does not authenticate its current data.
    fn write_chunk(
        &mut self,
        first: u64,
        last: u64,
        offset: u64,
        data: &[u8],
        size: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let p = self.layout.block_size();
        let chunk = Chunk::new(self.layout, first, last);
        buf.resize(chunk.meta_len + chunk.body_len(self.layout.block_len()), 0);
        self.read_chunk_meta(&chunk, buf)?;
        let count = (last - first + 1) as usize;
        let first_generation = self.allocate_generations(count as u64)?;
        self.ivs.resize(16 * count, 0);
        fill_random(&mut self.ivs)?;
        let end = offset + data.len() as u64;
        let mut written_end = 0;
        self.hole_fills.clear();
        let mut sealing: Vec<PreparedBlock> = Vec::with_capacity(count);
        for (i, k) in (first..=last).enumerate() {
            let block_start = k * p;
            let from = (offset.max(block_start) - block_start) as usize;
            let to = (end.min(block_start + p) - block_start) as usize;
            let committed = self.layout.bytes_in_block(k, size) as usize;
            let slot_at = chunk.slot_index(k);
            let pair = SlotPair::decode(&buf[slot_at..slot_at + SLOT_PAIR_LEN], self.version());
            let data_at = chunk.data_index(k);
            let (active, len) = if from == 0 && to == self.layout.block_len() {
                (self.overwrite_target(k, &pair, committed)?, to)
            } else {
                // A partial block keeps its committed bytes around the new ones.
                let (active, kept) = if committed > 0 {
                    let loaded = self.load_block(k)?;
                    let kept = loaded.len.min(committed);
                    buf[data_at..data_at + kept].copy_from_slice(&self.page[..kept]);
                    (loaded.active, kept)
                } else {
                    (None, 0)
                };
                let len = kept.max(to);
                buf[data_at + kept.min(from)..data_at + from].fill(0);
                (active, len)
            };
            let src = &data[(block_start + from as u64 - offset) as usize..][..to - from];
            buf[data_at + from..data_at + to].copy_from_slice(src);
            let target = target_slot(&pair, active);
            let generation = first_generation + i as u64;
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&self.ivs[16 * i..16 * i + 16]);
            sealing.push(PreparedBlock {
                k,
                generation,
                iv,
                data_at,
                len,
                slot_at: slot_at + target * SLOT_LEN,
            });
            self.newest_active.remove(k);
            if committed > 0 && active.is_none() && pair.is_empty() {
                self.hole_fills.push((k, len));
            }
            written_end = data_at + len;
        }
        self.seal_all(buf, &sealing);
        let n = self.layout.blocks_per_group();
        let p = self.layout.block_len();
        for g in first / n..=last / n {
            let at = chunk.meta_page_index(first.max(g * n));
            self.set_group_tag(g, &mut buf[at..at + p]);
            self.record_meta_page(g, &buf[at..at + p]);
        }
        // A hole has no old slot to fall back on, so its data goes first: until its slot is
        // written the block still reads as zeros.
        for &(k, len) in &self.hole_fills {
            let data_at = chunk.data_index(k);
            self.io
                .write_at(&buf[data_at..data_at + len], self.layout.data_offset(k))?;
        }
        self.io
            .write_at(&buf[..chunk.meta_len], chunk.meta_offset())?;
        self.io
            .write_at(&buf[chunk.meta_len..written_end], chunk.body_offset())?;
        // Every block of the chunk now has its new slot, the newest, active.
        for k in first..=last {
            self.newest_active.insert(k);
        }
        Ok(())
    }

    /// Seals the blocks prepared in `buf` (on two threads for a large chunk) and stores each
    /// new slot at its place in `buf`.
    fn seal_all(&self, buf: &mut [u8], sealing: &[PreparedBlock]) {
        let pages = sealing.iter().map(|b| (b.data_at, b.len));
        let mut jobs: Vec<SealJob<'_>> = disjoint_mut(buf, pages)
            .into_iter()
            .zip(sealing)
            .map(|(data, b)| SealJob {
                k: b.k,
                generation: b.generation,
                iv: b.iv,
                data,
                slot_at: b.slot_at,
                slot: Slot::default(),
            })
            .collect();
        run_split(&mut jobs, |job| {
            job.slot = self.cipher.seal(job.k, job.generation, &job.iv, job.data);
        });
        let slots: Vec<(usize, Slot)> = jobs.iter().map(|j| (j.slot_at, j.slot)).collect();
        drop(jobs);
        for (at, slot) in slots {
            buf[at..at + SLOT_LEN].copy_from_slice(&slot.encode(self.version()));
        }
    }

    /// Fills the chunk's meta regions from the backing file (zeros past its end).
    fn read_chunk_meta(&self, chunk: &Chunk, buf: &mut [u8]) -> Result<(), CryptoError> {
        let meta = &mut buf[..chunk.meta_len];
        let n = self.io.read_at(meta, chunk.meta_offset())?;
        meta[n..].fill(0);
        let p = self.layout.block_len();
        let n = self.layout.blocks_per_group();
        for (at, g) in chunk.later_meta_pages() {
            let page = &mut buf[at..at + p];
            let got = self.io.read_at(page, self.layout.meta_page_offset(g * n))?;
            page[got..].fill(0);
        }
        self.check_chunk_meta(chunk, buf)
    }

    /// For a whole-block overwrite of block `k`: the slot that must be kept (authenticates
    /// the current data), if any.
    fn overwrite_target(
        &mut self,
        k: u64,
        pair: &SlotPair,
        committed: usize,
    ) -> Result<Option<usize>, CryptoError> {
        if committed == 0 {
            // Past the committed size: nothing there is part of the object.
            return Ok(None);
        }
        if self.newest_active.contains(k) {
            let i = newest_slot(pair);
            if pair.0[i].generation > 0 {
                return Ok(Some(i));
            }
        }
        let mut candidates = pair.candidates();
        match (candidates.next(), candidates.next()) {
            (None, _) => Ok(None),
            (Some(i), None) => Ok(Some(i)),
            (Some(_), Some(_)) => {
                let mut page = self.take_page();
                let read = self.io.read_at(&mut page, self.layout.data_offset(k));
                let active = read.map(|n| self.find_active(k, pair, &page[..n]));
                self.page = page;
                Ok(active?)
            }
        }
    }

    /// Truncates or extends to `size` bytes.
    pub fn set_size(&mut self, size: u64) -> Result<(), CryptoError> {
        if size > MAX_OBJECT_SIZE {
            return Err(too_large());
        }
        let old = self.size();
        if size == old {
            return Ok(());
        }
        self.check_writable()?;
        if size > old {
            let adds_blocks = self.layout.block_count(size) > self.layout.block_count(old);
            self.begin_mutation(adds_blocks)?;
            if !self.tail_clean {
                self.clean_tail()?;
            }
            self.header.info.size = size;
            return self.write_header();
        }
        self.begin_mutation(false)?;
        let blocks = self.layout.block_count(size);
        // Everything from `blocks` on is cut: its slots, and copies of them kept elsewhere,
        // stay stale even if later put back into an extension of the object.
        self.header.cut_block = blocks;
        self.header.cut_gen = self.gen_next - 1;
        self.header.info.size = size;
        self.write_header()?;
        self.tail_clean = false;
        self.newest_active.truncate(blocks);
        self.clean_tail()
    }

    /// Makes the bytes past the committed size unreachable: reseals the last block cut to the
    /// committed size, clears the slots after it in its meta page, and sets the backing length
    /// to the clean length. Every step touches only bytes outside the committed object.
    fn clean_tail(&mut self) -> Result<(), CryptoError> {
        let size = self.size();
        let last_len = match size.checked_sub(1) {
            None => 0,
            Some(end) => {
                let last = end / self.layout.block_size();
                let committed = self.layout.bytes_in_block(last, size) as usize;
                let loaded = self.load_block(last)?;
                if loaded.len > committed {
                    self.store_block(last, &loaded, committed)?;
                }
                loaded.len.min(committed)
            }
        };
        self.clear_slots_past(size)?;
        let clean = self.layout.clean_length(size, last_len as u64);
        if self.io.len()? != clean {
            self.io.set_len(clean)?;
        }
        // Later groups are past the end of the file now: unwritten.
        let count = usize::try_from(self.group_count(size)).unwrap_or(usize::MAX);
        if let Some(groups) = self.groups.get_mut() {
            groups.truncate(count);
        }
        self.tail_clean = true;
        Ok(())
    }

    /// Zeroes the slot pairs of blocks past the committed size that share the last block's
    /// meta page (later meta pages lie past the clean length), with the group tag updated in
    /// the same page write.
    fn clear_slots_past(&mut self, size: u64) -> Result<(), CryptoError> {
        let next = self.layout.block_count(size);
        let n = self.layout.blocks_per_group();
        if size == 0 || next % n == 0 {
            return Ok(());
        }
        let start = (next % n) as usize * SLOT_PAIR_LEN;
        let end = n as usize * SLOT_PAIR_LEN;
        let mut meta = std::mem::take(&mut self.meta);
        let read = self.read_meta_page(next, &mut meta, true);
        let stale = meta[start..end].iter().any(|&b| b != 0);
        self.meta = meta;
        read?;
        if stale {
            self.rewrite_meta_page(next, |meta| meta[start..end].fill(0))?;
        }
        Ok(())
    }

    /// Reads the meta page of block `k`'s group into `page` (zeros past the end of the file);
    /// `check_map`: it must match the block map.
    fn read_meta_page(
        &self,
        k: u64,
        page: &mut Vec<u8>,
        check_map: bool,
    ) -> Result<(), CryptoError> {
        page.resize(self.layout.block_len(), 0);
        let got = self.io.read_at(page, self.layout.meta_page_offset(k))?;
        page[got..].fill(0);
        if check_map {
            self.check_meta_page(k / self.layout.blocks_per_group(), page)?;
        }
        Ok(())
    }

    /// Reads the meta page of block `k`'s group (checked against the block map), changes it
    /// with `change`, and writes it back whole with its group tag, recording it in the map.
    fn rewrite_meta_page(
        &mut self,
        k: u64,
        change: impl FnOnce(&mut [u8]),
    ) -> Result<(), CryptoError> {
        let g = k / self.layout.blocks_per_group();
        let mut meta = std::mem::take(&mut self.meta);
        let result = self.read_meta_page(k, &mut meta, true).and_then(|()| {
            change(&mut meta);
            self.set_group_tag(g, &mut meta);
            Ok(self.io.write_at(&meta, self.layout.meta_page_offset(k))?)
        });
        if result.is_ok() {
            self.record_meta_page(g, &meta);
        }
        self.meta = meta;
        result
    }

    /// Whether this object has a block map (every version but 1).
    fn has_block_map(&self) -> bool {
        self.version() != FORMAT_V1
    }

    /// The number of groups holding the blocks of an object of `size` bytes.
    fn group_count(&self, size: u64) -> u64 {
        self.layout
            .block_count(size)
            .div_ceil(self.layout.blocks_per_group())
    }

    fn zero_digest(&self) -> MetaDigest {
        /// The digest of a zero meta page of the default block size, for every object.
        static ZERO_4096: OnceLock<MetaDigest> = OnceLock::new();
        let compute = || meta_digest(&vec![0u8; self.layout.block_len()]);
        if self.layout.block_len() == DEFAULT_BLOCK_SIZE as usize {
            return *ZERO_4096.get_or_init(compute);
        }
        *self.zero_digest.get_or_init(compute)
    }

    /// The block map, built from the backing file on first use (see `groups`).
    fn groups(&self) -> Result<&[MetaDigest], CryptoError> {
        if let Some(groups) = self.groups.get() {
            return Ok(groups);
        }
        let built = self.build_groups()?;
        Ok(self.groups.get_or_init(|| built))
    }

    /// Reads the meta page of every group of the committed size; from a clean version 3
    /// object, their digests must give the header's root.
    fn build_groups(&self) -> Result<Vec<MetaDigest>, CryptoError> {
        let count = self.group_count(self.size());
        let n = self.layout.blocks_per_group();
        let mut page = vec![0u8; self.layout.block_len()];
        let mut groups = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let p = self.layout.block_size();
        let mut g = 0;
        while g < count {
            // The pages are one per group, far apart: ask for a batch of them at once, so a
            // cold cache serves them in parallel rather than one seek at a time.
            let batch = (count - g).min(MAP_READ_BATCH);
            for h in g..g + batch {
                self.io.will_need(self.layout.meta_page_offset(h * n), p);
            }
            for h in g..g + batch {
                let got = self
                    .io
                    .read_at(&mut page, self.layout.meta_page_offset(h * n))?;
                page[got..].fill(0);
                groups.push(meta_digest(&page));
            }
            g += batch;
        }
        if self.check_root && self.root_of(&groups, self.size()) != self.header.root {
            return Err(CryptoError::Authentication(
                "the object's block map does not match its header: a block, a slot pair or a \
                 group was rolled back, replayed or erased"
                    .into(),
            ));
        }
        Ok(groups)
    }

    /// `HMAC(K_root, "ssefs/root/v3" ‖ G u64 ‖ D_0 ‖ … ‖ D_{G-1})` over the first `G` groups
    /// (those of an object of `size` bytes); a group missing from `groups` is unwritten.
    fn root_of(&self, groups: &[MetaDigest], size: u64) -> [u8; 32] {
        let count = self.group_count(size);
        let zero = self.zero_digest();
        let mut mac = self.root_mac.clone();
        mac.update(ROOT_DOMAIN);
        mac.update(&count.to_le_bytes());
        for g in 0..count {
            let digest = usize::try_from(g).ok().and_then(|g| groups.get(g));
            mac.update(digest.unwrap_or(&zero));
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks the meta page of group `g`, as read (zeros past the end of the file), against
    /// the block map.
    fn check_meta_page(&self, g: u64, page: &[u8]) -> Result<(), CryptoError> {
        if !self.has_block_map() {
            return Ok(());
        }
        let groups = self.groups()?;
        let recorded = usize::try_from(g).ok().and_then(|g| groups.get(g).copied());
        let known = match recorded {
            // An unwritten group: its page must be zero, which needs no hash to see.
            None => page.iter().all(|&b| b == 0),
            Some(expected) => {
                let unchanged = match self.last_written.lock() {
                    Ok(last) => last
                        .as_ref()
                        .is_some_and(|(at, bytes)| *at == g && bytes.as_slice() == page),
                    Err(_) => false,
                };
                unchanged || meta_digest(page) == expected
            }
        };
        if !known {
            return Err(CryptoError::Authentication(format!(
                "group {g}: its meta page is not the one this object last wrote (rolled back, \
                 replayed or erased)"
            )));
        }
        Ok(())
    }

    /// Checks every meta page of a chunk read into `buf` against the block map.
    fn check_chunk_meta(&self, chunk: &Chunk, buf: &[u8]) -> Result<(), CryptoError> {
        if !self.has_block_map() {
            return Ok(());
        }
        let p = self.layout.block_len();
        for (at, g) in chunk.meta_pages() {
            self.check_meta_page(g, &buf[at..at + p])?;
        }
        Ok(())
    }

    /// Records in the block map that group `g`'s meta page is now `page`.
    fn record_meta_page(&mut self, g: u64, page: &[u8]) {
        let digest = meta_digest(page);
        if let Ok(last) = self.last_written.get_mut() {
            match last {
                Some((at, bytes)) => {
                    *at = g;
                    bytes.clear();
                    bytes.extend_from_slice(page);
                }
                None => *last = Some((g, page.to_vec())),
            }
        }
        let zero = self.zero_digest();
        let (Some(groups), Ok(g)) = (self.groups.get_mut(), usize::try_from(g)) else {
            return;
        };
        if groups.len() <= g {
            groups.resize(g + 1, zero);
        }
        groups[g] = digest;
    }

    /// Stores in the last 32 bytes of `meta_page` (group `g`'s whole meta page) the group tag:
    /// `HMAC(K_grp, "ssefs/group/v2" ‖ g u64 ‖ bitmap)`, bit `j` of the bitmap (LSB first) set
    /// when slot pair `j` has a written slot. Version 1 has no group tag.
    fn set_group_tag(&self, g: u64, meta_page: &mut [u8]) {
        if self.version() == FORMAT_V1 {
            return;
        }
        let tag = self.group_tag(g, meta_page).finalize().into_bytes();
        let p = self.layout.block_len();
        meta_page[p - GROUP_TAG_LEN..p].copy_from_slice(&tag);
    }

    /// The group tag's HMAC state over group `g`'s slot pairs in `meta_page`.
    fn group_tag(&self, g: u64, meta_page: &[u8]) -> HmacSha256 {
        let n = self.layout.blocks_per_group() as usize;
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for j in 0..n {
            let pair = &meta_page[j * SLOT_PAIR_LEN..(j + 1) * SLOT_PAIR_LEN];
            if !SlotPair::decode(pair, self.version()).is_empty() {
                bitmap[j / 8] |= 1 << (j % 8);
            }
        }
        let mut mac = self.group_mac.clone();
        mac.update(b"ssefs/group/v2");
        mac.update(&g.to_le_bytes());
        mac.update(&bitmap);
        mac
    }

    /// Whether block `k`'s empty slot pair is a hole the object made, given the meta page of
    /// its group (at the start of `meta`): its group tag verifies over the group's slot pairs,
    /// or the whole meta page is zero (a group never written). Version 1: always.
    fn hole_is_authentic(&self, k: u64, meta: &[u8]) -> bool {
        if self.version() == FORMAT_V1 {
            return true;
        }
        let p = self.layout.block_len();
        let Some(page) = meta.get(..p) else {
            return false;
        };
        let tag = &page[p - GROUP_TAG_LEN..];
        if tag.iter().all(|&b| b == 0) {
            return page.iter().all(|&b| b == 0);
        }
        let g = k / self.layout.blocks_per_group();
        self.group_tag(g, page).verify_slice(tag).is_ok()
    }

    /// Makes everything written so far durable (commit header, then `sync_data`).
    pub fn sync(&mut self) -> Result<(), CryptoError> {
        if self.version() == FORMAT_V1 {
            return Ok(());
        }
        if self.header_unsaved {
            self.write_header()?;
        }
        Ok(self.io.sync_data()?)
    }

    /// Marks the object clean (no write session open), trims the backing bytes and syncs nothing.
    pub fn close(mut self) -> Result<I, CryptoError> {
        self.end_session()?;
        Ok(self.io)
    }

    /// Ends the write session without closing, and syncs: the backing bytes are then a
    /// clean, complete object (as after `close`), whose block map verifies whole; the next
    /// change opens a new session. For a store other hosts read, at each close of a writer.
    pub fn settle(&mut self) -> Result<(), CryptoError> {
        self.end_session()?;
        if self.version() == FORMAT_V1 {
            return Ok(());
        }
        Ok(self.io.publish()?)
    }

    fn end_session(&mut self) -> Result<(), CryptoError> {
        if self.version() == FORMAT_V1 {
            // Read-only: a write session a crash left open stays as it is.
            return Ok(());
        }
        if self.header.is_dirty() {
            if self.recovering {
                self.repair_interrupted()?;
            }
            self.clean_tail()?;
            self.header.flags &= !FLAG_DIRTY;
            self.write_header()?;
        } else if self.header_unsaved {
            self.write_header()?;
        }
        Ok(())
    }

    /// After a crash or a failed write: in every block whose newest slot does not
    /// authenticate its data page but the older one does (a write interrupted between slot
    /// and data), clears the newest slot, so that once DIRTY is cleared only the version the
    /// reader sees is left. Reads the whole object: paid only after a crash or an I/O error.
    fn repair_interrupted(&mut self) -> Result<(), CryptoError> {
        let blocks = self.layout.block_count(self.size());
        self.strict = false;
        for k in 0..blocks {
            let loaded = match self.load_block(k) {
                Ok(loaded) => loaded,
                // Damaged either way: reads and fsck report it; nothing here can repair it.
                Err(CryptoError::Authentication(_)) => continue,
                Err(e) => return Err(e),
            };
            let newest = newest_slot(&loaded.pair);
            if let Some(active) = loaded.active {
                if active != newest {
                    let at = (k % self.layout.blocks_per_group()) as usize * SLOT_PAIR_LEN
                        + newest * SLOT_LEN;
                    self.rewrite_meta_page(k, |meta| meta[at..at + SLOT_LEN].fill(0))?;
                }
            }
        }
        self.newest_active.clear();
        self.recovering = false;
        self.strict = true;
        Ok(())
    }

    /// Re-wraps the DEK under another KEK by rewriting only the header.
    pub fn rewrap(&mut self, key_ref: KeyRef, kek: Option<&Key256>) -> Result<(), CryptoError> {
        let algorithm = match key_ref {
            KeyRef::Master { .. } => Algorithm::Aes256,
            KeyRef::Cmk { .. } => Algorithm::Kms,
            KeyRef::None => {
                return Err(CryptoError::Malformed(
                    "rewrap cannot remove encryption; re-encrypt the object instead".into(),
                ));
            }
        };
        if self.header.info.algorithm == Algorithm::None {
            return Err(CryptoError::Malformed(
                "rewrap cannot add encryption; re-encrypt the object instead".into(),
            ));
        }
        let file_id = self.header.info.file_id;
        let wrapped = wrap_dek(
            self.version(),
            &self.header.store_id,
            algorithm,
            &key_ref,
            kek,
            &self.dek,
            &file_id,
            None,
        )?;
        let previous = self.header.clone();
        self.header.info.algorithm = algorithm;
        self.header.info.key_ref = key_ref;
        self.header.wrapped_dek = wrapped;
        if let Err(e) = self.write_header() {
            self.header = Header {
                seq: self.header.seq,
                ..previous
            };
            return Err(e);
        }
        Ok(())
    }

    /// Moves a version 2 object to version 3: rewrites only its header, with the root of its
    /// block map as the backing file holds it now. Other versions are left as they are
    /// (version 1 needs re-encryption).
    pub fn upgrade(&mut self) -> Result<(), CryptoError> {
        if self.version() != FORMAT_V2 {
            return Ok(());
        }
        self.groups()?;
        self.write_header()
    }

    /// Takes the object as found, as after a crash: its block map is rebuilt from the backing
    /// file, and the next [`Object::close`] repairs blocks whose newest slot does not
    /// authenticate (their older version stays) and commits the header to the map. For `fsck
    /// --repair` after a power loss left a clean header ahead of pages it commits to. Any
    /// older block versions the file holds are accepted with it, so only an operator who
    /// knows why the map broke runs this. Blocks that fail on their own still fail.
    pub fn recommit_block_map(&mut self) -> Result<(), CryptoError> {
        self.check_writable()?;
        self.forget_block_map();
        self.forget_state();
        self.begin_mutation(false)
    }

    /// Rewrites the header as version 2 (no root), as an earlier ssefs wrote it: only for
    /// tests of stores that still hold version 2 objects (both versions share every other
    /// byte).
    #[doc(hidden)]
    pub fn write_as_version_2_for_tests(&mut self) -> Result<(), CryptoError> {
        self.header.info.version = FORMAT_V2;
        self.header.root = [0; 32];
        self.forget_block_map();
        self.header.seq = self.header.seq.wrapping_add(1);
        let (bytes, _) = self.header.encode(&self.header_mac)?;
        Ok(self.io.write_at(&bytes, 0)?)
    }

    /// Authenticates every block (for `fsck`).
    pub fn verify(&self) -> Result<VerifyReport, CryptoError> {
        let blocks = self.layout.block_count(self.size());
        let mut report = VerifyReport {
            blocks,
            problems: Vec::new(),
            block_map: None,
        };
        let map_ok = match self.groups() {
            _ if !self.has_block_map() => false,
            Ok(_) => true,
            Err(CryptoError::Authentication(problem)) => {
                report.block_map = Some(problem);
                false
            }
            Err(e) => return Err(e),
        };
        let mut scratch = Vec::new();
        let mut start = 0;
        while start < blocks {
            let stop = (blocks - 1).min(start + self.chunk_blocks() - 1);
            let chunk = self.read_chunk(start, stop, &mut scratch)?;
            if map_ok {
                if let Err(e) = self.check_chunk_meta(&chunk, &scratch) {
                    report.problems.push(e.to_string());
                }
            }
            for k in start..=stop {
                let slot_at = chunk.slot_index(k);
                let pair =
                    SlotPair::decode(&scratch[slot_at..slot_at + SLOT_PAIR_LEN], self.version());
                let data_at = chunk.data_index(k);
                let hole_ok = pair.is_empty()
                    && self.hole_is_authentic(k, &scratch[chunk.meta_page_index(k)..]);
                let data = &mut scratch[data_at..data_at + chunk.data_available(k)];
                if let Err(e) = self.open_block(k, &pair, hole_ok, data) {
                    report.problems.push(e.to_string());
                }
            }
            start = stop + 1;
        }
        Ok(report)
    }

    pub fn io(&self) -> &I {
        &self.io
    }

    /// Sets DIRTY (and SPARSE if asked) in the header before the first change of a session.
    fn begin_mutation(&mut self, sparse: bool) -> Result<(), CryptoError> {
        if self.has_block_map() {
            // Every change is checked against, and recorded in, the block map.
            self.groups()?;
        }
        let mut flags = self.header.flags | FLAG_DIRTY;
        if sparse {
            flags |= FLAG_SPARSE;
        }
        if flags != self.header.flags || self.header_unsaved {
            self.header.flags = flags;
            if self.version() != FORMAT_V1 && self.gen_next > self.header.gen_limit {
                // This header write reserves the session's first generations too.
                self.header.gen_limit = self.gen_next - 1 + GENERATION_RESERVE;
            }
            self.write_header()?;
        }
        Ok(())
    }

    /// Writes the header record (seq + 1) as one 512-byte write at offset 0. Once the block
    /// map is known, a version 2 header is written as version 3, and a clean header carries
    /// the map's root (a DIRTY one keeps the last root: it is not checked while DIRTY, and
    /// computing it costs a pass over the map).
    fn write_header(&mut self) -> Result<(), CryptoError> {
        let root_known = self.check_root || self.groups.get().is_some();
        if self.has_block_map() && !self.header.is_dirty() && !root_known {
            // A clean header needs the root of the map as the file holds it now (the last
            // root on record was never checked, or is stale).
            self.groups()?;
        }
        if let Some(groups) = self.groups.get() {
            let root = (!self.header.is_dirty()).then(|| self.root_of(groups, self.size()));
            if let Some(root) = root {
                self.header.root = root;
            }
            if self.version() == FORMAT_V2 {
                self.header.info.version = FORMAT_VERSION;
            }
        }
        self.header.seq = self.header.seq.wrapping_add(1);
        self.header_unsaved = true;
        let (bytes, _) = self.header.encode(&self.header_mac)?;
        self.io.write_at(&bytes, 0)?;
        self.header_unsaved = false;
        Ok(())
    }

    /// Drops the block map (and the last meta page written): the next use builds it again
    /// from the backing file, taken as found.
    fn forget_block_map(&mut self) {
        self.check_root = false;
        self.groups = OnceLock::new();
        self.last_written = std::sync::Mutex::new(None);
    }

    /// After a failed write, what is on disk is unknown: forget cached slot states.
    fn forget_state(&mut self) {
        self.newest_active.clear();
        self.tail_clean = false;
        self.strict = false;
        self.recovering = true;
    }

    /// On open of a clean object: the last block holds no bytes past the size and the backing
    /// length is exactly the clean length, so cuts and appended bytes are detected.
    fn check_committed_length(&mut self) -> Result<(), CryptoError> {
        let size = self.size();
        let last_len = match size.checked_sub(1) {
            None => 0,
            Some(end) => {
                let last = end / self.layout.block_size();
                // A structural check: the block map is built (and checked) on first use.
                let loaded = self.load_block_checked(last, false)?;
                if loaded.len as u64 > self.layout.bytes_in_block(last, size) {
                    return Err(truncated_or_extended());
                }
                loaded.len as u64
            }
        };
        if self.io.len()? != self.layout.clean_length(size, last_len) {
            return Err(truncated_or_extended());
        }
        Ok(())
    }
}

/// Copies the bytes `from..from + dest.len()` of a block whose plaintext is `plain` (bytes
/// past its length read as zeros).
fn copy_block_bytes(plain: &[u8], from: usize, dest: &mut [u8]) {
    let have = plain.len().saturating_sub(from).min(dest.len());
    if have > 0 {
        dest[..have].copy_from_slice(&plain[from..from + have]);
    }
    dest[have..].fill(0);
}

/// The slot with the higher generation.
fn newest_slot(pair: &SlotPair) -> usize {
    usize::from(pair.0[1].generation > pair.0[0].generation)
}

/// The slot to write: the one that is not active; with no active slot, the older one.
fn target_slot(pair: &SlotPair, active: Option<usize>) -> usize {
    match active {
        Some(i) => 1 - i,
        None => usize::from(pair.0[1].generation < pair.0[0].generation),
    }
}

/// The KEK to use for `algorithm`: none for `none`, required otherwise.
fn required_kek(
    algorithm: Algorithm,
    kek: Option<&Key256>,
) -> Result<Option<&Key256>, CryptoError> {
    match (algorithm, kek) {
        (Algorithm::None, None) => Ok(None),
        (Algorithm::None, Some(_)) => Err(CryptoError::Malformed(
            "algorithm none takes no key-encryption key".into(),
        )),
        (_, Some(kek)) => Ok(Some(kek)),
        (_, None) => Err(CryptoError::Malformed(format!(
            "algorithm {algorithm:?} needs a key-encryption key"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn wrap_dek(
    version: u16,
    store_id: &[u8; 16],
    algorithm: Algorithm,
    key_ref: &KeyRef,
    kek: Option<&Key256>,
    dek: &Key256,
    file_id: &[u8; 16],
    nonce: Option<&[u8; 16]>,
) -> Result<Option<WrappedKey>, CryptoError> {
    check_key_ref(algorithm, key_ref)?;
    let Some(kek) = required_kek(algorithm, kek)? else {
        return Ok(None);
    };
    let context = dek_context(version, store_id, algorithm, key_ref, file_id)?;
    let wrapped = match nonce {
        Some(nonce) => wrap_key_with_nonce(kek, &context, dek, nonce)?,
        None => wrap_key(kek, &context, dek)?,
    };
    Ok(Some(wrapped))
}

fn unwrap_dek(
    version: u16,
    store_id: &[u8; 16],
    algorithm: Algorithm,
    key_ref: &KeyRef,
    kek: Option<&Key256>,
    wrapped: Option<&WrappedKey>,
    file_id: &[u8; 16],
) -> Result<Key256, CryptoError> {
    let Some(kek) = required_kek(algorithm, kek)? else {
        return Ok(Key256::from_array([0u8; 32]));
    };
    let wrapped =
        wrapped.ok_or_else(|| CryptoError::Malformed("encrypted object without a DEK".into()))?;
    let context = dek_context(version, store_id, algorithm, key_ref, file_id)?;
    unwrap_key(kek, &context, wrapped)
}

fn truncated_or_extended() -> CryptoError {
    CryptoError::Authentication("object is truncated or extended".into())
}

fn too_large() -> CryptoError {
    CryptoError::Io(io::Error::from_raw_os_error(libc::EFBIG))
}

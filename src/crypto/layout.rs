//! Where things sit in a backing file: the header page, groups of one meta page followed by
//! `N` data pages (`P / 112` in format version 1, `(P - 32) / 112` from version 2, whose meta
//! pages end with a 32-byte group tag), slot pairs and data pages of each block, the clean
//! length.
//! The format versions it depends on are defined here. Pure arithmetic: no I/O and no keys.
//!
//! Version 3 has the page layout, slots and keys of version 2; its header adds the root of
//! the object's block map (see `object`).

use super::CryptoError;

/// The object format version this ssefs writes.
pub const FORMAT_VERSION: u16 = 3;
/// The second format version: read and written; its header is rewritten as version 3 by the
/// first header write that knows the object's block map (a write session, `ssefs upgrade`).
pub const FORMAT_V2: u16 = 2;
/// The first format version: still read (its objects are read-only), never written new.
pub const FORMAT_V1: u16 = 1;

/// The key schedule of a format `version` object: version 3 derives its keys, block tags and
/// DEK wrap context exactly as version 2 does, so moving an object from 2 to 3 rewrites only
/// its header.
pub fn key_schedule(version: u16) -> u16 {
    version.min(FORMAT_V2)
}

/// Bytes of one slot: `gen u32 | len u32 | iv [16] | tag [32]`.
pub const SLOT_LEN: usize = 56;
/// Bytes of a slot pair (slot A then slot B).
pub const SLOT_PAIR_LEN: usize = 2 * SLOT_LEN;
/// Bytes of the group tag at the end of a version 2 meta page.
pub const GROUP_TAG_LEN: usize = 32;
/// The largest block size: 1 MiB.
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// The smallest block size: 4 KiB.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// The largest plaintext size an object may have (1 EiB): keeps every offset in an `i64`.
pub const MAX_OBJECT_SIZE: u64 = 1 << 60;

/// The page geometry of one object, from its block size `P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    page: u64,
    per_group: u64,
}

impl Layout {
    /// The geometry for block size `block_size`, which must be a power of two in 4 KiB..=1 MiB.
    pub fn new(block_size: u32) -> Result<Self, CryptoError> {
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(CryptoError::Malformed(format!(
                "block size {block_size} is not a power of two from 4096 to 1048576"
            )));
        }
        let page = u64::from(block_size);
        Ok(Self {
            page,
            per_group: page / SLOT_PAIR_LEN as u64,
        })
    }

    /// The geometry of a format `version` object: from version 2 each meta page keeps its last
    /// 32 bytes for the group tag.
    pub fn for_version(block_size: u32, version: u16) -> Result<Self, CryptoError> {
        let mut layout = Self::new(block_size)?;
        if version >= 2 {
            layout.per_group = (layout.page - GROUP_TAG_LEN as u64) / SLOT_PAIR_LEN as u64;
        }
        Ok(layout)
    }

    /// `P`: plaintext bytes per block, which is also the page size of the backing file.
    pub fn block_size(&self) -> u64 {
        self.page
    }

    /// `P` as a `usize` (at most 1 MiB, so it always fits).
    pub fn block_len(&self) -> usize {
        self.page as usize
    }

    /// `N`: blocks per group.
    pub fn blocks_per_group(&self) -> u64 {
        self.per_group
    }

    /// Offset of the meta page of the group holding block `k`.
    pub fn meta_page_offset(&self, k: u64) -> u64 {
        let group = k / self.per_group;
        self.page + group * (self.per_group + 1) * self.page
    }

    /// Offset of block `k`'s slot pair.
    pub fn slot_pair_offset(&self, k: u64) -> u64 {
        self.meta_page_offset(k) + (k % self.per_group) * SLOT_PAIR_LEN as u64
    }

    /// Offset of block `k`'s data page.
    pub fn data_offset(&self, k: u64) -> u64 {
        self.meta_page_offset(k) + self.page + (k % self.per_group) * self.page
    }

    /// The backing bytes that hold plaintext `offset..offset + len` (the meta and data pages
    /// of its blocks), as `(start, len)`. For I/O hints: a span may cover pages of other blocks.
    pub fn backing_span(&self, offset: u64, len: u64) -> (u64, u64) {
        if len == 0 {
            return (self.meta_page_offset(offset / self.page), 0);
        }
        let (first, last) = (offset / self.page, (offset + len - 1) / self.page);
        let start = self.meta_page_offset(first);
        (start, self.data_offset(last) + self.page - start)
    }

    /// The number of blocks that hold bytes of an object of `size` bytes.
    pub fn block_count(&self, size: u64) -> u64 {
        size.div_ceil(self.page)
    }

    /// How many plaintext bytes of block `k` lie below `size` (0..=P).
    pub fn bytes_in_block(&self, k: u64, size: u64) -> u64 {
        size.saturating_sub(k * self.page).min(self.page)
    }

    /// The backing length of a closed object: `P` for size 0, else the end of the last
    /// block's data (`last_len` bytes of its data page; 0 for a hole).
    pub fn clean_length(&self, size: u64, last_len: u64) -> u64 {
        match size.checked_sub(1) {
            None => self.page,
            Some(end) => self.data_offset(end / self.page) + last_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_4096_hold_36_blocks() {
        let layout = Layout::new(4096).unwrap();
        assert_eq!(layout.blocks_per_group(), 36);
        assert_eq!(layout.slot_pair_offset(0), 4096);
        assert_eq!(layout.data_offset(0), 8192);
        assert_eq!(layout.slot_pair_offset(35), 4096 + 35 * 112);
        assert_eq!(layout.data_offset(35), 8192 + 35 * 4096);
        assert_eq!(layout.meta_page_offset(36), 4096 + 37 * 4096);
        assert_eq!(layout.slot_pair_offset(37), 4096 + 37 * 4096 + 112);
        assert_eq!(layout.data_offset(36), 4096 + 38 * 4096);
    }

    #[test]
    fn backing_span_covers_meta_and_data_pages() {
        let layout = Layout::new(4096).unwrap();
        assert_eq!(layout.backing_span(0, 1), (4096, 8192));
        assert_eq!(layout.backing_span(0, 4096), (4096, 8192));
        assert_eq!(layout.backing_span(4095, 2), (4096, 12288));
        // Blocks 35 and 36 sit in two groups: the span covers the second meta page too.
        let (start, len) = layout.backing_span(35 * 4096, 8192);
        assert_eq!(start, layout.meta_page_offset(35));
        assert_eq!(start + len, layout.data_offset(36) + 4096);
        assert_eq!(layout.backing_span(4096, 0).1, 0);
    }

    #[test]
    fn clean_length_ends_at_last_data_byte() {
        let layout = Layout::new(4096).unwrap();
        assert_eq!(layout.clean_length(0, 0), 4096);
        assert_eq!(layout.clean_length(1, 1), 8192 + 1);
        assert_eq!(layout.clean_length(4096, 4096), 8192 + 4096);
        assert_eq!(layout.clean_length(4097, 1), 8192 + 4096 + 1);
    }

    #[test]
    fn block_sizes_must_be_powers_of_two_in_range() {
        for bad in [0, 1, 2048, 4095, 4097, 6144, 2 << 20] {
            assert!(Layout::new(bad).is_err(), "{bad}");
        }
        for good in [4096, 8192, 65536, 1 << 20] {
            let layout = Layout::new(good).unwrap();
            assert_eq!(layout.blocks_per_group(), u64::from(good) / 112);
        }
    }

    #[test]
    fn version_2_keeps_room_for_the_group_tag() {
        for p in [4096u32, 8192, 16384, 65536, 1 << 20] {
            let layout = Layout::for_version(p, 2).unwrap();
            let n = layout.blocks_per_group();
            assert!(
                n * SLOT_PAIR_LEN as u64 + GROUP_TAG_LEN as u64 <= u64::from(p),
                "{p}"
            );
        }
        assert_eq!(Layout::for_version(4096, 2).unwrap().blocks_per_group(), 36);
        assert_eq!(Layout::for_version(8192, 2).unwrap().blocks_per_group(), 72);
        assert_eq!(Layout::for_version(8192, 1).unwrap().blocks_per_group(), 73);
    }

    #[test]
    fn largest_object_offsets_fit_in_i64() {
        for p in [4096u32, 1 << 20] {
            let layout = Layout::new(p).unwrap();
            let last = (MAX_OBJECT_SIZE - 1) / u64::from(p);
            assert!(layout.data_offset(last) + u64::from(p) < i64::MAX as u64);
        }
    }
}

//! Unit tests of the version 2 integrity mechanisms of `object`: the store key, the newest-slot
//! rule of clean objects, the object-wide generation counter, the cut recorded by a size
//! decrease, and the repair that a close after an interrupted write makes.

use super::block::SlotPair;
use super::layout::FORMAT_VERSION;
use super::layout::{Layout, SLOT_PAIR_LEN};
use super::{Algorithm, CryptoError, Key256, KeyRef, MemoryIo, Object, ObjectIo, StoreKey};

const P: usize = 4096;

fn store() -> StoreKey {
    StoreKey::new([7; 16], Key256::from_array([9; 32]))
}

fn kek() -> Key256 {
    Key256::from_array([3; 32])
}

fn layout() -> Layout {
    Layout::new(P as u32).unwrap()
}

fn create(store: &StoreKey, algorithm: Algorithm) -> Object<MemoryIo> {
    let (key_ref, kek) = match algorithm {
        Algorithm::None => (KeyRef::None, None),
        _ => (KeyRef::Master { version: 1 }, Some(kek())),
    };
    Object::create(
        MemoryIo::default(),
        store,
        algorithm,
        key_ref,
        kek.as_ref(),
        P as u32,
    )
    .unwrap()
}

fn reopen(bytes: Vec<u8>, store: &StoreKey) -> Result<Object<MemoryIo>, CryptoError> {
    Object::open(MemoryIo::from_bytes(bytes), store, Some(&kek()))
}

fn read_all(object: &Object<MemoryIo>) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; object.size() as usize];
    object.read_at(0, &mut out)?;
    Ok(out)
}

fn pair(bytes: &[u8], k: u64) -> SlotPair {
    let at = layout().slot_pair_offset(k) as usize;
    SlotPair::decode(&bytes[at..at + SLOT_PAIR_LEN], FORMAT_VERSION)
}

fn splice(into: &mut [u8], from: &[u8], at: u64, len: usize) {
    let at = at as usize;
    into[at..at + len].copy_from_slice(&from[at..at + len]);
}

#[test]
fn a_none_object_is_bound_to_its_store_key_and_id() {
    let mut object = create(&store(), Algorithm::None);
    object.write_at(0, b"in clear").unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    let data = layout().data_offset(0) as usize;
    assert_eq!(
        &bytes[data..data + 8],
        b"in clear",
        "none stays readable in clear"
    );
    let open = |store: &StoreKey| Object::open(MemoryIo::from_bytes(bytes.clone()), store, None);
    assert_eq!(read_all(&open(&store()).unwrap()).unwrap(), b"in clear");
    let other_key = StoreKey::new([7; 16], Key256::from_array([8; 32]));
    assert!(matches!(
        open(&other_key).err(),
        Some(CryptoError::Authentication(_))
    ));
    let other_id = StoreKey::new([6; 16], Key256::from_array([9; 32]));
    assert!(matches!(
        open(&other_id).err(),
        Some(CryptoError::Authentication(_))
    ));
}

#[test]
fn a_clean_object_accepts_only_the_newest_slot() {
    let mut object = create(&store(), Algorithm::Aes256);
    object.write_at(0, &[0xAA; 2 * P]).unwrap();
    let old = object.close().unwrap().snapshot().unwrap();
    let mut object = reopen(old.clone(), &store()).unwrap();
    object.write_at(P as u64, &[0xBB; P]).unwrap();
    let new = object.close().unwrap().snapshot().unwrap();
    // Only the data page goes back: the old slot would authenticate it, but it is not newest.
    let mut rolled = new.clone();
    splice(&mut rolled, &old, layout().data_offset(1), P);
    let result = reopen(rolled, &store()).and_then(|o| read_all(&o));
    assert!(matches!(result, Err(CryptoError::Authentication(_))));
    assert_eq!(read_all(&reopen(new, &store()).unwrap()).unwrap()[P], 0xBB);
}

#[test]
fn generations_never_restart_after_a_truncate() {
    let mut object = create(&store(), Algorithm::Aes256);
    object.write_at(0, &[1; 3 * P]).unwrap();
    object.write_at(0, &[2; 3 * P]).unwrap();
    let before = object.io().snapshot().unwrap();
    let highest = (0..3)
        .map(|k| pair(&before, k))
        .flat_map(|p| p.0)
        .map(|s| s.generation);
    let highest = highest.max().unwrap();
    object.set_size(0).unwrap();
    object.write_at(0, &[3; 3 * P]).unwrap();
    let after = object.close().unwrap().snapshot().unwrap();
    for k in 0..3 {
        let newest = pair(&after, k)
            .0
            .iter()
            .map(|s| s.generation)
            .max()
            .unwrap();
        assert!(newest > highest, "block {k}: {newest} <= {highest}");
    }
}

#[test]
fn a_block_cut_by_a_truncate_does_not_come_back() {
    let mut object = create(&store(), Algorithm::Aes256);
    object.write_at(0, &[0xAA; 3 * P]).unwrap();
    let old = object.close().unwrap().snapshot().unwrap();
    let mut object = reopen(old.clone(), &store()).unwrap();
    object.set_size(P as u64).unwrap();
    object.write_at(P as u64, &[0xCC; 2 * P]).unwrap();
    let new = object.close().unwrap().snapshot().unwrap();
    let mut replayed = new.clone();
    splice(
        &mut replayed,
        &old,
        layout().slot_pair_offset(2),
        SLOT_PAIR_LEN,
    );
    splice(&mut replayed, &old, layout().data_offset(2), P);
    let result = reopen(replayed, &store()).and_then(|o| read_all(&o));
    assert!(matches!(result, Err(CryptoError::Authentication(_))));
    assert_eq!(
        read_all(&reopen(new, &store()).unwrap()).unwrap()[2 * P],
        0xCC
    );
}

/// A write interrupted between slot and data page (the new slot is on disk, the page is the
/// old one): the dirty object still reads the old version, and closing it repairs the block
/// so the clean object reads it too.
#[test]
fn closing_after_an_interrupted_write_keeps_the_old_version_readable() {
    let mut object = create(&store(), Algorithm::Aes256);
    object.write_at(0, &[0xAA; 2 * P]).unwrap();
    let old = object.close().unwrap().snapshot().unwrap();
    let mut object = reopen(old.clone(), &store()).unwrap();
    object.write_at(P as u64, &[0xBB; P]).unwrap();
    let mut crashed = object.io().snapshot().unwrap();
    drop(object);
    splice(&mut crashed, &old, layout().data_offset(1), P);
    let object = reopen(crashed, &store()).unwrap();
    assert!(object.is_dirty());
    assert_eq!(read_all(&object).unwrap(), vec![0xAA; 2 * P]);
    let closed = object.close().unwrap().snapshot().unwrap();
    let object = reopen(closed, &store()).unwrap();
    assert!(!object.is_dirty());
    assert_eq!(read_all(&object).unwrap(), vec![0xAA; 2 * P]);
}

#[test]
fn the_header_reserves_generations_before_slots_use_them() {
    let mut object = create(&store(), Algorithm::None);
    object.write_at(0, &[5; 4 * P]).unwrap();
    let bytes = object.io().snapshot().unwrap();
    let limit = u64::from_le_bytes(bytes[64..72].try_into().unwrap());
    let used = (0..4).flat_map(|k| pair(&bytes, k).0).map(|s| s.generation);
    assert!(used.max().unwrap() <= limit);
    assert_eq!(object.io().len().unwrap(), bytes.len() as u64);
}

/// A sparse object: a written block whose slot pair is zeroed fails authentication (the group
/// tag no longer matches), while the holes the object made still read as zeros.
#[test]
fn a_zeroed_slot_pair_is_not_a_hole() {
    let mut object = create(&store(), Algorithm::Aes256);
    object.write_at(0, &[1; P]).unwrap();
    object.write_at(5 * P as u64, &[5; P]).unwrap();
    object.write_at(40 * P as u64, &[40; P]).unwrap();
    assert!(object.is_sparse());
    let bytes = object.close().unwrap().snapshot().unwrap();
    let data = read_all(&reopen(bytes.clone(), &store()).unwrap()).unwrap();
    assert_eq!(data[3 * P..4 * P], [0; P], "a hole reads as zeros");
    assert_eq!(data[5 * P], 5);
    for k in [5u64, 40] {
        let mut tampered = bytes.clone();
        let at = layout().slot_pair_offset(k) as usize;
        tampered[at..at + SLOT_PAIR_LEN].fill(0);
        let result = reopen(tampered, &store()).and_then(|o| read_all(&o));
        assert!(
            matches!(result, Err(CryptoError::Authentication(_))),
            "block {k}: {result:?}"
        );
    }
    // The group tag itself is authenticated: flipping it makes the group's holes fail.
    let mut tampered = bytes;
    let tag_at = (layout().meta_page_offset(0) + P as u64 - 1) as usize;
    tampered[tag_at] ^= 1;
    let result = reopen(tampered, &store()).and_then(|o| read_all(&o));
    assert!(matches!(result, Err(CryptoError::Authentication(_))));
}

/// Truncating clears the slot pairs past the new end and updates the group tag with them, so
/// an extension over them reads as holes.
#[test]
fn a_truncate_then_extension_reads_holes() {
    let mut object = create(&store(), Algorithm::None);
    object.write_at(0, &[9; 4 * P]).unwrap();
    object.set_size(P as u64).unwrap();
    object.set_size(4 * P as u64).unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    let object = Object::open(MemoryIo::from_bytes(bytes), &store(), None).unwrap();
    let data = read_all(&object).unwrap();
    assert_eq!(data[..P], [9; P]);
    assert!(data[P..].iter().all(|&b| b == 0));
}

/// Counts header writes (offset 0) of an object.
struct CountingIo {
    inner: MemoryIo,
    header_writes: std::sync::atomic::AtomicUsize,
}

impl ObjectIo for CountingIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if offset == 0 {
            self.header_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Overwriting blocks of a clean object costs one header write per session (DIRTY set,
/// generations reserved), not one more for the reservation.
#[test]
fn a_write_session_reserves_generations_in_its_first_header_write() {
    let mut object = create(&store(), Algorithm::Aes256);
    object.write_at(0, &[1; 4 * P]).unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    let io = CountingIo {
        inner: MemoryIo::from_bytes(bytes),
        header_writes: std::sync::atomic::AtomicUsize::new(0),
    };
    let mut object = Object::open(io, &store(), Some(&kek())).unwrap();
    for round in 0..10u8 {
        object.write_at(0, &[round; 4 * P]).unwrap();
    }
    let writes = &object.io().header_writes;
    assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn an_object_opened_clean_keeps_no_block_buffers_until_it_writes() {
    let store = store();
    let mut object = create(&store, Algorithm::Aes256);
    object.write_at(0, &vec![7u8; 3 * P + 100]).unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    // Opening checks the last block and its meta page; the buffers it used are let go, so
    // thousands of open files do not hold two blocks each.
    let mut object = reopen(bytes, &store).unwrap();
    assert_eq!(object.buffered_bytes(), 0);
    assert_eq!(read_all(&object).unwrap(), vec![7u8; 3 * P + 100]);
    assert_eq!(
        object.buffered_bytes(),
        0,
        "reads use the thread's scratch buffers"
    );
    // A partial write loads its block again and still works.
    object.write_at(5, b"hello").unwrap();
    let mut expected = vec![7u8; 3 * P + 100];
    expected[5..10].copy_from_slice(b"hello");
    assert_eq!(read_all(&object).unwrap(), expected);
    let bytes = object.close().unwrap().snapshot().unwrap();
    assert_eq!(read_all(&reopen(bytes, &store).unwrap()).unwrap(), expected);
}

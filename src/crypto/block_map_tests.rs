//! Unit tests of the block map of version 3 (`object`): the header's root commits to every
//! meta page, so a block put back together with its slot pair, a whole group rolled back or
//! erased, and blocks cut by an earlier truncate all fail authentication, in a clean object
//! and while it is open; a crash-interrupted session still recovers.

use super::layout::{Layout, SLOT_PAIR_LEN};
use super::{Algorithm, CryptoError, Key256, KeyRef, MemoryIo, Object, StoreKey};

const P: usize = 4096;
const N: u64 = 36;

fn store() -> StoreKey {
    StoreKey::new([7; 16], Key256::from_array([9; 32]))
}

fn kek() -> Key256 {
    Key256::from_array([3; 32])
}

fn layout() -> Layout {
    Layout::for_version(P as u32, 3).unwrap()
}

fn create() -> Object<MemoryIo> {
    Object::create(
        MemoryIo::default(),
        &store(),
        Algorithm::Aes256,
        KeyRef::Master { version: 1 },
        Some(&kek()),
        P as u32,
    )
    .unwrap()
}

fn reopen(bytes: Vec<u8>) -> Result<Object<MemoryIo>, CryptoError> {
    Object::open(MemoryIo::from_bytes(bytes), &store(), Some(&kek()))
}

fn read_all(object: &Object<MemoryIo>) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; object.size() as usize];
    object.read_at(0, &mut out)?;
    Ok(out)
}

fn open_and_read(bytes: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    reopen(bytes).and_then(|o| read_all(&o))
}

fn splice(into: &mut [u8], from: &[u8], at: u64, len: usize) {
    let at = at as usize;
    into[at..at + len].copy_from_slice(&from[at..at + len]);
}

fn assert_refused(result: Result<Vec<u8>, CryptoError>, what: &str) {
    assert!(
        matches!(result, Err(CryptoError::Authentication(_))),
        "{what}: {result:?}"
    );
}

/// Two genuine states of one object: `old`, then `new` after block 1 was written again.
fn two_versions() -> (Vec<u8>, Vec<u8>) {
    let mut object = create();
    object.write_at(0, &[0xAA; 3 * P]).unwrap();
    let old = object.close().unwrap().snapshot().unwrap();
    let mut object = reopen(old.clone()).unwrap();
    object.write_at(P as u64, &[0xBB; P]).unwrap();
    let new = object.close().unwrap().snapshot().unwrap();
    (old, new)
}

#[test]
fn a_block_put_back_with_its_slot_pair_is_refused() {
    let (old, new) = two_versions();
    let mut rolled = new.clone();
    splice(
        &mut rolled,
        &old,
        layout().slot_pair_offset(1),
        SLOT_PAIR_LEN,
    );
    splice(&mut rolled, &old, layout().data_offset(1), P);
    assert_refused(open_and_read(rolled.clone()), "slot pair and data page");
    // The same with the whole meta page of the group (its tag included).
    let mut rolled = new.clone();
    splice(&mut rolled, &old, layout().meta_page_offset(0), P);
    splice(&mut rolled, &old, layout().data_offset(1), P);
    assert_refused(open_and_read(rolled), "meta page and data page");
    assert_eq!(open_and_read(new).unwrap()[P], 0xBB);
}

#[test]
fn a_rolled_back_group_is_refused_while_the_object_is_open() {
    let (old, new) = two_versions();
    let object = reopen(new.clone()).unwrap();
    assert_eq!(read_all(&object).unwrap()[P], 0xBB, "builds the block map");
    // Someone with the store puts the old version back under the open object.
    let mut bytes = object.io().bytes.lock().unwrap();
    splice(&mut bytes, &old, layout().meta_page_offset(0), P);
    splice(&mut bytes, &old, layout().data_offset(1), P);
    drop(bytes);
    let mut out = vec![0u8; P];
    let result = object.read_at(P as u64, &mut out);
    assert!(
        matches!(result, Err(CryptoError::Authentication(_))),
        "{result:?}"
    );
}

#[test]
fn a_group_rolled_back_in_a_large_object_is_refused() {
    let mut object = create();
    object.write_at(0, &vec![1u8; 3 * N as usize * P]).unwrap();
    let old = object.close().unwrap().snapshot().unwrap();
    let mut object = reopen(old.clone()).unwrap();
    let k = N + 3;
    object.write_at(k * P as u64, &[2u8; P]).unwrap();
    let new = object.close().unwrap().snapshot().unwrap();
    let mut rolled = new.clone();
    splice(&mut rolled, &old, layout().meta_page_offset(k), P);
    splice(&mut rolled, &old, layout().data_offset(k), P);
    assert_refused(open_and_read(rolled), "group 1 rolled back");
    // Reading only another group still finds it: opening checks the whole map once.
    let mut rolled_other = new.clone();
    splice(&mut rolled_other, &old, layout().meta_page_offset(k), P);
    splice(&mut rolled_other, &old, layout().data_offset(k), P);
    let object = reopen(rolled_other).unwrap();
    let mut out = vec![0u8; P];
    assert!(matches!(
        object.read_at(0, &mut out),
        Err(CryptoError::Authentication(_))
    ));
    assert_eq!(open_and_read(new).unwrap()[k as usize * P], 2);
}

#[test]
fn an_erased_group_of_a_sparse_object_is_refused() {
    let mut object = create();
    object.write_at(0, &[1; P]).unwrap();
    object.write_at(40 * P as u64, &[40; P]).unwrap();
    object.write_at(80 * P as u64, &[80; P]).unwrap();
    assert!(object.is_sparse());
    let bytes = object.close().unwrap().snapshot().unwrap();
    assert_eq!(open_and_read(bytes.clone()).unwrap()[40 * P], 40);
    // Group 1 (blocks 36..72): its meta page and every data page zeroed.
    let mut erased = bytes.clone();
    let start = layout().meta_page_offset(N) as usize;
    let end = layout().meta_page_offset(2 * N) as usize;
    erased[start..end].fill(0);
    assert_refused(open_and_read(erased), "erased group");
}

#[test]
fn blocks_cut_by_an_earlier_truncate_do_not_come_back() {
    let mut object = create();
    object.write_at(0, &[0xAA; 5 * P]).unwrap();
    let old = object.close().unwrap().snapshot().unwrap();
    let mut object = reopen(old.clone()).unwrap();
    object.set_size(P as u64).unwrap();
    object.write_at(P as u64, &[0xCC; 4 * P]).unwrap();
    // A later truncate replaces the cut the first one recorded: blocks 1 and 2 are below it,
    // and no hole is left whose group tag would notice.
    object.set_size(4 * P as u64 + 100).unwrap();
    let new = object.close().unwrap().snapshot().unwrap();
    let data = open_and_read(new.clone()).unwrap();
    assert_eq!(data[P..], [0xCC; 3 * P + 100]);
    let mut replayed = new;
    for k in 1..3 {
        splice(
            &mut replayed,
            &old,
            layout().slot_pair_offset(k),
            SLOT_PAIR_LEN,
        );
        splice(&mut replayed, &old, layout().data_offset(k), P);
    }
    assert_refused(open_and_read(replayed), "blocks of the first truncate");
}

#[test]
fn a_clean_header_commits_to_the_block_map_and_rewrap_keeps_it() {
    let (_, new) = two_versions();
    let mut object = reopen(new).unwrap();
    object
        .rewrap(
            KeyRef::Master { version: 2 },
            Some(&Key256::from_array([4; 32])),
        )
        .unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    let object = Object::open(
        MemoryIo::from_bytes(bytes.clone()),
        &store(),
        Some(&Key256::from_array([4; 32])),
    )
    .unwrap();
    assert_eq!(read_all(&object).unwrap()[P], 0xBB);
    assert!(object.verify().unwrap().problems.is_empty());
    // fsck's full check names the rolled-back map.
    let mut tampered = bytes;
    let at = layout().slot_pair_offset(0) as usize;
    tampered[at..at + SLOT_PAIR_LEN].fill(0);
    let object = Object::open(
        MemoryIo::from_bytes(tampered),
        &store(),
        Some(&Key256::from_array([4; 32])),
    )
    .unwrap();
    let report = object.verify().unwrap();
    assert!(report.block_map.is_some(), "{report:?}");
}

/// After a power loss that kept an older meta page behind a clean header, `fsck --repair`
/// takes the object as found: the map is committed again, blocks read their surviving
/// version, and a block that fails on its own still fails alone.
#[test]
fn the_map_can_be_recommitted_after_a_power_loss() {
    let (old, new) = two_versions();
    let mut stale = new.clone();
    splice(&mut stale, &old, layout().meta_page_offset(0), P);
    splice(&mut stale, &old, layout().data_offset(1), P);
    let mut object = reopen(stale).unwrap();
    let report = object.verify().unwrap();
    assert!(
        report.block_map.is_some() && report.problems.is_empty(),
        "{report:?}"
    );
    object.recommit_block_map().unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    assert_eq!(
        open_and_read(bytes).unwrap()[P],
        0xAA,
        "the older version, accepted"
    );

    // The new slot reached the disk, the data page did not: the old version stays.
    let mut torn = new.clone();
    splice(&mut torn, &old, layout().data_offset(1), P);
    let mut object = reopen(torn).unwrap();
    object.recommit_block_map().unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    assert_eq!(open_and_read(bytes).unwrap()[P..2 * P], [0xAA; P]);

    // The old meta page came back but not the old data page: block 1 has no version left
    // and fails alone; the others read.
    let mut broken = new;
    splice(&mut broken, &old, layout().meta_page_offset(0), P);
    let mut object = reopen(broken).unwrap();
    object.recommit_block_map().unwrap();
    let object = reopen(object.close().unwrap().snapshot().unwrap()).unwrap();
    let mut out = vec![0u8; P];
    object.read_at(0, &mut out).unwrap();
    assert_eq!(out, [0xAA; P]);
    object.read_at(2 * P as u64, &mut out).unwrap();
    assert!(matches!(
        object.read_at(P as u64, &mut out),
        Err(CryptoError::Authentication(_))
    ));
}

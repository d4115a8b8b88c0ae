//! Behaviour of an object through its public API: round trips at any offset, holes,
//! truncation, reopening, rewrap, key and context checks, and the committed-size rules.

mod support;

use ssefs::crypto::{
    Algorithm, CryptoError, DEFAULT_BLOCK_SIZE, Key256, KeyRef, MemoryIo, Object, ObjectIo,
    peek_header, unwrap_key, wrap_key,
};
use support::keys::store_key;

const P: usize = DEFAULT_BLOCK_SIZE as usize;

fn kek(byte: u8) -> Key256 {
    Key256::from_bytes(&[byte; 32]).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

fn new_object(kek: &Key256) -> Object<MemoryIo> {
    Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Aes256,
        KeyRef::Master { version: 3 },
        Some(kek),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap()
}

fn read_all<I: ObjectIo>(object: &Object<I>) -> Vec<u8> {
    let mut out = vec![0u8; object.size() as usize];
    let n = object.read_at(0, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

fn reopen(object: Object<MemoryIo>, kek: &Key256) -> Object<MemoryIo> {
    let io = object.close().unwrap();
    Object::open(io, &store_key(), Some(kek)).unwrap()
}

#[test]
fn create_writes_only_a_header_page() {
    let key = kek(1);
    let object = new_object(&key);
    assert_eq!(object.size(), 0);
    assert_eq!(object.io().len().unwrap(), P as u64);
    let info = peek_header(object.io()).unwrap();
    assert_eq!(info.algorithm, Algorithm::Aes256);
    assert_eq!(info.key_ref, KeyRef::Master { version: 3 });
    assert_eq!(info.size, 0);
    let object = reopen(object, &key);
    assert_eq!(read_all(&object), Vec::<u8>::new());
}

#[test]
fn writes_read_back_across_blocks_and_groups() {
    let key = kek(2);
    let mut object = new_object(&key);
    // 40 blocks crosses from the first group (36 blocks) into the second.
    let data = pattern(40 * P + 123, 7);
    object.write_at(0, &data).unwrap();
    assert_eq!(read_all(&object), data);
    let object = reopen(object, &key);
    assert_eq!(object.size(), data.len() as u64);
    assert_eq!(read_all(&object), data);
    let mut middle = vec![0u8; 3 * P + 17];
    object.read_at(35 * P as u64 - 5, &mut middle).unwrap();
    assert_eq!(middle, data[35 * P - 5..38 * P + 12]);
}

#[test]
fn partial_rewrites_keep_the_bytes_around_them() {
    let key = kek(3);
    let mut object = new_object(&key);
    let mut model = pattern(5 * P, 1);
    object.write_at(0, &model).unwrap();
    for (offset, len, seed) in [
        (10usize, 5usize, 9u8),
        (P - 3, 7, 4),
        (2 * P, P, 5),
        (3 * P + 1, 2 * P - 1, 6),
    ] {
        let patch = pattern(len, seed);
        object.write_at(offset as u64, &patch).unwrap();
        model[offset..offset + len].copy_from_slice(&patch);
        assert_eq!(read_all(&object), model);
    }
    let object = reopen(object, &key);
    assert_eq!(read_all(&object), model);
}

#[test]
fn writing_past_the_end_leaves_a_hole_of_zeros() {
    let key = kek(4);
    let mut object = new_object(&key);
    object.write_at(0, b"head").unwrap();
    object.write_at(50 * P as u64 + 10, b"tail").unwrap();
    let mut model = vec![0u8; 50 * P + 14];
    model[..4].copy_from_slice(b"head");
    model[50 * P + 10..].copy_from_slice(b"tail");
    assert_eq!(read_all(&object), model);
    let object = reopen(object, &key);
    assert_eq!(read_all(&object), model);
    assert!(object.is_sparse());
}

#[test]
fn shrink_then_grow_reads_zeros_not_old_data() {
    let key = kek(5);
    let mut object = new_object(&key);
    let data = pattern(3 * P + 100, 3);
    object.write_at(0, &data).unwrap();
    object.set_size(P as u64 + 10).unwrap();
    assert_eq!(read_all(&object), data[..P + 10]);
    object.set_size(4 * P as u64).unwrap();
    let mut model = data[..P + 10].to_vec();
    model.resize(4 * P, 0);
    assert_eq!(read_all(&object), model);
    let mut object = reopen(object, &key);
    assert_eq!(read_all(&object), model);
    object.write_at(2 * P as u64, b"x").unwrap();
    model[2 * P] = b'x';
    let object = reopen(object, &key);
    assert_eq!(read_all(&object), model);
}

#[test]
fn truncate_to_zero_and_rewrite() {
    let key = kek(6);
    let mut object = new_object(&key);
    object.write_at(0, &pattern(2 * P, 1)).unwrap();
    object.set_size(0).unwrap();
    assert_eq!(object.size(), 0);
    let object = reopen(object, &key);
    assert_eq!(object.io().len().unwrap(), P as u64);
    let mut object = object;
    object.write_at(0, b"new").unwrap();
    let object = reopen(object, &key);
    assert_eq!(read_all(&object), b"new");
}

#[test]
fn reads_clamp_to_the_size() {
    let key = kek(7);
    let mut object = new_object(&key);
    object.write_at(0, b"0123456789").unwrap();
    let mut buf = [0xAAu8; 20];
    assert_eq!(object.read_at(4, &mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"456789");
    assert_eq!(object.read_at(10, &mut buf).unwrap(), 0);
    assert_eq!(object.read_at(u64::MAX, &mut buf).unwrap(), 0);
}

#[test]
fn wrong_kek_does_not_open() {
    let key = kek(8);
    let mut object = new_object(&key);
    object.write_at(0, b"secret").unwrap();
    let io = object.close().unwrap();
    let err = Object::open(io, &store_key(), Some(&kek(9))).err().unwrap();
    assert!(matches!(err, CryptoError::Authentication(_)), "{err:?}");
}

#[test]
fn kek_presence_must_match_the_algorithm() {
    let key = kek(1);
    let none_with_key = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::None,
        KeyRef::None,
        Some(&key),
        DEFAULT_BLOCK_SIZE,
    );
    assert!(matches!(none_with_key, Err(CryptoError::Malformed(_))));
    let aes_without_key = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Aes256,
        KeyRef::Master { version: 1 },
        None,
        DEFAULT_BLOCK_SIZE,
    );
    assert!(matches!(aes_without_key, Err(CryptoError::Malformed(_))));
    let mismatched = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Kms,
        KeyRef::Master { version: 1 },
        Some(&key),
        DEFAULT_BLOCK_SIZE,
    );
    assert!(matches!(mismatched, Err(CryptoError::Malformed(_))));
    let empty_id = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Kms,
        KeyRef::Cmk {
            key_id: String::new(),
            version: 1,
        },
        Some(&key),
        DEFAULT_BLOCK_SIZE,
    );
    assert!(matches!(empty_id, Err(CryptoError::Malformed(_))));
    let bad_block = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::None,
        KeyRef::None,
        None,
        5000,
    );
    assert!(matches!(bad_block, Err(CryptoError::Malformed(_))));
}

#[test]
fn rewrap_changes_only_the_header() {
    let old = kek(10);
    let new = kek(11);
    let mut object = new_object(&old);
    let data = pattern(3 * P, 2);
    object.write_at(0, &data).unwrap();
    let io = object.close().unwrap();
    let before = io.snapshot().unwrap();
    let mut object = Object::open(io, &store_key(), Some(&old)).unwrap();
    let cmk = KeyRef::Cmk {
        key_id: "key-abc".into(),
        version: 2,
    };
    object.rewrap(cmk.clone(), Some(&new)).unwrap();
    let io = object.close().unwrap();
    let after = io.snapshot().unwrap();
    assert_eq!(before[P..], after[P..]);
    assert_ne!(before[..P], after[..P]);
    let info = peek_header(&io).unwrap();
    assert_eq!(info.algorithm, Algorithm::Kms);
    assert_eq!(info.key_ref, cmk);
    let io = MemoryIo::from_bytes(after);
    assert!(
        Object::open(
            MemoryIo::from_bytes(io.snapshot().unwrap()),
            &store_key(),
            Some(&old)
        )
        .is_err()
    );
    let object = Object::open(io, &store_key(), Some(&new)).unwrap();
    assert_eq!(read_all(&object), data);
}

#[test]
fn unencrypted_objects_are_stored_in_clear_but_checked() {
    let mut object = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::None,
        KeyRef::None,
        None,
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    object.write_at(0, b"plain words").unwrap();
    let io = object.close().unwrap();
    let bytes = io.snapshot().unwrap();
    assert_eq!(&bytes[2 * P..2 * P + 11], b"plain words");
    let object = Object::open(io, &store_key(), None).unwrap();
    assert_eq!(read_all(&object), b"plain words");
    let mut bytes = bytes;
    bytes[2 * P] ^= 1;
    let object = Object::open(MemoryIo::from_bytes(bytes), &store_key(), None);
    assert!(matches!(object.err(), Some(CryptoError::Authentication(_))));
}

#[test]
fn encrypted_objects_hold_no_plaintext() {
    let key = kek(12);
    let mut object = new_object(&key);
    let secret = b"ATTACK AT DAWN ".repeat(1000);
    object.write_at(0, &secret).unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    assert!(!bytes.windows(15).any(|w| w == b"ATTACK AT DAWN "));
}

#[test]
fn large_block_sizes_work() {
    let key = kek(13);
    for block_size in [8192u32, 65536, 1 << 20] {
        let mut object = Object::create(
            MemoryIo::default(),
            &store_key(),
            Algorithm::Aes256,
            KeyRef::Master { version: 1 },
            Some(&key),
            block_size,
        )
        .unwrap();
        let data = pattern(3 * block_size as usize + 5, 4);
        object.write_at(7, &data).unwrap();
        let object = reopen(object, &key);
        let mut model = vec![0u8; 7];
        model.extend_from_slice(&data);
        assert_eq!(read_all(&object), model);
        assert!(object.verify().unwrap().problems.is_empty());
    }
}

#[test]
fn wrap_key_binds_the_context() {
    let key = kek(14);
    let secret = Key256::generate().unwrap();
    let wrapped = wrap_key(&key, b"context-a", &secret).unwrap();
    assert_eq!(wrapped.0.len(), 80);
    let back = unwrap_key(&key, b"context-a", &wrapped).unwrap();
    assert_eq!(back.expose_secret(), secret.expose_secret());
    assert!(matches!(
        unwrap_key(&key, b"context-b", &wrapped),
        Err(CryptoError::Authentication(_))
    ));
    assert!(matches!(
        unwrap_key(&kek(15), b"context-a", &wrapped),
        Err(CryptoError::Authentication(_))
    ));
    let mut short = wrapped.clone();
    short.0.pop();
    assert!(unwrap_key(&key, b"context-a", &short).is_err());
    assert_eq!(format!("{secret:?}"), "Key256(<redacted>)");
}

#[test]
fn verify_reports_every_bad_block() {
    let key = kek(16);
    let mut object = new_object(&key);
    object.write_at(0, &pattern(6 * P, 8)).unwrap();
    let io = object.close().unwrap();
    let mut bytes = io.snapshot().unwrap();
    // Data pages of blocks 1 and 3 (block 5, the last, stays intact so open succeeds).
    bytes[2 * P + P + 9] ^= 0x80;
    bytes[2 * P + 3 * P] ^= 0x01;
    let object = Object::open(MemoryIo::from_bytes(bytes), &store_key(), Some(&key)).unwrap();
    let report = object.verify().unwrap();
    assert_eq!(report.blocks, 6);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems[0].contains("block 1"));
    assert!(report.problems[1].contains("block 3"));
}

#[test]
fn concurrent_readers_share_one_object() {
    let key = kek(17);
    let mut object = new_object(&key);
    let data = pattern(64 * P, 5);
    object.write_at(0, &data).unwrap();
    let object = std::sync::Arc::new(object);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let object = object.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                for i in 0..50usize {
                    let offset = (i * 7919 + t * 131) % (data.len() - 3 * P);
                    let mut buf = vec![0u8; 3 * P];
                    object.read_at(offset as u64, &mut buf).unwrap();
                    assert_eq!(buf, data[offset..offset + 3 * P]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn file_backed_objects_round_trip() {
    let key = kek(18);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut object = Object::create(
        file,
        &store_key(),
        Algorithm::Kms,
        KeyRef::Cmk {
            key_id: "k1".into(),
            version: 1,
        },
        Some(&key),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    let data = pattern(10 * P + 1, 3);
    object.write_at(0, &data).unwrap();
    object.sync().unwrap();
    object.close().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let object = Object::open(file, &store_key(), Some(&key)).unwrap();
    assert_eq!(read_all(&object), data);
}

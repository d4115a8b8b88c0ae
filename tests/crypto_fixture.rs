//! Objects written by each format version, kept in `tests/fixtures/vN/` with their test-only
//! KEKs and expected plaintext: they must always open and decrypt (version 1 read-only). To
//! write the current version's again (only when a new format version is introduced), run this
//! test with SSEFS_WRITE_FIXTURES=1.

mod support;

use ssefs::crypto::{
    Algorithm, CryptoError, DEFAULT_BLOCK_SIZE, FORMAT_V2, FORMAT_VERSION, Key256, KeyRef,
    MemoryIo, Object, StoreKey, peek_header,
};
use std::path::PathBuf;

const P: usize = DEFAULT_BLOCK_SIZE as usize;

fn dir() -> PathBuf {
    version_dir(1)
}

fn version_dir(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"))
}

struct Fixture {
    name: &'static str,
    algorithm: Algorithm,
    key_ref: KeyRef,
}

fn fixtures() -> [Fixture; 3] {
    [
        Fixture {
            name: "aes256",
            algorithm: Algorithm::Aes256,
            key_ref: KeyRef::Master { version: 1 },
        },
        Fixture {
            name: "kms",
            algorithm: Algorithm::Kms,
            key_ref: KeyRef::Cmk {
                key_id: "0b6f4c1e-test-cmk".into(),
                version: 3,
            },
        },
        Fixture {
            name: "none",
            algorithm: Algorithm::None,
            key_ref: KeyRef::None,
        },
    ]
}

fn read_kek(dir: &std::path::Path, fixture: &Fixture) -> Option<Key256> {
    if fixture.algorithm == Algorithm::None {
        return None;
    }
    let text = std::fs::read_to_string(dir.join(format!("{}.kek.hex", fixture.name))).unwrap();
    let text = text.trim();
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    Some(Key256::from_bytes(&bytes).unwrap())
}

/// Three full blocks and a partial one; block 1 is rewritten, so it lives in slot B.
fn write_fixture(dir: &std::path::Path, fixture: &Fixture, plaintext: &[u8]) {
    let kek = (fixture.algorithm != Algorithm::None).then(|| Key256::generate().unwrap());
    let mut object = Object::create(
        MemoryIo::default(),
        &current_store_key(),
        fixture.algorithm,
        fixture.key_ref.clone(),
        kek.as_ref(),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    let mut first = plaintext.to_vec();
    first[P..2 * P].fill(0xEE);
    object.write_at(0, &first).unwrap();
    object.write_at(P as u64, &plaintext[P..2 * P]).unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    std::fs::write(dir.join(format!("{}.obj", fixture.name)), bytes).unwrap();
    if let Some(kek) = kek {
        let hex: String = kek
            .expose_secret()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(dir.join(format!("{}.kek.hex", fixture.name)), hex + "\n").unwrap();
    }
}

#[test]
fn v1_fixtures_still_decrypt() {
    let plaintext = std::fs::read(dir().join("plaintext.bin")).unwrap();
    assert_eq!(plaintext.len(), 3 * P + 1000);
    for fixture in fixtures() {
        let object = open_fixture(&dir(), &fixture, &store_key(), 1, plaintext.len());
        check_fixture(&object, &fixture, &plaintext);
        // Block 1 was written twice: its live slot is B, generation 2.
        let raw = object.io().snapshot().unwrap();
        let slot_b = &raw[P + 112 + 56..P + 112 + 64];
        assert_eq!(slot_b, [2, 0, 0, 0, 0, 16, 0, 0], "{}", fixture.name);
    }
}

#[test]
fn current_fixtures_still_decrypt() {
    let dir = version_dir(FORMAT_VERSION);
    let plaintext_path = dir.join("plaintext.bin");
    if std::env::var_os("SSEFS_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        let plaintext: Vec<u8> = (0..3 * P + 1000).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::write(&plaintext_path, &plaintext).unwrap();
        for fixture in fixtures() {
            write_fixture(&dir, &fixture, &plaintext);
        }
    }
    let plaintext = std::fs::read(&plaintext_path).unwrap();
    for fixture in fixtures() {
        let store = current_store_key();
        let object = open_fixture(&dir, &fixture, &store, FORMAT_VERSION, plaintext.len());
        check_fixture(&object, &fixture, &plaintext);
        // Block 1 was written twice: its live slot B has a higher generation than slot A.
        let raw = object.io().snapshot().unwrap();
        let generation = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
        assert!(
            generation(P + 112 + 56) > generation(P + 112),
            "{}",
            fixture.name
        );
    }
}

#[test]
fn v2_fixtures_still_decrypt_and_move_to_v3_by_a_header_write() {
    let dir = version_dir(FORMAT_V2);
    let plaintext = std::fs::read(dir.join("plaintext.bin")).unwrap();
    let store = current_store_key().with_min_version(FORMAT_V2);
    for fixture in fixtures() {
        let object = open_fixture(&dir, &fixture, &store, FORMAT_V2, plaintext.len());
        check_fixture(&object, &fixture, &plaintext);

        // `upgrade` rewrites the header alone: every other byte stays as it was.
        let before = object.io().snapshot().unwrap();
        let mut object = object;
        object.upgrade().unwrap();
        let after = object.close().unwrap().snapshot().unwrap();
        assert_eq!(before.len(), after.len(), "{}", fixture.name);
        assert_eq!(
            before[P..],
            after[P..],
            "{}: only page 0 changes",
            fixture.name
        );
        let io = MemoryIo::from_bytes(after);
        assert_eq!(peek_header(&io).unwrap().version, FORMAT_VERSION);
        let object = Object::open(io, &current_store_key(), read_kek(&dir, &fixture).as_ref())
            .unwrap_or_else(|e| panic!("{}: upgraded object: {e}", fixture.name));
        check_fixture(&object, &fixture, &plaintext);

        // A write session moves a version 2 object forward too, and it keeps working.
        let bytes = std::fs::read(dir.join(format!("{}.obj", fixture.name))).unwrap();
        let kek = read_kek(&dir, &fixture);
        let mut object = Object::open(MemoryIo::from_bytes(bytes), &store, kek.as_ref()).unwrap();
        object.write_at(5, b"written as v3").unwrap();
        let io = object.close().unwrap();
        assert_eq!(peek_header(&io).unwrap().version, FORMAT_VERSION);
        let object = Object::open(io, &current_store_key(), kek.as_ref()).unwrap();
        let mut expected = plaintext.clone();
        expected[5..18].copy_from_slice(b"written as v3");
        check_fixture(&object, &fixture, &expected);
    }
}

#[test]
fn a_store_on_v3_refuses_v2_objects() {
    let dir = version_dir(FORMAT_V2);
    let bytes = std::fs::read(dir.join("none.obj")).unwrap();
    let err = Object::open(MemoryIo::from_bytes(bytes), &current_store_key(), None)
        .err()
        .unwrap();
    assert!(matches!(err, CryptoError::Authentication(_)), "{err:?}");
}

fn open_fixture(
    dir: &std::path::Path,
    fixture: &Fixture,
    store: &StoreKey,
    version: u16,
    size: usize,
) -> Object<MemoryIo> {
    let bytes = std::fs::read(dir.join(format!("{}.obj", fixture.name))).unwrap();
    let io = MemoryIo::from_bytes(bytes);
    let info = peek_header(&io).unwrap();
    assert_eq!(info.version, version);
    assert_eq!(info.algorithm, fixture.algorithm);
    assert_eq!(info.key_ref, fixture.key_ref);
    assert_eq!(info.size, size as u64);
    let kek = read_kek(dir, fixture);
    Object::open(io, store, kek.as_ref()).unwrap()
}

fn check_fixture(object: &Object<MemoryIo>, fixture: &Fixture, plaintext: &[u8]) {
    assert!(!object.is_dirty());
    let mut out = vec![0u8; plaintext.len()];
    assert_eq!(object.read_at(0, &mut out).unwrap(), plaintext.len());
    assert_eq!(out, plaintext, "{}", fixture.name);
    let report = object.verify().unwrap();
    assert_eq!(report.blocks, 4);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The fixed store key the current version's fixtures were written under.
fn current_store_key() -> StoreKey {
    StoreKey::new([0x70; 16], Key256::from_bytes(&[0x71; 32]).unwrap())
}

/// A fixed store key of a store not yet upgraded (version 1 knows no store key).
fn store_key() -> StoreKey {
    support::keys::store_key().with_min_version(1)
}

#[test]
fn an_upgraded_store_refuses_v1_objects() {
    let bytes = std::fs::read(dir().join("none.obj")).unwrap();
    let store = StoreKey::new([0x70; 16], Key256::from_bytes(&[0x71; 32]).unwrap());
    let err = Object::open(MemoryIo::from_bytes(bytes), &store, None)
        .err()
        .unwrap();
    assert!(matches!(err, CryptoError::Authentication(_)), "{err:?}");
}

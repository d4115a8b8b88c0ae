//! Tampering with a stored object: every flipped, swapped, moved, cut or appended byte and
//! every relabelled or transplanted key yields an error, never wrong plaintext.

mod support;

use ssefs::crypto::{
    Algorithm, CryptoError, DEFAULT_BLOCK_SIZE, Key256, KeyRef, MemoryIo, Object, ObjectIo,
};
use support::keys::store_key;

const P: usize = DEFAULT_BLOCK_SIZE as usize;
/// Blocks per group for 4 KiB blocks.
const N: usize = 36;

fn key() -> Key256 {
    Key256::from_bytes(&[0x5a; 32]).unwrap()
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 256) as u8).collect()
}

fn slot_pair_offset(k: usize) -> usize {
    P + (k / N) * (N + 1) * P + (k % N) * 112
}

fn data_offset(k: usize) -> usize {
    P + (k / N) * (N + 1) * P + P + (k % N) * P
}

/// A closed object of `len` bytes whose block 1 (if any) was rewritten, so it uses both slots.
fn stored_object(algorithm: Algorithm, key_ref: KeyRef, len: usize) -> (Vec<u8>, Vec<u8>) {
    let key = key();
    let kek = (algorithm != Algorithm::None).then_some(&key);
    let mut object = Object::create(
        MemoryIo::default(),
        &store_key(),
        algorithm,
        key_ref,
        kek,
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    let data = content(len);
    object.write_at(0, &data).unwrap();
    if len >= 2 * P {
        object.write_at(P as u64, &data[P..2 * P]).unwrap();
    }
    (object.close().unwrap().snapshot().unwrap(), data)
}

fn aes_object(len: usize) -> (Vec<u8>, Vec<u8>) {
    stored_object(Algorithm::Aes256, KeyRef::Master { version: 4 }, len)
}

/// Opens `bytes` and reads everything: the plaintext, or the first error.
fn open_and_read(bytes: Vec<u8>, kek: Option<&Key256>) -> Result<Vec<u8>, CryptoError> {
    let object = Object::open(MemoryIo::from_bytes(bytes), &store_key(), kek)?;
    let mut out = vec![0u8; object.size() as usize];
    object.read_at(0, &mut out)?;
    Ok(out)
}

fn assert_rejected(result: Result<Vec<u8>, CryptoError>, what: &str) {
    match result {
        Err(CryptoError::Authentication(_))
        | Err(CryptoError::Malformed(_))
        | Err(CryptoError::NotAnObject)
        | Err(CryptoError::UnsupportedVersion(_)) => {}
        Err(other) => panic!("{what}: unexpected error {other:?}"),
        Ok(_) => panic!("{what}: tampered object was read"),
    }
}

/// Reading must either fail or give exactly the original plaintext.
fn assert_rejected_or_intact(result: Result<Vec<u8>, CryptoError>, original: &[u8], what: &str) {
    if let Ok(plain) = result {
        assert_eq!(plain, original, "{what}: wrong plaintext");
    }
}

/// Offset of the key reference kind in a version 3 header (after the 32-byte root).
const KEY_KIND: usize = 120;

fn header_record_len(bytes: &[u8]) -> usize {
    let n = bytes[KEY_KIND + 5] as usize;
    let w = u16::from_le_bytes([bytes[KEY_KIND + 6 + n], bytes[KEY_KIND + 7 + n]]) as usize;
    KEY_KIND + 8 + n + w + 32
}

#[test]
fn every_header_byte_is_protected() {
    for (algorithm, key_ref) in [
        (Algorithm::Aes256, KeyRef::Master { version: 4 }),
        (
            Algorithm::Kms,
            KeyRef::Cmk {
                key_id: "cmk-1".into(),
                version: 2,
            },
        ),
        (Algorithm::None, KeyRef::None),
    ] {
        let key = key();
        let kek = (algorithm != Algorithm::None).then_some(&key);
        let (bytes, data) = stored_object(algorithm, key_ref, 3 * P + 5);
        assert_eq!(open_and_read(bytes.clone(), kek).unwrap(), data);
        let record = header_record_len(&bytes);
        for i in 0..record {
            for flip in [0x01u8, 0x80] {
                let mut tampered = bytes.clone();
                tampered[i] ^= flip;
                assert_rejected(
                    open_and_read(tampered, kek),
                    &format!("{algorithm:?} header byte {i}"),
                );
            }
        }
    }
}

#[test]
fn every_slot_byte_of_a_block_is_protected() {
    let (bytes, data) = aes_object(3 * P + 5);
    let key = key();
    for k in [0usize, 1, 3] {
        let pair = slot_pair_offset(k);
        let mut rejected = 0;
        for i in pair..pair + 112 {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x04;
            let result = open_and_read(tampered, Some(&key));
            if result.is_err() {
                rejected += 1;
            }
            assert_rejected_or_intact(result, &data, &format!("block {k} slot byte {i}"));
        }
        // The active slot (56 bytes) must always be caught; the other slot may be ignored.
        assert!(rejected >= 56, "block {k}: only {rejected} flips rejected");
    }
}

#[test]
fn every_data_byte_is_protected() {
    let (bytes, _) = aes_object(2 * P + 300);
    let key = key();
    for k in 0..3 {
        let len = if k == 2 { 300 } else { P };
        for i in (0..len).step_by(7).chain([len - 1]) {
            let mut tampered = bytes.clone();
            tampered[data_offset(k) + i] ^= 0x10;
            assert_rejected(
                open_and_read(tampered, Some(&key)),
                &format!("block {k} byte {i}"),
            );
        }
    }
}

#[test]
fn swapped_blocks_are_rejected() {
    let (bytes, _) = aes_object(5 * P);
    let key = key();
    for (a, b) in [(0usize, 2usize), (2, 3), (1, 4)] {
        let mut tampered = bytes.clone();
        for (from, to) in [(a, b), (b, a)] {
            tampered[slot_pair_offset(to)..slot_pair_offset(to) + 112]
                .copy_from_slice(&bytes[slot_pair_offset(from)..slot_pair_offset(from) + 112]);
            tampered[data_offset(to)..data_offset(to) + P]
                .copy_from_slice(&bytes[data_offset(from)..data_offset(from) + P]);
        }
        assert_rejected(
            open_and_read(tampered, Some(&key)),
            &format!("swap {a} and {b}"),
        );
    }
}

#[test]
fn a_block_from_another_object_is_rejected() {
    let (bytes, _) = aes_object(4 * P);
    let (other, _) = aes_object(4 * P);
    let key = key();
    for k in 0..4 {
        let mut tampered = bytes.clone();
        tampered[slot_pair_offset(k)..slot_pair_offset(k) + 112]
            .copy_from_slice(&other[slot_pair_offset(k)..slot_pair_offset(k) + 112]);
        tampered[data_offset(k)..data_offset(k) + P]
            .copy_from_slice(&other[data_offset(k)..data_offset(k) + P]);
        assert_rejected(
            open_and_read(tampered, Some(&key)),
            &format!("block {k} moved"),
        );
    }
}

#[test]
fn cuts_at_and_between_block_boundaries_are_rejected() {
    let (bytes, _) = aes_object(40 * P + 77);
    let key = key();
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(P / 2).collect();
    for k in 0..41 {
        for cut in [
            data_offset(k),
            data_offset(k) + 1,
            slot_pair_offset(k),
            data_offset(k) - 1,
        ] {
            cuts.push(cut);
        }
    }
    cuts.extend([P, 512, 0, 8, bytes.len() - 1]);
    for cut in cuts.into_iter().filter(|&c| c < bytes.len()) {
        assert_rejected(
            open_and_read(bytes[..cut].to_vec(), Some(&key)),
            &format!("cut at {cut}"),
        );
    }
}

#[test]
fn appended_bytes_are_rejected() {
    let (bytes, _) = aes_object(2 * P + 10);
    let key = key();
    for extra in [1usize, 100, P, 3 * P] {
        for fill in [0u8, 0xff] {
            let mut tampered = bytes.clone();
            tampered.extend(std::iter::repeat_n(fill, extra));
            assert_rejected(
                open_and_read(tampered, Some(&key)),
                &format!("{extra} bytes appended"),
            );
        }
    }
}

#[test]
fn an_object_cut_during_a_write_session_still_fails_to_read() {
    // An interrupted session (DIRTY) skips the length check: blocks must catch the cut.
    let key = key();
    let mut object = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Aes256,
        KeyRef::Master { version: 1 },
        Some(&key),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    object.write_at(0, &content(6 * P + 9)).unwrap();
    let bytes = object.io().snapshot().unwrap();
    drop(object);
    for cut in (P..bytes.len())
        .step_by(P / 4)
        .chain([bytes.len() - 1, data_offset(5)])
    {
        assert_rejected(
            open_and_read(bytes[..cut].to_vec(), Some(&key)),
            &format!("dirty cut at {cut}"),
        );
    }
}

#[test]
fn a_wrapped_dek_copied_into_another_header_does_not_unwrap() {
    let (a, _) = aes_object(P);
    let (b, _) = aes_object(P);
    let key = key();
    let record = header_record_len(&a);
    let wrapped = record - 32 - 80..record - 32;
    let mut tampered = b.clone();
    tampered[wrapped.clone()].copy_from_slice(&a[wrapped]);
    let err = open_and_read(tampered, Some(&key)).unwrap_err();
    assert!(matches!(err, CryptoError::Authentication(_)), "{err:?}");
}

#[test]
fn a_relabelled_key_reference_does_not_unwrap() {
    let (bytes, _) = aes_object(P);
    let key = key();
    // Key version 4 -> 5: the DEK context changes, so the unwrap fails before the header tag.
    let mut tampered = bytes.clone();
    tampered[KEY_KIND + 1] = 5;
    let err = open_and_read(tampered, Some(&key)).unwrap_err();
    assert!(matches!(err, CryptoError::Authentication(_)), "{err:?}");
    // AES256/master -> KMS/CMK needs a key id, which shifts the record: malformed or rejected.
    let mut tampered = bytes.clone();
    tampered[10] = 2;
    tampered[KEY_KIND] = 2;
    assert_rejected(open_and_read(tampered, Some(&key)), "relabelled to KMS");
    // Algorithm none with the same layout is refused outright.
    let mut tampered = bytes;
    tampered[10] = 0;
    tampered[KEY_KIND] = 0;
    assert_rejected(open_and_read(tampered, None), "relabelled to none");
}

#[test]
fn zeroed_slots_do_not_read_as_zeros_in_a_dense_object() {
    let (bytes, _) = aes_object(3 * P);
    let key = key();
    let mut tampered = bytes;
    tampered[slot_pair_offset(1)..slot_pair_offset(1) + 112].fill(0);
    tampered[data_offset(1)..data_offset(1) + P].fill(0);
    assert_rejected(open_and_read(tampered, Some(&key)), "zeroed block 1");
}

#[test]
fn truncation_to_just_the_header_page_is_rejected() {
    let (bytes, _) = aes_object(5 * P + 3);
    let key = key();
    assert_rejected(
        open_and_read(bytes[..P].to_vec(), Some(&key)),
        "header page only",
    );
    let object = Object::open(MemoryIo::from_bytes(bytes), &store_key(), Some(&key)).unwrap();
    assert_eq!(object.io().len().unwrap() as usize, data_offset(5) + 3);
}

//! Reference tests: random sequences of writes, truncations, reads, syncs and close+reopen
//! on a real object, compared after every step with a plain `Vec<u8>`; and the header
//! parser and `Object::open` fed random and mutated bytes must return, never panic.

mod support;

use proptest::prelude::*;
use ssefs::crypto::{
    Algorithm, DEFAULT_BLOCK_SIZE, Key256, KeyRef, MemoryIo, Object, parse_header_bytes,
    peek_header,
};
use support::keys::store_key;

const P: u64 = DEFAULT_BLOCK_SIZE as u64;
/// Far enough to cross from the first group of 36 blocks into the second.
const SPAN: u64 = 48 * P;

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, len: usize, seed: u8 },
    SetSize(u64),
    Read { offset: u64, len: usize },
    Sync,
    Reopen,
}

/// Offsets near block and group boundaries are the interesting ones.
fn position() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..SPAN,
        (0..48u64, -3i64..=3).prop_map(|(k, d)| (k * P).saturating_add_signed(d)),
        (0..2u64, -2i64..=2).prop_map(|(g, d)| (P + 36 * P * g).saturating_add_signed(d)),
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        0..64usize,
        0..3 * P as usize,
        Just(P as usize),
        0..40 * P as usize
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (position(), length(), any::<u8>()).prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        2 => position().prop_map(Op::SetSize),
        3 => (position(), length()).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => Just(Op::Sync),
        2 => Just(Op::Reopen),
    ]
}

fn bytes_for(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

fn check_all(object: &Object<MemoryIo>, model: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(object.size(), model.len() as u64);
    let mut all = vec![0u8; model.len()];
    prop_assert_eq!(object.read_at(0, &mut all).unwrap(), model.len());
    prop_assert!(all == model, "content differs from the model");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn object_matches_a_vec_model(ops in prop::collection::vec(op(), 1..24), kms in any::<bool>()) {
        let kek = Key256::from_bytes(&[7u8; 32]).unwrap();
        let (algorithm, key_ref) = if kms {
            (Algorithm::Kms, KeyRef::Cmk { key_id: "cmk".into(), version: 1 })
        } else {
            (Algorithm::Aes256, KeyRef::Master { version: 1 })
        };
        let mut object = Object::create(MemoryIo::default(), &store_key(), algorithm, key_ref, Some(&kek), DEFAULT_BLOCK_SIZE).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data = bytes_for(len, seed);
                    object.write_at(offset, &data).unwrap();
                    if len > 0 {
                        let end = offset as usize + len;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[offset as usize..end].copy_from_slice(&data);
                    }
                }
                Op::SetSize(size) => {
                    object.set_size(size).unwrap();
                    model.resize(size as usize, 0);
                }
                Op::Read { offset, len } => {
                    let mut buf = vec![0xA5u8; len];
                    let n = object.read_at(offset, &mut buf).unwrap();
                    let start = (offset as usize).min(model.len());
                    let expected = &model[start..(start + len).min(model.len())];
                    prop_assert_eq!(&buf[..n], expected);
                }
                Op::Sync => object.sync().unwrap(),
                Op::Reopen => {
                    let io = object.close().unwrap();
                    object = Object::open(io, &store_key(), Some(&kek)).unwrap();
                    prop_assert!(!object.is_dirty());
                }
            }
        }
        check_all(&object, &model)?;
        let report = object.verify().unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        let io = object.close().unwrap();
        let object = Object::open(io, &store_key(), Some(&kek)).unwrap();
        check_all(&object, &model)?;
    }

    #[test]
    fn header_parser_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_header_bytes(&bytes);
        let mut with_magic = b"ssefsOBJ\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = parse_header_bytes(&with_magic);
    }

    #[test]
    fn mutated_objects_never_panic(
        edits in prop::collection::vec((0usize..20_000, any::<u8>()), 1..8),
        cut in prop::option::of(0usize..20_000),
    ) {
        let kek = Key256::from_bytes(&[9u8; 32]).unwrap();
        let mut object = Object::create(
            MemoryIo::default(),
            &store_key(),
            Algorithm::Kms,
            KeyRef::Cmk { key_id: "k".into(), version: 1 },
            Some(&kek),
            DEFAULT_BLOCK_SIZE,
        ).unwrap();
        let plain = bytes_for(3 * P as usize + 100, 3);
        object.write_at(0, &plain).unwrap();
        let mut bytes = object.close().unwrap().snapshot().unwrap();
        for (at, value) in edits {
            // Bias half of the edits into the header record, where parsing happens.
            let at = if at % 2 == 0 { at % 200 } else { at % bytes.len() };
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.min(bytes.len()));
        }
        let io = MemoryIo::from_bytes(bytes);
        let _ = peek_header(&io);
        if let Ok(object) = Object::open(io, &store_key(), Some(&kek)) {
            let mut out = vec![0u8; object.size().min(1 << 20) as usize];
            if let Ok(n) = object.read_at(0, &mut out) {
                // Whatever reads successfully is the original plaintext.
                prop_assert_eq!(&out[..n], &plain[..n.min(plain.len())]);
            }
        }
    }
}

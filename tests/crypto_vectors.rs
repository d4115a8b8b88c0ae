//! Known-answer tests that pin the object format byte for byte: key wrap, DEK context, header
//! records and sealed blocks of version 2 (written) and version 1 (still read) from fixed
//! keys, store key, file ID, nonce and IV. The same vectors are listed in docs/FORMAT.md;
//! they were computed independently of this implementation.

use ssefs::crypto::{
    Algorithm, BlockCipher, CryptoError, DEFAULT_BLOCK_SIZE, FORMAT_V1, FORMAT_V2, FORMAT_VERSION,
    Key256, KeyRef, MemoryIo, Object, Slot, StoreKey, WrappedKey, dek_context, unwrap_key,
    wrap_key_with_nonce,
};

fn seq(from: u8, len: u8) -> Vec<u8> {
    (from..from + len).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn kek() -> Key256 {
    Key256::from_bytes(&seq(0x00, 32)).unwrap()
}
fn dek() -> Key256 {
    Key256::from_bytes(&seq(0x20, 32)).unwrap()
}
fn file_id() -> [u8; 16] {
    seq(0x40, 16).try_into().unwrap()
}
fn nonce() -> [u8; 16] {
    seq(0x50, 16).try_into().unwrap()
}
fn iv() -> [u8; 16] {
    seq(0x60, 16).try_into().unwrap()
}
fn store_id() -> [u8; 16] {
    seq(0x70, 16).try_into().unwrap()
}
/// Store id `70 71 … 7f`, object-authentication key `80 81 … 9f`.
fn store_key() -> StoreKey {
    StoreKey::new(store_id(), Key256::from_bytes(&seq(0x80, 32)).unwrap()).with_min_version(1)
}
const PLAINTEXT: &[u8] = b"The quick brown fox jumps over the lazy dog";

const WRAP_GENERIC: &str = "505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebdc450926e9e29a138f1cc2f3b587c9bd0d79069998b874c426bd162ee2f9e40da";

const CONTEXT_AES256: &str = "73736566732f64656b2f763210707172737475767778797a7b7c7d7e7f01010700000000404142434445464748494a4b4c4d4e4f";
const WRAPPED_AES256: &str = "505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd2fd02513170758474b246aa17013f6320fcffebd9c9da4baa2917c23fa5fb60c";
const V2_HEADER_AES256: &str = "73736566734f424a0200010000100000404142434445464748494a4b4c4d4e4f707172737475767778797a7b7c7d7e7f010000000000000000000000000000000000000000000000000000000000000000000000000000000107000000005000505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd2fd02513170758474b246aa17013f6320fcffebd9c9da4baa2917c23fa5fb60c3b77d7711fd374738d7c1ab8ef37d9ffe68c7cacfbcd6f33729e03381a6074e4";
const WRAPPED_KMS: &str = "505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd155e0ed85e80584b160701a5635dd386ff59cc42946fbb65a229500c6d427810";
const V2_HEADER_KMS: &str = "73736566734f424a0200020000100000404142434445464748494a4b4c4d4e4f707172737475767778797a7b7c7d7e7f010000000000000000000000000000000000000000000000000000000000000000000000000000000202000000086b65792d303132335000505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd155e0ed85e80584b160701a5635dd386ff59cc42946fbb65a229500c6d427810e5eeae2326b1fe20c8be6525c093955d296afdf7b2abd33b99c8b7eeaaa0a05e";
const V2_HEADER_NONE: &str = "73736566734f424a0200000000100000404142434445464748494a4b4c4d4e4f707172737475767778797a7b7c7d7e7f01000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000059897aefc2a01a79b2a355ab60366b89d6034cb5576d5a4fea5dcb881569e5cb";
const HEADER_AES256: &str = "73736566734f424a0300010000100000404142434445464748494a4b4c4d4e4f707172737475767778797a7b7c7d7e7f010000000000000000000000000000000000000000000000000000000000000000000000000000000481da07d3a347bd2e8cd815aa8ce41b7c869036fe93697c8321dc27122e23ef0107000000005000505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd2fd02513170758474b246aa17013f6320fcffebd9c9da4baa2917c23fa5fb60c57ba3c6023284c6b288217b6571bedc6adeaaa71d4756e07b82f2ac6b6c84bc2";
const HEADER_KMS: &str = "73736566734f424a0300020000100000404142434445464748494a4b4c4d4e4f707172737475767778797a7b7c7d7e7f010000000000000000000000000000000000000000000000000000000000000000000000000000000481da07d3a347bd2e8cd815aa8ce41b7c869036fe93697c8321dc27122e23ef0202000000086b65792d303132335000505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd155e0ed85e80584b160701a5635dd386ff59cc42946fbb65a229500c6d42781072e4d86098a28c23c3b4e7d464b65a9fade2d02f4cf151e3a00cfef75e1a362f";
const HEADER_NONE: &str = "73736566734f424a0300000000100000404142434445464748494a4b4c4d4e4f707172737475767778797a7b7c7d7e7f010000000000000000000000000000000000000000000000000000000000000000000000000000005f7cfe4813a2a13fdd3f44570d109742135e161ffdb198367c60a5761e99385300000000000000004b1615f4cab62ff57b7df088d309297ece8a16a68f9699a9374d751ea0beef30";
const ROOT_ONE_UNWRITTEN_GROUP: &str =
    "32fd5f774b1681793b4f139c46f8216ccf48adfe0856106152f210f4ed545a49";
const SLOT_AES256: &str = "03000000000000002b000000606162636465666768696a6b6449f9b9b2194d6cc14980c252bcf2bc9698ee05be09e0b6ad5af3b43250d9f8";
const CT_AES256: &str =
    "dd04d18fc2a64f9094b04806e95257fb5ad25de0af7a79d97c6394593b5618077ab3b55a30bbfcb3b608fd";
const GROUP_TAG: &str = "61642478d96d42b795ad63c124ea7aa51beefb69d1f152b1080033b5fee06894";
const SLOT_NONE: &str = "03000000000000002b000000606162636465666768696a6bb703963a8beddffc5dcf818e004439c978526ac0327ccbd1351c14eb4433eb11";

// Version 1, kept to prove old objects still open.
const V1_HEADER_AES256: &str = "73736566734f424a0100010000100000404142434445464748494a4b4c4d4e4f010000000000000000000000000000000107000000005000505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebdf581f7f49a6a2fabe412c041dd1e9d6a50ac69800e640f9734a2533eade06b5d01fab80b0255da05054b2bdfef2b3f396777b1ccdc95f631e48282f2cdb5986d";
const V1_HEADER_KMS: &str = "73736566734f424a0100020000100000404142434445464748494a4b4c4d4e4f010000000000000000000000000000000202000000086b65792d303132335000505152535455565758595a5b5c5d5e5fc492f709bb853d44dbe986535185a7507cb0f5ffe6de31415debc90ca71eeebd3d6188c4b9f274121fed50c5318d0048ba37bb6b91c6c793c462d7cfe1d264056679f6d8d8f1f7621905a6bd3767a3a7bfbde6ee18b187ec158622e4ac463617";
const V1_HEADER_NONE: &str = "73736566734f424a0100000000100000404142434445464748494a4b4c4d4e4f01000000000000000000000000000000000000000000000072a37c9624794f549796598605378c7b5465bbcbdedc2785fc438662e2576a15";
const V1_SLOT_AES256: &str = "030000002b000000606162636465666768696a6b6c6d6e6f752781e00b9b6bf1edb9bff5465965c061e9f846522cb11a983cbc6200c8e54c";
const V1_CT_AES256: &str =
    "5acf0a8cdbb64e3595c9d841b71e7a00d01425cfa60a17910c253e65d6f6effa2a77c012d92c12c287df8f";
const V1_SLOT_NONE: &str = "030000002b000000606162636465666768696a6b6c6d6e6fc8b7b4b63d17c69e162d820389115dee94e7066dae8f9d62db47e0508bc24df0";

#[test]
fn key_wrap_vector() {
    let wrapped = wrap_key_with_nonce(&kek(), b"ssefs/test/context", &dek(), &nonce()).unwrap();
    assert_eq!(hex(&wrapped.0), WRAP_GENERIC);
    let back = unwrap_key(
        &kek(),
        b"ssefs/test/context",
        &WrappedKey(unhex(WRAP_GENERIC)),
    )
    .unwrap();
    assert_eq!(back.expose_secret(), dek().expose_secret());
}

#[test]
fn dek_context_vector() {
    let master = dek_context(
        FORMAT_VERSION,
        &store_id(),
        Algorithm::Aes256,
        &KeyRef::Master { version: 7 },
        &file_id(),
    )
    .unwrap();
    assert_eq!(hex(&master), CONTEXT_AES256);
    let mut expected = b"ssefs/dek/v2".to_vec();
    expected.push(16);
    expected.extend_from_slice(&store_id());
    expected.extend_from_slice(&[1, 1, 7, 0, 0, 0, 0]);
    expected.extend_from_slice(&file_id());
    assert_eq!(master, expected);
    let cmk = KeyRef::Cmk {
        key_id: "key-0123".into(),
        version: 2,
    };
    let context = dek_context(
        FORMAT_VERSION,
        &store_id(),
        Algorithm::Kms,
        &cmk,
        &file_id(),
    );
    let mut expected = b"ssefs/dek/v2".to_vec();
    expected.push(16);
    expected.extend_from_slice(&store_id());
    expected.extend_from_slice(&[2, 2, 2, 0, 0, 0, 8]);
    expected.extend_from_slice(b"key-0123");
    expected.extend_from_slice(&file_id());
    assert_eq!(context.unwrap(), expected);
}

#[test]
fn v1_dek_context_has_no_store_id() {
    let context = dek_context(
        FORMAT_V1,
        &store_id(),
        Algorithm::Aes256,
        &KeyRef::Master { version: 7 },
        &file_id(),
    )
    .unwrap();
    let mut expected = b"ssefs/dek/v1".to_vec();
    expected.extend_from_slice(&[1, 1, 7, 0, 0, 0, 0]);
    expected.extend_from_slice(&file_id());
    assert_eq!(context, expected);
}

fn created_header(
    algorithm: Algorithm,
    key_ref: KeyRef,
    kek: Option<&Key256>,
    dek: Key256,
) -> Vec<u8> {
    let object = Object::create_with_secrets(
        MemoryIo::default(),
        &store_key(),
        algorithm,
        key_ref,
        kek,
        DEFAULT_BLOCK_SIZE,
        dek,
        file_id(),
        nonce(),
    )
    .unwrap();
    let bytes = object.io().snapshot().unwrap();
    assert_eq!(bytes.len(), 4096, "a new object is exactly one header page");
    bytes
}

fn check_header(bytes: &[u8], expected_hex: &str) {
    let expected = unhex(expected_hex);
    assert_eq!(hex(&bytes[..expected.len()]), expected_hex);
    assert!(
        bytes[expected.len()..].iter().all(|&b| b == 0),
        "page 0 past the record is zero"
    );
}

#[test]
fn aes256_header_vector() {
    let bytes = created_header(
        Algorithm::Aes256,
        KeyRef::Master { version: 7 },
        Some(&kek()),
        dek(),
    );
    check_header(&bytes, HEADER_AES256);
    assert_eq!(hex(&bytes[128..208]), WRAPPED_AES256);
    let object = Object::open(MemoryIo::from_bytes(bytes), &store_key(), Some(&kek())).unwrap();
    assert_eq!(object.size(), 0);
}

#[test]
fn kms_header_vector() {
    let cmk = KeyRef::Cmk {
        key_id: "key-0123".into(),
        version: 2,
    };
    let bytes = created_header(Algorithm::Kms, cmk, Some(&kek()), dek());
    check_header(&bytes, HEADER_KMS);
    assert_eq!(hex(&bytes[136..216]), WRAPPED_KMS);
}

#[test]
fn none_header_vector() {
    let zero = Key256::from_bytes(&[0u8; 32]).unwrap();
    let bytes = created_header(Algorithm::None, KeyRef::None, None, zero);
    check_header(&bytes, HEADER_NONE);
}

#[test]
fn aes256_block_vector() {
    let cipher = BlockCipher::new(FORMAT_VERSION, &dek(), &store_key(), &file_id(), true);
    let mut data = PLAINTEXT.to_vec();
    let slot = cipher.seal(5, 3, &iv(), &mut data);
    assert_eq!(hex(&slot.encode(FORMAT_VERSION)), SLOT_AES256);
    assert_eq!(hex(&data), CT_AES256);
    let slot = Slot::decode(&unhex(SLOT_AES256), FORMAT_VERSION);
    let mut page = unhex(CT_AES256);
    assert_eq!(cipher.open(5, &slot, &mut page).unwrap(), PLAINTEXT.len());
    assert_eq!(page, PLAINTEXT);
    // The same bytes are not block 6, nor generation 4, nor in another store.
    let mut page = unhex(CT_AES256);
    assert!(cipher.open(6, &slot, &mut page).is_err());
    let newer = Slot {
        generation: 4,
        ..slot
    };
    assert!(cipher.open(5, &newer, &mut page).is_err());
    let elsewhere = StoreKey::new(store_id(), Key256::from_bytes(&[0x81; 32]).unwrap());
    let foreign = BlockCipher::new(FORMAT_VERSION, &dek(), &elsewhere, &file_id(), true);
    assert!(foreign.open(5, &slot, &mut page).is_err());
}

#[test]
fn none_block_vector() {
    let zero = Key256::from_bytes(&[0u8; 32]).unwrap();
    let cipher = BlockCipher::new(FORMAT_VERSION, &zero, &store_key(), &file_id(), false);
    let mut data = PLAINTEXT.to_vec();
    let slot = cipher.seal(5, 3, &iv(), &mut data);
    assert_eq!(data, PLAINTEXT, "algorithm none stores plaintext");
    assert_eq!(hex(&slot.encode(FORMAT_VERSION)), SLOT_NONE);
    // Without the store key, nobody can compute a `none` tag: another store key fails.
    let elsewhere = StoreKey::new(store_id(), Key256::from_bytes(&[0x81; 32]).unwrap());
    let forger = BlockCipher::new(FORMAT_VERSION, &zero, &elsewhere, &file_id(), false);
    let mut page = PLAINTEXT.to_vec();
    let forged = forger.seal(5, 3, &iv(), &mut page);
    assert_ne!(forged.tag, slot.tag);
    assert!(cipher.open(5, &forged, &mut page).is_err());
}

/// The AES256 object of the vectors (master key version 7), new.
fn aes256_vector_object() -> Object<MemoryIo> {
    Object::create_with_secrets(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Aes256,
        KeyRef::Master { version: 7 },
        Some(&kek()),
        DEFAULT_BLOCK_SIZE,
        dek(),
        file_id(),
        nonce(),
    )
    .unwrap()
}

/// The group tag of group 0 of the AES256 object when only block 5 is written (bitmap
/// `20 00 00 00 00`): the last 32 bytes of its meta page. It depends on no IV.
#[test]
fn group_tag_vector() {
    let mut object = aes256_vector_object();
    object.write_at(5 * 4096, PLAINTEXT).unwrap();
    let bytes = object.io().snapshot().unwrap();
    assert_eq!(hex(&bytes[2 * 4096 - 32..2 * 4096]), GROUP_TAG);
}

/// The root of the block map of an object extended to 5 blocks without writing any: one
/// group, whose meta page lies past the end of the file (all zero). Bytes 88..120 of the
/// header once the object is closed.
#[test]
fn block_map_root_vector() {
    let mut object = aes256_vector_object();
    object.set_size(5 * 4096).unwrap();
    let bytes = object.close().unwrap().snapshot().unwrap();
    assert_eq!(hex(&bytes[88..120]), ROOT_ONE_UNWRITTEN_GROUP);
}

/// Version 2 header pages still open, as version 2, in a store that accepts version 2.
#[test]
fn v2_headers_still_open() {
    for (header, kek) in [
        (V2_HEADER_AES256, Some(kek())),
        (V2_HEADER_KMS, Some(kek())),
        (V2_HEADER_NONE, None),
    ] {
        let mut page = unhex(header);
        page.resize(DEFAULT_BLOCK_SIZE as usize, 0);
        let store = store_key();
        let object = Object::open(MemoryIo::from_bytes(page), &store, kek.as_ref()).unwrap();
        assert_eq!(object.info().version, FORMAT_V2);
        assert_eq!(object.size(), 0);
    }
}

#[test]
fn v1_block_vectors_still_open() {
    let cipher = BlockCipher::new(FORMAT_V1, &dek(), &store_key(), &file_id(), true);
    let mut data = PLAINTEXT.to_vec();
    let slot = cipher.seal(5, 3, &iv(), &mut data);
    assert_eq!(hex(&slot.encode(FORMAT_V1)), V1_SLOT_AES256);
    assert_eq!(hex(&data), V1_CT_AES256);
    let slot = Slot::decode(&unhex(V1_SLOT_AES256), FORMAT_V1);
    let mut page = unhex(V1_CT_AES256);
    assert_eq!(cipher.open(5, &slot, &mut page).unwrap(), PLAINTEXT.len());
    assert_eq!(page, PLAINTEXT);
    let zero = Key256::from_bytes(&[0u8; 32]).unwrap();
    let none = BlockCipher::new(FORMAT_V1, &zero, &store_key(), &file_id(), false);
    let mut data = PLAINTEXT.to_vec();
    assert_eq!(
        hex(&none.seal(5, 3, &iv(), &mut data).encode(FORMAT_V1)),
        V1_SLOT_NONE
    );
}

/// A version 1 header page opens (any store key: version 1 knows none) and is read-only.
#[test]
fn v1_headers_still_open_read_only() {
    for (header, kek) in [
        (V1_HEADER_AES256, Some(kek())),
        (V1_HEADER_KMS, Some(kek())),
        (V1_HEADER_NONE, None),
    ] {
        let mut page = unhex(header);
        page.resize(DEFAULT_BLOCK_SIZE as usize, 0);
        let mut object =
            Object::open(MemoryIo::from_bytes(page), &store_key(), kek.as_ref()).unwrap();
        assert_eq!(object.info().version, FORMAT_V1);
        assert_eq!(object.size(), 0);
        let err = object.write_at(0, b"x").unwrap_err();
        assert!(matches!(err, CryptoError::ReadOnlyVersion(1)), "{err:?}");
        assert!(matches!(
            object.set_size(1),
            Err(CryptoError::ReadOnlyVersion(1))
        ));
    }
}

#[test]
fn the_format_document_lists_these_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md");
    let doc: String = std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .collect();
    for (name, vector) in [
        ("key wrap", WRAP_GENERIC),
        ("AES256 header", HEADER_AES256),
        ("KMS header", HEADER_KMS),
        ("none header", HEADER_NONE),
        ("block map root", ROOT_ONE_UNWRITTEN_GROUP),
        ("v2 AES256 header", V2_HEADER_AES256),
        ("v2 KMS header", V2_HEADER_KMS),
        ("v2 none header", V2_HEADER_NONE),
        ("AES256 slot", SLOT_AES256),
        ("AES256 ciphertext", CT_AES256),
        ("none slot", SLOT_NONE),
        ("group tag", GROUP_TAG),
        ("v1 AES256 header", V1_HEADER_AES256),
        ("v1 KMS header", V1_HEADER_KMS),
        ("v1 none header", V1_HEADER_NONE),
        ("v1 AES256 slot", V1_SLOT_AES256),
        ("v1 AES256 ciphertext", V1_CT_AES256),
        ("v1 none slot", V1_SLOT_NONE),
    ] {
        assert!(
            doc.contains(vector),
            "docs/FORMAT.md lacks the {name} vector"
        );
    }
}

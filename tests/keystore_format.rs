//! Pins what docs/KEYSTORE.md promises about the bytes in the keystore: the wrap contexts of
//! master keys and CMK material, the root-key check and the material check, recomputed here
//! from the documented formulas; and that no secret reaches the keystore files in clear.

mod support;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::Connection;
use sha2::Sha256;
use ssefs::crypto::{Key256, KeyRef, WrappedKey, unwrap_key};
use ssefs::keystore::{CmkOrigin, KEYSTORE_FILE, Keystore, SCHEMA_VERSION, StoreId};
use std::path::Path;
use support::cli::SSEFS;

fn keyed_check(key: &[u8; 32], info: &[u8], message: &[u8]) -> Vec<u8> {
    let mut subkey = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&[]), key)
        .expand(info, &mut subkey)
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&subkey).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(KEYSTORE_FILE)).unwrap()
}

#[test]
fn meta_row_holds_the_store_id_and_the_documented_root_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let ks = Keystore::create(dir.path(), &root).unwrap();
    let (store_id, root_check): (String, Vec<u8>) = raw(dir.path())
        .query_row("SELECT store_id, root_check FROM meta", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(store_id, ks.store_id().to_string());
    let id = StoreId::parse(&store_id).unwrap();
    assert_eq!(
        root_check,
        keyed_check(root.expose_secret(), b"ssefs/v2/root-check", id.as_bytes())
    );
    let version: i64 = raw(dir.path())
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn master_keys_unwrap_under_the_documented_context() {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let ks = Keystore::create(dir.path(), &root).unwrap();
    ks.new_master_key().unwrap();
    for version in [1u32, 2] {
        let wrapped: Vec<u8> = raw(dir.path())
            .query_row(
                "SELECT wrapped FROM master_keys WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(wrapped.len(), 80);
        let context = [
            b"ssefs/master/v2".as_slice(),
            &16u32.to_le_bytes(),
            ks.store_id().as_bytes(),
            &version.to_le_bytes(),
        ]
        .concat();
        let key = unwrap_key(&root, &context, &WrappedKey(wrapped.clone())).unwrap();
        let expected = ks.resolve(&KeyRef::Master { version }).unwrap().unwrap();
        assert_eq!(key.expose_secret(), expected.expose_secret());
        // Bound to its version: the context of another version does not unwrap it.
        let other = [
            b"ssefs/master/v2".as_slice(),
            &16u32.to_le_bytes(),
            ks.store_id().as_bytes(),
            &(version + 1).to_le_bytes(),
        ]
        .concat();
        assert!(unwrap_key(&root, &other, &WrappedKey(wrapped)).is_err());
    }
}

#[test]
fn cmk_material_unwraps_under_the_documented_context_with_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let ks = Keystore::create(dir.path(), &root).unwrap();
    let key_id = ks
        .create_cmk("docs", Some("alias/docs"), CmkOrigin::Ssefs, 1000)
        .unwrap();
    let (wrapped, check): (Vec<u8>, Vec<u8>) = raw(dir.path())
        .query_row(
            "SELECT wrapped, material_check FROM cmk_materials WHERE key_id = ?1 AND version = 1",
            [&key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let context = [
        b"ssefs/cmk/v2".as_slice(),
        &16u32.to_le_bytes(),
        ks.store_id().as_bytes(),
        &(key_id.len() as u32).to_le_bytes(),
        key_id.as_bytes(),
        &1u32.to_le_bytes(),
    ]
    .concat();
    let material = unwrap_key(&root, &context, &WrappedKey(wrapped.clone())).unwrap();
    // Bound to its store: the same context under another store id does not unwrap it.
    let mut foreign = context.clone();
    foreign[b"ssefs/cmk/v2".len() + 4] ^= 1;
    assert!(unwrap_key(&root, &foreign, &WrappedKey(wrapped)).is_err());
    let (_, _, expected) = ks.resolve_cmk("alias/docs").unwrap();
    assert_eq!(material.expose_secret(), expected.expose_secret());
    assert_eq!(
        check,
        keyed_check(
            material.expose_secret(),
            b"ssefs/v1/material-check",
            key_id.as_bytes()
        )
    );
}

#[test]
fn init_through_the_binary_writes_no_secret_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let key_path = dir.path().join("root.key");
    let out = std::process::Command::new(SSEFS)
        .arg("init")
        .arg(&store)
        .arg("--root-key")
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let root = ssefs::keystore::load_root_key_file(&key_path).unwrap();
    let state = store.join(".ssefs");
    let ks = Keystore::open(&state, &root).unwrap();
    let (_, master) = ks.current_master_key().unwrap();
    let secrets = [
        root.expose_secret().to_vec(),
        master.expose_secret().to_vec(),
    ];
    let output = [out.stdout, out.stderr].concat();
    for secret in &secrets {
        assert!(!output.windows(32).any(|w| w == secret.as_slice()));
    }
    drop(ks);
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for secret in &secrets {
                assert!(
                    !bytes.windows(32).any(|w| w == secret.as_slice()),
                    "a secret in clear in {}",
                    path.display()
                );
            }
        }
    }
}

//! Unit tests of the keystore against real SQLite files in temporary directories.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

fn new_store() -> (tempfile::TempDir, Key256, Keystore) {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let ks = Keystore::create(dir.path(), &root).unwrap();
    (dir, root, ks)
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(KEYSTORE_FILE)).unwrap()
}

/// Every file in `dir` (names and bytes), to show an operation wrote nothing.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn keystore_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Keystore>();
}

#[test]
fn create_then_open_returns_the_same_store_and_master_key() {
    let (dir, root, ks) = new_store();
    let id = *ks.store_id();
    let (version, key) = ks.current_master_key().unwrap();
    assert_eq!(version, 1);
    drop(ks);
    assert_eq!(Keystore::read_store_id(dir.path()).unwrap(), id);
    let ks = Keystore::open(dir.path(), &root).unwrap();
    assert_eq!(*ks.store_id(), id);
    let (version2, key2) = ks.current_master_key().unwrap();
    assert_eq!(version2, 1);
    assert_eq!(key.expose_secret(), key2.expose_secret());
    let resolved = ks.resolve(&KeyRef::Master { version: 1 }).unwrap().unwrap();
    assert_eq!(resolved.expose_secret(), key.expose_secret());
    assert!(ks.resolve(&KeyRef::None).unwrap().is_none());
}

#[test]
fn create_refuses_an_existing_keystore_and_leaves_it_alone() {
    let (dir, root, ks) = new_store();
    drop(ks);
    let before = snapshot(dir.path());
    let err = Keystore::create(dir.path(), &root).err().unwrap();
    assert!(matches!(err, KeystoreError::AlreadyExists(_)), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn files_are_private_while_open() {
    let (dir, _root, ks) = new_store();
    ks.new_master_key().unwrap();
    for name in ["keystore.db", "keystore.db-wal", "keystore.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn wrong_root_key_is_refused_and_writes_nothing() {
    let (dir, _root, ks) = new_store();
    drop(ks);
    let before = snapshot(dir.path());
    let err = Keystore::open(dir.path(), &Key256::generate().unwrap())
        .err()
        .unwrap();
    assert!(matches!(err, KeystoreError::WrongRootKey), "{err}");
    assert_eq!(err.to_string(), "wrong root key for this store");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn newer_schema_is_refused_and_left_unchanged() {
    let (dir, root, ks) = new_store();
    drop(ks);
    raw(dir.path())
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let before = snapshot(dir.path());
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert!(
        matches!(err, KeystoreError::SchemaTooNew { found: 99, supported } if supported == SCHEMA_VERSION),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("keystore schema version 99 is newer than this ssefs ({SCHEMA_VERSION})")
    );
    assert!(Keystore::read_store_id(dir.path()).is_err());
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn files_that_are_not_keystores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let path = dir.path().join(KEYSTORE_FILE);
    let private = |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));

    // Not SQLite at all.
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    private(&path).unwrap();
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!("not an ssefs keystore: {}", path.display())
    );
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);

    // SQLite, but some other program's database.
    std::fs::remove_file(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
    drop(other);
    private(&path).unwrap();
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert!(
        matches!(err, KeystoreError::NotAKeystore(ref p) if *p == path),
        "{err}"
    );

    // Empty file (an empty SQLite database).
    std::fs::write(&path, b"").unwrap();
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert!(matches!(err, KeystoreError::NotAKeystore(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"");

    // A directory.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert!(matches!(err, KeystoreError::NotAKeystore(_)), "{err}");

    // Nothing there.
    let empty = tempfile::tempdir().unwrap();
    let err = Keystore::open(empty.path(), &root).err().unwrap();
    assert!(matches!(err, KeystoreError::Missing(_)), "{err}");
}

#[test]
fn keystore_readable_by_group_is_refused() {
    let (dir, root, ks) = new_store();
    drop(ks);
    let path = dir.path().join(KEYSTORE_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert!(
        matches!(err, KeystoreError::InsecurePermissions { mode: 0o640, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn new_master_versions_are_durable_and_old_ones_stay_readable() {
    let (dir, root, ks) = new_store();
    let (_, v1) = ks.current_master_key().unwrap();
    let v2 = ks.new_master_key().unwrap();
    assert_eq!(v2, 2);
    // Committed before returning: another connection sees it at once.
    let seen: u32 = raw(dir.path())
        .query_row("SELECT max(version) FROM master_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 2);
    let (current, k2) = ks.current_master_key().unwrap();
    assert_eq!(current, 2);
    assert_ne!(k2.expose_secret(), v1.expose_secret());
    drop(ks);
    let ks = Keystore::open(dir.path(), &root).unwrap();
    let again = ks.resolve(&KeyRef::Master { version: 1 }).unwrap().unwrap();
    assert_eq!(again.expose_secret(), v1.expose_secret());
    assert_eq!(
        ks.current_master_key().unwrap().1.expose_secret(),
        k2.expose_secret()
    );
    assert!(matches!(
        ks.resolve(&KeyRef::Master { version: 7 }),
        Err(KeystoreError::UnknownMasterKey(7))
    ));
}

#[test]
fn rotation_by_another_process_is_seen_through_the_cache() {
    let (dir, root, ks) = new_store();
    assert_eq!(ks.current_master_key().unwrap().0, 1);
    let other = Keystore::open(dir.path(), &root).unwrap();
    assert_eq!(other.new_master_key().unwrap(), 2);
    assert_eq!(ks.current_master_key().unwrap().0, 2);
}

#[test]
fn cmk_resolves_by_id_alias_and_key_ref() {
    let (dir, root, ks) = new_store();
    let id = ks
        .create_cmk("photos", Some("alias/photos"), CmkOrigin::Ssefs, 1000)
        .unwrap();
    let (by_id, v, material) = ks.resolve_cmk(&id).unwrap();
    assert_eq!((by_id.as_str(), v), (id.as_str(), 1));
    let (by_alias, v2, material2) = ks.resolve_cmk("alias/photos").unwrap();
    assert_eq!((by_alias.as_str(), v2), (id.as_str(), 1));
    assert_eq!(material.expose_secret(), material2.expose_secret());
    let key_ref = KeyRef::Cmk {
        key_id: id.clone(),
        version: 1,
    };
    let resolved = ks.resolve(&key_ref).unwrap().unwrap();
    assert_eq!(resolved.expose_secret(), material.expose_secret());

    let info = ks.cmk_info("alias/photos").unwrap();
    assert_eq!(info.key_id, id);
    assert_eq!(info.description, "photos");
    assert_eq!(info.origin, CmkOrigin::Ssefs);
    assert_eq!(info.state, CmkState::Enabled);
    assert_eq!(info.owner_uid, 1000);
    assert_eq!(info.aliases, vec!["alias/photos".to_string()]);
    assert_eq!(info.newest_version, Some(1));

    drop(ks);
    let ks = Keystore::open(dir.path(), &root).unwrap();
    let (_, _, reopened) = ks.resolve_cmk("alias/photos").unwrap();
    assert_eq!(reopened.expose_secret(), material.expose_secret());
}

#[test]
fn cmk_errors_are_typed() {
    let (_dir, _root, ks) = new_store();
    assert!(matches!(
        ks.resolve_cmk("alias/nope"),
        Err(KeystoreError::UnknownKey(k)) if k == "alias/nope"
    ));
    assert!(matches!(
        ks.resolve_cmk("0000-no-such-key"),
        Err(KeystoreError::UnknownKey(_))
    ));
    assert!(matches!(
        ks.resolve(&KeyRef::Cmk {
            key_id: "missing".into(),
            version: 1
        }),
        Err(KeystoreError::UnknownKey(_))
    ));
    let id = ks
        .create_cmk("", Some("alias/a"), CmkOrigin::Ssefs, 0)
        .unwrap();
    assert!(matches!(
        ks.resolve(&KeyRef::Cmk {
            key_id: id.clone(),
            version: 2
        }),
        Err(KeystoreError::UnknownKeyVersion { version: 2, .. })
    ));
    assert!(matches!(
        ks.create_cmk("", Some("alias/a"), CmkOrigin::Ssefs, 0),
        Err(KeystoreError::AliasExists(_))
    ));
    for bad in [
        "photos",
        "alias/",
        "alias/has space",
        "alias/é",
        &format!("alias/{}", "x".repeat(250)),
    ] {
        assert!(
            matches!(
                ks.create_cmk("", Some(bad), CmkOrigin::Ssefs, 0),
                Err(KeystoreError::InvalidAlias(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        ks.create_cmk("", Some("alias/acs/mine"), CmkOrigin::Ssefs, 0),
        Err(KeystoreError::ReservedAlias(_))
    ));
    // Refused aliases created nothing: still exactly one CMK.
    let count: i64 = ks
        .lock()
        .conn
        .query_row("SELECT count(*) FROM cmks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[test]
fn external_cmk_waits_for_import() {
    let (_dir, _root, ks) = new_store();
    let id = ks
        .create_cmk("byok", None, CmkOrigin::External, 42)
        .unwrap();
    let info = ks.cmk_info(&id).unwrap();
    assert_eq!(info.state, CmkState::PendingImport);
    assert_eq!(info.origin, CmkOrigin::External);
    assert_eq!(info.newest_version, None);
    let err = ks.resolve_cmk(&id).err().unwrap();
    assert!(
        matches!(
            err,
            KeystoreError::KeyRevoked {
                state: CmkState::PendingImport,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn state_and_material_changes_by_another_process_are_seen_through_the_cache() {
    let (dir, root, ks) = new_store();
    let id = ks.create_cmk("", None, CmkOrigin::Ssefs, 0).unwrap();
    let key_ref = KeyRef::Cmk {
        key_id: id.clone(),
        version: 1,
    };
    ks.resolve(&key_ref).unwrap().unwrap();
    let other = raw(dir.path());
    other
        .execute(
            "UPDATE cmks SET state = 'Disabled' WHERE key_id = ?1",
            [&id],
        )
        .unwrap();
    reseal_as_ssefs(dir.path(), &root);
    let err = ks.resolve(&key_ref).err().unwrap();
    assert!(
        matches!(
            err,
            KeystoreError::KeyRevoked {
                state: CmkState::Disabled,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        ks.resolve_cmk(&id),
        Err(KeystoreError::KeyRevoked { .. })
    ));
    other
        .execute(
            "UPDATE cmks SET state = 'Enabled' WHERE key_id = ?1;",
            [&id],
        )
        .unwrap();
    reseal_as_ssefs(dir.path(), &root);
    other
        .execute(
            "UPDATE cmk_materials SET wrapped = NULL WHERE key_id = ?1",
            [&id],
        )
        .unwrap();
    reseal_as_ssefs(dir.path(), &root);
    assert!(matches!(
        ks.resolve(&key_ref),
        Err(KeystoreError::KeyMaterialDeleted { version: 1, .. })
    ));
}

#[test]
fn default_cmk_is_created_once() {
    let (dir, root, ks) = new_store();
    let other = Keystore::open(dir.path(), &root).unwrap();
    let id = ks.default_cmk().unwrap();
    assert_eq!(ks.default_cmk().unwrap(), id);
    assert_eq!(other.default_cmk().unwrap(), id);
    let (by_alias, version, _) = ks.resolve_cmk(DEFAULT_CMK_ALIAS).unwrap();
    assert_eq!((by_alias, version), (id.clone(), 1));
    let info = ks.cmk_info(&id).unwrap();
    assert_eq!(info.aliases, vec![DEFAULT_CMK_ALIAS.to_string()]);
    assert_eq!(info.owner_uid, 0);
}

#[test]
fn concurrent_first_use_of_the_default_cmk_creates_one_key() {
    let (dir, root, ks) = new_store();
    drop(ks);
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    Keystore::open(dir.path(), &root)
                        .unwrap()
                        .default_cmk()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let count: i64 = raw(dir.path())
        .query_row("SELECT count(*) FROM cmks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[test]
fn bucket_rules_round_trip() {
    let (dir, root, ks) = new_store();
    assert_eq!(ks.bucket_rule("photos").unwrap(), None);
    let aes = BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    };
    let kms = BucketRule {
        algorithm: Algorithm::Kms,
        kms_key_id: Some("alias/photos".into()),
    };
    let kms_default = BucketRule {
        algorithm: Algorithm::Kms,
        kms_key_id: None,
    };
    ks.put_bucket_rule("photos", &aes).unwrap();
    assert_eq!(ks.bucket_rule("photos").unwrap(), Some(aes.clone()));
    ks.put_bucket_rule("photos", &kms).unwrap();
    assert_eq!(ks.bucket_rule("photos").unwrap(), Some(kms.clone()));
    ks.put_bucket_rule("logs", &kms_default).unwrap();
    drop(ks);
    let ks = Keystore::open(dir.path(), &root).unwrap();
    assert_eq!(
        ks.bucket_rules().unwrap(),
        vec![
            ("logs".to_string(), kms_default.clone()),
            ("photos".to_string(), kms.clone())
        ]
    );
    ks.delete_bucket_rule("photos").unwrap();
    assert_eq!(ks.bucket_rule("photos").unwrap(), None);
    ks.delete_bucket_rule("photos").unwrap();
    assert_eq!(ks.bucket_rule("logs").unwrap(), Some(kms_default));
}

#[test]
fn invalid_bucket_rules_are_refused_and_change_nothing() {
    let (_dir, _root, ks) = new_store();
    let aes = BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    };
    ks.put_bucket_rule("b1", &aes).unwrap();
    for bad in [
        BucketRule {
            algorithm: Algorithm::None,
            kms_key_id: None,
        },
        BucketRule {
            algorithm: Algorithm::Aes256,
            kms_key_id: Some("alias/x".into()),
        },
        BucketRule {
            algorithm: Algorithm::Kms,
            kms_key_id: Some(String::new()),
        },
    ] {
        assert!(
            matches!(
                ks.put_bucket_rule("b1", &bad),
                Err(KeystoreError::InvalidBucketRule(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(ks.bucket_rule("b1").unwrap(), Some(aes));
}

#[test]
fn no_secret_is_ever_written_in_clear() {
    let (dir, root, ks) = new_store();
    let mut secrets = vec![root.expose_secret().to_vec()];
    for _ in 0..3 {
        ks.new_master_key().unwrap();
    }
    for version in 1..=4 {
        let key = ks.resolve(&KeyRef::Master { version }).unwrap().unwrap();
        secrets.push(key.expose_secret().to_vec());
    }
    for i in 0..3 {
        let id = ks
            .create_cmk("k", Some(&format!("alias/k{i}")), CmkOrigin::Ssefs, 0)
            .unwrap();
        secrets.push(ks.resolve_cmk(&id).unwrap().2.expose_secret().to_vec());
    }
    let default = ks.default_cmk().unwrap();
    secrets.push(ks.resolve_cmk(&default).unwrap().2.expose_secret().to_vec());

    let scan = |when: &str| {
        let files = snapshot(dir.path());
        assert!(files.contains_key(KEYSTORE_FILE));
        for (name, bytes) in &files {
            for secret in &secrets {
                assert!(
                    !contains(bytes, secret),
                    "a secret in clear in {name} ({when})"
                );
            }
        }
        files.len()
    };
    // While open the WAL holds the recent commits; after close they are in the database.
    assert_eq!(scan("open"), 3);
    drop(ks);
    scan("closed");
}

#[test]
fn corrupted_wrapped_keys_give_clear_errors() {
    let (dir, root, ks) = new_store();
    let id = ks.create_cmk("", None, CmkOrigin::Ssefs, 0).unwrap();
    drop(ks);
    let conn = raw(dir.path());
    conn.execute(
        "UPDATE master_keys SET wrapped = randomblob(80) WHERE version = 1",
        [],
    )
    .unwrap();
    conn.execute("UPDATE cmk_materials SET wrapped = x'0102'", [])
        .unwrap();
    conn.execute("UPDATE cmks SET state = 'Broken'", [])
        .unwrap_err();
    drop(conn);
    // The seal finds it first; under a seal that holds, the unwrap does.
    tampered(Keystore::open(dir.path(), &root).err().unwrap());
    reseal_as_ssefs(dir.path(), &root);
    let ks = Keystore::open(dir.path(), &root).unwrap();
    let err = ks.current_master_key().err().unwrap();
    assert!(matches!(err, KeystoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("master key version 1"), "{err}");
    let err = ks.resolve_cmk(&id).err().unwrap();
    assert!(matches!(err, KeystoreError::Corrupt(_)), "{err}");
}

#[test]
fn missing_meta_row_is_a_clear_error() {
    let (dir, root, ks) = new_store();
    drop(ks);
    raw(dir.path()).execute("DELETE FROM meta", []).unwrap();
    let err = Keystore::open(dir.path(), &root).err().unwrap();
    assert!(matches!(err, KeystoreError::Corrupt(_)), "{err}");
}

#[test]
fn schema_is_at_the_current_version_with_foreign_keys_on() {
    let (_dir, _root, ks) = new_store();
    let inner = ks.lock();
    let version: i64 = inner
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = inner
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = inner
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let err = inner
        .conn
        .execute(
            "INSERT INTO aliases (alias, key_id) VALUES ('alias/x', 'no-such-key')",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}

/// Brings the seal of the keystore in `dir` up to date with its rows, as ssefs would: for
/// tests that damage a row on purpose and want to see what the layer above the seal does.
pub(super) fn reseal_as_ssefs(dir: &Path, root: &Key256) {
    let conn = raw(dir);
    let store_id = read_store_id(&conn).unwrap();
    seal::reseal(&conn, &seal::seal_key(root, &store_id).unwrap()).unwrap();
}

fn tampered(err: KeystoreError) -> String {
    match err {
        KeystoreError::Tampered(what) => what.join("; "),
        other => panic!("expected Tampered, got {other}"),
    }
}

#[test]
fn a_bucket_rule_deleted_outside_ssefs_refuses_the_open_naming_it() {
    let (dir, root, ks) = new_store();
    let rule = BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    };
    ks.put_bucket_rule("enc", &rule).unwrap();
    ks.put_bucket_rule("other", &rule).unwrap();
    drop(ks);
    Keystore::open(dir.path(), &root).unwrap();
    raw(dir.path())
        .execute("DELETE FROM bucket_rules WHERE bucket = 'enc'", [])
        .unwrap();
    let what = tampered(Keystore::open(dir.path(), &root).err().unwrap());
    assert!(
        what.contains("table bucket_rules: row bucket=\"enc\" was removed"),
        "{what}"
    );
    assert!(!what.contains("other"), "{what}");
}

#[test]
fn every_kind_of_change_outside_ssefs_is_named() {
    let (dir, root, ks) = new_store();
    let id = ks
        .create_cmk("", Some("alias/k"), CmkOrigin::Ssefs, 7)
        .unwrap();
    let caller = Caller {
        uid: 7,
        gid: 0,
        groups: vec![],
        pid: 1,
    };
    ks.grant(&id, Grantee::Uid(9), &[KeyOp::Decrypt], &caller)
        .unwrap();
    drop(ks);
    let cases: &[(&str, &str)] = &[
        (
            "UPDATE cmks SET owner_uid = 1000",
            "table cmks: row key_id=",
        ),
        (
            "UPDATE grants SET grantee = 1000",
            "table grants: row id=1 was changed",
        ),
        (
            "UPDATE grants SET operations = 'encrypt,decrypt'",
            "table grants",
        ),
        ("UPDATE aliases SET key_id = key_id", ""),
        (
            "UPDATE master_keys SET retired_at = 5",
            "table master_keys: row version=1",
        ),
        (
            "UPDATE meta SET audit_max_rows = 1",
            "table meta: row id=1 was changed",
        ),
        (
            "UPDATE meta SET root_kdf_memory_kib = 99",
            "table meta: row id=1 was changed",
        ),
        (
            "INSERT INTO bucket_rules VALUES ('new', 'AES256', NULL, 1)",
            "table bucket_rules: row bucket=\"new\" was added",
        ),
        (
            "DELETE FROM aliases",
            "table aliases: row alias=\"alias/k\" was removed",
        ),
        (
            "DELETE FROM row_seals WHERE tbl = 'cmks'",
            "rows were removed from or added to table cmks",
        ),
        (
            "DELETE FROM table_seals WHERE tbl = 'grants'",
            "table grants has no seal",
        ),
        ("DROP TABLE row_seals", "seal tables"),
    ];
    let pristine = std::fs::read(dir.path().join(KEYSTORE_FILE)).unwrap();
    for (sql, expected) in cases {
        std::fs::write(dir.path().join(KEYSTORE_FILE), &pristine).unwrap();
        raw(dir.path()).execute_batch(sql).unwrap();
        let opened = Keystore::open(dir.path(), &root);
        if expected.is_empty() {
            opened.unwrap(); // the same values: nothing changed
            continue;
        }
        let what = tampered(opened.err().unwrap());
        assert!(what.contains(expected), "{sql}: {what}");
    }
}

#[test]
fn a_row_and_its_mac_removed_together_break_the_table_seal() {
    let (dir, root, ks) = new_store();
    ks.put_bucket_rule(
        "enc",
        &BucketRule {
            algorithm: Algorithm::Kms,
            kms_key_id: None,
        },
    )
    .unwrap();
    drop(ks);
    raw(dir.path())
        .execute_batch(
            "DELETE FROM bucket_rules WHERE bucket = 'enc';
             DELETE FROM row_seals WHERE tbl = 'bucket_rules';",
        )
        .unwrap();
    let what = tampered(Keystore::open(dir.path(), &root).err().unwrap());
    assert!(
        what.contains("rows were removed from or added to table bucket_rules"),
        "{what}"
    );
}

#[test]
fn a_change_while_open_is_found_at_the_next_read_and_never_sealed_over() {
    let (dir, root, ks) = new_store();
    let rule = BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    };
    ks.put_bucket_rule("enc", &rule).unwrap();
    assert_eq!(ks.bucket_rule("enc").unwrap(), Some(rule.clone()));
    raw(dir.path())
        .execute("DELETE FROM bucket_rules WHERE bucket = 'enc'", [])
        .unwrap();
    // Never "no rule" (which would mean plaintext): the read fails.
    tampered(ks.bucket_rule("enc").err().unwrap());
    tampered(ks.bucket_rule("enc").err().unwrap());
    // A write through ssefs does not bless the change.
    tampered(ks.put_bucket_rule("x-y-z", &rule).err().unwrap());
    tampered(ks.new_master_key().err().unwrap());
    assert!(!ks.seal_problems().unwrap().is_empty());
    tampered(Keystore::open(dir.path(), &root).err().unwrap());
}

#[test]
fn writes_through_ssefs_keep_the_seal_and_fsck_sees_none() {
    let (dir, root, ks) = new_store();
    let id = ks
        .create_cmk("", Some("alias/a"), CmkOrigin::Ssefs, 0)
        .unwrap();
    let root_caller = Caller {
        uid: 0,
        gid: 0,
        groups: vec![],
        pid: 1,
    };
    ks.grant(&id, Grantee::Gid(5), &[KeyOp::Encrypt], &root_caller)
        .unwrap();
    ks.new_master_key().unwrap();
    ks.default_cmk().unwrap();
    ks.put_bucket_rule(
        "enc",
        &BucketRule {
            algorithm: Algorithm::Kms,
            kms_key_id: Some("alias/a".into()),
        },
    )
    .unwrap();
    ks.delete_bucket_rule("enc").unwrap();
    ks.set_audit_settings(AuditSettings {
        retention_days: 10,
        max_rows: 50,
    })
    .unwrap();
    assert_eq!(ks.seal_problems().unwrap(), Vec::<String>::new());
    drop(ks);
    let ks = Keystore::open(dir.path(), &root).unwrap();
    assert_eq!(ks.seal_problems().unwrap(), Vec::<String>::new());
    let seals: i64 = raw(dir.path())
        .query_row("SELECT count(*) FROM table_seals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seals as usize, seal::SEALED_TABLES.len());
}

#[test]
fn a_keystore_from_before_the_seal_is_sealed_at_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let path = dir.path().join(KEYSTORE_FILE);
    std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store_id = StoreId::generate().unwrap();
    let (master, wrapped) = legacy_master_wrap(&root, &store_id, 1);
    let material = Key256::generate().unwrap();
    {
        let mut conn = connect(&path).unwrap();
        // The last schema before the seal.
        schema::migrate_to(&mut conn, schema::seal_step() - 1).unwrap();
        conn.execute(
            "INSERT INTO meta (id, store_id, created_at, root_check) VALUES (1, ?1, 1, ?2)",
            (
                store_id.to_string(),
                ids::legacy_root_check(&root, &store_id).unwrap(),
            ),
        )
        .unwrap();
        conn.execute(
            "INSERT INTO master_keys (version, wrapped, created_at) VALUES (1, ?1, 1)",
            [wrapped],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO bucket_rules VALUES ('enc', 'AES256', NULL, 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO cmks (key_id, origin, state, owner_uid, created_at)
             VALUES ('k1', 'ssefs', 'Enabled', 0, 1)",
            [],
        )
        .unwrap();
        let cmk_wrapped = wrap_key(&root, &cmk::legacy_cmk_context("k1", 1), &material)
            .unwrap()
            .0;
        conn.execute(
            "INSERT INTO cmk_materials (key_id, version, wrapped, created_at)
             VALUES ('k1', 1, ?1, 1)",
            [cmk_wrapped],
        )
        .unwrap();
    }
    let ks = Keystore::open(dir.path(), &root).unwrap();
    assert_eq!(ks.seal_problems().unwrap(), Vec::<String>::new());
    // The same key, now wrapped under the context that names the store.
    let (version, key) = ks.current_master_key().unwrap();
    assert_eq!((version, key.expose_secret()), (1, master.expose_secret()));
    let rewrapped: Vec<u8> = raw(dir.path())
        .query_row("SELECT wrapped FROM master_keys", [], |r| r.get(0))
        .unwrap();
    unwrap_key(&root, &master_context(&store_id, 1), &WrappedKey(rewrapped)).unwrap();
    let (_, _, resolved) = ks.resolve_cmk("k1").unwrap();
    assert_eq!(resolved.expose_secret(), material.expose_secret());
    drop(ks);
    // Sealed now: the legacy root check is gone, and a deletion is found.
    let recorded: Vec<u8> = raw(dir.path())
        .query_row("SELECT root_check FROM meta", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        ids::verify_root_check(&root, &store_id, &recorded).unwrap(),
        RootCheck::Sealed
    );
    raw(dir.path())
        .execute_batch("DELETE FROM bucket_rules; DELETE FROM row_seals; DELETE FROM table_seals;")
        .unwrap();
    tampered(Keystore::open(dir.path(), &root).err().unwrap());
}

#[test]
fn a_root_key_change_moves_the_seal_and_refuses_a_tampered_keystore() {
    let (dir, _root, ks) = new_store();
    ks.put_bucket_rule(
        "enc",
        &BucketRule {
            algorithm: Algorithm::Aes256,
            kms_key_id: None,
        },
    )
    .unwrap();
    let new = Key256::generate().unwrap();
    ks.change_root_key(&new, None).unwrap();
    let ks = Keystore::open(dir.path(), &new).unwrap();
    assert_eq!(ks.seal_problems().unwrap(), Vec::<String>::new());
    raw(dir.path())
        .execute("UPDATE bucket_rules SET algorithm = 'KMS'", [])
        .unwrap();
    let newer = Key256::generate().unwrap();
    tampered(ks.change_root_key(&newer, None).err().unwrap());
    tampered(Keystore::open(dir.path(), &new).err().unwrap());
}

/// A new master key version `version` and its wrapping by a keystore from before the seal.
pub(super) fn legacy_master_wrap(
    root: &Key256,
    store_id: &StoreId,
    version: u32,
) -> (Key256, Vec<u8>) {
    let key = Key256::generate().unwrap();
    let wrapped = wrap_key(root, &legacy_master_context(store_id, version), &key)
        .unwrap()
        .0;
    (key, wrapped)
}

#[test]
fn a_destroyed_cmk_leaves_a_sealed_tombstone_that_a_restore_honours() {
    let (dir, root, ks) = new_store();
    let id = ks.create_cmk("", None, CmkOrigin::Ssefs, 0).unwrap();
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("ks.bak");
    backup::backup_keystore(dir.path(), &backup).unwrap();
    let root_caller = Caller {
        uid: 0,
        gid: 0,
        groups: vec![],
        pid: 1,
    };
    ks.schedule_cmk_deletion(&id, 7, &root_caller).unwrap();
    ks.process_pending_deletions(ks.now() + 8 * 86_400).unwrap();
    let stones = lifecycle::read_tombstones(&raw(dir.path())).unwrap();
    assert_eq!(stones.len(), 1);
    assert_eq!(
        (stones[0].key_id.as_str(), stones[0].version),
        (id.as_str(), 0)
    );
    drop(ks);

    let mut staged = backup::StagedKeystore::stage(dir.path(), &backup, &root).unwrap();
    let current = staged.current(&root).unwrap();
    assert!(
        !staged.keys(&current).cmks.contains(&id),
        "what the restore destroys again is not counted as held"
    );
    let burial = staged.carry_forward(&root, &current).unwrap();
    assert_eq!(burial.current, backup::CurrentKeystore::Sealed);
    assert_eq!(burial.again.cmks, vec![id.clone()]);
    staged.install(false).unwrap();
    let ks = Keystore::open(dir.path(), &root).unwrap();
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::Destroyed);
    assert!(matches!(
        ks.resolve_cmk(&id),
        Err(KeystoreError::KeyRevoked { .. })
    ));
    drop(ks);

    // Removing the tombstone with sqlite3 is found like any other change.
    raw(dir.path())
        .execute("DELETE FROM tombstones", [])
        .unwrap();
    let what = tampered(Keystore::open(dir.path(), &root).err().unwrap());
    assert!(what.contains("table tombstones"), "{what}");
}

#[test]
fn verify_lists_every_change_without_writing_anything() {
    let (dir, root, ks) = new_store();
    ks.put_bucket_rule(
        "enc",
        &BucketRule {
            algorithm: Algorithm::Aes256,
            kms_key_id: None,
        },
    )
    .unwrap();
    ks.create_cmk("audited", None, CmkOrigin::Ssefs, 0).unwrap();
    drop(ks);
    assert_eq!(
        Keystore::verify(dir.path(), &root).unwrap(),
        Vec::<String>::new()
    );
    raw(dir.path())
        .execute_batch(
            "DELETE FROM bucket_rules; UPDATE master_keys SET retired_at = 1; DELETE FROM audit;",
        )
        .unwrap();
    let before = snapshot(dir.path());
    let problems = Keystore::verify(dir.path(), &root).unwrap().join("; ");
    assert!(
        problems.contains("bucket=\"enc\" was removed"),
        "{problems}"
    );
    assert!(
        problems.contains("table master_keys: row version=1 was changed"),
        "{problems}"
    );
    assert!(problems.contains("audit record"), "{problems}");
    assert_eq!(snapshot(dir.path()), before, "verify writes nothing");
    assert!(matches!(
        Keystore::verify(dir.path(), &Key256::generate().unwrap()),
        Err(KeystoreError::WrongRootKey)
    ));
}

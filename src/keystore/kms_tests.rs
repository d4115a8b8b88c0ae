//! Unit tests of the KMS side of the keystore: authorize, grants, state changes, scheduled
//! deletion, BYOK, bucket rule validation, the audit log and the schema step that added them.

use super::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

const OWNER: u32 = 1000;
const DAY: i64 = 86_400;
const T0: i64 = 1_700_000_000;

fn new_store() -> (tempfile::TempDir, Key256, Keystore) {
    let dir = tempfile::tempdir().unwrap();
    let root = Key256::generate().unwrap();
    let mut ks = Keystore::create(dir.path(), &root).unwrap();
    ks.set_clock(Clock::Fixed(T0));
    (dir, root, ks)
}

fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
    Caller {
        uid,
        gid,
        groups: groups.to_vec(),
        pid: 4242,
    }
}

fn owner() -> Caller {
    caller(OWNER, OWNER, &[])
}

fn root() -> Caller {
    caller(0, 0, &[])
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(KEYSTORE_FILE)).unwrap()
}

fn records(ks: &Keystore) -> Vec<AuditRecord> {
    ks.audit_records(&AuditQuery::default()).unwrap()
}

fn last_record(ks: &Keystore) -> AuditRecord {
    records(ks).pop().unwrap()
}

fn user_key(ks: &Keystore) -> String {
    ks.create_cmk_for("user key", Some("alias/user"), CmkOrigin::Ssefs, &owner())
        .unwrap()
}

#[test]
fn authorize_lets_owner_root_and_grantees_pass_and_refuses_others() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    ks.grant(
        &id,
        Grantee::Uid(2001),
        &[KeyOp::Encrypt, KeyOp::Decrypt],
        &owner(),
    )
    .unwrap();
    ks.grant(&id, Grantee::Gid(3000), &[KeyOp::Decrypt], &owner())
        .unwrap();
    let (_, _, expected) = ks.resolve_cmk(&id).unwrap();

    let passing = [
        owner(),
        root(),
        caller(2001, 2001, &[]),
        caller(2002, 3000, &[]),
        caller(2003, 100, &[7, 3000]),
    ];
    for who in &passing {
        let (key_id, version, material) = ks
            .authorize("alias/user", KeyOp::Decrypt, who, "/b/o")
            .unwrap();
        assert_eq!((key_id.as_str(), version), (id.as_str(), 1), "{who:?}");
        assert_eq!(material.expose_secret(), expected.expose_secret());
    }
    // A gid grant of decrypt does not give encrypt; a stranger gets nothing.
    for (who, op) in [
        (caller(2002, 3000, &[]), KeyOp::Encrypt),
        (caller(5000, 5000, &[1, 2]), KeyOp::Decrypt),
        (caller(5000, 5000, &[]), KeyOp::Encrypt),
    ] {
        let err = ks.authorize(&id, op, &who, "/b/o").err().unwrap();
        assert!(
            matches!(&err, KeystoreError::AccessDenied { uid, .. } if *uid == who.uid),
            "{err}"
        );
    }
    let usage = ks.cmk_info(&id).unwrap().usage;
    assert_eq!(
        (usage.generate_data_key, usage.decrypt, usage.denied),
        (0, 5, 3)
    );
    assert_eq!(usage.last_used_at, Some(T0));
}

#[test]
fn authorize_reports_unknown_and_revoked_keys_and_audits_every_call() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    assert!(matches!(
        ks.authorize("alias/none", KeyOp::Encrypt, &root(), "/b/x"),
        Err(KeystoreError::UnknownKey(k)) if k == "alias/none"
    ));
    let rec = last_record(&ks);
    assert_eq!(rec.operation, "GenerateDataKey");
    assert_eq!(rec.result, "NotFound");
    assert_eq!(rec.key_id.as_deref(), Some("alias/none"));

    ks.authorize(&id, KeyOp::Encrypt, &owner(), "/b/new")
        .unwrap();
    let rec = last_record(&ks);
    assert_eq!(
        (
            rec.time,
            rec.uid,
            rec.pid,
            rec.key_id.as_deref(),
            rec.operation.as_str(),
            rec.object_path.as_deref(),
            rec.result.as_str(),
            rec.detail.as_deref()
        ),
        (
            T0,
            Some(OWNER),
            Some(4242),
            Some(id.as_str()),
            "GenerateDataKey",
            Some("/b/new"),
            "Success",
            Some("material version 1")
        )
    );

    ks.disable_cmk(&id, &owner()).unwrap();
    let err = ks
        .authorize(&id, KeyOp::Decrypt, &owner(), "/b/old")
        .err()
        .unwrap();
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
    let rec = last_record(&ks);
    assert_eq!(
        (rec.operation.as_str(), rec.result.as_str()),
        ("Decrypt", "KeyRevoked")
    );
    // A stranger learns only that access is denied, not the state.
    let err = ks
        .authorize(&id, KeyOp::Decrypt, &caller(9, 9, &[]), "/b/old")
        .err()
        .unwrap();
    assert!(matches!(err, KeystoreError::AccessDenied { .. }), "{err}");
}

#[test]
fn authorize_decrypt_uses_the_version_the_object_names() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let (_, _, v1) = ks.resolve_cmk(&id).unwrap();
    let got = ks.authorize_decrypt(&id, 1, &owner(), "/b/o").unwrap();
    assert_eq!(got.expose_secret(), v1.expose_secret());
    assert!(matches!(
        ks.authorize_decrypt(&id, 7, &owner(), "/b/o"),
        Err(KeystoreError::UnknownKeyVersion { version: 7, .. })
    ));
    assert_eq!(last_record(&ks).result, "NotFound");
}

#[test]
fn the_default_cmk_is_usable_by_everyone_but_changeable_by_no_one() {
    let (_dir, _root, ks) = new_store();
    let id = ks.default_cmk().unwrap();
    let stranger = caller(7000, 7000, &[]);
    ks.authorize(DEFAULT_CMK_ALIAS, KeyOp::Encrypt, &stranger, "/b/o")
        .unwrap();
    for result in [
        ks.disable_cmk(&id, &root()),
        ks.schedule_cmk_deletion(&id, 7, &root()).map(|_| ()),
        ks.grant(&id, Grantee::Uid(1), &[KeyOp::Decrypt], &root())
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(KeystoreError::ServiceManagedKey(ref k)) if *k == id),
            "{result:?}"
        );
    }
    assert!(matches!(
        ks.delete_alias(DEFAULT_CMK_ALIAS, &root()),
        Err(KeystoreError::ReservedAlias(_))
    ));
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::Enabled);
    let created = records(&ks)
        .into_iter()
        .find(|r| r.key_id.as_deref() == Some(id.as_str()))
        .unwrap();
    assert_eq!(
        (created.operation.as_str(), created.uid),
        ("CreateKey", None)
    );
}

#[test]
fn only_the_owner_or_root_may_change_a_cmk_and_refusals_are_audited() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let grantee = caller(2001, 2001, &[]);
    ks.grant(&id, Grantee::Uid(2001), &[KeyOp::Encrypt], &owner())
        .unwrap();
    let err = ks.disable_cmk(&id, &grantee).unwrap_err();
    assert!(
        matches!(err, KeystoreError::AccessDenied { uid: 2001, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("only the owner, uid 1000, or root"),
        "{err}"
    );
    let rec = last_record(&ks);
    assert_eq!(
        (rec.operation.as_str(), rec.result.as_str(), rec.uid),
        ("DisableKey", "AccessDenied", Some(2001))
    );
    assert!(matches!(
        ks.grant(&id, Grantee::Uid(2001), &[KeyOp::Decrypt], &grantee),
        Err(KeystoreError::AccessDenied { .. })
    ));
    assert!(matches!(
        ks.create_alias("alias/mine", &id, &grantee),
        Err(KeystoreError::AccessDenied { .. })
    ));
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::Enabled);
    ks.disable_cmk(&id, &root()).unwrap();
    ks.enable_cmk(&id, &owner()).unwrap();
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::Enabled);
}

#[test]
fn grants_merge_and_revoke_by_operation() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let g = ks
        .grant(&id, Grantee::Gid(50), &[KeyOp::Decrypt], &owner())
        .unwrap();
    assert_eq!(g.operations, vec![KeyOp::Decrypt]);
    let g = ks
        .grant(&id, Grantee::Gid(50), &[KeyOp::Encrypt], &owner())
        .unwrap();
    assert_eq!(g.operations, vec![KeyOp::Encrypt, KeyOp::Decrypt]);
    ks.grant(&id, Grantee::Uid(50), &[KeyOp::Encrypt], &owner())
        .unwrap();
    let grants = ks.grants(&id).unwrap();
    assert_eq!(
        grants.iter().map(|g| g.grantee).collect::<Vec<_>>(),
        vec![Grantee::Uid(50), Grantee::Gid(50)]
    );
    let left = ks
        .revoke(&id, Grantee::Gid(50), Some(&[KeyOp::Encrypt]), &owner())
        .unwrap();
    assert_eq!(left.unwrap().operations, vec![KeyOp::Decrypt]);
    assert!(matches!(
        ks.authorize(&id, KeyOp::Encrypt, &caller(9, 50, &[]), "/b/o"),
        Err(KeystoreError::AccessDenied { .. })
    ));
    ks.authorize(&id, KeyOp::Decrypt, &caller(9, 50, &[]), "/b/o")
        .unwrap();
    assert_eq!(
        ks.revoke(&id, Grantee::Gid(50), None, &owner()).unwrap(),
        None
    );
    assert!(matches!(
        ks.revoke(&id, Grantee::Gid(50), None, &owner()),
        Err(KeystoreError::UnknownGrant { .. })
    ));
    assert!(matches!(
        ks.grant(&id, Grantee::Uid(1), &[], &owner()),
        Err(KeystoreError::InvalidGrant(_))
    ));
    assert_eq!(
        KeyOp::parse_list("Decrypt, encrypt,decrypt").unwrap(),
        vec![KeyOp::Encrypt, KeyOp::Decrypt]
    );
    assert!(KeyOp::parse_list("sign").is_err());
}

#[test]
fn state_transitions_follow_the_cloud_kms_rules() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    for days in [0, 6, 31, -1] {
        assert!(matches!(
            ks.schedule_cmk_deletion(&id, days, &owner()),
            Err(KeystoreError::InvalidPendingDays(d)) if d == days
        ));
    }
    let date = ks.schedule_cmk_deletion(&id, 7, &owner()).unwrap();
    assert_eq!(date, T0 + 7 * DAY);
    let info = ks.cmk_info(&id).unwrap();
    assert_eq!(
        (info.state, info.deletion_date),
        (CmkState::PendingDeletion, Some(date))
    );
    for err in [
        ks.enable_cmk(&id, &owner()).unwrap_err(),
        ks.disable_cmk(&id, &owner()).unwrap_err(),
        ks.schedule_cmk_deletion(&id, 10, &owner()).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                KeystoreError::InvalidKeyState {
                    state: CmkState::PendingDeletion,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert!(matches!(
        ks.resolve_cmk(&id),
        Err(KeystoreError::KeyRevoked {
            state: CmkState::PendingDeletion,
            ..
        })
    ));
    assert_eq!(
        ks.cancel_cmk_deletion(&id, &owner()).unwrap(),
        CmkState::Disabled
    );
    let info = ks.cmk_info(&id).unwrap();
    assert_eq!((info.state, info.deletion_date), (CmkState::Disabled, None));
    assert!(matches!(
        ks.cancel_cmk_deletion(&id, &owner()),
        Err(KeystoreError::InvalidKeyState {
            state: CmkState::Disabled,
            ..
        })
    ));
    ks.enable_cmk(&id, &owner()).unwrap();
    ks.resolve_cmk(&id).unwrap();

    // An EXTERNAL key without material goes back to PendingImport.
    let ext = ks
        .create_cmk_for("", None, CmkOrigin::External, &owner())
        .unwrap();
    assert!(matches!(
        ks.enable_cmk(&ext, &owner()),
        Err(KeystoreError::InvalidKeyState {
            state: CmkState::PendingImport,
            ..
        })
    ));
    ks.schedule_cmk_deletion(&ext, 30, &owner()).unwrap();
    assert_eq!(
        ks.cancel_cmk_deletion(&ext, &owner()).unwrap(),
        CmkState::PendingImport
    );
    let ops: Vec<String> = records(&ks)
        .into_iter()
        .filter(|r| r.key_id.as_deref() == Some(id.as_str()) && r.result == "Success")
        .map(|r| r.operation)
        .collect();
    assert_eq!(
        ops,
        [
            "CreateKey",
            "ScheduleKeyDeletion",
            "CancelKeyDeletion",
            "EnableKey"
        ]
    );
}

#[test]
fn pending_deletions_destroy_material_for_good_once_their_date_passes() {
    let (dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let keep = ks
        .create_cmk_for("", None, CmkOrigin::Ssefs, &owner())
        .unwrap();
    ks.grant(&id, Grantee::Uid(5), &[KeyOp::Decrypt], &owner())
        .unwrap();
    let date = ks.schedule_cmk_deletion(&id, 7, &owner()).unwrap();
    assert!(ks.process_pending_deletions(date - 1).unwrap().is_empty());
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::PendingDeletion);

    let destroyed = ks.process_pending_deletions(date).unwrap();
    assert_eq!(
        destroyed,
        vec![DestroyedCmk {
            key_id: id.clone(),
            deletion_date: date
        }]
    );
    assert!(ks.process_pending_deletions(date + DAY).unwrap().is_empty());
    let info = ks.cmk_info(&id).unwrap();
    assert_eq!(info.state, CmkState::Destroyed);
    assert!(info.aliases.is_empty());
    assert!(!info.material_versions[0].available);
    assert!(ks.grants(&id).unwrap().is_empty());
    let (wrapped, check): (Option<Vec<u8>>, Option<Vec<u8>>) = raw(dir.path())
        .query_row(
            "SELECT wrapped, material_check FROM cmk_materials WHERE key_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((wrapped, check), (None, None));
    // Objects under it report a revoked key, not an unknown one; the alias is free again.
    assert!(matches!(
        ks.resolve(&KeyRef::Cmk {
            key_id: id.clone(),
            version: 1
        }),
        Err(KeystoreError::KeyRevoked {
            state: CmkState::Destroyed,
            ..
        })
    ));
    assert!(matches!(
        ks.authorize_decrypt(&id, 1, &root(), "/b/o"),
        Err(KeystoreError::KeyRevoked {
            state: CmkState::Destroyed,
            ..
        })
    ));
    assert!(matches!(
        ks.cancel_cmk_deletion(&id, &owner()),
        Err(KeystoreError::InvalidKeyState {
            state: CmkState::Destroyed,
            ..
        })
    ));
    ks.create_alias("alias/user", &keep, &owner()).unwrap();
    let rec = records(&ks)
        .into_iter()
        .find(|r| r.operation == "DeleteKey")
        .unwrap();
    assert_eq!((rec.uid, rec.key_id.as_deref()), (None, Some(id.as_str())));
}

/// What a user does with openssl: wrap 32 bytes of material under the import public key
/// with RSAES-OAEP, SHA-256 for the hash and MGF1.
fn wrap_for_import(public_key_der: &[u8], material: &[u8]) -> Vec<u8> {
    let public = RsaPublicKey::from_public_key_der(public_key_der).unwrap();
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    public
        .encrypt(&mut rng, Oaep::new::<rsa::sha2::Sha256>(), material)
        .unwrap()
}

#[test]
fn byok_round_trip_through_rsa_oaep_and_back_after_deleting_material() {
    let (_dir, _root, ks) = new_store();
    let id = ks
        .create_cmk_for("byok", Some("alias/byok"), CmkOrigin::External, &owner())
        .unwrap();
    let params = ks.get_import_params("alias/byok", &owner()).unwrap();
    assert_eq!(params.key_id, id);
    assert_eq!(params.expires_at, T0 + IMPORT_PARAMS_LIFETIME);
    assert!(
        params
            .public_key_pem
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let material = [0x5a; 32];
    let ciphertext = wrap_for_import(&params.public_key_der, &material);
    let version = ks
        .import_material(
            &id,
            ImportedMaterial::Wrapped {
                token: params.token.clone(),
                ciphertext: ciphertext.clone(),
            },
            &owner(),
        )
        .unwrap();
    assert_eq!(version, 1);
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::Enabled);
    let (_, _, got) = ks.authorize(&id, KeyOp::Encrypt, &owner(), "/b/o").unwrap();
    assert_eq!(got.expose_secret(), &material);

    // The token was one-time.
    let err = ks
        .import_material(
            &id,
            ImportedMaterial::Wrapped {
                token: params.token.clone(),
                ciphertext,
            },
            &owner(),
        )
        .unwrap_err();
    assert!(matches!(err, KeystoreError::NoImportParams(_)), "{err}");

    ks.delete_material(&id, &owner()).unwrap();
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::PendingImport);
    assert!(matches!(
        ks.authorize_decrypt(&id, 1, &owner(), "/b/o"),
        Err(KeystoreError::KeyRevoked {
            state: CmkState::PendingImport,
            ..
        })
    ));
    let other = Key256::from_bytes(&[0x5b; 32]).unwrap();
    assert!(matches!(
        ks.import_material(&id, ImportedMaterial::Plain(other), &owner()),
        Err(KeystoreError::MaterialMismatch(_))
    ));
    assert_eq!(ks.cmk_info(&id).unwrap().state, CmkState::PendingImport);
    let same = Key256::from_bytes(&material).unwrap();
    ks.import_material(&id, ImportedMaterial::Plain(same), &owner())
        .unwrap();
    let got = ks.authorize_decrypt(&id, 1, &owner(), "/b/o").unwrap();
    assert_eq!(got.expose_secret(), &material);
    let ops: Vec<String> = records(&ks)
        .into_iter()
        .filter(|r| r.key_id.as_deref() == Some(id.as_str()))
        .map(|r| format!("{} {}", r.operation, r.result))
        .collect();
    assert!(
        ops.contains(&"GetParametersForImport Success".to_string()),
        "{ops:?}"
    );
    assert!(
        ops.contains(&"DeleteImportedKeyMaterial Success".to_string()),
        "{ops:?}"
    );
    assert!(
        ops.contains(&"ImportKeyMaterial InvalidParameter".to_string()),
        "{ops:?}"
    );
}

#[test]
fn byok_refuses_wrong_tokens_expired_parameters_and_bad_material() {
    let (_dir, _root, mut ks) = new_store();
    let a = ks
        .create_cmk_for("", None, CmkOrigin::External, &owner())
        .unwrap();
    let b = ks
        .create_cmk_for("", None, CmkOrigin::External, &owner())
        .unwrap();
    let ssefs_key = user_key(&ks);
    assert!(matches!(
        ks.get_import_params(&ssefs_key, &owner()),
        Err(KeystoreError::NotExternal(_))
    ));
    assert!(matches!(
        ks.get_import_params(&a, &caller(1, 1, &[])),
        Err(KeystoreError::AccessDenied { .. })
    ));
    let pa = ks.get_import_params(&a, &owner()).unwrap();
    let pb = ks.get_import_params(&b, &owner()).unwrap();
    let import = |ks: &Keystore, key: &str, token: &str, ciphertext: Vec<u8>| {
        ks.import_material(
            key,
            ImportedMaterial::Wrapped {
                token: token.to_string(),
                ciphertext,
            },
            &owner(),
        )
    };
    let for_a = wrap_for_import(&pa.public_key_der, &[1; 32]);
    let err = import(&ks, &a, &pb.token, for_a.clone()).unwrap_err();
    assert!(
        matches!(err, KeystoreError::ImportTokenMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&b), "{err}");
    let err = import(&ks, &a, "0123", for_a.clone()).unwrap_err();
    assert!(
        matches!(err, KeystoreError::ImportTokenMismatch { .. }),
        "{err}"
    );
    // Material wrapped for b's key does not decrypt with a's.
    let for_b = wrap_for_import(&pb.public_key_der, &[1; 32]);
    let err = import(&ks, &a, &pa.token, for_b).unwrap_err();
    assert!(
        matches!(err, KeystoreError::InvalidImportMaterial { .. }),
        "{err}"
    );
    let err = import(&ks, &a, &pa.token, vec![0; 10]).unwrap_err();
    assert!(err.to_string().contains("is 10 bytes"), "{err}");
    let short = wrap_for_import(&pa.public_key_der, &[1; 16]);
    let err = import(&ks, &a, &pa.token, short).unwrap_err();
    assert!(err.to_string().contains("it is 16 bytes"), "{err}");
    assert_eq!(ks.cmk_info(&a).unwrap().state, CmkState::PendingImport);

    ks.set_clock(Clock::Fixed(pa.expires_at));
    let err = import(&ks, &a, &pa.token, for_a).unwrap_err();
    assert!(
        matches!(err, KeystoreError::ImportParamsExpired { .. }),
        "{err}"
    );
    assert_eq!(ks.cmk_info(&a).unwrap().state, CmkState::PendingImport);
}

#[test]
fn validate_rule_applies_the_xattr_rules() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let rule = |algorithm, key: Option<&str>| BucketRule {
        algorithm,
        kms_key_id: key.map(str::to_string),
    };
    let stranger = caller(7, 7, &[]);
    assert_eq!(
        ks.validate_rule(&rule(Algorithm::Aes256, None), &stranger)
            .unwrap(),
        rule(Algorithm::Aes256, None)
    );
    assert!(matches!(
        ks.validate_rule(&rule(Algorithm::Aes256, Some(&id)), &owner()),
        Err(KeystoreError::InvalidBucketRule(_))
    ));
    assert!(matches!(
        ks.validate_rule(&rule(Algorithm::None, None), &owner()),
        Err(KeystoreError::InvalidBucketRule(_))
    ));
    // KMS without a key id: the default CMK, created on first use.
    assert_eq!(
        ks.validate_rule(&rule(Algorithm::Kms, Some(" ")), &stranger)
            .unwrap(),
        rule(Algorithm::Kms, None)
    );
    ks.cmk_info(DEFAULT_CMK_ALIAS).unwrap();
    assert_eq!(
        ks.validate_rule(&rule(Algorithm::Kms, Some("alias/user")), &owner())
            .unwrap(),
        rule(Algorithm::Kms, Some("alias/user"))
    );
    assert!(matches!(
        ks.validate_rule(&rule(Algorithm::Kms, Some("alias/user")), &stranger),
        Err(KeystoreError::AccessDenied { .. })
    ));
    assert!(matches!(
        ks.validate_rule(&rule(Algorithm::Kms, Some("nope")), &owner()),
        Err(KeystoreError::UnknownKey(_))
    ));
    ks.disable_cmk(&id, &owner()).unwrap();
    assert!(matches!(
        ks.validate_rule(&rule(Algorithm::Kms, Some(&id)), &owner()),
        Err(KeystoreError::KeyRevoked { .. })
    ));
}

#[test]
fn audit_is_pruned_by_age_and_row_cap_and_survives_reopening() {
    let (dir, root_key, mut ks) = new_store();
    assert_eq!(
        ks.audit_settings().unwrap(),
        AuditSettings {
            retention_days: 90,
            max_rows: 100_000
        }
    );
    let id = user_key(&ks);
    for day in 0..5 {
        ks.set_clock(Clock::Fixed(T0 + day * DAY));
        ks.authorize(&id, KeyOp::Decrypt, &owner(), &format!("/b/{day}"))
            .unwrap();
    }
    assert_eq!(records(&ks).len(), 6);
    ks.set_audit_settings(AuditSettings {
        retention_days: 2,
        max_rows: 100,
    })
    .unwrap();
    let times: Vec<i64> = records(&ks).iter().map(|r| r.time).collect();
    assert_eq!(times, vec![T0 + 2 * DAY, T0 + 3 * DAY, T0 + 4 * DAY]);
    ks.set_audit_settings(AuditSettings {
        retention_days: 2,
        max_rows: 2,
    })
    .unwrap();
    ks.authorize(&id, KeyOp::Decrypt, &owner(), "/b/last")
        .unwrap();
    let paths: Vec<String> = records(&ks)
        .into_iter()
        .filter_map(|r| r.object_path)
        .collect();
    assert_eq!(paths, vec!["/b/4", "/b/last"]);
    let filtered = ks
        .audit_records(&AuditQuery {
            key: Some("alias/user".into()),
            since: Some(T0 + 4 * DAY + 1),
        })
        .unwrap();
    assert_eq!(filtered.len(), 0);
    for bad in [
        AuditSettings {
            retention_days: 0,
            max_rows: 1,
        },
        AuditSettings {
            retention_days: 1,
            max_rows: 0,
        },
    ] {
        assert!(matches!(
            ks.set_audit_settings(bad),
            Err(KeystoreError::InvalidAuditSetting(_))
        ));
    }
    drop(ks);
    let ks = Keystore::open(dir.path(), &root_key).unwrap();
    assert_eq!(records(&ks).len(), 2);
    assert_eq!(ks.audit_settings().unwrap().max_rows, 2);
}

#[test]
fn audit_records_hold_no_key_material() {
    let (dir, root_key, ks) = new_store();
    let id = user_key(&ks);
    let (_, _, material) = ks.authorize(&id, KeyOp::Encrypt, &owner(), "/b/o").unwrap();
    let conn = raw(dir.path());
    let mut stmt = conn
        .prepare("SELECT coalesce(key_id,'') || coalesce(object_path,'') || coalesce(detail,'') FROM audit")
        .unwrap();
    let texts: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for secret in [material.expose_secret(), root_key.expose_secret()] {
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        assert!(texts.iter().all(|t| !t.contains(&hex)));
    }
}

#[test]
fn schema_step_two_keeps_version_one_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEYSTORE_FILE);
    std::fs::File::create(&path).unwrap();
    {
        let mut conn = connect(&path).unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        conn.execute_batch(
            "INSERT INTO meta (id, store_id, created_at, root_check)
                 VALUES (1, '0123456789abcdef0123456789abcdef', 1, zeroblob(32));
             INSERT INTO cmks (key_id, origin, state, owner_uid, created_at)
                 VALUES ('k1', 'ssefs', 'Disabled', 5, 10);
             INSERT INTO cmk_materials (key_id, version, wrapped, created_at)
                 VALUES ('k1', 1, x'00', 10);
             INSERT INTO aliases (alias, key_id) VALUES ('alias/k', 'k1');",
        )
        .unwrap();
    }
    let mut conn = connect(&path).unwrap();
    schema::migrate(&mut conn).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let fk: bool = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert!(fk);
    let (state, owner, alias, materials): (String, u32, String, i64) = conn
        .query_row(
            "SELECT state, owner_uid, (SELECT alias FROM aliases WHERE key_id = 'k1'),
                    (SELECT count(*) FROM cmk_materials WHERE key_id = 'k1')
             FROM cmks WHERE key_id = 'k1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), owner, alias.as_str(), materials),
        ("Disabled", 5, "alias/k", 1)
    );
    conn.execute(
        "UPDATE cmks SET state = 'Destroyed', deletion_date = 1 WHERE key_id = 'k1'",
        [],
    )
    .unwrap();
    // Foreign keys still hold after the rebuild.
    assert!(
        conn.execute(
            "INSERT INTO aliases (alias, key_id) VALUES ('alias/x', 'nope')",
            []
        )
        .is_err()
    );
    let retention: i64 = conn
        .query_row("SELECT audit_retention_days FROM meta", [], |r| r.get(0))
        .unwrap();
    assert_eq!(retention, 90);
}

#[test]
fn identical_uses_are_merged_into_one_counted_record() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let before = records(&ks).len();
    for _ in 0..50 {
        ks.authorize(&id, KeyOp::Decrypt, &owner(), "/b/same")
            .unwrap();
    }
    ks.authorize(&id, KeyOp::Decrypt, &owner(), "/b/other")
        .unwrap();
    let all = records(&ks);
    assert_eq!(all.len(), before + 2);
    let same = &all[all.len() - 2];
    assert_eq!(same.object_path.as_deref(), Some("/b/same"));
    assert_eq!(same.repeats, 50);
    assert_eq!(same.last_time, Some(T0));
    assert_eq!(ks.verify_audit().unwrap().problems, Vec::<String>::new());
}

#[test]
fn one_uid_over_its_rate_is_counted_not_recorded_row_by_row() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    let uses = AUDIT_RATE_PER_MINUTE + 400;
    for n in 0..uses {
        ks.authorize(&id, KeyOp::Decrypt, &owner(), &format!("/b/{n}"))
            .unwrap();
    }
    let all = records(&ks);
    let of_owner: Vec<&AuditRecord> = all.iter().filter(|r| r.uid == Some(OWNER)).collect();
    assert!(
        of_owner.len() as i64 <= AUDIT_RATE_PER_MINUTE + 1,
        "{} records",
        of_owner.len()
    );
    let limited = of_owner
        .iter()
        .find(|r| r.operation == audit::RATE_LIMITED)
        .expect("a RateLimited record");
    let counted: u64 = of_owner.iter().map(|r| r.repeats).sum();
    assert_eq!(
        counted as i64,
        uses + 1,
        "every use is counted (and CreateKey)"
    );
    assert!(limited.repeats > 1);
    assert_eq!(ks.verify_audit().unwrap().problems, Vec::<String>::new());
}

#[test]
fn reaching_the_cap_is_counted_and_the_chain_still_verifies() {
    let (_dir, _root, ks) = new_store();
    let id = user_key(&ks);
    ks.set_audit_settings(AuditSettings {
        retention_days: 90,
        max_rows: 3,
    })
    .unwrap();
    for n in 0..10 {
        ks.authorize(&id, KeyOp::Decrypt, &owner(), &format!("/b/{n}"))
            .unwrap();
    }
    assert_eq!(records(&ks).len(), 3);
    let integrity = ks.verify_audit().unwrap();
    assert_eq!(integrity.problems, Vec::<String>::new());
    assert_eq!(
        integrity.evicted, 8,
        "CreateKey and seven uses left at the cap"
    );
}

#[test]
fn audit_records_changed_or_removed_outside_ssefs_are_found() {
    let (dir, _root, ks) = new_store();
    let id = user_key(&ks);
    for n in 0..5 {
        ks.authorize(&id, KeyOp::Decrypt, &owner(), &format!("/b/{n}"))
            .unwrap();
    }
    drop(ks);
    let pristine = std::fs::read(dir.path().join(KEYSTORE_FILE)).unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "UPDATE audit SET uid = 0 WHERE object_path = '/b/2'",
            "was changed",
        ),
        (
            "DELETE FROM audit WHERE object_path = '/b/2'",
            "records before it were removed",
        ),
        (
            "DELETE FROM audit WHERE object_path = '/b/4'",
            "were removed",
        ),
        ("DELETE FROM audit", "every audit record was removed"),
        (
            "UPDATE audit_chain SET evicted = evicted + 7",
            "chain head was changed",
        ),
        ("DELETE FROM audit_chain", "chain head is missing"),
    ];
    for (sql, expected) in cases {
        std::fs::write(dir.path().join(KEYSTORE_FILE), &pristine).unwrap();
        raw(dir.path()).execute_batch(sql).unwrap();
        let ks = Keystore::open(dir.path(), &_root).unwrap();
        let problems = ks.verify_audit().unwrap().problems.join("; ");
        assert!(problems.contains(expected), "{sql}: {problems:?}");
        // And the next record is refused rather than chained onto the edit, where it can be.
        if sql.contains("'/b/4'") || sql.contains("audit_chain") {
            assert!(matches!(
                ks.authorize(&id, KeyOp::Decrypt, &owner(), "/b/next"),
                Err(KeystoreError::Tampered(_))
            ));
        }
    }
}

//! `ssefs kms` through the real binary on stores made by `ssefs init`: every command, state
//! transition, refusal and JSON shape, the BYOK round trip with RSA-OAEP as a user would do it
//! with openssl, and the owner check against another uid.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use support::cli::Scratch;
mod support;

use serde_json::Value;
use ssefs::keystore::{CmkOrigin, Keystore, keystore_dir, load_root_key_file};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::cli::{assert_failed_with, hand_over};

/// The uid and gid the "other user" tests run the binary as, when the tests run as root.
const OTHER_UID: u32 = 65534;
const DAY: i64 = 86_400;
const T0: i64 = 1_800_000_000;

impl Scratch {
    /// `ssefs kms ARGS --store st --root-key root.key`, at the time T0 unless ARGS give
    /// `--now` (so no test depends on the machine's clock).
    fn kms_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare();
        cmd.arg("kms")
            .args(args)
            .arg("--store")
            .arg(self.store())
            .arg("--root-key")
            .arg(self.key());
        if !args.contains(&"--now") {
            cmd.args(["--now", &T0.to_string()]);
        }
        cmd
    }
    fn kms(&self, args: &[&str]) -> Output {
        self.kms_cmd(args).output().unwrap()
    }
    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kms(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
    /// Runs with `--json` and expects success; returns the parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
    /// Runs and expects failure with one `ssefs: ` line on stderr containing `needle`.
    fn fails(&self, args: &[&str], needle: &str) {
        assert_failed_with(&self.kms(args), needle);
    }
    fn keystore(&self) -> Keystore {
        let root = load_root_key_file(&self.key()).unwrap();
        Keystore::open(&keystore_dir(&self.store()), &root).unwrap()
    }

    /// A command run as another, unprivileged uid: as `OTHER_UID` (the store and root key
    /// handed to it) when the tests run as root, else as the current user, who is not root.
    fn as_other_user(&self, args: &[&str]) -> Output {
        let mut cmd = self.kms_cmd(args);
        // SAFETY: geteuid cannot fail and takes no pointers.
        if unsafe { libc::geteuid() } == 0 {
            hand_over(self.dir.path(), OTHER_UID);
            cmd.uid(OTHER_UID).gid(OTHER_UID);
        }
        cmd.output().unwrap()
    }
    /// The uid the other-user commands run as.
    fn other_uid(&self) -> u32 {
        // SAFETY: as above.
        match unsafe { libc::geteuid() } {
            0 => OTHER_UID,
            uid => uid,
        }
    }
}

fn metadata(v: &Value) -> &Value {
    &v["KeyMetadata"]
}

fn create(s: &Scratch, args: &[&str]) -> String {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let v = s.json(&all);
    metadata(&v)["KeyId"].as_str().unwrap().to_string()
}

fn state(s: &Scratch, key: &str) -> String {
    metadata(&s.json(&["describe", key]))["KeyState"]
        .as_str()
        .unwrap()
        .to_string()
}

fn rfc3339(secs: i64) -> String {
    ssefs::cli::kms::format_rfc3339(secs)
}

#[test]
fn create_prints_key_metadata_with_cloud_field_names() {
    let s = Scratch::new();
    let v = s.json(&[
        "create",
        "--description",
        "photo archive",
        "--alias",
        "alias/photos",
        "--now",
        &T0.to_string(),
    ]);
    let m = metadata(&v);
    let id = m["KeyId"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(m["KeyState"], "Enabled");
    assert_eq!(m["Description"], "photo archive");
    assert_eq!(m["Origin"], "ssefs");
    assert_eq!(m["KeyManager"], "Customer");
    assert_eq!(m["CreationDate"], rfc3339(T0).as_str());
    assert_eq!(m["DeletionDate"], Value::Null);
    assert_eq!(m["Aliases"], serde_json::json!(["alias/photos"]));
    assert_eq!(m["MaterialVersions"][0]["Version"], 1);
    assert_eq!(m["MaterialVersions"][0]["Available"], true);
    assert_eq!(
        m["Owner"].as_u64().unwrap(),
        u64::from(unsafe { libc::getuid() })
    );
    assert_eq!(
        m["UsageCounts"],
        serde_json::json!({"GenerateDataKey": 0, "Decrypt": 0, "Denied": 0})
    );

    // describe by id and by alias give the same; list holds it; text is readable.
    assert_eq!(s.json(&["describe", "alias/photos"]), v);
    assert_eq!(s.json(&["describe", id]), v);
    let list = s.json(&["list"]);
    assert_eq!(list["Keys"].as_array().unwrap().len(), 1);
    assert_eq!(list["Keys"][0], *m);
    let text = s.ok(&["describe", "alias/photos"]);
    assert!(text.contains(&format!("KeyId:            {id}")), "{text}");
    assert!(text.contains("KeyState:         Enabled"), "{text}");
    let table = s.ok(&["list"]);
    assert!(table.starts_with("KEY ID"), "{table}");
    assert!(
        table.contains(id) && table.contains("alias/photos"),
        "{table}"
    );

    s.fails(&["describe", "alias/none"], "no such CMK: alias/none");
    s.fails(&["create", "--alias", "photos"], "invalid alias");
    s.fails(&["create", "--alias", "alias/photos"], "already exists");
    s.fails(&["create", "--alias", "alias/acs/mine"], "reserved");
    let long = "d".repeat(8193);
    s.fails(&["create", "--description", &long], "at most 8192 bytes");
    assert_eq!(s.json(&["list"])["Keys"].as_array().unwrap().len(), 1);
}

#[test]
fn life_cycle_enable_disable_schedule_cancel_and_destroy() {
    let s = Scratch::new();
    let id = create(&s, &["--alias", "alias/k"]);
    assert_eq!(
        metadata(&s.json(&["disable", "alias/k"]))["KeyState"],
        "Disabled"
    );
    assert_eq!(metadata(&s.json(&["disable", &id]))["KeyState"], "Disabled");
    assert_eq!(metadata(&s.json(&["enable", &id]))["KeyState"], "Enabled");

    for days in ["6", "31", "0"] {
        s.fails(
            &["schedule-deletion", &id, "--pending-days", days],
            "7 to 30 days",
        );
    }
    let v = s.json(&[
        "schedule-deletion",
        &id,
        "--pending-days",
        "7",
        "--now",
        &T0.to_string(),
    ]);
    assert_eq!(metadata(&v)["KeyState"], "PendingDeletion");
    assert_eq!(metadata(&v)["DeletionDate"], rfc3339(T0 + 7 * DAY).as_str());
    s.fails(&["enable", &id], "cancel its deletion first");
    s.fails(&["disable", &id], "PendingDeletion");
    s.fails(
        &["schedule-deletion", &id, "--pending-days", "9"],
        "cancel the scheduled deletion first",
    );
    let v = s.json(&["cancel-deletion", &id]);
    assert_eq!(metadata(&v)["KeyState"], "Disabled");
    assert_eq!(metadata(&v)["DeletionDate"], Value::Null);
    s.fails(&["cancel-deletion", &id], "no deletion is scheduled");

    // Schedule again; before the date nothing happens, after it the key is destroyed.
    let now = T0 + DAY;
    s.ok(&[
        "schedule-deletion",
        &id,
        "--pending-days",
        "30",
        "--now",
        &now.to_string(),
    ]);
    let date = now + 30 * DAY;
    let before = s.json(&["describe", &id, "--now", &(date - 1).to_string()]);
    assert_eq!(metadata(&before)["KeyState"], "PendingDeletion");
    let after = s.json(&["describe", &id, "--now", &rfc3339(date)]);
    assert_eq!(metadata(&after)["KeyState"], "Destroyed");
    assert_eq!(metadata(&after)["Aliases"], serde_json::json!([]));
    assert_eq!(metadata(&after)["MaterialVersions"][0]["Available"], false);
    // Destruction is for good: the real clock (before the date) does not bring it back.
    assert_eq!(state(&s, &id), "Destroyed");
    s.fails(&["cancel-deletion", &id], "Destroyed");
    s.fails(&["enable", &id], "a destroyed CMK is gone");
    s.fails(&["describe", "alias/k"], "no such CMK");
    let audit = s.json(&["audit", "--key", &id]);
    let ops: Vec<String> = audit["Records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["Result"] == "Success")
        .map(|r| r["Operation"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ops,
        [
            "CreateKey",
            "DisableKey",
            "DisableKey",
            "EnableKey",
            "ScheduleKeyDeletion",
            "CancelKeyDeletion",
            "ScheduleKeyDeletion",
            "DeleteKey"
        ]
    );
    s.fails(&["describe", &id, "--now", "tomorrow"], "invalid time");
}

#[test]
fn aliases_are_created_listed_and_deleted_but_reserved_ones_are_not() {
    let s = Scratch::new();
    let id = create(&s, &[]);
    let v = s.json(&["alias", "create", "alias/a:b/c_d-1", &id]);
    assert_eq!(
        v,
        serde_json::json!({"Aliases": [{"AliasName": "alias/a:b/c_d-1", "KeyId": id}]})
    );
    s.ok(&["alias", "create", "alias/second", "alias/a:b/c_d-1"]);
    s.fails(&["alias", "create", "alias/second", &id], "already exists");
    s.fails(&["alias", "create", "alias/acs/x", &id], "reserved");
    s.fails(&["alias", "create", "alias/sp ace", &id], "invalid alias");
    s.fails(&["alias", "create", "alias/x", "nope"], "no such CMK");
    let list = s.json(&["alias", "list"]);
    assert_eq!(list["Aliases"].as_array().unwrap().len(), 2);
    assert_eq!(
        metadata(&s.json(&["describe", &id]))["Aliases"],
        serde_json::json!(["alias/a:b/c_d-1", "alias/second"])
    );
    s.ok(&["alias", "delete", "alias/second"]);
    s.fails(&["alias", "delete", "alias/second"], "no such alias");
    s.fails(&["alias", "delete", "alias/acs/oss"], "reserved");
    let text = s.ok(&["alias", "list"]);
    assert_eq!(text, format!("alias/a:b/c_d-1  {id}\n"));
}

/// What a user does with `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:oaep
/// -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`.
/// Writes plain key material as a user must: mode 0600 (anything else is refused).
fn write_secret(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn wrap_like_openssl(pem: &str, material: &[u8]) -> Vec<u8> {
    let public = RsaPublicKey::from_public_key_pem(pem).unwrap();
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    public
        .encrypt(&mut rng, Oaep::new::<rsa::sha2::Sha256>(), material)
        .unwrap()
}

#[test]
fn byok_full_rsa_round_trip_delete_material_and_reimport() {
    let s = Scratch::new();
    let id = create(&s, &["--origin", "external", "--alias", "alias/byok"]);
    let m = metadata(&s.json(&["describe", &id])).clone();
    assert_eq!(m["KeyState"], "PendingImport");
    assert_eq!(m["Origin"], "EXTERNAL");
    assert_eq!(m["MaterialVersions"], serde_json::json!([]));
    s.fails(&["enable", &id], "import its material instead");

    let out_dir = s.path("params");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.to_str().unwrap();
    let p = s.json(&[
        "get-import-params",
        "alias/byok",
        "--out-dir",
        out,
        "--now",
        &T0.to_string(),
    ]);
    assert_eq!(p["KeyId"], id.as_str());
    assert_eq!(p["WrappingAlgorithm"], "RSAES_OAEP_SHA_256");
    assert_eq!(p["WrappingKeySpec"], "RSA_2048");
    assert_eq!(p["TokenExpireTime"], rfc3339(T0 + DAY).as_str());
    let pem_path = PathBuf::from(p["PublicKeyPemFile"].as_str().unwrap());
    let der_path = PathBuf::from(p["PublicKeyDerFile"].as_str().unwrap());
    let token_path = PathBuf::from(p["ImportTokenFile"].as_str().unwrap());
    assert!(pem_path.starts_with(&out_dir) && der_path.starts_with(&out_dir));
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    let der = std::fs::read(&der_path).unwrap();
    assert_eq!(
        RsaPublicKey::from_public_key_der(&der).unwrap(),
        RsaPublicKey::from_public_key_pem(&pem).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(&token_path).unwrap().trim(),
        p["ImportToken"].as_str().unwrap()
    );

    let material = [0x42u8; 32];
    let wrapped = s.path("material.bin");
    std::fs::write(&wrapped, wrap_like_openssl(&pem, &material)).unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            &id,
            "--encrypted-material",
            wrapped.to_str().unwrap(),
            "--token",
            token_path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        s.kms(&args)
    };
    // Past the 24 hours the parameters are refused.
    assert_failed_with(&import(&["--now", &(T0 + DAY).to_string()]), "expired");
    let out = import(&["--json", "--now", &(T0 + DAY - 1).to_string()]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["KeyState"], "Enabled");
    assert_eq!(v["MaterialVersion"], 1);
    // The keystore now hands out exactly the imported material.
    let (_, version, got) = s.keystore().resolve_cmk("alias/byok").unwrap();
    assert_eq!((version, got.expose_secret()), (1, &material));
    // The token was one-time.
    assert_failed_with(&import(&[]), "get-import-params");

    assert_eq!(
        metadata(&s.json(&["delete-material", &id]))["KeyState"],
        "PendingImport"
    );
    assert!(s.keystore().resolve_cmk(&id).is_err());
    s.fails(&["delete-material", &id], "it has no material");

    // Different material is refused; the same material (here in plain) restores the key.
    let other = s.path("other.key");
    write_secret(&other, &[0x43u8; 32]);
    s.fails(
        &["import", &id, "--material", other.to_str().unwrap()],
        "differs from the material",
    );
    let same = s.path("same.key");
    write_secret(&same, &material);
    let out = s.kms(&["import", &id, "--material", same.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: key material was imported in plain"),
        "{stderr}"
    );
    assert_eq!(state(&s, &id), "Enabled");
    let (_, _, got) = s.keystore().resolve_cmk(&id).unwrap();
    assert_eq!(got.expose_secret(), &material);
}

#[test]
fn byok_refusals_are_clear() {
    let s = Scratch::new();
    let a = create(&s, &["--origin", "EXTERNAL"]);
    let b = create(&s, &["--origin", "external"]);
    let own = create(&s, &[]);
    let dir = s.path("p");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.to_str().unwrap();
    s.fails(&["get-import-params", &own, "--out-dir", d], "origin ssefs");
    let pa = s.json(&["get-import-params", &a, "--out-dir", d]);
    let pb = s.json(&["get-import-params", &b, "--out-dir", d]);
    let pem = std::fs::read_to_string(pa["PublicKeyPemFile"].as_str().unwrap()).unwrap();
    let wrapped = s.path("w.bin");
    std::fs::write(&wrapped, wrap_like_openssl(&pem, &[1; 32])).unwrap();
    let w = wrapped.to_str().unwrap();
    let token_b = pb["ImportTokenFile"].as_str().unwrap();
    let token_a = pa["ImportTokenFile"].as_str().unwrap();
    s.fails(
        &["import", &a, "--encrypted-material", w, "--token", token_b],
        &format!("it belongs to CMK {b}"),
    );
    s.fails(
        &["import", &b, "--encrypted-material", w, "--token", token_b],
        "does not decrypt with this CMK's import key",
    );
    let short = s.path("short.bin");
    std::fs::write(&short, [0u8; 100]).unwrap();
    s.fails(
        &[
            "import",
            &a,
            "--encrypted-material",
            short.to_str().unwrap(),
            "--token",
            token_a,
        ],
        "is 100 bytes",
    );
    let plain = s.path("p31.key");
    write_secret(&plain, &[0u8; 31]);
    s.fails(
        &["import", &a, "--material", plain.to_str().unwrap()],
        "exactly 32 bytes",
    );
    let out = s.kms(&["import", &a, "--encrypted-material", w]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(state(&s, &a), "PendingImport");
    assert_eq!(state(&s, &b), "PendingImport");
}

#[test]
fn grants_are_added_listed_and_revoked() {
    let s = Scratch::new();
    let id = create(&s, &["--alias", "alias/g"]);
    let v = s.json(&[
        "grant",
        "alias/g",
        "--uid",
        "2000",
        "--operations",
        "decrypt",
    ]);
    assert_eq!(v["KeyId"], id.as_str());
    assert_eq!(v["Grants"][0]["GranteeUid"], 2000);
    assert_eq!(v["Grants"][0]["Operations"], serde_json::json!(["Decrypt"]));
    s.ok(&["grant", &id, "--uid", "2000", "--operations", "encrypt"]);
    s.ok(&[
        "grant",
        &id,
        "--gid",
        "300",
        "--operations",
        "encrypt,decrypt",
    ]);
    let v = s.json(&["grants", &id]);
    let grants = v["Grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[0]["GranteeUid"], 2000);
    assert_eq!(
        grants[0]["Operations"],
        serde_json::json!(["Encrypt", "Decrypt"])
    );
    assert_eq!(grants[1]["GranteeGid"], 300);
    assert!(grants[1]["CreationDate"].as_str().unwrap().ends_with('Z'));

    let v = s.json(&["revoke", &id, "--uid", "2000", "--operations", "encrypt"]);
    assert_eq!(v["Grants"][0]["Operations"], serde_json::json!(["Decrypt"]));
    let v = s.json(&["revoke", &id, "--gid", "300"]);
    assert_eq!(v["Grants"], serde_json::json!([]));
    s.fails(&["revoke", &id, "--gid", "300"], "has no grant to gid 300");
    s.fails(
        &["grant", &id, "--uid", "1", "--operations", "sign"],
        "unknown operation \"sign\"",
    );
    let text = s.ok(&["grants", &id]);
    assert_eq!(text, format!("{id}  uid 2000  decrypt\n"));
    for bad in [
        vec!["grant", &id, "--operations", "encrypt"],
        vec![
            "grant",
            &id,
            "--uid",
            "1",
            "--gid",
            "2",
            "--operations",
            "encrypt",
        ],
    ] {
        assert_eq!(s.kms(&bad).status.code(), Some(2), "{bad:?}");
    }
    s.keystore().default_cmk().unwrap();
    s.fails(
        &[
            "grant",
            "alias/acs/oss",
            "--uid",
            "1",
            "--operations",
            "encrypt",
        ],
        "managed by ssefs",
    );
}

#[test]
fn audit_lists_filters_and_keeps_its_retention() {
    let s = Scratch::new();
    let a = create(&s, &["--now", &T0.to_string()]);
    let b = create(&s, &["--now", &(T0 + 10).to_string()]);
    s.fails(&["disable", "nope"], "no such CMK");
    let all = s.json(&["audit"]);
    let records = all["Records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    let r = &records[0];
    for field in [
        "Id",
        "Time",
        "Uid",
        "Pid",
        "KeyId",
        "Operation",
        "ObjectPath",
        "Result",
        "Detail",
    ] {
        assert!(r.get(field).is_some(), "{field} missing in {r}");
    }
    assert_eq!(r["Time"], rfc3339(T0).as_str());
    assert_eq!(r["KeyId"], a.as_str());
    assert_eq!(r["Operation"], "CreateKey");
    assert_eq!(r["Result"], "Success");
    assert_eq!(records[2]["Operation"], "DisableKey");
    assert_eq!(records[2]["Result"], "NotFound");
    assert_eq!(records[2]["KeyId"], "nope");

    let only_b = s.json(&["audit", "--key", &b]);
    assert_eq!(only_b["Records"].as_array().unwrap().len(), 1);
    let since = s.json(&["audit", "--since", &rfc3339(T0 + 5)]);
    assert_eq!(since["Records"][0]["KeyId"], b.as_str());
    let text = s.ok(&["audit", "--since", &(T0 + 5).to_string()]);
    assert!(text.contains("CreateKey  Success"), "{text}");
    s.fails(&["audit", "--since", "last week"], "invalid time");

    assert_eq!(
        s.json(&["audit-retention"]),
        serde_json::json!({"RetentionDays": 90, "MaxRecords": 100000})
    );
    s.fails(&["audit-retention", "--days", "0"], "1 to 36500 days");
    s.fails(&["audit-retention", "--max-rows", "0"], "keep 1 to");
    let v = s.json(&["audit-retention", "--days", "30", "--max-rows", "2"]);
    assert_eq!(v, serde_json::json!({"RetentionDays": 30, "MaxRecords": 2}));
    // The cap applies at once and at every later write, and survives restarts.
    assert_eq!(s.json(&["audit"])["Records"].as_array().unwrap().len(), 2);
    s.ok(&["disable", &a]);
    let left = s.json(&["audit"]);
    let left = left["Records"].as_array().unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(left[1]["Operation"], "DisableKey");
    assert_eq!(left[1]["Result"], "Success");
}

#[test]
fn only_the_owner_or_root_may_change_a_key() {
    let s = Scratch::new();
    let id = s
        .keystore()
        .create_cmk(
            "someone else's",
            Some("alias/theirs"),
            CmkOrigin::Ssefs,
            4242,
        )
        .unwrap();
    let other = s.other_uid();
    for args in [
        vec!["disable", "alias/theirs"],
        vec!["schedule-deletion", "alias/theirs", "--pending-days", "7"],
        vec![
            "grant",
            "alias/theirs",
            "--uid",
            "1",
            "--operations",
            "decrypt",
        ],
        vec!["alias", "create", "alias/mine", "alias/theirs"],
    ] {
        let out = s.as_other_user(&args);
        assert_failed_with(&out, &format!("access denied: uid {other} may not"));
    }
    let refusals = s
        .keystore()
        .audit_records(&ssefs::keystore::AuditQuery {
            key: Some(id.clone()),
            since: None,
        })
        .unwrap()
        .into_iter()
        .filter(|r| r.result == "AccessDenied" && r.uid == Some(other))
        .count();
    assert_eq!(refusals, 4);
    assert_eq!(
        s.keystore().cmk_info(&id).unwrap().state,
        ssefs::keystore::CmkState::Enabled
    );
    // Reading is open to whoever can open the keystore.
    let out = s.as_other_user(&["describe", &id]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn store_and_root_key_problems_are_clear() {
    let s = Scratch::new();
    let out = s.bare().args(["kms", "list"]).output().unwrap();
    assert_failed_with(&out, "--store STORE is required");
    let wrong = s.path("wrong.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = s
        .bare()
        .args(["kms", "list", "--store"])
        .arg(s.store())
        .arg("--root-key")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_failed_with(&out, "wrong root key");
    // $SSEFS_ROOT_KEY_FILE is found as for every other command.
    let out = s
        .bare()
        .args(["kms", "list", "--store"])
        .arg(s.store())
        .env("SSEFS_ROOT_KEY_FILE", s.key())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = s
        .bare()
        .args(["kms", "list", "--store"])
        .arg(s.path("nope"))
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert_failed_with(&out, "no ssefs keystore");
}

//! The KMS as a mounted filesystem enforces it: key states changed with `ssefs kms` reach a
//! live mount, crypto-shredding (also by the mount at start) and BYOK material deletion,
//! grants for a second uid, and the audit trail of every use and refusal. Through a real
//! mount with `allow_other`.

mod support;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::cli::SSEFS;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::shell::{as_nobody, q};
use support::sys::assert_errno;
use support::xattr::set_xattr;

/// The unprivileged uid (and gid) of the second user.
const NOBODY: u32 = 65534;
const DAY: i64 = 86_400;
/// How soon a key state change made with the CLI must reach the mount.
const PROPAGATION: Duration = Duration::from_secs(1);

/// `ssefs kms ARGS --store S --root-key K`, as root.
fn kms(store: &TestStore, args: &[&str]) -> Output {
    Command::new(SSEFS)
        .arg("kms")
        .args(args)
        .arg("--store")
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .output()
        .expect("run ssefs kms")
}

/// Runs `ssefs kms ARGS --json`, expects success and returns the parsed output.
fn kms_json(store: &TestStore, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = kms(store, &all);
    assert!(out.status.success(), "kms {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("kms JSON output")
}

fn key_state(store: &TestStore, key: &str) -> String {
    kms_json(store, &["describe", key])["KeyMetadata"]["KeyState"]
        .as_str()
        .expect("KeyState")
        .to_string()
}

fn create_key(store: &TestStore, args: &[&str]) -> String {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    kms_json(store, &all)["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_string()
}

/// The audit records, oldest first.
fn audit(store: &TestStore) -> Vec<Value> {
    kms_json(store, &["audit"])["Records"]
        .as_array()
        .expect("Records")
        .clone()
}

/// How many audit records have this operation, object path, uid and result.
fn count(records: &[Value], operation: &str, path: &str, uid: u32, result: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            r["Operation"] == operation
                && r["ObjectPath"] == path
                && r["Uid"] == uid
                && r["Result"] == result
        })
        .count()
}

/// A bucket whose default rule is KMS under `key`, open to every uid (mode 0777).
fn kms_bucket(mount: &Mount, name: &str, key: &str) -> PathBuf {
    let bucket = mount.bucket(name);
    fs::set_permissions(&bucket, fs::Permissions::from_mode(0o777)).expect("chmod bucket");
    set_xattr(&bucket, "user.oss.server-side-encryption", "KMS").expect("set KMS");
    set_xattr(&bucket, "user.oss.server-side-encryption-key-id", key).expect("set key id");
    bucket
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    fs::read(path)
}

/// Waits up to `PROPAGATION` for opening `path` to fail with `expected` (or succeed, for 0).
fn open_gives_within_a_second(path: &Path, expected: i32) {
    let start = Instant::now();
    loop {
        let got = match fs::File::open(path) {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        };
        if got == expected {
            return;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "open {} gives errno {got}, not {expected}, a second after the change",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nobody_ok(script: &str) -> String {
    let out = as_nobody(script);
    assert!(out.status.success(), "as uid {NOBODY}: `{script}`: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nobody_refused(script: &str, message: &str) {
    let out = as_nobody(script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(message),
        "as uid {NOBODY}: `{script}` should fail with {message:?}: {out:?}"
    );
}

/// The store's temporary directory made traversable, so uid 65534 reaches the mount.
fn open_to_everyone(store: &TestStore, mount: &Mount) {
    fs::set_permissions(store.base(), fs::Permissions::from_mode(0o755)).expect("chmod base");
    fs::set_permissions(mount.path(), fs::Permissions::from_mode(0o755)).expect("chmod root");
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What a user does with `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:oaep
/// -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`.
fn wrap_like_openssl(pem: &str, material: &[u8]) -> Vec<u8> {
    let public = RsaPublicKey::from_public_key_pem(pem).expect("public key");
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    public
        .encrypt(&mut rng, Oaep::new::<rsa::sha2::Sha256>(), material)
        .expect("RSA-OAEP")
}

#[test]
fn key_states_reach_a_live_mount_and_destruction_is_final() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &["allow_other"]);
    let key = create_key(&store, &["--alias", "alias/states"]);
    let bucket = kms_bucket(&mount, "states", "alias/states");
    let object = bucket.join("a.txt");
    fs::write(&object, b"state of the key").expect("write KMS object");
    let mut held = fs::File::open(&object).expect("open before disabling");

    // Disabled: new opens and creates are refused at once; the open handle keeps working.
    kms_json(&store, &["disable", &key]);
    open_gives_within_a_second(&object, libc::EKEYREVOKED);
    assert_errno(
        fs::write(bucket.join("b.txt"), b"x"),
        libc::EKEYREVOKED,
        "create, disabled",
    );
    assert!(
        !bucket.join("b.txt").exists(),
        "a refused create leaves nothing"
    );
    let mut seen = Vec::new();
    held.read_to_end(&mut seen)
        .expect("read through the handle opened before");
    assert_eq!(seen, b"state of the key");
    drop(held);

    // Enabled again: everything works.
    kms_json(&store, &["enable", &key]);
    open_gives_within_a_second(&object, 0);
    fs::write(bucket.join("b.txt"), b"after enable").expect("create, enabled");
    assert_eq!(
        read(&bucket.join("b.txt")).expect("read b"),
        b"after enable"
    );

    // Pending deletion: revoked; cancelling leaves the key Disabled, still revoked.
    kms_json(&store, &["schedule-deletion", &key, "--pending-days", "7"]);
    open_gives_within_a_second(&object, libc::EKEYREVOKED);
    assert_errno(
        fs::write(bucket.join("c.txt"), b"x"),
        libc::EKEYREVOKED,
        "create, pending",
    );
    kms_json(&store, &["cancel-deletion", &key]);
    assert_eq!(key_state(&store, &key), "Disabled");
    assert_errno(
        read(&object),
        libc::EKEYREVOKED,
        "read, cancelled = disabled",
    );
    kms_json(&store, &["enable", &key]);
    assert_eq!(
        read(&object).expect("read, enabled again"),
        b"state of the key"
    );

    // Crypto-shred: the deletion date passes (the CLI's clock set 8 days ahead destroys it).
    kms_json(&store, &["schedule-deletion", &key, "--pending-days", "7"]);
    let later = (now() + 8 * DAY).to_string();
    kms_json(&store, &["list", "--now", &later]);
    assert_eq!(key_state(&store, &key), "Destroyed");
    open_gives_within_a_second(&object, libc::EKEYREVOKED);
    mount.remount();
    for name in ["a.txt", "b.txt"] {
        assert_errno(
            read(&bucket.join(name)),
            libc::EKEYREVOKED,
            "read, destroyed",
        );
    }
    // The object still says what it is encrypted under; the log says why it cannot be read.
    let stat = Command::new(SSEFS)
        .arg("stat")
        .arg(&object)
        .output()
        .expect("ssefs stat");
    let stat_text = String::from_utf8_lossy(&stat.stdout);
    assert!(
        stat_text.contains("KMS") && stat_text.contains(&key),
        "{stat:?}"
    );
    let log = mount.log_text();
    assert!(
        log.contains(&format!("CMK {key} is Destroyed")) && log.contains("states/a.txt"),
        "the daemon log names the object and the destroyed key: {log}"
    );

    // A key that does not exist is ENOKEY for a bucket rule.
    assert_errno(
        set_xattr(
            &bucket,
            "user.oss.server-side-encryption-key-id",
            "alias/missing",
        ),
        libc::ENOKEY,
        "unknown key",
    );
}

#[test]
fn byok_material_deletion_revokes_and_reimport_restores() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &["allow_other"]);
    let key = create_key(&store, &["--origin", "external", "--alias", "alias/byok"]);
    let params_dir = store.scratch_dir("params");
    let params = kms_json(
        &store,
        &[
            "get-import-params",
            &key,
            "--out-dir",
            params_dir.to_str().expect("utf-8 path"),
        ],
    );
    let pem = fs::read_to_string(params["PublicKeyPemFile"].as_str().expect("pem path"))
        .expect("read pem");
    let token = params["ImportTokenFile"]
        .as_str()
        .expect("token path")
        .to_string();
    let material = [0x5au8; 32];
    let wrapped = params_dir.join("material.enc");
    fs::write(&wrapped, wrap_like_openssl(&pem, &material)).expect("write wrapped");
    let wrapped = wrapped.to_str().expect("utf-8 path").to_string();
    kms_json(
        &store,
        &[
            "import",
            &key,
            "--encrypted-material",
            &wrapped,
            "--token",
            &token,
        ],
    );
    assert_eq!(key_state(&store, &key), "Enabled");

    let bucket = kms_bucket(&mount, "byok", &key);
    let objects: Vec<(PathBuf, Vec<u8>)> = (0..3)
        .map(|i| (bucket.join(format!("o{i}")), vec![i as u8; 10_000 + i]))
        .collect();
    for (path, data) in &objects {
        fs::write(path, data).expect("write BYOK object");
    }

    kms_json(&store, &["delete-material", &key]);
    assert_eq!(key_state(&store, &key), "PendingImport");
    open_gives_within_a_second(&objects[0].0, libc::EKEYREVOKED);
    for (path, _) in &objects {
        assert_errno(read(path), libc::EKEYREVOKED, "read without material");
    }
    assert_errno(
        fs::write(bucket.join("new"), b"x"),
        libc::EKEYREVOKED,
        "create",
    );

    // The same material, in plain this time, brings every object back.
    let plain = store.scratch_dir("plain").join("material.bin");
    fs::write(&plain, material).expect("write material");
    // Plain material is a secret: the CLI takes it only from a private file.
    let private = <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    fs::set_permissions(&plain, private).expect("chmod material");
    let out = kms(
        &store,
        &["import", &key, "--material", plain.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{out:?}");
    open_gives_within_a_second(&objects[0].0, 0);
    for (path, data) in &objects {
        assert_eq!(&read(path).expect("read after reimport"), data);
    }
}

#[test]
fn a_second_uid_needs_grants_and_the_audit_log_shows_it() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &["allow_other"]);
    open_to_everyone(&store, &mount);
    let key = create_key(&store, &["--alias", "alias/team"]);
    let bucket = kms_bucket(&mount, "team", &key);
    let by_root = bucket.join("by-root");
    fs::write(&by_root, b"root's words").expect("write as root");
    fs::set_permissions(&by_root, fs::Permissions::from_mode(0o644)).expect("chmod");
    let (root_file, nobody_file) = (q(&by_root), q(&bucket.join("by-nobody")));

    // No grant: POSIX allows it, the CMK does not.
    nobody_refused(&format!("cat {root_file}"), "Permission denied");
    nobody_refused(&format!("echo hi > {nobody_file}"), "Permission denied");
    assert!(!bucket.join("by-nobody").exists());
    // An AES256 bucket needs no grant.
    let plain_bucket = mount.bucket("open");
    fs::set_permissions(&plain_bucket, fs::Permissions::from_mode(0o777)).expect("chmod");
    nobody_ok(&format!("echo aes > {}", q(&plain_bucket.join("f"))));
    // Nor may the second uid name the key in a rule of its own bucket.
    let mine = mount.bucket("mine");
    std::os::unix::fs::chown(&mine, Some(NOBODY), Some(NOBODY)).expect("give the bucket away");
    nobody_ok(&format!(
        "setfattr -n user.oss.server-side-encryption -v KMS {}",
        q(&mine)
    ));
    nobody_refused(
        &format!(
            "setfattr -n user.oss.server-side-encryption-key-id -v {key} {}",
            q(&mine)
        ),
        "Permission denied",
    );

    kms_json(
        &store,
        &[
            "grant",
            &key,
            "--uid",
            "65534",
            "--operations",
            "encrypt,decrypt",
        ],
    );
    assert_eq!(nobody_ok(&format!("cat {root_file}")), "root's words");
    nobody_ok(&format!("echo hi > {nobody_file}"));
    assert_eq!(nobody_ok(&format!("cat {nobody_file}")), "hi\n");
    assert_eq!(
        read(&bucket.join("by-nobody")).expect("root reads it"),
        b"hi\n"
    );
    // Moving its object under a CMK it has no grant for is refused and changes nothing.
    let other = create_key(&store, &["--alias", "alias/other"]);
    nobody_refused(
        &format!("setfattr -n user.oss.server-side-encryption-key-id -v alias/other {nobody_file}"),
        "Permission denied",
    );
    let key_id = nobody_ok(&format!(
        "getfattr --only-values -n user.oss.server-side-encryption-key-id {nobody_file}"
    ));
    assert_eq!(key_id, key, "still under the bucket's CMK, not {other}");

    kms_json(&store, &["revoke", &key, "--uid", "65534"]);
    nobody_refused(&format!("cat {root_file}"), "Permission denied");
    nobody_refused(&format!("cat {nobody_file}"), "Permission denied");
    // Re-encrypting its own object to AES256 needs to decrypt it first.
    nobody_refused(
        &format!("setfattr -n user.oss.server-side-encryption -v AES256 {nobody_file}"),
        "Permission denied",
    );
    assert_eq!(
        nobody_ok(&format!(
            "getfattr --only-values -n user.oss.server-side-encryption {nobody_file}"
        )),
        "KMS"
    );

    let records = audit(&store);
    let (root_path, nobody_path) = ("team/by-root", "team/by-nobody");
    assert_eq!(
        count(&records, "Decrypt", root_path, NOBODY, "AccessDenied"),
        2
    );
    assert_eq!(count(&records, "Decrypt", root_path, NOBODY, "Success"), 1);
    assert_eq!(
        count(
            &records,
            "GenerateDataKey",
            nobody_path,
            NOBODY,
            "AccessDenied"
        ),
        2,
        "the refused create and the refused move to another CMK"
    );
    assert_eq!(
        count(&records, "GenerateDataKey", nobody_path, NOBODY, "Success"),
        1
    );
    assert_eq!(
        count(&records, "Decrypt", nobody_path, NOBODY, "AccessDenied"),
        2,
        "the refused read and the refused re-encryption"
    );
    let denied_other = records
        .iter()
        .filter(|r| r["KeyId"] == other.as_str() && r["Result"] == "AccessDenied")
        .count();
    assert_eq!(denied_other, 1, "the refusal names the CMK asked for");
    assert_eq!(
        count(&records, "GenerateDataKey", root_path, 0, "Success"),
        1
    );
    let usage = &kms_json(&store, &["describe", &key])["KeyMetadata"]["UsageCounts"];
    assert!(usage["Denied"].as_u64().unwrap_or(0) >= 4, "{usage}");
}

#[test]
fn a_64_mib_read_is_one_decrypt() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &["allow_other"]);
    let key = create_key(&store, &[]);
    let bucket = kms_bucket(&mount, "big", &key);
    let path = bucket.join("blob");
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    {
        let mut file = fs::File::create(&path).expect("create big object");
        for _ in 0..64 {
            file.write_all(&chunk).expect("write 1 MiB");
        }
    }
    let before = count(&audit(&store), "Decrypt", "big/blob", 0, "Success");
    let mut file = fs::File::open(&path).expect("open big object");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        let expected = |i: usize| ((total + i) % chunk.len() % 251) as u8;
        assert!(
            buf[..n].iter().enumerate().all(|(i, b)| *b == expected(i)),
            "wrong plaintext in the {n} bytes at {total}"
        );
        total += n;
    }
    drop(file);
    assert_eq!(total, 64 << 20);
    let records = audit(&store);
    assert_eq!(
        count(&records, "Decrypt", "big/blob", 0, "Success") - before,
        1
    );
    assert_eq!(
        count(&records, "GenerateDataKey", "big/blob", 0, "Success"),
        1
    );
}

#[test]
fn a_mount_destroys_keys_past_their_deletion_date_when_it_starts() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let key = create_key(&store, &[]);
    let bucket = kms_bucket(&mount, "doomed", &key);
    let object = bucket.join("o");
    fs::write(&object, b"shred me").expect("write KMS object");

    // Scheduled as if eight days ago: the seven-day wait is over, but nothing has processed it
    // (every `ssefs kms` command processes deletions by its own clock, so the same past clock).
    let then = (now() - 8 * DAY).to_string();
    let at_then = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--now", &then]);
        kms_json(&store, &all)
    };
    at_then(&["schedule-deletion", &key, "--pending-days", "7"]);
    let described = at_then(&["describe", &key]);
    assert_eq!(described["KeyMetadata"]["KeyState"], "PendingDeletion");
    open_gives_within_a_second(&object, libc::EKEYREVOKED);

    mount.remount();
    let log = mount.log_text();
    assert!(
        log.contains(&format!("CMK {key} destroyed")),
        "the mount destroys the CMK at start and says so: {log}"
    );
    assert_errno(read(&object), libc::EKEYREVOKED, "read, destroyed");
    let deleted: Vec<Value> = audit(&store)
        .into_iter()
        .filter(|r| r["Operation"] == "DeleteKey" && r["KeyId"] == key.as_str())
        .collect();
    assert_eq!(deleted.len(), 1, "one DeleteKey record: {deleted:?}");
    assert_eq!(key_state(&store, &key), "Destroyed");
}

fn keystore_db(store: &TestStore) -> PathBuf {
    store.store.join(".ssefs").join("keystore.db")
}

/// Every file under `dir`, searched for `needle`.
fn store_holds(dir: &Path, needle: &[u8]) -> bool {
    fs::read_dir(dir).expect("read store dir").any(|entry| {
        let path = entry.expect("store entry").path();
        if path.is_dir() {
            store_holds(&path, needle)
        } else {
            fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// `ssefs fsck STORE --root-key K`.
fn fsck(store: &TestStore) -> Output {
    Command::new(SSEFS)
        .arg("fsck")
        .arg("--store")
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .output()
        .expect("run ssefs fsck")
}

/// Deleting a bucket's rule with sqlite3 (no root key) while mounted must not make the next
/// file land in plaintext; the next mount refuses to start, naming the table and row; fsck
/// reports it.
#[test]
fn a_bucket_rule_deleted_outside_ssefs_never_yields_plaintext() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("enc");
    set_xattr(&bucket, "user.oss.server-side-encryption", "AES256").expect("set rule");
    fs::write(bucket.join("before"), b"written under the rule").expect("write before");
    let deleted = rusqlite::Connection::open(keystore_db(&store))
        .expect("open keystore with sqlite")
        .execute("DELETE FROM bucket_rules WHERE bucket = 'enc'", [])
        .expect("delete the rule");
    assert_eq!(deleted, 1);

    const MARKER: &[u8] = b"PLAINTEXT-MARKER-written-after-the-rule-was-deleted";
    let written = fs::write(bucket.join("after"), MARKER);
    assert_errno(written, libc::EIO, "create after the rule was deleted");
    assert!(
        !store_holds(&store.store, MARKER),
        "the file written after the deletion is in the store in plaintext"
    );
    drop(mount);

    let refused = support::mount::Mount::try_with_args(support::mount::MountArgs::of(&store, &[]));
    let failure = match refused {
        Ok(mount) => {
            drop(mount);
            panic!("a mount of a keystore changed outside ssefs started");
        }
        Err(failure) => failure,
    };
    assert!(
        failure.stderr.contains("changed outside ssefs")
            && failure.stderr.contains("bucket_rules")
            && failure.stderr.contains("bucket=\"enc\" was removed"),
        "the refusal names the table and row: {}",
        failure.stderr
    );

    let out = fsck(&store);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "fsck finds a problem: {out:?}");
    assert!(
        text.contains("keystore-integrity") && text.contains("bucket_rules"),
        "fsck names the change: {text}"
    );
}

/// `ssefs keystore ARGS --store S`, as root.
fn keystore_cmd(store: &TestStore, args: &[&str]) -> Output {
    Command::new(SSEFS)
        .arg("keystore")
        .args(args)
        .arg("--store")
        .arg(&store.store)
        .output()
        .expect("run ssefs keystore")
}

/// Whether `needle` is in the keystore, its WAL or any file kept next to it.
fn keystore_files_hold(store: &TestStore, needle: &[u8]) -> Vec<PathBuf> {
    fs::read_dir(store.store.join(".ssefs"))
        .expect("read .ssefs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .filter(|p| fs::read(p).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

/// A backup made before a crypto-shred does not bring the key back: the restore destroys it
/// again and says so, the material is in no file of the store, and a restore into a store
/// without a keystore warns that backups are key escrow.
#[test]
fn restoring_a_backup_does_not_undo_a_crypto_shred() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let key = create_key(&store, &["--alias", "alias/shred"]);
    let bucket = kms_bucket(&mount, "shred", "alias/shred");
    let object = bucket.join("secret");
    fs::write(&object, b"shred me for good").expect("write KMS object");
    let wrapped: Vec<u8> = rusqlite::Connection::open(keystore_db(&store))
        .expect("open keystore")
        .query_row(
            "SELECT wrapped FROM cmk_materials WHERE key_id = ?1",
            [&key],
            |r| r.get(0),
        )
        .expect("the wrapped material");
    let backup = store.base().join("before-shred.db");
    let out = keystore_cmd(&store, &["backup", backup.to_str().expect("utf-8")]);
    assert!(out.status.success(), "backup: {out:?}");

    kms_json(&store, &["schedule-deletion", &key, "--pending-days", "7"]);
    let later = (now() + 8 * DAY).to_string();
    kms_json(&store, &["list", "--now", &later]);
    assert_eq!(key_state(&store, &key), "Destroyed");
    open_gives_within_a_second(&object, libc::EKEYREVOKED);
    mount.remount();
    drop(mount);
    assert_eq!(
        keystore_files_hold(&store, &wrapped),
        Vec::<PathBuf>::new(),
        "the destroyed material is gone from the keystore, its WAL and free pages"
    );

    let out = Command::new(SSEFS)
        .args(["keystore", "restore", "--store"])
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .arg(&backup)
        .output()
        .expect("run restore");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "restore: {out:?}");
    assert!(
        text.contains(&format!("destroyed CMK {key} again")),
        "the restore says it destroyed the key again: {text}"
    );
    assert_eq!(key_state(&store, &key), "Destroyed");
    let mount = Mount::new(&store, &[]);
    assert_errno(
        read(&mount.join("shred/secret")),
        libc::EKEYREVOKED,
        "read after the restore",
    );
    drop(mount);
    let left = keystore_files_hold(&store, &wrapped);
    assert!(
        left.is_empty(),
        "no file next to the keystore holds the destroyed material: {left:?}"
    );

    // Without a keystore, nothing says what was destroyed: the restore warns.
    support::mount::remove_keystore(&store.store);
    let out = Command::new(SSEFS)
        .args(["keystore", "restore", "--store"])
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .arg(&backup)
        .output()
        .expect("run restore");
    assert!(
        out.status.success(),
        "restore into a store without keystore: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key escrow"),
        "{out:?}"
    );
}

/// One user with one KMS file cannot flush the audit log: a thousand opens of it are one
/// counted record; a record removed with sqlite3 is found by `kms audit --verify` and fsck.
#[test]
fn the_audit_log_cannot_be_flushed_or_edited_unnoticed() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let key = create_key(&store, &[]);
    let bucket = kms_bucket(&mount, "flood", &key);
    let object = bucket.join("one");
    fs::write(&object, b"one file").expect("write KMS object");
    let before = audit(&store).len();
    for _ in 0..1000 {
        assert_eq!(read(&object).expect("read"), b"one file");
    }
    let records = audit(&store);
    assert!(
        records.len() <= before + 2,
        "a thousand identical opens added {} records",
        records.len() - before
    );
    let decrypts: u64 = records
        .iter()
        .filter(|r| r["Operation"] == "Decrypt" && r["ObjectPath"] == "flood/one")
        .map(|r| r["Repeats"].as_u64().expect("Repeats"))
        .sum();
    assert!(decrypts >= 1000, "every open is counted: {decrypts}");
    let verified = kms(&store, &["audit", "--verify"]);
    assert!(verified.status.success(), "{verified:?}");
    drop(mount);

    rusqlite::Connection::open(keystore_db(&store))
        .expect("open keystore with sqlite")
        .execute("DELETE FROM audit WHERE operation = 'Decrypt'", [])
        .expect("delete the evidence");
    let verified = kms(&store, &["audit", "--verify"]);
    assert!(!verified.status.success(), "{verified:?}");
    assert!(
        String::from_utf8_lossy(&verified.stderr).contains("audit record"),
        "{verified:?}"
    );
    let out = fsck(&store);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(text.contains("audit record"), "{text}");
}

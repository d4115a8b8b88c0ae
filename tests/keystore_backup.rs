//! Keystore backups are key escrow, so the rotation unit keeps only the newest few:
//! `ssefs keystore backup --keep N` removes older backups of the same store and nothing else.
//! A restore refuses a backup that would leave objects unreadable, carries the format floor
//! forward, and keeps the keystore it replaced only when asked (or when it must).

mod support;

use ssefs::crypto::{Algorithm, Key256};
use ssefs::fs::{BucketFs, Caller, FsOptions, ROOT_INO};
use ssefs::keystore::{BucketRule, CmkOrigin, Keystore, StoreId};
use ssefs::store::{META_DIR, Store};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use support::cli::{SSEFS, Scratch, assert_failed_with, text};
use support::mount::TestStore;

fn backup(store: &TestStore, file: &Path, keep: Option<&str>) -> Output {
    let mut cmd = Command::new(SSEFS);
    cmd.args(["keystore", "backup", "--store"])
        .arg(&store.store)
        .arg(file);
    if let Some(keep) = keep {
        cmd.args(["--keep", keep]);
    }
    cmd.output().expect("run ssefs keystore backup")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read backup dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn backup_keep_prunes_only_older_backups_of_the_same_store() {
    let store = TestStore::new();
    let other = TestStore::new();
    let dir = store.scratch_dir("backups");
    fs::write(dir.join("notes.txt"), b"not a backup").expect("write notes");
    let out = backup(&other, &dir.join("other-1.db"), None);
    assert!(out.status.success(), "{out:?}");
    for n in 1..=3 {
        let out = backup(&store, &dir.join(format!("mine-{n}.db")), None);
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = backup(&store, &dir.join("mine-4.db"), Some("2"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("removed the old backup"), "{text}");
    assert_eq!(
        names(&dir),
        ["mine-3.db", "mine-4.db", "notes.txt", "other-1.db"],
        "the two newest of this store, and nothing else, are left"
    );

    // Zero would remove the backup just written: refused before anything is written.
    let out = backup(&store, &dir.join("mine-5.db"), Some("0"));
    assert!(!out.status.success(), "{out:?}");
    assert!(!dir.join("mine-5.db").exists());
}

#[test]
fn backup_json_names_the_file_the_store_and_what_was_pruned() {
    let store = TestStore::new();
    let dir = store.scratch_dir("json-backups");
    let out = backup(&store, &dir.join("first.db"), None);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = Command::new(SSEFS)
        .args(["keystore", "backup", "--json", "--keep", "1", "--store"])
        .arg(&store.store)
        .arg(dir.join("second.db"))
        .output()
        .expect("run ssefs keystore backup --json");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["store_id"].as_str().map(str::len), Some(32), "{v}");
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    assert!(
        v["file"].as_str().is_some_and(|f| f.ends_with("second.db")),
        "{v}"
    );
    let removed = v["removed"].as_array().expect("removed is a list");
    assert_eq!(removed.len(), 1, "{v}");
    assert!(
        removed[0].as_str().is_some_and(|f| f.ends_with("first.db")),
        "{v}"
    );
}

// A restore never leaves an object that reads now unreadable without being told to, carries
// forward the format floor, and keeps no second copy of the replaced keystore unless asked.

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

fn root_key(s: &Scratch) -> Key256 {
    Key256::from_bytes(&fs::read(s.key()).expect("read root key")).expect("a 32-byte root key")
}

fn meta(s: &Scratch) -> PathBuf {
    s.store().join(META_DIR)
}

/// The store `st` as ssefs wrote it at keystore schema 3: before the store key.
fn scratch_of_schema3() -> Scratch {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let s = Scratch {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(meta(&s))
        .expect("make .ssefs");
    let key = Key256::generate().expect("a root key");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(s.key())
        .expect("make the key file");
    std::io::Write::write_all(&mut file, key.expose_secret()).expect("write the key file");
    let id = StoreId::generate().expect("a store id");
    Keystore::write_schema3_keystore_for_tests(&meta(&s), &key, &id).expect("old keystore");
    s
}

/// Opens the store as the mount does (without a kernel) and runs `f` on it.
fn with_fs<T>(s: &Scratch, f: impl FnOnce(&Keystore, &BucketFs) -> T) -> T {
    let keys = Arc::new(Keystore::open(&meta(s), &root_key(s)).expect("open the keystore"));
    let store = Store::open_locked(&s.store()).expect("lock the store");
    let fs = BucketFs::new(store, keys.clone(), FsOptions::default()).expect("open the fs");
    f(&keys, &fs)
}

/// Writes `names` into `bucket` (made if missing) under `rule`; each holds its own name.
fn put(s: &Scratch, bucket: &str, rule: BucketRule, names: &[&str]) {
    with_fs(s, |keys, fs| {
        let dir = match fs.lookup(ROOT_INO, OsStr::new(bucket)) {
            Ok(attr) => attr.ino,
            Err(_) => {
                fs.mkdir(ROOT, ROOT_INO, OsStr::new(bucket), 0o755)
                    .expect("mkdir")
                    .ino
            }
        };
        // After the mkdir, which gives a new bucket the mount's default.
        keys.put_bucket_rule(bucket, &rule).expect("put the rule");
        for name in names {
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
            let (_, fh) = fs
                .create(ROOT, dir, OsStr::new(name), 0o644, flags)
                .expect("create");
            fs.write(fh, 0, name.as_bytes()).expect("write");
            fs.release(fh).expect("release");
        }
    });
}

/// Whether `bucket/name` opens and reads back its name.
fn reads(s: &Scratch, bucket: &str, name: &str) -> bool {
    with_fs(s, |_, fs| {
        let Ok(dir) = fs.lookup(ROOT_INO, OsStr::new(bucket)) else {
            return false;
        };
        let Ok(attr) = fs.lookup(dir.ino, OsStr::new(name)) else {
            return false;
        };
        let Ok(fh) = fs.open(ROOT, attr.ino, libc::O_RDONLY) else {
            return false;
        };
        let data = fs.read(fh, 0, 4096);
        let _ = fs.release(fh);
        data.is_ok_and(|d| d == name.as_bytes())
    })
}

fn aes256() -> BucketRule {
    BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    }
}

fn backup_to(s: &Scratch, name: &str) -> PathBuf {
    let file = s.path(name);
    let out = s
        .bare()
        .args(["keystore", "backup", "--store"])
        .arg(s.store())
        .arg(&file)
        .output()
        .expect("run backup");
    assert!(out.status.success(), "backup: {}", text(&out));
    file
}

fn restore(s: &Scratch, file: &Path, extra: &[&str]) -> Output {
    s.bare()
        .args(["keystore", "restore", "--store"])
        .arg(s.store())
        .arg(file)
        .arg("--root-key")
        .arg(s.key())
        .args(extra)
        .output()
        .expect("run restore")
}

/// Every file in `.ssefs` but the lock, by name.
fn meta_names(s: &Scratch) -> Vec<String> {
    names(&meta(s))
        .into_iter()
        .filter(|n| n != "lock" && n != "tmp")
        .collect()
}

fn replaced_names(s: &Scratch) -> Vec<String> {
    meta_names(s)
        .into_iter()
        .filter(|n| n.contains(".replaced-"))
        .collect()
}

#[test]
fn a_backup_from_before_the_store_key_is_refused_while_the_key_is_live() {
    let s = scratch_of_schema3();
    let old = backup_to(&s, "before-the-store-key.db");
    // This ssefs opens the store: its keystore gets the store key; new objects use format 2 or later.
    put(&s, "photos", aes256(), &["a", "b"]);
    assert!(reads(&s, "photos", "a"));
    let keystore = meta(&s).join("keystore.db");
    let before = fs::read(&keystore).expect("read keystore");

    let out = restore(&s, &old, &[]);
    assert_failed_with(&out, "refusing to restore");
    let message = text(&out);
    assert!(
        message.contains("2 object(s) of format 2 or later"),
        "{message}"
    );
    assert!(message.contains("before the store had one"), "{message}");
    assert!(message.contains("--allow-unreadable"), "{message}");
    assert_eq!(
        fs::read(&keystore).expect("read keystore"),
        before,
        "unchanged"
    );
    assert_eq!(meta_names(&s), ["keystore.db"], "nothing staged or kept");
    assert!(reads(&s, "photos", "b"));

    // Told to, it restores, says what it cost, and keeps the keystore that holds the key.
    let out = restore(&s, &old, &["--allow-unreadable"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: restored although 2 object(s)"),
        "{}",
        text(&out)
    );
    let kept = replaced_names(&s);
    assert_eq!(kept.len(), 1, "{:?}", meta_names(&s));
    assert!(!reads(&s, "photos", "a"), "no key authenticates it now");

    // The kept keystore brings them back: restoring it loses nothing.
    let out = restore(&s, &meta(&s).join(&kept[0]), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(reads(&s, "photos", "a") && reads(&s, "photos", "b"));
}

#[test]
fn a_backup_without_the_master_versions_or_cmks_objects_use_is_refused() {
    let s = Scratch::new();
    let old = backup_to(&s, "old.db");
    let cmk = with_fs(&s, |keys, _| {
        keys.new_master_key().expect("rotate");
        keys.create_cmk("", None, CmkOrigin::Ssefs, 0)
            .expect("a CMK")
    });
    put(&s, "plain", aes256(), &["under-v2"]);
    let kms = BucketRule {
        algorithm: Algorithm::Kms,
        kms_key_id: Some(cmk.clone()),
    };
    put(&s, "kms", kms, &["under-cmk"]);
    let out = restore(&s, &old, &[]);
    assert_failed_with(&out, "refusing to restore");
    let message = text(&out);
    assert!(
        message.contains("1 object(s) under master key version 2, which the backup does not hold (the current keystore does)"),
        "{message}"
    );
    assert!(
        message.contains(&format!("1 object(s) under CMK {cmk} material version 1")),
        "{message}"
    );
    assert!(reads(&s, "plain", "under-v2") && reads(&s, "kms", "under-cmk"));
    assert_eq!(meta_names(&s), ["keystore.db"]);
}

#[test]
fn the_replaced_keystore_is_removed_unless_kept_and_says_what_it_had() {
    let s = Scratch::new();
    put(&s, "plain", aes256(), &["old"]);
    let old = backup_to(&s, "old.db");
    // Keys made after the backup that no object uses: restoring loses nothing readable.
    let cmk = with_fs(&s, |keys, _| {
        keys.new_master_key().expect("rotate");
        keys.create_cmk("", None, CmkOrigin::Ssefs, 0)
            .expect("a CMK")
    });
    let master_2: Vec<u8> = rusqlite::Connection::open(meta(&s).join("keystore.db"))
        .expect("open keystore")
        .query_row(
            "SELECT wrapped FROM master_keys WHERE version = 2",
            [],
            |r| r.get(0),
        )
        .expect("master key version 2");

    let out = restore(&s, &old, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "the replaced keystore had master key version 2, which the restored one lacks"
        ),
        "{said}"
    );
    assert!(
        said.contains(&format!("the replaced keystore had CMK {cmk}")),
        "{said}"
    );
    assert!(said.contains("overwritten and removed"), "{said}");
    assert!(replaced_names(&s).is_empty(), "{:?}", meta_names(&s));
    for name in meta_names(&s) {
        let bytes = fs::read(meta(&s).join(&name)).expect("read");
        assert!(
            !bytes
                .windows(master_2.len())
                .any(|w| w == master_2.as_slice()),
            "{name} still holds the replaced keystore's key"
        );
    }
    assert!(reads(&s, "plain", "old"));

    // Kept when asked, listed, and removed on request.
    let again = backup_to(&s, "again.db");
    let out = restore(&s, &again, &["--keep-replaced", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let kept = v["kept"].as_str().expect("kept").to_string();
    assert_eq!(replaced_names(&s).len(), 1);
    let list = |extra: &[&str]| {
        let out = s
            .bare()
            .args(["keystore", "replaced", "--json", "--store"])
            .arg(s.store())
            .args(extra)
            .output()
            .expect("run replaced");
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let v = list(&[]);
    assert_eq!(
        v["replaced"][0]["file"].as_str(),
        Some(kept.as_str()),
        "{v}"
    );
    let status = s
        .bare()
        .args(["status", "--store"])
        .arg(s.store())
        .output()
        .expect("run status");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("key escrow: 1 replaced keystore(s)"),
        "{}",
        text(&status)
    );
    let v = list(&["--remove"]);
    assert_eq!(v["removed"][0].as_str(), Some(kept.as_str()), "{v}");
    assert_eq!(v["replaced"].as_array().map(Vec::len), Some(0), "{v}");
    assert!(replaced_names(&s).is_empty());
}

#[test]
fn a_restore_keeps_the_format_floor_the_store_has() {
    let s = Scratch::new();
    with_fs(&s, |keys, _| {
        keys.set_object_format_floor_for_tests(1).expect("lower")
    });
    let old = backup_to(&s, "floor-1.db");
    with_fs(&s, |keys, _| {
        keys.raise_object_format_floor(2).expect("raise")
    });
    let out = restore(&s, &old, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("raised the object format floor to 2"),
        "{}",
        text(&out)
    );
    let floor = with_fs(&s, |keys, _| {
        keys.store_key().expect("store key").min_version()
    });
    assert_eq!(floor, 2, "format 1 objects stay refused");
}

/// Overwrites part of page `page` of the store's keystore, as a failing disk would.
fn damage_keystore(s: &Scratch, page: u64) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(meta(s).join("keystore.db"))
        .expect("open keystore");
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0).expect("read header");
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    file.write_all_at(&[0xa5; 256], (page - 1) * page_size + 8)
        .expect("damage");
    file.sync_all().expect("sync");
}

#[test]
fn a_damaged_keystore_is_restored_over_and_kept() {
    // Page 2 holds the meta row, page 3 the master keys.
    for page in [2, 3] {
        let s = Scratch::new();
        put(&s, "plain", aes256(), &["kept-safe"]);
        let good = backup_to(&s, "good.db");
        damage_keystore(&s, page);
        let out = restore(&s, &good, &[]);
        assert!(out.status.success(), "page {page}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("could not be read"),
            "page {page}: {}",
            text(&out)
        );
        assert_eq!(replaced_names(&s).len(), 1, "page {page}: kept as evidence");
        assert!(reads(&s, "plain", "kept-safe"), "page {page}");
    }
}

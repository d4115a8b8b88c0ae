//! `ssefs fsck` and `ssefs status` on stores built without a mount: a clean store, and one
//! with each kind of damage (flipped block byte, truncated object, foreign file, leftover
//! temporaries of a create and of a re-encryption, object under an unknown master key, stray at
//! the root); `--repair` removes the temporaries and nothing else; the retire check of
//! `ssefs rotate-master` counts a re-encryption left by a crash.

mod support;

use ssefs::crypto::{Algorithm, DEFAULT_BLOCK_SIZE, Key256, KeyRef, Object};
use ssefs::keystore::{Keystore, keystore_dir, load_root_key_file};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use support::cli::SSEFS;

struct TestStore {
    dir: tempfile::TempDir,
}

impl TestStore {
    fn new() -> TestStore {
        let t = TestStore {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = Command::new(SSEFS)
            .arg("init")
            .arg(t.store())
            .arg("--root-key")
            .arg(t.key())
            .output()
            .unwrap();
        assert!(out.status.success(), "init: {out:?}");
        std::fs::create_dir(t.store().join("photos")).unwrap();
        std::fs::create_dir_all(t.store().join("docs/2024")).unwrap();
        t
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }

    /// Writes an AES256 object under master key `version` (the keystore's when it has it).
    fn object(&self, rel: &str, data: &[u8], version: u32) {
        let root_key = load_root_key_file(&self.key()).unwrap();
        let ks = Keystore::open(&keystore_dir(&self.store()), &root_key).unwrap();
        let key_ref = KeyRef::Master { version };
        let kek = ks
            .resolve(&key_ref)
            .map(Option::unwrap)
            .unwrap_or_else(|_| Key256::generate().unwrap());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.store().join(rel))
            .unwrap();
        let mut object = Object::create(
            file,
            &ks.store_key().unwrap(),
            Algorithm::Aes256,
            key_ref,
            Some(&kek),
            DEFAULT_BLOCK_SIZE,
        )
        .unwrap();
        object.write_at(0, data).unwrap();
        object.close().unwrap();
    }

    fn fsck(&self, extra: &[&str]) -> Output {
        Command::new(SSEFS)
            .arg("fsck")
            .arg("--store")
            .arg(self.store())
            .arg("--root-key")
            .arg(self.key())
            .args(extra)
            .output()
            .unwrap()
    }

    /// Every file under the store, with its contents.
    fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut pending = vec![self.store()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }
}

/// A temporary file name of `kind` (`create` or `reencrypt`) as ssefs makes them.
fn temp_name(kind: &str, seed: u8) -> String {
    let hex: String = (0..12)
        .map(|i| format!("{:02x}", seed ^ (i * 17)))
        .collect();
    format!("{kind}-{hex}")
}

fn run(t: &TestStore, args: &[&str]) -> Output {
    Command::new(SSEFS)
        .args(args)
        .arg("--store")
        .arg(t.store())
        .arg("--root-key")
        .arg(t.key())
        .output()
        .unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `(kind, path)` of every problem line of the text report.
fn problems(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("store ") && !l.starts_with("note: "))
        .filter_map(|l| {
            let mut parts = l.splitn(3, ": ");
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

#[test]
fn a_clean_store_passes_with_every_block_verified() {
    let t = TestStore::new();
    t.object("photos/a.bin", &data(3 * 4096 + 17, 1), 1);
    t.object("docs/2024/b.txt", b"hello", 1);
    t.object("docs/empty", b"", 1);
    let out = t.fsck(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("2 bucket(s), 3 object(s), 3 verified (5 blocks); clean"),
        "{text}"
    );
    let out = t.fsck(&["--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        json.contains(r#""clean":true"#) && json.contains(r#""problems":[]"#),
        "{json}"
    );
}

#[test]
fn each_kind_of_damage_is_reported_at_its_path() {
    let t = TestStore::new();
    t.object("photos/good.bin", &data(2 * 4096, 2), 1);
    t.object("photos/flipped.bin", &data(3 * 4096, 3), 1);
    t.object("photos/truncated.bin", &data(3 * 4096, 4), 1);
    t.object("docs/2024/lost-key.bin", &data(100, 5), 7);
    let store = t.store();
    // Page 0 is the header, page 1 the slots, page 2 block 0's data.
    let flipped = store.join("photos/flipped.bin");
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[2 * 4096 + 100] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    let truncated = std::fs::OpenOptions::new()
        .write(true)
        .open(store.join("photos/truncated.bin"))
        .unwrap();
    let len = truncated.metadata().unwrap().len();
    truncated.set_len(len - 3000).unwrap();
    std::fs::write(store.join("docs/notes.txt"), b"plain text, not an object").unwrap();
    // A create the daemon was writing when it died: not even a whole header.
    let torn = format!(".ssefs/tmp/{}", temp_name("create", 1));
    std::fs::write(store.join(&torn), b"half written").unwrap();
    // A re-encryption interrupted by a crash: a whole object under master key version 1.
    let reencrypt = format!(".ssefs/tmp/{}", temp_name("reencrypt", 2));
    t.object(&reencrypt, &data(2 * 4096, 12), 1);
    // A name ssefs never makes.
    let foreign = ".ssefs/tmp/replace-0123456789abcdef01234567";
    std::fs::write(store.join(foreign), b"not ours").unwrap();
    std::fs::write(store.join("README"), b"stray").unwrap();

    let out = t.fsck(&[]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let mut found = problems(&out);
    found.sort();
    let expected: Vec<(String, String)> = [
        ("damaged-data", "photos/flipped.bin"),
        ("damaged-data", "photos/truncated.bin"),
        ("leftover-temporary", torn.as_str()),
        ("leftover-temporary", reencrypt.as_str()),
        ("missing-key", "docs/2024/lost-key.bin"),
        ("not-an-object", "docs/notes.txt"),
        ("stray-entry", "README"),
        ("stray-entry", foreign),
    ]
    .iter()
    .map(|(k, p)| (k.to_string(), p.to_string()))
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect();
    assert_eq!(found, expected, "{}", String::from_utf8_lossy(&out.stdout));

    let json = String::from_utf8_lossy(&t.fsck(&["--json"]).stdout).into_owned();
    assert!(json.contains(r#""clean":false"#), "{json}");
    assert!(
        json.contains(r#"{"path":"photos/flipped.bin","kind":"damaged-data","#),
        "{json}"
    );
    assert!(json.contains(r#""verified":1"#), "{json}");
}

#[test]
fn repair_removes_the_leftover_temporaries_and_nothing_else() {
    let t = TestStore::new();
    t.object("photos/a.bin", &data(5000, 6), 1);
    std::fs::write(t.store().join("photos/foreign"), b"not ours to delete").unwrap();
    let tmp = t.store().join(".ssefs/tmp");
    let create = temp_name("create", 3);
    std::fs::write(tmp.join(&create), b"crash leftover").unwrap();
    // The old side of an interrupted re-encryption of photos/a.bin: a whole object.
    let reencrypt = temp_name("reencrypt", 4);
    t.object(&format!(".ssefs/tmp/{reencrypt}"), &data(5000, 6), 1);
    std::fs::write(tmp.join("keep-me"), b"not an ssefs temporary").unwrap();
    std::fs::write(tmp.join("create-me"), b"not an ssefs name either").unwrap();
    let mut before = t.files();

    let out = t.fsck(&["--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "the foreign files remain: {text}"
    );
    for name in [&create, &reencrypt] {
        assert!(
            text.contains(&format!(
                "repaired leftover-temporary: .ssefs/tmp/{name}: removed"
            )),
            "{text}"
        );
        assert!(before.remove(&tmp.join(name)).is_some());
    }
    let after = t.files();
    assert_eq!(after, before, "only the temporaries may go");
    std::fs::remove_file(tmp.join("create-me")).unwrap();

    std::fs::remove_file(t.store().join("photos/foreign")).unwrap();
    std::fs::remove_file(tmp.join("keep-me")).unwrap();
    let out = t.fsck(&["--repair"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn without_the_root_key_headers_are_still_checked() {
    let t = TestStore::new();
    t.object("photos/a.bin", &data(5000, 7), 1);
    t.object("photos/orphan.bin", &data(10, 8), 9);
    let out = Command::new(SSEFS)
        .args(["fsck", "--store"])
        .arg(t.store())
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("HOME", t.dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert_eq!(
        problems(&out),
        [("missing-key".to_string(), "photos/orphan.bin".to_string())]
    );
    assert!(text.contains("note: no root key at"), "{text}");
    assert!(text.contains("0 verified"), "{text}");
}

#[test]
fn a_wrong_root_key_or_a_missing_store_is_an_operational_error() {
    let t = TestStore::new();
    let wrong = t.dir.path().join("wrong.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(SSEFS)
        .args(["fsck", "--store"])
        .arg(t.store())
        .arg("--root-key")
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = Command::new(SSEFS)
        .args(["fsck", "--store"])
        .arg(t.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn status_counts_objects_per_bucket_algorithm_and_key() {
    let t = TestStore::new();
    t.object("photos/a.bin", &data(10, 9), 1);
    t.object("photos/b.bin", &data(10, 10), 1);
    t.object("docs/2024/c.bin", &data(10, 11), 3);
    std::fs::write(t.store().join("docs/junk"), b"x").unwrap();
    let out = Command::new(SSEFS)
        .args(["status", "--json", "--store"])
        .arg(t.store())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8_lossy(&out.stdout);
    for part in [
        r#""mounted":false"#,
        r#""mount_points":[]"#,
        r#"{"name":"docs","rule":null,"objects":2,"by_algorithm":{"AES256":1},"unreadable_headers":1}"#,
        r#"{"name":"photos","rule":null,"objects":2,"by_algorithm":{"AES256":2},"unreadable_headers":0}"#,
        r#""objects_by_key":{"master v1":2,"master v3":1}"#,
        r#""master_keys":[{"version":1,"#,
    ] {
        assert!(json.contains(part), "{part} not in {json}");
    }
    let text = Command::new(SSEFS)
        .args(["status", "--store"])
        .arg(t.store())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("not mounted"), "{text}");
    assert!(
        text.contains("photos: rule none, 2 object(s) (AES256 2)"),
        "{text}"
    );
}

#[test]
fn a_reencryption_left_by_a_crash_keeps_its_master_version_from_retirement() {
    let t = TestStore::new();
    let out = run(&t, &["rotate-master"]);
    assert!(out.status.success(), "{out:?}");
    // The object was re-encrypted from version 1 to version 2, and the crash came after the
    // swap: the old object, under version 1, is still in the temporary directory.
    t.object("photos/a.bin", &data(3000, 13), 2);
    let name = temp_name("reencrypt", 5);
    t.object(&format!(".ssefs/tmp/{name}"), &data(3000, 13), 1);

    let out = run(&t, &["rotate-master", "--retire", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("master key version 1: 0 object(s) still use it, and 1 temporary file(s)"),
        "{err}"
    );
    assert!(err.contains("fsck --repair"), "{err}");
    let out = run(&t, &["rotate-master", "--retire-unused"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("0 version(s) retired"), "{text}");
    assert!(text.contains("kept master key version 1"), "{text}");

    let out = t.fsck(&["--repair"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!t.store().join(".ssefs/tmp").join(&name).exists());
    let out = run(&t, &["rotate-master", "--retire", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("retired master key version 1"), "{text}");
    assert_eq!(t.fsck(&[]).status.code(), Some(0));
}

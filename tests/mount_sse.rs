//! The encryption attributes through a real mount (needs root and /dev/fuse; set
//! SSEFS_SKIP_MOUNT_TESTS=1 to skip): every row of the attribute table in docs/SEMANTICS.md
//! with `setfattr`/`getfattr`, re-encryption under concurrent reads and across `kill -9`,
//! `ssefs reencrypt` and `ssefs stat`, and `rsync -aX` into a bucket.

mod support;

use ssefs::crypto::{KeyRef, peek_header};
use ssefs::keystore::{CmkOrigin, Keystore, keystore_dir, load_root_key_file};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::cli::SSEFS;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::xattr::{KEY_VERSION, SSE as ALG, SSE_KEY_ID as KEY_ID};

/// A store, its root key and a running mount (with `allow_other`, so other uids can be
/// tested); dropping it unmounts and reaps the daemon (the shared harness's `Mount`).
struct Mounted {
    mount: Option<Mount>,
    store: TestStore,
    mnt: PathBuf,
}

impl Mounted {
    fn start() -> Mounted {
        let store = TestStore::new();
        let mnt = store.mountpoint.clone();
        let mut m = Mounted {
            mount: None,
            store,
            mnt,
        };
        m.mount();
        m
    }

    fn store(&self) -> PathBuf {
        self.store.store.clone()
    }
    fn key(&self) -> PathBuf {
        self.store.root_key.clone()
    }
    fn base(&self) -> &Path {
        self.store.base()
    }
    fn tmp_dir(&self) -> PathBuf {
        self.store().join(".ssefs/tmp")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn mount(&mut self) {
        self.mount = Some(Mount::new(&self.store, &["allow_other"]));
    }

    /// SIGKILL to the daemon, then a lazy unmount of what it left.
    fn kill9(&mut self) {
        let mut mount = self.mount.take().expect("a daemon is running");
        mount.signal(libc::SIGKILL);
        mount.wait_exit();
        let status = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status()
            .unwrap();
        assert!(status.success());
        drop(mount);
    }

    fn keystore(&self) -> Keystore {
        let root_key = load_root_key_file(&self.key()).unwrap();
        Keystore::open(&keystore_dir(&self.store()), &root_key).unwrap()
    }

    /// The key reference in an object's header, read from the store.
    fn key_ref(&self, rel: &str) -> KeyRef {
        let file = std::fs::File::open(self.store().join(rel)).unwrap();
        peek_header(&file).unwrap().key_ref
    }
}

/// The message `strerror` gives for an errno, as the attr tools print it.
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    text.split(" (os error").next().unwrap().to_string()
}

fn outcome(out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn setfattr(path: &Path, name: &str, value: &str) -> Result<String, String> {
    let out = Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path)
        .output()
        .unwrap();
    outcome(out)
}

fn removefattr(path: &Path, name: &str) -> Result<String, String> {
    let out = Command::new("setfattr")
        .args(["-x", name])
        .arg(path)
        .output()
        .unwrap();
    outcome(out)
}

fn getfattr(path: &Path, name: &str) -> Result<String, String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    outcome(out)
}

/// The names `getfattr -d -m -` lists for a path.
fn listed(path: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-m", "-"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("user."))
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn assert_errno(result: Result<String, String>, errno: i32) {
    if errno == libc::ENODATA {
        return no_data(result);
    }
    match result {
        Ok(out) => panic!("expected {}, got success {out:?}", strerror(errno)),
        Err(stderr) => assert!(
            stderr.contains(&strerror(errno)),
            "expected {}, got {stderr:?}",
            strerror(errno)
        ),
    }
}

#[track_caller]
fn no_data(result: Result<String, String>) {
    match result {
        Ok(out) => panic!("expected no attribute, got {out:?}"),
        Err(stderr) => assert!(
            stderr.contains("No such attribute") || stderr.contains(&strerror(libc::ENODATA)),
            "{stderr}"
        ),
    }
}

/// The bucket's rule as its attributes show it.
fn rule(bucket: &Path) -> (Option<String>, Option<String>) {
    (getfattr(bucket, ALG).ok(), getfattr(bucket, KEY_ID).ok())
}

fn cmk(m: &Mounted, alias: Option<&str>) -> String {
    m.keystore()
        .create_cmk("test key", alias, CmkOrigin::Ssefs, 0)
        .unwrap()
}

fn disable_cmk(m: &Mounted, key_id: &str) {
    let root = ssefs::keystore::Caller {
        uid: 0,
        gid: 0,
        groups: vec![],
        pid: std::process::id(),
    };
    m.keystore().disable_cmk(key_id, &root).unwrap();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn bucket_rules_through_attributes() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("rules");
    std::fs::create_dir(&b).unwrap();
    assert_eq!(rule(&b), (Some("AES256".into()), None));
    // Readable by name, never listed (so attribute-mirroring tools leave the rule alone).
    assert!(listed(&b).is_empty());
    // remove algorithm: the rule goes; again: ENODATA.
    removefattr(&b, ALG).unwrap();
    assert_eq!(rule(&b), (None, None));
    no_data(getfattr(&b, ALG));
    no_data(getfattr(&b, KEY_ID));
    assert_errno(removefattr(&b, ALG), libc::ENODATA);
    assert_errno(removefattr(&b, KEY_ID), libc::ENODATA);
    // key id without a KMS rule: EINVAL, nothing changes.
    assert_errno(setfattr(&b, KEY_ID, "alias/x"), libc::EINVAL);
    setfattr(&b, ALG, "AES256").unwrap();
    assert_errno(setfattr(&b, KEY_ID, "alias/x"), libc::EINVAL);
    assert_eq!(rule(&b), (Some("AES256".into()), None));
    // Bad algorithm values.
    for bad in ["aes256", "none", "SM4", "KMS "] {
        assert_errno(setfattr(&b, ALG, bad), libc::EINVAL);
    }
    assert_eq!(rule(&b), (Some("AES256".into()), None));
    // KMS: the default CMK; a key id by alias, stored as given; unknown or disabled CMKs.
    setfattr(&b, ALG, "KMS").unwrap();
    assert_eq!(rule(&b), (Some("KMS".into()), None));
    assert_errno(removefattr(&b, KEY_ID), libc::ENODATA);
    let team = cmk(&m, Some("alias/team"));
    assert_errno(setfattr(&b, KEY_ID, "alias/nope"), libc::ENOKEY);
    let off = cmk(&m, None);
    disable_cmk(&m, &off);
    assert_errno(setfattr(&b, KEY_ID, &off), libc::EKEYREVOKED);
    assert_eq!(rule(&b), (Some("KMS".into()), None));
    setfattr(&b, KEY_ID, "alias/team").unwrap();
    assert_eq!(rule(&b), (Some("KMS".into()), Some("alias/team".into())));
    assert!(listed(&b).is_empty());
    // KMS again keeps the key id; removing the key id falls back to the default CMK.
    setfattr(&b, ALG, "KMS").unwrap();
    assert_eq!(rule(&b), (Some("KMS".into()), Some("alias/team".into())));
    removefattr(&b, KEY_ID).unwrap();
    assert_eq!(rule(&b), (Some("KMS".into()), None));
    setfattr(&b, KEY_ID, &team).unwrap();
    // AES256 drops the key id.
    setfattr(&b, ALG, "AES256").unwrap();
    assert_eq!(rule(&b), (Some("AES256".into()), None));

    // Directories below a bucket: nothing to get, nothing to set; the root likewise.
    let d = b.join("sub");
    std::fs::create_dir(&d).unwrap();
    no_data(getfattr(&d, ALG));
    assert_errno(setfattr(&d, ALG, "AES256"), libc::EINVAL);
    assert_errno(removefattr(&d, ALG), libc::EINVAL);
    assert_errno(setfattr(&m.mnt, ALG, "AES256"), libc::EINVAL);
    assert!(listed(&d).is_empty());

    // Only the bucket's owner or root: another user gets EPERM and changes nothing.
    std::fs::set_permissions(&m.mnt, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str]| {
        outcome(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(args)
                .arg(&b)
                .output()
                .unwrap(),
        )
    };
    assert_errno(
        as_nobody(&["setfattr", "-n", ALG, "-v", "KMS"]),
        libc::EPERM,
    );
    assert_errno(as_nobody(&["setfattr", "-x", ALG]), libc::EPERM);
    assert_eq!(rule(&b), (Some("AES256".into()), None));
    // A bucket made by that user is theirs to change.
    let own = m.path("owned");
    let made = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "mkdir"])
        .arg(&own)
        .status()
        .unwrap();
    assert!(made.success());
    let set = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["setfattr", "-n", ALG, "-v", "KMS"])
        .arg(&own)
        .status()
        .unwrap();
    assert!(set.success());
    assert_eq!(rule(&own), (Some("KMS".into()), None));
}

#[test]
fn objects_take_the_rule_at_creation_and_keep_it() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("births");
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("a"), b"under AES256").unwrap();
    setfattr(&b, ALG, "KMS").unwrap();
    std::fs::write(b.join("k"), b"under KMS").unwrap();
    // A rule changed behind the mount (as the CLI does) is seen by the next create.
    m.keystore().delete_bucket_rule("births").unwrap();
    std::fs::write(b.join("n"), b"plain").unwrap();
    assert!(matches!(m.key_ref("births/a"), KeyRef::Master { .. }));
    assert!(matches!(m.key_ref("births/k"), KeyRef::Cmk { .. }));
    assert_eq!(m.key_ref("births/n"), KeyRef::None);
    assert_eq!(getfattr(&b.join("a"), ALG).unwrap(), "AES256");
    assert_eq!(getfattr(&b.join("k"), ALG).unwrap(), "KMS");
    no_data(getfattr(&b.join("n"), ALG));
    assert!(listed(&b.join("n")).is_empty());
    let default = m.keystore().default_cmk().unwrap();
    assert_eq!(getfattr(&b.join("k"), KEY_ID).unwrap(), default);
    assert_eq!(listed(&b.join("k")), [ALG, KEY_ID]);
    no_data(getfattr(&b.join("a"), KEY_ID));
    assert_eq!(getfattr(&b.join("a"), KEY_VERSION).unwrap(), "1");
    assert_eq!(std::fs::read(b.join("a")).unwrap(), b"under AES256");
    assert_eq!(std::fs::read(b.join("k")).unwrap(), b"under KMS");
}

#[test]
fn object_attributes_reencrypt() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("objs");
    std::fs::create_dir(&b).unwrap();
    let o = b.join("o");
    let data = pattern(300_000, 1);
    std::fs::write(&o, &data).unwrap();
    setfattr(&o, "user.note", "kept").unwrap();
    let ino = std::fs::metadata(&o).unwrap().ino();
    let mtime = std::fs::metadata(&o).unwrap().mtime();

    // AES256 -> KMS (the default CMK) -> KMS under a named CMK by alias (shown by id).
    setfattr(&o, ALG, "KMS").unwrap();
    let default = m.keystore().default_cmk().unwrap();
    assert_eq!(getfattr(&o, KEY_ID).unwrap(), default);
    let team = cmk(&m, Some("alias/team"));
    setfattr(&o, KEY_ID, "alias/team").unwrap();
    assert_eq!(getfattr(&o, KEY_ID).unwrap(), team);
    assert_eq!(getfattr(&o, KEY_VERSION).unwrap(), "1");
    assert_eq!(
        m.key_ref("objs/o"),
        KeyRef::Cmk {
            key_id: team.clone(),
            version: 1
        }
    );
    assert_eq!(std::fs::read(&o).unwrap(), data);
    let meta = std::fs::metadata(&o).unwrap();
    assert_eq!((meta.ino(), meta.mtime()), (ino, mtime));
    assert_eq!(getfattr(&o, "user.note").unwrap(), "kept");

    // Errors change nothing: bad values, unknown and disabled CMKs, key id on non-KMS.
    let backing = m.store().join("objs/o");
    let before = std::fs::read(&backing).unwrap();
    let off = cmk(&m, None);
    disable_cmk(&m, &off);
    assert_errno(setfattr(&o, ALG, "aes"), libc::EINVAL);
    assert_errno(setfattr(&o, KEY_ID, "alias/nope"), libc::ENOKEY);
    assert_errno(setfattr(&o, KEY_ID, &off), libc::EKEYREVOKED);
    assert_errno(setfattr(&o, KEY_VERSION, "3"), libc::EPERM);
    assert_errno(removefattr(&o, KEY_VERSION), libc::EPERM);
    assert_eq!(std::fs::read(&backing).unwrap(), before);
    // Matching settings do no work.
    setfattr(&o, KEY_ID, &team).unwrap();
    assert_eq!(std::fs::read(&backing).unwrap(), before);

    // Removing either attribute brings the object under the bucket's rule (AES256).
    removefattr(&o, KEY_ID).unwrap();
    assert!(matches!(m.key_ref("objs/o"), KeyRef::Master { .. }));
    no_data(getfattr(&o, KEY_ID));
    assert_errno(setfattr(&o, KEY_ID, &team), libc::EINVAL);
    let before = std::fs::read(&backing).unwrap();
    removefattr(&o, ALG).unwrap();
    assert_eq!(std::fs::read(&backing).unwrap(), before);
    // With no rule, "no per-object setting" means unencrypted.
    removefattr(&b, ALG).unwrap();
    removefattr(&o, ALG).unwrap();
    assert_eq!(m.key_ref("objs/o"), KeyRef::None);
    no_data(getfattr(&o, ALG));
    no_data(getfattr(&o, KEY_VERSION));
    assert_eq!(std::fs::read(&o).unwrap(), data);
    setfattr(&o, ALG, "AES256").unwrap();
    assert_eq!(std::fs::read(&o).unwrap(), data);

    // An empty file chooses its encryption before any data is written.
    let e = b.join("empty");
    std::fs::write(&e, b"").unwrap();
    no_data(getfattr(&e, ALG));
    setfattr(&e, ALG, "KMS").unwrap();
    std::fs::write(&e, b"now under KMS").unwrap();
    assert!(matches!(m.key_ref("objs/empty"), KeyRef::Cmk { .. }));
    assert_eq!(std::fs::read(&e).unwrap(), b"now under KMS");

    // Hard links: EMLINK, unchanged.
    std::fs::hard_link(&o, b.join("o2")).unwrap();
    let before = std::fs::read(&backing).unwrap();
    assert_errno(setfattr(&o, ALG, "KMS"), libc::EMLINK);
    assert_eq!(std::fs::read(&backing).unwrap(), before);
    assert_eq!(std::fs::read_dir(m.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn reencryption_under_concurrent_reads() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("big");
    std::fs::create_dir(&b).unwrap();
    let o = b.join("large");
    let data = Arc::new(pattern(64 << 20, 7));
    std::fs::write(&o, &*data).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for held_open in [false, true] {
        let (o, data, stop, reads) = (o.clone(), data.clone(), stop.clone(), reads.clone());
        readers.push(std::thread::spawn(move || {
            let held = std::fs::File::open(&o).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut round = 0usize;
            while !stop.load(Ordering::SeqCst) {
                if held_open {
                    // Through a descriptor opened before every re-encryption.
                    let at = (round * 7_340_033) % (data.len() - buf.len());
                    held.read_exact_at(&mut buf, at as u64).unwrap();
                    assert!(buf == data[at..at + buf.len()], "torn read at {at}");
                } else {
                    let mut all = Vec::new();
                    std::fs::File::open(&o)
                        .unwrap()
                        .read_to_end(&mut all)
                        .unwrap();
                    assert!(all == *data, "a whole read differed");
                }
                round += 1;
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for value in ["KMS", "AES256", "KMS"] {
        setfattr(&o, ALG, value).unwrap();
        assert_eq!(getfattr(&o, ALG).unwrap(), value);
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    assert!(reads.load(Ordering::SeqCst) > 2);
    assert!(std::fs::read(&o).unwrap() == *data);
}

#[test]
fn kill_during_reencryption_leaves_old_or_new() {
    if !mount_tests_enabled() {
        return;
    }
    let mut m = Mounted::start();
    let b = m.path("crash");
    std::fs::create_dir(&b).unwrap();
    let o = b.join("large");
    let data = pattern(64 << 20, 3);
    std::fs::write(&o, &data).unwrap();
    // First kill while the new object is being written, then at a random later moment.
    for (round, delay_ms) in [(0, None), (1, Some(150)), (2, Some(600))] {
        let was = getfattr(&o, ALG).unwrap();
        let wanted = if was == "KMS" { "AES256" } else { "KMS" };
        let mut setter = Command::new("setfattr")
            .args(["-n", ALG, "-v", wanted])
            .arg(&o)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        match delay_ms {
            None => {
                let start = Instant::now();
                while !std::fs::read_dir(m.tmp_dir()).unwrap().any(|e| {
                    e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("reencrypt-")
                }) {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "no re-encryption seen"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
        }
        m.kill9();
        let _ = setter.wait();
        m.mount();
        assert_eq!(std::fs::read_dir(m.tmp_dir()).unwrap().count(), 0);
        let now = getfattr(&o, ALG).unwrap();
        assert!(now == was || now == wanted, "{now}");
        assert!(
            std::fs::read(&o).unwrap() == data,
            "round {round}: contents differ"
        );
    }
}

fn ssefs(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(SSEFS)
        .args(args)
        .args(paths)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn reencrypt_and_stat_commands() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("tree");
    let plain = m.path("plain");
    std::fs::create_dir(&b).unwrap();
    std::fs::create_dir(&plain).unwrap();
    removefattr(&plain, ALG).unwrap();
    std::fs::create_dir_all(b.join("d/e")).unwrap();
    for (i, rel) in ["one", "d/two", "d/e/three", "d/e/four"].iter().enumerate() {
        std::fs::write(b.join(rel), pattern(10_000 * i + 1, i as u8)).unwrap();
    }
    std::fs::write(plain.join("p"), b"plain").unwrap();
    std::os::unix::fs::symlink("one", b.join("link")).unwrap();

    // The bucket's rule changes to KMS: existing objects stay AES256 until re-encrypted.
    setfattr(&b, ALG, "KMS").unwrap();
    setfattr(&b.join("one"), ALG, "KMS").unwrap();
    let out = ssefs(&["reencrypt", "--json"], &[&b, &plain]);
    assert!(out.status.success(), "{out:?}");
    let counts = json(&out);
    assert_eq!(counts["reencrypted"], 3, "{counts}");
    assert_eq!(counts["already_matching"], 1, "{counts}");
    assert_eq!(counts["skipped"], 1, "{counts}");
    assert_eq!(counts["failed"], 0, "{counts}");
    assert!(
        counts["notes"][0]
            .as_str()
            .unwrap()
            .contains("no default encryption rule")
    );
    // A re-run finds nothing to do.
    let out = ssefs(&["reencrypt", "--json"], &[&b]);
    assert_eq!(json(&out)["already_matching"], 4);
    assert_eq!(json(&out)["reencrypted"], 0);

    // stat --json: algorithm, key reference, key version.
    let out = ssefs(&["stat", "--json"], &[&b.join("d"), &plain.join("p")]);
    assert!(out.status.success(), "{out:?}");
    let report = json(&out);
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 4);
    let default = m.keystore().default_cmk().unwrap();
    for object in &objects[..3] {
        assert_eq!(object["algorithm"], "KMS");
        assert_eq!(object["key"]["type"], "cmk");
        assert_eq!(object["key"]["key_id"], default.as_str());
        assert_eq!(object["key_version"], 1);
    }
    assert_eq!(objects[3]["algorithm"], "none");
    assert!(objects[3]["key"].is_null());

    // Explicit targets: AES256, then KMS under a named CMK in two steps; text output.
    let team = cmk(&m, Some("alias/team"));
    let out = ssefs(&["reencrypt", "--algorithm", "AES256"], &[&b]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("re-encrypted 4, already matching 0"),
        "{text}"
    );
    let out = ssefs(&["stat"], &[&b.join("one")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\tAES256\tmaster\t1"));
    let out = ssefs(
        &["reencrypt", "--json", "--kms-key-id", "alias/team"],
        &[&b],
    );
    assert_eq!(json(&out)["reencrypted"], 4);
    assert_eq!(getfattr(&b.join("d/e/four"), KEY_ID).unwrap(), team);
    assert_eq!(
        std::fs::read(b.join("d/e/four")).unwrap(),
        pattern(30_001, 3)
    );
    // Failures are counted and make the exit status non-zero.
    std::fs::hard_link(b.join("one"), b.join("one-link")).unwrap();
    let out = ssefs(&["reencrypt", "--json", "--algorithm", "AES256"], &[&b]);
    assert!(!out.status.success());
    let counts = json(&out);
    assert_eq!(counts["failed"], 2, "{counts}");
    assert_eq!(counts["reencrypted"], 3, "{counts}");
    // Off the mount: refused.
    let out = ssefs(&["stat"], &[m.base()]);
    assert!(!out.status.success());
}

#[test]
fn reencrypt_stops_between_objects_on_sigint_and_a_rerun_continues() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("interrupted");
    std::fs::create_dir(&b).unwrap();
    let names = ["a", "b", "c", "d", "e", "f"];
    for (i, name) in names.iter().enumerate() {
        std::fs::write(b.join(name), pattern(16 << 20, i as u8)).unwrap();
    }
    let child = Command::new(SSEFS)
        .args(["reencrypt", "--json", "--algorithm", "KMS"])
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while getfattr(&b.join("a"), ALG).unwrap() != "KMS" {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let first = json(&out);
    assert_eq!(first["interrupted"], true, "{first}");
    let done = first["reencrypted"].as_u64().unwrap();
    assert!((1..names.len() as u64).contains(&done), "{first}");
    let kms = names
        .iter()
        .filter(|n| getfattr(&b.join(n), ALG).unwrap() == "KMS")
        .count() as u64;
    assert_eq!(kms, done, "only whole objects were re-encrypted");
    let out = ssefs(&["reencrypt", "--json", "--algorithm", "KMS"], &[&b]);
    assert!(out.status.success(), "{out:?}");
    let second = json(&out);
    assert_eq!(
        second["reencrypted"].as_u64().unwrap(),
        names.len() as u64 - done
    );
    assert_eq!(second["already_matching"].as_u64().unwrap(), done);
    for (i, name) in names.iter().enumerate() {
        assert!(std::fs::read(b.join(name)).unwrap() == pattern(16 << 20, i as u8));
    }
}

#[test]
fn rsync_into_a_bucket_keeps_the_bucket_encryption() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let src = m.base().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), pattern(200_000, 9)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    setfattr(&src.join("a.txt"), "user.colour", "blue").unwrap();
    for (bucket, wanted) in [("rs-aes", "AES256"), ("rs-kms", "KMS")] {
        let b = m.path(bucket);
        std::fs::create_dir(&b).unwrap();
        setfattr(&b, ALG, wanted).unwrap();
        for _ in 0..2 {
            let out = Command::new("rsync")
                .args(["-aX", "--checksum"])
                .arg(format!("{}/", src.display()))
                .arg(format!("{}/", b.display()))
                .output()
                .unwrap();
            assert!(out.status.success(), "rsync: {out:?}");
        }
        for rel in ["a.txt", "sub/b.bin", "empty"] {
            assert_eq!(getfattr(&b.join(rel), ALG).unwrap(), wanted, "{rel}");
            assert_eq!(
                std::fs::read(b.join(rel)).unwrap(),
                std::fs::read(src.join(rel)).unwrap()
            );
        }
        assert_eq!(getfattr(&b.join("a.txt"), "user.colour").unwrap(), "blue");
    }
    assert_eq!(std::fs::read_dir(m.tmp_dir()).unwrap().count(), 0);
}

/// An object whose name was replaced by a rename (after a lookup through that name) while a
/// hard link kept it alive is still found and re-encrypted through its remaining name.
#[test]
fn reencryption_finds_an_object_whose_first_name_was_replaced() {
    if !mount_tests_enabled() {
        return;
    }
    let m = Mounted::start();
    let b = m.path("renames");
    std::fs::create_dir_all(b.join("a")).unwrap();
    std::fs::write(b.join("c"), b"X").unwrap();
    std::fs::write(b.join("a/b"), b"Y").unwrap();
    std::fs::hard_link(b.join("a/b"), b.join("b")).unwrap();
    // A lookup through a/b, then a rename over it: a/b now names X, only b names Y.
    assert_eq!(std::fs::read(b.join("a/b")).unwrap(), b"Y");
    std::fs::rename(b.join("c"), b.join("a/b")).unwrap();
    setfattr(&b.join("b"), ALG, "KMS").unwrap();
    assert_eq!(getfattr(&b.join("b"), ALG).unwrap(), "KMS");
    assert_eq!(getfattr(&b.join("a/b"), ALG).unwrap(), "AES256");
    assert_eq!(std::fs::read(b.join("b")).unwrap(), b"Y");
    assert_eq!(std::fs::read(b.join("a/b")).unwrap(), b"X");
}

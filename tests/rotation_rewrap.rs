//! `ssefs rewrap` and `ssefs rotate-master --retire*` through a live mount and on an unmounted
//! store (needs root and /dev/fuse; set SSEFS_SKIP_MOUNT_TESTS=1 to skip): only headers
//! change, readers and writers carry on, a `kill -9` of the command or of the daemon partway
//! is finished by a re-run, and a version still in use is never retired.

mod support;

use ssefs::crypto::{KeyRef, peek_header};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::cli::{s, ssefs, ssefs_cmd, ssefs_ok};
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::content;
use support::xattr::{SSE, SSE_KEY_ID, key_version, set_xattr};

/// Bytes at the start of a backing file that a header may take; everything after is slots and
/// data pages, which a rewrap must leave alone.
const HEADER_AREA: usize = 512;

fn store_args(store: &TestStore) -> [String; 4] {
    [
        "--store".into(),
        s(&store.store).into(),
        "--root-key".into(),
        s(&store.root_key).into(),
    ]
}

/// `ssefs ARGS --store S --root-key K` must succeed; returns stdout.
fn run(store: &TestStore, args: &[&str]) -> String {
    let extra = store_args(store);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    ssefs_ok(&all)
}

/// `ssefs ARGS --store S --root-key K`, whatever its exit status.
fn run_any(store: &TestStore, args: &[&str]) -> (bool, String) {
    let extra = store_args(store);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    let out = ssefs(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The backing file of `bucket/name` in the store.
fn backing(store: &TestStore, bucket: &str, name: &str) -> PathBuf {
    store.store.join(bucket).join(name)
}

fn header_key(path: &Path) -> KeyRef {
    peek_header(&fs::File::open(path).unwrap()).unwrap().key_ref
}

/// A CMK with `alias`, made with `ssefs kms create`.
fn create_cmk(store: &TestStore, alias: &str) {
    run(store, &["kms", "create", "--alias", alias]);
}

/// How many of `data/f0000..f{n}` have a header on master key version 2.
fn on_master_v2(store: &TestStore, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            header_key(&backing(store, "data", &format!("f{i:04}")))
                == KeyRef::Master { version: 2 }
        })
        .count()
}

/// Starts `ssefs rewrap` and returns it once at least `at_least` of `n` objects are on master
/// key version 2 (or after a minute).
fn rewrap_until(store: &TestStore, n: usize, at_least: usize) -> std::process::Child {
    let extra = store_args(store);
    let mut args = vec!["rewrap"];
    args.extend(extra.iter().map(String::as_str));
    let child = ssefs_cmd(&args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while on_master_v2(store, n) < at_least && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

/// Objects `data/o{i}` (AES256) and `keyed/o{i}` (KMS under alias/rot) of varied sizes.
fn populate(mount: &Mount, store: &TestStore, n: usize) -> Vec<(String, Vec<u8>)> {
    create_cmk(store, "alias/rot");
    let data = mount.bucket("data");
    set_xattr(&data, SSE, "AES256").unwrap();
    let keyed = mount.bucket("keyed");
    set_xattr(&keyed, SSE, "KMS").unwrap();
    set_xattr(&keyed, SSE_KEY_ID, "alias/rot").unwrap();
    let mut objects = Vec::new();
    for i in 0..n {
        let len = [0, 1, 4095, 4096, 70_001, 300_000][i % 6];
        let bucket = if i % 2 == 0 { "data" } else { "keyed" };
        let rel = format!("{bucket}/o{i}");
        let bytes = content(i, len);
        fs::write(mount.join(&rel), &bytes).unwrap();
        objects.push((rel, bytes));
    }
    objects
}

#[test]
fn rewrap_through_a_live_mount_changes_only_headers_while_files_are_in_use() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let objects = populate(&mount, &store, 12);
    run(&store, &["rotate-master"]);
    run(&store, &["kms", "rotate", "alias/rot"]);

    // Retiring a version in use is refused, with the count and the command that fixes it.
    let (ok, text) = run_any(&store, &["rotate-master", "--retire", "1"]);
    assert!(!ok, "{text}");
    assert!(text.contains("6 object(s) still use it"), "{text}");
    assert!(text.contains("ssefs rewrap"), "{text}");
    let text = run(&store, &["rotate-master", "--retire-unused"]);
    assert!(text.contains("0 version(s) retired"), "{text}");
    assert!(text.contains("kept master key version 1"), "{text}");

    let before: Vec<(Vec<u8>, fs::Metadata)> = objects
        .iter()
        .map(|(rel, _)| {
            let path = store.store.join(rel);
            (fs::read(&path).unwrap(), fs::metadata(&path).unwrap())
        })
        .collect();

    // Readers of every object and a writer holding a file open while the rewrap runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..2 {
        let stop = Arc::clone(&stop);
        let objects = objects.clone();
        let root = mount.path().to_path_buf();
        threads.push(std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::SeqCst) || rounds == 0 {
                for (rel, bytes) in objects.iter().skip(t) {
                    assert_eq!(&fs::read(root.join(rel)).unwrap(), bytes, "{rel}");
                }
                rounds += 1;
            }
            rounds
        }));
    }
    let busy = mount.join("data/busy");
    let mut writer = fs::File::create(&busy).unwrap();
    writer.write_all(&content(99, 10_000)).unwrap();
    writer.sync_all().unwrap();
    assert_eq!(key_version(&busy), 2);
    let writer_stop = Arc::clone(&stop);
    let writer_thread = std::thread::spawn(move || {
        let mut expected = content(99, 10_000);
        let mut i = 0usize;
        while !writer_stop.load(Ordering::SeqCst) || i == 0 {
            let chunk = content(1000 + i, 777);
            let at = (i * 4093) % 60_000;
            writer.seek(SeekFrom::Start(at as u64)).unwrap();
            writer.write_all(&chunk).unwrap();
            if expected.len() < at + chunk.len() {
                expected.resize(at + chunk.len(), 0);
            }
            expected[at..at + chunk.len()].copy_from_slice(&chunk);
            i += 1;
        }
        writer.sync_all().unwrap();
        expected
    });

    let out = run(&store, &["rewrap"]);
    assert!(
        out.contains("rewrapped 12, already current 1, failed 0"),
        "{out}"
    );
    // The counts above are the report; the daemon logs no line per object by default.
    let log = mount.log_text();
    assert!(!log.contains("re-wrapped object"), "{log}");
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        assert!(t.join().unwrap() > 0);
    }
    let expected_busy = writer_thread.join().unwrap();
    assert_eq!(fs::read(&busy).unwrap(), expected_busy);

    for ((rel, bytes), (old_backing, old_meta)) in objects.iter().zip(&before) {
        let path = mount.join(rel);
        assert_eq!(&fs::read(&path).unwrap(), bytes, "{rel}");
        assert_eq!(key_version(&path), 2, "{rel}");
        let backing_path = store.store.join(rel);
        let now = fs::read(&backing_path).unwrap();
        assert_eq!(now.len(), old_backing.len(), "{rel}");
        assert_ne!(now[..HEADER_AREA], old_backing[..HEADER_AREA], "{rel}");
        assert!(
            now[HEADER_AREA..] == old_backing[HEADER_AREA..],
            "{rel}: a rewrap changed bytes past the header"
        );
        let meta = fs::metadata(&backing_path).unwrap();
        assert_eq!(
            meta.ino(),
            old_meta.ino(),
            "{rel}: the backing file was replaced"
        );
        assert_eq!(meta.mtime(), old_meta.mtime(), "{rel}");
        let newest = match header_key(&backing_path) {
            KeyRef::Master { version } => rel.starts_with("data/") && version == 2,
            KeyRef::Cmk { version, .. } => rel.starts_with("keyed/") && version == 2,
            KeyRef::None => false,
        };
        assert!(newest, "{rel}: the header does not name the newest version");
    }

    // Resumable: a second run has nothing left to do.
    let out = run(&store, &["rewrap"]);
    assert!(
        out.contains("rewrapped 0, already current 13, failed 0"),
        "{out}"
    );

    // Now version 1 is unused and goes; everything still reads after a remount.
    let text = run(&store, &["rotate-master", "--retire-unused"]);
    assert!(text.contains("retired master key version 1"), "{text}");
    let (ok, text) = run_any(&store, &["rotate-master", "--retire", "2"]);
    assert!(!ok && text.contains("current"), "{text}");
    drop(mount);
    let mount = Mount::new(&store, &[]);
    for (rel, bytes) in &objects {
        assert_eq!(&fs::read(mount.join(rel)).unwrap(), bytes, "{rel}");
    }
}

#[test]
fn bucket_and_key_options_limit_what_is_rewrapped() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let objects = populate(&mount, &store, 6);
    run(&store, &["rotate-master"]);
    run(&store, &["kms", "rotate", "alias/rot"]);
    let out = run(&store, &["rewrap", "--key", "alias/rot"]);
    assert!(out.contains("rewrapped 3, already current 0"), "{out}");
    assert_eq!(key_version(&mount.join("data/o0")), 1);
    assert_eq!(key_version(&mount.join("keyed/o1")), 2);

    // `ssefs status` counts the objects each version wraps.
    let status = ssefs_ok(&["status", "--store", s(&store.store), "--json"]);
    let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    let masters: Vec<(u64, u64)> = status["master_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_u64().unwrap(),
                m["objects"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(masters, [(1, 3), (2, 0)], "{status}");
    // The store may hold other CMKs (the default one); pick alias/rot's by its id.
    let described = run(&store, &["kms", "describe", "alias/rot", "--json"]);
    let described: serde_json::Value = serde_json::from_str(described.trim()).unwrap();
    let key_id = described["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no KeyId in {described}"));
    let cmk = status["cmks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key_id"] == key_id)
        .unwrap_or_else(|| panic!("no CMK {key_id}: {status}"));
    let versions: Vec<(u64, u64)> = cmk["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["objects"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [(1, 0), (2, 3)], "{status}");
    let text = ssefs_ok(&["status", "--store", s(&store.store)]);
    assert!(text.contains(": 3 object(s)"), "{text}");
    assert!(text.contains("v1 0 object(s), v2 3 object(s)"), "{text}");
    let out = run(&store, &["rewrap", "--bucket", "data", "--json"]);
    let counts: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(counts["rewrapped"], 3, "{out}");
    assert_eq!(counts["failed"], 0, "{out}");
    for (rel, bytes) in &objects {
        assert_eq!(key_version(&mount.join(rel)), 2, "{rel}");
        assert_eq!(&fs::read(mount.join(rel)).unwrap(), bytes, "{rel}");
    }
    let (ok, text) = run_any(&store, &["rewrap", "--key", "alias/none"]);
    assert!(!ok && text.contains("alias/none"), "{text}");
    let (ok, text) = run_any(&store, &["rewrap", "--bucket", "nope"]);
    assert!(!ok && text.contains("no bucket nope"), "{text}");
}

#[test]
fn rewrap_of_an_unmounted_store_rewrites_headers_in_place() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let objects = populate(&mount, &store, 8);
    drop(mount);
    run(&store, &["rotate-master"]);
    run(&store, &["kms", "rotate", "alias/rot"]);
    let before: Vec<Vec<u8>> = objects
        .iter()
        .map(|(rel, _)| fs::read(store.store.join(rel)).unwrap())
        .collect();
    let out = run(&store, &["rewrap"]);
    assert!(
        out.contains("rewrapped 8, already current 0, failed 0"),
        "{out}"
    );
    for ((rel, _), old) in objects.iter().zip(&before) {
        let now = fs::read(store.store.join(rel)).unwrap();
        assert!(now[HEADER_AREA..] == old[HEADER_AREA..], "{rel}");
        assert!(matches!(
            header_key(&store.store.join(rel)),
            KeyRef::Master { version: 2 } | KeyRef::Cmk { version: 2, .. }
        ));
    }
    let text = run(&store, &["rotate-master", "--retire-unused"]);
    assert!(text.contains("retired master key version 1"), "{text}");
    let mount = Mount::new(&store, &[]);
    for (rel, bytes) in &objects {
        assert_eq!(&fs::read(mount.join(rel)).unwrap(), bytes, "{rel}");
        assert_eq!(key_version(&mount.join(rel)), 2, "{rel}");
    }
}

#[test]
fn a_rewrap_killed_partway_is_finished_by_a_rerun() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let data = mount.bucket("data");
    set_xattr(&data, SSE, "AES256").unwrap();
    let n = 600;
    for i in 0..n {
        fs::write(data.join(format!("f{i:04}")), content(i, 100 + i)).unwrap();
    }
    run(&store, &["rotate-master"]);
    let rewrapped = || on_master_v2(&store, n);
    let mut child = rewrap_until(&store, n, 1);
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let status = child.wait().unwrap();
    let partway = rewrapped();
    eprintln!("killed ({status}) after {partway} of {n} objects");
    assert!(partway > 0);
    // Every object reads, whichever version it is on now.
    for i in 0..n {
        assert_eq!(
            fs::read(data.join(format!("f{i:04}"))).unwrap(),
            content(i, 100 + i)
        );
    }
    let out = run(&store, &["rewrap"]);
    assert!(out.contains("failed 0"), "{out}");
    assert_eq!(rewrapped(), n);
    let text = run(&store, &["rotate-master", "--retire-unused"]);
    assert!(text.contains("retired master key version 1"), "{text}");
    drop(mount);
    let mount = Mount::new(&store, &[]);
    for i in 0..n {
        let path = mount.join(format!("data/f{i:04}"));
        assert_eq!(fs::read(&path).unwrap(), content(i, 100 + i));
        assert_eq!(key_version(&path), 2);
    }
}

#[test]
fn a_daemon_killed_during_a_rewrap_leaves_every_object_readable() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let data = mount.bucket("data");
    let n = 400;
    for i in 0..n {
        fs::write(data.join(format!("f{i:04}")), content(i, 3000 + i)).unwrap();
    }
    run(&store, &["rotate-master"]);
    let on_v2 = || on_master_v2(&store, n);
    let mut child = rewrap_until(&store, n, 10);
    // The daemon dies in the middle of the rewrap, the command then fails on the dead mount.
    mount.signal(libc::SIGKILL);
    mount.wait_exit();
    let status = child.wait().unwrap();
    let partway = on_v2();
    eprintln!("daemon killed after {partway} of {n} objects; rewrap exited {status}");
    assert!(partway > 0, "the rewrap never started");
    let out = support::mount::fusermount_u(&store.mountpoint);
    assert!(out.status.success(), "{out:?}");
    drop(mount);

    // Every header is the old one or the new one, and each object reads its own data.
    let mount = Mount::new(&store, &[]);
    for i in 0..n {
        let name = format!("f{i:04}");
        let key = header_key(&backing(&store, "data", &name));
        assert!(
            matches!(key, KeyRef::Master { version: 1 | 2 }),
            "{name}: {key:?}"
        );
        assert_eq!(
            fs::read(mount.join(format!("data/{name}"))).unwrap(),
            content(i, 3000 + i),
            "{name} after the crash"
        );
    }
    let out = run(&store, &["rewrap"]);
    assert!(out.contains("failed 0"), "{out}");
    assert_eq!(on_v2(), n);
    let fsck = ssefs(&[
        "fsck",
        "--store",
        s(&store.store),
        "--root-key",
        s(&store.root_key),
    ]);
    assert!(fsck.status.success(), "fsck after the crash: {fsck:?}");
}

#[test]
fn a_mount_with_its_own_fsname_is_found_by_status_and_rewrap() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &["fsname=vault"]);
    let data = mount.bucket("data");
    fs::write(data.join("f"), content(1, 10_000)).unwrap();
    let status = ssefs_ok(&["status", "--store", s(&store.store), "--json"]);
    let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["mounted"], true, "{status}");
    assert_eq!(
        status["mount_points"][0].as_str(),
        Some(s(&store.mountpoint)),
        "{status}"
    );
    run(&store, &["rotate-master"]);
    let out = run(&store, &["rewrap"]);
    assert!(
        out.contains("rewrapped 1, already current 0, failed 0"),
        "{out}"
    );
    assert_eq!(key_version(&data.join("f")), 2);
    assert_eq!(fs::read(data.join("f")).unwrap(), content(1, 10_000));
}

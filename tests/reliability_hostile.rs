//! Hostile and bad input through the mount: tampered, cut and spliced backing files (EIO for that
//! object only, a warning naming it); a corrupted, foreign or too-new keystore and a wrong root
//! key (one line, non-zero exit, nothing mounted, no byte changed); a full disk; names of 255
//! and 256 bytes, deep paths, names that are not UTF-8, huge and numerous xattrs, and concurrent
//! setfattr on one file.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use support::mount::{
    DaemonFailure, Mount, MountArgs, TestStore, init_store, is_mounted, mount_tests_enabled,
};
use support::rng::TestRng;
use support::sys::assert_errno;
use support::tree::walk;
use support::xattr::{list_xattr, read_xattr, set_xattr};

const PAGE: u64 = 4096;

/// Byte offset of the data page of block `k` (`k` < 36) in a backing file.
fn data_page(k: u64) -> u64 {
    PAGE + PAGE + k * PAGE
}

fn assert_eio(path: &Path, what: &str) {
    match fs::read(path) {
        Ok(bytes) => panic!("{what}: read {} bytes, expected EIO", bytes.len()),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tampered backing files
// ---------------------------------------------------------------------------------------------

#[test]
fn spliced_cut_and_foreign_backing_files_fail_alone_and_are_logged() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("hostile");
    let mut rng = TestRng::new(0x405);
    let names = [
        "swapped-pages",
        "foreign-block",
        "header-flip",
        "emptied",
        "header-only",
        "garbage",
        "donor",
        "intact",
    ];
    let contents: BTreeMap<&str, Vec<u8>> = names
        .iter()
        .map(|n| (*n, rng.bytes(20 * PAGE as usize + 123)))
        .collect();
    for (name, data) in &contents {
        fs::write(bucket.join(name), data).unwrap();
    }
    assert!(mount.unmount().success());

    let backing = |name: &str| store.store.join("hostile").join(name);
    let rw = |name: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing(name))
            .unwrap()
    };
    let page_at = |name: &str, offset: u64| {
        let mut page = vec![0u8; PAGE as usize];
        rw(name).read_exact_at(&mut page, offset).unwrap();
        page
    };
    // Two data pages exchanged within one object.
    let (p2, p5) = (
        page_at("swapped-pages", data_page(2)),
        page_at("swapped-pages", data_page(5)),
    );
    rw("swapped-pages").write_all_at(&p5, data_page(2)).unwrap();
    rw("swapped-pages").write_all_at(&p2, data_page(5)).unwrap();
    // A block (slot pair and data page) copied from another object at the same position.
    let donor_page = page_at("donor", data_page(3));
    let mut donor_slots = vec![0u8; 112];
    rw("donor")
        .read_exact_at(&mut donor_slots, PAGE + 3 * 112)
        .unwrap();
    rw("foreign-block")
        .write_all_at(&donor_page, data_page(3))
        .unwrap();
    rw("foreign-block")
        .write_all_at(&donor_slots, PAGE + 3 * 112)
        .unwrap();
    // One flipped bit in the header's size field.
    let mut b = [0u8; 1];
    rw("header-flip").read_exact_at(&mut b, 40).unwrap();
    rw("header-flip").write_all_at(&[b[0] ^ 0x10], 40).unwrap();
    rw("emptied").set_len(0).unwrap();
    rw("header-only").set_len(PAGE).unwrap();
    fs::write(backing("garbage"), rng.bytes(30_000)).unwrap();

    let mount = Mount::new(&store, &[]);
    let bucket = mount.join("hostile");
    for name in [
        "swapped-pages",
        "foreign-block",
        "header-flip",
        "emptied",
        "header-only",
        "garbage",
    ] {
        assert_eio(&bucket.join(name), name);
    }
    for name in ["donor", "intact"] {
        assert!(
            fs::read(bucket.join(name)).unwrap() == contents[name],
            "{name} changed"
        );
    }
    // Blocks before the spliced one still read: only the bad block fails.
    let f = fs::File::open(bucket.join("swapped-pages")).unwrap();
    let mut first = vec![0u8; 2 * PAGE as usize];
    f.read_exact_at(&mut first, 0).unwrap();
    assert!(first == contents["swapped-pages"][..2 * PAGE as usize]);
    drop(f);
    // The damaged objects can be listed, stat'ed and removed.
    for name in [
        "swapped-pages",
        "foreign-block",
        "header-flip",
        "emptied",
        "header-only",
        "garbage",
    ] {
        fs::metadata(bucket.join(name)).unwrap();
        fs::remove_file(bucket.join(name)).unwrap();
    }
    let log = mount.log_text();
    for name in [
        "swapped-pages",
        "foreign-block",
        "header-flip",
        "header-only",
        "garbage",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("hostile/{name}"))),
            "no warning naming hostile/{name} in the daemon log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad keystores and keys
// ---------------------------------------------------------------------------------------------

/// Every file under `root` with its bytes (directories as `None`).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    walk(root)
        .into_iter()
        .map(|(rel, meta)| {
            let bytes = meta.is_file().then(|| fs::read(root.join(&rel)).unwrap());
            (rel, bytes)
        })
        .collect()
}

/// Mounts with `key` and asserts the refusal: non-zero exit, one line on stderr mentioning
/// one of `words`, nothing mounted, no byte of the store changed.
fn assert_mount_refused(store: &TestStore, key: &Path, words: &[&str], what: &str) {
    let before = snapshot(&store.store);
    let args = MountArgs {
        root_key: key.to_path_buf(),
        ..MountArgs::of(store, &[])
    };
    let failure: DaemonFailure = match Mount::try_with_args(args) {
        Ok(mount) => {
            drop(mount);
            panic!("{what}: the mount succeeded");
        }
        Err(failure) => failure,
    };
    assert!(
        failure.status.code().is_some_and(|c| c != 0),
        "{what}: exit {:?}",
        failure.status
    );
    let lines: Vec<&str> = failure
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line, got {:?}",
        failure.stderr
    );
    let line = lines[0].to_lowercase();
    assert!(
        words.iter().any(|w| line.contains(w)),
        "{what}: the line {:?} names none of {words:?}",
        lines[0]
    );
    assert!(
        !is_mounted(&store.mountpoint),
        "{what}: something is mounted"
    );
    let after = snapshot(&store.store);
    assert!(
        before == after,
        "{what}: the store changed: {:?}",
        changed(&before, &after)
    );
}

fn changed(
    a: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    b: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = a
        .keys()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    out
}

/// A store with one object, unmounted.
fn store_with_an_object() -> TestStore {
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    fs::write(
        mount.bucket("keys").join("object"),
        b"guarded by the keystore",
    )
    .unwrap();
    assert!(mount.unmount().success());
    store
}

fn keystore(store: &TestStore) -> PathBuf {
    store.store.join(".ssefs/keystore.db")
}

fn private_file(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn bad_keystores_and_keys_are_refused_without_changing_a_byte() {
    if !mount_tests_enabled() {
        return;
    }
    let store = store_with_an_object();
    let original = fs::read(keystore(&store)).unwrap();

    // A wrong root key.
    let wrong = store.base().join("wrong.key");
    private_file(&wrong, &TestRng::new(9).bytes(32));
    assert_mount_refused(&store, &wrong, &["root key"], "wrong root key");

    // Another store's keystore, with this store's root key.
    let other = TestStore::new();
    fs::copy(keystore(&other), keystore(&store)).unwrap();
    assert_mount_refused(&store, &store.root_key, &["root key"], "foreign keystore");
    fs::write(keystore(&store), &original).unwrap();

    // A schema version from a newer ssefs.
    {
        let conn = rusqlite::Connection::open(keystore(&store)).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    assert_mount_refused(
        &store,
        &store.root_key,
        &["newer", "version"],
        "newer schema",
    );
    fs::write(keystore(&store), &original).unwrap();

    // Corruptions: a broken SQLite header, a cut file, flipped bytes in the records.
    let mut header = original.clone();
    header[..16].copy_from_slice(b"not sqlite data!");
    let cut = original[..original.len() / 3].to_vec();
    // Flipped bytes inside the records of every b-tree page (where SQLite keeps the rows;
    // flips in a page's unused middle change nothing and go unnoticed, rightly).
    let mut flipped = original.clone();
    let mut rng = TestRng::new(0xF11);
    for page in 0..flipped.len() / 4096 {
        let head = page * 4096 + if page == 0 { 100 } else { 0 };
        if ![2u8, 5, 10, 13].contains(&flipped[head]) {
            continue;
        }
        let start = usize::from(u16::from_be_bytes([flipped[head + 5], flipped[head + 6]]));
        if start == 0 || start >= 4096 {
            continue;
        }
        for _ in 0..8 {
            let at = page * 4096 + start + rng.below((4096 - start) as u64) as usize;
            flipped[at] ^= 0xFF;
        }
    }
    // One flipped bit in the wrapped master key.
    let wrapped: Vec<u8> = {
        let conn = rusqlite::Connection::open(keystore(&store)).unwrap();
        conn.query_row(
            "SELECT wrapped FROM master_keys WHERE version = 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let at =
        support::tree::find(&original, &wrapped).expect("the wrapped master key is in the file");
    let mut master = original.clone();
    master[at + 20] ^= 0x04;
    for (bytes, what) in [
        (header, "bad header"),
        (cut, "cut keystore"),
        (flipped, "flipped bytes in the records"),
        (master, "flipped bit in the wrapped master key"),
    ] {
        fs::write(keystore(&store), &bytes).unwrap();
        assert_mount_refused(
            &store,
            &store.root_key,
            &["keystore", "database", "corrupt", "malformed", "not a"],
            what,
        );
    }

    // The original keystore still works and the object still reads.
    fs::write(keystore(&store), &original).unwrap();
    let mount = Mount::new(&store, &[]);
    assert_eq!(
        fs::read(mount.join("keys/object")).unwrap(),
        b"guarded by the keystore"
    );
}

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(path: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.0).output();
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes `pattern` bytes in 256 KiB chunks until a write fails; returns that error and the
/// bytes written.
fn fill(path: &Path) -> (io::Error, u64) {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0x5Au8; 256 << 10];
    let mut written = 0u64;
    loop {
        if let Err(e) = f.write_all(&chunk) {
            return (e, written);
        }
        written += chunk.len() as u64;
        assert!(written < 64 << 20, "a 16 MiB file system took 64 MiB");
    }
}

#[test]
fn a_full_disk_gives_enospc_and_keeps_existing_objects() {
    if !mount_tests_enabled() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("ssefs-full-")
        .tempdir()
        .unwrap();
    let base_path = fs::canonicalize(base.path()).unwrap();
    let _tmpfs = Tmpfs::new(base_path.join("small"), "16m");
    let store_path = base_path.join("small/store");
    let root_key = base_path.join("root.key");
    let mountpoint = base_path.join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    init_store(&store_path, &root_key);
    let args = MountArgs {
        store: store_path.clone(),
        mountpoint: mountpoint.clone(),
        root_key,
        options: Vec::new(),
    };
    let mount = Mount::with_args(args.clone());
    let bucket = mount.bucket("full");
    let keep = TestRng::new(77).bytes(1 << 20);
    {
        let mut f = fs::File::create(bucket.join("keep")).unwrap();
        f.write_all(&keep).unwrap();
        f.sync_all().unwrap();
    }
    let (error, written) = fill(&bucket.join("big"));
    assert_eq!(
        error.raw_os_error(),
        Some(libc::ENOSPC),
        "writing to a full disk: {error}"
    );
    assert!(written > 8 << 20, "only {written} bytes fit in 16 MiB");
    // Existing objects are intact; the one that hit the wall reads back what it accepted.
    assert!(
        fs::read(bucket.join("keep")).unwrap() == keep,
        "keep changed"
    );
    let big = fs::read(bucket.join("big")).expect("the object that filled the disk reads");
    assert!(
        big.len() as u64 >= written && big.iter().all(|b| *b == 0x5A),
        "big: {} bytes",
        big.len()
    );
    // Re-encrypting while full fails with ENOSPC, says so in the log, and changes nothing.
    assert_eq!(
        setxattr(
            &bucket.join("keep"),
            "user.oss.server-side-encryption",
            b"KMS"
        ),
        Err(libc::ENOSPC),
        "re-encrypting on a full disk"
    );
    let log = mount.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("re-encrypting object") && l.contains("full/keep")),
        "no log line names the failed re-encryption: {log}"
    );
    assert!(
        fs::read(bucket.join("keep")).unwrap() == keep,
        "keep changed by a failed re-encryption"
    );
    // Creating while full fails cleanly too, and nothing appears.
    let made = fs::write(bucket.join("while-full"), vec![1u8; 1 << 20]);
    if let Err(e) = &made {
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "create while full: {e}"
        );
    }
    // After deleting, writing works again.
    fs::remove_file(bucket.join("big")).unwrap();
    let _ = fs::remove_file(bucket.join("while-full"));
    let again = TestRng::new(78).bytes(4 << 20);
    fs::write(bucket.join("again"), &again).expect("write after freeing space");
    assert!(fs::read(bucket.join("again")).unwrap() == again);
    assert!(mount.unmount().success());
    let mount = Mount::with_args(args);
    assert!(fs::read(mount.join("full/keep")).unwrap() == keep);
    assert!(fs::read(mount.join("full/again")).unwrap() == again);
    let tmp_left = fs::read_dir(store_path.join(".ssefs/tmp")).unwrap().count();
    assert_eq!(tmp_left, 0, "temporary files left in the store");
}

// ---------------------------------------------------------------------------------------------
// Names, depths and extended attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn long_names_deep_paths_and_non_utf8_names() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("names");
    let longest = "n".repeat(255);
    fs::write(bucket.join(&longest), b"255").unwrap();
    assert_eq!(fs::read(bucket.join(&longest)).unwrap(), b"255");
    fs::rename(bucket.join(&longest), bucket.join("x".repeat(255))).unwrap();
    let too_long = "n".repeat(256);
    assert_errno(
        fs::write(bucket.join(&too_long), b"x"),
        libc::ENAMETOOLONG,
        "create 256",
    );
    assert_errno(
        fs::create_dir(bucket.join(&too_long)),
        libc::ENAMETOOLONG,
        "mkdir 256",
    );
    assert_errno(
        fs::rename(bucket.join("x".repeat(255)), bucket.join(&too_long)),
        libc::ENAMETOOLONG,
        "rename to 256",
    );

    let mut deep = bucket.clone();
    for level in 0..100 {
        deep.push(format!("level-{level:03}"));
        fs::create_dir(&deep).unwrap_or_else(|e| panic!("mkdir level {level}: {e}"));
    }
    fs::write(deep.join("bottom"), b"deep down").unwrap();

    let odd = OsStr::from_bytes(b"not-utf8-\xff\xfe\x80");
    fs::write(bucket.join(odd), b"bytes").unwrap();
    let listed: Vec<_> = fs::read_dir(&bucket)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed.iter().any(|n| n == odd), "{listed:?}");
    fs::rename(
        bucket.join(odd),
        bucket.join(OsStr::from_bytes(b"\xc3\x28")),
    )
    .unwrap();

    assert!(mount.unmount().success());
    let mount = Mount::new(&store, &[]);
    let bucket = mount.join("names");
    let mut deep = bucket.clone();
    for level in 0..100 {
        deep.push(format!("level-{level:03}"));
    }
    assert_eq!(fs::read(deep.join("bottom")).unwrap(), b"deep down");
    assert_eq!(
        fs::read(bucket.join(OsStr::from_bytes(b"\xc3\x28"))).unwrap(),
        b"bytes"
    );
    assert_eq!(fs::read(bucket.join("x".repeat(255))).unwrap(), b"255");
    fs::remove_dir_all(bucket.join("level-000")).unwrap();
    assert!(!bucket.join("level-000").exists());
}

/// `setxattr`, failing with the errno (compared between the mount and the reference).
fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    set_xattr(path, name, value).map_err(errno)
}

fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    read_xattr(path, name).map_err(errno)
}

/// The names a user set (not the `user.oss.` ones ssefs answers to), sorted.
fn listxattr(path: &Path) -> Result<Vec<String>, i32> {
    let mut names: Vec<String> = list_xattr(path)
        .map_err(errno)?
        .into_iter()
        .filter(|n| !n.starts_with("user.oss."))
        .collect();
    names.sort();
    Ok(names)
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Huge and numerous user xattrs behave exactly as on the backing filesystem itself (the same
/// calls on a plain file next to the store are the reference).
#[test]
fn huge_and_numerous_xattrs_match_the_backing_filesystem() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let target = mount.bucket("xattrs").join("file");
    fs::write(&target, b"x").unwrap();
    let reference = store.scratch_dir("plain").join("file");
    fs::write(&reference, b"x").unwrap();
    let mut rng = TestRng::new(0x64);
    for (name, len) in [
        ("user.big", 65536usize),
        ("user.medium", 3000),
        ("user.toobig", 65537),
    ] {
        let value = rng.bytes(len);
        let want = setxattr(&reference, name, &value);
        assert_eq!(
            setxattr(&target, name, &value),
            want,
            "setxattr {name} of {len} bytes"
        );
        assert_eq!(
            getxattr(&target, name),
            getxattr(&reference, name),
            "getxattr {name}"
        );
    }
    let mut failed_at = None;
    for i in 0..400 {
        let name = format!("user.many-{i:03}");
        let value = rng.bytes(64);
        let want = setxattr(&reference, &name, &value);
        assert_eq!(setxattr(&target, &name, &value), want, "setxattr {name}");
        if want.is_err() && failed_at.is_none() {
            failed_at = Some(i);
        }
    }
    assert_eq!(
        listxattr(&target),
        listxattr(&reference),
        "the lists of names differ"
    );
    eprintln!(
        "the backing filesystem took {:?} attributes before failing",
        failed_at
    );
    // Remounted, the attributes are still there.
    assert!(mount.unmount().success());
    let mount = Mount::new(&store, &[]);
    let target = mount.join("xattrs/file");
    assert_eq!(listxattr(&target), listxattr(&reference));
    assert_eq!(
        getxattr(&target, "user.big"),
        getxattr(&reference, "user.big")
    );
    assert_eq!(fs::read(&target).unwrap(), b"x");
}

#[test]
fn concurrent_setfattr_on_one_file() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let file = Arc::new(mount.bucket("xattr-race").join("file"));
    fs::write(&*file, b"contents stay").unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let file = Arc::clone(&file);
            thread::spawn(move || {
                for round in 0..150u32 {
                    let own = format!("user.thread-{t}");
                    let value = format!("{t}:{round}");
                    setxattr(&file, &own, value.as_bytes()).expect("own attribute");
                    setxattr(&file, "user.shared", value.as_bytes()).expect("shared attribute");
                    let got = getxattr(&file, &own).expect("read own attribute");
                    assert_eq!(got, value.as_bytes(), "thread {t} lost its own write");
                    let shared = getxattr(&file, "user.shared").expect("read shared");
                    assert!(shared.contains(&b':'), "torn shared value {shared:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a setfattr thread failed");
    }
    let names = listxattr(&file).unwrap();
    for t in 0..8 {
        assert!(names.contains(&format!("user.thread-{t}")), "{names:?}");
        assert_eq!(
            getxattr(&file, &format!("user.thread-{t}")).unwrap(),
            format!("{t}:149").as_bytes()
        );
    }
    let shared = String::from_utf8(getxattr(&file, "user.shared").unwrap()).unwrap();
    assert!(shared.ends_with(":149"), "last shared write was {shared}");
    assert_eq!(fs::read(&*file).unwrap(), b"contents stay");
}

//! One bucket mounted as the whole filesystem (`-o bucket=NAME`, `--bucket NAME`), through a
//! real kernel mount: ordinary tools at the root, the bucket's rule on the root and the
//! object attributes below it, KMS grants for a second uid, tampering, a crash, two buckets
//! of one store side by side, the refusals, `ssefs status`, and `mount -t fuse.ssefs`.

mod support;

use ssefs::store::bucket_lock::bucket_mounts;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::SSEFS;
use support::mount::{Mount, MountArgs, TestStore, fusermount_u, is_mounted, mount_tests_enabled};
use support::rng::TestRng;
use support::shell::{as_nobody, q, sh};
use support::sys::{mkfifo, set_times};
use support::tree::{TreeCompare, assert_trees_equal};
use support::xattr::{SSE, SSE_KEY_ID, read_xattr, remove_xattr, set_xattr};

/// Mounts bucket `bucket` of `store` on `mountpoint` with extra `-o` options.
fn mount_bucket(store: &TestStore, mountpoint: &Path, bucket: &str, extra: &[&str]) -> Mount {
    Mount::with_args(bucket_args(store, mountpoint, bucket, extra))
}

fn bucket_args(store: &TestStore, mountpoint: &Path, bucket: &str, extra: &[&str]) -> MountArgs {
    let mut args = MountArgs::of(store, extra);
    args.mountpoint = mountpoint.to_path_buf();
    args.options.push(format!("bucket={bucket}"));
    args
}

/// The value of an extended attribute, `None` when it is absent.
fn attr(path: &Path, name: &str) -> Option<String> {
    match read_xattr(path, name) {
        Ok(value) => Some(text(&value)),
        Err(e) => {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENODATA),
                "getxattr {name} on {}: {e}",
                path.display()
            );
            None
        }
    }
}

fn set_attr(path: &Path, name: &str, value: &str) {
    set_xattr(path, name, value)
        .unwrap_or_else(|e| panic!("setxattr {name}={value} on {}: {e}", path.display()));
}

fn remove_attr(path: &Path, name: &str) {
    remove_xattr(path, name)
        .unwrap_or_else(|e| panic!("removexattr {name} on {}: {e}", path.display()));
}

/// Runs `ssefs ARGS` and returns its output.
fn ssefs(args: &[&str]) -> Output {
    Command::new(SSEFS)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ssefs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `needle` occurs in the bytes of any file under `dir`.
fn found_in_files(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => found_in_files(&path, needle),
            Ok(t) if t.is_file() => fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false),
            _ => false,
        }
    })
}

/// A small tree of every kind of node, built under `root` (which must not exist).
fn make_tree(root: &Path) {
    let mut rng = TestRng::new(0xb0c7);
    fs::create_dir_all(root.join("docs/deep")).unwrap();
    fs::write(root.join("top.txt"), b"PLAINTEXT-AT-THE-TOP\n").unwrap();
    fs::write(root.join("docs/readme"), b"hello\n").unwrap();
    fs::write(root.join("docs/deep/large.bin"), rng.bytes(300_000)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::set_permissions(root.join("top.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("docs/readme", root.join("link")).unwrap();
    fs::hard_link(root.join("docs/readme"), root.join("hard")).unwrap();
    // Old, distinct times (directories last), which every tool must carry over.
    for (i, rel) in [
        "top.txt",
        "docs/readme",
        "docs/deep/large.bin",
        "empty",
        "link",
    ]
    .iter()
    .chain(&["docs/deep", "docs"])
    .enumerate()
    {
        let secs = 1_000_000_000 + i as i64 * 1000;
        set_times(&root.join(rel), (secs, 0), (secs, 123_456_789)).unwrap();
    }
}

#[test]
fn ordinary_tools_work_at_the_root_of_a_bucket_mount() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = mount_bucket(&store, &store.mountpoint, "photos", &["create_bucket"]);
    let root = mount.path().to_path_buf();
    let src = store.scratch_dir("src").join("tree");
    make_tree(&src);

    // cp -a, tar and rsync straight into the root.
    sh(&format!("cp -a {}/. {}", q(&src), q(&root)));
    assert_trees_equal(&src, &root, TreeCompare::ALL);
    let out = store.scratch_dir("out");
    sh(&format!(
        "tar --format=posix -C {} -cf - . | tar -C {} -xf -",
        q(&root),
        q(&out)
    ));
    assert_trees_equal(&src, &out, TreeCompare::ALL);
    let synced = root.join("synced");
    sh(&format!("rsync -aH {}/ {}/", q(&src), q(&synced)));
    assert_trees_equal(&src, &synced, TreeCompare::ALL);

    // mkdir, mv, ln -s, mkfifo and rm at the root.
    sh(&format!(
        "cd {} && mkdir d && mv top.txt d/moved && mv d e && ln -s e/moved ln && rm hard",
        q(&root)
    ));
    assert_eq!(
        fs::read(root.join("ln")).unwrap(),
        b"PLAINTEXT-AT-THE-TOP\n"
    );
    mkfifo(&root.join("fifo"), 0o600).unwrap();
    assert!(
        fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // The store's metadata directory name is an ordinary name in a bucket.
    fs::create_dir(root.join(".ssefs")).unwrap();
    fs::write(root.join(".ssefs/x"), b"x").unwrap();
    sh(&format!("rm -r {}", q(&root.join(".ssefs"))));

    // Everything is in the bucket's directory of the store, encrypted.
    let backing = store.store.join("photos");
    assert!(backing.join("e/moved").is_file());
    assert!(backing.join("synced/docs/deep/large.bin").is_file());
    assert!(!found_in_files(&store.store, b"PLAINTEXT-AT-THE-TOP"));
    assert!(
        store.store.join(".ssefs").is_dir(),
        "the store's own is untouched"
    );
    drop(mount);
}

#[test]
fn the_root_carries_the_bucket_rule_and_objects_their_own() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = mount_bucket(&store, &store.mountpoint, "vault", &["create_bucket"]);
    let root = mount.path().to_path_buf();
    assert_eq!(attr(&root, SSE).as_deref(), Some("AES256"), "default rule");
    fs::write(root.join("old"), b"old words").unwrap();
    assert_eq!(attr(&root.join("old"), SSE).as_deref(), Some("AES256"));

    set_attr(&root, SSE, "KMS");
    assert_eq!(attr(&root, SSE).as_deref(), Some("KMS"));
    fs::write(root.join("new"), b"new words").unwrap();
    assert_eq!(attr(&root.join("new"), SSE).as_deref(), Some("KMS"));
    let key_id = attr(&root.join("new"), SSE_KEY_ID).expect("a KMS object names its CMK");
    assert_eq!(
        attr(&root.join("old"), SSE).as_deref(),
        Some("AES256"),
        "untouched"
    );

    // An object override, and the same for a file in a directory below the root.
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/deep"), b"deep words").unwrap();
    assert_eq!(attr(&root.join("sub/deep"), SSE).as_deref(), Some("KMS"));
    set_attr(&root.join("sub/deep"), SSE, "AES256");
    assert_eq!(attr(&root.join("sub/deep"), SSE).as_deref(), Some("AES256"));
    assert_eq!(fs::read(root.join("sub/deep")).unwrap(), b"deep words");
    assert_eq!(
        attr(&root.join("sub"), SSE),
        None,
        "a directory has no rule"
    );

    // `ssefs stat` and `ssefs reencrypt` (to the bucket's rule) work on the mount.
    let out = ssefs(&["stat", root.join("new").to_str().unwrap()]);
    assert!(out.status.success(), "stat: {out:?}");
    assert!(text(&out.stdout).contains(&key_id), "{}", text(&out.stdout));
    let out = ssefs(&["reencrypt", root.to_str().unwrap()]);
    assert!(out.status.success(), "reencrypt: {out:?}");
    for name in ["old", "sub/deep", "new"] {
        assert_eq!(
            attr(&root.join(name), SSE).as_deref(),
            Some("KMS"),
            "{name}"
        );
    }
    assert_eq!(fs::read(root.join("old")).unwrap(), b"old words");

    // The rule survives a remount (it is the bucket's), and removing it is seen.
    drop(mount);
    let mount = mount_bucket(&store, &store.mountpoint, "vault", &[]);
    assert_eq!(attr(mount.path(), SSE).as_deref(), Some("KMS"));
    remove_attr(mount.path(), SSE);
    assert_eq!(attr(mount.path(), SSE), None);
    let out = ssefs(&[
        "bucket-encryption",
        "get",
        "vault",
        "--store",
        store.store.to_str().unwrap(),
        "--root-key",
        store.root_key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "no rule any more: {out:?}");
}

#[test]
fn kms_grants_decide_for_a_second_uid_at_a_bucket_root() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = mount_bucket(
        &store,
        &store.mountpoint,
        "team",
        &["create_bucket", "allow_other"],
    );
    let root = mount.path().to_path_buf();
    fs::set_permissions(store.base(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    let kms = |args: &[&str]| {
        let mut all = vec!["kms"];
        all.extend_from_slice(args);
        let store_arg = store.store.to_str().unwrap();
        let key_arg = store.root_key.to_str().unwrap();
        all.extend_from_slice(&["--store", store_arg, "--root-key", key_arg, "--json"]);
        let out = ssefs(&all);
        assert!(out.status.success(), "kms {args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let key = kms(&["create", "--alias", "alias/team"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    set_attr(&root, SSE, "KMS");
    set_attr(&root, SSE_KEY_ID, &key);
    let file = root.join("by-root");
    fs::write(&file, b"root's words").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();

    let cat = format!("cat {}", q(&file));
    let out = as_nobody(&cat);
    assert!(
        !out.status.success() && text(&out.stderr).contains("Permission denied"),
        "no grant: {out:?}"
    );
    let out = as_nobody(&format!("echo hi > {}", q(&root.join("by-nobody"))));
    assert!(!out.status.success(), "no grant to encrypt: {out:?}");
    kms(&[
        "grant",
        &key,
        "--uid",
        "65534",
        "--operations",
        "encrypt,decrypt",
    ]);
    let out = as_nobody(&cat);
    assert!(out.status.success(), "granted: {out:?}");
    assert_eq!(text(&out.stdout), "root's words");
    let out = as_nobody(&format!("echo hi > {}", q(&root.join("by-nobody"))));
    assert!(out.status.success(), "granted: {out:?}");
    assert_eq!(
        attr(&root.join("by-nobody"), SSE_KEY_ID).as_deref(),
        Some(&*key)
    );
    // The root's rule is its owner's (root's) to change.
    let out = as_nobody(&format!("setfattr -n {SSE} -v AES256 {}", q(&root)));
    assert!(!out.status.success(), "not the bucket's owner: {out:?}");
}

#[test]
fn a_tampered_object_at_a_bucket_root_reads_as_eio() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = mount_bucket(&store, &store.mountpoint, "photos", &["create_bucket"]);
    let data = TestRng::new(7).bytes(100_000);
    fs::write(mount.join("victim"), &data).unwrap();
    fs::write(mount.join("intact"), &data).unwrap();
    drop(mount);
    let backing = store.store.join("photos/victim");
    let len = fs::metadata(&backing).unwrap().len();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&backing)
        .unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, len / 2).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 1], len / 2).unwrap();
    file.flush().unwrap();
    drop(file);

    let mount = mount_bucket(&store, &store.mountpoint, "photos", &[]);
    let mut buf = Vec::new();
    let err = fs::File::open(mount.join("victim"))
        .and_then(|mut f| f.read_to_end(&mut buf))
        .expect_err("a flipped byte must not read");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fs::read(mount.join("intact")).unwrap(), data);
}

#[test]
fn fsynced_data_at_a_bucket_root_survives_kill_9() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = mount_bucket(&store, &store.mountpoint, "photos", &["create_bucket"]);
    let data = TestRng::new(9).bytes(200_000);
    {
        let mut file = fs::File::create(mount.join("durable")).unwrap();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
    }
    fs::write(mount.join("unsynced"), vec![0x55u8; 50_000]).unwrap();
    mount.signal(libc::SIGKILL);
    let status = mount.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "daemon {status}");
    let out = fusermount_u(&store.mountpoint);
    assert!(out.status.success(), "fusermount3 -u: {out:?}");
    drop(mount);

    let mount = mount_bucket(&store, &store.mountpoint, "photos", &[]);
    assert!(
        fs::read(mount.join("durable")).unwrap() == data,
        "fsynced file changed"
    );
    if let Err(e) = fs::read(mount.join("unsynced")) {
        assert_ne!(
            e.raw_os_error(),
            Some(libc::EIO),
            "unsynced file fails authentication"
        );
    }
}

#[test]
fn two_buckets_mount_side_by_side_and_each_only_once() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let second = store.scratch_dir("mnt2");
    let third = store.scratch_dir("mnt3");
    let photos = mount_bucket(&store, &store.mountpoint, "photos", &["create_bucket"]);
    let docs = mount_bucket(&store, &second, "docs", &["create_bucket"]);
    fs::write(photos.join("a.jpg"), b"picture").unwrap();
    fs::write(docs.join("a.txt"), b"letter").unwrap();
    assert!(store.store.join("photos/a.jpg").is_file());
    assert!(store.store.join("docs/a.txt").is_file());
    assert!(
        !second.join("a.jpg").exists(),
        "each mount shows its bucket only"
    );
    // A move between the two mounts is a copy (they are two filesystems).
    sh(&format!(
        "mv {} {}",
        q(&photos.join("a.jpg")),
        q(&docs.join("b.jpg"))
    ));
    assert_eq!(fs::read(docs.join("b.jpg")).unwrap(), b"picture");

    // The same bucket twice is refused, naming where it is mounted.
    let failure = Mount::try_with_args(bucket_args(&store, &third, "photos", &[]))
        .err()
        .expect("a second mount of one bucket is refused");
    assert!(
        failure.stderr.contains("bucket photos")
            && failure.stderr.contains("already mounted")
            && failure
                .stderr
                .contains(&store.mountpoint.display().to_string()),
        "{}",
        failure.stderr
    );
    assert!(!is_mounted(&third));
    // A whole-store mount is refused while buckets are mounted on their own.
    let mut whole = MountArgs::of(&store, &[]);
    whole.mountpoint = third.clone();
    let failure = Mount::try_with_args(whole)
        .err()
        .expect("whole mount refused");
    assert!(
        failure.stderr.contains("docs, photos") && failure.stderr.contains("on their own"),
        "{}",
        failure.stderr
    );

    // `ssefs status` lists both with their bucket.
    let out = ssefs(&["status", "--store", store.store.to_str().unwrap()]);
    assert!(out.status.success(), "status: {out:?}");
    let shown = text(&out.stdout);
    for (bucket, mountpoint) in [("photos", &store.mountpoint), ("docs", &second)] {
        let line = format!("bucket {bucket} mounted on {}", mountpoint.display());
        assert!(shown.contains(&line), "no {line:?} in {shown}");
    }
    assert!(
        !shown.lines().any(|l| l.starts_with("mounted on")),
        "no whole-store mount: {shown}"
    );
    let out = ssefs(&["status", "--store", store.store.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["mounted"], true);
    assert_eq!(json["mount_points"], serde_json::json!([]), "{json}");
    let buckets: Vec<&str> = json["bucket_mounts"]
        .as_array()
        .expect("bucket_mounts")
        .iter()
        .map(|m| m["bucket"].as_str().unwrap())
        .collect();
    assert_eq!(buckets, ["docs", "photos"]);
    drop(docs);
    drop(photos);
}

#[test]
fn a_bucket_mount_is_refused_beside_a_whole_store_mount() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let whole = Mount::new(&store, &[]);
    whole.bucket("photos");
    let other = store.scratch_dir("mnt2");
    let failure = Mount::try_with_args(bucket_args(&store, &other, "photos", &[]))
        .err()
        .expect("refused");
    assert!(
        failure.stderr.contains("mounted whole"),
        "{}",
        failure.stderr
    );
    assert!(!is_mounted(&other));
    drop(whole);
    let mount = mount_bucket(&store, &other, "photos", &[]);
    drop(mount);
}

#[test]
fn missing_or_badly_named_buckets_are_refused_with_a_clear_message() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let (s, m, k) = (
        store.store.to_str().unwrap(),
        store.mountpoint.to_str().unwrap(),
        store.root_key.to_str().unwrap(),
    );
    let cases: [(&[&str], &str); 6] = [
        (&["-o", "bucket=photos"], "there is no bucket photos"),
        (
            &["-o", "ro,bucket=photos,create_bucket"],
            "a read-only mount does not create one",
        ),
        (&["--bucket", "photos"], "there is no bucket photos"),
        (&["--bucket", "Photos"], "invalid bucket name \"Photos\""),
        (&["-o", "bucket=x_y,create_bucket"], "invalid bucket name"),
        (&["-o", "create_bucket"], "create_bucket needs bucket=NAME"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["mount", s, m, "--root-key", k];
        args.extend_from_slice(extra);
        let out = ssefs(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {out:?}");
        assert!(text(&out.stderr).contains(message), "{extra:?}: {out:?}");
        assert!(!is_mounted(&store.mountpoint));
    }
    assert!(!store.store.join("photos").exists(), "nothing was made");
    let out = ssefs(&["mount", s, m, "--root-key", k, "--create-bucket"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses it: {out:?}");
}

#[test]
fn mount_t_fuse_ssefs_takes_the_bucket_option() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let store = TestStore::new();
    let options = format!(
        "root_key={},bucket=photos,create_bucket",
        store.root_key.display()
    );
    let out = Command::new("mount")
        .args(["-t", "fuse.ssefs", "-o", &options])
        .arg(&store.store)
        .arg(&store.mountpoint)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let guard = UnmountGuard(store.mountpoint.clone(), store.store.clone());
    assert!(out.status.success(), "mount: {out:?}");
    fs::write(store.mountpoint.join("at-root"), b"through mount(8)").unwrap();
    assert!(store.store.join("photos/at-root").is_file());
    assert_eq!(attr(&store.mountpoint, SSE).as_deref(), Some("AES256"));
    let mounts = bucket_mounts(&store.store).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].bucket, "photos");
    assert_eq!(
        mounts[0].mountpoint.as_deref(),
        Some(store.mountpoint.as_path())
    );
    drop(guard);
}

/// Unmounts a mount made through mount(8) and waits until its daemon let go of the store.
struct UnmountGuard(PathBuf, PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg(&self.0).status();
            if is_mounted(&self.0) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
        let start = Instant::now();
        while bucket_mounts(&self.1).is_ok_and(|m| !m.is_empty()) {
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("the daemon of {} did not exit", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The mount(8) helper `/sbin/mount.fuse.ssefs`, pointing at the binary under test for as long
/// as this lives; removed afterwards only if this test made it.
struct HelperLink {
    made: bool,
}

impl HelperLink {
    const PATH: &str = "/sbin/mount.fuse.ssefs";

    fn install() -> HelperLink {
        match fs::read_link(Self::PATH) {
            Ok(target) if target == Path::new(SSEFS) => HelperLink { made: false },
            Ok(other) => panic!(
                "{} points at {} (an installed ssefs?): remove it to test this build",
                Self::PATH,
                other.display()
            ),
            Err(_) => {
                assert!(
                    !Path::new(Self::PATH).exists(),
                    "{} exists and is not a link: remove it to test this build",
                    Self::PATH
                );
                symlink(SSEFS, Self::PATH).unwrap();
                HelperLink { made: true }
            }
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if self.made {
            let _ = fs::remove_file(Self::PATH);
        }
    }
}

/// `ssefs rewrap` reaches a mounted bucket through its mount and an unmounted one in place;
/// `ssefs fsck` checks the store beside bucket mounts.
#[test]
fn rewrap_and_fsck_find_bucket_mounts() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let (s, k) = (
        store.store.to_str().unwrap(),
        store.root_key.to_str().unwrap(),
    );
    let docs = mount_bucket(&store, &store.mountpoint, "docs", &["create_bucket"]);
    fs::write(docs.join("letter"), b"dear reader").unwrap();
    drop(docs);
    let photos = mount_bucket(&store, &store.mountpoint, "photos", &["create_bucket"]);
    fs::write(photos.join("a.jpg"), b"picture").unwrap();
    assert_eq!(
        attr(&photos.join("a.jpg"), "user.ssefs.key-version").as_deref(),
        Some("1")
    );

    let out = ssefs(&["rotate-master", "--store", s, "--root-key", k]);
    assert!(out.status.success(), "rotate-master: {out:?}");
    let out = ssefs(&["rewrap", "--store", s, "--root-key", k, "--json"]);
    assert!(out.status.success(), "rewrap: {out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rewrapped"], 2, "{json}");
    assert_eq!(
        attr(&photos.join("a.jpg"), "user.ssefs.key-version").as_deref(),
        Some("2")
    );
    assert_eq!(fs::read(photos.join("a.jpg")).unwrap(), b"picture");

    let out = ssefs(&["fsck", "--store", s, "--root-key", k]);
    assert!(out.status.success(), "fsck beside a bucket mount: {out:?}");
    let shown = text(&out.stdout);
    let line = format!("bucket photos mounted on {}", store.mountpoint.display());
    assert!(shown.contains(&line) && shown.contains("clean"), "{shown}");
    let out = ssefs(&["fsck", "--store", s, "--root-key", k, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["bucket_mounts"][0]["bucket"], "photos", "{json}");
    drop(photos);

    let docs = mount_bucket(&store, &store.mountpoint, "docs", &[]);
    assert_eq!(
        attr(&docs.join("letter"), "user.ssefs.key-version").as_deref(),
        Some("2")
    );
    assert_eq!(fs::read(docs.join("letter")).unwrap(), b"dear reader");
}

/// A foreground `ssefs mount` started by hand; unmounts and reaps it on drop.
struct ForegroundMount {
    child: std::process::Child,
    mountpoint: PathBuf,
}

impl Drop for ForegroundMount {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = fusermount_u(&self.mountpoint);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_bucket_flags_of_ssefs_mount_mount_one_bucket() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let child = Command::new(SSEFS)
        .arg("mount")
        .arg(&store.store)
        .arg(&store.mountpoint)
        .arg("--root-key")
        .arg(&store.root_key)
        .args(["--bucket", "photos", "--create-bucket"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut mount = ForegroundMount {
        child,
        mountpoint: store.mountpoint.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_mounted(&store.mountpoint) {
        let exited = mount.child.try_wait().unwrap();
        assert!(exited.is_none(), "the daemon exited: {exited:?}");
        assert!(Instant::now() < deadline, "no mount within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(store.mountpoint.join("top"), b"at the root").unwrap();
    assert!(store.store.join("photos/top").is_file());
    assert_eq!(
        attr(&store.mountpoint, "user.ssefs.bucket").as_deref(),
        Some("photos")
    );
    let out = fusermount_u(&store.mountpoint);
    assert!(out.status.success(), "fusermount3 -u: {out:?}");
    let status = mount.child.wait().unwrap();
    assert!(status.success(), "the daemon exits 0 at unmount: {status}");
}

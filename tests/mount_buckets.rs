//! Bucket rules at the mount root: OSS bucket names, nothing but buckets at the root, rmdir of
//! buckets, and the store's `.ssefs/` never visible or reachable through the mount.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::shell::{q, sh_output};
use support::sys::{assert_errno, mkfifo, readdir_all};

#[test]
fn bucket_names_follow_oss_rules() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let too_long = "a".repeat(64);
    for bad in [
        "ab",
        too_long.as_str(),
        "Upper",
        "-leading",
        "trailing-",
        "under_score",
        "dot.ted",
        "spa ce",
        "caf\u{e9}",
        ".hidden",
    ] {
        assert_errno(
            fs::create_dir(mount.join(bad)),
            libc::EINVAL,
            &format!("mkdir bucket {bad:?}"),
        );
        assert!(
            !store.store.join(bad).exists(),
            "rejected bucket {bad:?} left a directory in the store"
        );
    }
    let longest = "z".repeat(63);
    let good = [
        "abc",
        "a-b",
        "123",
        "0-x-9",
        "my-bucket-2024",
        longest.as_str(),
    ];
    for name in good {
        fs::create_dir(mount.join(name))
            .unwrap_or_else(|e| panic!("mkdir valid bucket {name:?}: {e}"));
        assert!(fs::metadata(mount.join(name)).unwrap().is_dir());
    }
    let mut listed = readdir_all(mount.path()).unwrap();
    listed.retain(|n| n != "." && n != "..");
    let mut expected: Vec<String> = good.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_errno(
        fs::create_dir(mount.join("abc")),
        libc::EEXIST,
        "mkdir an existing bucket",
    );
}

#[test]
fn only_buckets_live_at_the_root() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("inside");
    fs::write(bucket.join("file"), b"in a bucket").unwrap();

    assert_errno(
        fs::write(mount.join("rootfile"), b"x"),
        libc::EPERM,
        "create a regular file at the root",
    );
    assert_errno(
        symlink("inside", mount.join("rootlink")),
        libc::EPERM,
        "symlink at the root",
    );
    assert_errno(
        mkfifo(&mount.join("rootfifo"), 0o644),
        libc::EPERM,
        "mkfifo at the root",
    );
    assert_errno(
        fs::hard_link(bucket.join("file"), mount.join("rootlink2")),
        libc::EPERM,
        "hard link at the root",
    );
    // Nothing is renamed into or out of the root (documented as EXDEV, so `mv` falls back to
    // copying, which then meets the EPERM above), and buckets are not renamed.
    assert_errno(
        fs::rename(bucket.join("file"), mount.join("moved-to-root")),
        libc::EXDEV,
        "rename a file to the root",
    );
    let mv = sh_output(&format!(
        "mv {} {}",
        q(&bucket.join("file")),
        q(&mount.join("moved-by-mv"))
    ));
    assert!(!mv.status.success(), "mv of a file to the root succeeded");
    assert_errno(
        fs::rename(&bucket, mount.join("renamed-bucket")),
        libc::EXDEV,
        "rename a bucket",
    );
    assert_eq!(fs::read(bucket.join("file")).unwrap(), b"in a bucket");
    assert_eq!(
        readdir_all(mount.path()).unwrap(),
        vec![".", "..", "inside"]
    );
}

#[test]
fn rmdir_of_buckets() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let full = mount.bucket("full");
    let empty = mount.bucket("empty");
    fs::write(full.join("object"), b"keep me").unwrap();

    assert_errno(
        fs::remove_dir(&full),
        libc::ENOTEMPTY,
        "rmdir non-empty bucket",
    );
    assert_eq!(fs::read(full.join("object")).unwrap(), b"keep me");
    fs::remove_dir(&empty).expect("rmdir empty bucket");
    assert_errno(fs::metadata(&empty), libc::ENOENT, "stat removed bucket");
    assert!(
        !store.store.join("empty").exists(),
        "removed bucket still in the store"
    );

    mount.remount();
    assert_eq!(readdir_all(mount.path()).unwrap(), vec![".", "..", "full"]);
    assert_eq!(fs::read(mount.join("full/object")).unwrap(), b"keep me");
}

#[test]
fn store_metadata_is_invisible_and_unreachable() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    assert!(
        store.store.join(".ssefs/keystore.db").is_file(),
        "ssefs init did not create .ssefs/keystore.db"
    );
    let mount = Mount::new(&store, &[]);
    mount.bucket("visible");
    assert_eq!(
        readdir_all(mount.path()).unwrap(),
        vec![".", "..", "visible"]
    );
    for path in [".ssefs", ".ssefs/keystore.db"] {
        assert_errno(
            fs::symlink_metadata(mount.join(path)),
            libc::ENOENT,
            &format!("stat {path} through the mount"),
        );
    }
    assert_errno(
        fs::File::open(mount.join(".ssefs/keystore.db")),
        libc::ENOENT,
        "open the keystore through the mount",
    );
    assert!(
        fs::create_dir(mount.join(".ssefs")).is_err(),
        "mkdir .ssefs at the root succeeded"
    );
    assert!(store.store.join(".ssefs/keystore.db").is_file());
    // `..` of the mount root is outside the filesystem; .ssefs is not there either.
    assert_errno(
        fs::symlink_metadata(mount.join("visible/../.ssefs")),
        libc::ENOENT,
        "stat .ssefs via a bucket's ..",
    );
}

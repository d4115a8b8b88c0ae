//! `ssefs rotate-master` against a live mount (needs root and /dev/fuse; set
//! SSEFS_SKIP_MOUNT_TESTS=1 to skip): the next create uses the new version, older objects stay
//! readable, and `--if-older-than-days` rotates only when the current version is old enough.

mod support;

use std::fs;
use support::cli::{s, ssefs_ok};
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::content;
use support::xattr::{KEY_VERSION, SSE, get_xattr, key_version, set_xattr};

#[test]
fn a_live_mount_uses_a_new_master_version_at_the_next_create() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("data");
    set_xattr(&bucket, SSE, "AES256").unwrap();
    let a = bucket.join("a.bin");
    fs::write(&a, content(1, 70_000)).unwrap();
    assert_eq!(key_version(&a), 1);

    let rotate = [
        "rotate-master",
        "--store",
        s(&store.store),
        "--root-key",
        s(&store.root_key),
    ];
    let out = ssefs_ok(&rotate);
    assert!(out.contains("version 2 is now current"), "{out}");

    let b = bucket.join("b.bin");
    fs::write(&b, content(2, 5_000)).unwrap();
    assert_eq!(key_version(&b), 2, "the next create takes the new version");
    assert_eq!(key_version(&a), 1, "an older object keeps its version");
    assert_eq!(fs::read(&a).unwrap(), content(1, 70_000));
    assert_eq!(fs::read(&b).unwrap(), content(2, 5_000));

    // By age: version 2 is seconds old.
    let mut by_age = rotate.to_vec();
    by_age.extend(["--if-older-than-days", "1"]);
    let out = ssefs_ok(&by_age);
    assert!(out.contains("not rotated"), "{out}");
    let c = bucket.join("c.bin");
    fs::write(&c, b"c").unwrap();
    assert_eq!(key_version(&c), 2);
    let last = by_age.len() - 1;
    by_age[last] = "0";
    let out = ssefs_ok(&by_age);
    assert!(out.contains("version 3 is now current"), "{out}");
    let d = bucket.join("d.bin");
    fs::write(&d, b"d").unwrap();
    assert_eq!(key_version(&d), 3);
    assert!(get_xattr(&bucket, KEY_VERSION).unwrap().is_none());

    // Everything still reads after a remount (the versions were durable).
    drop(mount);
    let mount = Mount::new(&store, &[]);
    let bucket = mount.join("data");
    assert_eq!(fs::read(bucket.join("a.bin")).unwrap(), content(1, 70_000));
    assert_eq!(fs::read(bucket.join("b.bin")).unwrap(), content(2, 5_000));
    assert_eq!(fs::read(bucket.join("d.bin")).unwrap(), b"d");
}

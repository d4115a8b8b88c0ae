//! Ordinary file tools through the mount: a generated tree (nested directories, small and large
//! files, a symlink, a hard link, modes, mtimes) goes in and back out with `cp -a`, `tar` and
//! `rsync -aH`, and must come out identical.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::TestRng;
use support::shell::{q, sh};
use support::sys::set_times;
use support::tree::{TreeCompare, assert_trees_equal};

/// Builds the sample tree under `root` (which must not exist).
fn make_tree(root: &Path) {
    let mut rng = TestRng::new(0x7733);
    fs::create_dir_all(root.join("docs/deep/deeper")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("one-byte"), b"x").unwrap();
    fs::write(root.join("docs/readme.txt"), b"hello, encrypted world\n").unwrap();
    fs::write(root.join("docs/deep/block"), rng.bytes(4096)).unwrap();
    fs::write(root.join("docs/deep/deeper/odd"), rng.bytes(12_345)).unwrap();
    fs::write(root.join("docs/deep/deeper/large.bin"), rng.bytes(5 << 20)).unwrap();
    fs::write(root.join("bin/tool.sh"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::write(root.join("secret.key"), rng.bytes(64)).unwrap();
    // A remote store has one object per name and refuses hard links (EPERM), as its tools
    // then report; the remote run of this suite checks everything else.
    if !support::mount::remote_mode() {
        fs::hard_link(root.join("docs/readme.txt"), root.join("readme-link.txt")).unwrap();
    }
    symlink("docs/readme.txt", root.join("readme-symlink")).unwrap();
    symlink("../bin", root.join("docs/bin-symlink")).unwrap();
    symlink("nowhere/at/all", root.join("dangling")).unwrap();

    for (rel, mode) in [
        ("bin/tool.sh", 0o755),
        ("secret.key", 0o600),
        ("docs/readme.txt", 0o640),
        ("docs/deep/block", 0o444),
        ("empty-dir", 0o700),
        ("docs/deep", 0o750),
    ] {
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Distinct mtimes with nanoseconds, deepest entries first so parents keep their own.
    let stamps = [
        ("docs/deep/deeper/large.bin", 1_500_000_000, 123_456_789),
        ("docs/deep/deeper/odd", 1_400_000_001, 1),
        ("docs/deep/deeper", 1_300_000_000, 999_999_999),
        ("docs/deep/block", 1_234_567_890, 500_000_000),
        ("docs/deep", 1_111_111_111, 111_111_111),
        ("docs/readme.txt", 1_000_000_000, 42),
        ("docs", 1_600_000_000, 7),
        ("bin/tool.sh", 1_650_000_000, 0),
        ("bin", 1_660_000_000, 250_000_000),
        ("empty", 86_400, 0),
        ("one-byte", 1_700_000_000, 800_000_000),
        ("secret.key", 1_710_000_000, 1_000),
        ("empty-dir", 1_720_000_000, 3),
    ];
    for (rel, secs, nsec) in stamps {
        set_times(&root.join(rel), (secs, nsec), (secs, nsec)).unwrap();
    }
}

/// A store, the sample tree next to it and an empty directory to copy back out into.
fn fixture() -> Option<(TestStore, PathBuf, PathBuf)> {
    if !mount_tests_enabled() {
        return None;
    }
    let store = TestStore::new();
    let source = store.scratch_dir("source").join("tree");
    make_tree(&source);
    let out = store.scratch_dir("out");
    Some((store, source, out))
}

fn diff_r(a: &Path, b: &Path) {
    sh(&format!("diff -r --no-dereference {} {}", q(a), q(b)));
}

#[test]
fn cp_a_round_trips_a_tree() {
    let Some((store, source, out)) = fixture() else {
        return;
    };
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("cp-bucket");
    sh(&format!("cp -a {} {}", q(&source), q(&bucket.join("tree"))));
    assert_trees_equal(&source, &bucket.join("tree"), TreeCompare::ALL);
    diff_r(&source, &bucket.join("tree"));

    mount.remount();
    let inside = mount.join("cp-bucket/tree");
    assert_trees_equal(&source, &inside, TreeCompare::ALL);
    sh(&format!("cp -a {} {}", q(&inside), q(&out.join("tree"))));
    assert_trees_equal(&source, &out.join("tree"), TreeCompare::ALL);
    diff_r(&source, &out.join("tree"));
}

#[test]
fn tar_round_trips_a_tree() {
    let Some((store, source, out)) = fixture() else {
        return;
    };
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("tar-bucket");
    let inside = bucket.join("tree");
    fs::create_dir(&inside).unwrap();
    // POSIX format keeps nanosecond mtimes.
    sh(&format!(
        "tar -C {} --format=posix -cf - . | tar -C {} -xpf -",
        q(&source),
        q(&inside)
    ));
    assert_trees_equal(&source, &inside, TreeCompare::ALL);

    mount.remount();
    let inside = mount.join("tar-bucket/tree");
    let back = out.join("tree");
    fs::create_dir(&back).unwrap();
    sh(&format!(
        "tar -C {} --format=posix -cf - . | tar -C {} -xpf -",
        q(&inside),
        q(&back)
    ));
    assert_trees_equal(&source, &back, TreeCompare::ALL);
    diff_r(&source, &back);
}

#[test]
fn rsync_round_trips_a_tree_and_then_has_nothing_to_do() {
    let Some((store, source, out)) = fixture() else {
        return;
    };
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("rsync-bucket");
    let inside = bucket.join("tree");
    sh(&format!("rsync -aH {}/ {}/", q(&source), q(&inside)));
    assert_trees_equal(&source, &inside, TreeCompare::ALL);

    mount.remount();
    let inside = mount.join("rsync-bucket/tree");
    // Sizes and mtimes survived exactly, so a second run finds nothing to transfer.
    let changes = sh(&format!("rsync -aHi {}/ {}/", q(&source), q(&inside)));
    assert!(
        changes.trim().is_empty(),
        "second rsync into the mount transferred:\n{changes}"
    );
    let back = out.join("tree");
    sh(&format!("rsync -aH {}/ {}/", q(&inside), q(&back)));
    assert_trees_equal(&source, &back, TreeCompare::ALL);
    diff_r(&source, &back);
    // Also without -H, the plain `rsync -a` users run: same bytes, links become copies.
    let plain = out.join("plain-a");
    sh(&format!("rsync -a {}/ {}/", q(&inside), q(&plain)));
    assert_trees_equal(
        &source,
        &plain,
        TreeCompare {
            hard_links: false,
            ..TreeCompare::ALL
        },
    );
}

#[test]
fn rsync_keeps_the_mtime_of_empty_files_every_time() {
    if !mount_tests_enabled() {
        return;
    }
    // An empty file is created, closed and given its times in quick succession; repeat so a
    // race between those steps shows up every run, not now and then.
    let store = TestStore::new();
    let source = store.scratch_dir("source");
    fs::write(source.join("empty"), b"").unwrap();
    set_times(&source.join("empty"), (86_400, 0), (86_400, 0)).unwrap();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("empty-files");
    let mut lost = Vec::new();
    for i in 0..60 {
        let target = bucket.join(format!("copy-{i}"));
        sh(&format!(
            "rsync -a {} {}",
            q(&source.join("empty")),
            q(&target)
        ));
        let m = fs::symlink_metadata(&target).unwrap();
        if (m.mtime(), m.mtime_nsec()) != (86_400, 0) {
            lost.push(format!("copy-{i}: {}.{:09}", m.mtime(), m.mtime_nsec()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of 60 rsync copies of an empty file lost their mtime 86400:\n  {}",
        lost.len(),
        lost.join("\n  ")
    );
}

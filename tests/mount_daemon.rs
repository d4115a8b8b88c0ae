//! The `ssefs mount` daemon's life cycle: one mount per store, recovery after `kill -9`, clean
//! exits on `fusermount3 -u` and SIGTERM, `ro`, and refusals (wrong key, missing store, unknown
//! option) that exit non-zero with one line on stderr and mount nothing.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use support::mount::{
    DaemonFailure, Mount, MountArgs, TestStore, init_store, is_mounted, mount_entry,
    mount_tests_enabled, unmount_dead,
};
use support::shell::describe;
use support::sys::assert_errno;

/// Asserts a refused mount: non-zero exit, exactly one line on stderr, nothing mounted.
fn assert_refused(result: Result<Mount, DaemonFailure>, mountpoint: &Path, what: &str) -> String {
    let failure = match result {
        Ok(mount) => {
            drop(mount);
            panic!("{what}: ssefs mount succeeded but should have refused");
        }
        Err(failure) => failure,
    };
    assert_eq!(
        failure.status.code().map(|c| c != 0),
        Some(true),
        "{what}: expected a non-zero exit code, got {}",
        describe(&failure.status)
    );
    let lines: Vec<&str> = failure
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got:\n{}",
        failure.stderr
    );
    assert!(!is_mounted(mountpoint), "{what}: something is mounted");
    lines[0].to_string()
}

#[test]
fn the_mount_is_listed_as_fuse_ssefs() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let entry = mount_entry(mount.path()).expect("mount listed in mountinfo");
    assert_eq!(
        entry.fstype, "fuse.ssefs",
        "filesystem type in /proc/self/mountinfo ({entry:?})"
    );
}

#[test]
fn a_second_mount_of_the_same_store_is_refused() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let first = Mount::new(&store, &[]);
    let bucket = first.bucket("busy");
    let second_mnt = store.scratch_dir("second-mnt");
    let args = MountArgs {
        mountpoint: second_mnt.clone(),
        ..MountArgs::of(&store, &[])
    };
    let message = assert_refused(Mount::try_with_args(args), &second_mnt, "second mount");
    assert!(!message.is_empty());
    // The first mount is unharmed.
    fs::write(bucket.join("still-works"), b"yes").unwrap();
    assert_eq!(fs::read(bucket.join("still-works")).unwrap(), b"yes");
    let status = first.unmount();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn kill_9_leaves_fsynced_data_and_no_stale_lock() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("crash");
    let durable: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    {
        let mut f = fs::File::create(bucket.join("durable")).unwrap();
        f.write_all(&durable).unwrap();
        f.sync_all().unwrap();
    }
    {
        // Overwritten in place and fsynced: the new bytes must be what survives.
        let f = fs::OpenOptions::new()
            .write(true)
            .open(bucket.join("durable"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"OVERWRITTEN", 100_000).unwrap();
        f.sync_all().unwrap();
    }
    // Written without fsync: after the crash it may hold anything it ever held, but it must
    // not fail authentication.
    fs::write(bucket.join("unsynced"), vec![0x55u8; 50_000]).unwrap();

    mount.signal(libc::SIGKILL);
    let status = mount.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "daemon {status}");
    unmount_dead(&store.mountpoint);
    drop(mount);

    let mount = Mount::new(&store, &[]);
    let mut expected = durable.clone();
    expected[100_000..100_011].copy_from_slice(b"OVERWRITTEN");
    let got = fs::read(mount.join("crash/durable")).expect("read fsynced file after kill -9");
    assert_eq!(
        got.len(),
        expected.len(),
        "size of fsynced file after kill -9"
    );
    assert!(got == expected, "fsynced file changed after kill -9");
    match fs::read(mount.join("crash/unsynced")) {
        Ok(bytes) => assert!(
            bytes.iter().all(|&b| b == 0x55),
            "unsynced file holds bytes it never held"
        ),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::NotFound,
            "unsynced file after kill -9: {e}"
        ),
    }
}

#[test]
fn fusermount_u_ends_the_daemon_with_exit_0() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("bye");
    fs::write(bucket.join("f"), b"persist").unwrap();
    let status = mount.unmount();
    assert_eq!(status.code(), Some(0), "daemon {}", describe(&status));
    let mount = Mount::new(&store, &[]);
    assert_eq!(fs::read(mount.join("bye/f")).unwrap(), b"persist");
}

/// The daemon's CPU time so far, in clock ticks (user and system, all threads).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The names of the daemon's threads.
fn thread_names(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// A mount that made files and then sits idle uses no CPU: the thread that makes files ahead
/// for creates (`store/pool.rs`) refills and then sleeps, as every other thread does. A mount
/// of a remote store polls its object store by design (`REMOTE.md`), so this is a local
/// store's test.
#[test]
fn an_idle_mount_uses_no_cpu_after_creating_files() {
    if !mount_tests_enabled() || support::mount::remote_mode() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("idle");
    for i in 0..200 {
        fs::write(bucket.join(format!("f{i}")), b"x").unwrap();
    }
    for i in 0..200 {
        assert_eq!(fs::read(bucket.join(format!("f{i}"))).unwrap(), b"x");
    }
    assert!(
        thread_names(mount.pid())
            .iter()
            .any(|n| n == "ssefs-newfiles"),
        "no thread makes files ahead: {:?}",
        thread_names(mount.pid())
    );
    // Let the pool refill and every request finish.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = cpu_ticks(mount.pid());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = cpu_ticks(mount.pid());
    assert_eq!(
        after,
        before,
        "the idle daemon used {} ticks in 3 s",
        after - before
    );
    assert_eq!(mount.unmount().code(), Some(0));
}

#[test]
fn sigterm_unmounts_and_exits_0_keeping_data() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("term");
    let data = vec![0xA5u8; 123_457];
    fs::write(bucket.join("f"), &data).unwrap();
    mount.signal(libc::SIGTERM);
    let status = mount.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "daemon after SIGTERM: {}",
        describe(&status)
    );
    assert!(!mount.is_mounted(), "still mounted after SIGTERM");
    drop(mount);
    let mount = Mount::new(&store, &[]);
    assert_eq!(fs::read(mount.join("term/f")).unwrap(), data);
}

#[test]
fn wrong_root_key_is_refused() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    // A well-formed key that belongs to another store.
    let other = store.scratch_dir("other");
    init_store(&other.join("store"), &other.join("other.key"));
    let args = MountArgs {
        root_key: other.join("other.key"),
        ..MountArgs::of(&store, &[])
    };
    assert_refused(
        Mount::try_with_args(args),
        &store.mountpoint,
        "wrong root key",
    );
    let args = MountArgs {
        root_key: other.join("missing.key"),
        ..MountArgs::of(&store, &[])
    };
    assert_refused(
        Mount::try_with_args(args),
        &store.mountpoint,
        "missing root key",
    );
    assert!(
        !other.join("missing.key").exists(),
        "mount created a root key file"
    );
    // The right key still works afterwards.
    let mount = Mount::new(&store, &[]);
    mount.bucket("fine");
}

#[test]
fn missing_store_and_bad_mountpoint_are_refused() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let args = MountArgs {
        store: store.base().join("no-such-store"),
        ..MountArgs::of(&store, &[])
    };
    assert_refused(
        Mount::try_with_args(args),
        &store.mountpoint,
        "missing store",
    );
    assert!(!store.base().join("no-such-store").exists());
    let args = MountArgs {
        store: store.mountpoint.clone(),
        ..MountArgs::of(&store, &[])
    };
    assert_refused(
        Mount::try_with_args(args),
        &store.mountpoint,
        "an empty directory that is not a store",
    );
    let nowhere = store.base().join("no-such-mountpoint");
    let args = MountArgs {
        mountpoint: nowhere.clone(),
        ..MountArgs::of(&store, &[])
    };
    assert_refused(Mount::try_with_args(args), &nowhere, "missing mountpoint");
}

#[test]
fn unknown_or_malformed_options_are_refused() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    for options in [
        &["no_such_option"][..],
        &["default_sse=DES"],
        &["ro", "bogus=1"],
    ] {
        let message = assert_refused(
            Mount::try_with_args(MountArgs::of(&store, options)),
            &store.mountpoint,
            &format!("-o {}", options.join(",")),
        );
        assert!(!message.is_empty());
    }
    // Every documented option is accepted.
    for options in [
        &["allow_other"][..],
        &["default_permissions"],
        &["ro"],
        &["default_sse=none"],
        &["default_sse=AES256"],
        &["default_sse=KMS"],
    ] {
        let mount = Mount::new(&store, options);
        let status = mount.unmount();
        assert_eq!(status.code(), Some(0), "-o {}", options.join(","));
    }
}

#[test]
fn read_only_mount_reads_but_refuses_writes() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    fs::create_dir(mount.join("data")).unwrap();
    fs::write(mount.join("data/f"), b"frozen").unwrap();
    assert_eq!(mount.unmount().code(), Some(0));

    let mount = Mount::new(&store, &["ro"]);
    assert_eq!(fs::read(mount.join("data/f")).unwrap(), b"frozen");
    assert_errno(
        fs::write(mount.join("data/g"), b"x"),
        libc::EROFS,
        "create on a ro mount",
    );
    assert_errno(
        fs::OpenOptions::new()
            .write(true)
            .open(mount.join("data/f")),
        libc::EROFS,
        "open for writing on a ro mount",
    );
    assert_errno(
        fs::create_dir(mount.join("newbucket")),
        libc::EROFS,
        "mkdir on a ro mount",
    );
    assert_errno(
        fs::remove_file(mount.join("data/f")),
        libc::EROFS,
        "unlink on a ro mount",
    );
    assert_eq!(fs::read(mount.join("data/f")).unwrap(), b"frozen");
}

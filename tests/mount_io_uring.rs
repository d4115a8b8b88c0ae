//! FUSE over io_uring (needs root, `/dev/fuse`, and a kernel with the `fuse` module parameter
//! `enable_uring`, Linux 6.14 and later): with the parameter on, the mount's requests are
//! served by the per-CPU ring threads, and everything a user does works as over `/dev/fuse`:
//! files of one byte to several requests, names, attributes, large listings, renames, links,
//! truncation, concurrent writers on every CPU, unmount. With the parameter off, or with
//! `-o noio_uring`, the mount serves through `/dev/fuse` alone.
//!
//! The parameter is global to the machine, so these tests hold a lock and put the parameter
//! back as they found it (also when a test fails).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use support::mount::{Mount, TestStore, is_dead_daemon_error, mount_tests_enabled, unmount_dead};
use support::rng::TestRng;

const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

static SERIAL: Mutex<()> = Mutex::new(());

/// Sets `enable_uring` for the life of the guard, then restores what it was.
struct RingSetting {
    before: String,
    _serial: MutexGuard<'static, ()>,
}

impl RingSetting {
    /// `None` (with a message) when mount tests cannot run here or this kernel has no FUSE
    /// over io_uring.
    fn set(on: bool) -> Option<RingSetting> {
        if !mount_tests_enabled() {
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(before) = fs::read_to_string(PARAMETER) else {
            eprintln!(
                "SKIPPED: {PARAMETER} is missing: this kernel has no FUSE over io_uring \
                 (CONFIG_FUSE_IO_URING, Linux 6.14+)"
            );
            return None;
        };
        fs::write(PARAMETER, if on { "1" } else { "0" }).expect("set enable_uring");
        Some(RingSetting {
            before: before.trim().to_string(),
            _serial: serial,
        })
    }
}

impl Drop for RingSetting {
    fn drop(&mut self) {
        let _ = fs::write(PARAMETER, &self.before);
    }
}

/// The daemon's threads: name and voluntary context switches (one per request a ring thread
/// waited for, at least).
fn threads(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("list daemon threads") {
        let task = task.expect("thread entry").path();
        let Ok(name) = fs::read_to_string(task.join("comm")) else {
            continue;
        };
        let Ok(status) = fs::read_to_string(task.join("status")) else {
            continue;
        };
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push((name.trim().to_string(), switches));
    }
    out
}

/// Context switches of the ring threads, and of the `/dev/fuse` threads.
fn switches(pid: u32) -> (u64, u64) {
    let mut ring = 0;
    let mut dev = 0;
    for (name, n) in threads(pid) {
        if name.starts_with("fuser-ring-") {
            ring += n;
        } else if name.starts_with("fuser-") {
            dev += n;
        }
    }
    (ring, dev)
}

fn ring_thread_names(pid: u32) -> BTreeSet<String> {
    threads(pid)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.starts_with("fuser-ring-"))
        .collect()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything a user does, checked; `bucket` is a fresh bucket on the mount.
fn workload(bucket: &Path, scratch: &Path) {
    let mut rng = TestRng::new(0x5e_f5_01);
    // Sizes from empty to several maximal (1 MiB) requests, read back whole and in parts.
    for (i, size) in [0usize, 1, 4095, 4096, 65_537, 1 << 20, (3 << 20) + 17]
        .into_iter()
        .enumerate()
    {
        let data = rng.bytes(size);
        let path = bucket.join(format!("sized-{i}"));
        fs::write(&path, &data).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data, "{size} bytes");
        assert_eq!(fs::metadata(&path).unwrap().len(), size as u64);
    }
    // A copy with cp and a comparison with cmp, as a user would.
    let source = scratch.join("source.bin");
    fs::write(&source, rng.bytes(5 << 20)).unwrap();
    run(Command::new("cp")
        .arg(&source)
        .arg(bucket.join("copied.bin")));
    run(Command::new("cmp")
        .arg(&source)
        .arg(bucket.join("copied.bin")));

    // Attributes: the encryption setting and a user attribute, set and read with the tools.
    let note = bucket.join("note.txt");
    fs::write(&note, b"meet me at the old mill").unwrap();
    run(Command::new("setfattr")
        .args(["-n", "user.colour", "-v", "blue"])
        .arg(&note));
    let shown = run(Command::new("getfattr").args(["-d", "-m", "-"]).arg(&note));
    assert!(shown.contains("user.colour=\"blue\""), "{shown}");
    assert!(
        shown.contains("user.oss.server-side-encryption=\"AES256\""),
        "{shown}"
    );
    run(Command::new("setfattr")
        .args(["-n", "user.oss.server-side-encryption", "-v", "KMS"])
        .arg(&note));
    let shown = run(Command::new("getfattr").args(["-d", "-m", "-"]).arg(&note));
    assert!(
        shown.contains("user.oss.server-side-encryption=\"KMS\""),
        "{shown}"
    );
    assert!(
        shown.contains("user.oss.server-side-encryption-key-id="),
        "{shown}"
    );
    assert_eq!(fs::read(&note).unwrap(), b"meet me at the old mill");

    // A directory of 2,000 entries: listings take many large replies.
    let many = bucket.join("many");
    fs::create_dir(&many).unwrap();
    let mut names = BTreeSet::new();
    for i in 0..2000 {
        let name = format!("entry-with-a-longish-name-{i:05}");
        fs::write(many.join(&name), i.to_string()).unwrap();
        names.insert(name);
    }
    let listed: BTreeSet<String> = fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, names);
    let ls = run(Command::new("ls").arg("-l").arg(&many));
    assert_eq!(ls.lines().count(), 2001, "total line and 2,000 entries");
    assert_eq!(
        fs::read_to_string(many.join("entry-with-a-longish-name-01234")).unwrap(),
        "1234"
    );

    // Renames, links, truncation, removal.
    fs::rename(&many, bucket.join("renamed")).unwrap();
    assert!(!many.exists());
    std::os::unix::fs::symlink("note.txt", bucket.join("link")).unwrap();
    assert_eq!(
        fs::read_link(bucket.join("link")).unwrap(),
        PathBuf::from("note.txt")
    );
    let big = bucket.join("sized-6");
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(10_000).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&big).unwrap().len(), 10_000);
    fs::remove_dir_all(bucket.join("renamed")).unwrap();
    let missing = fs::metadata(bucket.join("renamed/entry-with-a-longish-name-00001"));
    assert_eq!(
        missing.unwrap_err().raw_os_error(),
        Some(libc::ENOENT),
        "a removed file"
    );

    // Writers on every CPU at once (taskset), so every queue and several threads per queue
    // serve requests together.
    let mut children = Vec::new();
    for cpu in 0..cpus() {
        for writer in 0..3 {
            let dir = bucket.join(format!("cpu{cpu}-w{writer}"));
            let script = format!(
                "mkdir -p '{d}' && for i in $(seq 1 150); do echo \"$i {cpu} {writer}\" > '{d}'/f$i; done",
                d = dir.display()
            );
            children.push((
                dir,
                cpu,
                writer,
                Command::new("taskset")
                    .args(["-c", &cpu.to_string(), "sh", "-c", &script])
                    .spawn()
                    .expect("start a writer"),
            ));
        }
    }
    for (dir, cpu, writer, mut child) in children {
        assert!(
            child.wait().unwrap().success(),
            "writer in {}",
            dir.display()
        );
        for i in [1, 75, 150] {
            assert_eq!(
                fs::read_to_string(dir.join(format!("f{i}"))).unwrap(),
                format!("{i} {cpu} {writer}\n")
            );
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 150);
    }
}

#[test]
fn requests_go_through_the_rings_and_everything_works() {
    let Some(_on) = RingSetting::set(true) else {
        return;
    };
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let pid = mount.pid();
    let bucket = mount.bucket("rings");
    // The daemon logs it once every queue has registered, which may be just after the first
    // request was served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mount.log_text().contains("FUSE over io_uring:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = mount.log_text();
    assert!(
        log.contains("FUSE over io_uring:"),
        "the daemon says it serves through io_uring:\n{log}"
    );
    // Every CPU queue has its threads, named by CPU.
    let names = ring_thread_names(pid);
    for cpu in 0..cpus() {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("fuser-ring-{cpu}-"))),
            "no ring thread for CPU {cpu}: {names:?}"
        );
    }
    let (ring_before, dev_before) = switches(pid);
    let scratch = store.scratch_dir("scratch");
    workload(&bucket, &scratch);
    let (ring_after, dev_after) = switches(pid);
    // Thousands of requests were served; the ring threads waited for (nearly) each of them,
    // the /dev/fuse threads only for what the kernel still sends there (FORGET).
    let ring = ring_after - ring_before;
    let dev = dev_after - dev_before;
    assert!(
        ring > 10_000,
        "ring threads woke {ring} times for the workload"
    );
    assert!(
        dev < ring / 4,
        "the /dev/fuse threads woke {dev} times against the rings' {ring}"
    );
    let status = mount.unmount();
    assert!(status.success(), "daemon exit: {status:?}");
}

/// Mounts `store` with `options` and checks that it serves, through `/dev/fuse` alone.
fn assert_served_through_dev_fuse(store: &TestStore, options: &[&str]) {
    let mount = Mount::new(store, options);
    let bucket = mount.bucket("plain-device");
    for i in 0..50 {
        fs::write(bucket.join(format!("f{i}")), i.to_string()).unwrap();
    }
    assert_eq!(fs::read_to_string(bucket.join("f42")).unwrap(), "42");
    assert!(ring_thread_names(mount.pid()).is_empty());
    assert!(
        !mount.log_text().contains("io_uring"),
        "{}",
        mount.log_text()
    );
    let status = mount.unmount();
    assert!(status.success(), "daemon exit: {status:?}");
}

#[test]
fn a_mount_with_noio_uring_stays_on_dev_fuse() {
    let Some(_on) = RingSetting::set(true) else {
        return;
    };
    assert_served_through_dev_fuse(&TestStore::new(), &["noio_uring"]);
}

#[test]
fn without_the_kernels_consent_the_mount_uses_dev_fuse() {
    let Some(_off) = RingSetting::set(false) else {
        return;
    };
    assert_served_through_dev_fuse(&TestStore::new(), &[]);
}

#[test]
fn a_daemon_killed_while_serving_through_rings_leaves_a_mount_that_remounts() {
    let Some(_on) = RingSetting::set(true) else {
        return;
    };
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("killed");
    let data = TestRng::new(7).bytes(3 << 20);
    fs::write(bucket.join("before"), &data).unwrap();
    fs::File::open(bucket.join("before"))
        .unwrap()
        .sync_all()
        .unwrap();
    assert!(!ring_thread_names(mount.pid()).is_empty());
    mount.signal(libc::SIGKILL);
    let status = mount.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "daemon {status}");
    // The kernel ends the connection: a request fails instead of hanging.
    let err = fs::read(bucket.join("before")).unwrap_err();
    assert!(
        is_dead_daemon_error(&err),
        "reading through a dead mount: {err}"
    );
    unmount_dead(&store.mountpoint);
    drop(mount);
    let mount = Mount::new(&store, &[]);
    assert!(fs::read(mount.join("killed/before")).unwrap() == data);
    assert!(!ring_thread_names(mount.pid()).is_empty());
    let status = mount.unmount();
    assert!(status.success(), "daemon exit: {status:?}");
}

//! Smoke test through a real mount (needs root and /dev/fuse): init a store, mount it, write
//! and read a file with std::fs, and end the daemon by unmount and by SIGTERM. The mount and
//! the daemon are always cleaned up by `Mounted`'s Drop, even when an assertion fails.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::cli::SSEFS;
use support::mount::{is_mounted, wait_timeout};

/// A store, its root key and a running mount; Drop unmounts and reaps the daemon.
struct Mounted {
    dir: tempfile::TempDir,
    mountpoint: PathBuf,
    daemon: Option<Child>,
}

impl Mounted {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }

    fn start() -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let mut mounted = Mounted {
            mountpoint: mountpoint.canonicalize().unwrap(),
            dir,
            daemon: None,
        };
        let init = Command::new(SSEFS)
            .arg("init")
            .arg(mounted.store())
            .arg("--root-key")
            .arg(mounted.key())
            .output()
            .unwrap();
        assert!(init.status.success(), "init: {init:?}");
        let daemon = Command::new(SSEFS)
            .arg("mount")
            .arg(mounted.store())
            .arg(&mounted.mountpoint)
            .arg("--root-key")
            .arg(mounted.key())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        mounted.daemon = Some(daemon);
        let start = Instant::now();
        while !is_mounted(&mounted.mountpoint) {
            let daemon = mounted.daemon.as_mut().unwrap();
            if let Some(status) = daemon.try_wait().unwrap() {
                panic!("the daemon exited before mounting: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(20), "mount timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
        mounted
    }

    /// Unmounts with fusermount3 and returns the daemon's exit status.
    fn unmount(&mut self) -> ExitStatus {
        let status = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mountpoint)
            .status()
            .unwrap();
        assert!(status.success(), "fusermount3 -u failed");
        let mut daemon = self.daemon.take().unwrap();
        wait_timeout(&mut daemon, Duration::from_secs(20)).expect("daemon did not exit")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status();
            if wait_timeout(&mut daemon, Duration::from_secs(5)).is_none() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

#[test]
fn write_read_and_unmount() {
    let mut m = Mounted::start();
    let bucket = m.mountpoint.join("smoke-bucket");
    std::fs::create_dir(&bucket).unwrap();
    let secret = b"the quick brown fox jumps over the lazy dog\n".repeat(2000);
    std::fs::write(bucket.join("fox.txt"), &secret).unwrap();
    assert_eq!(std::fs::read(bucket.join("fox.txt")).unwrap(), secret);
    assert_eq!(
        std::fs::metadata(bucket.join("fox.txt")).unwrap().len(),
        secret.len() as u64
    );
    assert!(std::fs::write(m.mountpoint.join("at-root"), b"x").is_err());
    let backing = std::fs::read(m.store().join("smoke-bucket/fox.txt")).unwrap();
    assert!(
        !backing.windows(19).any(|w| w == b"the quick brown fox"),
        "plaintext reached the store"
    );
    let status = m.unmount();
    assert!(status.success(), "daemon exit: {status}");
    assert!(!is_mounted(&m.mountpoint));
}

#[test]
fn sigterm_unmounts_and_a_second_daemon_is_refused() {
    let mut m = Mounted::start();
    let other = tempfile::tempdir().unwrap();
    let second = Command::new(SSEFS)
        .arg("mount")
        .arg(m.store())
        .arg(other.path())
        .arg("--root-key")
        .arg(m.key())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already mounted by another ssefs daemon"),
        "{stderr}"
    );
    assert!(!is_mounted(&other.path().canonicalize().unwrap()));

    let mut daemon = m.daemon.take().unwrap();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut daemon, Duration::from_secs(20));
    if status.is_none() {
        m.daemon = Some(daemon);
        panic!("daemon did not exit on SIGTERM");
    }
    assert!(status.unwrap().success());
    assert!(!is_mounted(&m.mountpoint));
}

//! Security hygiene: private modes on the store, the keystore and the root key (and refusal of
//! loose ones), `default_permissions` and `allow_other` as another user sees them, and a daemon
//! that cannot be dumped.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::mount::{
    DaemonFailure, Mount, MountArgs, TestStore, is_ssefs_mount, mount_tests_enabled, wait_timeout,
};
use support::shell::{Reaped, as_nobody, sh_output};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn refused(store: &TestStore, what: &str) -> String {
    match Mount::try_with_args(MountArgs::of(store, &[])) {
        Ok(mount) => {
            drop(mount);
            panic!("{what}: mounted");
        }
        Err(DaemonFailure { status, stderr }) => {
            assert!(status.code().is_some_and(|c| c != 0), "{what}: {status}");
            assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
            stderr
        }
    }
}

#[test]
fn secrets_are_private_and_loose_modes_are_refused() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let meta = store.store.join(".ssefs");
    let keystore = meta.join("keystore.db");
    assert_eq!(mode(&store.store), 0o700, "store directory");
    assert_eq!(mode(&meta), 0o700, ".ssefs");
    assert_eq!(mode(&keystore), 0o600, "keystore");
    assert_eq!(mode(&store.root_key), 0o600, "root key");
    {
        let mount = Mount::new(&store, &[]);
        fs::write(mount.bucket("modes").join("f"), b"x").unwrap();
        // While mounted, SQLite's companion files are private too.
        for entry in fs::read_dir(&meta).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert_eq!(
                    mode(&path) & 0o077,
                    0,
                    "{} is {:o}",
                    path.display(),
                    mode(&path)
                );
            }
        }
        assert_eq!(mode(&meta.join("tmp")), 0o700);
        assert!(mount.unmount().success());
    }
    chmod(&keystore, 0o640);
    let line = refused(&store, "keystore 0640");
    assert!(line.contains("chmod 600"), "{line}");
    chmod(&keystore, 0o600);
    chmod(&store.root_key, 0o644);
    let line = refused(&store, "root key 0644");
    assert!(line.contains("chmod 600"), "{line}");
    chmod(&store.root_key, 0o600);
    Mount::new(&store, &[]);
}

#[test]
fn other_users_see_only_what_permissions_and_allow_other_allow() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    {
        // Without allow_other, another user cannot even look at the mount.
        let mount = Mount::new(&store, &[]);
        chmod(mount.path(), 0o755);
        fs::create_dir(mount.join("shared")).unwrap();
        let out = as_nobody(&format!("ls {}", support::shell::q(mount.path())));
        assert!(
            !out.status.success(),
            "nobody listed a mount without allow_other"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(mount.unmount().success());
    }
    let mount = Mount::new(&store, &["allow_other"]);
    let bucket = mount.join("shared");
    chmod(&bucket, 0o755);
    fs::write(bucket.join("secret"), b"root only").unwrap();
    chmod(&bucket.join("secret"), 0o600);
    fs::write(bucket.join("public"), b"for everyone").unwrap();
    chmod(&bucket.join("public"), 0o644);
    let q = |name: &str| support::shell::q(&bucket.join(name));
    let out = as_nobody(&format!("cat {}", q("public")));
    assert_eq!(
        out.stdout,
        b"for everyone",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (script, what) in [
        (format!("cat {}", q("secret")), "read a 0600 file of root"),
        (
            format!("echo x >> {}", q("public")),
            "write a 0644 file of root",
        ),
        (
            format!("echo x > {}", q("new")),
            "create in a 0755 directory of root",
        ),
        (
            format!("rm -f {}", q("public")),
            "remove from a 0755 directory of root",
        ),
    ] {
        let out = as_nobody(&script);
        assert!(!out.status.success(), "nobody could {what}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(fs::read(bucket.join("public")).unwrap(), b"for everyone");
    assert_eq!(fs::read(bucket.join("secret")).unwrap(), b"root only");
}

/// A process whose group is 65534 shows its `/proc/PID` files as owned by that group while it
/// is dumpable, and by root once it is not (the kernel hides a non-dumpable process's files):
/// a check of `PR_SET_DUMPABLE` that works from outside, for a daemon running as root.
fn proc_group(pid: u32) -> u32 {
    fs::metadata(format!("/proc/{pid}/status")).unwrap().gid()
}

#[test]
fn the_daemon_is_not_dumpable() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let control = Command::new("setpriv")
        .args(["--regid", "65534", "--clear-groups", "sleep", "30"])
        .spawn()
        .unwrap();
    let control = Reaped(control);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_group(control.0.id()) != 65534 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        proc_group(control.0.id()),
        65534,
        "the control process shows its group"
    );

    let daemon = Command::new("setpriv")
        .args(["--regid", "65534", "--clear-groups"])
        .arg(support::cli::SSEFS)
        .arg("mount")
        .arg(&store.store)
        .arg(&store.mountpoint)
        .arg("--root-key")
        .arg(&store.root_key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Reaped(daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_ssefs_mount(&store.mountpoint) {
        assert!(Instant::now() < deadline, "the daemon did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = proc_group(daemon.0.id());
    let out = sh_output(&format!(
        "fusermount3 -u {}",
        support::shell::q(&store.mountpoint)
    ));
    assert!(out.status.success());
    let status = wait_timeout(&mut daemon.0, Duration::from_secs(10)).expect("daemon exits");
    assert!(status.success(), "daemon: {status}");
    assert_eq!(
        group, 0,
        "/proc/PID of the daemon shows group {group}: it is dumpable"
    );
}

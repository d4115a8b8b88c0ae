//! Mounting the standard ways, through a real kernel mount (needs root and /dev/fuse; set
//! SSEFS_SKIP_MOUNT_TESTS=1 to skip): `mount -t fuse.ssefs`, an fstab line (`mount -T`),
//! `mount.fuse3` with ssefs on PATH, helper failures, and a keystore backup taken while the
//! mount is in use, restored after the keystore is lost. Drop always unmounts and waits for
//! the daemons, even when an assertion fails.

mod support;

use ssefs::store::lock_probe::lock_holders;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use support::cli::SSEFS;
use support::mount::{is_mounted, mount_tests_enabled};

const HELPER: &str = "/sbin/mount.fuse.ssefs";

/// `/sbin/mount.fuse.ssefs` pointing at the binary under test, for as long as the guard lives;
/// removed afterwards only if this test made it. One test at a time uses it.
struct HelperLink {
    made: bool,
    _serial: MutexGuard<'static, ()>,
}

static HELPER_USERS: Mutex<()> = Mutex::new(());

impl HelperLink {
    fn install() -> HelperLink {
        let serial = HELPER_USERS.lock().unwrap_or_else(|e| e.into_inner());
        match std::fs::read_link(HELPER) {
            Ok(target) if target == Path::new(SSEFS) => HelperLink {
                made: false,
                _serial: serial,
            },
            Ok(other) => panic!(
                "{HELPER} points at {} (an installed ssefs?): remove it to test this build",
                other.display()
            ),
            Err(_) => {
                assert!(
                    !Path::new(HELPER).exists(),
                    "{HELPER} exists and is not a link: remove it to test this build"
                );
                std::os::unix::fs::symlink(SSEFS, HELPER).unwrap();
                HelperLink {
                    made: true,
                    _serial: serial,
                }
            }
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if self.made {
            let _ = std::fs::remove_file(HELPER);
        }
    }
}

/// A store with its root key and a mountpoint; Drop unmounts and waits for the daemon.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(f.mnt()).unwrap();
        let out = run(Command::new(SSEFS)
            .arg("init")
            .arg(f.store())
            .arg("--root-key")
            .arg(f.key()));
        assert!(out.status.success(), "init: {out:?}");
        f
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    fn root_key_option(&self) -> String {
        format!("root_key={}", self.key().display())
    }

    fn mount_t(&self, extra_options: &str) -> Output {
        run(Command::new("mount")
            .args(["-t", "fuse.ssefs"])
            .arg(self.store())
            .arg(self.mnt())
            .arg("-o")
            .arg(format!("{}{extra_options}", self.root_key_option())))
    }

    fn umount(&self) {
        let out = run(Command::new("umount").arg(self.mnt()));
        assert!(out.status.success(), "umount: {out:?}");
        self.wait_for_daemon_exit();
    }

    /// The daemon holds the store lock until it exits.
    fn wait_for_daemon_exit(&self) {
        let start = Instant::now();
        while !lock_holders(&self.store()).unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the daemon did not exit after umount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if is_mounted(&self.mnt()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mnt())
                .stderr(Stdio::null())
                .status();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            match lock_holders(&self.store()) {
                Ok(pids) if !pids.is_empty() => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        // Still there: these are daemons this test started on its own temporary store.
        for pid in lock_holders(&self.store()).unwrap_or_default() {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: signals one process by id.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn mount_t_fuse_ssefs_works_until_umount() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    let out = f.mount_t(",nofail,_netdev,x-systemd.automount");
    assert!(out.status.success(), "mount: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "a good mount is quiet: {}",
        text(&out.stderr)
    );
    // The helper returned only once the mount answered: no waiting here.
    assert!(is_mounted(&f.mnt()));
    std::fs::create_dir(f.mnt().join("photos")).unwrap();
    std::fs::write(f.mnt().join("photos/a.txt"), b"through mount(8)").unwrap();
    assert_eq!(
        std::fs::read(f.mnt().join("photos/a.txt")).unwrap(),
        b"through mount(8)"
    );

    let status = run(Command::new(SSEFS)
        .args(["status", "--json", "--store"])
        .arg(f.store()));
    let json = text(&status.stdout);
    assert!(
        json.contains(&format!(r#""mount_points":["{}"]"#, f.mnt().display())),
        "{json}"
    );
    let fsck = run(Command::new(SSEFS)
        .args(["fsck", "--store"])
        .arg(f.store())
        .arg("--root-key")
        .arg(f.key()));
    let report = text(&fsck.stdout);
    assert_eq!(fsck.status.code(), Some(0), "{report}");
    assert!(report.contains("mounted: lock held by pid"), "{report}");
    assert!(report.contains("1 verified"), "{report}");

    f.umount();
    assert!(!is_mounted(&f.mnt()));
    assert!(!f.mnt().join("photos").exists());
}

#[test]
fn an_fstab_line_mounts_with_mount_capital_t() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    let fstab = f.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} fuse.ssefs {},default_sse=none,nofail 0 0\n",
            f.store().display(),
            f.mnt().display(),
            f.root_key_option()
        ),
    )
    .unwrap();
    let out = run(Command::new("mount").arg("-T").arg(&fstab).arg(f.mnt()));
    assert!(out.status.success(), "mount -T: {out:?}");
    std::fs::create_dir(f.mnt().join("plain")).unwrap();
    std::fs::write(f.mnt().join("plain/x"), b"no encryption").unwrap();
    let getfattr = run(Command::new("getfattr")
        .args(["-n", "user.oss.server-side-encryption"])
        .arg(f.mnt().join("plain")));
    assert!(!getfattr.status.success(), "default_sse=none left no rule");
    f.umount();
}

#[test]
fn mount_fuse3_runs_ssefs_from_path() {
    if !mount_tests_enabled() {
        return;
    }
    let f = Fixture::new();
    let bin_dir = Path::new(SSEFS).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(Command::new("mount.fuse3")
        .arg(f.store())
        .arg(f.mnt())
        .args(["-t", "fuse.ssefs", "-o"])
        .arg(f.root_key_option())
        .env("PATH", path));
    assert!(out.status.success(), "mount.fuse3: {out:?}");
    assert!(is_mounted(&f.mnt()));
    std::fs::create_dir(f.mnt().join("bucket")).unwrap();
    f.umount();
}

#[test]
fn helper_failures_are_reported_and_mount_nothing() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    let out = run(Command::new("mount")
        .args(["-t", "fuse.ssefs"])
        .arg(f.store())
        .arg(f.mnt())
        .arg("-o")
        .arg(format!(
            "root_key={}",
            f.dir.path().join("nope.key").display()
        )));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nope.key does not exist"),
        "{out:?}"
    );
    assert!(!is_mounted(&f.mnt()));

    let out = f.mount_t(",bogus");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown mount option \"bogus\""),
        "{out:?}"
    );
    assert!(!is_mounted(&f.mnt()));

    assert!(f.mount_t("").status.success());
    let other = f.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let out = run(Command::new("mount")
        .args(["-t", "fuse.ssefs"])
        .arg(f.store())
        .arg(&other)
        .arg("-o")
        .arg(f.root_key_option()));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("already mounted"), "{out:?}");
    assert!(!is_mounted(&other));
    f.umount();
}

#[test]
fn a_backup_taken_in_use_restores_a_lost_keystore() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    assert!(f.mount_t("").status.success());
    let bucket = f.mnt().join("work");
    std::fs::create_dir(&bucket).unwrap();
    let backup = f.dir.path().join("keystore.bak");
    let written = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut names = Vec::new();
            for i in 0..60u32 {
                let name = bucket.join(format!("f{i}"));
                let data: Vec<u8> = (0..(i * 997) as usize)
                    .map(|b| (b as u8) ^ (i as u8))
                    .collect();
                std::fs::write(&name, &data).unwrap();
                names.push((name, data));
                std::thread::sleep(Duration::from_millis(2));
            }
            names
        });
        std::thread::sleep(Duration::from_millis(30));
        let out = run(Command::new(SSEFS)
            .args(["keystore", "backup", "--store"])
            .arg(f.store())
            .arg(&backup));
        assert!(out.status.success(), "backup: {out:?}");
        writer.join().unwrap()
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = run(Command::new(SSEFS)
        .args(["keystore", "restore", "--store"])
        .arg(f.store())
        .arg(&backup)
        .arg("--root-key")
        .arg(f.key()));
    assert!(!out.status.success(), "restore refuses while mounted");
    assert!(text(&out.stderr).contains("is mounted"), "{out:?}");
    f.umount();

    support::mount::remove_keystore(&f.store());
    let out = f.mount_t("");
    assert!(!out.status.success(), "no keystore, no mount: {out:?}");

    let out = run(Command::new(SSEFS)
        .args(["keystore", "restore", "--store"])
        .arg(f.store())
        .arg(&backup)
        .arg("--root-key")
        .arg(f.key()));
    assert!(out.status.success(), "restore: {out:?}");
    let out = f.mount_t("");
    assert!(out.status.success(), "mount after restore: {out:?}");
    for (name, data) in &written {
        assert_eq!(&std::fs::read(name).unwrap(), data, "{}", name.display());
    }
    f.umount();
    let fsck = run(Command::new(SSEFS)
        .args(["fsck", "--store"])
        .arg(f.store())
        .arg("--root-key")
        .arg(f.key()));
    assert_eq!(fsck.status.code(), Some(0), "{}", text(&fsck.stdout));
}

#[test]
fn umount_then_mount_at_once_always_succeeds() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    let out = f.mount_t("");
    assert!(out.status.success(), "first mount: {out:?}");
    for round in 1..=20 {
        // No waiting for the daemon between the two: umount returns before it has let go
        // of the store, and the next mount must wait for it rather than call the store busy.
        let out = run(Command::new("umount").arg(f.mnt()));
        assert!(out.status.success(), "round {round}: umount: {out:?}");
        let out = f.mount_t("");
        assert!(
            out.status.success(),
            "round {round}: mount right after umount: {}",
            text(&out.stderr)
        );
        assert!(is_mounted(&f.mnt()), "round {round}");
    }
    f.umount();
}

#[test]
fn a_store_mounted_elsewhere_is_refused_at_once() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    let out = f.mount_t("");
    assert!(out.status.success(), "mount: {out:?}");
    let other = f.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let start = Instant::now();
    let out = run(Command::new("mount")
        .args(["-t", "fuse.ssefs"])
        .arg(f.store())
        .arg(&other)
        .arg("-o")
        .arg(f.root_key_option()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already mounted"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a live mount is not waited for: {:?}",
        start.elapsed()
    );
    f.umount();
}

#[test]
fn a_mountpoint_with_files_is_refused_unless_nonempty() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    std::fs::write(f.mnt().join("hidden.txt"), b"would be hidden").unwrap();
    let out = f.mount_t("");
    assert!(!out.status.success(), "a non-empty mountpoint mounted");
    let message = text(&out.stderr);
    assert!(
        message.contains("is not empty") && message.contains("nonempty"),
        "{message}"
    );
    assert!(!is_mounted(&f.mnt()));
    // The same through `ssefs mount` (stopped by SIGTERM if it wrongly mounts).
    let out = run(Command::new("timeout")
        .arg("20")
        .arg(SSEFS)
        .arg("mount")
        .arg("--root-key")
        .arg(f.key())
        .arg(f.store())
        .arg(f.mnt()));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not empty"), "{out:?}");
    assert!(!is_mounted(&f.mnt()));
    // Asked for, it mounts over the files.
    let out = f.mount_t(",nonempty");
    assert!(out.status.success(), "mount -o nonempty: {out:?}");
    assert!(is_mounted(&f.mnt()));
    assert!(!f.mnt().join("hidden.txt").exists());
    f.umount();
    assert!(f.mnt().join("hidden.txt").exists(), "nothing was lost");
}

#[test]
fn a_mountpoint_inside_the_store_is_refused() {
    if !mount_tests_enabled() {
        return;
    }
    let f = Fixture::new();
    let inside = f.store().join("docs");
    std::fs::create_dir(&inside).unwrap();
    for mountpoint in [inside.clone(), f.store()] {
        // A foreground mount that wrongly succeeded is ended (and unmounted) by SIGTERM.
        let out = run(Command::new("timeout")
            .arg("20")
            .arg(SSEFS)
            .arg("mount")
            .arg("--root-key")
            .arg(f.key())
            .arg(f.store())
            .arg(&mountpoint));
        assert!(!out.status.success(), "{}", mountpoint.display());
        let message = text(&out.stderr);
        assert!(message.contains("inside the store"), "{message}");
        assert!(!is_mounted(&mountpoint));
    }
}

/// Overwrites 256 bytes inside page `page` (from 1) of the store's keystore, a B-tree page
/// (the database header on the first page is left alone).
fn damage_keystore(store: &Path, page: u64) {
    use std::os::unix::fs::FileExt;
    let path = store.join(".ssefs/keystore.db");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0).unwrap();
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    assert!(
        file.metadata().unwrap().len() >= page * page_size,
        "a small keystore"
    );
    file.write_all_at(&[0xa5; 256], (page - 1) * page_size + 8)
        .unwrap();
    file.sync_all().unwrap();
}

#[test]
fn a_damaged_keystore_is_refused_at_mount_with_the_way_to_restore_it() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    // Page 2 holds the meta row (opening fails); page 3 the master keys (their seal fails,
    // and SQLite's check of the pages tells damage from a change made through SQL).
    for (page, says) in [(2, "corrupted keystore"), (3, "corrupted keystore")] {
        let f = Fixture::new();
        damage_keystore(&f.store(), page);
        let out = f.mount_t("");
        let message = text(&out.stderr);
        assert!(
            !out.status.success(),
            "page {page}: a damaged keystore mounted"
        );
        assert!(!is_mounted(&f.mnt()));
        assert!(message.contains(says), "page {page}: {message}");
        assert!(message.contains("ssefs keystore restore"), "{message}");
        // The same through `ssefs mount` (stopped by SIGTERM if it wrongly mounts).
        let out = run(Command::new("timeout")
            .arg("20")
            .arg(SSEFS)
            .arg("mount")
            .arg("--root-key")
            .arg(f.key())
            .arg(f.store())
            .arg(f.mnt()));
        assert!(!out.status.success());
        assert!(!is_mounted(&f.mnt()));
        let message = text(&out.stderr);
        assert!(message.contains("ssefs keystore restore"), "{message}");
    }
}

#[test]
fn helper_mode_logs_to_standard_error_where_syslog_is_unreachable() {
    if !mount_tests_enabled() {
        return;
    }
    let _link = HelperLink::install();
    let f = Fixture::new();
    let log_path = f.dir.path().join("helper.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // Standard error to a file (a pipe would be given up: its reader would wait for the
    // daemon to exit).
    let status = Command::new("mount")
        .args(["-t", "fuse.ssefs"])
        .arg(f.store())
        .arg(f.mnt())
        .arg("-o")
        .arg(f.root_key_option())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(f.mnt().join("logged")).unwrap();
    let syslog = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_ok();
    let text = std::fs::read_to_string(&log_path).unwrap();
    if syslog {
        assert!(!text.contains("created bucket"), "syslog takes it: {text}");
    } else {
        assert!(
            text.contains("INFO: created bucket logged"),
            "no syslog here: the daemon's log must reach standard error: {text:?}"
        );
    }
    f.umount();
}

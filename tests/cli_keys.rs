//! One way to the root key, through the binary: `--passphrase-fd` for every command that needs
//! a key (kms, bucket-encryption, mount), errors that list every way to give a missing key,
//! read-only commands without the key, the owner and mode checks on every secret file, and
//! commands that unwrap keys running undumpable.

mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::cli::{PASSPHRASE, SSEFS, Scratch, text, with_input};
use support::shell::Reaped;
use support::sys::is_root;

const NOBODY: u32 = 65534;

/// `ssefs ARGS --store st` (no root key from anywhere).
fn on_store(s: &Scratch, args: &[&str]) -> Command {
    let mut cmd = s.bare();
    cmd.args(args).arg("--store").arg(s.store());
    cmd
}

fn make_bucket(s: &Scratch, name: &str) {
    std::fs::create_dir(s.store().join(name)).unwrap();
}

#[test]
fn passphrase_fd_opens_a_passphrase_store_for_kms_and_bucket_encryption() {
    let s = Scratch::with_passphrase();
    make_bucket(&s, "photos");
    let pass = format!("{PASSPHRASE}\n");
    let out = with_input(
        on_store(&s, &["kms", "create", "--passphrase-fd", "0"]),
        pass.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = with_input(
        on_store(&s, &["kms", "list", "--passphrase-fd", "0"]),
        pass.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let put = [
        "bucket-encryption",
        "put",
        "photos",
        "--algorithm",
        "AES256",
        "--passphrase-fd",
        "0",
    ];
    let out = with_input(on_store(&s, &put), pass.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    let get = ["bucket-encryption", "get", "photos", "--passphrase-fd", "0"];
    let out = with_input(on_store(&s, &get), pass.as_bytes());
    assert!(text(&out).contains("photos: AES256"), "{}", text(&out));
    // A wrong passphrase is named as such.
    let out = with_input(
        on_store(&s, &["kms", "list", "--passphrase-fd", "0"]),
        b"not the passphrase\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("wrong passphrase?"), "{}", text(&out));
}

#[test]
fn passphrase_fd_on_a_key_file_store_says_to_give_the_key_file() {
    let s = Scratch::new();
    let out = with_input(
        on_store(&s, &["kms", "list", "--passphrase-fd", "0"]),
        b"whatever\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(
        msg.contains("is a key file, not a passphrase") && msg.contains("--root-key"),
        "{msg}"
    );
}

#[test]
fn a_missing_key_file_error_lists_every_way_to_give_one() {
    let s = Scratch::new();
    for args in [
        &["kms", "list"][..],
        &["rotate-master"],
        &["rewrap"],
        &["bucket-encryption", "put", "photos", "--algorithm", "KMS"],
    ] {
        make_bucket_once(&s, "photos");
        let out = on_store(&s, args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let msg = text(&out);
        for way in [
            "--root-key FILE",
            "$SSEFS_ROOT_KEY_FILE",
            "credential root-key",
            ".config/ssefs/keys",
            "does not exist",
        ] {
            assert!(msg.contains(way), "{args:?}: {way:?} missing from {msg}");
        }
    }
}

fn make_bucket_once(s: &Scratch, name: &str) {
    if !s.store().join(name).exists() {
        make_bucket(s, name);
    }
}

#[test]
fn a_missing_passphrase_error_lists_every_way_to_give_one() {
    let s = Scratch::with_passphrase();
    let out = on_store(&s, &["kms", "list"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    for way in [
        "--passphrase-fd N",
        "$SSEFS_PASSPHRASE_FD",
        "credential passphrase",
        "terminal",
    ] {
        assert!(msg.contains(way), "{way:?} missing from {msg}");
    }
}

#[test]
fn read_only_commands_work_without_the_key_and_say_what_they_did_not_verify() {
    let s = Scratch::new();
    make_bucket(&s, "photos");
    let put = ["bucket-encryption", "put", "photos", "--algorithm", "KMS"];
    let out = on_store(&s, &put)
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // bucket-encryption get: the rule, and a note that it is unverified.
    let out = on_store(&s, &["bucket-encryption", "get", "photos"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("photos: KMS with the default CMK"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not verified") && stderr.contains("--root-key"),
        "{stderr}"
    );
    // A bucket without a rule still exits 3 without the key.
    make_bucket(&s, "plain");
    let out = on_store(&s, &["bucket-encryption", "get", "plain"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // status: works, and says it authenticated nothing.
    let out = on_store(&s, &["status"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not authenticated"), "{}", text(&out));
    // kms list/describe need the key (the open destroys CMKs past their deletion date): the
    // error says how to give it.
    let out = on_store(&s, &["kms", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--root-key FILE"), "{}", text(&out));
}

/// A root-owned copy of `path` given to `uid`, mode 0600.
fn give(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn secret_files_owned_by_someone_else_are_refused() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to give files to another uid");
        return;
    }
    let s = Scratch::new();
    // The root key file.
    give(&s.key(), NOBODY);
    let out = on_store(&s, &["kms", "list"])
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is owned by uid 65534"),
        "{}",
        text(&out)
    );
    give(&s.key(), 0);
    // A root key file readable by the group.
    std::fs::set_permissions(s.key(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = on_store(&s, &["kms", "list"])
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    give(&s.key(), 0);

    // Plain key material for `kms import`.
    let out = on_store(&s, &["kms", "create", "--origin", "external", "--json"])
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let material = s.path("material");
    std::fs::write(&material, [9u8; 32]).unwrap();
    give(&material, NOBODY);
    let out = on_store(&s, &["kms", "import", &id])
        .arg("--material")
        .arg(&material)
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is owned by uid 65534"),
        "{}",
        text(&out)
    );
    give(&material, 0);
    std::fs::set_permissions(&material, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = on_store(&s, &["kms", "import", &id])
        .arg("--material")
        .arg(&material)
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap();
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

#[test]
fn a_passphrase_credential_owned_by_someone_else_is_refused() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to give files to another uid");
        return;
    }
    let s = Scratch::with_passphrase();
    let creds = s.path("creds");
    std::fs::create_dir(&creds).unwrap();
    let cred = creds.join("passphrase");
    std::fs::write(&cred, PASSPHRASE).unwrap();
    give(&cred, 0);
    let ok = on_store(&s, &["kms", "list"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    give(&cred, NOBODY);
    let out = on_store(&s, &["kms", "list"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is owned by uid 65534"),
        "{}",
        text(&out)
    );
}

/// Gives a whole tree to `uid`.
fn hand_over(root: &Path, uid: u32) {
    std::os::unix::fs::lchown(root, Some(uid), Some(uid)).unwrap();
    if root.is_dir() && !root.is_symlink() {
        for entry in std::fs::read_dir(root).unwrap() {
            hand_over(&entry.unwrap().path(), uid);
        }
    }
}

#[test]
fn commands_that_unwrap_keys_are_undumpable() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run a command as another uid");
        return;
    }
    let s = Scratch::with_passphrase();
    hand_over(s.dir.path(), NOBODY);
    // Blocks reading the passphrase, as another uid: a dumpable process would own its
    // /proc/PID/environ; an undumpable one's belongs to root.
    let mut cmd = on_store(&s, &["kms", "list", "--passphrase-fd", "0"]);
    cmd.uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaped(cmd.spawn().unwrap());
    let proc_dir = PathBuf::from(format!("/proc/{}/environ", child.0.id()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut owner = std::fs::metadata(&proc_dir).unwrap().uid();
    while owner != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        owner = std::fs::metadata(&proc_dir).unwrap().uid();
    }
    assert_eq!(
        owner,
        0,
        "{} stays owned by uid {owner}",
        proc_dir.display()
    );
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(PASSPHRASE.as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kms list did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());

    // The check is not vacuous: an ordinary process of that uid owns its /proc/PID/environ.
    let sleeper = Reaped(
        Command::new("sleep")
            .arg("10")
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .unwrap(),
    );
    let owner = std::fs::metadata(format!("/proc/{}/environ", sleeper.0.id()))
        .unwrap()
        .uid();
    assert_eq!(owner, NOBODY);
}

#[test]
fn mount_takes_the_passphrase_from_a_descriptor() {
    if !support::mount::mount_tests_enabled() {
        return;
    }
    let s = Scratch::with_passphrase();
    let mnt = s.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut cmd = s.bare();
    cmd.arg("mount")
        .arg(s.store())
        .arg(&mnt)
        .args(["--passphrase-fd", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let mut daemon = MountGuard {
        child,
        mountpoint: mnt.clone(),
    };
    let mut stdin = daemon.child.stdin.take().unwrap();
    stdin.write_all(PASSPHRASE.as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + support::mount::DAEMON_TIMEOUT;
    while !support::mount::is_ssefs_mount(&mnt) {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = daemon.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("ssefs mount exited ({status}) without mounting: {err}");
        }
        assert!(Instant::now() < deadline, "the mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::create_dir(mnt.join("photos")).unwrap();
    std::fs::write(mnt.join("photos/a.txt"), b"hello").unwrap();
    assert_eq!(std::fs::read(mnt.join("photos/a.txt")).unwrap(), b"hello");
}

/// A foreground `ssefs mount`: unmounted and reaped when dropped.
struct MountGuard {
    child: Child,
    mountpoint: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if support::mount::is_mounted(&self.mountpoint) {
            let _ = support::mount::fusermount_u(&self.mountpoint);
        }
        if support::mount::wait_timeout(&mut self.child, support::mount::DAEMON_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn init_refuses_an_existing_key_file_owned_by_someone_else() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to give files to another uid");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, [5u8; 32]).unwrap();
    give(&key, NOBODY);
    let out = Command::new(SSEFS)
        .arg("init")
        .arg(dir.path().join("st"))
        .arg("--root-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is owned by uid 65534"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("st").exists());
    give(&key, 0);
    let out = Command::new(SSEFS)
        .arg("init")
        .arg(dir.path().join("st"))
        .arg("--root-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

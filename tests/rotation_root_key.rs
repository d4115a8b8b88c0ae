//! Root key sources and `ssefs change-root-key` through the binary: a passphrase store read
//! with `--passphrase-fd` and the `passphrase` credential, a key file as the `root-key`
//! credential, and a root key change after which only the new key opens the store (the mount
//! tests need root and /dev/fuse; set SSEFS_SKIP_MOUNT_TESTS=1 to skip them).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::cli::text;
use support::cli::{SSEFS, s, ssefs, ssefs_ok};
use support::mount::{Mount, MountArgs, TestStore, mount_tests_enabled, remove_keystore};
use support::rng::content;
use support::xattr::{SSE, key_version, set_xattr};

/// `ssefs ARGS` with descriptor 3 reading `secret` (and 4 reading `second`, if given).
fn with_fds(args: &[&str], secret: &Path, second: Option<&Path>) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let mut script = format!("exec '{SSEFS}' {} 3<'{}'", quoted.join(" "), s(secret));
    if let Some(second) = second {
        script.push_str(&format!(" 4<'{}'", s(second)));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("SSEFS_PASSPHRASE_FD")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

fn secret_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn a_passphrase_store_opens_with_the_passphrase_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("st");
    let good = secret_file(dir.path(), "good", "correct horse battery\n");
    let wrong = secret_file(dir.path(), "wrong", "correct horse battery staple\n");
    let short = secret_file(dir.path(), "short", "abc\n");

    let out = with_fds(
        &["init", s(&store), "--passphrase", "--passphrase-fd", "3"],
        &short,
        None,
    );
    assert!(
        !out.status.success() && text(&out).contains("shorter than 8"),
        "{}",
        text(&out)
    );
    assert!(!store.exists(), "a refused init leaves nothing behind");

    let out = with_fds(
        &["init", s(&store), "--passphrase", "--passphrase-fd", "3"],
        &good,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("correct horse"));
    let db = fs::read(store.join(".ssefs/keystore.db")).unwrap();
    assert!(!db.windows(13).any(|w| w == b"correct horse"));

    let rotate = [
        "rotate-master",
        "--store",
        s(&store),
        "--passphrase-fd",
        "3",
    ];
    let out = with_fds(&rotate, &good, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("version 2 is now current"),
        "{}",
        text(&out)
    );

    let out = with_fds(&rotate, &wrong, None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("wrong root key (wrong passphrase?)"),
        "{}",
        text(&out)
    );

    // No descriptor, no credential and no terminal: a clear error, not a hang.
    let out = ssefs(&["rotate-master", "--store", s(&store)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--passphrase-fd"), "{}", text(&out));

    // The systemd credential `passphrase`.
    let creds = dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::copy(&good, creds.join("passphrase")).unwrap();
    let out = Command::new(SSEFS)
        .args(["rotate-master", "--store", s(&store)])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("version 3 is now current"),
        "{}",
        text(&out)
    );

    // Moving the store to a key file: the passphrase no longer opens it.
    let new_key = dir.path().join("new.key");
    let out = with_fds(
        &[
            "change-root-key",
            "--store",
            s(&store),
            "--passphrase-fd",
            "3",
            "--new-root-key",
            s(&new_key),
        ],
        &good,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("re-wrapped 3 master key version(s)"),
        "{}",
        text(&out)
    );
    let out = with_fds(&rotate, &good, None);
    assert!(!out.status.success(), "{}", text(&out));
    ssefs_ok(&[
        "rotate-master",
        "--store",
        s(&store),
        "--root-key",
        s(&new_key),
    ]);
}

#[test]
fn change_root_key_moves_a_live_store_to_a_new_key_without_touching_objects() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("data");
    set_xattr(&bucket, SSE, "AES256").unwrap();
    for i in 0..5 {
        fs::write(bucket.join(format!("o{i}")), content(i, 9_000 * i)).unwrap();
    }
    ssefs_ok(&[
        "kms",
        "create",
        "--alias",
        "alias/k",
        "--store",
        s(&store.store),
        "--root-key",
        s(&store.root_key),
    ]);
    let new_key = store.base().join("new.key");
    let change = [
        "change-root-key",
        "--store",
        s(&store.store),
        "--root-key",
        s(&store.root_key),
        "--new-root-key",
        s(&new_key),
    ];
    // Refused while mounted: the daemon holds the old key.
    let out = ssefs(&change);
    assert!(!out.status.success());
    assert!(text(&out).contains("unmount"), "{}", text(&out));
    assert!(!new_key.exists());
    drop(mount);

    let before: Vec<Vec<u8>> = (0..5)
        .map(|i| fs::read(store.store.join(format!("data/o{i}"))).unwrap())
        .collect();
    let out = ssefs_ok(&change);
    assert!(
        out.contains("re-wrapped 1 master key version(s), 1 CMK material(s)"),
        "{out}"
    );
    assert_eq!(
        fs::metadata(&new_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for (i, old) in before.iter().enumerate() {
        let now = fs::read(store.store.join(format!("data/o{i}"))).unwrap();
        assert!(&now == old, "object o{i} was touched");
    }
    // The old key is refused with a clear error, by the CLI and by the mount.
    let out = ssefs(&[
        "rotate-master",
        "--store",
        s(&store.store),
        "--root-key",
        s(&store.root_key),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong root key"), "{}", text(&out));
    let mut args = MountArgs::of(&store, &[]);
    let failure = Mount::try_with_args(args.clone())
        .err()
        .expect("the old key must not mount");
    assert!(
        failure.stderr.contains("wrong root key"),
        "{}",
        failure.stderr
    );

    // The new key as the systemd credential `root-key` mounts and reads everything.
    let creds = store.base().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::copy(&new_key, creds.join("root-key")).unwrap();
    let out = Command::new(SSEFS)
        .args(["rotate-master", "--store", s(&store.store)])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    args.root_key = new_key.clone();
    let mount = Mount::with_args(args);
    for i in 0..5 {
        let path = mount.join(format!("data/o{i}"));
        assert_eq!(fs::read(&path).unwrap(), content(i, 9_000 * i));
        assert_eq!(key_version(&path), 1);
    }
    let fresh = mount.join("data/fresh");
    fs::write(&fresh, b"after the change").unwrap();
    assert_eq!(key_version(&fresh), 2);
}

/// Unmounts and reaps a daemon started by hand, even when the test fails.
struct HandMount {
    child: std::process::Child,
    mountpoint: PathBuf,
}

impl Drop for HandMount {
    fn drop(&mut self) {
        if support::mount::is_ssefs_mount(&self.mountpoint) {
            support::mount::fusermount_u(&self.mountpoint);
        }
        if support::mount::wait_timeout(&mut self.child, support::mount::DAEMON_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_passphrase_store_mounts_with_the_passphrase_from_a_descriptor() {
    if !mount_tests_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let store = base.join("st");
    let mnt = base.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let good = secret_file(&base, "good", "a long passphrase\n");
    let out = with_fds(
        &["init", s(&store), "--passphrase", "--passphrase-fd", "3"],
        &good,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));

    let script = format!(
        "exec '{SSEFS}' mount '{}' '{}' 3<'{}'",
        s(&store),
        s(&mnt),
        s(&good)
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("SSEFS_PASSPHRASE_FD", "3")
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("HOME", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut mount = HandMount {
        child,
        mountpoint: mnt.clone(),
    };
    let deadline = std::time::Instant::now() + support::mount::DAEMON_TIMEOUT;
    while !support::mount::is_ssefs_mount(&mnt) {
        assert!(
            mount.child.try_wait().unwrap().is_none(),
            "the daemon exited without mounting"
        );
        assert!(std::time::Instant::now() < deadline, "no mount appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let bucket = mnt.join("data");
    fs::create_dir(&bucket).unwrap();
    set_xattr(&bucket, SSE, "AES256").unwrap();
    fs::write(bucket.join("f"), content(3, 50_000)).unwrap();
    assert_eq!(key_version(&bucket.join("f")), 1);
    // While mounted, the CLI rewraps through the mount with the same passphrase.
    let out = with_fds(
        &[
            "rotate-master",
            "--store",
            s(&store),
            "--passphrase-fd",
            "3",
        ],
        &good,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = with_fds(
        &["rewrap", "--store", s(&store), "--passphrase-fd", "3"],
        &good,
        None,
    );
    assert!(
        text(&out).contains("rewrapped 1, already current 0, failed 0"),
        "{}",
        text(&out)
    );
    assert_eq!(key_version(&bucket.join("f")), 2);
    assert_eq!(fs::read(bucket.join("f")).unwrap(), content(3, 50_000));
    let backup = base.join("keystore.bak");
    let out = ssefs(&["keystore", "backup", "--store", s(&store), s(&backup)]);
    assert!(out.status.success(), "{}", text(&out));
    support::mount::fusermount_u(&mnt);
    let status = support::mount::wait_timeout(&mut mount.child, support::mount::DAEMON_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0));

    // fsck checks every block with the passphrase; without one it says it checked headers only.
    let fsck = ["fsck", "--store", s(&store), "--passphrase-fd", "3"];
    let out = with_fds(&fsck, &good, None);
    assert!(
        out.status.success() && text(&out).contains("1 verified"),
        "{}",
        text(&out)
    );
    let out = with_fds(&["fsck", "--store", s(&store)], &good, None);
    assert!(
        out.status.success() && text(&out).contains("headers checked, blocks not"),
        "{}",
        text(&out)
    );
    let wrong = secret_file(&base, "wrong", "not the passphrase\n");
    let out = with_fds(&fsck, &wrong, None);
    assert!(!out.status.success(), "{}", text(&out));

    // The keystore is lost; the backup restores it with the passphrase alone.
    remove_keystore(&store);
    let restore = [
        "keystore",
        "restore",
        "--store",
        s(&store),
        s(&backup),
        "--passphrase-fd",
        "3",
    ];
    let out = with_fds(&restore, &wrong, None);
    assert!(
        !out.status.success(),
        "a wrong passphrase restored: {}",
        text(&out)
    );
    let out = with_fds(&restore, &good, None);
    assert!(out.status.success(), "{}", text(&out));
    let out = with_fds(&fsck, &good, None);
    assert!(
        out.status.success() && text(&out).contains("1 verified"),
        "{}",
        text(&out)
    );
}

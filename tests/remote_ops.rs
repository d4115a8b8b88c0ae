//! The tour's key operations on a store in an object store (a SeaweedFS the tests start):
//! KMS keys made while mounted reach the live mount, a master key rotation, a rewrap and fsck
//! of the whole store (each on a full copy), and an object changed on the server is caught
//! by fsck and refused by a fresh mount, while every other object still reads.

mod support;

use ssefs::store::remote::WriteMode;
use std::fs;
use std::path::PathBuf;
use std::process::Output;
use support::cli::{SSEFS, ok, s, text};
use support::mount::{Mount, MountArgs, mount_tests_enabled};
use support::s3::S3Server;
use support::xattr::{get_xattr, key_version, set_xattr};

/// A remote store made by `ssefs init`, its root key, and a mountpoint.
struct Remote {
    url: String,
    prefix: String,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Remote {
    fn new(name: &str) -> Remote {
        let server = S3Server::shared();
        let prefix = S3Server::unique_prefix(name);
        let remote = Remote {
            url: S3Server::store_url(&prefix),
            prefix,
            endpoint: server.endpoint(),
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(remote.mountpoint()).unwrap();
        ok(remote.run(&["init", &remote.url.clone(), "--root-key", s(&remote.key())]));
        remote
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// `ssefs ARGS` with the server's credentials and endpoint.
    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(SSEFS)
            .args(args)
            .envs(S3Server::env())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("HOME", "/nonexistent")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .output()
            .expect("run ssefs")
    }

    /// `ssefs ARGS --store URL --root-key KEY`.
    fn on_store(&self, args: &[&str]) -> Output {
        let key = self.key();
        let mut all = args.to_vec();
        all.extend(["--store", &self.url, "--root-key", s(&key)]);
        self.run(&all)
    }

    /// `ssefs status [ARGS] --store URL` (no root key needed).
    fn status(&self, args: &[&str]) -> String {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        all.extend(["--store", &self.url]);
        ok(self.run(&all))
    }

    /// A mount whose cache is `cache` (a fresh name gives a fresh cache).
    fn mount(&self, cache: &str) -> Mount {
        let mountpoint = self.dir.path().join(cache);
        if !mountpoint.exists() {
            fs::create_dir(&mountpoint).unwrap();
        }
        Mount::with_args(MountArgs {
            store: PathBuf::from(&self.url),
            mountpoint,
            root_key: self.key(),
            options: Vec::new(),
        })
    }
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

#[test]
fn keys_rotation_rewrap_and_fsck_work_on_a_remote_store_and_tampering_is_caught() {
    if !mount_tests_enabled() {
        return;
    }
    let remote = Remote::new("ops");
    let mount = remote.mount("mnt");
    let bucket = mount.bucket("tour");
    fs::write(bucket.join("plain.txt"), content(1, 70_000)).unwrap();
    fs::write(bucket.join("other.txt"), content(2, 5_000)).unwrap();

    // A CMK made while mounted reaches the live mount (the command works on its keystore).
    ok(remote.on_store(&["kms", "create", "--alias", "alias/tour"]));
    let secret = bucket.join("secret.txt");
    fs::write(&secret, content(3, 9_000)).unwrap();
    set_xattr(&secret, "user.oss.server-side-encryption", b"KMS").unwrap();
    set_xattr(
        &secret,
        "user.oss.server-side-encryption-key-id",
        b"alias/tour",
    )
    .unwrap();
    assert_eq!(
        get_xattr(&secret, "user.oss.server-side-encryption")
            .unwrap()
            .as_deref(),
        Some("KMS")
    );
    let said = ok(remote.on_store(&["rotate-master"]));
    assert!(said.contains("version 2 is now current"), "{said}");
    assert_eq!(key_version(&bucket.join("plain.txt")), 1);
    drop(mount);

    // Rewrap and fsck of the whole store, each on a full copy put back with If-Match.
    let said = ok(remote.on_store(&["rewrap"]));
    assert!(said.contains("rewrapped 2"), "{said}");
    let said = ok(remote.on_store(&["fsck"]));
    assert!(said.contains("clean"), "{said}");
    assert!(said.contains(&remote.url), "{said}");

    let mount = remote.mount("fresh");
    let inside = mount.path().join("tour");
    assert_eq!(key_version(&inside.join("plain.txt")), 2);
    assert_eq!(
        fs::read(inside.join("plain.txt")).unwrap(),
        content(1, 70_000)
    );
    assert_eq!(
        fs::read(inside.join("secret.txt")).unwrap(),
        content(3, 9_000)
    );
    assert_eq!(
        get_xattr(
            &inside.join("secret.txt"),
            "user.oss.server-side-encryption"
        )
        .unwrap()
        .as_deref(),
        Some("KMS")
    );
    drop(mount);

    // Whoever can write the bucket changes one byte of an object's data page.
    let client = S3Server::shared().client(&remote.prefix);
    let key = "tour/plain.txt";
    let (mut bytes, _) = client.get(key).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    client.put(key, bytes, WriteMode::Overwrite).unwrap();

    let out = remote.on_store(&["fsck"]);
    assert!(
        !out.status.success(),
        "fsck missed the change: {}",
        text(&out)
    );
    assert!(text(&out).contains("plain.txt"), "{}", text(&out));
    let mount = remote.mount("after-tamper");
    let inside = mount.path().join("tour");
    let err = fs::read(inside.join("plain.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        fs::read(inside.join("other.txt")).unwrap(),
        content(2, 5_000)
    );
    assert_eq!(
        fs::read(inside.join("secret.txt")).unwrap(),
        content(3, 9_000)
    );
}

#[test]
fn status_shows_the_hosts_that_have_the_store_mounted_and_expires_a_dead_one() {
    if !mount_tests_enabled() {
        return;
    }
    let remote = Remote::new("hosts");
    let said = remote.status(&[]);
    assert!(said.contains("not mounted on any host"), "{said}");

    let mount = remote.mount("mnt");
    let said = remote.status(&[]);
    let pid = mount.pid().to_string();
    assert!(said.contains("mounted on:"), "{said}");
    assert!(said.contains(&format!("pid {pid}")), "{said}");
    assert!(said.contains(s(mount.path())), "{said}");
    let json: serde_json::Value = serde_json::from_str(&remote.status(&["--json"])).unwrap();
    assert_eq!(
        json["hosts"][0]["pid"].as_u64(),
        Some(u64::from(mount.pid()))
    );
    assert_eq!(json["hosts"][0]["expired"].as_bool(), Some(false));
    drop(mount);
    let said = remote.status(&[]);
    assert!(
        said.contains("not mounted on any host"),
        "an unmount removes it: {said}"
    );

    // A daemon killed outright leaves its heartbeat, which expires.
    let mount = remote.mount("killed");
    mount.signal(libc::SIGKILL);
    let said = remote.status(&[]);
    assert!(said.contains(&format!("pid {}", mount.pid())), "{said}");
    assert!(said.contains("last heartbeat"), "{said}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = std::process::Command::new(SSEFS)
        .args(["status", "--store", &remote.url])
        .envs(S3Server::env())
        .env("AWS_ENDPOINT_URL", &remote.endpoint)
        .env("SSEFS_HEARTBEAT_EXPIRY", "1")
        .output()
        .unwrap();
    let said = ok(out);
    assert!(said.contains("expired"), "{said}");
    drop(mount);
}

#[test]
fn a_dirty_copy_whose_object_changed_meanwhile_is_set_aside_not_uploaded() {
    if !mount_tests_enabled() {
        return;
    }
    let remote = Remote::new("conflict");
    let mount = remote.mount("mnt");
    let bucket = mount.bucket("data");
    fs::write(bucket.join("f"), content(1, 10_000)).unwrap();
    fs::write(bucket.join("other"), content(2, 3_000)).unwrap();
    drop(mount);
    let client = S3Server::shared().client(&remote.prefix);
    let mine = client.head("data/f").unwrap();

    // A change this cache never uploads: the daemon is killed with the file open.
    let mount = remote.mount("mnt");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(mount.path().join("data/f"))
        .unwrap();
    use std::io::Write;
    file.write_all(&content(3, 10_000)).unwrap();
    mount.signal(libc::SIGKILL);
    drop(file);
    drop(mount);
    // Meanwhile someone else writes the object (here: another store's bytes, which this
    // store refuses to read: what matters is that they are not overwritten).
    let (theirs, _) = client.get("data/other").unwrap();
    client
        .put("data/f", theirs.clone(), WriteMode::Overwrite)
        .unwrap();
    assert_ne!(client.head("data/f").unwrap().version, mine.version);

    let mount = remote.mount("mnt");
    let (now, _) = client.get("data/f").unwrap();
    assert_eq!(now, theirs, "the other version was overwritten");
    let aside = remote.dir.path().join("mnt.cache/conflicts/data%2Ff");
    assert!(aside.is_file(), "{}", mount.log_text());
    assert!(
        mount.log_text().contains("conflicts"),
        "{}",
        mount.log_text()
    );
    assert_eq!(
        fs::read(mount.path().join("data/other")).unwrap(),
        content(2, 3_000)
    );
}

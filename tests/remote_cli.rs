//! `ssefs` on a store in an object store (SeaweedFS, started by the tests): `init s3://…`
//! makes the keystore object and never overwrites a store; the keystore-only commands work
//! on a working copy put back with If-Match; a keystore changed by another host meanwhile
//! is never overwritten; the commands that read objects run on a full copy (the mount is
//! tested in remote_mount.rs).

mod support;

use ssefs::store::remote::{WorkingCopyError, WriteMode, keystore_key};
use std::process::Output;
use support::cli::{SSEFS, ok, s, text};
use support::s3::S3Server;

/// A remote store's URL, its endpoint, and a scratch directory for its root key.
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
        Remote {
            url: S3Server::store_url(&prefix),
            prefix,
            endpoint: server.endpoint(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn key(&self) -> String {
        s(&self.dir.path().join("root.key")).to_string()
    }

    /// `ssefs ARGS` with the server's credentials and a private HOME.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ssefs")
    }

    /// `ssefs ARGS` with `input` on its standard input.
    fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run ssefs");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).expect("write the input");
        }
        child.wait_with_output().expect("wait for ssefs")
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(SSEFS);
        cmd.args(args)
            .env("HOME", self.dir.path().join("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE");
        for (name, value) in S3Server::env() {
            cmd.env(name, value);
        }
        cmd
    }

    /// `ssefs COMMAND… --store URL --endpoint E --root-key K`.
    fn on_store(&self, args: &[&str]) -> Output {
        let key = self.key();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--store", &self.url, "--endpoint", &self.endpoint]);
        all.extend(["--root-key", &key]);
        self.run(&all)
    }

    fn init(&self) -> Output {
        self.run(&[
            "init",
            &self.url,
            "--endpoint",
            &self.endpoint,
            "--root-key",
            &self.key(),
        ])
    }

    fn client(&self) -> ssefs::store::remote::RemoteStore {
        S3Server::shared().client(&self.prefix)
    }

    fn keystore_etag(&self) -> Option<String> {
        self.client().head(&keystore_key()).unwrap().version.etag
    }
}

#[test]
fn init_makes_a_remote_store_and_never_overwrites_one() {
    let remote = Remote::new("init");
    let said = ok(remote.init());
    assert!(said.contains(&remote.url), "{said}");
    assert!(std::path::Path::new(&remote.key()).is_file());
    let etag = remote.keystore_etag();
    assert!(etag.is_some());

    // A second init with another root key is refused and changes nothing.
    let other_key = s(&remote.dir.path().join("other.key")).to_string();
    let out = remote.run(&[
        "init",
        &remote.url,
        "--endpoint",
        &remote.endpoint,
        "--root-key",
        &other_key,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("already an ssefs store"),
        "{}",
        text(&out)
    );
    assert!(!std::path::Path::new(&other_key).exists());
    assert_eq!(remote.keystore_etag(), etag);
}

#[test]
fn a_passphrase_store_can_be_made_and_used_remotely() {
    let remote = Remote::new("passphrase");
    let pass = b"a remote passphrase\n";
    let init = [
        "init",
        &remote.url,
        "--endpoint",
        &remote.endpoint,
        "--passphrase",
        "--passphrase-fd",
        "0",
    ];
    let said = ok(remote.run_with_input(&init, pass));
    assert!(
        said.contains(&remote.url) && said.contains("passphrase"),
        "{said}"
    );
    let on_store = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--store", &remote.url, "--endpoint", &remote.endpoint]);
        all.extend(["--passphrase-fd", "0"]);
        remote.run_with_input(&all, pass)
    };
    let before = remote.keystore_etag();
    ok(on_store(&["kms", "create"]));
    assert_ne!(remote.keystore_etag(), before);
    let wrong = remote.run_with_input(
        &[
            "kms",
            "list",
            "--store",
            &remote.url,
            "--endpoint",
            &remote.endpoint,
            "--passphrase-fd",
            "0",
        ],
        b"not the passphrase\n",
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("wrong passphrase"),
        "{}",
        text(&wrong)
    );
}

#[test]
fn init_refuses_a_prefix_that_holds_objects() {
    let remote = Remote::new("nonempty");
    remote
        .client()
        .put("bucket/notes.txt", b"x".to_vec(), WriteMode::Create)
        .unwrap();
    let out = remote.init();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("holds objects already"),
        "{}",
        text(&out)
    );
    assert!(
        remote
            .client()
            .head(&keystore_key())
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn keystore_commands_run_on_the_remote_keystore_and_put_it_back() {
    let remote = Remote::new("kms");
    ok(remote.init());
    let before = remote.keystore_etag();

    let created = ok(remote.on_store(&["kms", "create", "--description", "remote", "--json"]));
    assert!(created.contains("KeyId"), "{created}");
    let after_create = remote.keystore_etag();
    assert_ne!(
        after_create, before,
        "kms create did not upload the keystore"
    );

    let listed = ok(remote.on_store(&["kms", "list"]));
    let id = created
        .split('"')
        .skip_while(|part| *part != "KeyId")
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert!(
        !id.is_empty() && listed.contains(&id),
        "{created}\n{listed}"
    );

    let rotated = ok(remote.on_store(&["rotate-master"]));
    assert!(
        rotated.contains(&format!("--store {}", remote.url)),
        "{rotated}"
    );
    let after_rotate = remote.keystore_etag();
    assert_ne!(after_rotate, after_create);
    let described = ok(remote.on_store(&["rotate-master", "--if-older-than-days", "1", "--json"]));
    assert!(described.contains("\"current_version\":2"), "{described}");

    // status needs no root key and says what it cannot tell yet.
    let status_args = [
        "status",
        "--store",
        &remote.url,
        "--endpoint",
        &remote.endpoint,
    ];
    let status = ok(remote.run(&status_args));
    assert!(
        status.contains(&format!("store {}", remote.url)),
        "{status}"
    );
    assert!(
        status.contains("v2 created") && status.contains(&id),
        "{status}"
    );
    assert!(status.contains("not listed"), "{status}");
    let mut json_args = status_args.to_vec();
    json_args.push("--json");
    let json: serde_json::Value = serde_json::from_str(&ok(remote.run(&json_args))).unwrap();
    assert_eq!(json["remote"], true);
    assert_eq!(json["master_keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["cmks"][0]["key_id"], id.as_str());

    let backup = remote.dir.path().join("keystore.backup");
    let mut args = vec!["keystore", "backup"];
    args.extend(["--store", &remote.url, "--endpoint", &remote.endpoint]);
    args.push(s(&backup));
    ok(remote.run(&args));
    assert!(backup.is_file());
}

#[test]
fn a_keystore_changed_by_another_host_meanwhile_is_never_overwritten() {
    let remote = Remote::new("race");
    ok(remote.init());
    let client = remote.client();
    let first = client.checkout_keystore().unwrap();
    let second = client.checkout_keystore().unwrap();
    let unchanged = client.checkin_keystore(&first).unwrap();
    assert!(!unchanged, "an unchanged keystore was uploaded");

    let grow = |copy: &ssefs::store::remote::WorkingCopy, byte: u8| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(copy.keystore())
            .unwrap();
        file.write_all(&[byte; 16]).unwrap();
    };
    grow(&first, 1);
    assert!(client.checkin_keystore(&first).unwrap());
    let won = remote.keystore_etag();
    grow(&second, 2);
    let err = client.checkin_keystore(&second).unwrap_err();
    assert!(matches!(err, WorkingCopyError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("run the command again"), "{err}");
    assert_eq!(remote.keystore_etag(), won);
}

#[test]
fn commands_that_read_objects_run_on_a_full_copy_and_put_back_what_they_change() {
    let remote = Remote::new("copy");
    ok(remote.init());
    // Stores with objects are checked through a mount in remote_mount.rs.
    for args in [
        vec!["fsck"],
        vec!["upgrade"],
        vec!["rewrap"],
        vec!["rotate-master", "--retire-unused"],
    ] {
        let out = remote.on_store(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            !said.contains("ssefs-keystore-"),
            "{args:?} names its copy: {said}"
        );
    }
    let fsck = ok(remote.on_store(&["fsck"]));
    assert!(fsck.contains(&remote.url), "{fsck}");
    let before = remote.keystore_etag();
    let out = remote.on_store(&["bucket-encryption", "get", "data"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no bucket"), "{}", text(&out));
    assert_eq!(
        remote.keystore_etag(),
        before,
        "a failed command uploads nothing"
    );
}

#[test]
fn bad_urls_endpoints_and_missing_credentials_get_clear_messages() {
    let remote = Remote::new("bad");
    let key = remote.key();
    for (args, needle) in [
        (
            vec!["init", "s3://ab/x", "--endpoint", &remote.endpoint],
            "bad bucket name",
        ),
        (vec!["init", "s3://abc/x"], "--endpoint"),
        (
            vec!["init", "s3://abc/x", "--endpoint", "localhost:9000"],
            "bad endpoint",
        ),
        (
            vec![
                "kms",
                "list",
                "--store",
                "s3://abc/a//b",
                "--endpoint",
                &remote.endpoint,
            ],
            "empty path segment",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--root-key", &key]);
        let out = remote.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    }
    let out = std::process::Command::new(SSEFS)
        .args([
            "init",
            &remote.url,
            "--endpoint",
            &remote.endpoint,
            "--root-key",
            &key,
        ])
        .env("HOME", remote.dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no credentials"), "{}", text(&out));
    assert!(!std::path::Path::new(&key).exists());
}

#[test]
fn errors_of_a_command_name_the_remote_store_not_its_working_copy() {
    let first = Remote::new("named");
    let second = Remote::new("other");
    ok(first.init());
    ok(second.init());
    // The root key of the second store does not open the first.
    let out = first.run(&[
        "kms",
        "list",
        "--store",
        &first.url,
        "--endpoint",
        &first.endpoint,
        "--root-key",
        &second.key(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("wrong root key"), "{said}");
    assert!(said.contains(&first.url), "{said}");
    assert!(!said.contains("ssefs-keystore-"), "{said}");
}

#[test]
fn endpoint_options_are_refused_for_a_local_store() {
    let remote = Remote::new("local");
    let store = s(&remote.dir.path().join("st")).to_string();
    let out = remote.run(&[
        "init",
        &store,
        "--endpoint",
        &remote.endpoint,
        "--root-key",
        &remote.key(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("local directory"), "{}", text(&out));
    assert!(!std::path::Path::new(&store).exists());
}

#[test]
fn systemd_credentials_reach_the_object_store() {
    let remote = Remote::new("systemd");
    ok(remote.init());
    let dir = remote.dir.path().join("credentials");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("aws-access-key-id"), support::s3::ACCESS_KEY).unwrap();
    std::fs::write(dir.join("aws-secret-access-key"), support::s3::SECRET_KEY).unwrap();
    let out = remote
        .command(&[
            "status",
            "--store",
            &remote.url,
            "--endpoint",
            &remote.endpoint,
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    assert!(ok(out).contains(&remote.url));
    // A wrong secret there is denied, not retried for long.
    std::fs::write(dir.join("aws-secret-access-key"), "wrong").unwrap();
    let out = remote
        .command(&[
            "status",
            "--store",
            &remote.url,
            "--endpoint",
            &remote.endpoint,
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("denied access"), "{}", text(&out));
}

#[test]
fn a_store_that_does_not_exist_is_named() {
    let remote = Remote::new("missing");
    let out = remote.on_store(&["kms", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not an ssefs store"), "{}", text(&out));
}

#[test]
fn kms_commands_racing_from_several_hosts_all_land() {
    let remote = Remote::new("race");
    ok(remote.init());
    // Four hosts create a key each at the same moment: the keystore object is written
    // with If-Match, a loser runs its command again on the new keystore, and every key
    // exists afterwards, each printed once by the run that landed.
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let alias = format!("alias/race-{i}");
            let mut cmd = remote.command(&[
                "kms",
                "create",
                "--alias",
                &alias,
                "--store",
                &remote.url,
                "--endpoint",
                &remote.endpoint,
                "--root-key",
                &remote.key(),
            ]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("run ssefs")
        })
        .collect();
    let mut ids = Vec::new();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let said = ok(out);
        let id_lines: Vec<&str> = said.lines().filter(|l| l.starts_with("KeyId:")).collect();
        assert_eq!(id_lines.len(), 1, "{said}");
        ids.push(id_lines[0].split_whitespace().last().unwrap().to_string());
    }
    let list = ok(remote.on_store(&["kms", "list"]));
    for (i, id) in ids.iter().enumerate() {
        assert!(list.contains(id.as_str()), "key {id} lost: {list}");
        assert!(list.contains(&format!("alias/race-{i}")), "{list}");
    }
}

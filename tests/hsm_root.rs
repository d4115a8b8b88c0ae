//! A root of trust in a PKCS#11 token, against a real SoftHSM2 (apt-get install softhsm2; set
//! SSEFS_SKIP_HSM_TESTS=1 to skip): init, mount, write, read and remount with the token; the
//! refusals (wrong PIN, missing token, missing key label, extractable or wrong keys); moving a
//! store between a key file, the token and a passphrase; the key never leaving the token;
//! helper mode with pkcs11 options and a token removed under a live mount; no secret in any
//! output. The mount tests also need root and /dev/fuse, as the other mount tests do.

mod support;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cli::{SSEFS, text};
use support::mount::{fusermount_u, is_mounted, is_ssefs_mount, mount_tests_enabled, wait_timeout};
use support::softhsm::{SoftHsm, USER_PIN, arg, hsm_tests_enabled, ssefs_with};

const KEY: &str = "ssefs-root";

/// A scratch directory with a SoftHSM token, a store path and a mountpoint.
struct Fixture {
    dir: tempfile::TempDir,
    hsm: SoftHsm,
    /// Every output of every command run, to search for secrets at the end.
    outputs: std::cell::RefCell<Vec<String>>,
}

impl Fixture {
    fn new(token: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("ssefs-hsm-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Fixture {
            dir,
            hsm: SoftHsm::new(token),
            outputs: Default::default(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file holding `pin` and a newline (for `--pin-fd 3`).
    fn pin_file(&self, pin: &str) -> PathBuf {
        let path = self.path(&format!("pin-{}", pin.len()));
        std::fs::write(&path, format!("{pin}\n")).unwrap();
        path
    }

    /// `ssefs ARGS` with `--pin-fd 3` reading `pin` (through the shell's redirection).
    fn with_pin(&self, pin: &str, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--pin-fd", "3"]);
        self.with_fd3(pin, &all)
    }

    /// `ssefs ARGS` with descriptor 3 reading `pin`.
    fn with_fd3(&self, pin: &str, args: &[&str]) -> Output {
        let pin_file = self.pin_file(pin);
        let cmd = ssefs_with(&self.hsm, &[]);
        let mut all = vec!["-c", "exec \"$0\" \"$@\" 3<\"$PIN_FILE\"", SSEFS];
        all.extend_from_slice(args);
        let out = Command::new("bash")
            .args(&all)
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("PIN_FILE", &pin_file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        self.outputs.borrow_mut().push(text(&out));
        out
    }

    /// `ssefs ARGS` with no PIN source but a terminal-less standard input.
    fn plain(&self, args: &[&str]) -> Output {
        let out = ssefs_with(&self.hsm, args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        self.outputs.borrow_mut().push(text(&out));
        out
    }

    fn ok(&self, out: Output) -> String {
        assert!(out.status.success(), "ssefs failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn refused(&self, out: Output, wanted: &str) {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(wanted), "wanted {wanted:?} in: {stderr}");
    }

    fn init_with_token(&self) -> String {
        let store = self.store();
        self.ok(self.with_pin(
            USER_PIN,
            &[
                "init",
                arg(&store),
                "--pkcs11-module",
                self.hsm.module_str(),
                "--token-label",
                &self.hsm.token,
                "--key-label",
                KEY,
            ],
        ))
    }

    /// `ssefs mount STORE MNT` in the foreground, the PIN as a systemd credential.
    fn mount(&self) -> TokenMount {
        let creds = self.hsm.pin_credentials("creds", USER_PIN);
        let log = self.path("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = ssefs_with(&self.hsm, &["mount", arg(&self.store()), arg(&self.mnt())])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        TokenMount::wait(self.mnt(), Some(child), log)
    }
}

/// A mount of the test; unmounted (and its daemon reaped) when dropped.
struct TokenMount {
    mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl TokenMount {
    fn wait(mnt: PathBuf, mut child: Option<Child>, log: PathBuf) -> TokenMount {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_ssefs_mount(&mnt) {
            if let Some(c) = child.as_mut() {
                if let Some(status) = c.try_wait().unwrap() {
                    panic!(
                        "ssefs mount exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            assert!(Instant::now() < deadline, "the mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        TokenMount { mnt, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TokenMount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) && !fusermount_u(&self.mnt).status.success() {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.mnt) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_token_store_is_made_mounted_written_read_and_remounted() {
    if !hsm_tests_enabled() || !mount_tests_enabled() {
        return;
    }
    let f = Fixture::new("mount-token");
    let said = f.init_with_token();
    assert!(said.contains("encrypted by the key"), "{said}");
    {
        let m = f.mount();
        std::fs::create_dir(m.mnt.join("docs")).unwrap();
        std::fs::write(m.mnt.join("docs/a.txt"), b"sealed by the token").unwrap();
        assert_eq!(
            std::fs::read(m.mnt.join("docs/a.txt")).unwrap(),
            b"sealed by the token"
        );
        // Key commands beside the mount take the PIN by descriptor.
        f.ok(f.with_pin(USER_PIN, &["rotate-master", "--store", arg(&f.store())]));
        f.ok(f.with_pin(USER_PIN, &["rewrap", "--store", arg(&f.store())]));
        f.ok(f.with_pin(USER_PIN, &["kms", "--store", arg(&f.store()), "create"]));
        let backup = f.path("keystore.bak");
        f.ok(f.plain(&[
            "keystore",
            "backup",
            "--store",
            arg(&f.store()),
            arg(&backup),
        ]));
        f.outputs.borrow_mut().push(m.log());
    }
    assert!(!is_mounted(&f.mnt()));
    // fsck authenticates every block with the keys the token gives.
    let fsck = f.ok(f.with_pin(USER_PIN, &["fsck", "--store", arg(&f.store())]));
    assert!(fsck.contains("1 verified"), "{fsck}");
    // A restore reads the token from the backup itself.
    let backup = f.path("keystore.bak");
    f.ok(f.with_pin(
        USER_PIN,
        &[
            "keystore",
            "restore",
            "--store",
            arg(&f.store()),
            arg(&backup),
        ],
    ));
    let m = f.mount();
    assert_eq!(
        std::fs::read(m.mnt.join("docs/a.txt")).unwrap(),
        b"sealed by the token"
    );
    f.outputs.borrow_mut().push(m.log());
    drop(m);
    no_secret_in(&f);
}

/// Neither the PIN nor the root secret (decrypted here with the token, as the test holds the
/// PIN) appears in any output, log, or the keystore file.
fn no_secret_in(f: &Fixture) {
    let root = ssefs::keystore::read_token_root(&f.store().join(".ssefs"))
        .unwrap()
        .expect("a token root");
    let store_id = ssefs::keystore::Keystore::read_store_id(&f.store().join(".ssefs")).unwrap();
    assert_eq!(root.mechanism, ssefs::keystore::TokenMechanism::AesGcm);
    let (iv, sealed) = root.wrapped.split_at(12);
    let mut iv = iv.to_vec();
    let aad = [b"ssefs/pkcs11-root/v1".as_slice(), store_id.as_bytes()].concat();
    let params = GcmParams::new(&mut iv, &aad, 128.into()).unwrap();
    let secret = f.hsm.decrypt(KEY, &Mechanism::AesGcm(params), sealed);
    assert_eq!(secret.len(), 32);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let outputs = f.outputs.borrow();
    assert!(!outputs.is_empty());
    for out in outputs.iter() {
        assert!(!out.contains(USER_PIN), "the PIN leaked: {out}");
        assert!(!out.contains(&hex), "the root secret leaked: {out}");
        assert!(!out.as_bytes().windows(32).any(|w| w == secret.as_slice()));
    }
    for entry in std::fs::read_dir(f.store().join(".ssefs")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(32).any(|w| w == secret.as_slice()),
                "{} holds the root secret",
                path.display()
            );
        }
    }
}

#[test]
fn wrong_pins_missing_tokens_and_keys_and_unfit_keys_are_refused() {
    if !hsm_tests_enabled() {
        return;
    }
    let f = Fixture::new("refusals");
    let store = f.store();
    let init = |key: &str, pin: &str| {
        f.with_pin(
            pin,
            &[
                "init",
                arg(&store),
                "--pkcs11-module",
                f.hsm.module_str(),
                "--token-label",
                &f.hsm.token,
                "--key-label",
                key,
            ],
        )
    };
    // A token named only in part is a usage error (status 2).
    let partial = f.plain(&[
        "init",
        arg(&store),
        "--pkcs11-module",
        f.hsm.module_str(),
        "--token-label",
        &f.hsm.token,
    ]);
    assert_eq!(partial.status.code(), Some(2), "{}", text(&partial));
    f.refused(init(KEY, "not-the-pin"), "wrong PIN for token \"refusals\"");
    assert!(!store.exists(), "a refused init leaves no store");
    f.hsm.make_aes_key("loose", 32, true);
    f.refused(init("loose", USER_PIN), "it is extractable");
    f.hsm.make_aes_key("short", 16, false);
    f.refused(init("short", USER_PIN), "it is an AES-128 key, not AES-256");
    f.hsm.make_key(
        "generic",
        Mechanism::GenericSecretKeyGen,
        &[
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ],
    );
    f.refused(init("generic", USER_PIN), "not an AES-256 key");
    let no_decrypt = [
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(false),
    ];
    f.hsm.make_key("one-way", Mechanism::AesKeyGen, &no_decrypt);
    f.refused(
        init("one-way", USER_PIN),
        "may not both encrypt and decrypt",
    );
    let missing_token = f.with_pin(
        USER_PIN,
        &[
            "init",
            arg(&store),
            "--pkcs11-module",
            f.hsm.module_str(),
            "--token-label",
            "elsewhere",
            "--key-label",
            KEY,
        ],
    );
    f.refused(missing_token, "no token labelled \"elsewhere\"");
    let no_module = f.with_pin(
        USER_PIN,
        &[
            "init",
            arg(&store),
            "--pkcs11-module",
            arg(&f.path("no-such-module.so")),
            "--token-label",
            &f.hsm.token,
            "--key-label",
            KEY,
        ],
    );
    f.refused(no_module, "cannot load the PKCS#11 module");
    assert!(!store.exists());

    f.ok(init(KEY, USER_PIN));
    let list = |pin: &str, extra: &[&str]| {
        let mut args = vec!["kms", "--store", arg(&store), "list"];
        args.extend_from_slice(extra);
        f.with_pin(pin, &args)
    };
    f.ok(list(USER_PIN, &[]));
    f.refused(list("0000", &[]), "wrong PIN for token \"refusals\"");
    f.refused(
        list(USER_PIN, &["--token-label", "gone"]),
        "no token labelled \"gone\"",
    );
    f.refused(
        list(USER_PIN, &["--key-label", "nope"]),
        "no key labelled \"nope\" in token \"refusals\"",
    );
    f.refused(
        list(USER_PIN, &["--key-label", "loose"]),
        "it is extractable",
    );
    // Another key put under the store's label: it does not decrypt the store's secret.
    f.hsm.make_aes_key("impostor", 32, false);
    f.refused(
        list(USER_PIN, &["--key-label", "impostor"]),
        "does not decrypt this store's root secret",
    );
    // A PIN credential that others may read is refused like a key file.
    let loose = f.hsm.pin_credentials("loose-creds", USER_PIN);
    std::fs::set_permissions(
        loose.join("pkcs11-pin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = ssefs_with(&f.hsm, &["kms", "--store", arg(&store), "list"])
        .env("CREDENTIALS_DIRECTORY", &loose)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    f.refused(out, "chmod 600");
    // No PIN source at all: a clear list of the ways to give one.
    f.refused(
        f.plain(&["kms", "--store", arg(&store), "list"]),
        "no PIN was given: give --pin-fd N, $SSEFS_PKCS11_PIN_FD=N",
    );
    // Token options on a store whose root key is a file.
    let file_store = f.path("file-store");
    f.ok(f.plain(&[
        "init",
        arg(&file_store),
        "--root-key",
        arg(&f.path("file.key")),
    ]));
    f.refused(
        f.with_pin(USER_PIN, &["kms", "--store", arg(&file_store), "list"]),
        "is not in a token",
    );
}

#[test]
fn the_token_key_is_not_extractable_and_its_value_cannot_be_read() {
    if !hsm_tests_enabled() {
        return;
    }
    let f = Fixture::new("sealed-key");
    f.init_with_token();
    let attributes = f.hsm.key_attributes(
        KEY,
        &[
            AttributeType::Extractable,
            AttributeType::Sensitive,
            AttributeType::NeverExtractable,
            AttributeType::KeyType,
            AttributeType::ValueLen,
        ],
    );
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::NeverExtractable(true)),
        "{attributes:?}"
    );
    assert!(attributes.contains(&Attribute::KeyType(KeyType::AES)));
    assert!(attributes.contains(&Attribute::ValueLen(32.into())));
    assert!(
        !f.hsm.key_value_readable(KEY),
        "CKA_VALUE must not be readable"
    );
    // A second store on the same token uses the existing key.
    let again = f.with_pin(
        USER_PIN,
        &[
            "init",
            arg(&f.path("second")),
            "--pkcs11-module",
            f.hsm.module_str(),
            "--token-label",
            &f.hsm.token,
            "--key-label",
            KEY,
        ],
    );
    f.ok(again);
    f.hsm.with_session(|session| {
        assert_eq!(SoftHsm::keys(session, KEY).len(), 1, "the key was reused");
    });
}

/// Writes objects through a mount of a key-file store, then moves its root of trust file →
/// token → passphrase → file; after each step fsck authenticates every object and a mount
/// reads them back.
#[test]
fn change_root_key_moves_a_store_between_file_token_and_passphrase() {
    if !hsm_tests_enabled() || !mount_tests_enabled() {
        return;
    }
    let f = Fixture::new("move-token");
    let store = f.store();
    let key = f.path("first.key");
    f.ok(f.plain(&["init", arg(&store), "--root-key", arg(&key)]));
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("bkt/f{i}"), vec![b'a' + i as u8; 5000 + i * 70_000]))
        .collect();
    {
        let child = ssefs_with(&f.hsm, &["mount", arg(&store), arg(&f.mnt())])
            .args(["--root-key", arg(&key)])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = TokenMount::wait(f.mnt(), Some(child), f.path("unused.log"));
        std::fs::create_dir(m.mnt.join("bkt")).unwrap();
        for (name, data) in &files {
            std::fs::write(m.mnt.join(name), data).unwrap();
        }
    }
    let verified = |out: Output| {
        let report = f.ok(out);
        assert!(
            report.contains(&format!("{} verified", files.len())),
            "{report}"
        );
    };
    verified(f.plain(&["fsck", "--store", arg(&store), "--root-key", arg(&key)]));

    // file → token
    let moved = f.with_fd3(
        USER_PIN,
        &[
            "change-root-key",
            "--store",
            arg(&store),
            "--root-key",
            arg(&key),
            "--new-pkcs11-module",
            f.hsm.module_str(),
            "--new-token-label",
            &f.hsm.token,
            "--new-key-label",
            KEY,
            "--new-pin-fd",
            "3",
        ],
    );
    let said = f.ok(moved);
    assert!(said.contains("in token \"move-token\""), "{said}");
    f.refused(
        f.plain(&["fsck", "--store", arg(&store), "--root-key", arg(&key)]),
        "wrong root key",
    );
    verified(f.with_pin(USER_PIN, &["fsck", "--store", arg(&store)]));
    {
        let m = f.mount();
        for (name, data) in &files {
            assert_eq!(&std::fs::read(m.mnt.join(name)).unwrap(), data, "{name}");
        }
    }

    // token → passphrase (the old PIN by --pin-fd 3, the new passphrase by descriptor 4)
    let pass = f.path("pass");
    std::fs::write(&pass, "a long passphrase\n").unwrap();
    let pin_file = f.pin_file(USER_PIN);
    let out = Command::new("bash")
        .args([
            "-c",
            "exec \"$0\" \"$@\" 3<\"$PIN_FILE\" 4<\"$PASS_FILE\"",
            SSEFS,
            "change-root-key",
            "--store",
            arg(&store),
            "--pin-fd",
            "3",
            "--new-passphrase",
            "--new-passphrase-fd",
            "4",
        ])
        .env("SOFTHSM2_CONF", f.hsm.conf())
        .env("PIN_FILE", &pin_file)
        .env("PASS_FILE", &pass)
        .env("HOME", "/nonexistent")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    f.ok(out);
    assert!(
        ssefs::keystore::read_token_root(&store.join(".ssefs"))
            .unwrap()
            .is_none(),
        "the token record goes with the change"
    );
    let with_pass = |args: &[&str]| {
        let out = Command::new("bash")
            .args([
                "-c",
                "exec \"$0\" \"$@\" --passphrase-fd 4 4<\"$PASS_FILE\"",
                SSEFS,
            ])
            .args(args)
            .env("PASS_FILE", &pass)
            .env("HOME", "/nonexistent")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        f.outputs.borrow_mut().push(text(&out));
        out
    };
    verified(with_pass(&["fsck", "--store", arg(&store)]));
    f.refused(
        f.with_pin(USER_PIN, &["fsck", "--store", arg(&store)]),
        "is not in a token",
    );

    // passphrase → file
    let last = f.path("last.key");
    f.ok(with_pass(&[
        "change-root-key",
        "--store",
        arg(&store),
        "--new-root-key",
        arg(&last),
    ]));
    verified(f.plain(&["fsck", "--store", arg(&store), "--root-key", arg(&last)]));
    let child = ssefs_with(&f.hsm, &["mount", arg(&store), arg(&f.mnt())])
        .args(["--root-key", arg(&last)])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = TokenMount::wait(f.mnt(), Some(child), f.path("unused.log"));
    for (name, data) in &files {
        assert_eq!(&std::fs::read(m.mnt.join(name)).unwrap(), data, "{name}");
    }
}

/// `mount.fuse3 STORE MNT -t fuse.ssefs -o pkcs11_module=…,pkcs11_token=…,pkcs11_key=…,pin_fd=3`
/// (what mount(8) runs for such an fstab line), the PIN by an inherited descriptor; then the token is taken away under the live mount:
/// reads and writes with the keys already unwrapped go on, a new command is refused.
#[test]
fn helper_mode_mounts_with_pkcs11_options_and_outlives_the_token() {
    if !hsm_tests_enabled() || !mount_tests_enabled() {
        return;
    }
    let f = Fixture::new("fstab-token");
    f.init_with_token();
    let options = format!(
        "pkcs11_module={},pkcs11_token={},pkcs11_key={KEY},pin_fd=3,nofail,_netdev",
        f.hsm.module_str(),
        f.hsm.token
    );
    let pin_file = f.pin_file(USER_PIN);
    // mount.fuse3 runs `ssefs STORE MNT -o OPTIONS` from PATH, as mount(8) does for an fstab
    // line of type fuse.ssefs; the PIN descriptor is inherited through both.
    let bin_dir = std::path::Path::new(SSEFS).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args([
            "-c",
            "exec mount.fuse3 \"$@\" 3<\"$PIN_FILE\"",
            "mount.fuse3",
            arg(&f.store()),
            arg(&f.mnt()),
            "-t",
            "fuse.ssefs",
            "-o",
            &options,
        ])
        .env("PATH", path)
        .env("SOFTHSM2_CONF", f.hsm.conf())
        .env("PIN_FILE", &pin_file)
        .env("HOME", "/nonexistent")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "helper mode: {said}");
    f.outputs.borrow_mut().push(said);
    let m = TokenMount::wait(f.mnt(), None, f.path("unused.log"));
    std::fs::create_dir(m.mnt.join("logs")).unwrap();
    std::fs::write(m.mnt.join("logs/before"), b"written with the token").unwrap();

    f.hsm.remove_tokens();
    assert_eq!(
        std::fs::read(m.mnt.join("logs/before")).unwrap(),
        b"written with the token"
    );
    std::fs::write(m.mnt.join("logs/after"), b"written without it").unwrap();
    assert_eq!(
        std::fs::read(m.mnt.join("logs/after")).unwrap(),
        b"written without it"
    );
    f.refused(
        f.with_pin(USER_PIN, &["kms", "--store", arg(&f.store()), "list"]),
        "no token labelled \"fstab-token\"",
    );
    f.hsm.restore_tokens();
    f.ok(f.with_pin(USER_PIN, &["kms", "--store", arg(&f.store()), "list"]));
    drop(m);
    assert!(!is_mounted(&f.mnt()));
    // A wrong PIN in helper mode: refused before anything is mounted, status non-zero.
    let out = Command::new("bash")
        .args([
            "-c",
            "exec \"$0\" \"$@\" 3<\"$PIN_FILE\"",
            SSEFS,
            arg(&f.store()),
            arg(&f.mnt()),
            "-o",
            &options,
        ])
        .env("SOFTHSM2_CONF", f.hsm.conf())
        .env("PIN_FILE", f.pin_file("wrong-pin"))
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong PIN"), "{}", text(&out));
    assert!(!is_mounted(&f.mnt()));
    no_secret_in(&f);
}

//! `ssefs init` through the real binary: the layout and modes it creates, where the root key
//! goes, and that every refusal changes nothing on disk.

mod support;

use ssefs::crypto::Key256;
use ssefs::keystore::{Keystore, keystore_dir, load_root_key_file};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::cli::SSEFS;
use support::cli::assert_failed_with;

/// A scratch directory with a private HOME, so no test touches the real user's config.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// `ssefs ARGS` with HOME in the scratch directory and no root key variables set.
    fn ssefs(&self, args: &[&Path]) -> Command {
        let mut cmd = Command::new(SSEFS);
        cmd.args(args)
            .env("HOME", self.path("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY");
        cmd
    }
    fn init(&self, store: &str, key: Option<&str>) -> Output {
        let (store, key) = (self.path(store), key.map(|k| self.path(k)));
        let mut args: Vec<&Path> = vec![Path::new("init"), &store];
        if let Some(key) = &key {
            args.extend([Path::new("--root-key"), key]);
        }
        self.ssefs(&args).output().unwrap()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `root` with its mode and (for files) bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let bytes = meta.is_file().then(|| std::fs::read(&path).unwrap());
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.insert(path, (meta.permissions().mode() & 0o7777, bytes));
        }
    }
    out
}

fn write_key(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn init_creates_a_private_store_and_a_new_root_key() {
    let s = Scratch::new();
    let out = s.init("store", Some("keys/root.key"));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(&s.path("store").display().to_string()),
        "{stdout}"
    );
    assert!(
        stdout.contains(&s.path("keys/root.key").display().to_string()),
        "{stdout}"
    );
    assert!(stdout.contains("back it up"), "{stdout}");

    let state = keystore_dir(&s.path("store"));
    assert_eq!(mode(&s.path("store")), 0o700);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("tmp")), 0o700);
    assert_eq!(mode(&state.join("lock")), 0o600);
    assert_eq!(std::fs::read(state.join("lock")).unwrap(), b"");
    assert_eq!(mode(&state.join("keystore.db")), 0o600);
    assert_eq!(mode(&s.path("keys")), 0o700);
    assert_eq!(mode(&s.path("keys/root.key")), 0o600);

    let root = load_root_key_file(&s.path("keys/root.key")).unwrap();
    let ks = Keystore::open(&state, &root).unwrap();
    assert_eq!(ks.current_master_key().unwrap().0, 1);
    drop(ks);
    // Exactly the expected entries: nothing else was created in the store.
    let names: Vec<_> = tree(&s.path("store"))
        .into_keys()
        .map(|p| p.strip_prefix(s.path("store")).unwrap().to_path_buf())
        .collect();
    assert_eq!(
        names,
        [".ssefs", ".ssefs/keystore.db", ".ssefs/lock", ".ssefs/tmp"].map(PathBuf::from)
    );
}

#[test]
fn init_uses_an_existing_private_root_key() {
    let s = Scratch::new();
    let key = Key256::generate().unwrap();
    write_key(&s.path("root.key"), key.expose_secret(), 0o600);
    let out = s.init("store", Some("root.key"));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("existing root key"));
    assert_eq!(
        std::fs::read(s.path("root.key")).unwrap(),
        key.expose_secret()
    );
    Keystore::open(&keystore_dir(&s.path("store")), &key).unwrap();
}

#[test]
fn init_twice_fails_and_leaves_the_store_byte_identical() {
    let s = Scratch::new();
    assert!(s.init("store", Some("root.key")).status.success());
    let before = tree(s.dir.path());
    assert_failed_with(
        &s.init("store", Some("root.key")),
        "is already an ssefs store",
    );
    assert_failed_with(
        &s.init("store", Some("other.key")),
        "is already an ssefs store",
    );
    assert_failed_with(&s.init("store", None), "is already an ssefs store");
    assert_eq!(tree(s.dir.path()), before);
}

#[test]
fn init_refuses_a_non_empty_directory_or_a_file() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("full")).unwrap();
    std::fs::write(s.path("full/data"), b"keep me").unwrap();
    std::fs::write(s.path("plain"), b"a file").unwrap();
    let before = tree(s.dir.path());
    assert_failed_with(&s.init("full", Some("root.key")), "is not empty");
    assert_failed_with(&s.init("plain", Some("root.key")), "is not a directory");
    assert_eq!(tree(s.dir.path()), before);
}

#[test]
fn init_accepts_an_existing_empty_directory() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("empty")).unwrap();
    let out = s.init("empty", Some("root.key"));
    assert!(out.status.success(), "{out:?}");
    assert!(keystore_dir(&s.path("empty")).join("keystore.db").is_file());
}

#[test]
fn init_refuses_a_root_key_others_can_read_or_of_the_wrong_size() {
    let s = Scratch::new();
    write_key(&s.path("open.key"), &[7u8; 32], 0o640);
    write_key(&s.path("short.key"), &[7u8; 31], 0o600);
    let before = tree(s.dir.path());
    let out = s.init("store", Some("open.key"));
    assert_failed_with(&out, "mode 0640");
    assert_failed_with(&out, &format!("chmod 600 {}", s.path("open.key").display()));
    assert_failed_with(&s.init("store", Some("short.key")), "is 31 bytes");
    assert_eq!(
        tree(s.dir.path()),
        before,
        "a refused init created something"
    );
}

#[test]
fn init_refuses_a_root_key_inside_a_store() {
    let s = Scratch::new();
    assert!(s.init("first", Some("root.key")).status.success());
    let before = tree(s.dir.path());
    assert_failed_with(&s.init("store", Some("store/root.key")), "inside the store");
    assert_failed_with(
        &s.init("second", Some("first/k/root.key")),
        "inside the store",
    );
    assert_eq!(tree(s.dir.path()), before);
}

#[test]
fn default_root_key_goes_under_xdg_config_home_named_by_store_id() {
    let s = Scratch::new();
    let xdg = s.path("xdg");
    let out = s
        .ssefs(&[Path::new("init"), &s.path("store")])
        .env("XDG_CONFIG_HOME", &xdg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let state = keystore_dir(&s.path("store"));
    let id = Keystore::read_store_id(&state).unwrap();
    let key_path = xdg.join(format!("ssefs/keys/{id}.key"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&key_path.display().to_string()));
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&xdg.join("ssefs")), 0o700);
    assert_eq!(mode(&xdg.join("ssefs/keys")), 0o700);
    Keystore::open(&state, &load_root_key_file(&key_path).unwrap()).unwrap();
    assert!(
        !s.path("home").exists(),
        "HOME used although XDG_CONFIG_HOME is set"
    );
}

#[test]
fn default_root_key_falls_back_to_home_config() {
    let s = Scratch::new();
    assert!(s.init("store", None).status.success());
    let id = Keystore::read_store_id(&keystore_dir(&s.path("store"))).unwrap();
    let key_path = s.path(&format!("home/.config/ssefs/keys/{id}.key"));
    assert_eq!(mode(&key_path), 0o600);
}

#[test]
fn root_key_from_environment_and_credentials_directory() {
    let s = Scratch::new();
    let out = s
        .ssefs(&[Path::new("init"), &s.path("a")])
        .env("SSEFS_ROOT_KEY_FILE", s.path("env.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let env_key = load_root_key_file(&s.path("env.key")).unwrap();
    Keystore::open(&keystore_dir(&s.path("a")), &env_key).unwrap();

    std::fs::create_dir(s.path("creds")).unwrap();
    let cred = Key256::generate().unwrap();
    write_key(&s.path("creds/root-key"), cred.expose_secret(), 0o400);
    let out = s
        .ssefs(&[Path::new("init"), &s.path("b")])
        .env("CREDENTIALS_DIRECTORY", s.path("creds"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    Keystore::open(&keystore_dir(&s.path("b")), &cred).unwrap();
}

#[test]
fn a_failed_init_removes_only_what_it_created() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("home/.config")).unwrap();
    std::fs::write(s.path("home/.config/other"), b"mine").unwrap();
    let before = tree(s.dir.path());
    // The store's parent does not exist: the new root key and its directories go again.
    assert_failed_with(&s.init("missing/store", None), "cannot create directory");
    assert_eq!(tree(s.dir.path()), before);
}

//! A SoftHSM2 token for the tests whose root of trust is in PKCS#11: a temporary
//! `SOFTHSM2_CONF` and token directory, a token made with `softhsm2-util --init-token`, the
//! module's path, and in-process `cryptoki` sessions (one at a time) to make or inspect keys.
//! Everything is removed when the `SoftHsm` is dropped.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Set to `1` to skip (loudly) the tests that need SoftHSM2.
pub const SKIP_VAR: &str = "SSEFS_SKIP_HSM_TESTS";
/// Names the PKCS#11 module when it is not where Debian and Fedora put it.
pub const MODULE_VAR: &str = "SSEFS_TEST_PKCS11_MODULE";
pub const USER_PIN: &str = "4711-user";
pub const SO_PIN: &str = "0815-so";

/// One in-process PKCS#11 context at a time: the module reads `SOFTHSM2_CONF` when it is
/// initialised, and each test has its own.
static IN_PROCESS: Mutex<()> = Mutex::new(());

/// Whether the token tests can run here; fails the test with what is missing unless
/// `SSEFS_SKIP_HSM_TESTS=1` (then it says it skipped).
pub fn hsm_tests_enabled() -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {SKIP_VAR}=1 is set, this test needs SoftHSM2");
        return false;
    }
    assert!(
        module_path().is_some()
            && Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok(),
        "{test} needs SoftHSM2 (apt-get install softhsm2; or name the module with \
         {MODULE_VAR}). Set {SKIP_VAR}=1 to skip the token tests explicitly."
    );
    true
}

/// The SoftHSM2 PKCS#11 module: `$SSEFS_TEST_PKCS11_MODULE`, the usual places, or what
/// `dpkg -L libsofthsm2` lists.
pub fn module_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(MODULE_VAR) {
        return Some(PathBuf::from(path));
    }
    let usual = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/lib/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];
    if let Some(found) = usual.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(found);
    }
    let listed = Command::new("dpkg")
        .args(["-L", "libsofthsm2"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(PathBuf::from)
        .find(|p| p.file_name().is_some_and(|n| n == "libsofthsm2.so") && p.is_file())
}

/// A temporary SoftHSM2 with one initialised token.
pub struct SoftHsm {
    dir: tempfile::TempDir,
    pub module: PathBuf,
    pub token: String,
}

impl SoftHsm {
    /// A new token labelled `token` (user PIN [`USER_PIN`]) in a directory of its own.
    pub fn new(token: &str) -> SoftHsm {
        let module = module_path().expect("the SoftHSM2 module (see hsm_tests_enabled)");
        let dir = tempfile::Builder::new()
            .prefix("ssefs-softhsm-")
            .tempdir()
            .unwrap();
        let hsm = SoftHsm {
            dir,
            module,
            token: token.to_string(),
        };
        std::fs::create_dir(hsm.tokens()).unwrap();
        std::fs::write(
            hsm.conf(),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                hsm.tokens().display()
            ),
        )
        .unwrap();
        hsm.init_token(token);
        hsm
    }

    /// Initialises another token in the same SoftHSM.
    pub fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util --init-token: {out:?}");
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    pub fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    pub fn module_str(&self) -> &str {
        self.module.to_str().unwrap()
    }

    /// A directory of systemd-style credentials holding `pkcs11-pin` (mode 0600) = `pin`.
    pub fn pin_credentials(&self, name: &str, pin: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pkcs11-pin");
        std::fs::write(&file, format!("{pin}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        dir
    }

    /// Takes the tokens away (as if the token were unplugged); `restore_tokens` puts them back.
    pub fn remove_tokens(&self) {
        std::fs::rename(self.tokens(), self.dir.path().join("tokens-away")).unwrap();
        std::fs::create_dir(self.tokens()).unwrap();
    }

    pub fn restore_tokens(&self) {
        std::fs::remove_dir(self.tokens()).unwrap();
        std::fs::rename(self.dir.path().join("tokens-away"), self.tokens()).unwrap();
    }

    /// Runs `f` on a logged-in read-write session of the token, in this process.
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> T {
        let _one = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY (test only): every in-process use of the module holds IN_PROCESS, and the
        // other threads of the test binary pass SOFTHSM2_CONF to their children explicitly.
        unsafe { std::env::set_var("SOFTHSM2_CONF", self.conf()) };
        let context = Pkcs11::new(&self.module).unwrap();
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = context
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|slot| context.get_token_info(*slot).unwrap().label().trim_end() == self.token)
            .expect("the test token");
        let session = context.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
            .unwrap();
        let result = f(&session);
        drop(session);
        context.finalize().unwrap();
        result
    }

    /// Makes a secret key labelled `label` in the token with `attributes` on top of the
    /// class, label and persistence.
    pub fn make_key(&self, label: &str, mechanism: Mechanism<'_>, attributes: &[Attribute]) {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        template.extend_from_slice(attributes);
        self.with_session(|session| session.generate_key(&mechanism, &template).unwrap());
    }

    /// An AES key of `bytes` bytes that may or may not be extracted.
    pub fn make_aes_key(&self, label: &str, bytes: u64, extractable: bool) {
        self.make_key(
            label,
            Mechanism::AesKeyGen,
            &[
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(bytes.into()),
                Attribute::Sensitive(!extractable),
                Attribute::Extractable(extractable),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        );
    }

    /// The handles of the secret keys labelled `label`.
    pub fn keys(session: &Session, label: &str) -> Vec<ObjectHandle> {
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()
    }

    /// The attributes of the one key labelled `label` that the token gives out.
    pub fn key_attributes(&self, label: &str, wanted: &[AttributeType]) -> Vec<Attribute> {
        self.with_session(|session| {
            let keys = SoftHsm::keys(session, label);
            assert_eq!(keys.len(), 1, "one key labelled {label}");
            session.get_attributes(keys[0], wanted).unwrap()
        })
    }

    /// Whether the token gives out the key's value (`CKA_VALUE`), which it must not.
    pub fn key_value_readable(&self, label: &str) -> bool {
        self.with_session(|session| {
            let keys = SoftHsm::keys(session, label);
            match session.get_attributes(keys[0], &[AttributeType::Value]) {
                Ok(found) => found.iter().any(|a| matches!(a, Attribute::Value(_))),
                Err(_) => false,
            }
        })
    }

    /// Decrypts with the key labelled `label` (for the tests that look for the root secret in
    /// logs and files: the test holds the PIN, so it may).
    pub fn decrypt(&self, label: &str, mechanism: &Mechanism<'_>, data: &[u8]) -> Vec<u8> {
        self.with_session(|session| {
            let keys = SoftHsm::keys(session, label);
            session.decrypt(mechanism, keys[0], data).unwrap()
        })
    }
}

/// Runs `ssefs` with this SoftHSM's configuration and nothing of the caller's keys.
pub fn ssefs_with(hsm: &SoftHsm, args: &[&str]) -> Command {
    let mut cmd = super::cli::ssefs_cmd(args);
    cmd.env("SOFTHSM2_CONF", hsm.conf())
        .env_remove("SSEFS_PKCS11_PIN_FD")
        .env_remove("SSEFS_PASSPHRASE_FD");
    cmd
}

/// The path as an argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

//! Property tests of the inputs a user controls outside object data (the crypto tests already
//! fuzz the header parser and mutated objects): bucket names, CMK aliases and ids, mount
//! options, and extended attribute names and values through the fs core. Nothing panics,
//! every input is accepted or refused with its documented errno, and accepted input round-trips.

mod support;

use proptest::prelude::*;
use ssefs::cli::mount::MountOptions;
use ssefs::crypto::Key256;
use ssefs::fs::{ROOT_INO, SSE_ATTR, SSE_KEY_ID_ATTR, validate_bucket_name};
use ssefs::keystore::{CmkOrigin, Keystore, validate_alias};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use support::core::{CoreStore, ROOT};

/// The OSS bucket rule, written independently of the implementation.
fn oss_bucket_name(bytes: &[u8]) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| ok(b) || b == b'-')
        && ok(bytes[0])
        && ok(bytes[bytes.len() - 1])
}

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..70),
        "[a-z0-9-]{0,66}".prop_map(String::into_bytes),
        "[a-zA-Z0-9._-]{1,8}".prop_map(String::into_bytes),
    ]
}

/// One store shared by the cases (creating a keystore per case would dominate the run).
/// A static is never dropped, so its directory is removed when the test process exits.
fn shared_store() -> &'static std::sync::Mutex<CoreStore> {
    static STORE: OnceLock<std::sync::Mutex<CoreStore>> = OnceLock::new();
    static STORE_DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    extern "C" fn remove_store_dir() {
        if let Some(dir) = STORE_DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    STORE.get_or_init(|| {
        let store = CoreStore::local();
        if STORE_DIR.set(store.path()).is_ok() {
            // SAFETY: registers a plain function with no captured state, run once at exit.
            unsafe { libc::atexit(remove_store_dir) };
        }
        std::sync::Mutex::new(store)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn bucket_names_follow_the_oss_rule_everywhere(name in name_bytes()) {
        let expected = oss_bucket_name(&name) && name != b".ssefs";
        let os = OsStr::from_bytes(&name);
        prop_assert_eq!(validate_bucket_name(os).is_ok(), expected);
        let guard = shared_store().lock().unwrap();
        let fs = guard.fs();
        match fs.mkdir(ROOT, ROOT_INO, os, 0o755) {
            Ok(attr) => {
                prop_assert!(expected, "{:?} was accepted", String::from_utf8_lossy(&name));
                prop_assert_eq!(fs.getxattr(attr.ino, OsStr::new(SSE_ATTR)).unwrap(), b"AES256");
                fs.rmdir(ROOT_INO, os).unwrap();
            }
            Err(e) => {
                // Valid names can only fail because they exist already or are not
                // components at all; anything else is EINVAL.
                let errno = e.errno();
                if expected {
                    prop_assert_eq!(errno, libc::EEXIST, "{}", e);
                } else {
                    prop_assert_eq!(errno, libc::EINVAL, "{:?}: {}", String::from_utf8_lossy(&name), e);
                }
            }
        }
    }

    #[test]
    fn aliases_are_validated_and_never_panic(alias in prop_oneof![
        ".{0,300}",
        "alias/[A-Za-z0-9_/:-]{0,260}",
        "alias/acs/[a-z]{1,5}",
    ]) {
        let name = alias.strip_prefix("alias/");
        let expected = alias.len() <= 255
            && name.is_some_and(|n| !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/:".contains(&b)));
        prop_assert_eq!(validate_alias(&alias).is_ok(), expected, "{:?}", alias);
    }

    #[test]
    fn cmk_lookups_by_any_text_fail_cleanly(id in ".{0,80}") {
        let guard = shared_store().lock().unwrap();
        let keys = keystore();
        match keys.resolve_cmk(&id) {
            Ok((key_id, _, _)) => prop_assert!(!key_id.is_empty()),
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(!shown.is_empty());
                prop_assert!(!shown.contains('\n'), "a multi-line error: {}", shown);
            }
        }
        drop(guard);
    }

    #[test]
    fn mount_options_parse_or_refuse_without_panicking(
        tokens in prop::collection::vec(prop_oneof![
            Just("allow_other".to_string()),
            Just("ro".to_string()),
            Just("rw".to_string()),
            Just("default_permissions".to_string()),
            Just("default_sse=AES256".to_string()),
            Just("default_sse=KMS".to_string()),
            Just("default_sse=none".to_string()),
            Just("fsname=vault".to_string()),
            Just("noatime".to_string()),
            Just("x-systemd.automount".to_string()),
            "[a-z_=,]{0,12}",
            ".{0,12}",
        ], 0..6)
    ) {
        let joined = tokens.join(",");
        let parsed = MountOptions::parse(&[joined.as_str()]);
        let known = |t: &str| t.is_empty()
            || t.starts_with("x-")
            || matches!(t, "allow_other" | "allow_root" | "default_permissions" | "ro" | "rw"
                | "auto_unmount" | "noexec" | "exec" | "noatime" | "atime" | "nodev" | "nosuid"
                | "defaults" | "nofail" | "_netdev" | "auto" | "noauto"
                | "default_sse=AES256" | "default_sse=KMS" | "default_sse=none")
            || t.strip_prefix("fsname=").is_some_and(|v| !v.is_empty());
        let all_known = joined.split(',').all(known);
        let conflict = joined.split(',').any(|t| t == "allow_other")
            && joined.split(',').any(|t| t == "allow_root");
        match parsed {
            Ok(options) => {
                prop_assert!(all_known && !conflict, "{:?} was accepted", joined);
                prop_assert_eq!(options.read_only, joined.split(',').rfind(|t| *t == "ro" || *t == "rw") == Some("ro"));
            }
            Err(message) => {
                prop_assert!(!all_known || conflict, "{:?} was refused: {}", joined, message);
                prop_assert!(!message.contains('\n'));
            }
        }
    }

    #[test]
    fn xattr_names_and_values_are_stored_or_refused_with_their_errno(
        name in prop_oneof![
            "user\\.[a-z.]{1,20}",
            Just(SSE_ATTR.to_string()),
            Just(SSE_KEY_ID_ATTR.to_string()),
            "user\\.oss\\.[a-z-]{0,10}",
            "(trusted|security|system)\\.[a-z_.]{1,12}",
            ".{0,12}",
        ],
        value in prop::collection::vec(any::<u8>(), 0..600),
        flags in prop_oneof![Just(0), Just(libc::XATTR_CREATE), Just(libc::XATTR_REPLACE)],
    ) {
        let guard = shared_store().lock().unwrap();
        let fs = guard.fs();
        let bucket = match fs.lookup(ROOT_INO, OsStr::new("xattrs")) {
            Ok(attr) => attr.ino,
            Err(_) => fs.mkdir(ROOT, ROOT_INO, OsStr::new("xattrs"), 0o755).unwrap().ino,
        };
        let file = match fs.lookup(bucket, OsStr::new("file")) {
            Ok(attr) => attr.ino,
            Err(_) => guard.put(bucket, "file", b"payload").unwrap(),
        };
        let os = OsStr::new(&name);
        let before = fs.getxattr(file, os).ok();
        let reserved = name.starts_with("user.oss.") || name.starts_with("user.ssefs.");
        match fs.setxattr(ROOT, file, os, &value, flags) {
            Ok(()) => {
                prop_assert!(name.starts_with("user.") && name.len() > 5, "{:?} accepted", name);
                if !reserved {
                    prop_assert_eq!(fs.getxattr(file, os).unwrap(), value);
                }
            }
            Err(e) => {
                let errno = e.errno();
                let allowed: &[i32] = if reserved {
                    &[libc::EOPNOTSUPP, libc::EINVAL, libc::ENOKEY, libc::EEXIST, libc::ENODATA, libc::EPERM]
                } else if name.starts_with("user.") {
                    &[libc::EEXIST, libc::ENODATA, libc::EINVAL, libc::ERANGE, libc::ENOSPC, libc::E2BIG]
                } else {
                    &[libc::EOPNOTSUPP, libc::EINVAL, libc::ERANGE]
                };
                prop_assert!(allowed.contains(&errno), "{:?}: errno {} ({})", name, errno, e);
                prop_assert_eq!(fs.getxattr(file, os).ok(), before, "a refused set changed {:?}", name);
            }
        }
        prop_assert_eq!(guard.read_all(file).unwrap(), b"payload");
    }
}

/// A keystore of its own for CMK lookups (with the default CMK made, so lookups can succeed).
fn keystore() -> &'static Keystore {
    static KEYS: OnceLock<(tempfile::TempDir, Keystore)> = OnceLock::new();
    let (_, keys) = KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keystore::create(dir.path(), &Key256::generate().unwrap()).unwrap();
        keys.default_cmk().unwrap();
        keys.create_cmk("fuzz", Some("alias/fuzz"), CmkOrigin::Ssefs, 0)
            .unwrap();
        (dir, keys)
    });
    keys
}

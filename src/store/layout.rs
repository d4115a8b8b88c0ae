//! The layout of a store on disk, named once: the meta directory, the keystore file and its
//! SQLite companions, the lock, the temporary directory and the kinds of temporary file ssefs
//! makes there. Every other module asks here; none spells these names itself.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The store's metadata directory, `STORE/.ssefs`: never exposed through the mount.
pub const META_DIR: &str = ".ssefs";
/// The keystore's file name inside [`META_DIR`].
pub const KEYSTORE_FILE: &str = "keystore.db";
/// Suffixes of the files SQLite keeps beside the keystore (write-ahead log, shared memory).
pub const KEYSTORE_COMPANION_SUFFIXES: [&str; 2] = ["-wal", "-shm"];
/// The lock file inside [`META_DIR`] a mounted daemon holds with `flock(LOCK_EX)`.
pub const LOCK_FILE: &str = "lock";
/// The directory inside [`META_DIR`] that holds temporary files ([`TempKind`]).
pub const TMP_DIR: &str = "tmp";
/// In a store in an object store: the directory under the meta directory where each mount
/// keeps its heartbeat object (`.ssefs/hosts/HOST-PID-NONCE`).
pub const HOSTS_DIR: &str = "hosts";
/// A remote store's leases (one holder at a time among its hosts): `META_DIR/leases/NAME`.
pub const LEASES_DIR: &str = "leases";
/// In a store in an object store: the marker object of every directory, which holds the
/// attributes of the directory and of its entries (`FORMAT.md`, "A remote store").
pub const REMOTE_DIR_MARKER: &str = ".ssefs-dir";

/// Random bytes in a temporary file's name after its prefix (written as lowercase hex).
pub(super) const TEMP_RANDOM_BYTES: usize = 12;

/// `STORE/.ssefs`, where the keystore, the lock and the temporary directory live.
pub fn meta_dir(store: &Path) -> PathBuf {
    store.join(META_DIR)
}

/// `STORE/.ssefs/keystore.db`.
pub fn keystore_path(store: &Path) -> PathBuf {
    meta_dir(store).join(KEYSTORE_FILE)
}

/// `.ssefs/keystore.db`: the keystore's path relative to the store, for reports.
pub fn keystore_rel_path() -> PathBuf {
    Path::new(META_DIR).join(KEYSTORE_FILE)
}

/// The files SQLite keeps next to the database `db` (of any name: a keystore or a backup).
pub fn companion_files(db: &Path) -> [PathBuf; 2] {
    KEYSTORE_COMPANION_SUFFIXES.map(|suffix| {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// What follows [`KEYSTORE_FILE`] in the name of a keystore a restore replaced and kept
/// (`keystore.db.replaced-SECONDS`, `-N` added when that name is taken).
const REPLACED_KEYSTORE_INFIX: &str = ".replaced-";

/// `DIR/keystore.db.replaced-SECONDS` (with `-N` for `n > 0`): where a restore keeps the
/// keystore it replaced, when asked to.
pub fn replaced_keystore_path(dir: &Path, seconds: u64, n: u32) -> PathBuf {
    let mut name = format!("{KEYSTORE_FILE}{REPLACED_KEYSTORE_INFIX}{seconds}");
    if n > 0 {
        name.push_str(&format!("-{n}"));
    }
    dir.join(name)
}

/// Whether `name` is a keystore a restore kept (not its `-wal` or `-shm`).
pub fn is_replaced_keystore(name: &OsStr) -> bool {
    let prefix = format!("{KEYSTORE_FILE}{REPLACED_KEYSTORE_INFIX}");
    name.as_bytes()
        .strip_prefix(prefix.as_bytes())
        .is_some_and(|rest| {
            !rest.is_empty() && rest.iter().all(|b| b.is_ascii_digit() || *b == b'-')
        })
}

/// `STORE/.ssefs/lock`.
pub fn lock_path(store: &Path) -> PathBuf {
    meta_dir(store).join(LOCK_FILE)
}

/// `.ssefs/tmp`: the temporary directory relative to the store.
pub fn temp_rel_dir() -> PathBuf {
    Path::new(META_DIR).join(TMP_DIR)
}

/// The kinds of temporary file ssefs makes in `.ssefs/tmp/`: a prefix, then
/// [`TEMP_RANDOM_BYTES`] random bytes in lowercase hex. Only a mounted daemon (holding the
/// store lock) makes them, so without a lock holder every one is a leftover of a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TempKind {
    /// A new object being written before it is published under its name (atomic create).
    /// Never visible to users; a leftover is garbage.
    Create,
    /// A re-encryption: the new object before the `RENAME_EXCHANGE` with the old one, or the
    /// old object after it. Either way the object's own name holds a whole object (the old
    /// or the new one), so a leftover is garbage too.
    Reencrypt,
}

impl TempKind {
    /// Every kind, for scans.
    pub const ALL: [TempKind; 2] = [TempKind::Create, TempKind::Reencrypt];

    /// The name prefix of this kind's files.
    pub fn prefix(self) -> &'static str {
        match self {
            TempKind::Create => "create-",
            TempKind::Reencrypt => "reencrypt-",
        }
    }

    /// The kind of a temporary file name ssefs made, or `None` for any other name (which
    /// ssefs therefore never removes).
    pub fn parse(name: &OsStr) -> Option<TempKind> {
        let bytes = name.as_bytes();
        TempKind::ALL.into_iter().find(|kind| {
            bytes
                .strip_prefix(kind.prefix().as_bytes())
                .is_some_and(|rest| {
                    rest.len() == 2 * TEMP_RANDOM_BYTES
                        && rest
                            .iter()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                })
        })
    }

    /// A new name of this kind from `random`.
    pub(super) fn name(self, random: &[u8; TEMP_RANDOM_BYTES]) -> String {
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{hex}", self.prefix())
    }

    /// What a leftover of this kind is, for fsck's report.
    pub fn leftover(self) -> &'static str {
        match self {
            TempKind::Create => "an object being created when ssefs stopped; never published",
            TempKind::Reencrypt => {
                "one side of a re-encryption interrupted by a crash; the object's own name \
                 holds the old or the new object whole"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_keystores_are_told_from_their_companions() {
        let dir = Path::new("/s/.ssefs");
        for path in [
            replaced_keystore_path(dir, 17, 0),
            replaced_keystore_path(dir, 17, 2),
        ] {
            let name = path.file_name().unwrap();
            assert!(is_replaced_keystore(name), "{path:?}");
            for companion in companion_files(&path) {
                assert!(!is_replaced_keystore(companion.file_name().unwrap()));
            }
        }
        for other in [
            "keystore.db",
            "keystore.db.replaced-",
            "keystore.db.restore-1",
        ] {
            assert!(!is_replaced_keystore(OsStr::new(other)), "{other}");
        }
    }

    #[test]
    fn names_made_parse_back_to_their_kind() {
        for kind in TempKind::ALL {
            let name = kind.name(&[0xab; TEMP_RANDOM_BYTES]);
            assert!(name.starts_with(kind.prefix()));
            assert_eq!(TempKind::parse(OsStr::new(&name)), Some(kind), "{name}");
        }
    }

    #[test]
    fn other_names_are_not_temporaries() {
        let hex = "0123456789abcdef01234567";
        for name in [
            "notes.txt".to_string(),
            "create-".to_string(),
            "create-0123".to_string(),
            format!("create-{hex}0"),
            format!("create-{}", hex.to_uppercase()),
            format!("replace-{hex}"),
            format!("reencrypt-{hex}.bak"),
        ] {
            assert_eq!(TempKind::parse(OsStr::new(&name)), None, "{name}");
        }
        assert_eq!(
            TempKind::parse(OsStr::new(&format!("reencrypt-{hex}"))),
            Some(TempKind::Reencrypt)
        );
    }

    #[test]
    fn paths_are_under_the_meta_dir() {
        let store = Path::new("/srv/store");
        assert_eq!(meta_dir(store), Path::new("/srv/store/.ssefs"));
        assert_eq!(
            keystore_path(store),
            Path::new("/srv/store/.ssefs/keystore.db")
        );
        assert_eq!(lock_path(store), Path::new("/srv/store/.ssefs/lock"));
        assert_eq!(keystore_rel_path(), Path::new(".ssefs/keystore.db"));
        assert_eq!(temp_rel_dir(), Path::new(".ssefs/tmp"));
    }
}

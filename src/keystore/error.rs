//! Errors of the keystore layer: one variant per situation a caller may treat differently,
//! each with a message a user can act on. Never carries key material.

use std::path::PathBuf;

use super::CmkState;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("wrong root key for this store")]
    WrongRootKey,
    #[error("keystore database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An I/O error on a named file or directory.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),

    #[error("no ssefs keystore at {}", .0.display())]
    Missing(PathBuf),
    #[error("a keystore already exists at {}", .0.display())]
    AlreadyExists(PathBuf),
    #[error("not an ssefs keystore: {}", .0.display())]
    NotAKeystore(PathBuf),
    #[error("keystore schema version {found} is newer than this ssefs ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// The keystore holds rows this ssefs cannot make sense of (or a secret that fails to
    /// unwrap under the right root key).
    #[error("corrupted keystore: {0}")]
    Corrupt(String),
    /// A secret file (root key or keystore) that group or others may access.
    #[error(
        "{} has mode {mode:04o}, which gives group or others access to a secret; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error("root key file {} does not exist", .0.display())]
    RootKeyMissing(PathBuf),
    #[error("root key file {} is not a regular file", .0.display())]
    RootKeyNotAFile(PathBuf),
    #[error("root key file {} is {size} bytes; a root key file holds exactly 32 bytes", path.display())]
    RootKeyWrongSize { path: PathBuf, size: u64 },
    #[error("root key file {} already exists; refusing to overwrite it", .0.display())]
    RootKeyExists(PathBuf),
    #[error(
        "cannot find a place for the root key: give --root-key FILE or set SSEFS_ROOT_KEY_FILE, \
         XDG_CONFIG_HOME or HOME"
    )]
    NoRootKeyLocation,

    #[error("no master key version {0} in this keystore")]
    UnknownMasterKey(u32),
    /// A CMK id or alias that does not exist (`ENOKEY`).
    #[error("no such CMK: {0}")]
    UnknownKey(String),
    /// A CMK material version that does not exist (`ENOKEY`).
    #[error("CMK {key_id} has no material version {version}")]
    UnknownKeyVersion { key_id: String, version: u32 },
    /// A CMK that is not `Enabled` (`EKEYREVOKED`).
    #[error("CMK {key_id} is {state}, not Enabled")]
    KeyRevoked { key_id: String, state: CmkState },
    /// A CMK material version whose material was deleted (`EKEYREVOKED`).
    #[error("the material of CMK {key_id} version {version} has been deleted")]
    KeyMaterialDeleted { key_id: String, version: u32 },
    #[error(
        "invalid alias {0:?}: an alias is `alias/` followed by 1-249 letters, digits, `_`, `-`, \
         `/` or `:`"
    )]
    InvalidAlias(String),
    #[error("alias {0} is reserved for ssefs")]
    ReservedAlias(String),
    #[error("alias {0} already exists")]
    AliasExists(String),
    #[error("invalid bucket encryption rule: {0}")]
    InvalidBucketRule(String),
}

impl KeystoreError {
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::File {
            action,
            path,
            source,
        }
    }
}

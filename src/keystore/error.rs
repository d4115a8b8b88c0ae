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
    /// The PKCS#11 token that holds the root of trust refused or failed.
    #[error(transparent)]
    Token(#[from] super::pkcs11::TokenError),

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
    /// Sealed rows were added, changed or removed outside ssefs (each named).
    #[error("the keystore was changed outside ssefs: {}", .0.join("; "))]
    Tampered(Vec<String>),
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
    /// An algorithm other than `AES256` or `KMS` (`EINVAL`).
    #[error("unknown server-side encryption algorithm {0:?}: use AES256 or KMS")]
    InvalidAlgorithm(String),
    #[error(
        "invalid bucket name {0:?}: a bucket name is 3-63 characters of a-z, 0-9 and -, \
         starting and ending with a letter or digit"
    )]
    InvalidBucketName(String),

    /// The caller may not do this with this CMK (`EACCES`).
    #[error("access denied: uid {uid} may not {action} with CMK {key_id}")]
    AccessDenied {
        key_id: String,
        uid: u32,
        action: String,
    },
    /// A state change the CMK's current state does not allow.
    #[error("cannot {action} CMK {key_id}: it is {state}{hint}")]
    InvalidKeyState {
        key_id: String,
        state: CmkState,
        action: &'static str,
        /// Empty, or "; " and what to do instead.
        hint: &'static str,
    },
    #[error("CMK {0} is managed by ssefs (an alias under alias/acs/); it cannot be changed")]
    ServiceManagedKey(String),
    #[error("the pending window must be 7 to 30 days, not {0}")]
    InvalidPendingDays(i64),
    #[error("a description is at most 8192 bytes, not {0}")]
    DescriptionTooLong(usize),
    #[error("no such alias: {0}")]
    UnknownAlias(String),
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    #[error("CMK {key_id} has no grant to {grantee}")]
    UnknownGrant { key_id: String, grantee: String },
    #[error("invalid audit setting: {0}")]
    InvalidAuditSetting(String),

    #[error(
        "CMK {0} has origin ssefs; only a CMK created with origin EXTERNAL takes imported material"
    )]
    NotExternal(String),
    #[error("CMK {0} has no import parameters; run `ssefs kms get-import-params` first")]
    NoImportParams(String),
    #[error(
        "the import token is not the current one of CMK {key_id}{other}; tokens are one-time: \
         run `ssefs kms get-import-params` again"
    )]
    ImportTokenMismatch {
        key_id: String,
        /// Empty, or " (it belongs to CMK …)".
        other: String,
    },
    #[error(
        "the import parameters of CMK {key_id} expired at {expired_at} (unix time); run \
         `ssefs kms get-import-params` again"
    )]
    ImportParamsExpired { key_id: String, expired_at: i64 },
    #[error("invalid key material for CMK {key_id}: {reason}")]
    InvalidImportMaterial { key_id: String, reason: String },
    #[error(
        "the material differs from the material CMK {0} had; a CMK only ever takes back the \
         same material"
    )]
    MaterialMismatch(String),
}

impl KeystoreError {
    /// Whether the keystore file itself is damaged (SQLite finds it corrupt or not a
    /// database), as opposed to a refused or failed operation: restoring a backup helps.
    pub fn is_damage(&self) -> bool {
        match self {
            KeystoreError::Corrupt(_) => true,
            KeystoreError::Database(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ),
            _ => false,
        }
    }
}

impl KeystoreError {
    /// The result an audit record gives for this error.
    pub fn audit_result(&self) -> &'static str {
        match self {
            Self::AccessDenied { .. } => "AccessDenied",
            Self::UnknownKey(_) | Self::UnknownKeyVersion { .. } | Self::UnknownAlias(_) => {
                "NotFound"
            }
            Self::KeyRevoked { .. } | Self::KeyMaterialDeleted { .. } => "KeyRevoked",
            Self::InvalidKeyState { .. } | Self::ServiceManagedKey(_) => "InvalidState",
            Self::ImportTokenMismatch { .. }
            | Self::ImportParamsExpired { .. }
            | Self::NoImportParams(_)
            | Self::InvalidImportMaterial { .. }
            | Self::MaterialMismatch(_)
            | Self::NotExternal(_)
            | Self::InvalidAlias(_)
            | Self::ReservedAlias(_)
            | Self::AliasExists(_)
            | Self::InvalidGrant(_)
            | Self::UnknownGrant { .. }
            | Self::InvalidPendingDays(_)
            | Self::DescriptionTooLong(_)
            | Self::InvalidBucketRule(_)
            | Self::InvalidAlgorithm(_)
            | Self::InvalidBucketName(_)
            | Self::InvalidAuditSetting(_) => "InvalidParameter",
            Self::WrongRootKey
            | Self::Database(_)
            | Self::Io(_)
            | Self::File { .. }
            | Self::Crypto(_)
            | Self::Token(_)
            | Self::Missing(_)
            | Self::AlreadyExists(_)
            | Self::NotAKeystore(_)
            | Self::SchemaTooNew { .. }
            | Self::Corrupt(_)
            | Self::Tampered(_)
            | Self::InsecurePermissions { .. }
            | Self::RootKeyMissing(_)
            | Self::RootKeyNotAFile(_)
            | Self::RootKeyWrongSize { .. }
            | Self::RootKeyExists(_)
            | Self::NoRootKeyLocation
            | Self::UnknownMasterKey(_) => "Failed",
        }
    }
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

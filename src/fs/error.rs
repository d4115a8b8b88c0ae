//! The one error type of the filesystem core and the one place it becomes an errno.
//! Every variant is matched explicitly, so a new case cannot silently become `EIO`.

use crate::crypto::CryptoError;
use crate::keystore::KeystoreError;
use std::ffi::OsString;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("no such file or directory")]
    NotFound,
    #[error("inode {0} is not known (stale)")]
    StaleInode(u64),
    #[error("file handle {0} is not open")]
    BadHandle(u64),
    #[error(
        "invalid bucket name {0:?}: 3-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
    )]
    InvalidBucketName(OsString),
    #[error("invalid name {0:?}")]
    InvalidName(OsString),
    #[error("only buckets (directories) may be created at the mount root")]
    NotABucket,
    #[error("device nodes are not supported")]
    DeviceNode,
    #[error("buckets cannot be renamed and nothing moves into or out of the mount root")]
    BucketRename,
    #[error("the mount is read-only")]
    ReadOnly,
    #[error("is a directory")]
    IsADirectory,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("permission denied")]
    AccessDenied,
    #[error("{0} is reserved for the encryption policy and is not one of its attributes")]
    ReservedAttribute(String),
    #[error("{0} is maintained by ssefs and cannot be set or removed")]
    InternalAttribute(String),
    #[error("invalid value {value:?} for {attribute}: expected {expected}")]
    InvalidSseValue {
        attribute: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("a KMS key id goes only with the KMS algorithm")]
    KeyIdWithoutKms,
    #[error("encryption attributes can be set only on buckets and objects")]
    NotBucketOrObject,
    #[error("only the bucket's owner or root may change its encryption")]
    NotBucketOwner,
    #[error("the attribute already exists")]
    AttributeExists,
    #[error("an object with several hard links cannot be re-encrypted atomically")]
    MultipleLinks,
    #[error("the object was moved or replaced during its re-encryption; try again")]
    ObjectMoved,
    #[error("only user.* extended attributes are supported")]
    UnsupportedAttribute,
    #[error("no such attribute")]
    NoAttribute,
    #[error("{0} is on another filesystem than the store")]
    OtherFilesystem(String),
    #[error("the key {0} of this object is not in the keystore")]
    UnknownKey(String),
    #[error("an earlier failure left this open object unusable")]
    Poisoned,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

impl FsError {
    /// The errno a tool sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Io(e) => io_errno(e),
            FsError::NotFound => libc::ENOENT,
            FsError::StaleInode(_) => libc::ESTALE,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::InvalidBucketName(_) | FsError::InvalidName(_) => libc::EINVAL,
            FsError::NotABucket | FsError::DeviceNode | FsError::NotPermitted => libc::EPERM,
            FsError::BucketRename => libc::EXDEV,
            FsError::ReadOnly => libc::EROFS,
            FsError::IsADirectory => libc::EISDIR,
            FsError::AccessDenied => libc::EACCES,
            FsError::ReservedAttribute(_) | FsError::UnsupportedAttribute => libc::EOPNOTSUPP,
            FsError::InternalAttribute(_) | FsError::NotBucketOwner => libc::EPERM,
            FsError::InvalidSseValue { .. }
            | FsError::KeyIdWithoutKms
            | FsError::NotBucketOrObject => libc::EINVAL,
            FsError::AttributeExists => libc::EEXIST,
            FsError::MultipleLinks => libc::EMLINK,
            FsError::ObjectMoved => libc::EAGAIN,
            FsError::NoAttribute => libc::ENODATA,
            FsError::OtherFilesystem(_) => libc::EXDEV,
            FsError::UnknownKey(_) => libc::ENOKEY,
            FsError::Poisoned => libc::EIO,
            FsError::Crypto(e) => crypto_errno(e),
            FsError::Keystore(e) => keystore_errno(e),
        }
    }

    /// Whether this is an object failing authentication or parsing: logged with its path.
    pub fn is_integrity_failure(&self) -> bool {
        match self {
            FsError::Crypto(e) => crypto_errno(e) == libc::EIO && !matches!(e, CryptoError::Io(_)),
            _ => false,
        }
    }
}

fn io_errno(e: &io::Error) -> i32 {
    // An I/O error without an OS code (short read of a backing file) is an I/O failure.
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn crypto_errno(e: &CryptoError) -> i32 {
    match e {
        CryptoError::Io(e) => io_errno(e),
        // Never return unauthenticated data: every integrity failure is EIO.
        CryptoError::ReadOnlyVersion(_) => libc::EROFS,
        CryptoError::NotAnObject
        | CryptoError::UnsupportedVersion(_)
        | CryptoError::Malformed(_)
        | CryptoError::Authentication(_) => libc::EIO,
        CryptoError::Random => libc::EIO,
    }
}

fn keystore_errno(e: &KeystoreError) -> i32 {
    match e {
        KeystoreError::Io(e) | KeystoreError::File { source: e, .. } => io_errno(e),
        KeystoreError::Crypto(e) => crypto_errno(e),
        KeystoreError::UnknownMasterKey(_)
        | KeystoreError::UnknownKey(_)
        | KeystoreError::UnknownKeyVersion { .. }
        | KeystoreError::UnknownAlias(_)
        | KeystoreError::UnknownGrant { .. } => libc::ENOKEY,
        KeystoreError::AccessDenied { .. } => libc::EACCES,
        // The token holding the root of trust is gone or refuses: no new key can be had.
        KeystoreError::KeyRevoked { .. }
        | KeystoreError::KeyMaterialDeleted { .. }
        | KeystoreError::Token(_) => libc::EKEYREVOKED,
        KeystoreError::InvalidAlias(_)
        | KeystoreError::ReservedAlias(_)
        | KeystoreError::InvalidBucketRule(_)
        | KeystoreError::InvalidAlgorithm(_)
        | KeystoreError::InvalidBucketName(_)
        | KeystoreError::InvalidKeyState { .. }
        | KeystoreError::ServiceManagedKey(_)
        | KeystoreError::InvalidPendingDays(_)
        | KeystoreError::DescriptionTooLong(_)
        | KeystoreError::InvalidGrant(_)
        | KeystoreError::InvalidAuditSetting(_)
        | KeystoreError::NotExternal(_)
        | KeystoreError::NoImportParams(_)
        | KeystoreError::ImportTokenMismatch { .. }
        | KeystoreError::ImportParamsExpired { .. }
        | KeystoreError::InvalidImportMaterial { .. }
        | KeystoreError::MaterialMismatch(_) => libc::EINVAL,
        KeystoreError::AliasExists(_) | KeystoreError::AlreadyExists(_) => libc::EEXIST,
        KeystoreError::InsecurePermissions { .. } => libc::EACCES,
        // The keystore itself is unusable: nothing the caller can fix through the mount.
        KeystoreError::WrongRootKey
        | KeystoreError::Database(_)
        | KeystoreError::Missing(_)
        | KeystoreError::NotAKeystore(_)
        | KeystoreError::SchemaTooNew { .. }
        | KeystoreError::Corrupt(_)
        | KeystoreError::Tampered(_)
        | KeystoreError::RootKeyMissing(_)
        | KeystoreError::RootKeyNotAFile(_)
        | KeystoreError::RootKeyWrongSize { .. }
        | KeystoreError::RootKeyExists(_)
        | KeystoreError::NoRootKeyLocation => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_failures_are_eio_and_flagged() {
        let e = FsError::Crypto(CryptoError::Authentication("block 3".into()));
        assert_eq!(e.errno(), libc::EIO);
        assert!(e.is_integrity_failure());
        let e = FsError::Crypto(CryptoError::Io(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(!e.is_integrity_failure());
    }

    #[test]
    fn policy_errors_have_their_errno() {
        assert_eq!(FsError::NotABucket.errno(), libc::EPERM);
        assert_eq!(FsError::InvalidBucketName("A".into()).errno(), libc::EINVAL);
        assert_eq!(FsError::BucketRename.errno(), libc::EXDEV);
        assert_eq!(
            FsError::ReservedAttribute("x".into()).errno(),
            libc::EOPNOTSUPP
        );
        assert_eq!(FsError::NoAttribute.errno(), libc::ENODATA);
        let revoked = KeystoreError::KeyRevoked {
            key_id: "k".into(),
            state: crate::keystore::CmkState::Disabled,
        };
        assert_eq!(FsError::Keystore(revoked).errno(), libc::EKEYREVOKED);
        let token_gone = KeystoreError::Token(crate::keystore::TokenError::Unreachable {
            token: "ssefs".into(),
            reason: "CKR_DEVICE_REMOVED".into(),
        });
        assert_eq!(FsError::Keystore(token_gone).errno(), libc::EKEYREVOKED);
        let unknown = KeystoreError::UnknownKey("alias/x".into());
        assert_eq!(FsError::Keystore(unknown).errno(), libc::ENOKEY);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        let denied = FsError::Keystore(KeystoreError::AccessDenied {
            key_id: "k".into(),
            uid: 1000,
            action: "decrypt".into(),
        });
        assert_eq!(denied.errno(), libc::EACCES);
        assert_eq!(FsError::KeyIdWithoutKms.errno(), libc::EINVAL);
        assert_eq!(FsError::NotBucketOrObject.errno(), libc::EINVAL);
        assert_eq!(FsError::NotBucketOwner.errno(), libc::EPERM);
        assert_eq!(FsError::InternalAttribute("x".into()).errno(), libc::EPERM);
        assert_eq!(FsError::MultipleLinks.errno(), libc::EMLINK);
    }
}

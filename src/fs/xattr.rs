//! Extended attributes: `user.*` stored in clear on the backing file, and the reserved
//! `user.oss.*` names that report the encryption of an object or a bucket's default rule.
//! Setting or removing the reserved names is not supported yet (`EOPNOTSUPP`).

use super::inode::Inode;
use super::policy::algorithm_name;
use super::{BucketFs, FsError, ROOT_INO};
use crate::crypto::{Algorithm, KeyRef};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// `x-oss-server-side-encryption`: `AES256` or `KMS`.
pub const SSE_ATTR: &str = "user.oss.server-side-encryption";
/// `x-oss-server-side-encryption-key-id`: the CMK of a `KMS` object or bucket rule.
pub const SSE_KEY_ID_ATTR: &str = "user.oss.server-side-encryption-key-id";
const RESERVED_PREFIX: &[u8] = b"user.oss.";
const USER_PREFIX: &[u8] = b"user.";

/// How a node is encrypted, as the reserved attributes report it.
struct Encryption {
    algorithm: Algorithm,
    key_id: Option<String>,
}

impl BucketFs {
    /// The encryption the reserved attributes describe: an object's header, or a bucket's
    /// rule; `None` for other nodes.
    fn encryption_of(&self, inode: &Inode) -> Result<Option<Encryption>, FsError> {
        if inode.is_file() {
            let header = self.read_header(inode)?;
            let key_id = match header.key_ref {
                KeyRef::Cmk { key_id, .. } => Some(key_id),
                KeyRef::None | KeyRef::Master { .. } => None,
            };
            return Ok(Some(Encryption {
                algorithm: header.algorithm,
                key_id,
            }));
        }
        if inode.is_dir() && inode.ino != ROOT_INO && self.is_bucket(inode)? {
            let bucket = self.bucket_of(inode)?;
            return Ok(self.keys.bucket_rule(&bucket)?.map(|rule| Encryption {
                algorithm: rule.algorithm,
                key_id: rule.kms_key_id,
            }));
        }
        Ok(None)
    }

    fn is_bucket(&self, inode: &Inode) -> Result<bool, FsError> {
        let path = self.backing().path_of(inode.fd())?;
        Ok(path.parent() == Some(self.store.root()))
    }

    fn reserved_value(&self, inode: &Inode, name: &[u8]) -> Result<Vec<u8>, FsError> {
        let encryption = self.encryption_of(inode)?.ok_or(FsError::NoAttribute)?;
        let value = if name == SSE_ATTR.as_bytes() {
            algorithm_name(encryption.algorithm).map(str::to_string)
        } else if name == SSE_KEY_ID_ATTR.as_bytes() && encryption.algorithm == Algorithm::Kms {
            encryption.key_id
        } else {
            None
        };
        value.map(String::into_bytes).ok_or(FsError::NoAttribute)
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, FsError> {
        let inode = self.inodes.get(ino)?;
        let bytes = name.as_bytes();
        if bytes.starts_with(RESERVED_PREFIX) {
            return self.reserved_value(&inode, bytes);
        }
        if !bytes.starts_with(USER_PREFIX) || inode.is_symlink() {
            return Err(FsError::NoAttribute);
        }
        match self.backing().get_xattr(inode.fd(), name) {
            Ok(value) => Ok(value),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Err(FsError::NoAttribute),
            Err(e) => Err(e.into()),
        }
    }

    /// The attribute names, NUL-terminated: the stored `user.*` ones and the reserved ones
    /// that apply to this node.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let inode = self.inodes.get(ino)?;
        let mut list = Vec::new();
        if let Some(encryption) = self.encryption_of(&inode)? {
            if algorithm_name(encryption.algorithm).is_some() {
                list.extend_from_slice(SSE_ATTR.as_bytes());
                list.push(0);
            }
            if encryption.algorithm == Algorithm::Kms && encryption.key_id.is_some() {
                list.extend_from_slice(SSE_KEY_ID_ATTR.as_bytes());
                list.push(0);
            }
        }
        if inode.is_symlink() {
            return Ok(list);
        }
        let stored = self.backing().list_xattr(inode.fd())?;
        for name in stored.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(USER_PREFIX) && !name.starts_with(RESERVED_PREFIX) {
                list.extend_from_slice(name);
                list.push(0);
            }
        }
        Ok(list)
    }

    fn check_settable(&self, inode: &Inode, name: &OsStr) -> Result<(), FsError> {
        self.writable()?;
        let bytes = name.as_bytes();
        if bytes.starts_with(RESERVED_PREFIX) {
            return Err(FsError::ReservedAttribute(
                name.to_string_lossy().into_owned(),
            ));
        }
        if !bytes.starts_with(USER_PREFIX) {
            return Err(FsError::UnsupportedAttribute);
        }
        if inode.is_symlink() {
            // Linux allows no user.* attributes on symlinks.
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }

    pub fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), FsError> {
        let inode = self.inodes.get(ino)?;
        self.check_settable(&inode, name)?;
        Ok(self.backing().set_xattr(inode.fd(), name, value, flags)?)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<(), FsError> {
        let inode = self.inodes.get(ino)?;
        self.check_settable(&inode, name)?;
        match self.backing().remove_xattr(inode.fd(), name) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Err(FsError::NoAttribute),
            Err(e) => Err(e.into()),
        }
    }
}

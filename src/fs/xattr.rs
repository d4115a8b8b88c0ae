//! Extended attributes: `user.*` stored in clear on the backing file, the reserved
//! `user.oss.*` names that report and change the encryption of an object (by re-encrypting
//! it) or a bucket's default rule, the read-only `user.ssefs.key-version` and the write-only
//! `user.ssefs.rewrap` (re-wraps an object's DEK under the newest version of its key).

use super::inode::Inode;
use super::policy::{
    RuleChange, SseAttribute, SseSetting, algorithm_name, bucket_attribute_exists,
    bucket_rule_after_remove, bucket_rule_after_set, object_attribute_exists,
    object_setting_after_set,
};
use super::reencrypt::Reencryption;
use super::rewrap::REWRAP_ATTR;
use super::view::BUCKET_ATTR;
use super::{BucketFs, Caller, FsError};
use crate::crypto::{Algorithm, KeyRef};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// `x-oss-server-side-encryption`: `AES256` or `KMS`.
pub const SSE_ATTR: &str = "user.oss.server-side-encryption";
/// `x-oss-server-side-encryption-key-id`: the CMK of a `KMS` object or bucket rule.
pub const SSE_KEY_ID_ATTR: &str = "user.oss.server-side-encryption-key-id";
/// The version of the master key or CMK material wrapping an object's DEK (read-only,
/// unlisted).
pub const KEY_VERSION_ATTR: &str = "user.ssefs.key-version";
/// An object's file ID in hex (read-only, unlisted): new at every re-encryption, so tools
/// can tell whether a request rewrote the object.
pub const FILE_ID_ATTR: &str = "user.ssefs.file-id";
const RESERVED_PREFIX: &[u8] = b"user.oss.";
const INTERNAL_PREFIX: &[u8] = b"user.ssefs.";
const USER_PREFIX: &[u8] = b"user.";

/// How a node is encrypted, as the reserved attributes report it.
struct Encryption {
    algorithm: Algorithm,
    key_id: Option<String>,
    key_version: Option<u32>,
    file_id: Option<[u8; 16]>,
}

/// What the encryption attributes apply to.
enum SseNode {
    Object,
    Bucket(String),
    /// The mount root and directories below a bucket: nothing (no inheritance).
    Directory,
    /// Symlinks and special files.
    Other,
}

impl BucketFs {
    /// The encryption the reserved attributes describe: an object's header, or a bucket's
    /// rule; `None` for other nodes.
    fn encryption_of(&self, inode: &Inode) -> Result<Option<Encryption>, FsError> {
        if inode.is_file() {
            let header = self.read_header(inode)?;
            let (key_id, key_version) = match header.key_ref {
                KeyRef::Cmk { key_id, version } => (Some(key_id), Some(version)),
                KeyRef::Master { version } => (None, Some(version)),
                KeyRef::None => (None, None),
            };
            return Ok(Some(Encryption {
                algorithm: header.algorithm,
                key_id,
                key_version,
                file_id: Some(header.file_id),
            }));
        }
        if let Some(bucket) = self.bucket_node(inode)? {
            return Ok(self.keys.bucket_rule(&bucket)?.map(|rule| Encryption {
                algorithm: rule.algorithm,
                key_id: rule.kms_key_id,
                key_version: None,
                file_id: None,
            }));
        }
        Ok(None)
    }

    fn reserved_value(&self, inode: &Inode, name: &[u8]) -> Result<Vec<u8>, FsError> {
        let encryption = self.encryption_of(inode)?.ok_or(FsError::NoAttribute)?;
        let value = if name == SSE_ATTR.as_bytes() {
            algorithm_name(encryption.algorithm).map(str::to_string)
        } else if name == SSE_KEY_ID_ATTR.as_bytes() && encryption.algorithm == Algorithm::Kms {
            encryption.key_id
        } else if name == KEY_VERSION_ATTR.as_bytes() {
            encryption.key_version.map(|v| v.to_string())
        } else if name == FILE_ID_ATTR.as_bytes() {
            let hex = |id: [u8; 16]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
            encryption.file_id.map(hex)
        } else {
            None
        };
        value.map(String::into_bytes).ok_or(FsError::NoAttribute)
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, FsError> {
        let inode = self.inodes.get(ino)?;
        let bytes = name.as_bytes();
        if bytes == BUCKET_ATTR.as_bytes() {
            return self.bucket_attr(&inode);
        }
        if bytes.starts_with(RESERVED_PREFIX) || bytes.starts_with(INTERNAL_PREFIX) {
            return self.reserved_value(&inode, bytes);
        }
        if !bytes.starts_with(USER_PREFIX) {
            // Like a filesystem without ACLs or security labels: tools such as `ls -l` remember
            // an unsupported namespace per filesystem and stop asking for each file.
            return Err(FsError::UnsupportedAttribute);
        }
        if inode.is_symlink() {
            return Err(FsError::NoAttribute);
        }
        match self.backing().get_xattr(inode.fd()?.as_fd(), name) {
            Ok(value) => Ok(value),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Err(FsError::NoAttribute),
            Err(e) => Err(e.into()),
        }
    }

    /// The attribute names, NUL-terminated: the stored `user.*` ones and, on an object, the
    /// reserved ones that apply. A bucket's rule is readable by name but not listed: tools
    /// that mirror attributes (`rsync -aX src/ bucket/`) would otherwise delete it.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let inode = self.inodes.get(ino)?;
        let mut list = Vec::new();
        let object = if inode.is_file() {
            self.encryption_of(&inode)?
        } else {
            None
        };
        if let Some(encryption) = object {
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
        let stored = self.backing().list_xattr(inode.fd()?.as_fd())?;
        for name in stored.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(USER_PREFIX)
                && !name.starts_with(RESERVED_PREFIX)
                && !name.starts_with(INTERNAL_PREFIX)
            {
                list.extend_from_slice(name);
                list.push(0);
            }
        }
        Ok(list)
    }

    fn check_settable(&self, inode: &Inode, name: &OsStr) -> Result<(), FsError> {
        self.writable()?;
        let bytes = name.as_bytes();
        if bytes.starts_with(INTERNAL_PREFIX) {
            return Err(FsError::InternalAttribute(
                name.to_string_lossy().into_owned(),
            ));
        }
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

    /// Sets an attribute. On an object, the encryption attributes re-encrypt it; on a bucket
    /// they change its default rule (its owner or root only).
    pub fn setxattr(
        &self,
        caller: Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), FsError> {
        let inode = self.inodes.get(ino)?;
        if name.as_bytes() == REWRAP_ATTR.as_bytes() {
            // Write-only: re-wraps the object's DEK under the newest version of its key.
            self.check_may_write(caller, &inode)?;
            self.rewrap(caller, &inode)?;
            return Ok(());
        }
        if let Some(attribute) = SseAttribute::from_name(name.as_bytes()) {
            self.change_sse(caller, &inode, attribute, Some(value), flags)?;
            return Ok(());
        }
        self.check_settable(&inode, name)?;
        Ok(self
            .backing()
            .set_xattr(inode.fd()?.as_fd(), name, value, flags)?)
    }

    /// Removes an attribute. On an object, removing an encryption attribute brings it under
    /// its bucket's current rule; on a bucket it deletes the rule or its key id.
    pub fn removexattr(&self, caller: Caller, ino: u64, name: &OsStr) -> Result<(), FsError> {
        let inode = self.inodes.get(ino)?;
        if let Some(attribute) = SseAttribute::from_name(name.as_bytes()) {
            self.change_sse(caller, &inode, attribute, None, 0)?;
            return Ok(());
        }
        self.check_settable(&inode, name)?;
        match self.backing().remove_xattr(inode.fd()?.as_fd(), name) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Err(FsError::NoAttribute),
            Err(e) => Err(e.into()),
        }
    }

    fn sse_node(&self, inode: &Inode) -> Result<SseNode, FsError> {
        if inode.is_file() {
            Ok(SseNode::Object)
        } else if let Some(bucket) = self.bucket_node(inode)? {
            Ok(SseNode::Bucket(bucket))
        } else if inode.is_dir() {
            Ok(SseNode::Directory)
        } else {
            Ok(SseNode::Other)
        }
    }

    /// Sets (`Some(value)`) or removes (`None`) an encryption attribute. Returns what
    /// happened to an object (`AlreadyMatching` for a bucket).
    fn change_sse(
        &self,
        caller: Caller,
        inode: &Arc<Inode>,
        attribute: SseAttribute,
        value: Option<&[u8]>,
        flags: i32,
    ) -> Result<Reencryption, FsError> {
        self.writable()?;
        match self.sse_node(inode)? {
            SseNode::Bucket(bucket) => {
                self.change_bucket_rule(caller, inode, &bucket, attribute, value, flags)?;
                Ok(Reencryption::AlreadyMatching)
            }
            SseNode::Object => self.change_object(caller, inode, attribute, value, flags),
            SseNode::Directory => Err(FsError::NotBucketOrObject),
            SseNode::Other => Err(FsError::NotPermitted),
        }
    }

    fn change_bucket_rule(
        &self,
        caller: Caller,
        inode: &Inode,
        bucket: &str,
        attribute: SseAttribute,
        value: Option<&[u8]>,
        flags: i32,
    ) -> Result<(), FsError> {
        let owner = self.backing().stat(inode.fd()?.as_fd())?.uid;
        if caller.uid != 0 && caller.uid != owner {
            return Err(FsError::NotBucketOwner);
        }
        let current = self.keys.bucket_rule(bucket)?;
        let change = match value {
            Some(value) => {
                check_flags(flags, bucket_attribute_exists(current.as_ref(), attribute))?;
                bucket_rule_after_set(current.as_ref(), attribute, value)?
            }
            None => bucket_rule_after_remove(current.as_ref(), attribute)?,
        };
        match change {
            RuleChange::Put(rule) => {
                // A CMK the rule names must exist (ENOKEY), be Enabled (EKEYREVOKED) and be
                // usable by the caller (EACCES); the keystore's check, as the CLI's.
                let rule = self.keys.validate_rule(&rule, &caller.with_groups())?;
                self.keys.put_bucket_rule(bucket, &rule)?;
            }
            RuleChange::Delete => self.keys.delete_bucket_rule(bucket)?,
        }
        log::info!("bucket {bucket}: {} changed", attribute.name());
        Ok(())
    }

    fn change_object(
        &self,
        caller: Caller,
        inode: &Arc<Inode>,
        attribute: SseAttribute,
        value: Option<&[u8]>,
        flags: i32,
    ) -> Result<Reencryption, FsError> {
        self.check_may_write(caller, inode)?;
        match value {
            Some(value) => self.reencrypt(caller, inode, |current| {
                check_flags(flags, object_attribute_exists(current.algorithm, attribute))?;
                object_setting_after_set(current.algorithm, attribute, value)
            }),
            None => {
                // No per-object override: the bucket's rule as it is now.
                let bucket = self.bucket_of(inode)?;
                let rule = self.keys.bucket_rule(&bucket)?;
                let setting = SseSetting::from_rule(rule.as_ref());
                self.reencrypt(caller, inode, move |_| Ok(setting))
            }
        }
    }

    /// Re-encrypting an object needs write permission on it (as any `user.*` attribute change
    /// on a regular file); root passes.
    fn check_may_write(&self, caller: Caller, inode: &Inode) -> Result<(), FsError> {
        let stat = self.backing().stat(inode.fd()?.as_fd())?;
        let bits = if caller.uid == 0 {
            return Ok(());
        } else if caller.uid == stat.uid {
            stat.mode >> 6
        } else if caller.gid == stat.gid {
            stat.mode >> 3
        } else {
            stat.mode
        };
        if bits & 0o2 == 0 {
            return Err(FsError::AccessDenied);
        }
        Ok(())
    }
}

/// `XATTR_CREATE` fails on an attribute that exists, `XATTR_REPLACE` on one that does not.
fn check_flags(flags: i32, exists: bool) -> Result<(), FsError> {
    if flags & libc::XATTR_CREATE != 0 && exists {
        return Err(FsError::AttributeExists);
    }
    if flags & libc::XATTR_REPLACE != 0 && !exists {
        return Err(FsError::NoAttribute);
    }
    Ok(())
}

//! Re-wrapping an object's DEK under the newest version of the key it already uses (the
//! current master key, or the newest material of its CMK) by rewriting only its header: data
//! pages, slots, DEK and file ID stay as they are. No paths or SQLite here: objects and keys.

use super::inode::Inode;
use super::open_object::BackingFile;
use super::policy::{KeySource, KeyUse, NewObjectKey, SseSetting, key_for_setting};
use super::{BucketFs, Caller, FsError};
use crate::crypto::{Algorithm, KeyRef, Object, ObjectIo};
use std::sync::Arc;

/// Setting this write-only attribute on an object (any value) re-wraps its DEK under the
/// newest version of its key, under the object's write lock. Never listed, never readable.
pub const REWRAP_ATTR: &str = "user.ssefs.rewrap";

/// What a rewrap did to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrap {
    /// The header now names `to` (it named `from`).
    Rewrapped { from: KeyRef, to: KeyRef },
    /// The object already was on the newest version: nothing was written.
    AlreadyCurrent,
    /// The object is not encrypted: there is no key to re-wrap under.
    NotEncrypted,
}

/// The newest key of the same kind as `key_ref`: the current master key for a master key
/// version, the newest material of the same (`Enabled`) CMK for a CMK version; `None` for an
/// unencrypted object. A CMK needs `encrypt` for `user` (checked and audited by the keystore).
fn newest_key_for(
    keys: &dyn KeySource,
    key_ref: &KeyRef,
    user: &KeyUse<'_>,
) -> Result<Option<NewObjectKey>, FsError> {
    let setting = match key_ref {
        KeyRef::None => return Ok(None),
        KeyRef::Master { .. } => SseSetting {
            algorithm: Algorithm::Aes256,
            kms_key_id: None,
        },
        KeyRef::Cmk { key_id, .. } => SseSetting {
            algorithm: Algorithm::Kms,
            kms_key_id: Some(key_id.clone()),
        },
    };
    key_for_setting(keys, &setting, user).map(Some)
}

/// Re-wraps an open object's DEK under the newest version of its key unless it already is,
/// and makes the new header durable. One header write (atomic, see `docs/FORMAT.md`); on an
/// error the object is as before.
pub(crate) fn rewrap_object<I: ObjectIo>(
    object: &mut Object<I>,
    keys: &dyn KeySource,
    user: &KeyUse<'_>,
) -> Result<Rewrap, FsError> {
    let from = object.info().key_ref.clone();
    let Some(newest) = newest_key_for(keys, &from, user)? else {
        return Ok(Rewrap::NotEncrypted);
    };
    if newest.key_ref == from {
        return Ok(Rewrap::AlreadyCurrent);
    }
    object.rewrap(newest.key_ref.clone(), newest.kek.as_ref())?;
    object.sync()?;
    Ok(Rewrap::Rewrapped {
        from,
        to: newest.key_ref,
    })
}

impl BucketFs {
    /// Re-wraps an object of the mount under the newest version of its key, holding the
    /// shared open object's write lock (readers and writers wait; what they see is unchanged).
    /// The backing file's times are kept: a rewrap does not modify the object. Under a CMK
    /// the caller needs `decrypt` (to open it) and `encrypt` (for the newest material).
    pub(super) fn rewrap(&self, caller: Caller, inode: &Arc<Inode>) -> Result<Rewrap, FsError> {
        self.writable()?;
        if !inode.is_file() {
            return Err(FsError::NotBucketOrObject);
        }
        let shared = self.acquire_object(caller, inode)?;
        let result = shared.mutate(|object| self.rewrap_locked(caller, inode, object));
        let released = self.release_object(inode);
        let outcome = result?;
        released?;
        if let Rewrap::Rewrapped { from, to } = &outcome {
            log::debug!(
                "re-wrapped object {} from {} to {}",
                self.display_path(inode),
                describe(from),
                describe(to)
            );
        }
        Ok(outcome)
    }

    /// The rewrap proper, under the object's write lock (no write can move the times
    /// between the `stat` and their restoring).
    fn rewrap_locked(
        &self,
        caller: Caller,
        inode: &Inode,
        object: &mut Object<BackingFile>,
    ) -> Result<Rewrap, FsError> {
        let before = self.stat_node(inode)?;
        let path = || self.display_path(inode);
        let user = KeyUse::new(caller, &path);
        let outcome = rewrap_object(object, self.keys.as_ref(), &user)?;
        if matches!(outcome, Rewrap::Rewrapped { .. }) {
            self.restore_times(inode, &before);
        }
        Ok(outcome)
    }
}

/// A key reference for log lines (names and versions only).
fn describe(key_ref: &KeyRef) -> String {
    match key_ref {
        KeyRef::None => "no key".to_string(),
        KeyRef::Master { version } => format!("master key v{version}"),
        KeyRef::Cmk { key_id, version } => format!("CMK {key_id} v{version}"),
    }
}

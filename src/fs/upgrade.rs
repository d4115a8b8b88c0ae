//! Re-encrypting one object of an older object format under its own setting, for the
//! offline `ssefs upgrade` (`ops::upgrade` finds the objects and raises the format floor).

use super::policy::SseSetting;
use super::{BucketFs, Caller, FsError, ROOT_INO, Reencryption};
use crate::crypto::{Algorithm, HeaderInfo, KeyRef};
use std::path::{Component, Path};

impl BucketFs {
    /// Re-encrypts the object at `rel` (relative to the store) under its own setting, in the
    /// current format; as the process's own caller (the operator holding the root key).
    pub fn upgrade_object(&self, rel: &Path) -> Result<(), FsError> {
        let mut ino = ROOT_INO;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return Err(FsError::NotFound);
            };
            ino = self.lookup(ino, name)?.ino;
        }
        let inode = self.inodes.get(ino)?;
        let outcome = self.reencrypt(Caller::this_process(), &inode, |info| {
            Ok(same_setting(info))
        })?;
        debug_assert_eq!(outcome, Reencryption::Reencrypted);
        Ok(())
    }
}

/// The setting an object has now: its algorithm, and for KMS its CMK.
fn same_setting(info: &HeaderInfo) -> SseSetting {
    SseSetting {
        algorithm: info.algorithm,
        kms_key_id: match (&info.algorithm, &info.key_ref) {
            (Algorithm::Kms, KeyRef::Cmk { key_id, .. }) => Some(key_id.clone()),
            _ => None,
        },
    }
}

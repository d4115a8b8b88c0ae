//! Moving one object of an older object format forward, for the offline `ssefs upgrade`
//! (`ops::upgrade` finds the objects and raises the format floor): a version 2 object by
//! rewriting its header alone (version 3 adds only the block map's root), a version 1 object
//! by re-encrypting it under its own setting.

use super::policy::SseSetting;
use super::{BucketFs, Caller, FsError, ROOT_INO, Reencryption};
use crate::crypto::{Algorithm, FORMAT_V2, HeaderInfo, KeyRef};
use std::path::{Component, Path};

impl BucketFs {
    /// Moves the object at `rel` (relative to the store) to the current format: in place for
    /// version 2, re-encrypted under its own setting for version 1; as the process's own
    /// caller (the operator holding the root key).
    pub fn upgrade_object(&self, rel: &Path) -> Result<(), FsError> {
        let mut ino = ROOT_INO;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return Err(FsError::NotFound);
            };
            ino = self.lookup(ino, name)?.ino;
        }
        let inode = self.inodes.get(ino)?;
        let caller = Caller::this_process();
        let shared = self.acquire_object(caller, &inode)?;
        let in_place = shared.mutate(|object| {
            if object.info().version != FORMAT_V2 {
                return Ok(false);
            }
            let before = self.stat_node(&inode)?;
            object.upgrade()?;
            object.sync()?;
            self.restore_times(&inode, &before);
            Ok(true)
        });
        let released = self.release_object(&inode);
        let in_place = in_place?;
        released?;
        if in_place {
            return Ok(());
        }
        let outcome = self.reencrypt(caller, &inode, |info| Ok(same_setting(info)))?;
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

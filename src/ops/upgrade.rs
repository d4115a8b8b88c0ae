//! Moving objects of an older object format forward (`ssefs upgrade`): a version 2 object by
//! rewriting its header (with the root of its block map), a version 1 object by re-encrypting
//! it under its own setting (its algorithm, and its CMK for KMS) through the staging and
//! atomic swap of every re-encryption; once none is left, the store's format floor is raised
//! so that objects of an older format are refused. Runs on a locked store.

use super::scan::{inventory, peek_object};
use crate::crypto::FORMAT_VERSION;
use crate::fs::{BucketFs, FsError, FsOptions};
use crate::keystore::{Keystore, KeystoreError};
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What an upgrade did.
#[derive(Debug, Default)]
pub struct UpgradeReport {
    /// Objects rewritten in the current format.
    pub upgraded: Vec<PathBuf>,
    /// Objects that could not be upgraded, with the reason (they stay as they were).
    pub failed: Vec<(PathBuf, String)>,
    /// True when no object of an older format is left and the store now refuses them.
    pub floor_raised: bool,
}

/// Why an upgrade could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

/// The objects of `store` whose header names a format older than the current one (paths
/// relative to the store). Reads headers only; needs no key.
pub fn old_format_objects(store: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let store = Store::open(store)?;
    Ok(inventory(&store)
        .objects
        .into_iter()
        .filter(|rel| peek_object(&store, rel).is_ok_and(|h| h.version < FORMAT_VERSION))
        .collect())
}

/// What fsck says about objects still on an older format (nothing when there are none).
pub fn old_format_notes(store: &Path) -> Vec<String> {
    let old = old_format_objects(store).unwrap_or_default();
    if old.is_empty() {
        return Vec::new();
    }
    let mut notes = vec![format!(
        "{} object(s) still on an older object format (weaker integrity; version 1 is \
         read-only); run `ssefs upgrade` to move them forward:",
        old.len()
    )];
    notes.extend(old.iter().map(|rel| format!("  {}", rel.display())));
    notes
}

/// Upgrades every object of `store` on an older format, then raises the store's format floor
/// if none is left. Takes the store lock, so the store must not be mounted.
pub fn upgrade_store(store: &Path, keystore: Arc<Keystore>) -> Result<UpgradeReport, UpgradeError> {
    let old = old_format_objects(store)?;
    let locked = Store::open_locked(store)?;
    let fs = BucketFs::new(locked, keystore.clone(), FsOptions::default())?;
    let mut report = UpgradeReport::default();
    for rel in old {
        match fs.upgrade_object(&rel) {
            Ok(()) => report.upgraded.push(rel),
            Err(e) => report.failed.push((rel, e.to_string())),
        }
    }
    if report.failed.is_empty() && old_format_objects(store)?.is_empty() {
        keystore.raise_object_format_floor(FORMAT_VERSION)?;
        report.floor_raised = true;
    }
    Ok(report)
}

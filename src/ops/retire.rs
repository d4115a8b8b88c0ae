//! The retire check of master key versions: which versions the objects of a store (and the
//! temporaries of creates and re-encryptions) still use, from their unauthenticated headers,
//! and retiring only versions nothing uses. Works while the store is mounted.

use super::scan::{inventory, peek_object};
use crate::crypto::KeyRef;
use crate::keystore::{Keystore, KeystoreError, Retirement};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// How many objects each master key version wraps, from the headers in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterUsage {
    /// Objects under their names in buckets.
    pub objects: BTreeMap<u32, u64>,
    /// Temporary files of creates and re-encryptions (in progress, or left by a crash until
    /// `fsck --repair` removes them): they may become an object's contents.
    pub temporaries: BTreeMap<u32, u64>,
}

impl MasterUsage {
    /// Objects and temporaries under `version`.
    pub fn users(&self, version: u32) -> u64 {
        [&self.objects, &self.temporaries]
            .iter()
            .filter_map(|m| m.get(&version))
            .sum()
    }

    /// Every version something uses.
    pub fn versions(&self) -> BTreeSet<u32> {
        self.objects
            .keys()
            .chain(self.temporaries.keys())
            .copied()
            .collect()
    }

    /// Why `version` is kept, for the operator: who uses it and what to run.
    pub fn still_used(&self, store: &Path, version: u32) -> String {
        let objects = self.objects.get(&version).copied().unwrap_or_default();
        let mut text = format!("master key version {version}: {objects} object(s) still use it");
        if let Some(temporaries) = self.temporaries.get(&version) {
            text.push_str(&format!(
                ", and {temporaries} temporary file(s) of a create or re-encryption in progress \
                 or interrupted (when the store is not mounted, `ssefs fsck --repair` removes \
                 them)"
            ));
        }
        if objects > 0 {
            text.push_str(&format!(
                "; run `ssefs rewrap --store {}` first",
                store.display()
            ));
        }
        text
    }
}

/// Why a retirement was refused or could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(
        "cannot read {count} object header(s) or directories, so no version can be shown \
         unused (first: {first}); run `ssefs fsck`"
    )]
    Unreadable { count: usize, first: String },
    #[error("there is no master key version {0}")]
    NoSuchVersion(u32),
    #[error("master key version {0} is the current one")]
    Current(u32),
    #[error("{0}")]
    StillUsed(String),
}

/// How many objects and temporaries each master key version wraps, from the headers in the
/// store. Fails if any object's header cannot be read (then no version can be proven unused).
pub fn master_usage(store: &Store) -> Result<MasterUsage, RetireError> {
    let inv = inventory(store);
    let mut usage = MasterUsage::default();
    let mut unreadable = Vec::new();
    for rel in &inv.objects {
        match peek_object(store, rel) {
            Ok(info) => {
                if let KeyRef::Master { version } = info.key_ref {
                    *usage.objects.entry(version).or_default() += 1;
                }
            }
            Err(e) => unreadable.push(format!("{}: {e}", rel.display())),
        }
    }
    // A temporary whose header is not written yet (torn) names no key: it is skipped.
    for (rel, _) in &inv.temporaries {
        if let Ok(info) = peek_object(store, rel) {
            if let KeyRef::Master { version } = info.key_ref {
                *usage.temporaries.entry(version).or_default() += 1;
            }
        }
    }
    if let Some((dir, e)) = inv.unreadable.first() {
        unreadable.push(format!("{}: {e}", dir.display()));
    }
    if let Some(first) = unreadable.first() {
        return Err(RetireError::Unreadable {
            count: unreadable.len(),
            first: first.clone(),
        });
    }
    Ok(usage)
}

/// What a retirement did, with the usage it was decided on.
#[derive(Debug)]
pub struct RetireOutcome {
    pub retirement: Retirement,
    pub usage: MasterUsage,
}

/// Retires master key version `only` (refused while anything uses it, or if it is the current
/// one), or with `None` every old version nothing uses. The current version is taken before
/// the scan: anything created during the scan uses it or a newer one, never retired.
pub fn retire_master_keys(
    keystore: &Keystore,
    store: &Store,
    only: Option<u32>,
) -> Result<RetireOutcome, RetireError> {
    let (before_scan, _) = keystore.current_master_key()?;
    let usage = master_usage(store)?;
    let versions: BTreeSet<u32> = keystore
        .master_versions()?
        .iter()
        .map(|m| m.version)
        .collect();
    let in_use: BTreeSet<u32> = match only {
        Some(version) => {
            if !versions.contains(&version) {
                return Err(RetireError::NoSuchVersion(version));
            }
            if version >= before_scan {
                return Err(RetireError::Current(version));
            }
            if usage.users(version) > 0 {
                return Err(RetireError::StillUsed(
                    usage.still_used(store.root(), version),
                ));
            }
            // Everything else counts as in use, so only the one version goes.
            versions.into_iter().filter(|v| *v != version).collect()
        }
        None => usage.versions(),
    };
    let retirement = keystore.retire_unused_master_keys(&in_use, before_scan)?;
    Ok(RetireOutcome { retirement, usage })
}

//! Checking a store: the keystore's integrity, every object's header and blocks, keys that are
//! missing or destroyed, foreign files, leftover temporaries and strays at the store root.
//! Read-only beside a mount (objects are read through the `Store`); the only repair is
//! removing ssefs temporaries under the lock.

use super::scan::{StoreInventory, inventory, open_backing_file};
use crate::crypto::{
    CryptoError, FORMAT_V1, Key256, KeyRef, Object, StoreKey, check_kek, peek_header,
};
use crate::fs::BackingFile;
use crate::keystore::inspect::{KeystoreSummary, check_keystore as inspect_keystore};
use crate::keystore::{CmkState, KeystoreError};
use crate::store::layout::{keystore_rel_path, meta_dir};
use crate::store::lock_probe::lock_holders;
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};

/// What kind of problem fsck found. The names (`as_str`) are stable: scripts match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The keystore is missing or is not an ssefs keystore this ssefs can read.
    KeystoreUnreadable,
    /// `PRAGMA integrity_check` or the schema version found a fault.
    KeystoreIntegrity,
    /// Something at the store root (or in `.ssefs/tmp/`) that does not belong there.
    StrayEntry,
    /// A file inside a bucket that is not an ssefs object (bad magic).
    NotAnObject,
    /// The object header does not parse, or fails authentication.
    BadHeader,
    /// The object's key (master key version, CMK or CMK material version) is not in the keystore.
    MissingKey,
    /// The object's key material has been deleted: it can never be read again.
    DestroyedKey,
    /// The object's length or blocks fail authentication (truncated, flipped, swapped).
    DamagedData,
    /// The object's block map does not match its header: blocks or groups were put back from
    /// an older version (or erased), or a power loss kept older pages behind a clean header.
    /// `--repair` takes the object as found, as after a crash.
    BlockMapMismatch,
    /// A temporary file left in `.ssefs/tmp/` by a crash.
    LeftoverTemporary,
    /// A file or directory that could not be read.
    Unreadable,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::KeystoreUnreadable => "keystore-unreadable",
            ProblemKind::KeystoreIntegrity => "keystore-integrity",
            ProblemKind::StrayEntry => "stray-entry",
            ProblemKind::NotAnObject => "not-an-object",
            ProblemKind::BadHeader => "bad-header",
            ProblemKind::MissingKey => "missing-key",
            ProblemKind::DestroyedKey => "destroyed-key",
            ProblemKind::DamagedData => "damaged-data",
            ProblemKind::BlockMapMismatch => "block-map-mismatch",
            ProblemKind::LeftoverTemporary => "leftover-temporary",
            ProblemKind::Unreadable => "unreadable",
        }
    }
}

/// One problem: where (relative to the store; `.ssefs/keystore.db` for the keystore), what,
/// and whether `--repair` fixed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub kind: ProblemKind,
    pub detail: String,
    pub repaired: bool,
}

/// How to check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsckOptions {
    /// Remove leftover temporaries, and take objects whose block map is wrong as found (needs
    /// the store lock, so the store must not be mounted).
    pub repair: bool,
}

/// Everything fsck found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    pub store: PathBuf,
    /// Pids holding the store lock (a mount) while fsck ran.
    pub lock_holders: Vec<u32>,
    pub buckets: usize,
    pub objects: usize,
    /// Objects whose header and every block were authenticated.
    pub verified: usize,
    pub blocks: u64,
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not damage (objects that could not be verified, ...).
    pub notes: Vec<String>,
}

impl FsckReport {
    /// Problems `--repair` did not fix.
    pub fn unrepaired(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.repaired)
    }
    pub fn is_clean(&self) -> bool {
        self.unrepaired().next().is_none()
    }
    fn problem(&mut self, path: impl Into<PathBuf>, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            kind,
            detail: detail.into(),
            repaired: false,
        });
    }
}

/// Looks up the key-encryption key an object header names (the keystore opened with the root
/// key). `None` when fsck runs without the root key: headers are then checked, blocks not.
/// The store key comes with it: every object of this format is tagged under it.
pub type KeyLookup<'a> = Option<(
    &'a StoreKey,
    &'a dyn Fn(&KeyRef) -> Result<Option<Key256>, KeystoreError>,
)>;

/// Operational failures: the store cannot be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks the store at `store`. `progress(done, total)` is called after each object.
pub fn check_store(
    store: &Path,
    keys: KeyLookup<'_>,
    options: FsckOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<FsckReport, FsckError> {
    let store = Store::open(store)?;
    let inv = inventory(&store);
    let mut report = FsckReport {
        store: inv.root.clone(),
        lock_holders: lock_holders(&inv.root).unwrap_or_default(),
        buckets: inv.buckets.len(),
        objects: inv.objects.len(),
        ..FsckReport::default()
    };
    let summary = check_keystore(&inv.root, &mut report);
    report
        .notes
        .extend(super::upgrade::old_format_notes(&inv.root));
    for (path, why) in &inv.strays {
        report.problem(path, ProblemKind::StrayEntry, why.as_str());
    }
    for (path, error) in &inv.unreadable {
        report.problem(path, ProblemKind::Unreadable, error.as_str());
    }
    check_temporaries(&inv, &mut report);
    let total = inv.objects.len() as u64;
    let mut unverified = 0usize;
    for (done, rel) in inv.objects.iter().enumerate() {
        let known = report.problems.len();
        let verified = check_object(&store, rel, summary.as_ref(), keys, &mut report);
        if !verified && report.problems.len() == known {
            unverified += 1;
        }
        progress(done as u64 + 1, total);
    }
    if unverified > 0 {
        report.notes.push(format!(
            "{unverified} object(s) were not verified block by block ({})",
            if keys.is_some() {
                "their key is disabled"
            } else {
                "no root key: headers only"
            }
        ));
    }
    if options.repair {
        repair_temporaries(&inv, &mut report);
        repair_block_maps(&inv, keys, &mut report);
    }
    Ok(report)
}

fn check_keystore(root: &Path, report: &mut FsckReport) -> Option<KeystoreSummary> {
    let path = keystore_rel_path();
    let check = match inspect_keystore(&meta_dir(root)) {
        Ok(check) => check,
        Err(e) => {
            report.problem(&path, ProblemKind::KeystoreUnreadable, e.to_string());
            return None;
        }
    };
    for problem in check.problems {
        report.problem(&path, ProblemKind::KeystoreIntegrity, problem);
    }
    check.summary
}

fn check_temporaries(inv: &StoreInventory, report: &mut FsckReport) {
    for (path, kind) in &inv.temporaries {
        if report.lock_holders.is_empty() {
            report.problem(
                path,
                ProblemKind::LeftoverTemporary,
                format!("{} (fsck --repair removes it)", kind.leftover()),
            );
        } else {
            report.notes.push(format!(
                "{} may belong to an operation of the running mount; it is checked only when \
                 the store is not mounted",
                path.display()
            ));
        }
    }
}

/// Checks one object; returns whether its header and every block were authenticated.
fn check_object(
    store: &Store,
    rel: &Path,
    summary: Option<&KeystoreSummary>,
    keys: KeyLookup<'_>,
    report: &mut FsckReport,
) -> bool {
    let file = match open_backing_file(store, rel, false) {
        Ok(file) => file,
        Err(e) => {
            report.problem(rel, ProblemKind::Unreadable, e.to_string());
            return false;
        }
    };
    let info = match peek_header(&file) {
        Ok(info) => info,
        Err(e) => {
            report_crypto(report, rel, &e, true);
            return false;
        }
    };
    if let Some(summary) = summary {
        if let Some((kind, detail)) = key_problem(summary, &info.key_ref) {
            report.problem(rel, kind, detail);
            return false;
        }
    }
    let kek = match info.key_ref {
        KeyRef::None => None,
        _ => match keys.map(|(_, lookup)| lookup(&info.key_ref)) {
            None => return false,
            Some(Ok(kek)) => kek,
            Some(Err(e)) => return report_key_error(report, rel, e),
        },
    };
    let Some((store_key, _)) = keys else {
        return false;
    };
    let object = match Object::open(file, store_key, kek.as_ref()) {
        Ok(object) => object,
        Err(e) => {
            report_crypto(report, rel, &e, false);
            return false;
        }
    };
    match object.verify() {
        Ok(verified) if verified.block_map.is_some() => {
            let alone = match verified.problems.len() {
                0 => "every block authenticates on its own".to_string(),
                n => format!("{n} of {} block(s) also fail on their own", verified.blocks),
            };
            report.problem(
                rel,
                ProblemKind::BlockMapMismatch,
                format!(
                    "{}; {alone}. This is what putting back an older version of some blocks \
                     looks like, or a power loss after a close that was not synced. If no one \
                     else can write the store, `ssefs fsck --repair` takes the object as found",
                    verified.block_map.unwrap_or_default()
                ),
            );
            false
        }
        Ok(verified) if verified.problems.is_empty() => {
            report.blocks += verified.blocks;
            report.verified += 1;
            if object.is_dirty() {
                report.notes.push(format!(
                    "{} was being written when its writer stopped (DIRTY): its blocks \
                     authenticate, its block map is checked once a mount closes it",
                    rel.display()
                ));
            }
            true
        }
        Ok(verified) => {
            let first = verified.problems.first().cloned().unwrap_or_default();
            report.problem(
                rel,
                ProblemKind::DamagedData,
                format!(
                    "{} of {} block(s) fail authentication (first: {first}){}",
                    verified.problems.len(),
                    verified.blocks,
                    dirty_note(&object)
                ),
            );
            false
        }
        Err(e) => {
            report_crypto(report, rel, &e, false);
            false
        }
    }
}

fn dirty_note(object: &Object<BackingFile>) -> &'static str {
    if object.is_dirty() {
        "; a write session is open or was interrupted"
    } else {
        ""
    }
}

/// A key the header names that the keystore (read without the root key) lacks or destroyed.
fn key_problem(summary: &KeystoreSummary, key_ref: &KeyRef) -> Option<(ProblemKind, String)> {
    match key_ref {
        KeyRef::None => None,
        KeyRef::Master { version } if !summary.has_master(*version) => Some((
            ProblemKind::MissingKey,
            format!("master key version {version} is not in the keystore"),
        )),
        KeyRef::Master { .. } => None,
        KeyRef::Cmk { key_id, version } => {
            let Some(cmk) = summary.cmks.iter().find(|c| &c.key_id == key_id) else {
                return Some((
                    ProblemKind::MissingKey,
                    format!("CMK {key_id} is not in the keystore"),
                ));
            };
            if !cmk.live_versions.contains(version) {
                return Some((
                    ProblemKind::DestroyedKey,
                    format!(
                        "CMK {key_id} has no material version {version} (deleted or never imported)"
                    ),
                ));
            }
            if cmk.state != CmkState::Enabled {
                // Not damage: the key can be enabled again. The lookup says it cannot verify.
                return None;
            }
            None
        }
    }
}

fn report_key_error(report: &mut FsckReport, rel: &Path, e: KeystoreError) -> bool {
    let kind = match &e {
        KeystoreError::UnknownMasterKey(_)
        | KeystoreError::UnknownKey(_)
        | KeystoreError::UnknownKeyVersion { .. } => ProblemKind::MissingKey,
        KeystoreError::KeyMaterialDeleted { .. } => ProblemKind::DestroyedKey,
        KeystoreError::KeyRevoked { .. } => {
            report
                .notes
                .push(format!("{}: not verified: {e}", rel.display()));
            return false;
        }
        _ => ProblemKind::KeystoreIntegrity,
    };
    report.problem(rel, kind, e.to_string());
    false
}

fn report_crypto(report: &mut FsckReport, rel: &Path, e: &CryptoError, header: bool) {
    let kind = match e {
        CryptoError::NotAnObject => ProblemKind::NotAnObject,
        CryptoError::Io(_) | CryptoError::Random => ProblemKind::Unreadable,
        CryptoError::UnsupportedVersion(_) | CryptoError::ReadOnlyVersion(_) => {
            ProblemKind::BadHeader
        }
        CryptoError::Malformed(_) | CryptoError::Authentication(_) if header => {
            ProblemKind::BadHeader
        }
        CryptoError::Malformed(_) | CryptoError::Authentication(_) => ProblemKind::DamagedData,
    };
    report.problem(rel, kind, e.to_string());
}

/// Removes the leftover temporaries, holding the store lock so no mount can be using them.
/// Every kind is garbage once its daemon is gone (see `TempKind`): a create was never
/// published, and an interrupted re-encryption left the object's own name holding the old or
/// the new object whole, so removing the other side loses nothing.
fn repair_temporaries(inv: &StoreInventory, report: &mut FsckReport) {
    if inv.temporaries.is_empty() {
        return;
    }
    let store = match Store::open_locked(&inv.root) {
        Ok(store) => store,
        Err(StoreError::AlreadyMounted(_)) => {
            report.notes.push(
                "leftover temporaries were not removed: the store is mounted (unmount it and \
                 run fsck --repair again)"
                    .into(),
            );
            return;
        }
        Err(e) => {
            report
                .notes
                .push(format!("leftover temporaries were not removed: {e}"));
            return;
        }
    };
    for problem in report
        .problems
        .iter_mut()
        .filter(|p| p.kind == ProblemKind::LeftoverTemporary)
    {
        // Taking the lock already removed them; this removes what it could not, or says why.
        let Some(name) = problem.path.file_name() else {
            continue;
        };
        match store.remove_temporary(name) {
            Ok(()) => problem.repaired = true,
            Err(e) => problem.detail = format!("{}; removing it failed: {e}", problem.detail),
        }
    }
}

/// Takes every object whose block map was wrong as found, as after a crash, holding the
/// store lock (see `Object::recommit_block_map`).
fn repair_block_maps(inv: &StoreInventory, keys: KeyLookup<'_>, report: &mut FsckReport) {
    let wanted = report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::BlockMapMismatch);
    let Some((store_key, lookup)) = keys.filter(|_| wanted) else {
        return;
    };
    let store = match Store::open_locked(&inv.root) {
        Ok(store) => store,
        Err(e) => {
            report
                .notes
                .push(format!("block maps were not recommitted: {e}"));
            return;
        }
    };
    for problem in report
        .problems
        .iter_mut()
        .filter(|p| p.kind == ProblemKind::BlockMapMismatch)
    {
        let recommit = || -> Result<(), String> {
            let file = open_backing_file(&store, &problem.path, true).map_err(|e| e.to_string())?;
            let info = peek_header(&file).map_err(|e| e.to_string())?;
            let kek = lookup(&info.key_ref).map_err(|e| e.to_string())?;
            let mut object =
                Object::open(file, store_key, kek.as_ref()).map_err(|e| e.to_string())?;
            object.recommit_block_map().map_err(|e| e.to_string())?;
            object.close().map(drop).map_err(|e| e.to_string())
        };
        match recommit() {
            Ok(()) => {
                log::warn!(
                    "fsck --repair accepted the block map of {} as found",
                    problem.path.display()
                );
                problem.repaired = true;
            }
            Err(e) => problem.detail = format!("{}; recommitting it failed: {e}", problem.detail),
        }
    }
}

/// How many objects of a store open with the keys `keys` gives, out of those it has a key
/// for, trying at most `limit`: tells whether a keystore backup belongs to this store when
/// the store's own keystore is gone. With the backup's store key (`store_key`), an object of
/// format 2 (a `none` one too) must authenticate its header under it; without one, only the
/// object's key is checked (it unwraps the DEK). `only_format_2` skips objects of format 1 (so it means format 2 or later),
/// which no store key covers (to ask whether `store_key` is the objects' store key).
pub fn objects_opening_with(
    store: &Path,
    store_id: &[u8; 16],
    store_key: Option<&StoreKey>,
    only_format_2: bool,
    keys: &dyn Fn(&KeyRef) -> Option<Key256>,
    limit: usize,
) -> Result<(usize, usize), FsckError> {
    let store = Store::open(store)?;
    let inv = inventory(&store);
    let (mut tried, mut opened) = (0, 0);
    for rel in &inv.objects {
        if tried >= limit {
            break;
        }
        let Ok(file) = open_backing_file(&store, rel, false) else {
            continue;
        };
        let Ok(info) = peek_header(&file) else {
            continue;
        };
        if only_format_2 && info.version == FORMAT_V1 {
            continue;
        }
        let kek = keys(&info.key_ref);
        let opens = match (store_key, info.version > FORMAT_V1, &info.key_ref, &kek) {
            // The floor is the restore's business, not this check's.
            (Some(sk), true, KeyRef::None, _) => {
                Object::open(file, &sk.duplicate().with_min_version(1), None).is_ok()
            }
            (Some(sk), true, _, Some(kek)) => {
                Object::open(file, &sk.duplicate().with_min_version(1), Some(kek)).is_ok()
            }
            (_, _, KeyRef::None, _) | (_, _, _, None) => continue,
            (_, _, _, Some(kek)) => check_kek(&file, store_id, kek).is_ok(),
        };
        tried += 1;
        if opens {
            opened += 1;
        }
    }
    Ok((tried, opened))
}

//! Online keystore backup (SQLite's backup API: a consistent copy while the store is mounted)
//! and restore (checked, staged next to the keystore, compared with the keystore it replaces,
//! then put in place with one rename), and the replaced keystores a restore was asked to keep.
//! A backup stays wrapped under the root key. Knows nothing of object files or the store lock.

use super::inspect::{open_read_only, page_problems, summarize_connection};
use super::lifecycle::{Reburied, Tombstone, read_tombstones};
use super::{
    KEYSTORE_FILE, Keystore, KeystoreError, StoreId, companion_files, connect_existing, ids,
    legacy_master_context, master_context, read_store_id,
};
use crate::crypto::{Key256, StoreKey, WrappedKey, unwrap_key};
use crate::store::layout::{is_replaced_keystore, replaced_keystore_path};
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of backup and restore beyond those of opening a keystore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    DestinationExists(PathBuf),
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup {} is damaged: {problems}", path.display())]
    Damaged { path: PathBuf, problems: String },
    #[error("the backup is of store {backup}, but this store is {store}")]
    OtherStore { backup: StoreId, store: StoreId },
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError::Keystore(KeystoreError::Database(e))
    }
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::File {
        action,
        path,
        source,
    }
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    pub store_id: StoreId,
    pub master_key_versions: usize,
    pub bytes: u64,
}

/// Copies the keystore in `dir` to the new file `dest` (mode 0600, never overwritten) with
/// SQLite's online backup, so the copy is one consistent snapshot even while a mount writes.
/// The copy is a single file (journal mode `DELETE`), checked before this returns.
pub fn backup_keystore(dir: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    let source = open_read_only(dir)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => BackupError::DestinationExists(dest.to_path_buf()),
            _ => file_error("create", dest)(e),
        })?;
    let result = write_backup(&source, dest, &file);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
        for companion in companion_files(dest) {
            let _ = std::fs::remove_file(companion);
        }
    }
    result
}

fn write_backup(
    source: &Connection,
    dest: &Path,
    file: &File,
) -> Result<BackupReport, BackupError> {
    let mut target = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    Backup::new(source, &mut target)?.run_to_completion(
        i32::MAX,
        Duration::from_millis(50),
        None,
    )?;
    let mode: String =
        target.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Damaged {
            path: dest.to_path_buf(),
            problems: format!("SQLite kept journal mode {mode}"),
        });
    }
    let problems = page_problems(&target)?;
    if !problems.is_empty() {
        return Err(BackupError::Damaged {
            path: dest.to_path_buf(),
            problems: problems.join("; "),
        });
    }
    let summary = summarize_connection(&target)?;
    let source_id = read_store_id(source)?;
    if summary.store_id != source_id {
        return Err(BackupError::OtherStore {
            backup: summary.store_id,
            store: source_id,
        });
    }
    drop(target);
    file.sync_all().map_err(file_error("sync", dest))?;
    super::rootkey::sync_dir(&parent_dir(dest))?;
    Ok(BackupReport {
        store_id: summary.store_id,
        master_key_versions: summary.master_keys.len(),
        bytes: file.metadata().map_err(file_error("examine", dest))?.len(),
    })
}

/// Removes all but the `keep` newest (by modification time) backups of store `store_id` in
/// `dir`: every file there that is an ssefs keystore of that store. Other files, and backups
/// of other stores, are left alone. A backup is key escrow (it holds every key destroyed since
/// it was made), so old ones should not pile up. Returns what it removed, oldest first.
pub fn prune_backups(
    dir: &Path,
    store_id: &StoreId,
    keep: usize,
) -> Result<Vec<PathBuf>, BackupError> {
    let mut backups = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(file_error("read", dir))? {
        let path = entry.map_err(file_error("read", dir))?.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let of_this_store = super::inspect::open_file_read_only(&path)
            .and_then(|conn| read_store_id(&conn))
            .is_ok_and(|id| id == *store_id);
        if of_this_store {
            let modified = meta.modified().map_err(file_error("examine", &path))?;
            backups.push((modified, path));
        }
    }
    backups.sort();
    let excess = backups.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (_, path) in backups.into_iter().take(excess) {
        std::fs::remove_file(&path).map_err(file_error("remove", &path))?;
        removed.push(path);
    }
    Ok(removed)
}

/// A backup copied next to the keystore and checked (an ssefs keystore, sound, opening with
/// the root key, every master key unwrapping), not yet in place. Removed on drop unless
/// installed.
pub struct StagedKeystore {
    dir: PathBuf,
    staged: Option<PathBuf>,
    store_id: StoreId,
    masters: BTreeMap<u32, Key256>,
    keys: KeysHeld,
}

impl std::fmt::Debug for StagedKeystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedKeystore")
            .field("staged", &self.staged)
            .field("store_id", &self.store_id)
            .field("master_versions", &self.masters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StagedKeystore {
    /// Copies `backup` into `dir` under a temporary name and checks it with `root_key`.
    /// Does not touch the current keystore.
    pub fn stage(dir: &Path, backup: &Path, root_key: &Key256) -> Result<Self, BackupError> {
        let staged = dir.join(format!("{KEYSTORE_FILE}.restore-{}", std::process::id()));
        copy_private(backup, &staged)?;
        let mut this = StagedKeystore {
            dir: dir.to_path_buf(),
            staged: Some(staged.clone()),
            store_id: StoreId::from_bytes([0; 16]),
            masters: BTreeMap::new(),
            keys: KeysHeld::default(),
        };
        this.check(backup, &staged, root_key)?;
        Ok(this)
    }

    fn check(
        &mut self,
        backup: &Path,
        staged: &Path,
        root_key: &Key256,
    ) -> Result<(), BackupError> {
        let conn = connect_existing(staged).map_err(|e| match e {
            KeystoreError::NotAKeystore(_) => KeystoreError::NotAKeystore(backup.to_path_buf()),
            other => other,
        })?;
        let problems = page_problems(&conn)?;
        if !problems.is_empty() {
            return Err(BackupError::Damaged {
                path: backup.to_path_buf(),
                problems: problems.join("; "),
            });
        }
        let store_id = read_store_id(&conn)?;
        let recorded: Vec<u8> =
            conn.query_row("SELECT root_check FROM meta WHERE id = 1", [], |r| r.get(0))?;
        let found = ids::verify_root_check(root_key, &store_id, &recorded)?;
        if found == ids::RootCheck::Sealed {
            // A backup is no more trusted than the keystore: a changed one is refused.
            super::seal::require_intact(&conn, &super::seal::seal_key(root_key, &store_id)?)?;
        }
        let mut stmt = conn.prepare("SELECT version, wrapped FROM master_keys")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (version, wrapped) in rows {
            let key = unwrap_key(
                root_key,
                &match found {
                    ids::RootCheck::Sealed => master_context(&store_id, version),
                    ids::RootCheck::Legacy => legacy_master_context(&store_id, version),
                },
                &WrappedKey(wrapped),
            )
            .map_err(|_| {
                KeystoreError::Corrupt(format!(
                    "master key version {version} of the backup does not unwrap under the root key"
                ))
            })?;
            self.masters.insert(version, key);
        }
        drop(stmt);
        self.keys = read_keys_held(&conn, root_key, &store_id)?;
        conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0))?;
        drop(conn);
        self.store_id = store_id;
        Ok(())
    }

    /// What the keystore this restore would replace holds, read with `root_key` (which
    /// must be its root key too: a restore must know what it drops).
    pub fn current(&self, root_key: &Key256) -> Result<CurrentView, BackupError> {
        read_current(&self.dir.join(KEYSTORE_FILE), root_key)
    }

    /// The keys the backup holds that objects depend on, once the tombstones of `current`
    /// are honoured (what a restore destroys again is not held).
    pub fn keys(&self, current: &CurrentView) -> KeysHeld {
        self.keys.without(&current.tombstones)
    }

    /// The object format floor the restored keystore will have: the backup's, raised to the
    /// current keystore's when that one's seal holds (see [`StagedKeystore::carry_forward`]).
    pub fn floor_after(&self, current: &CurrentView) -> u16 {
        match (&current.state, &current.keys) {
            (CurrentKeystore::Sealed, Some(keys)) => self.keys.floor.max(keys.floor),
            _ => self.keys.floor,
        }
    }

    /// Carries into the staged keystore what the current keystore of `dir` decided since the
    /// backup was made and a restore must not undo: every CMK and material version it has a
    /// tombstone for is destroyed again (a backup made before a crypto-shred still holds the
    /// key), and its object format floor, when higher and its seal holds, replaces the
    /// backup's (so objects of a format it refused are not let back in). Says what it did.
    pub fn carry_forward(
        &mut self,
        root_key: &Key256,
        current: &CurrentView,
    ) -> Result<Burial, BackupError> {
        let Some(staged) = self.staged.clone() else {
            return Ok(Burial::default());
        };
        let floor = self.floor_after(current);
        let raise = (floor > self.keys.floor).then_some(floor);
        if current.tombstones.is_empty() && raise.is_none() {
            return Ok(Burial {
                current: current.state.clone(),
                ..Burial::default()
            });
        }
        let staged_keystore = Keystore::open_path(&staged, root_key)?;
        let again = if current.tombstones.is_empty() {
            Reburied::default()
        } else {
            staged_keystore.bury(&current.tombstones)?
        };
        if let Some(floor) = raise {
            staged_keystore.raise_object_format_floor(floor)?;
            self.keys.floor = floor;
        }
        drop(staged_keystore);
        // Back to one self-contained file (the WAL folded in) before it is renamed.
        let conn = Connection::open_with_flags(
            &staged,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(BackupError::Damaged {
                path: staged.clone(),
                problems: format!("SQLite kept journal mode {mode}"),
            });
        }
        Ok(Burial {
            current: current.state.clone(),
            again,
            floor_raised: raise,
        })
    }

    /// The store the backup belongs to.
    pub fn store_id(&self) -> &StoreId {
        &self.store_id
    }

    /// The backup's object-authentication key, to check objects of the store against
    /// (`None` for a backup made before the store had one).
    pub fn store_key(&self) -> Option<&StoreKey> {
        self.keys.store_key()
    }

    /// Master key version `version` of the backup, to check objects of the store against.
    pub fn master_key(&self, version: u32) -> Option<&Key256> {
        self.masters.get(&version)
    }

    /// Puts the staged keystore in place with one rename. The keystore it replaces (if any)
    /// is kept as `keystore.db.replaced-SECONDS` (its WAL folded in first when it opens) when
    /// `keep` is set; otherwise it is overwritten with zeros and removed once the restored one
    /// is in place, so no second copy of its keys stays in the store.
    pub fn install(mut self, keep: bool) -> Result<Replaced, BackupError> {
        let Some(staged) = self.staged.take() else {
            return Ok(Replaced::Nothing);
        };
        let current = self.dir.join(KEYSTORE_FILE);
        let aside = keep_current(&current)?;
        if let Err(e) = std::fs::rename(&staged, &current) {
            // The keystore is still in place; the copy set aside (which may hold its WAL, if
            // it did not open) stays, and the error names the file.
            self.staged = Some(staged);
            return Err(file_error("replace", &current)(e));
        }
        super::rootkey::sync_dir(&self.dir)?;
        Ok(match aside {
            None => Replaced::Nothing,
            Some(aside) if keep => Replaced::Kept(aside),
            Some(aside) => match scrub_keystore_file(&aside) {
                Ok(()) => Replaced::Removed,
                Err(e) => Replaced::NotRemoved(aside, e.to_string()),
            },
        })
    }
}

/// What became of the keystore a restore replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// There was none.
    Nothing,
    /// Kept under this name, as asked.
    Kept(PathBuf),
    /// Overwritten and removed.
    Removed,
    /// Not removed, for this reason: it is still there, under this name.
    NotRemoved(PathBuf, String),
}

/// The keys a keystore holds that objects depend on (never their bytes, but the store key,
/// which a comparison needs), read with the root key and without migrating or changing it.
#[derive(Default)]
pub struct KeysHeld {
    store_key: Option<StoreKey>,
    /// The oldest object format it accepts.
    pub floor: u16,
    /// Master key versions.
    pub masters: BTreeSet<u32>,
    /// CMKs that are not destroyed.
    pub cmks: BTreeSet<String>,
    /// CMK material versions whose material is present, as (CMK id, version).
    pub materials: BTreeSet<(String, u32)>,
}

impl std::fmt::Debug for KeysHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysHeld")
            .field("store_key", &self.store_key.is_some())
            .field("floor", &self.floor)
            .field("masters", &self.masters)
            .field("cmks", &self.cmks)
            .field("materials", &self.materials)
            .finish()
    }
}

impl Clone for KeysHeld {
    fn clone(&self) -> Self {
        KeysHeld {
            store_key: self.store_key.as_ref().map(StoreKey::duplicate),
            floor: self.floor,
            masters: self.masters.clone(),
            cmks: self.cmks.clone(),
            materials: self.materials.clone(),
        }
    }
}

impl KeysHeld {
    /// The store's object-authentication key, with the floor; `None` for a keystore made
    /// before the store had one (its first open makes a new one).
    pub fn store_key(&self) -> Option<&StoreKey> {
        self.store_key.as_ref()
    }

    /// Whether both hold a store key and it is the same key.
    pub fn same_store_key(&self, other: &KeysHeld) -> bool {
        match (&self.store_key, &other.store_key) {
            (Some(a), Some(b)) => {
                a.id() == b.id() && a.auth_key().expose_secret() == b.auth_key().expose_secret()
            }
            _ => false,
        }
    }

    /// As held once `tombstones` are honoured.
    fn without(&self, tombstones: &[Tombstone]) -> KeysHeld {
        let mut keys = self.clone();
        for stone in tombstones {
            if stone.version == 0 {
                keys.cmks.remove(&stone.key_id);
                keys.materials.retain(|(id, _)| *id != stone.key_id);
            } else {
                keys.materials
                    .remove(&(stone.key_id.clone(), stone.version));
            }
        }
        keys
    }

    /// What this holds that `other` lacks.
    pub fn missing_from(&self, other: &KeysHeld) -> KeysMissing {
        KeysMissing {
            store_key: self.store_key.is_some() && !self.same_store_key(other),
            masters: self.masters.difference(&other.masters).copied().collect(),
            cmks: self.cmks.difference(&other.cmks).cloned().collect(),
            materials: self
                .materials
                .iter()
                .filter(|m| other.cmks.contains(&m.0) && !other.materials.contains(*m))
                .cloned()
                .collect(),
        }
    }
}

/// Keys one keystore holds and another lacks ([`KeysHeld::missing_from`]). Material versions
/// of a CMK the other lacks altogether are not listed again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeysMissing {
    /// Its store key (the other has none, or another one).
    pub store_key: bool,
    pub masters: Vec<u32>,
    pub cmks: Vec<String>,
    pub materials: Vec<(String, u32)>,
}

impl KeysMissing {
    pub fn is_empty(&self) -> bool {
        !self.store_key
            && self.masters.is_empty()
            && self.cmks.is_empty()
            && self.materials.is_empty()
    }
}

fn read_keys_held(
    conn: &Connection,
    root_key: &Key256,
    store_id: &StoreId,
) -> Result<KeysHeld, KeystoreError> {
    let masters = conn
        .prepare("SELECT version FROM master_keys")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let cmks = conn
        .prepare("SELECT key_id FROM cmks WHERE state <> 'Destroyed'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let materials = conn
        .prepare("SELECT key_id, version FROM cmk_materials WHERE wrapped IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(KeysHeld {
        store_key: super::object_auth::load_if_present(conn, root_key, store_id)?,
        floor: super::object_auth::floor(conn)?,
        masters,
        cmks,
        materials,
    })
}

impl Drop for StagedKeystore {
    fn drop(&mut self) {
        if let Some(staged) = self.staged.take() {
            let _ = std::fs::remove_file(&staged);
            for companion in companion_files(&staged) {
                let _ = std::fs::remove_file(companion);
            }
        }
    }
}

/// What a restore found of the keystore it replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CurrentKeystore {
    /// There is none: nothing says which keys were destroyed since the backup was made.
    #[default]
    Missing,
    /// Its seal holds: its tombstones are complete.
    Sealed,
    /// From before the seal: its tombstones (if any) were used.
    Unsealed,
    /// It could not be read (the reason): nothing says which keys it had or destroyed.
    Unreadable(String),
    /// Changed outside ssefs (each change named): its tombstones may be incomplete.
    Tampered(Vec<String>),
}

/// What [`StagedKeystore::carry_forward`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Burial {
    pub current: CurrentKeystore,
    pub again: Reburied,
    /// The object format floor the restored keystore was raised to, if it was.
    pub floor_raised: Option<u16>,
}

/// The keystore a restore replaces, as far as it could be read.
#[derive(Debug, Default)]
pub struct CurrentView {
    pub state: CurrentKeystore,
    /// The keys it holds; `None` when it is missing or could not be read.
    pub keys: Option<KeysHeld>,
    tombstones: Vec<Tombstone>,
}

/// The keystore at `path` (the one a restore replaces): how far it can be trusted, its
/// tombstones and its keys. A wrong root key is an error: the restore would not know what it
/// drops. One that cannot be read (damaged pages, most often: the reason to restore) is
/// `Unreadable`, with the reason.
fn read_current(path: &Path, root_key: &Key256) -> Result<CurrentView, BackupError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(CurrentView::default());
    }
    match read_current_keystore(path, root_key) {
        Ok(view) => Ok(view),
        Err(KeystoreError::WrongRootKey) => Err(KeystoreError::WrongRootKey.into()),
        Err(e) => Ok(CurrentView {
            state: CurrentKeystore::Unreadable(e.to_string()),
            ..CurrentView::default()
        }),
    }
}

fn read_current_keystore(path: &Path, root_key: &Key256) -> Result<CurrentView, KeystoreError> {
    let conn = connect_existing(path)?;
    let store_id = read_store_id(&conn)?;
    let recorded: Vec<u8> =
        conn.query_row("SELECT root_check FROM meta WHERE id = 1", [], |r| r.get(0))?;
    let state = match ids::verify_root_check(root_key, &store_id, &recorded)? {
        ids::RootCheck::Legacy => CurrentKeystore::Unsealed,
        ids::RootCheck::Sealed => {
            let problems =
                super::seal::problems(&conn, &super::seal::seal_key(root_key, &store_id)?)?;
            if problems.is_empty() {
                CurrentKeystore::Sealed
            } else {
                // Damaged pages read as changed rows: told apart as the mount does.
                match super::damage_first(&conn, KeystoreError::Tampered(problems)) {
                    KeystoreError::Tampered(problems) => CurrentKeystore::Tampered(problems),
                    damage => return Err(damage),
                }
            }
        }
    };
    // Wrapped keys are authenticated on their own, so even a keystore changed outside ssefs
    // says which keys it holds.
    Ok(CurrentView {
        state,
        keys: Some(read_keys_held(&conn, root_key, &store_id)?),
        tombstones: read_tombstones(&conn)?,
    })
}

/// A keystore a restore kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplacedKeystore {
    pub path: PathBuf,
    /// When it was replaced (its modification time).
    pub modified: std::time::SystemTime,
    pub bytes: u64,
}

/// The keystores restores kept in `dir` (`keystore.db.replaced-*`), oldest first.
pub fn replaced_keystores(dir: &Path) -> Result<Vec<ReplacedKeystore>, BackupError> {
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(file_error("read", dir))? {
        let entry = entry.map_err(file_error("read", dir))?;
        if !is_replaced_keystore(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(file_error("examine", &path))?;
        if !meta.is_file() {
            continue;
        }
        kept.push(ReplacedKeystore {
            modified: meta.modified().map_err(file_error("examine", &path))?,
            bytes: meta.len(),
            path,
        });
    }
    kept.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
    Ok(kept)
}

/// Overwrites and removes all but the `keep` newest keystores restores kept in `dir`.
/// Returns what it removed, oldest first.
pub fn remove_replaced_keystores(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let kept = replaced_keystores(dir)?;
    let excess = kept.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for old in kept.into_iter().take(excess) {
        scrub_keystore_file(&old.path)?;
        removed.push(old.path);
    }
    if !removed.is_empty() {
        super::rootkey::sync_dir(dir)?;
    }
    Ok(removed)
}

/// Overwrites the keystore file `path` and its `-wal`/`-shm` with zeros, syncs them and
/// removes them: the wrapped keys leave the file system's live blocks, as far as a file
/// system that rewrites in place allows (a copy-on-write one or an SSD may keep old blocks).
fn scrub_keystore_file(path: &Path) -> Result<(), BackupError> {
    for file in std::iter::once(path.to_path_buf()).chain(companion_files(path)) {
        let handle = match OpenOptions::new().write(true).open(&file) {
            Ok(handle) => handle,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(file_error("open", &file)(e)),
        };
        let len = handle
            .metadata()
            .map_err(file_error("examine", &file))?
            .len();
        let zeros = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        while at < len {
            let n = usize::try_from(len - at).map_or(zeros.len(), |left| left.min(zeros.len()));
            std::os::unix::fs::FileExt::write_all_at(&handle, &zeros[..n], at)
                .map_err(file_error("overwrite", &file))?;
            at += n as u64;
        }
        handle.sync_all().map_err(file_error("sync", &file))?;
        drop(handle);
        std::fs::remove_file(&file).map_err(file_error("remove", &file))?;
    }
    Ok(())
}

/// Copies `from` to the new private file `to` and syncs it.
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    let mut source = File::open(from).map_err(|e| match e.kind() {
        ErrorKind::NotFound => BackupError::Keystore(KeystoreError::Missing(from.to_path_buf())),
        _ => file_error("open", from)(e),
    })?;
    let _ = std::fs::remove_file(to); // a stage left by an earlier, killed restore
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(file_error("create", to))?;
    std::io::copy(&mut source, &mut target).map_err(file_error("copy to", to))?;
    target.sync_all().map_err(file_error("sync", to))
}

/// Sets the current keystore aside under a `.replaced-SECONDS` name: its WAL is checkpointed
/// into it when it still opens, the database is hard-linked (so the later rename replaces it
/// atomically) and leftover `-wal`/`-shm` files are moved along with it.
fn keep_current(current: &Path) -> Result<Option<PathBuf>, BackupError> {
    if std::fs::symlink_metadata(current).is_err() {
        return Ok(None);
    }
    if let Ok(conn) = Connection::open_with_flags(
        current,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        super::checkpoint_truncate(&conn, "keeping the replaced keystore");
    }
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = parent_dir(current);
    let mut n = 0;
    let mut kept = replaced_keystore_path(&dir, seconds, n);
    while std::fs::symlink_metadata(&kept).is_ok() {
        n += 1;
        kept = replaced_keystore_path(&dir, seconds, n);
    }
    std::fs::hard_link(current, &kept).map_err(file_error("keep", current))?;
    for (from, to) in companion_files(current).iter().zip(companion_files(&kept)) {
        match std::fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(file_error("move aside", from)(e)),
        }
    }
    Ok(Some(kept))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::Keystore;

    fn keystore() -> (tempfile::TempDir, Key256, StoreId) {
        let dir = tempfile::tempdir().unwrap();
        let key = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &key).unwrap();
        ks.new_master_key().unwrap();
        let id = *ks.store_id();
        (dir, key, id)
    }

    #[test]
    fn backup_is_private_single_file_and_never_overwrites() {
        let (dir, _key, id) = keystore();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("ks.bak");
        let report = backup_keystore(dir.path(), &dest).unwrap();
        assert_eq!(report.store_id, id);
        assert_eq!(report.master_key_versions, 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no -wal or -shm next to the backup");
        let before = std::fs::read(&dest).unwrap();
        let err = backup_keystore(dir.path(), &dest).unwrap_err();
        assert!(matches!(err, BackupError::DestinationExists(_)), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), before);
    }

    #[test]
    fn backup_while_a_connection_writes_is_consistent() {
        let (dir, key, _) = keystore();
        let writer = Keystore::open(dir.path(), &key).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("ks.bak");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    writer.new_master_key().unwrap();
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            backup_keystore(dir.path(), &dest).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let staged = StagedKeystore::stage(out.path(), &dest, &key).unwrap();
        assert!(staged.master_key(1).is_some());
    }

    #[test]
    fn restore_replaces_atomically_and_keeps_the_old_keystore() {
        let (dir, key, id) = keystore();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("ks.bak");
        backup_keystore(dir.path(), &dest).unwrap();
        // A newer master key that the backup lacks: the old keystore must be kept.
        Keystore::open(dir.path(), &key)
            .unwrap()
            .new_master_key()
            .unwrap();
        let staged = StagedKeystore::stage(dir.path(), &dest, &key).unwrap();
        assert_eq!(staged.store_id(), &id);
        assert!(staged.master_key(2).is_some() && staged.master_key(3).is_none());
        let Replaced::Kept(kept) = staged.install(true).unwrap() else {
            panic!("the replaced keystore was not kept");
        };
        let ks = Keystore::open(dir.path(), &key).unwrap();
        assert_eq!(ks.current_master_key().unwrap().0, 2);
        let old = crate::keystore::inspect::summarize_connection(
            &Connection::open_with_flags(&kept, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap(),
        )
        .unwrap();
        assert!(
            old.has_master(3),
            "the replaced keystore keeps its newer key"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".restore-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn restore_refuses_a_wrong_key_or_a_damaged_backup_and_changes_nothing() {
        let (dir, key, _) = keystore();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("ks.bak");
        backup_keystore(dir.path(), &dest).unwrap();
        let current = std::fs::read(dir.path().join(KEYSTORE_FILE)).unwrap();
        let wrong = Key256::generate().unwrap();
        let err = StagedKeystore::stage(dir.path(), &dest, &wrong).unwrap_err();
        assert!(
            matches!(err, BackupError::Keystore(KeystoreError::WrongRootKey)),
            "{err}"
        );
        let mut bytes = std::fs::read(&dest).unwrap();
        let len = bytes.len();
        bytes[len / 2..].fill(0x5a);
        let damaged = out.path().join("damaged.bak");
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(StagedKeystore::stage(dir.path(), &damaged, &key).is_err());
        let foreign = out.path().join("foreign.bak");
        std::fs::write(&foreign, b"hello").unwrap();
        assert!(StagedKeystore::stage(dir.path(), &foreign, &key).is_err());
        assert_eq!(
            std::fs::read(dir.path().join(KEYSTORE_FILE)).unwrap(),
            current
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".restore-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}

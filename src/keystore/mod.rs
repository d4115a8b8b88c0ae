//! The keystore: a SQLite database in `STORE/.ssefs/keystore.db` holding master key versions,
//! CMKs (material versions, aliases, state, grants), bucket default encryption and the audit
//! log, every secret wrapped under the root key. Knows nothing of FUSE or object files.

#![forbid(unsafe_code)]

mod access;
mod audit;
pub mod backup;
mod byok;
mod cache;
mod cmk;
mod error;
mod grant;
mod ids;
pub mod inspect;
mod lifecycle;
mod object_auth;
mod passphrase;
mod pkcs11;
mod rootkey;
mod rotation;
mod rules;
mod schema;
mod seal;
mod sync;
pub use seal::remote_marker_key;
pub use sync::Carried;

pub use audit::{AUDIT_RATE_PER_MINUTE, AuditIntegrity, AuditQuery, AuditRecord, AuditSettings};
pub use byok::{IMPORT_PARAMS_LIFETIME, ImportParams, ImportedMaterial};
pub use cmk::{
    CmkInfo, CmkOrigin, CmkState, DEFAULT_CMK_ALIAS, KeyUsage, MaterialVersion, validate_alias,
};
pub use error::KeystoreError;
pub use grant::{Caller, Grant, Grantee, KeyOp};
pub use ids::StoreId;
pub use lifecycle::{DestroyedCmk, MAX_PENDING_DAYS, MIN_PENDING_DAYS, Reburied, Tombstone};
pub use passphrase::{
    MIN_PASSPHRASE_LEN, PassphraseKdf, RootKeyChange, RootRecord, read_backup_passphrase_kdf,
    read_passphrase_kdf,
};
pub use pkcs11::{
    TokenError, TokenKeyName, TokenMechanism, TokenPin, TokenRoot, new_token_root,
    read_backup_token_root, read_token_root, unwrap_token_root,
};
pub use rootkey::{
    ROOT_KEY_LEN, RootKeySource, create_root_key_file, load_root_key_file, missing_parent_dirs,
};
pub use rotation::{MasterVersion, Retirement};
pub use schema::SCHEMA_VERSION;

use crate::crypto::{Algorithm, Key256, KeyRef, StoreKey, WrappedKey, unwrap_key, wrap_key};
use cache::KeyCache;
use ids::RootCheck;
use rootkey::{check_private_mode, sync_dir};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The keystore's file name inside `STORE/.ssefs/` (the store's layout names it).
pub use crate::store::layout::KEYSTORE_FILE;
/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MASTER_WRAP_LABEL: &[u8] = b"ssefs/master/v2";
const LEGACY_MASTER_WRAP_LABEL: &[u8] = b"ssefs/master/v1";

/// The directory holding a store's keystore: `STORE/.ssefs` (the store's layout names it).
pub fn keystore_dir(store: &Path) -> PathBuf {
    crate::store::layout::meta_dir(store)
}

/// A bucket's default encryption rule (PutBucketEncryption).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRule {
    pub algorithm: Algorithm,
    /// A CMK id or alias; only with `Algorithm::Kms`. `None` means the default CMK.
    pub kms_key_id: Option<String>,
}

/// Where the keystore's "now" comes from: the system clock, or a fixed time (for tests and
/// for simulating that a deletion date has passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    System,
    /// Seconds since the Unix epoch.
    Fixed(i64),
}

/// An open keystore. Cheap to share behind an `Arc`; safe to use from many threads.
pub struct Keystore {
    db_path: PathBuf,
    store_id: StoreId,
    root_key: Key256,
    /// Derived from the root key and the store id; MACs every sealed row (see seal.rs).
    seal_key: Key256,
    clock: Clock,
    inner: Mutex<Inner>,
}

struct Inner {
    conn: Connection,
    cache: KeyCache,
}

/// A seal that fails because SQLite's own pages are damaged (not because rows were changed
/// through SQL) is reported as that damage, which `ssefs keystore restore` repairs.
fn damage_first(conn: &Connection, e: KeystoreError) -> KeystoreError {
    if !matches!(e, KeystoreError::Tampered(_)) {
        return e;
    }
    match quick_check(conn) {
        Ok(problems) if !problems.is_empty() => KeystoreError::Corrupt(format!(
            "SQLite finds the database damaged ({})",
            problems.into_iter().take(3).collect::<Vec<_>>().join("; ")
        )),
        _ => e,
    }
}

/// The lines of `PRAGMA quick_check` other than `ok`: empty when the pages are sound.
fn quick_check(conn: &Connection) -> Result<Vec<String>, KeystoreError> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

impl Keystore {
    /// Creates `dir/keystore.db` (the directory must exist, mode 0700), the schema and master
    /// key version 1, all durable before returning. Fails if a keystore already exists.
    pub fn create(dir: &Path, root_key: &Key256) -> Result<Self, KeystoreError> {
        Self::create_with_store_id(dir, root_key, StoreId::generate()?)
    }

    /// As [`Keystore::create`], with a store id chosen by the caller (`ssefs init` needs the id
    /// before the keystore exists, to find the default root key path).
    pub fn create_with_store_id(
        dir: &Path,
        root_key: &Key256,
        store_id: StoreId,
    ) -> Result<Self, KeystoreError> {
        let path = dir.join(KEYSTORE_FILE);
        let companions = companion_files(&path);
        for existing in std::iter::once(&path).chain(&companions) {
            if std::fs::symlink_metadata(existing).is_ok() {
                return Err(KeystoreError::AlreadyExists(existing.clone()));
            }
        }
        // Created 0600 before SQLite sees it, so the -wal and -shm files inherit that mode.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => KeystoreError::AlreadyExists(path.clone()),
                _ => KeystoreError::file("create keystore", &path)(e),
            })?;
        Self::initialise(&path, root_key, store_id).inspect_err(|_| {
            for file in std::iter::once(&path).chain(&companions) {
                let _ = std::fs::remove_file(file);
            }
        })
    }

    fn initialise(
        path: &Path,
        root_key: &Key256,
        store_id: StoreId,
    ) -> Result<Self, KeystoreError> {
        let mut conn = connect(path)?;
        use_wal(&conn, path)?;
        schema::migrate_with(&mut conn, SCHEMA_VERSION, |_| Ok(()), |_, _| Ok(()))?;
        let seal_key = seal::seal_key(root_key, &store_id)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO meta (id, store_id, created_at, root_check) VALUES (1, ?1, ?2, ?3)",
            (
                store_id.to_string(),
                now(),
                ids::root_check(root_key, &store_id)?,
            ),
        )?;
        insert_master_key(&tx, root_key, &store_id, 1, now())?;
        object_auth::ensure_in(&tx, root_key, &store_id, now())?;
        // A new store never held an object of an older format.
        object_auth::raise_floor(&tx, crate::crypto::FORMAT_VERSION)?;
        seal::commit(tx, &seal_key)?;
        sync_dir(&parent_dir(path))?;
        Self::assemble(path, root_key, store_id, conn)
    }

    /// Opens an existing keystore, migrating its schema; a wrong root key is `WrongRootKey`,
    /// a keystore changed outside ssefs `Tampered` (naming each table and row). Nothing is
    /// written unless the root key is right, the seal holds and the schema is one this ssefs
    /// knows. A keystore written before the seal is sealed here, with its migration, in one
    /// transaction.
    pub fn open(dir: &Path, root_key: &Key256) -> Result<Self, KeystoreError> {
        Self::open_path(&dir.join(KEYSTORE_FILE), root_key)
    }

    /// As [`Keystore::open`], for the keystore file `path`.
    fn open_path(path: &Path, root_key: &Key256) -> Result<Self, KeystoreError> {
        let path = path.to_path_buf();
        let mut conn = connect_existing(&path)?;
        let store_id = read_store_id(&conn)?;
        ids::verify_root_check(root_key, &store_id, &read_root_check(&conn)?)?;
        use_wal(&conn, &path)?;
        let seal_key = seal::seal_key(root_key, &store_id)?;
        let found = std::cell::Cell::new(RootCheck::Sealed);
        schema::migrate_with(
            &mut conn,
            SCHEMA_VERSION,
            |tx| {
                // Read again under the write lock: another process may have sealed it since.
                found.set(ids::verify_root_check(
                    root_key,
                    &store_id,
                    &read_root_check(tx)?,
                )?);
                match found.get() {
                    RootCheck::Sealed => {
                        seal::require_intact(tx, &seal_key).map_err(|e| damage_first(tx, e))
                    }
                    RootCheck::Legacy => Ok(()),
                }
            },
            |tx, steps| {
                if found.get() == RootCheck::Legacy {
                    tx.execute(
                        "UPDATE meta SET root_check = ?1 WHERE id = 1",
                        [ids::root_check(root_key, &store_id)?],
                    )?;
                }
                if found.get() == RootCheck::Legacy {
                    passphrase::move_wraps_forward(tx, root_key, &store_id)?;
                    audit::rechain(tx, &seal_key)?;
                }
                // The schema step that adds the object-authentication key asks for it here,
                // where the root key is at hand, sealed with the rest.
                let made_key = object_auth::ensure_in(tx, root_key, &store_id, now())?;
                if found.get() == RootCheck::Legacy || steps > 0 || made_key {
                    seal::reseal(tx, &seal_key)?;
                }
                Ok(())
            },
        )?;
        Self::assemble(&path, root_key, store_id, conn)
    }

    /// Every change made outside ssefs to the keystore in `dir` — sealed rows added, changed or
    /// removed, and breaks in the audit chain — one sentence each (empty when it is intact),
    /// checked with `root_key` in one read snapshot without writing anything and without
    /// migrating: for fsck and other offline checks. A wrong root key is `WrongRootKey`; a
    /// keystore from before the seal has no seal to check (its first open seals it).
    pub fn verify(dir: &Path, root_key: &Key256) -> Result<Vec<String>, KeystoreError> {
        let mut conn = connect_existing(&dir.join(KEYSTORE_FILE))?;
        let tx = conn.transaction()?;
        let store_id = read_store_id(&tx)?;
        if ids::verify_root_check(root_key, &store_id, &read_root_check(&tx)?)? == RootCheck::Legacy
        {
            return Ok(Vec::new());
        }
        let seal_key = seal::seal_key(root_key, &store_id)?;
        let mut problems = seal::problems(&tx, &seal_key)?;
        problems.extend(audit::verify(&tx, &seal_key)?.problems);
        tx.commit()?;
        Ok(problems)
    }

    /// Every way the keystore differs from its seal, one sentence each (empty when it is
    /// intact), read in one snapshot without writing anything: for fsck. A keystore written
    /// before the seal has none to check (it is sealed when first opened).
    pub fn seal_problems(&self) -> Result<Vec<String>, KeystoreError> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        if ids::verify_root_check(&self.root_key, &self.store_id, &read_root_check(&tx)?)?
            == RootCheck::Legacy
        {
            return Ok(Vec::new());
        }
        let problems = seal::problems(&tx, &self.seal_key)?;
        tx.commit()?;
        Ok(problems)
    }

    /// The store id recorded in `dir/keystore.db`, read without the root key (it names the
    /// default root key file). Writes nothing.
    pub fn read_store_id(dir: &Path) -> Result<StoreId, KeystoreError> {
        read_store_id(&connect_existing(&dir.join(KEYSTORE_FILE))?)
    }

    fn assemble(
        path: &Path,
        root_key: &Key256,
        store_id: StoreId,
        conn: Connection,
    ) -> Result<Self, KeystoreError> {
        Ok(Self {
            db_path: path.to_path_buf(),
            store_id,
            root_key: copy_key(root_key)?,
            seal_key: seal::seal_key(root_key, &store_id)?,
            clock: Clock::System,
            inner: Mutex::new(Inner {
                conn,
                cache: KeyCache::default(),
            }),
        })
    }

    /// Sets where "now" comes from for every later call (deletion dates, import parameter
    /// expiry, audit times and retention).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Seconds since the Unix epoch, by this keystore's clock.
    pub fn now(&self) -> i64 {
        match self.clock {
            Clock::System => now(),
            Clock::Fixed(t) => t,
        }
    }

    /// The store's id and object-authentication key, which key every object's tags.
    pub fn store_key(&self) -> Result<StoreKey, KeystoreError> {
        object_auth::load(&self.lock().conn, &self.root_key, &self.store_id)
    }

    /// Refuses objects of format versions older than `version` from now on (`ssefs upgrade`,
    /// once every object is at least that version).
    pub fn raise_object_format_floor(&self, version: u16) -> Result<(), KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        object_auth::raise_floor(&tx, version)?;
        seal::commit(tx, &self.seal_key)
    }

    /// Puts the object format floor at `version`, lower or higher, as a sealed write: how a
    /// keystore migrated from before the floor looks. Only for tests that build such a store;
    /// ssefs itself only ever raises the floor ([`Keystore::raise_object_format_floor`]).
    #[doc(hidden)]
    pub fn set_object_format_floor_for_tests(&self, version: u16) -> Result<(), KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        tx.execute(
            "UPDATE meta SET min_object_version = ?1 WHERE id = 1",
            [version],
        )?;
        seal::commit(tx, &self.seal_key)
    }

    /// Writes `dir/keystore.db` as ssefs wrote it at schema version 3: before the seal and
    /// before the store's object-authentication key, with master key version 1. Only for
    /// tests that need such a keystore (restoring an old backup, upgrading); ssefs itself
    /// never writes an old keystore.
    #[doc(hidden)]
    pub fn write_schema3_keystore_for_tests(
        dir: &Path,
        root_key: &Key256,
        store_id: &StoreId,
    ) -> Result<(), KeystoreError> {
        let path = dir.join(KEYSTORE_FILE);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(KeystoreError::file("create keystore", &path))?;
        let mut conn = connect(&path)?;
        schema::migrate_with(&mut conn, 3, |_| Ok(()), |_, _| Ok(()))?;
        let key = Key256::generate()?;
        let wrapped = wrap_key(root_key, &legacy_master_context(store_id, 1), &key)?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO meta (id, store_id, created_at, root_check) VALUES (1, ?1, ?2, ?3)",
            (
                store_id.to_string(),
                now(),
                ids::legacy_root_check(root_key, store_id)?,
            ),
        )?;
        tx.execute(
            "INSERT INTO master_keys (version, wrapped, created_at) VALUES (1, ?1, ?2)",
            (wrapped.0, now()),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The random id of this store.
    pub fn store_id(&self) -> &StoreId {
        &self.store_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db_path
    }

    /// The newest master key version and its key, for new `AES256` objects.
    pub fn current_master_key(&self) -> Result<(u32, Key256), KeystoreError> {
        let mut inner = self.fresh()?;
        let version = match inner.cache.current_master {
            Some(version) => version,
            None => {
                let newest: Option<u32> =
                    inner
                        .conn
                        .query_row("SELECT max(version) FROM master_keys", [], |r| r.get(0))?;
                let version = newest
                    .ok_or_else(|| KeystoreError::Corrupt("there is no master key".into()))?;
                inner.cache.current_master = Some(version);
                version
            }
        };
        Ok((version, self.master_key(&mut inner, version)?))
    }

    /// Adds the next master key version, which becomes the current one. Durable (committed
    /// with `synchronous=FULL`) before it returns, so no object can depend on a lost key.
    pub fn new_master_key(&self) -> Result<u32, KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let newest: Option<u32> =
            tx.query_row("SELECT max(version) FROM master_keys", [], |r| r.get(0))?;
        let version = newest
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| KeystoreError::Corrupt("master key versions exhausted".into()))?;
        insert_master_key(&tx, &self.root_key, &self.store_id, version, self.now())?;
        seal::commit(tx, &self.seal_key)?;
        inner.cache.current_master = Some(version);
        Ok(version)
    }

    /// The key-encryption key an object header names (`None` for `KeyRef::None`).
    pub fn resolve(&self, key_ref: &KeyRef) -> Result<Option<Key256>, KeystoreError> {
        match key_ref {
            KeyRef::None => Ok(None),
            KeyRef::Master { version } => {
                let mut inner = self.fresh()?;
                Ok(Some(self.master_key(&mut inner, *version)?))
            }
            KeyRef::Cmk { key_id, version } => {
                let mut inner = self.fresh()?;
                let entry = cmk::cmk_entry(&mut inner, key_id)?;
                cmk::require_enabled(key_id, &entry)?;
                Ok(Some(self.cmk_material(&mut inner, key_id, *version)?))
            }
        }
    }

    pub fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, KeystoreError> {
        let inner = self.fresh()?;
        let row: Option<(String, Option<String>)> = inner
            .conn
            .query_row(
                "SELECT algorithm, kms_key_id FROM bucket_rules WHERE bucket = ?1",
                [bucket],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(algorithm, kms_key_id)| bucket_rule_from_row(bucket, &algorithm, kms_key_id))
            .transpose()
    }

    /// Every bucket rule, by bucket name.
    pub fn bucket_rules(&self) -> Result<Vec<(String, BucketRule)>, KeystoreError> {
        let inner = self.fresh()?;
        let mut stmt = inner
            .conn
            .prepare("SELECT bucket, algorithm, kms_key_id FROM bucket_rules ORDER BY bucket")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (bucket, algorithm, kms_key_id) = row?;
            let rule = bucket_rule_from_row(&bucket, &algorithm, kms_key_id)?;
            Ok((bucket, rule))
        })
        .collect()
    }

    /// Sets (or replaces) a bucket's default encryption. `Algorithm::None` is not a rule
    /// (delete the rule instead) and a key id goes only with `Algorithm::Kms`.
    pub fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), KeystoreError> {
        let algorithm = match (rule.algorithm, rule.kms_key_id.as_deref()) {
            (Algorithm::None, _) => {
                return Err(KeystoreError::InvalidBucketRule(
                    "no encryption is not a rule; delete the bucket's rule instead".into(),
                ));
            }
            (Algorithm::Aes256, Some(_)) => {
                return Err(KeystoreError::InvalidBucketRule(
                    "a KMS key id goes only with KMS, not AES256".into(),
                ));
            }
            (Algorithm::Kms, Some("")) => {
                return Err(KeystoreError::InvalidBucketRule(
                    "the KMS key id is empty".into(),
                ));
            }
            (Algorithm::Aes256, None) => "AES256",
            (Algorithm::Kms, _) => "KMS",
        };
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        tx.execute(
            "INSERT INTO bucket_rules (bucket, algorithm, kms_key_id, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (bucket) DO UPDATE SET algorithm = excluded.algorithm,
                 kms_key_id = excluded.kms_key_id, updated_at = excluded.updated_at",
            (bucket, algorithm, rule.kms_key_id.as_deref(), now()),
        )?;
        seal::commit(tx, &self.seal_key)
    }

    /// Removes a bucket's default encryption; removing a rule that does not exist is not an
    /// error (as DeleteBucketEncryption).
    pub fn delete_bucket_rule(&self, bucket: &str) -> Result<(), KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        tx.execute("DELETE FROM bucket_rules WHERE bucket = ?1", [bucket])?;
        seal::commit(tx, &self.seal_key)
    }

    /// Begins an immediate transaction for a write through ssefs: refused with `WrongRootKey`
    /// if the root key was changed since this keystore was opened, and with `Tampered` unless
    /// the seal holds, so a write never seals over a change made outside ssefs. End it with
    /// `seal::commit`.
    fn begin_sealed<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>, KeystoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        require_current_root_key(&tx, &self.root_key, &self.store_id)?;
        seal::require_intact(&tx, &self.seal_key)?;
        Ok(tx)
    }

    /// SQLite's `PRAGMA quick_check` of the open keystore and its schema version: the
    /// problems found, empty when the keystore is sound. Reads every page, writes nothing.
    pub fn check_integrity(&self) -> Result<Vec<String>, KeystoreError> {
        let inner = self.lock();
        let mut problems = quick_check(&inner.conn)?;
        let version: i64 = inner
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != schema::SCHEMA_VERSION {
            problems.push(format!(
                "schema version {version}, expected {}",
                schema::SCHEMA_VERSION
            ));
        }
        Ok(problems)
    }

    /// The connection and cache. A panic while holding the lock cannot leave SQLite half
    /// written (an open transaction rolls back when dropped), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// As `lock`, with the cache dropped and the seal checked again if another connection
    /// has committed since (a change made with sqlite3 while mounted is found here).
    fn fresh(&self) -> Result<MutexGuard<'_, Inner>, KeystoreError> {
        let mut inner = self.lock();
        let data_version: i64 = inner
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if inner.cache.revalidate(data_version) {
            if let Err(e) = seal::check_snapshot(&mut inner.conn, &self.seal_key) {
                // Checked again at the next call rather than trusted from now on.
                inner.cache.data_version = None;
                return Err(e);
            }
        }
        Ok(inner)
    }

    fn master_key(&self, inner: &mut Inner, version: u32) -> Result<Key256, KeystoreError> {
        if let Some(key) = inner.cache.masters.get(&version) {
            return copy_key(key);
        }
        let wrapped: Vec<u8> = inner
            .conn
            .query_row(
                "SELECT wrapped FROM master_keys WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(KeystoreError::UnknownMasterKey(version))?;
        let key = unwrap_key(
            &self.root_key,
            &master_context(&self.store_id, version),
            &WrappedKey(wrapped),
        )
        .map_err(|_| {
            KeystoreError::Corrupt(format!(
                "master key version {version} does not unwrap under the root key"
            ))
        })?;
        let copy = copy_key(&key)?;
        inner.cache.masters.insert(version, key);
        Ok(copy)
    }
}

/// `"ssefs/master/v2" ‖ lp(store id) ‖ version (u32 LE)`, `lp(x) = u32le(len(x)) ‖ x`.
fn master_context(store_id: &StoreId, version: u32) -> Vec<u8> {
    [
        MASTER_WRAP_LABEL,
        &lp(store_id.as_bytes()),
        &version.to_le_bytes(),
    ]
    .concat()
}

/// The context of a keystore from before the seal: `"ssefs/master/v1" ‖ store id ‖ version`.
fn legacy_master_context(store_id: &StoreId, version: u32) -> Vec<u8> {
    [
        LEGACY_MASTER_WRAP_LABEL,
        store_id.as_bytes().as_slice(),
        &version.to_le_bytes(),
    ]
    .concat()
}

/// `u32le(len(bytes)) ‖ bytes`: a field of a wrap context.
fn lp(bytes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    [&len.to_le_bytes()[..], bytes].concat()
}

fn insert_master_key(
    tx: &Transaction<'_>,
    root_key: &Key256,
    store_id: &StoreId,
    version: u32,
    created_at: i64,
) -> Result<(), KeystoreError> {
    require_current_root_key(tx, root_key, store_id)?;
    let key = Key256::generate()?;
    let wrapped = wrap_key(root_key, &master_context(store_id, version), &key)?;
    tx.execute(
        "INSERT INTO master_keys (version, wrapped, created_at) VALUES (?1, ?2, ?3)",
        (version, wrapped.0, created_at),
    )?;
    Ok(())
}

/// Fails with `WrongRootKey` unless `root_key` is the store's root key as of this
/// transaction: a process that opened the keystore before `change-root-key` must not add a
/// key wrapped under the old root key.
fn require_current_root_key(
    tx: &Transaction<'_>,
    root_key: &Key256,
    store_id: &StoreId,
) -> Result<(), KeystoreError> {
    let recorded: Vec<u8> =
        tx.query_row("SELECT root_check FROM meta WHERE id = 1", [], |r| r.get(0))?;
    ids::verify_root_check(root_key, store_id, &recorded).map(|_| ())
}

fn read_root_check(conn: &Connection) -> Result<Vec<u8>, KeystoreError> {
    Ok(conn.query_row("SELECT root_check FROM meta WHERE id = 1", [], |r| r.get(0))?)
}

fn bucket_rule_from_row(
    bucket: &str,
    algorithm: &str,
    kms_key_id: Option<String>,
) -> Result<BucketRule, KeystoreError> {
    let algorithm = match (algorithm, &kms_key_id) {
        ("AES256", None) => Algorithm::Aes256,
        ("KMS", _) => Algorithm::Kms,
        _ => {
            return Err(KeystoreError::Corrupt(format!(
                "bucket {bucket:?} has an invalid rule ({algorithm:?}, key id {kms_key_id:?})"
            )));
        }
    };
    Ok(BucketRule {
        algorithm,
        kms_key_id,
    })
}

/// How often a `wal_checkpoint(TRUNCATE)` is tried while readers hold the WAL.
const CHECKPOINT_TRIES: u32 = 20;

/// Moves every committed page out of the WAL into the database and truncates the WAL, so
/// erased rows (with `secure_delete`) do not linger there. SQLite reports a checkpoint a
/// reader blocked as busy rather than as an error: that is retried for about a second and
/// then logged. Returns whether the WAL was emptied.
pub(super) fn checkpoint_truncate(conn: &Connection, after: &str) -> bool {
    for attempt in 0..CHECKPOINT_TRIES {
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
            Err(e) => {
                log::warn!("cannot checkpoint the keystore after {after}: {e}");
                return false;
            }
        }
        if attempt + 1 < CHECKPOINT_TRIES {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    log::warn!(
        "the keystore's WAL is still in use after {after}: the erased rows leave it at the \
         next checkpoint"
    );
    false
}

/// Opens a connection with the keystore's settings. Sets only per-connection state.
fn connect(path: &Path) -> Result<Connection, KeystoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted rows (destroyed CMK material, pruned audit rows) are overwritten, not left in
    // free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Checks the files of an existing keystore, opens it and checks it is one this ssefs knows.
fn connect_existing(path: &Path) -> Result<Connection, KeystoreError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => KeystoreError::Missing(path.to_path_buf()),
        _ => KeystoreError::file("open keystore", path)(e),
    })?;
    if !meta.is_file() {
        return Err(KeystoreError::NotAKeystore(path.to_path_buf()));
    }
    check_private_mode(path, meta.permissions().mode())?;
    // SQLite reports only "unable to open database file"; the OS names the cause.
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(KeystoreError::file("open keystore", path))?;
    for companion in companion_files(path) {
        match std::fs::metadata(&companion) {
            Ok(meta) => check_private_mode(&companion, meta.permissions().mode())?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(KeystoreError::file("open keystore", companion)(e)),
        }
    }
    let conn = connect(path).map_err(|e| match e {
        KeystoreError::Database(e) => schema::not_a_database(e, path),
        other => other,
    })?;
    schema::check_is_keystore(&conn, path)?;
    Ok(conn)
}

/// Puts the database in WAL mode (a no-op when it already is).
fn use_wal(conn: &Connection, path: &Path) -> Result<(), KeystoreError> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(KeystoreError::File {
            action: "use WAL journal mode for",
            path: path.to_path_buf(),
            source: std::io::Error::new(ErrorKind::Unsupported, format!("SQLite chose {mode}")),
        });
    }
    Ok(())
}

fn read_store_id(conn: &Connection) -> Result<StoreId, KeystoreError> {
    let text: String = conn
        .query_row("SELECT store_id FROM meta WHERE id = 1", [], |r| r.get(0))
        .optional()?
        .ok_or_else(|| {
            KeystoreError::Corrupt("the meta row is missing (was `ssefs init` interrupted?)".into())
        })?;
    StoreId::parse(&text)
        .ok_or_else(|| KeystoreError::Corrupt(format!("store id {text:?} is not 32 hex digits")))
}

/// The `-wal` and `-shm` files SQLite keeps next to the database.
fn companion_files(path: &Path) -> [PathBuf; 2] {
    crate::store::layout::companion_files(path)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn copy_key(key: &Key256) -> Result<Key256, KeystoreError> {
    Ok(Key256::from_bytes(key.expose_secret())?)
}

/// Seconds since the Unix epoch (0 for a clock set before 1970).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod kms_tests;

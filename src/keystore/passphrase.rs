//! Root keys derived from a passphrase with Argon2id (salt and cost recorded in the keystore's
//! `meta` row, readable without any key), and changing the root key: every master key and CMK
//! material re-wrapped under the new one in one transaction. Never sees an object file.

use super::cmk::{cmk_context, legacy_cmk_context};
use super::{
    KEYSTORE_FILE, Keystore, KeystoreError, StoreId, connect_existing, ids, legacy_master_context,
    master_context,
};
use crate::crypto::{Key256, WrappedKey, unwrap_key, wrap_key};
use rusqlite::{Connection, Transaction};
use std::path::Path;
use zeroize::Zeroizing;

/// Memory cost of a new passphrase store, in KiB (64 MiB).
pub const DEFAULT_KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Passes over the memory.
pub const DEFAULT_KDF_ITERATIONS: u32 = 3;
/// Lanes.
pub const DEFAULT_KDF_PARALLELISM: u32 = 1;
const SALT_LEN: usize = 16;
/// The largest Argon2 cost accepted from a keystore. The parameters are read before the root
/// key is known (they make it), so nothing authenticates them yet: a keystore changed to ask
/// for a terabyte of memory must get an error, not an allocation. Far above the defaults.
pub const MAX_KDF_MEMORY_KIB: u32 = 4 * 1024 * 1024;
pub const MAX_KDF_ITERATIONS: u32 = 64;
pub const MAX_KDF_PARALLELISM: u32 = 16;
const MAX_SALT_LEN: usize = 64;
/// The shortest passphrase accepted for a new store or a new root key.
pub const MIN_PASSPHRASE_LEN: usize = 8;

/// How a root key is derived from a passphrase: Argon2id (version 0x13) with this salt and
/// cost, 32 bytes of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassphraseKdf {
    pub salt: Vec<u8>,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl PassphraseKdf {
    /// A fresh random salt with the default cost.
    pub fn generate() -> Result<PassphraseKdf, KeystoreError> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| crate::crypto::CryptoError::Random)?;
        Ok(PassphraseKdf {
            salt,
            memory_kib: DEFAULT_KDF_MEMORY_KIB,
            iterations: DEFAULT_KDF_ITERATIONS,
            parallelism: DEFAULT_KDF_PARALLELISM,
        })
    }

    /// The root key this passphrase gives.
    /// `Corrupt` unless every parameter is within the bounds ssefs accepts.
    pub fn check_bounds(&self) -> Result<(), KeystoreError> {
        let within = (1..=MAX_KDF_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_KDF_ITERATIONS).contains(&self.iterations)
            && (1..=MAX_KDF_PARALLELISM).contains(&self.parallelism)
            && (SALT_LEN..=MAX_SALT_LEN).contains(&self.salt.len());
        if within {
            return Ok(());
        }
        Err(KeystoreError::Corrupt(format!(
            "the recorded passphrase parameters (memory {} KiB, {} iterations, parallelism {}, \
             {}-byte salt) are outside what ssefs accepts (at most {MAX_KDF_MEMORY_KIB} KiB, \
             {MAX_KDF_ITERATIONS} iterations, parallelism {MAX_KDF_PARALLELISM}, a salt of \
             {SALT_LEN} to {MAX_SALT_LEN} bytes)",
            self.memory_kib,
            self.iterations,
            self.parallelism,
            self.salt.len()
        )))
    }

    pub fn derive(&self, passphrase: &[u8]) -> Result<Key256, KeystoreError> {
        self.check_bounds()?;
        let bad = |e: argon2::Error| {
            KeystoreError::Corrupt(format!(
                "the recorded passphrase parameters are unusable: {e}"
            ))
        };
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(bad)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, &self.salt, out.as_mut_slice())
            .map_err(bad)?;
        Ok(Key256::from_bytes(out.as_slice())?)
    }
}

/// The passphrase parameters of the keystore in `dir`, or `None` when its root key is a key
/// file. Needs no key and writes nothing.
pub fn read_passphrase_kdf(dir: &Path) -> Result<Option<PassphraseKdf>, KeystoreError> {
    // The connection a normal open makes first (it writes nothing); a read-only one would
    // create the WAL companions of a closed keystore.
    let conn = connect_existing(&dir.join(KEYSTORE_FILE))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 3 {
        return Ok(None);
    }
    read_kdf(&conn)
}

/// The passphrase parameters recorded in a keystore backup file (see `backup`), if its root
/// key comes from a passphrase. Opened read-only: the backup is not changed.
pub fn read_backup_passphrase_kdf(file: &Path) -> Result<Option<PassphraseKdf>, KeystoreError> {
    let conn = Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 3 {
        return Ok(None);
    }
    read_kdf(&conn)
}

fn read_kdf(conn: &Connection) -> Result<Option<PassphraseKdf>, KeystoreError> {
    type Row = (
        Option<String>,
        Option<Vec<u8>>,
        Option<u32>,
        Option<u32>,
        Option<u32>,
    );
    let row: Row = conn.query_row(
        "SELECT root_kdf, root_kdf_salt, root_kdf_memory_kib, root_kdf_iterations,
                root_kdf_parallelism FROM meta WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    match row {
        (None, ..) => Ok(None),
        (Some(_), Some(salt), Some(memory_kib), Some(iterations), Some(parallelism)) => {
            let kdf = PassphraseKdf {
                salt,
                memory_kib,
                iterations,
                parallelism,
            };
            kdf.check_bounds()?;
            Ok(Some(kdf))
        }
        _ => Err(KeystoreError::Corrupt(
            "the passphrase parameters in the keystore are incomplete".into(),
        )),
    }
}

fn write_kdf(tx: &Transaction<'_>, kdf: Option<&PassphraseKdf>) -> Result<(), KeystoreError> {
    tx.execute(
        "UPDATE meta SET root_kdf = ?1, root_kdf_salt = ?2, root_kdf_memory_kib = ?3,
             root_kdf_iterations = ?4, root_kdf_parallelism = ?5 WHERE id = 1",
        (
            kdf.map(|_| "argon2id"),
            kdf.map(|k| k.salt.clone()),
            kdf.map(|k| k.memory_kib),
            kdf.map(|k| k.iterations),
            kdf.map(|k| k.parallelism),
        ),
    )?;
    Ok(())
}

/// Where a root key comes from, as the keystore records it.
#[derive(Clone, Copy, Debug)]
pub enum RootRecord<'a> {
    /// A key file (or credential): nothing is recorded.
    KeyFile,
    /// Derived from a passphrase with these parameters.
    Passphrase(&'a PassphraseKdf),
    /// A random secret that a token key encrypted (see `pkcs11.rs`).
    Token(&'a super::TokenRoot),
}

/// Writes how the root key is had, clearing the other ways, inside `tx`.
fn write_record(tx: &Transaction<'_>, record: RootRecord<'_>) -> Result<(), KeystoreError> {
    let (kdf, token) = match record {
        RootRecord::KeyFile => (None, None),
        RootRecord::Passphrase(kdf) => (Some(kdf), None),
        RootRecord::Token(token) => (None, Some(token)),
    };
    write_kdf(tx, kdf)?;
    super::pkcs11::write_token_root(tx, token)
}

/// What `change_root_key` re-wrapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootKeyChange {
    pub master_keys: usize,
    pub cmk_materials: usize,
    pub import_params: usize,
}

impl Keystore {
    /// Records that this keystore's root key is derived from a passphrase with `kdf` (for a
    /// store just created with the key `kdf` gives).
    pub fn record_passphrase_kdf(&self, kdf: &PassphraseKdf) -> Result<(), KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        write_kdf(&tx, Some(kdf))?;
        super::seal::commit(tx, &self.seal_key)?;
        Ok(())
    }

    /// Records that this keystore's root key is a secret encrypted by a token key (for a
    /// store just created with that secret).
    pub fn record_token_root(&self, root: &super::TokenRoot) -> Result<(), KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        write_record(&tx, RootRecord::Token(root))?;
        super::seal::commit(tx, &self.seal_key)?;
        Ok(())
    }

    /// As [`Keystore::change_root_key_to`], to a key file (`kdf` `None`) or a passphrase.
    pub fn change_root_key(
        self,
        new_root: &Key256,
        kdf: Option<&PassphraseKdf>,
    ) -> Result<RootKeyChange, KeystoreError> {
        let record = match kdf {
            Some(kdf) => RootRecord::Passphrase(kdf),
            None => RootRecord::KeyFile,
        };
        self.change_root_key_to(new_root, record)
    }

    /// Re-wraps every master key version, every CMK material and every pending import seed
    /// under `new_root`, records its check value and how it is had (`record`: a key file, a
    /// passphrase or a token), all in one transaction: either everything moves to
    /// the new root key or nothing does. Objects are not touched (they depend on the master
    /// keys and CMKs, which do not change). Consumes the keystore: it held the old key.
    pub fn change_root_key_to(
        self,
        new_root: &Key256,
        record: RootRecord<'_>,
    ) -> Result<RootKeyChange, KeystoreError> {
        let store_id = self.store_id;
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let old_root = &self.root_key;
        let mut change = RootKeyChange::default();
        let masters: Vec<(u32, Vec<u8>)> = rows(&tx, "SELECT version, wrapped FROM master_keys")?;
        for (version, wrapped) in masters {
            let context = master_context(&store_id, version);
            let new = rewrap(old_root, new_root, &context, wrapped, || {
                format!("master key version {version}")
            })?;
            tx.execute(
                "UPDATE master_keys SET wrapped = ?1 WHERE version = ?2",
                (new, version),
            )?;
            change.master_keys += 1;
        }
        let materials = wrapped_materials(&tx)?;
        for (key_id, version, wrapped) in materials {
            let context = cmk_context(&store_id, &key_id, version);
            let new = rewrap(old_root, new_root, &context, wrapped, || {
                format!("CMK {key_id} material version {version}")
            })?;
            tx.execute(
                "UPDATE cmk_materials SET wrapped = ?1 WHERE key_id = ?2 AND version = ?3",
                (new, &key_id, version),
            )?;
            change.cmk_materials += 1;
        }
        let seeds: Vec<(String, String, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT key_id, token, wrapped_seed FROM import_params")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (key_id, token, wrapped) in seeds {
            let context = super::byok::import_context(&store_id, &key_id, &token);
            let new = rewrap(old_root, new_root, &context, wrapped, || {
                format!("the import parameters of CMK {key_id}")
            })?;
            tx.execute(
                "UPDATE import_params SET wrapped_seed = ?1 WHERE key_id = ?2",
                (new, &key_id),
            )?;
            change.import_params += 1;
        }
        super::object_auth::rewrap(&tx, old_root, new_root, &store_id)?;
        tx.execute(
            "UPDATE meta SET root_check = ?1 WHERE id = 1",
            [ids::root_check(new_root, &store_id)?],
        )?;
        write_record(&tx, record)?;
        // The audit chain's head, checked under the old key, is MACed under the new one.
        super::audit::read_head(&tx, &self.seal_key)?;
        let new_seal_key = super::seal::seal_key(new_root, &store_id)?;
        super::audit::rechain(&tx, &new_seal_key)?;
        // Every row MAC moves to the key the new root key derives, in the same transaction.
        super::seal::commit(tx, &new_seal_key)?;
        inner.cache.clear();
        // The old wrappings also leave the WAL.
        super::checkpoint_truncate(&inner.conn, "changing the root key");
        Ok(change)
    }

    /// The passphrase parameters recorded in this keystore, if any.
    pub fn passphrase_kdf(&self) -> Result<Option<PassphraseKdf>, KeystoreError> {
        read_kdf(&self.lock().conn)
    }
}

fn rows<A, B>(tx: &Transaction<'_>, sql: &str) -> Result<Vec<(A, B)>, KeystoreError>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
{
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every CMK material still present (not deleted): key id, version and its wrapping.
fn wrapped_materials(tx: &Transaction<'_>) -> Result<Vec<(String, u32, Vec<u8>)>, KeystoreError> {
    let mut stmt =
        tx.prepare("SELECT key_id, version, wrapped FROM cmk_materials WHERE wrapped IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Moves every wrapped key of a keystore from before the seal to the contexts that name the
/// store (v2), under the same root key, inside the transaction that seals it.
pub(super) fn move_wraps_forward(
    tx: &Transaction<'_>,
    root: &Key256,
    store_id: &StoreId,
) -> Result<(), KeystoreError> {
    let masters: Vec<(u32, Vec<u8>)> = rows(tx, "SELECT version, wrapped FROM master_keys")?;
    for (version, wrapped) in masters {
        let new = rewrap_context(
            root,
            &legacy_master_context(store_id, version),
            &master_context(store_id, version),
            wrapped,
            || format!("master key version {version}"),
        )?;
        tx.execute(
            "UPDATE master_keys SET wrapped = ?1 WHERE version = ?2",
            (new, version),
        )?;
    }
    let materials = wrapped_materials(tx)?;
    for (key_id, version, wrapped) in materials {
        let new = rewrap_context(
            root,
            &legacy_cmk_context(&key_id, version),
            &cmk_context(store_id, &key_id, version),
            wrapped,
            || format!("CMK {key_id} material version {version}"),
        )?;
        tx.execute(
            "UPDATE cmk_materials SET wrapped = ?1 WHERE key_id = ?2 AND version = ?3",
            (new, &key_id, version),
        )?;
    }
    let seeds: Vec<(String, String, Vec<u8>)> = {
        let mut stmt = tx.prepare("SELECT key_id, token, wrapped_seed FROM import_params")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (key_id, token, wrapped) in seeds {
        let new = rewrap_context(
            root,
            &super::byok::legacy_import_context(&key_id, &token),
            &super::byok::import_context(store_id, &key_id, &token),
            wrapped,
            || format!("the import parameters of CMK {key_id}"),
        )?;
        tx.execute(
            "UPDATE import_params SET wrapped_seed = ?1 WHERE key_id = ?2",
            (new, &key_id),
        )?;
    }
    Ok(())
}

/// Unwraps `wrapped` under `root` with context `old` and wraps it again with `new`.
fn rewrap_context(
    root: &Key256,
    old: &[u8],
    new: &[u8],
    wrapped: Vec<u8>,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, KeystoreError> {
    let key = unwrap_key(root, old, &WrappedKey(wrapped)).map_err(|_| {
        KeystoreError::Corrupt(format!("{} does not unwrap under the root key", what()))
    })?;
    Ok(wrap_key(root, new, &key)?.0)
}

/// Unwraps `wrapped` under `old` and wraps the key under `new`, same context.
fn rewrap(
    old: &Key256,
    new: &Key256,
    context: &[u8],
    wrapped: Vec<u8>,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, KeystoreError> {
    let key = unwrap_key(old, context, &WrappedKey(wrapped)).map_err(|_| {
        KeystoreError::Corrupt(format!("{} does not unwrap under the root key", what()))
    })?;
    Ok(wrap_key(new, context, &key)?.0)
}

#[cfg(test)]
mod tests {
    use super::super::{Caller, CmkOrigin};
    use super::*;

    /// Cheap parameters: the tests check wiring, not cost.
    fn cheap(salt: u8) -> PassphraseKdf {
        PassphraseKdf {
            salt: vec![salt; 16],
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn the_derived_key_depends_on_passphrase_salt_and_cost() {
        let a = cheap(1).derive(b"correct horse").unwrap();
        let again = cheap(1).derive(b"correct horse").unwrap();
        assert_eq!(a.expose_secret(), again.expose_secret());
        let other_pass = cheap(1).derive(b"correct horsE").unwrap();
        let other_salt = cheap(2).derive(b"correct horse").unwrap();
        let mut costlier = cheap(1);
        costlier.iterations = 2;
        let other_cost = costlier.derive(b"correct horse").unwrap();
        for k in [&other_pass, &other_salt, &other_cost] {
            assert_ne!(a.expose_secret(), k.expose_secret());
        }
        let mut broken = cheap(1);
        broken.memory_kib = 1;
        assert!(matches!(
            broken.derive(b"x"),
            Err(KeystoreError::Corrupt(_))
        ));
    }

    #[test]
    fn costs_from_a_changed_keystore_are_refused_before_any_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let root = cheap(3).derive(b"correct horse").unwrap();
        let ks = Keystore::create(dir.path(), &root).unwrap();
        ks.record_passphrase_kdf(&cheap(3)).unwrap();
        drop(ks);
        assert_eq!(read_passphrase_kdf(dir.path()).unwrap(), Some(cheap(3)));
        let raw = Connection::open(dir.path().join(KEYSTORE_FILE)).unwrap();
        for (column, value) in [
            ("root_kdf_memory_kib", i64::from(u32::MAX)), // 4 TiB
            ("root_kdf_memory_kib", i64::from(MAX_KDF_MEMORY_KIB) + 1),
            ("root_kdf_iterations", 1_000_000),
            ("root_kdf_parallelism", 0xFF_FFFF),
        ] {
            let before: i64 = raw
                .query_row(&format!("SELECT {column} FROM meta"), [], |r| r.get(0))
                .unwrap();
            raw.execute(&format!("UPDATE meta SET {column} = ?1"), [value])
                .unwrap();
            let err = read_passphrase_kdf(dir.path()).unwrap_err();
            assert!(
                matches!(&err, KeystoreError::Corrupt(m) if m.contains("outside what ssefs accepts")),
                "{column}={value}: {err}"
            );
            raw.execute(&format!("UPDATE meta SET {column} = ?1"), [before])
                .unwrap();
        }
        let mut huge = cheap(3);
        huge.memory_kib = u32::MAX;
        assert!(huge.derive(b"correct horse").is_err());
    }

    #[test]
    fn changing_the_root_key_rewraps_everything_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &old).unwrap();
        ks.new_master_key().unwrap();
        let id = ks.create_cmk("c", None, CmkOrigin::Ssefs, 0).unwrap();
        let caller = Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            pid: 1,
        };
        ks.rotate_cmk(&id, &caller).unwrap();
        let m1 = ks.master_key_version(1).unwrap();
        let m2 = ks.master_key_version(2).unwrap();
        let (_, _, c2) = ks.resolve_cmk(&id).unwrap();
        assert_eq!(read_passphrase_kdf(dir.path()).unwrap(), None);

        let kdf = cheap(7);
        let new = kdf.derive(b"a new passphrase").unwrap();
        let change = ks.change_root_key(&new, Some(&kdf)).unwrap();
        assert_eq!(change.master_keys, 2);
        assert_eq!(change.cmk_materials, 2);
        assert_eq!(read_passphrase_kdf(dir.path()).unwrap(), Some(kdf.clone()));

        assert!(matches!(
            Keystore::open(dir.path(), &old),
            Err(KeystoreError::WrongRootKey)
        ));
        let reopened = Keystore::open(dir.path(), &new).unwrap();
        assert_eq!(
            reopened.master_key_version(1).unwrap().expose_secret(),
            m1.expose_secret()
        );
        assert_eq!(
            reopened.master_key_version(2).unwrap().expose_secret(),
            m2.expose_secret()
        );
        assert_eq!(
            reopened.resolve_cmk(&id).unwrap().2.expose_secret(),
            c2.expose_secret()
        );
        assert_eq!(reopened.passphrase_kdf().unwrap(), Some(kdf));

        // Back to a key file: the parameters go.
        let file_key = Key256::generate().unwrap();
        reopened.change_root_key(&file_key, None).unwrap();
        assert_eq!(read_passphrase_kdf(dir.path()).unwrap(), None);
        Keystore::open(dir.path(), &file_key).unwrap();
    }

    #[test]
    fn a_root_key_change_that_fails_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let old = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &old).unwrap();
        ks.new_master_key().unwrap();
        // Damage version 2's wrapping: the change must stop and leave version 1 as it was.
        ks.lock()
            .conn
            .execute(
                "UPDATE master_keys SET wrapped = zeroblob(length(wrapped)) WHERE version = 2",
                [],
            )
            .unwrap();
        // Under a seal that holds, so the damage itself is what stops the change.
        crate::keystore::tests::reseal_as_ssefs(dir.path(), &old);
        let new = Key256::generate().unwrap();
        let err = ks.change_root_key(&new, None).unwrap_err();
        assert!(err.to_string().contains("master key version 2"), "{err}");
        let reopened = Keystore::open(dir.path(), &old).unwrap();
        reopened.master_key_version(1).unwrap();
        assert!(matches!(
            Keystore::open(dir.path(), &new),
            Err(KeystoreError::WrongRootKey)
        ));
    }
}

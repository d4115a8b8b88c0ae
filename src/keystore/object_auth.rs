//! The store's object-authentication key: one random 256-bit key per store, wrapped under the
//! root key like the master keys, that keys every object tag (`crypto::StoreKey`), so only
//! this keystore's holder can forge or move an object into this store. Created with the
//! keystore, or on the first open after the schema step that adds it. Also the store's
//! object format floor: the oldest object format version its objects may still have.

use super::{KeystoreError, StoreId};
use crate::crypto::{Key256, StoreKey, WrappedKey, unwrap_key, wrap_key};
use rusqlite::{Connection, OptionalExtension, Transaction};

const OBJECT_AUTH_LABEL: &[u8] = b"ssefs/object-auth/v1";

/// `"ssefs/object-auth/v1" ‖ u8 16 ‖ store id`.
fn context(store_id: &StoreId) -> Vec<u8> {
    let id = store_id.as_bytes();
    [OBJECT_AUTH_LABEL, &[id.len() as u8], id.as_slice()].concat()
}

/// Creates the key if the schema step that added its table asked for it (`object_auth_pending`
/// is set by that step and cleared here, in the caller's sealed transaction, with the new row);
/// a keystore whose key was removed afterwards is corrupt, never silently given a new key.
/// Returns whether it wrote anything.
pub(super) fn ensure_in(
    tx: &Transaction<'_>,
    root_key: &Key256,
    store_id: &StoreId,
    now: i64,
) -> Result<bool, KeystoreError> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM object_auth_key WHERE id = 1)",
        [],
        |r| r.get(0),
    )?;
    let pending: bool = tx.query_row(
        "SELECT object_auth_pending FROM meta WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    match (exists, pending) {
        (true, false) => return Ok(false),
        (false, false) => {
            return Err(KeystoreError::Corrupt(
                "the object authentication key is missing".into(),
            ));
        }
        (false, true) => insert(tx, root_key, store_id, now)?,
        (true, true) => {}
    }
    tx.execute("UPDATE meta SET object_auth_pending = 0 WHERE id = 1", [])?;
    Ok(true)
}

fn insert(
    tx: &Transaction<'_>,
    root_key: &Key256,
    store_id: &StoreId,
    now: i64,
) -> Result<(), KeystoreError> {
    let key = Key256::generate()?;
    let wrapped = wrap_key(root_key, &context(store_id), &key)?;
    tx.execute(
        "INSERT INTO object_auth_key (id, wrapped, created_at) VALUES (1, ?1, ?2)",
        (wrapped.0, now),
    )?;
    Ok(())
}

/// Raises the store's object format floor to `version` (never lowers it): objects of older
/// versions are refused from then on. A new store starts at the current version; an older
/// store is raised by `ssefs upgrade` once no older object is left.
pub(super) fn raise_floor(conn: &Connection, version: u16) -> Result<(), KeystoreError> {
    conn.execute(
        "UPDATE meta SET min_object_version = max(min_object_version, ?1) WHERE id = 1",
        [version],
    )?;
    Ok(())
}

/// Unwraps the store's object-authentication key, with the store's object format floor.
pub(super) fn load(
    conn: &Connection,
    root_key: &Key256,
    store_id: &StoreId,
) -> Result<StoreKey, KeystoreError> {
    let wrapped: Vec<u8> = conn
        .query_row(
            "SELECT wrapped FROM object_auth_key WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| KeystoreError::Corrupt("the object authentication key is missing".into()))?;
    let floor: u16 = conn.query_row(
        "SELECT min_object_version FROM meta WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    let key = unwrap_key(root_key, &context(store_id), &WrappedKey(wrapped)).map_err(|_| {
        KeystoreError::Corrupt(
            "the object authentication key does not unwrap under the root key".into(),
        )
    })?;
    Ok(StoreKey::new(*store_id.as_bytes(), key).with_min_version(floor))
}

/// The key and floor of a keystore that may predate them (a backup, or the keystore a restore
/// replaces), read without migrating it: `None` when it has no key yet (its schema step, or
/// the first open after it, has not run). A key that does not unwrap is `Corrupt`.
pub(super) fn load_if_present(
    conn: &Connection,
    root_key: &Key256,
    store_id: &StoreId,
) -> Result<Option<StoreKey>, KeystoreError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema
                        WHERE type = 'table' AND name = 'object_auth_key')",
        [],
        |r| r.get(0),
    )?;
    let has_row = has_table
        && conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM object_auth_key WHERE id = 1)",
            [],
            |r| r.get(0),
        )?;
    if !has_row {
        return Ok(None);
    }
    load(conn, root_key, store_id).map(Some)
}

/// The object format floor of a keystore that may predate it (1 then: every format).
pub(super) fn floor(conn: &Connection) -> Result<u16, KeystoreError> {
    let has_column: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('meta')
                        WHERE name = 'min_object_version')",
        [],
        |r| r.get(0),
    )?;
    if !has_column {
        return Ok(1);
    }
    Ok(conn.query_row(
        "SELECT min_object_version FROM meta WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

/// Re-wraps the key under `new_root` inside `change-root-key`'s transaction.
pub(super) fn rewrap(
    tx: &Transaction<'_>,
    old_root: &Key256,
    new_root: &Key256,
    store_id: &StoreId,
) -> Result<(), KeystoreError> {
    let key = load(tx, old_root, store_id)?;
    let wrapped = wrap_key(new_root, &context(store_id), key.auth_key())?;
    tx.execute(
        "UPDATE object_auth_key SET wrapped = ?1 WHERE id = 1",
        [wrapped.0],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Keystore;
    use super::*;

    #[test]
    fn a_new_keystore_has_a_key_that_survives_reopening_and_differs_per_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &root).unwrap();
        let key = ks.store_key().unwrap();
        assert_eq!(key.id(), ks.store_id().as_bytes());
        drop(ks);
        let again = Keystore::open(dir.path(), &root)
            .unwrap()
            .store_key()
            .unwrap();
        assert_eq!(
            again.auth_key().expose_secret(),
            key.auth_key().expose_secret()
        );
        let other_dir = tempfile::tempdir().unwrap();
        let other = Keystore::create(other_dir.path(), &root).unwrap();
        assert_ne!(
            other.store_key().unwrap().auth_key().expose_secret(),
            key.auth_key().expose_secret()
        );
    }

    #[test]
    fn change_root_key_rewraps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let old_root = Key256::generate().unwrap();
        let new_root = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &old_root).unwrap();
        let before = ks.store_key().unwrap();
        ks.change_root_key(&new_root, None).unwrap();
        let after = Keystore::open(dir.path(), &new_root)
            .unwrap()
            .store_key()
            .unwrap();
        assert_eq!(
            after.auth_key().expose_secret(),
            before.auth_key().expose_secret()
        );
    }

    #[test]
    fn a_new_store_refuses_old_objects_and_the_floor_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let root = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &root).unwrap();
        assert_eq!(
            ks.store_key().unwrap().min_version(),
            crate::crypto::FORMAT_VERSION
        );
        ks.raise_object_format_floor(1).unwrap();
        assert_eq!(
            ks.store_key().unwrap().min_version(),
            crate::crypto::FORMAT_VERSION
        );
    }

    /// A keystore of schema version 3 (before the object-authentication key): the first open
    /// migrates it, creates the key once, and keeps accepting version 1 objects.
    #[test]
    fn an_older_keystore_gets_its_key_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::KEYSTORE_FILE);
        std::fs::File::create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let root = Key256::generate().unwrap();
        let store_id = StoreId::generate().unwrap();
        {
            let mut conn = super::super::connect(&path).unwrap();
            super::super::schema::migrate_to(&mut conn, 3).unwrap();
            let tx = conn.transaction().unwrap();
            // As a keystore of that version was written: the root check and the master key's
            // wrap context from before the seal.
            tx.execute(
                "INSERT INTO meta (id, store_id, created_at, root_check) VALUES (1, ?1, 1, ?2)",
                (
                    store_id.to_string(),
                    super::super::ids::legacy_root_check(&root, &store_id).unwrap(),
                ),
            )
            .unwrap();
            let (_, wrapped) = super::super::tests::legacy_master_wrap(&root, &store_id, 1);
            tx.execute(
                "INSERT INTO master_keys (version, wrapped, created_at) VALUES (1, ?1, 1)",
                [wrapped],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let first = Keystore::open(dir.path(), &root)
            .unwrap()
            .store_key()
            .unwrap();
        assert_eq!(first.min_version(), 1, "older objects stay readable");
        assert_eq!(first.id(), store_id.as_bytes());
        let again = Keystore::open(dir.path(), &root)
            .unwrap()
            .store_key()
            .unwrap();
        assert_eq!(
            again.auth_key().expose_secret(),
            first.auth_key().expose_secret()
        );
    }

    #[test]
    fn a_removed_key_is_corruption_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = Key256::generate().unwrap();
        drop(Keystore::create(dir.path(), &root).unwrap());
        let conn = Connection::open(dir.path().join(super::super::KEYSTORE_FILE)).unwrap();
        conn.execute("DELETE FROM object_auth_key", []).unwrap();
        drop(conn);
        // The seal names the removed row; nothing makes a new key in its place.
        let err = Keystore::open(dir.path(), &root).err().unwrap();
        assert!(
            matches!(&err, KeystoreError::Tampered(p) if p.iter().any(|p| p.contains("object_auth_key"))),
            "{err}"
        );
    }
}

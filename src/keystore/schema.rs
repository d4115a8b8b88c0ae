//! The keystore's SQL schema as numbered migration steps under `PRAGMA user_version`, and the
//! checks that tell an ssefs keystore from any other file. Holds no keys and no policy.

use super::KeystoreError;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;

/// Migration step `n` (1-based) brings the schema from version `n - 1` to `n`. Steps are
/// append-only: a released step is never edited, a change is a new step.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE meta (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        store_id    TEXT    NOT NULL CHECK (length(store_id) = 32),
        created_at  INTEGER NOT NULL,
        root_check  BLOB    NOT NULL CHECK (length(root_check) = 32)
    ) STRICT;

    CREATE TABLE master_keys (
        version     INTEGER PRIMARY KEY CHECK (version >= 1),
        wrapped     BLOB    NOT NULL,
        created_at  INTEGER NOT NULL,
        retired_at  INTEGER
    ) STRICT;

    CREATE TABLE cmks (
        key_id        TEXT    PRIMARY KEY,
        description   TEXT    NOT NULL DEFAULT '',
        origin        TEXT    NOT NULL CHECK (origin IN ('ssefs', 'external')),
        state         TEXT    NOT NULL
                      CHECK (state IN ('Enabled', 'Disabled', 'PendingDeletion', 'PendingImport')),
        owner_uid     INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        deletion_date INTEGER,
        rotation_days INTEGER CHECK (rotation_days IS NULL OR rotation_days > 0)
    ) STRICT;

    CREATE TABLE cmk_materials (
        key_id         TEXT    NOT NULL REFERENCES cmks (key_id) ON DELETE CASCADE,
        version        INTEGER NOT NULL CHECK (version >= 1),
        wrapped        BLOB,
        material_check BLOB,
        created_at     INTEGER NOT NULL,
        PRIMARY KEY (key_id, version)
    ) STRICT;

    CREATE TABLE aliases (
        alias   TEXT PRIMARY KEY CHECK (alias LIKE 'alias/_%'),
        key_id  TEXT NOT NULL REFERENCES cmks (key_id) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX aliases_by_key ON aliases (key_id);

    CREATE TABLE grants (
        id            INTEGER PRIMARY KEY,
        key_id        TEXT    NOT NULL REFERENCES cmks (key_id) ON DELETE CASCADE,
        grantee_kind  TEXT    NOT NULL CHECK (grantee_kind IN ('uid', 'gid')),
        grantee       INTEGER NOT NULL,
        operations    TEXT    NOT NULL,
        created_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX grants_by_key ON grants (key_id);

    CREATE TABLE bucket_rules (
        bucket      TEXT    PRIMARY KEY,
        algorithm   TEXT    NOT NULL CHECK (algorithm IN ('AES256', 'KMS')),
        kms_key_id  TEXT,
        updated_at  INTEGER NOT NULL,
        CHECK (algorithm = 'KMS' OR kms_key_id IS NULL)
    ) STRICT;

    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        time         INTEGER NOT NULL,
        uid          INTEGER,
        pid          INTEGER,
        key_id       TEXT,
        operation    TEXT    NOT NULL,
        object_path  TEXT,
        result       TEXT    NOT NULL,
        detail       TEXT
    ) STRICT;
    "#,
    // 2: the KMS side. `cmks` is rebuilt (SQLite cannot change a CHECK) to admit the final
    // `Destroyed` state; grants get one row per grantee; BYOK import parameters, per-CMK usage
    // counts, audit indexes and the audit retention settings are added.
    r#"
    CREATE TABLE cmks_v2 (
        key_id        TEXT    PRIMARY KEY,
        description   TEXT    NOT NULL DEFAULT '',
        origin        TEXT    NOT NULL CHECK (origin IN ('ssefs', 'external')),
        state         TEXT    NOT NULL
                      CHECK (state IN ('Enabled', 'Disabled', 'PendingDeletion', 'PendingImport',
                                       'Destroyed')),
        owner_uid     INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        deletion_date INTEGER,
        rotation_days INTEGER CHECK (rotation_days IS NULL OR rotation_days > 0),
        CHECK (state NOT IN ('PendingDeletion', 'Destroyed') OR deletion_date IS NOT NULL)
    ) STRICT;
    INSERT INTO cmks_v2 (key_id, description, origin, state, owner_uid, created_at,
                         deletion_date, rotation_days)
        SELECT key_id, description, origin, state, owner_uid, created_at, deletion_date,
               rotation_days
        FROM cmks;
    DROP TABLE cmks;
    ALTER TABLE cmks_v2 RENAME TO cmks;

    CREATE UNIQUE INDEX grants_by_grantee ON grants (key_id, grantee_kind, grantee);

    CREATE TABLE import_params (
        key_id       TEXT    PRIMARY KEY REFERENCES cmks (key_id) ON DELETE CASCADE,
        token        TEXT    NOT NULL UNIQUE,
        wrapped_seed BLOB    NOT NULL,
        public_key   BLOB    NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE cmk_usage (
        key_id            TEXT    PRIMARY KEY REFERENCES cmks (key_id) ON DELETE CASCADE,
        generate_data_key INTEGER NOT NULL DEFAULT 0,
        decrypt           INTEGER NOT NULL DEFAULT 0,
        denied            INTEGER NOT NULL DEFAULT 0,
        last_used_at      INTEGER
    ) STRICT;

    CREATE INDEX audit_by_time ON audit (time);
    CREATE INDEX audit_by_key ON audit (key_id, time);

    ALTER TABLE meta ADD COLUMN audit_retention_days INTEGER NOT NULL DEFAULT 90
        CHECK (audit_retention_days >= 1);
    ALTER TABLE meta ADD COLUMN audit_max_rows INTEGER NOT NULL DEFAULT 100000
        CHECK (audit_max_rows >= 1);
    "#,
    // 3: a root key derived from a passphrase: the Argon2id salt and parameters (all NULL
    // when the root key is a key file).
    r#"
    ALTER TABLE meta ADD COLUMN root_kdf TEXT CHECK (root_kdf IS NULL OR root_kdf = 'argon2id');
    ALTER TABLE meta ADD COLUMN root_kdf_salt BLOB CHECK (root_kdf_salt IS NULL
        OR length(root_kdf_salt) >= 16);
    ALTER TABLE meta ADD COLUMN root_kdf_memory_kib INTEGER;
    ALTER TABLE meta ADD COLUMN root_kdf_iterations INTEGER;
    ALTER TABLE meta ADD COLUMN root_kdf_parallelism INTEGER;
    "#,
    // The store's object-authentication key (one row, wrapped under the root key). ssefs
    // creates it on the next open, when it has the root key, and clears the pending mark.
    r#"
    CREATE TABLE object_auth_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        wrapped     BLOB    NOT NULL CHECK (length(wrapped) = 80),
        created_at  INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE meta ADD COLUMN object_auth_pending INTEGER NOT NULL DEFAULT 1
        CHECK (object_auth_pending IN (0, 1));
    ALTER TABLE meta ADD COLUMN min_object_version INTEGER NOT NULL DEFAULT 1
        CHECK (min_object_version >= 1);
    "#,
    // The keystore seal (see seal.rs): one MAC per sealed row, one seal per sealed table, the
    // audit log's hash chain (a hash per record, merged repeats, a MACed head), and the
    // tombstones of destroyed CMKs and deleted material (ids only) that a restored backup
    // must not bring back. Sealed in the same transaction by `Keystore::open`.
    r#"
    CREATE TABLE row_seals (
        tbl      TEXT NOT NULL,
        row_key  TEXT NOT NULL,
        mac      BLOB NOT NULL CHECK (length(mac) = 32),
        PRIMARY KEY (tbl, row_key)
    ) STRICT;
    CREATE TABLE table_seals (
        tbl        TEXT    PRIMARY KEY,
        row_count  INTEGER NOT NULL,
        digest     BLOB    NOT NULL CHECK (length(digest) = 32)
    ) STRICT;
    ALTER TABLE audit ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1 CHECK (repeats >= 1);
    ALTER TABLE audit ADD COLUMN last_time INTEGER;
    ALTER TABLE audit ADD COLUMN hash BLOB CHECK (hash IS NULL OR length(hash) = 32);
    CREATE TABLE audit_chain (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        base       BLOB    NOT NULL CHECK (length(base) = 32),
        head_id    INTEGER NOT NULL,
        head_hash  BLOB    NOT NULL CHECK (length(head_hash) = 32),
        evicted    INTEGER NOT NULL,
        expired    INTEGER NOT NULL,
        mac        BLOB    NOT NULL CHECK (length(mac) = 32)
    ) STRICT;
    CREATE TABLE tombstones (
        key_id        TEXT    NOT NULL,
        version       INTEGER NOT NULL CHECK (version >= 0),
        destroyed_at  INTEGER NOT NULL,
        PRIMARY KEY (key_id, version)
    ) STRICT;
    "#,
    // 6: a root of trust in a PKCS#11 token (see pkcs11.rs): the module, token and key labels,
    // the mechanism and the root secret as the token encrypted it (all NULL otherwise).
    r#"
    ALTER TABLE meta ADD COLUMN root_pkcs11_module TEXT;
    ALTER TABLE meta ADD COLUMN root_pkcs11_token TEXT;
    ALTER TABLE meta ADD COLUMN root_pkcs11_key TEXT;
    ALTER TABLE meta ADD COLUMN root_pkcs11_mechanism TEXT CHECK (root_pkcs11_mechanism IS NULL
        OR root_pkcs11_mechanism IN ('aes-gcm', 'aes-key-wrap-pad'));
    ALTER TABLE meta ADD COLUMN root_pkcs11_wrapped BLOB;
    "#,
];

/// The step that adds the seal tables, found by its content so that renumbering the steps
/// moves it too (tests build keystores from just before it).
#[cfg(test)]
pub(super) fn seal_step() -> i64 {
    MIGRATIONS
        .iter()
        .position(|step| step.contains("CREATE TABLE row_seals"))
        .map_or(0, |i| i as i64 + 1)
}

/// The schema version this ssefs writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Checks, without writing anything, that `conn` is an ssefs keystore this binary can open:
/// an SQLite database with a `meta` table and a schema version it knows.
pub(super) fn check_is_keystore(conn: &Connection, path: &Path) -> Result<(), KeystoreError> {
    let not_a_keystore = |e| not_a_database(e, path);
    let version = user_version(conn).map_err(not_a_keystore)?;
    if version > SCHEMA_VERSION {
        return Err(KeystoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
            [],
            |row| row.get(0),
        )
        .map_err(not_a_keystore)?;
    if version < 1 || !has_meta {
        return Err(KeystoreError::NotAKeystore(path.to_path_buf()));
    }
    Ok(())
}

/// SQLite's "file is not a database" as `NotAKeystore`; any other error as it is.
pub(super) fn not_a_database(e: rusqlite::Error, path: &Path) -> KeystoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => KeystoreError::NotAKeystore(path.to_path_buf()),
        _ => KeystoreError::Database(e),
    }
}

/// Applies every step newer than the database's version, in one immediate transaction that
/// also sets `user_version`. Safe against a concurrent migrator: the version is re-read under
/// the write lock.
#[cfg(test)]
pub(super) fn migrate(conn: &mut Connection) -> Result<(), KeystoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// As [`migrate`], stopping at version `last` (tests build old keystores with it).
#[cfg(test)]
pub(super) fn migrate_to(conn: &mut Connection, last: i64) -> Result<(), KeystoreError> {
    migrate_with(conn, last, |_| Ok(()), |_, _| Ok(()))
}

/// As [`migrate`], to version `last`, with `before` run in the transaction before any step
/// (to check the keystore as it was) and `after` once the steps ran (told how many), so the
/// steps and what must follow them (sealing) commit together or not at all.
///
/// Foreign keys are off while the steps run, as SQLite's procedure for rebuilding a table
/// requires (dropping a parent table would otherwise cascade into its children); each step
/// is checked with `PRAGMA foreign_key_check` before the commit, and they are on again after.
pub(super) fn migrate_with(
    conn: &mut Connection,
    last: i64,
    before: impl FnOnce(&Transaction<'_>) -> Result<(), KeystoreError>,
    after: impl FnOnce(&Transaction<'_>, usize) -> Result<(), KeystoreError>,
) -> Result<(), KeystoreError> {
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = run_steps(conn, last, before, after);
    let restored = conn.pragma_update(None, "foreign_keys", "ON");
    result?;
    Ok(restored?)
}

fn run_steps(
    conn: &mut Connection,
    last: i64,
    before: impl FnOnce(&Transaction<'_>) -> Result<(), KeystoreError>,
    after: impl FnOnce(&Transaction<'_>, usize) -> Result<(), KeystoreError>,
) -> Result<(), KeystoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = user_version(&tx)?;
    if current > SCHEMA_VERSION {
        return Err(KeystoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    before(&tx)?;
    let mut ran = 0;
    for (index, step) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        if target > last {
            break;
        }
        if current >= target {
            continue;
        }
        tx.execute_batch(step)?;
        let dangling: Option<String> = tx
            .query_row("SELECT \"table\" FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(table) = dangling {
            return Err(KeystoreError::Corrupt(format!(
                "table {table} refers to rows that do not exist (schema step {target})"
            )));
        }
        tx.pragma_update(None, "user_version", target)?;
        ran += 1;
    }
    after(&tx, ran)?;
    tx.commit()?;
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

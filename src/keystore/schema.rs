//! The keystore's SQL schema as numbered migration steps under `PRAGMA user_version`, and the
//! checks that tell an ssefs keystore from any other file. Holds no keys and no policy.

use super::KeystoreError;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
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
];

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

/// Applies every step newer than the database's version, each in its own immediate
/// transaction that also sets `user_version`. Safe against a concurrent migrator: each step
/// re-reads the version under the write lock.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), KeystoreError> {
    for (index, step) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = user_version(&tx)?;
        if current > SCHEMA_VERSION {
            return Err(KeystoreError::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current >= target {
            continue;
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", target)?;
        tx.commit()?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

//! The audit log: one row per key operation (who, which key, which object, what came of it),
//! pruned on every write by age and by a row cap kept in `meta`, and read back with filters.
//! Records carry ids, paths and error messages, never key material.

use super::{Keystore, KeystoreError};
use rusqlite::{Connection, TransactionBehavior};

/// Seconds in a day.
const DAY: i64 = 86_400;
/// The most days a record may be kept.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// The most records the log may be set to keep.
pub const MAX_AUDIT_ROWS: u64 = 100_000_000;

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// `None` for what ssefs does by itself (destroying a CMK past its deletion date).
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    /// The CMK id (or, when no CMK had that name, the id or alias asked for).
    pub key_id: Option<String>,
    /// `CreateKey`, `GenerateDataKey`, `Decrypt`, `DisableKey`, … (cloud KMS action names).
    pub operation: String,
    pub object_path: Option<String>,
    /// `Success`, or why not: `AccessDenied`, `NotFound`, `KeyRevoked`, `InvalidState`,
    /// `InvalidParameter`, `Failed`.
    pub result: String,
    pub detail: Option<String>,
}

/// Which records to read.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only records of this CMK (an id or alias).
    pub key: Option<String>,
    /// Only records at or after this time (seconds since the Unix epoch).
    pub since: Option<i64>,
}

/// How long the log keeps records: whatever is older than `retention_days`, and the oldest
/// records beyond `max_rows`, are removed at each write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    pub retention_days: u32,
    pub max_rows: u64,
}

/// A record about to be written.
pub(super) struct AuditEvent<'a> {
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    pub key_id: Option<&'a str>,
    pub operation: &'a str,
    pub object_path: Option<&'a str>,
    pub result: &'a str,
    pub detail: Option<&'a str>,
}

/// Appends a record and prunes the log, inside the caller's transaction.
pub(super) fn insert(
    conn: &Connection,
    now: i64,
    event: &AuditEvent<'_>,
) -> Result<(), KeystoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (time, uid, pid, key_id, operation, object_path, result, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute((
        now,
        event.uid,
        event.pid,
        event.key_id,
        event.operation,
        event.object_path,
        event.result,
        event.detail,
    ))?;
    let (days, max_rows): (i64, i64) = conn
        .prepare_cached("SELECT audit_retention_days, audit_max_rows FROM meta WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    conn.prepare_cached("DELETE FROM audit WHERE time < ?1")?
        .execute([now.saturating_sub(days.saturating_mul(DAY))])?;
    conn.prepare_cached("DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?1")?
        .execute([max_rows])?;
    Ok(())
}

/// Writes the record of a refused or failed operation in its own transaction. Best effort:
/// the operation's own error matters more to the caller than a failure to record it.
pub(super) fn record_failure(conn: &Connection, now: i64, event: &AuditEvent<'_>) {
    let written = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(KeystoreError::from)
        .and_then(|tx| {
            insert(&tx, now, event)?;
            Ok(tx.commit()?)
        });
    if let Err(e) = written {
        log::warn!(
            "cannot write the audit record of a failed {}: {e}",
            event.operation
        );
    }
}

impl Keystore {
    /// The audit records matching `query`, oldest first.
    pub fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, KeystoreError> {
        let key_id = match &query.key {
            Some(key) => Some(self.key_id_or_name(key)?),
            None => None,
        };
        let inner = self.lock();
        let mut stmt = inner.conn.prepare(
            "SELECT id, time, uid, pid, key_id, operation, object_path, result, detail
             FROM audit
             WHERE (?1 IS NULL OR key_id = ?1 OR key_id = ?2) AND (?3 IS NULL OR time >= ?3)
             ORDER BY id",
        )?;
        let rows = stmt.query_map((&key_id, &query.key, query.since), |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                time: r.get(1)?,
                uid: r.get(2)?,
                pid: r.get(3)?,
                key_id: r.get(4)?,
                operation: r.get(5)?,
                object_path: r.get(6)?,
                result: r.get(7)?,
                detail: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The audit log's retention settings.
    pub fn audit_settings(&self) -> Result<AuditSettings, KeystoreError> {
        let inner = self.lock();
        let (days, max_rows): (i64, i64) = inner.conn.query_row(
            "SELECT audit_retention_days, audit_max_rows FROM meta WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let corrupt =
            || KeystoreError::Corrupt("the audit retention settings are out of range".into());
        Ok(AuditSettings {
            retention_days: u32::try_from(days).map_err(|_| corrupt())?,
            max_rows: u64::try_from(max_rows).map_err(|_| corrupt())?,
        })
    }

    /// Changes the audit log's retention (1..=36500 days, 1..=100000000 records) and prunes
    /// what the new settings no longer keep.
    pub fn set_audit_settings(&self, settings: AuditSettings) -> Result<(), KeystoreError> {
        if !(1..=MAX_RETENTION_DAYS).contains(&settings.retention_days) {
            return Err(KeystoreError::InvalidAuditSetting(format!(
                "retention must be 1 to {MAX_RETENTION_DAYS} days, not {}",
                settings.retention_days
            )));
        }
        if !(1..=MAX_AUDIT_ROWS).contains(&settings.max_rows) {
            return Err(KeystoreError::InvalidAuditSetting(format!(
                "the log must keep 1 to {MAX_AUDIT_ROWS} records, not {}",
                settings.max_rows
            )));
        }
        let now = self.now();
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        tx.execute(
            "UPDATE meta SET audit_retention_days = ?1, audit_max_rows = ?2 WHERE id = 1",
            (
                settings.retention_days,
                i64::try_from(settings.max_rows).unwrap_or(i64::MAX),
            ),
        )?;
        tx.execute(
            "DELETE FROM audit WHERE time < ?1",
            [now.saturating_sub(i64::from(settings.retention_days).saturating_mul(DAY))],
        )?;
        tx.execute(
            "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?1",
            [i64::try_from(settings.max_rows).unwrap_or(i64::MAX)],
        )?;
        super::seal::commit(tx, &self.seal_key)?;
        Ok(())
    }
}

//! The audit log: one row per key operation (who, which key, which object, what came of it),
//! pruned on every write by age and by a row cap kept in `meta`, and read back with filters.
//! Records carry ids, paths and error messages, never key material.

use super::{Keystore, KeystoreError};
use crate::crypto::{CryptoError, Key256};
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

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
    /// How many identical records this one stands for (the same use, repeated).
    pub repeats: u64,
    /// When the last of them happened, if more than one.
    pub last_time: Option<i64>,
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

/// How many records one uid may add in a minute before the rest of that minute's records
/// are only counted (in one `RateLimited` record), so one user cannot flood the log.
pub const AUDIT_RATE_PER_MINUTE: i64 = 600;
const MINUTE: i64 = 60;
const CHAIN_LABEL: &[u8] = b"ssefs/audit/v1";
const HEAD_LABEL: &[u8] = b"ssefs/audit-head/v1";

/// The authenticated end of the hash chain: the hash before the oldest kept record (`base`),
/// the newest record and its hash, and how many records left the log at the row cap
/// (`evicted`) and by age (`expired`). MACed with the keystore's seal key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChainHead {
    pub base: Vec<u8>,
    pub head_id: i64,
    pub head_hash: Vec<u8>,
    pub evicted: i64,
    pub expired: i64,
}

impl ChainHead {
    fn genesis() -> Self {
        ChainHead {
            base: vec![0; 32],
            head_id: 0,
            head_hash: vec![0; 32],
            evicted: 0,
            expired: 0,
        }
    }

    fn mac(&self, key: &Key256) -> Result<Vec<u8>, KeystoreError> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret())
            .map_err(|_| CryptoError::Malformed("HMAC key length".into()))?;
        mac.update(HEAD_LABEL);
        for part in [&self.base[..], &self.head_hash[..]] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        for n in [self.head_id, self.evicted, self.expired] {
            mac.update(&n.to_le_bytes());
        }
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

/// How many records left the log, and whether its chain holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditIntegrity {
    /// Records removed because the log reached its row cap (logged when it happens).
    pub evicted: u64,
    /// Records removed because they were older than the retention.
    pub expired: u64,
    /// Every break in the chain, one sentence each (empty when the log is intact).
    pub problems: Vec<String>,
}

/// The head, its MAC checked; `Tampered` if it was changed; genesis if there is none yet.
pub(super) fn read_head(conn: &Connection, key: &Key256) -> Result<ChainHead, KeystoreError> {
    let row: Option<(ChainHead, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT base, head_id, head_hash, evicted, expired, mac FROM audit_chain WHERE id = 1",
        )?
        .query_row([], |r| {
            let head = ChainHead {
                base: r.get(0)?,
                head_id: r.get(1)?,
                head_hash: r.get(2)?,
                evicted: r.get(3)?,
                expired: r.get(4)?,
            };
            Ok((head, r.get(5)?))
        })
        .optional()?;
    let Some((head, mac)) = row else {
        let records: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
        if records > 0 {
            return Err(KeystoreError::Tampered(vec![
                "the audit log's chain head is missing".into(),
            ]));
        }
        return Ok(ChainHead::genesis());
    };
    if head.mac(key)? != mac {
        return Err(KeystoreError::Tampered(vec![
            "the audit log's chain head was changed".into(),
        ]));
    }
    Ok(head)
}

fn write_head(conn: &Connection, key: &Key256, head: &ChainHead) -> Result<(), KeystoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO audit_chain (id, base, head_id, head_hash, evicted, expired, mac)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute((
        &head.base,
        head.head_id,
        &head.head_hash,
        head.evicted,
        head.expired,
        head.mac(key)?,
    ))?;
    Ok(())
}

type ChainRow = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<i64>,
);

const CHAIN_COLUMNS: &str = "id, time, uid, pid, key_id, operation, object_path, result, detail, \
                             repeats, last_time";

fn chain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChainRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

/// `SHA-256("ssefs/audit/v1" ‖ prev ‖ each column, length-prefixed, NULL as a 0xff tag)`.
fn row_hash(prev: &[u8], row: &ChainRow) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(CHAIN_LABEL);
    h.update(prev);
    let ints = [Some(row.0), Some(row.1), row.2, row.3, Some(row.9), row.10];
    for n in ints {
        match n {
            Some(n) => {
                h.update([1]);
                h.update(n.to_le_bytes());
            }
            None => h.update([0xff]),
        }
    }
    for text in [
        &row.4,
        &Some(row.5.clone()),
        &row.6,
        &Some(row.7.clone()),
        &row.8,
    ] {
        match text {
            Some(t) => {
                h.update([3]);
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            None => h.update([0xff]),
        }
    }
    h.finalize().to_vec()
}

/// The hash of the record before `id` (or the chain's base).
fn hash_before(conn: &Connection, id: i64, head: &ChainHead) -> Result<Vec<u8>, KeystoreError> {
    Ok(conn
        .prepare_cached("SELECT hash FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([id], |r| r.get::<_, Option<Vec<u8>>>(0))
        .optional()?
        .flatten()
        .unwrap_or_else(|| head.base.clone()))
}

/// Recomputes the hash of record `id` (the newest) and makes it the head.
fn rehash_newest(conn: &Connection, id: i64, head: &mut ChainHead) -> Result<(), KeystoreError> {
    let prev = hash_before(conn, id, head)?;
    let row = conn
        .prepare_cached(&format!("SELECT {CHAIN_COLUMNS} FROM audit WHERE id = ?1"))?
        .query_row([id], chain_row)?;
    let hash = row_hash(&prev, &row);
    conn.prepare_cached("UPDATE audit SET hash = ?2 WHERE id = ?1")?
        .execute((id, &hash))?;
    head.head_id = id;
    head.head_hash = hash;
    Ok(())
}

/// Appends a record (or counts it on the newest one when it is the same, or when its uid is
/// over its rate), extends the hash chain and prunes the log, inside the caller's
/// transaction. Refuses (`Tampered`) to extend a chain whose head or newest record was
/// changed, so it never seals over an edit.
pub(super) fn insert(
    conn: &Connection,
    key: &Key256,
    now: i64,
    event: &AuditEvent<'_>,
) -> Result<(), KeystoreError> {
    let mut head = read_head(conn, key)?;
    let newest = checked_newest(conn, &head)?;
    let same = |row: &ChainRow| {
        row.2 == event.uid.map(i64::from)
            && row.3 == event.pid.map(i64::from)
            && row.4.as_deref() == event.key_id
            && row.5 == event.operation
            && row.6.as_deref() == event.object_path
            && row.7 == event.result
            && row.8.as_deref() == event.detail
    };
    let over_rate = match event.uid {
        Some(uid) => {
            let recent: i64 = conn
                .prepare_cached("SELECT count(*) FROM audit WHERE uid = ?1 AND time >= ?2")?
                .query_row((uid, now - MINUTE), |r| r.get(0))?;
            recent >= AUDIT_RATE_PER_MINUTE
        }
        None => false,
    };
    let limited = |row: &ChainRow| {
        row.2 == event.uid.map(i64::from) && row.5 == RATE_LIMITED && row.1 >= now - MINUTE
    };
    match &newest {
        Some((row, _)) if same(row) || (over_rate && limited(row)) => {
            conn.prepare_cached(
                "UPDATE audit SET repeats = repeats + 1, last_time = ?2 WHERE id = ?1",
            )?
            .execute((row.0, now))?;
            rehash_newest(conn, row.0, &mut head)?;
        }
        _ => {
            let (operation, result, detail) = if over_rate {
                (
                    RATE_LIMITED,
                    "Success",
                    Some("further records of this uid in this minute are only counted"),
                )
            } else {
                (event.operation, event.result, event.detail)
            };
            conn.prepare_cached(
                "INSERT INTO audit (time, uid, pid, key_id, operation, object_path, result,
                                    detail, repeats)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)",
            )?
            .execute((
                now,
                event.uid,
                event.pid,
                if over_rate { None } else { event.key_id },
                operation,
                if over_rate { None } else { event.object_path },
                result,
                detail,
            ))?;
            rehash_newest(conn, conn.last_insert_rowid(), &mut head)?;
        }
    }
    prune_and_seal(conn, key, &mut head, now)
}

/// The newest record and its hash.
type Newest = (ChainRow, Option<Vec<u8>>);

/// The newest record and its hash, refused (`Tampered`) unless it is the chain's head.
fn checked_newest(conn: &Connection, head: &ChainHead) -> Result<Option<Newest>, KeystoreError> {
    let newest: Option<Newest> = conn
        .prepare_cached(&format!(
            "SELECT {CHAIN_COLUMNS}, hash FROM audit ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([], |r| Ok((chain_row(r)?, r.get(11)?)))
        .optional()?;
    if let Some((row, hash)) = &newest {
        if row.0 != head.head_id || hash.as_deref() != Some(&head.head_hash[..]) {
            return Err(KeystoreError::Tampered(vec![format!(
                "the newest audit record (id {}) is not the chain's head (id {})",
                row.0, head.head_id
            )]));
        }
    }
    Ok(newest)
}

/// Prunes the log by the retention settings and writes the new head.
fn prune_and_seal(
    conn: &Connection,
    key: &Key256,
    head: &mut ChainHead,
    now: i64,
) -> Result<(), KeystoreError> {
    let (days, max_rows): (i64, i64) = conn
        .prepare_cached("SELECT audit_retention_days, audit_max_rows FROM meta WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    prune(conn, head, now, days, max_rows)?;
    write_head(conn, key, head)
}

/// Appends a record written on another copy of the keystore (its time, repeats and last
/// time kept, never merged into the newest), extends the chain and prunes, inside the
/// caller's transaction.
pub(super) fn append(
    conn: &Connection,
    key: &Key256,
    now: i64,
    row: &AuditRecord,
) -> Result<(), KeystoreError> {
    let mut head = read_head(conn, key)?;
    checked_newest(conn, &head)?;
    conn.prepare_cached(
        "INSERT INTO audit (time, uid, pid, key_id, operation, object_path, result, detail,
                            repeats, last_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(rusqlite::params![
        row.time,
        row.uid,
        row.pid,
        row.key_id,
        row.operation,
        row.object_path,
        row.result,
        row.detail,
        i64::try_from(row.repeats).unwrap_or(i64::MAX).max(1),
        row.last_time,
    ])?;
    rehash_newest(conn, conn.last_insert_rowid(), &mut head)?;
    prune_and_seal(conn, key, &mut head, now)
}

/// The operation of a record that counts what a uid did beyond its rate.
pub const RATE_LIMITED: &str = "RateLimited";

/// Removes the oldest records, always a prefix of the chain (so what stays still verifies
/// from the new base): those older than `days` up to the first that is not, then those beyond
/// `max_rows`, each counted in the head; reaching the cap is logged, never silent.
fn prune(
    conn: &Connection,
    head: &mut ChainHead,
    now: i64,
    days: i64,
    max_rows: i64,
) -> Result<(), KeystoreError> {
    let cutoff = now.saturating_sub(days.saturating_mul(DAY));
    let first_kept: Option<i64> = conn
        .prepare_cached("SELECT min(id) FROM audit WHERE time >= ?1")?
        .query_row([cutoff], |r| r.get(0))?;
    let expired_below = first_kept.unwrap_or(i64::MAX);
    head.expired += remove_below(conn, head, expired_below)?;
    // Records are only ever removed as a prefix, so the ids are contiguous: the count is
    // max - min + 1 without scanning the table (two rowid lookups per write).
    let (oldest, newest): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT min(id), max(id) FROM audit")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let (Some(oldest), Some(newest)) = (oldest, newest)
        && newest - oldest + 1 > max_rows
    {
        let keep_from = newest.saturating_sub(max_rows).saturating_add(1);
        let evicted = remove_below(conn, head, keep_from)?;
        if evicted > 0 {
            log::warn!(
                "the KMS audit log reached its cap of {max_rows} records: the {evicted} oldest \
                 were removed ({} in all so far)",
                head.evicted + evicted
            );
        }
        head.evicted += evicted;
    }
    Ok(())
}

/// Deletes every record with an id below `id`, moving the chain's base to the hash of the
/// newest one deleted. Returns how many records that was (counting merged repeats).
fn remove_below(conn: &Connection, head: &mut ChainHead, id: i64) -> Result<i64, KeystoreError> {
    let last: Option<(Option<Vec<u8>>, i64)> = conn
        .prepare_cached(
            "SELECT (SELECT hash FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT 1),
                    coalesce(sum(repeats), 0)
             FROM audit WHERE id < ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(base), removed)) = last else {
        return Ok(0);
    };
    conn.prepare_cached("DELETE FROM audit WHERE id < ?1")?
        .execute([id])?;
    head.base = base;
    Ok(removed)
}

/// Checks the whole chain against its authenticated head.
pub(super) fn verify(conn: &Connection, key: &Key256) -> Result<AuditIntegrity, KeystoreError> {
    let head = match read_head(conn, key) {
        Ok(head) => head,
        Err(KeystoreError::Tampered(problems)) => {
            return Ok(AuditIntegrity {
                problems,
                ..AuditIntegrity::default()
            });
        }
        Err(e) => return Err(e),
    };
    let mut problems = Vec::new();
    let mut prev = head.base.clone();
    let mut last_id = None;
    let mut stmt = conn.prepare(&format!(
        "SELECT {CHAIN_COLUMNS}, hash FROM audit ORDER BY id"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let row = chain_row(r)?;
        let stored: Option<Vec<u8>> = r.get(11)?;
        let expected = row_hash(&prev, &row);
        if stored.as_deref() != Some(&expected[..]) {
            problems.push(format!(
                "audit record {} was changed, or records before it were removed",
                row.0
            ));
            // Go on from what is stored, to name each break once.
            prev = stored.unwrap_or(expected);
        } else {
            prev = expected;
        }
        last_id = Some(row.0);
    }
    match last_id {
        Some(id) if id != head.head_id || prev != head.head_hash => problems.push(format!(
            "audit records after id {id} were removed (the chain ends at id {})",
            head.head_id
        )),
        None if head.base != head.head_hash => {
            problems.push("every audit record was removed".into());
        }
        _ => {}
    }
    Ok(AuditIntegrity {
        evicted: u64::try_from(head.evicted).unwrap_or(0),
        expired: u64::try_from(head.expired).unwrap_or(0),
        problems,
    })
}

/// Builds the chain over the records of a keystore from before it (at its first open, which
/// seals it) or MACs its head again under a new seal key (a root key change).
pub(super) fn rechain(conn: &Connection, key: &Key256) -> Result<(), KeystoreError> {
    let mut head = ChainHead::genesis();
    if let Some((base, head_id, head_hash, evicted, expired)) = conn
        .query_row(
            "SELECT base, head_id, head_hash, evicted, expired FROM audit_chain WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?
    {
        head = ChainHead {
            base,
            head_id,
            head_hash,
            evicted,
            expired,
        };
    }
    let unchained: Vec<i64> = conn
        .prepare("SELECT id FROM audit WHERE hash IS NULL ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in unchained {
        rehash_newest(conn, id, &mut head)?;
    }
    write_head(conn, key, &head)
}

/// Writes the record of a refused or failed operation in its own transaction. Best effort:
/// the operation's own error matters more to the caller than a failure to record it.
pub(super) fn record_failure(conn: &Connection, key: &Key256, now: i64, event: &AuditEvent<'_>) {
    let written = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(KeystoreError::from)
        .and_then(|tx| {
            insert(&tx, key, now, event)?;
            Ok(tx.commit()?)
        });
    if let Err(e) = written {
        log::warn!(
            "cannot write the audit record of a failed {}: {e}",
            event.operation
        );
    }
}

/// A record from a row of `SELECT id, time, uid, pid, key_id, operation, object_path, result,
/// detail, repeats, last_time`.
fn audit_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
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
        repeats: r.get::<_, i64>(9)?.try_into().unwrap_or(1),
        last_time: r.get(10)?,
    })
}

/// Every record of the keystore behind `conn` from id `first` on, oldest first.
pub(super) fn records_from(
    conn: &Connection,
    first: i64,
) -> Result<Vec<AuditRecord>, KeystoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {CHAIN_COLUMNS} FROM audit WHERE id >= ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([first], audit_record)?;
    Ok(rows.collect::<Result<_, _>>()?)
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
            "SELECT id, time, uid, pid, key_id, operation, object_path, result, detail,
                    repeats, last_time
             FROM audit
             WHERE (?1 IS NULL OR key_id = ?1 OR key_id = ?2) AND (?3 IS NULL OR time >= ?3)
             ORDER BY id",
        )?;
        let rows = stmt.query_map((&key_id, &query.key, query.since), audit_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks the audit log's hash chain against its authenticated head, in one snapshot, and
    /// says how many records left it at the cap or by age (`ssefs kms audit --verify`, fsck).
    pub fn verify_audit(&self) -> Result<AuditIntegrity, KeystoreError> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let integrity = verify(&tx, &self.seal_key)?;
        tx.commit()?;
        Ok(integrity)
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
        let mut head = read_head(&tx, &self.seal_key)?;
        prune(
            &tx,
            &mut head,
            now,
            i64::from(settings.retention_days),
            i64::try_from(settings.max_rows).unwrap_or(i64::MAX),
        )?;
        write_head(&tx, &self.seal_key, &head)?;
        super::seal::commit(tx, &self.seal_key)?;
        Ok(())
    }
}

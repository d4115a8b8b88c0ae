//! Keeping an open keystore in step with a shared copy that other hosts change (a remote
//! store's keystore object). The copy is the truth for everything an administrator changes;
//! what a mount adds by itself while serving — audit records of key uses and the usage
//! counters — is carried onto each newer copy, so no host's records are lost and none
//! overwrites another's. Knows files and rows, nothing of where the copies come from.

use super::audit::{self, AuditRecord, ChainHead};
use super::seal::{self, SEALED_TABLES, SealedTable};
use super::{Keystore, KeystoreError, connect_existing, schema};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;

/// What was carried onto a newer copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// Audit records appended (a record whose repeats grew counts once).
    pub records: usize,
    /// CMKs whose usage counters grew.
    pub usage: usize,
    /// Rows of the sealed tables this host added, changed or removed (a bucket's default
    /// encryption set through the mount, the default CMK made at its first use).
    pub rows: usize,
    /// Such rows another host changed too: its version was kept.
    pub conflicts: usize,
}

impl Carried {
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.usage == 0 && self.rows == 0
    }
}

/// A row of a sealed table as this host changed it since the base: its primary key, the
/// row at the base (`None`: added here) and now (`None`: removed here).
struct RowChange {
    table: &'static SealedTable,
    key: Vec<Value>,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    columns: Vec<String>,
}

/// Rows by their primary key (printed): the key's values and the whole row.
type KeyedRows = BTreeMap<String, (Vec<Value>, Vec<Value>)>;

/// Every row of `table` by its primary key (in the column order of `SELECT *`).
fn table_rows(
    conn: &Connection,
    table: &SealedTable,
) -> Result<(Vec<String>, KeyedRows), KeystoreError> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {}", table.name))?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let key_at: Vec<usize> = table
        .key
        .iter()
        .filter_map(|k| columns.iter().position(|c| c == k))
        .collect();
    let width = columns.len();
    let mut rows = BTreeMap::new();
    let mut query = stmt.query([])?;
    while let Some(r) = query.next()? {
        let row: Vec<Value> = (0..width)
            .map(|i| r.get::<_, Value>(i))
            .collect::<Result<_, _>>()?;
        let key: Vec<Value> = key_at.iter().map(|&i| row[i].clone()).collect();
        rows.insert(format!("{key:?}"), (key, row));
    }
    Ok((columns, rows))
}

/// What this host changed in the sealed tables (but `meta`) between `base` and `local`.
fn row_changes(base: &Connection, local: &Connection) -> Result<Vec<RowChange>, KeystoreError> {
    let mut changes = Vec::new();
    for table in SEALED_TABLES.iter().filter(|t| t.name != "meta") {
        let (columns, before) = table_rows(base, table)?;
        let (local_columns, after) = table_rows(local, table)?;
        if columns != local_columns {
            return Err(KeystoreError::Corrupt(format!(
                "the keystore copies differ in the columns of {}",
                table.name
            )));
        }
        for (id, (key, row)) in &after {
            let was = before.get(id).map(|(_, row)| row);
            if was != Some(row) {
                changes.push(RowChange {
                    table,
                    key: key.clone(),
                    before: was.cloned(),
                    after: Some(row.clone()),
                    columns: columns.clone(),
                });
            }
        }
        for (id, (key, row)) in &before {
            if !after.contains_key(id) {
                changes.push(RowChange {
                    table,
                    key: key.clone(),
                    before: Some(row.clone()),
                    after: None,
                    columns: columns.clone(),
                });
            }
        }
    }
    Ok(changes)
}

/// Applies one change to `conn` if the row there is still as it was at the base (else
/// another host changed it too, and its version stays): true if applied or already there.
fn apply_change(conn: &Connection, change: &RowChange) -> Result<bool, KeystoreError> {
    let name = change.table.name;
    let key_clause = change
        .table
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} = ?{}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let current: Option<Vec<Value>> = {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {name} WHERE {key_clause}"))?;
        let width = stmt.column_count();
        stmt.query_row(rusqlite::params_from_iter(change.key.iter()), |r| {
            (0..width).map(|i| r.get::<_, Value>(i)).collect()
        })
        .optional()?
    };
    if current == change.after {
        return Ok(true);
    }
    if current != change.before {
        return Ok(false);
    }
    match (&change.before, &change.after) {
        (_, None) => {
            conn.execute(
                &format!("DELETE FROM {name} WHERE {key_clause}"),
                rusqlite::params_from_iter(change.key.iter()),
            )?;
        }
        (None, Some(row)) => {
            let marks = (1..=row.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            conn.execute(
                &format!(
                    "INSERT INTO {name} ({}) VALUES ({marks})",
                    change.columns.join(", ")
                ),
                rusqlite::params_from_iter(row.iter()),
            )?;
        }
        (Some(_), Some(row)) => {
            let n = change.table.key.len();
            let sets = change
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = ?{}", n + i + 1))
                .collect::<Vec<_>>()
                .join(", ");
            conn.execute(
                &format!("UPDATE {name} SET {sets} WHERE {key_clause}"),
                rusqlite::params_from_iter(change.key.iter().chain(row.iter())),
            )?;
        }
    }
    Ok(true)
}

/// Usage counters of one CMK: `GenerateDataKey`, `Decrypt`, denied, last use.
type Usage = (i64, i64, i64, Option<i64>);

fn usage(conn: &Connection) -> Result<BTreeMap<String, Usage>, KeystoreError> {
    let mut stmt = conn.prepare(
        "SELECT key_id, generate_data_key, decrypt, denied, last_used_at FROM cmk_usage",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest audit record id a keystore file has written (0 for none), unauthenticated.
fn head_id(conn: &Connection) -> Result<i64, KeystoreError> {
    Ok(conn
        .query_row("SELECT head_id FROM audit_chain WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// What `local` added since `base` (an older state of the same keystore file): the audit
/// records after `base`'s newest, the repeats its newest gained, and usage counter growth.
struct Delta {
    rows: Vec<RowChange>,
    records: Vec<AuditRecord>,
    usage: BTreeMap<String, Usage>,
    base_head: i64,
}

fn delta(base: &Path, local: &Path) -> Result<Delta, KeystoreError> {
    let base = connect_existing(base)?;
    let local = connect_existing(local)?;
    let base_head = head_id(&base)?;
    let mut records = Vec::new();
    for row in audit::records_from(&local, base_head)? {
        if row.id > base_head {
            records.push(row);
            continue;
        }
        // The record that was newest at `base` may have counted more repeats since.
        let before: Option<u64> = base
            .query_row("SELECT repeats FROM audit WHERE id = ?1", [row.id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|n| u64::try_from(n).unwrap_or(1));
        if let Some(before) = before
            && row.repeats > before
        {
            records.push(AuditRecord {
                repeats: row.repeats - before,
                time: row.last_time.unwrap_or(row.time),
                last_time: None,
                ..row
            });
        }
    }
    let before = usage(&base)?;
    let mut grown = BTreeMap::new();
    for (key_id, (encrypts, decrypts, denied, last)) in usage(&local)? {
        let (e0, d0, n0, l0) = before.get(&key_id).copied().unwrap_or((0, 0, 0, None));
        let growth = (encrypts - e0, decrypts - d0, denied - n0);
        if growth.0 > 0 || growth.1 > 0 || growth.2 > 0 || last > l0 {
            grown.insert(
                key_id,
                (growth.0.max(0), growth.1.max(0), growth.2.max(0), last),
            );
        }
    }
    Ok(Delta {
        rows: row_changes(&base, &local)?,
        records,
        usage: grown,
        base_head,
    })
}

impl Keystore {
    /// Runs on the keystore file `target` what a mount does by itself when it is due:
    /// destroying CMKs past their deletion date, rotating the master key when the current
    /// one is `master_days` old (0: never) and CMKs by their rotation period. True if it
    /// changed anything.
    pub fn maintain(&self, target: &Path, master_days: u32) -> Result<bool, KeystoreError> {
        let mut other = Keystore::open_path(target, &self.root_key)?;
        other.set_clock(self.clock);
        let destroyed = other.process_pending_deletions(other.now())?;
        let rotated = if master_days > 0 {
            other.rotate_master_if_older(master_days)?
        } else {
            None
        };
        let cmks = other.rotate_due_cmks()?;
        for cmk in &destroyed {
            log::info!("destroyed CMK {} (its deletion date passed)", cmk.key_id);
        }
        if let Some(version) = rotated {
            log::info!("rotated the master key: version {version}");
        }
        for (key_id, version) in &cmks {
            log::info!("rotated CMK {key_id}: material version {version}");
        }
        Ok(!destroyed.is_empty() || rotated.is_some() || !cmks.is_empty())
    }

    /// A digest of what a sync carries (the audit chain's head, the usage counters and the
    /// seals of the sealed tables), read in one snapshot: unchanged while this keystore
    /// changed nothing that a sync would carry or take.
    pub fn fingerprint(&self) -> Result<Vec<u8>, KeystoreError> {
        use sha2::Digest;
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let mut h = sha2::Sha256::new();
        let head: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT head_id, head_hash FROM audit_chain WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((id, hash)) = head {
            h.update(id.to_le_bytes());
            h.update(&hash);
        }
        {
            let mut stmt = tx.prepare(
                "SELECT key_id, generate_data_key, decrypt, denied, coalesce(last_used_at, 0)
                 FROM cmk_usage ORDER BY key_id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let key: String = r.get(0)?;
                h.update(key.as_bytes());
                for i in 1..5 {
                    h.update(r.get::<_, i64>(i)?.to_le_bytes());
                }
            }
            let mut stmt = tx.prepare("SELECT tbl, digest FROM table_seals ORDER BY tbl")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                h.update(r.get::<_, String>(0)?.as_bytes());
                h.update(r.get::<_, Vec<u8>>(1)?);
            }
        }
        tx.commit()?;
        Ok(h.finalize().to_vec())
    }

    /// Writes a consistent copy of this keystore to the new file `to` (for [`Keystore::carry`]
    /// and [`Keystore::adopt`] as the state to count from).
    pub fn snapshot(&self, to: &Path) -> Result<(), KeystoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(KeystoreError::file("create keystore snapshot", to))?;
        let inner = self.lock();
        inner
            .conn
            .backup(rusqlite::MAIN_DB, to, None)
            .map_err(KeystoreError::from)
    }

    /// Carries onto the keystore file `target` (a newer copy of the shared keystore) what
    /// this host added between the files `base` (the copy it last took) and `local` (a later
    /// snapshot of its own): audit records, appended in order to `target`'s chain, and usage
    /// counters, added. `target`'s seal and audit head are checked first; a `target` whose
    /// audit chain ends before `base`'s is refused as rolled back (`Tampered`): every change
    /// to a keystore writes an audit record, so a newer keystore never has fewer.
    pub fn carry(
        &self,
        target: &Path,
        base: &Path,
        local: &Path,
    ) -> Result<Carried, KeystoreError> {
        let delta = delta(base, local)?;
        let other = Keystore::open_path(target, &self.root_key)?;
        if other.store_id != self.store_id {
            return Err(KeystoreError::Corrupt(format!(
                "the shared keystore belongs to store {}, not {}",
                other.store_id, self.store_id
            )));
        }
        let mut inner = other.lock();
        let tx = other.begin_sealed(&mut inner.conn)?;
        let head: ChainHead = audit::read_head(&tx, &other.seal_key)?;
        if head.head_id < delta.base_head {
            return Err(KeystoreError::Tampered(vec![format!(
                "the shared keystore's audit log ends at record {}, before record {} that this \
                 host already holds: it is an older keystore (rolled back, or restored); if it \
                 was restored on purpose, mount again with a fresh cache directory",
                head.head_id, delta.base_head
            )]));
        }
        // Rows added or changed in the order of the sealed tables (a CMK before its
        // aliases), removed in the reverse order.
        let (mut rows, mut conflicts) = (0, 0);
        let puts = delta.rows.iter().filter(|c| c.after.is_some());
        let removals = delta.rows.iter().rev().filter(|c| c.after.is_none());
        for change in puts.chain(removals) {
            if apply_change(&tx, change)? {
                rows += 1;
            } else {
                conflicts += 1;
                log::warn!(
                    "a row of {} this host changed was changed by another host too; the other \
                     host's version is kept",
                    change.table.name
                );
            }
        }
        let now = other.now();
        for row in &delta.records {
            audit::append(&tx, &other.seal_key, now, row)?;
        }
        let mut usage = 0;
        for (key_id, (encrypts, decrypts, denied, last)) in &delta.usage {
            let known: bool = tx
                .query_row("SELECT 1 FROM cmks WHERE key_id = ?1", [key_id], |_| Ok(()))
                .optional()?
                .is_some();
            if !known {
                continue;
            }
            super::access::add_usage(&tx, key_id, (*encrypts, *decrypts, *denied), *last)?;
            usage += 1;
        }
        seal::commit(tx, &other.seal_key)?;
        Ok(Carried {
            records: delta.records.len(),
            usage,
            rows,
            conflicts,
        })
    }

    /// Makes the keystore file `newer` (a newer copy of the shared keystore, with this
    /// host's changes up to the snapshot `since` carried onto it) this open keystore's
    /// contents. What this host added after `since` is carried onto `newer` first; nothing
    /// in this process uses the keystore meanwhile, and the contents change in one
    /// transaction. `newer` must be of this ssefs's schema version.
    pub fn adopt(&self, newer: &Path, since: &Path) -> Result<Carried, KeystoreError> {
        let mut inner = self.lock();
        let carried = self.carry(newer, since, &self.db_path)?;
        let text = newer.to_str().ok_or_else(|| {
            KeystoreError::Corrupt(format!("{} is not a UTF-8 path", newer.display()))
        })?;
        let conn = &mut inner.conn;
        conn.execute("ATTACH DATABASE ?1 AS newer", [text])?;
        let replaced = replace_contents(conn);
        let detached = conn.execute("DETACH DATABASE newer", []);
        replaced?;
        detached?;
        inner.cache.clear();
        Ok(carried)
    }
}

/// Replaces every table of `main` with `newer`'s, in one transaction.
fn replace_contents(conn: &mut Connection) -> Result<(), KeystoreError> {
    let version: i64 = conn.query_row("PRAGMA newer.user_version", [], |r| r.get(0))?;
    if version != schema::SCHEMA_VERSION {
        return Err(KeystoreError::Corrupt(format!(
            "the shared keystore has schema version {version}, this ssefs {}: run the same \
             ssefs version on every host",
            schema::SCHEMA_VERSION
        )));
    }
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM newer.sqlite_master WHERE type = 'table' ORDER BY name")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    // Tables that refer to no other first, so every row's parent is in place before it.
    let mut ordered = Vec::new();
    for table in tables {
        let refers: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_foreign_key_list(?1, 'newer')",
            [&table],
            |r| r.get(0),
        )?;
        ordered.push((refers > 0, table));
    }
    ordered.sort();
    let quoted: Vec<String> = ordered
        .iter()
        .map(|(_, t)| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Every table emptied before any is filled: a delete cascades to the tables that refer
    // to the rows deleted.
    for table in &quoted {
        tx.execute(&format!("DELETE FROM main.{table}"), [])?;
    }
    for table in &quoted {
        tx.execute(
            &format!("INSERT INTO main.{table} SELECT * FROM newer.{table}"),
            [],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{CmkOrigin, KeyOp};
    use super::*;
    use crate::crypto::Key256;
    use crate::keystore::{AuditQuery, Caller};

    fn caller(uid: u32, pid: u32) -> Caller {
        Caller {
            uid,
            gid: uid,
            groups: Vec::new(),
            pid,
        }
    }

    /// Two hosts' keystores made from one: `shared` (the store's copy, other hosts change
    /// it) and the mount's own, with `base` the copy the mount took.
    struct Hosts {
        dir: tempfile::TempDir,
        root: Key256,
        mount: Keystore,
        shared: Keystore,
    }

    impl Hosts {
        fn new() -> Hosts {
            let dir = tempfile::tempdir().unwrap();
            let root = Key256::generate().unwrap();
            let shared_dir = dir.path().join("shared");
            let mount_dir = dir.path().join("mount");
            std::fs::create_dir(&shared_dir).unwrap();
            std::fs::create_dir(&mount_dir).unwrap();
            let shared = Keystore::create(&shared_dir, &root).unwrap();
            shared.snapshot(&dir.path().join("base.db")).unwrap();
            std::fs::copy(dir.path().join("base.db"), mount_dir.join("keystore.db")).unwrap();
            let mount = Keystore::open(&mount_dir, &root).unwrap();
            Hosts {
                dir,
                root,
                mount,
                shared,
            }
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }

        /// One sync round of the mount, as the remote mount runs it: the shared copy taken
        /// with the mount's records carried onto it, written back, and adopted.
        fn sync(&self, round: u32) -> Carried {
            let since = self.path(&format!("since-{round}.db"));
            self.mount.snapshot(&since).unwrap();
            let target = self.path(&format!("target-{round}.db"));
            self.shared.snapshot(&target).unwrap();
            let carried = self
                .mount
                .carry(&target, &self.path("base.db"), &since)
                .unwrap();
            // "Uploaded": the shared copy becomes the target, and the base with it.
            let restored = Keystore::open_path(&target, &self.root).unwrap();
            drop(restored);
            std::fs::remove_file(self.path("base.db")).unwrap();
            std::fs::copy(&target, self.path("base.db")).unwrap();
            let shared_file = self.shared.path().to_path_buf();
            {
                let mut inner = self.shared.lock();
                let text = target.to_str().unwrap();
                inner
                    .conn
                    .execute("ATTACH DATABASE ?1 AS newer", [text])
                    .unwrap();
                replace_contents(&mut inner.conn).unwrap();
                inner.conn.execute("DETACH DATABASE newer", []).unwrap();
                inner.cache.clear();
            }
            assert!(shared_file.exists());
            self.mount.adopt(&target, &since).unwrap();
            carried
        }
    }

    fn operations(ks: &Keystore) -> Vec<(String, Option<u32>)> {
        ks.audit_records(&AuditQuery::default())
            .unwrap()
            .into_iter()
            .map(|r| (r.operation, r.pid))
            .collect()
    }

    #[test]
    fn a_key_made_elsewhere_reaches_the_mount_and_the_mounts_records_reach_the_store() {
        let hosts = Hosts::new();
        // The mount uses the default key (an audit record of its own), another host makes
        // a CMK with an alias.
        let id = hosts
            .shared
            .create_cmk_for(
                "photos",
                Some("alias/photos"),
                CmkOrigin::Ssefs,
                &caller(0, 11),
            )
            .unwrap();
        let mine = hosts
            .mount
            .create_cmk_for("mine", None, CmkOrigin::Ssefs, &caller(0, 22))
            .unwrap();
        let rule = crate::keystore::BucketRule {
            algorithm: crate::crypto::Algorithm::Kms,
            kms_key_id: Some(mine.clone()),
        };
        hosts.mount.put_bucket_rule("photos", &rule).unwrap();
        let carried = hosts.sync(1);
        assert_eq!(
            carried.records, 1,
            "the mount's CreateKey record is carried"
        );
        assert!(
            carried.rows >= 3,
            "the CMK, its material and the rule: {carried:?}"
        );
        assert_eq!(carried.conflicts, 0);
        // The key and the bucket rule made through the mount are in the store's keystore.
        assert_eq!(hosts.shared.bucket_rule("photos").unwrap(), Some(rule));
        assert_eq!(hosts.shared.resolve_cmk(&mine).unwrap().0, mine);
        // The mount sees the other host's key, by alias.
        let (found, _, _) = hosts.mount.resolve_cmk("alias/photos").unwrap();
        assert_eq!(found, id);
        // Both hosts' records are in the one trail, each once.
        let ops = operations(&hosts.shared);
        assert!(
            ops.contains(&("CreateKey".to_string(), Some(11))),
            "{ops:?}"
        );
        assert!(
            ops.contains(&("CreateKey".to_string(), Some(22))),
            "{ops:?}"
        );
        assert_eq!(operations(&hosts.mount), ops);
        assert!(hosts.shared.verify_audit().unwrap().problems.is_empty());
        assert!(hosts.mount.verify_audit().unwrap().problems.is_empty());

        // A use on the mount after the sync is carried at the next, with its usage.
        hosts
            .mount
            .authorize(&id, KeyOp::Decrypt, &caller(0, 33), "b/o")
            .unwrap();
        hosts.shared.disable_cmk(&id, &caller(0, 11)).unwrap();
        let carried = hosts.sync(2);
        assert_eq!((carried.records, carried.usage), (1, 1));
        let err = hosts
            .mount
            .authorize(&id, KeyOp::Decrypt, &caller(0, 33), "b/o")
            .unwrap_err();
        assert!(matches!(err, KeystoreError::KeyRevoked { .. }), "{err:?}");
        let ops = operations(&hosts.mount);
        assert!(ops.contains(&("Decrypt".to_string(), Some(33))), "{ops:?}");
        assert!(
            ops.contains(&("DisableKey".to_string(), Some(11))),
            "{ops:?}"
        );
        // The refused use is carried once, then there is nothing new to carry.
        assert_eq!(hosts.sync(3).records, 1);
        assert!(hosts.sync(4).is_empty());
        assert_eq!(operations(&hosts.shared), operations(&hosts.mount));
    }

    #[test]
    fn the_fingerprint_moves_with_what_a_sync_carries_and_only_then() {
        let hosts = Hosts::new();
        let before = hosts.mount.fingerprint().unwrap();
        assert_eq!(hosts.mount.fingerprint().unwrap(), before);
        let _ = hosts.mount.bucket_rule("nothing").unwrap();
        let _ = hosts.mount.current_master_key().unwrap();
        assert_eq!(
            hosts.mount.fingerprint().unwrap(),
            before,
            "reads change nothing"
        );
        let id = hosts
            .mount
            .create_cmk_for("k", None, CmkOrigin::Ssefs, &caller(0, 1))
            .unwrap();
        let made = hosts.mount.fingerprint().unwrap();
        assert_ne!(made, before, "a new CMK (sealed rows, an audit record)");
        hosts
            .mount
            .authorize(&id, KeyOp::Decrypt, &caller(0, 2), "b/o")
            .unwrap();
        assert_ne!(
            hosts.mount.fingerprint().unwrap(),
            made,
            "a use (audit, usage)"
        );
    }

    #[test]
    fn an_older_shared_keystore_is_refused_as_rolled_back() {
        let hosts = Hosts::new();
        hosts
            .shared
            .create_cmk_for("a", None, CmkOrigin::Ssefs, &caller(0, 11))
            .unwrap();
        let old = hosts.path("old.db");
        hosts.shared.snapshot(&old).unwrap();
        hosts
            .shared
            .create_cmk_for("b", None, CmkOrigin::Ssefs, &caller(0, 11))
            .unwrap();
        hosts.sync(1);
        let since = hosts.path("since.db");
        hosts.mount.snapshot(&since).unwrap();
        let err = hosts
            .mount
            .carry(&old, &hosts.path("base.db"), &since)
            .unwrap_err();
        assert!(matches!(err, KeystoreError::Tampered(_)), "{err:?}");
    }
}

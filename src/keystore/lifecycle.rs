//! Administering CMKs: state changes (enable, disable, scheduled deletion and its end),
//! aliases and grants. Only a CMK's owner or root may change it; every attempt, refused or
//! not, is an audit record. Material is never read here, only destroyed.

use super::access::may_administer;
use super::audit::{self, AuditEvent};
use super::cmk::{
    CmkOrigin, CmkState, RESERVED_ALIAS_PREFIX, alias_target, check_user_alias, insert_alias,
    parse_state, read_grants,
};
use super::grant::{Caller, Grant, Grantee, KeyOp};
use super::{Keystore, KeystoreError};
use rusqlite::{OptionalExtension, Transaction};

/// The shortest pending window of a scheduled deletion, in days.
pub const MIN_PENDING_DAYS: i64 = 7;
/// The longest pending window of a scheduled deletion, in days.
pub const MAX_PENDING_DAYS: i64 = 30;
const DAY: i64 = 86_400;

/// A CMK destroyed by [`Keystore::process_pending_deletions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestroyedCmk {
    pub key_id: String,
    /// The deletion date that had passed (seconds since the Unix epoch).
    pub deletion_date: i64,
}

/// A CMK's row as an administrative operation sees it, read under the write lock.
pub(super) struct CmkRow {
    pub key_id: String,
    pub state: CmkState,
    pub origin: CmkOrigin,
    pub service_managed: bool,
}

impl CmkRow {
    fn refuse(&self, action: &'static str, hint: &'static str) -> KeystoreError {
        KeystoreError::InvalidKeyState {
            key_id: self.key_id.clone(),
            state: self.state,
            action,
            hint,
        }
    }

    /// Refuses any change to a CMK managed by ssefs.
    fn require_customer_managed(&self) -> Result<(), KeystoreError> {
        if self.service_managed {
            return Err(KeystoreError::ServiceManagedKey(self.key_id.clone()));
        }
        Ok(())
    }
}

/// What an administrative change returns: its value and the audit record's detail.
pub(super) type Change<T> = Result<(T, String), KeystoreError>;

impl Keystore {
    /// Runs `change` on the CMK `key` (id or alias) for `caller` in one immediate transaction,
    /// after checking the key exists and the caller is its owner or root. Writes the audit
    /// record `operation` in the same transaction, or, when anything fails, in its own.
    pub(super) fn administer<T>(
        &self,
        operation: &str,
        key: &str,
        caller: &Caller,
        change: impl FnOnce(&Transaction<'_>, &CmkRow, i64) -> Change<T>,
    ) -> Result<T, KeystoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let mut key_id = None;
        let outcome = (|| -> Result<T, KeystoreError> {
            let tx = self.begin_sealed(&mut inner.conn)?;
            let (row, owner_uid) = read_cmk_row(&tx, key)?;
            key_id = Some(row.key_id.clone());
            if !may_administer(owner_uid, caller) {
                return Err(KeystoreError::AccessDenied {
                    key_id: row.key_id.clone(),
                    uid: caller.uid,
                    action: format!("{operation} (only the owner, uid {owner_uid}, or root may)"),
                });
            }
            let (value, detail) = change(&tx, &row, now)?;
            audit::insert(
                &tx,
                &self.seal_key,
                now,
                &AuditEvent {
                    uid: Some(caller.uid),
                    pid: Some(caller.pid),
                    key_id: Some(&row.key_id),
                    operation,
                    object_path: None,
                    result: "Success",
                    detail: Some(&detail),
                },
            )?;
            super::seal::commit(tx, &self.seal_key)?;
            Ok(value)
        })();
        inner.cache.clear();
        if let Err(e) = &outcome {
            let detail = e.to_string();
            audit::record_failure(
                &inner.conn,
                &self.seal_key,
                now,
                &AuditEvent {
                    uid: Some(caller.uid),
                    pid: Some(caller.pid),
                    key_id: Some(key_id.as_deref().unwrap_or(key)),
                    operation,
                    object_path: None,
                    result: e.audit_result(),
                    detail: Some(&detail),
                },
            );
        }
        outcome
    }

    /// Enables a Disabled CMK (an Enabled one stays so).
    pub fn enable_cmk(&self, key: &str, caller: &Caller) -> Result<(), KeystoreError> {
        self.administer("EnableKey", key, caller, |tx, row, _| {
            row.require_customer_managed()?;
            match row.state {
                CmkState::Enabled | CmkState::Disabled => {
                    set_state(tx, &row.key_id, CmkState::Enabled, None)?;
                    Ok(((), format!("{} -> Enabled", row.state)))
                }
                CmkState::PendingDeletion => Err(row.refuse(
                    "enable",
                    "; cancel its deletion first (`ssefs kms cancel-deletion`)",
                )),
                CmkState::PendingImport => Err(row.refuse(
                    "enable",
                    "; import its material instead (`ssefs kms import`)",
                )),
                CmkState::Destroyed => Err(row.refuse("enable", "; a destroyed CMK is gone")),
            }
        })
    }

    /// Disables an Enabled CMK (a Disabled one stays so): objects under it can be neither
    /// read nor written until it is enabled again.
    pub fn disable_cmk(&self, key: &str, caller: &Caller) -> Result<(), KeystoreError> {
        self.administer("DisableKey", key, caller, |tx, row, _| {
            row.require_customer_managed()?;
            match row.state {
                CmkState::Enabled | CmkState::Disabled => {
                    set_state(tx, &row.key_id, CmkState::Disabled, None)?;
                    Ok(((), format!("{} -> Disabled", row.state)))
                }
                CmkState::PendingDeletion => Err(row.refuse("disable", "")),
                CmkState::PendingImport => Err(row.refuse("disable", "")),
                CmkState::Destroyed => Err(row.refuse("disable", "; a destroyed CMK is gone")),
            }
        })
    }

    /// Schedules the CMK's destruction `pending_days` (7..=30) days from now and returns the
    /// deletion date; meanwhile it is `PendingDeletion` and unusable.
    pub fn schedule_cmk_deletion(
        &self,
        key: &str,
        pending_days: i64,
        caller: &Caller,
    ) -> Result<i64, KeystoreError> {
        self.administer("ScheduleKeyDeletion", key, caller, |tx, row, now| {
            if !(MIN_PENDING_DAYS..=MAX_PENDING_DAYS).contains(&pending_days) {
                return Err(KeystoreError::InvalidPendingDays(pending_days));
            }
            row.require_customer_managed()?;
            match row.state {
                CmkState::Enabled | CmkState::Disabled | CmkState::PendingImport => {
                    let date = now.saturating_add(pending_days.saturating_mul(DAY));
                    set_state(tx, &row.key_id, CmkState::PendingDeletion, Some(date))?;
                    Ok((
                        date,
                        format!("{} -> PendingDeletion in {pending_days} days", row.state),
                    ))
                }
                CmkState::PendingDeletion => Err(row.refuse(
                    "schedule the deletion of",
                    "; cancel the scheduled deletion first to choose another date",
                )),
                CmkState::Destroyed => {
                    Err(row.refuse("schedule the deletion of", "; it is already destroyed"))
                }
            }
        })
    }

    /// Cancels a scheduled deletion: the CMK becomes Disabled (PendingImport if it has no
    /// material), as cloud KMSs do; enable it to use it again.
    pub fn cancel_cmk_deletion(
        &self,
        key: &str,
        caller: &Caller,
    ) -> Result<CmkState, KeystoreError> {
        self.administer("CancelKeyDeletion", key, caller, |tx, row, _| {
            match row.state {
                CmkState::PendingDeletion => {
                    let has_material: bool = tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM cmk_materials
                                    WHERE key_id = ?1 AND wrapped IS NOT NULL)",
                        [&row.key_id],
                        |r| r.get(0),
                    )?;
                    let state = if has_material {
                        CmkState::Disabled
                    } else {
                        CmkState::PendingImport
                    };
                    set_state(tx, &row.key_id, state, None)?;
                    Ok((state, format!("PendingDeletion -> {state}")))
                }
                _ => Err(row.refuse("cancel the deletion of", "; no deletion is scheduled")),
            }
        })
    }

    /// Points a new alias at a CMK. The alias must be valid, not under `alias/acs/`, and
    /// unused; the CMK must not be destroyed.
    pub fn create_alias(
        &self,
        alias: &str,
        key: &str,
        caller: &Caller,
    ) -> Result<(), KeystoreError> {
        self.administer("CreateAlias", key, caller, |tx, row, _| {
            check_user_alias(alias)?;
            if row.state == CmkState::Destroyed {
                return Err(row.refuse("add an alias to", "; it is destroyed"));
            }
            insert_alias(tx, alias, &row.key_id)?;
            Ok(((), alias.to_string()))
        })
    }

    /// Removes an alias (not one under `alias/acs/`); the CMK itself is unchanged.
    pub fn delete_alias(&self, alias: &str, caller: &Caller) -> Result<(), KeystoreError> {
        check_user_alias(alias)?;
        let target = {
            let inner = self.lock();
            alias_target(&inner.conn, alias)?
        };
        let Some(key_id) = target else {
            return Err(KeystoreError::UnknownAlias(alias.to_string()));
        };
        self.administer("DeleteAlias", &key_id, caller, |tx, row, _| {
            let removed = tx.execute(
                "DELETE FROM aliases WHERE alias = ?1 AND key_id = ?2",
                (alias, &row.key_id),
            )?;
            if removed == 0 {
                return Err(KeystoreError::UnknownAlias(alias.to_string()));
            }
            Ok(((), alias.to_string()))
        })
    }

    /// Every alias and the CMK it names, by alias.
    pub fn aliases(&self) -> Result<Vec<(String, String)>, KeystoreError> {
        let inner = self.lock();
        let mut stmt = inner
            .conn
            .prepare("SELECT alias, key_id FROM aliases ORDER BY alias")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Lets `grantee` do `operations` with the CMK (added to what it may already do) and
    /// returns the grant as it now stands.
    pub fn grant(
        &self,
        key: &str,
        grantee: Grantee,
        operations: &[KeyOp],
        caller: &Caller,
    ) -> Result<Grant, KeystoreError> {
        self.administer("CreateGrant", key, caller, |tx, row, now| {
            if operations.is_empty() {
                return Err(KeystoreError::InvalidGrant("no operation given".into()));
            }
            row.require_customer_managed()?;
            if row.state == CmkState::Destroyed {
                return Err(row.refuse("grant the use of", "; it is destroyed"));
            }
            let existing = find_grant(tx, &row.key_id, grantee)?;
            let mut ops: Vec<KeyOp> = existing
                .iter()
                .flat_map(|g| g.operations.iter().copied())
                .chain(operations.iter().copied())
                .collect();
            ops.sort();
            ops.dedup();
            let text = Grant::operations_text(&ops);
            tx.execute(
                "INSERT INTO grants (key_id, grantee_kind, grantee, operations, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key_id, grantee_kind, grantee)
                 DO UPDATE SET operations = excluded.operations",
                (&row.key_id, grantee.kind(), grantee.id(), &text, now),
            )?;
            let grant = Grant {
                grantee,
                operations: ops,
                created_at: existing.map_or(now, |g| g.created_at),
            };
            Ok((grant, format!("{grantee}: {text}")))
        })
    }

    /// Takes `operations` (all when `None`) away from `grantee`; returns what remains, if
    /// anything. A grantee without a grant is `UnknownGrant`.
    pub fn revoke(
        &self,
        key: &str,
        grantee: Grantee,
        operations: Option<&[KeyOp]>,
        caller: &Caller,
    ) -> Result<Option<Grant>, KeystoreError> {
        self.administer("RevokeGrant", key, caller, |tx, row, _| {
            let existing = find_grant(tx, &row.key_id, grantee)?.ok_or_else(|| {
                KeystoreError::UnknownGrant {
                    key_id: row.key_id.clone(),
                    grantee: grantee.to_string(),
                }
            })?;
            let remaining: Vec<KeyOp> = match operations {
                Some(ops) => existing
                    .operations
                    .iter()
                    .copied()
                    .filter(|op| !ops.contains(op))
                    .collect(),
                None => Vec::new(),
            };
            if remaining.is_empty() {
                tx.execute(
                    "DELETE FROM grants WHERE key_id = ?1 AND grantee_kind = ?2 AND grantee = ?3",
                    (&row.key_id, grantee.kind(), grantee.id()),
                )?;
                return Ok((None, format!("{grantee}: all revoked")));
            }
            let text = Grant::operations_text(&remaining);
            tx.execute(
                "UPDATE grants SET operations = ?4
                 WHERE key_id = ?1 AND grantee_kind = ?2 AND grantee = ?3",
                (&row.key_id, grantee.kind(), grantee.id(), &text),
            )?;
            let detail = format!("{grantee}: {text} remain");
            Ok((
                Some(Grant {
                    grantee,
                    operations: remaining,
                    created_at: existing.created_at,
                }),
                detail,
            ))
        })
    }

    /// Destroys, for good, every CMK whose deletion date is at or before `now`: its material
    /// is erased (the wrapped blobs and their checks), its aliases, grants and import
    /// parameters removed, and it stays as `Destroyed`, so objects under it report a revoked
    /// key rather than an unknown one. Returns what it destroyed. The mount calls this at
    /// start and periodically; the CLI at each command.
    pub fn process_pending_deletions(&self, now: i64) -> Result<Vec<DestroyedCmk>, KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let due = tx
            .prepare(
                "SELECT key_id, deletion_date FROM cmks
                 WHERE state = 'PendingDeletion' AND deletion_date <= ?1
                 ORDER BY deletion_date, key_id",
            )?
            .query_map([now], |r| {
                Ok(DestroyedCmk {
                    key_id: r.get(0)?,
                    deletion_date: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for cmk in &due {
            let id = &cmk.key_id;
            tx.execute(
                "UPDATE cmk_materials SET wrapped = NULL, material_check = NULL
                 WHERE key_id = ?1",
                [id],
            )?;
            for table in ["aliases", "grants", "import_params"] {
                tx.execute(&format!("DELETE FROM {table} WHERE key_id = ?1"), [id])?;
            }
            tx.execute(
                "UPDATE cmks SET state = 'Destroyed' WHERE key_id = ?1",
                [id],
            )?;
            // So a restored backup that still holds the material cannot bring it back.
            tx.execute(
                "INSERT OR REPLACE INTO tombstones (key_id, version, destroyed_at)
                 VALUES (?1, 0, ?2)",
                (id, now),
            )?;
            audit::insert(
                &tx,
                &self.seal_key,
                now,
                &AuditEvent {
                    uid: None,
                    pid: None,
                    key_id: Some(id),
                    operation: "DeleteKey",
                    object_path: None,
                    result: "Success",
                    detail: Some(&format!("deletion date {} passed", cmk.deletion_date)),
                },
            )?;
        }
        super::seal::commit(tx, &self.seal_key)?;
        if !due.is_empty() {
            inner.cache.clear();
            // Move the erased pages out of the WAL too.
            super::checkpoint_truncate(&inner.conn, "destroying CMKs");
        }
        Ok(due)
    }
}

/// The CMK `key` names (id or alias) and its owner, read inside `tx`.
pub(super) fn read_cmk_row(
    tx: &Transaction<'_>,
    key: &str,
) -> Result<(CmkRow, u32), KeystoreError> {
    let key_id = if key.starts_with("alias/") {
        alias_target(tx, key)?.ok_or_else(|| KeystoreError::UnknownKey(key.to_string()))?
    } else {
        key.to_string()
    };
    let row: Option<(String, String, u32, bool)> = tx
        .query_row(
            "SELECT state, origin, owner_uid,
                    EXISTS (SELECT 1 FROM aliases a
                            WHERE a.key_id = c.key_id AND substr(a.alias, 1, 10) = ?2)
             FROM cmks c WHERE key_id = ?1",
            (&key_id, RESERVED_ALIAS_PREFIX),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let (state, origin, owner_uid, service_managed) =
        row.ok_or_else(|| KeystoreError::UnknownKey(key.to_string()))?;
    let origin = CmkOrigin::parse(&origin).ok_or_else(|| {
        KeystoreError::Corrupt(format!("CMK {key_id} has unknown origin {origin:?}"))
    })?;
    Ok((
        CmkRow {
            state: parse_state(&key_id, &state)?,
            key_id,
            origin,
            service_managed,
        },
        owner_uid,
    ))
}

fn set_state(
    tx: &Transaction<'_>,
    key_id: &str,
    state: CmkState,
    deletion_date: Option<i64>,
) -> Result<(), KeystoreError> {
    tx.execute(
        "UPDATE cmks SET state = ?2, deletion_date = ?3 WHERE key_id = ?1",
        (key_id, state.as_str(), deletion_date),
    )?;
    Ok(())
}

fn find_grant(
    tx: &Transaction<'_>,
    key_id: &str,
    grantee: Grantee,
) -> Result<Option<Grant>, KeystoreError> {
    Ok(read_grants(tx, key_id)?
        .into_iter()
        .find(|g| g.grantee == grantee))
}

/// A tombstone: a CMK destroyed (`version` 0) or one material version deleted, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub key_id: String,
    /// 0: the whole CMK; otherwise a material version.
    pub version: u32,
    pub destroyed_at: i64,
}

/// The tombstones recorded in `conn`, if it has the table.
pub(super) fn read_tombstones(
    conn: &rusqlite::Connection,
) -> Result<Vec<Tombstone>, KeystoreError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'tombstones')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(Vec::new());
    }
    let mut stmt =
        conn.prepare("SELECT key_id, version, destroyed_at FROM tombstones ORDER BY 1, 2")?;
    let rows = stmt.query_map([], |r| {
        Ok(Tombstone {
            key_id: r.get(0)?,
            version: r.get(1)?,
            destroyed_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What [`Keystore::bury`] destroyed again: CMK ids, and (CMK id, version) of material.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reburied {
    pub cmks: Vec<String>,
    pub materials: Vec<(String, u32)>,
}

impl Keystore {
    /// Destroys again, in one transaction, whatever `tombstones` say was destroyed but this
    /// keystore (a restored backup) still holds, and records the tombstones. Returns what
    /// it destroyed again.
    pub(super) fn bury(&self, tombstones: &[Tombstone]) -> Result<Reburied, KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let mut again = Reburied::default();
        for stone in tombstones {
            let id = &stone.key_id;
            if stone.version == 0 {
                let wrapped = tx.execute(
                    "UPDATE cmk_materials SET wrapped = NULL, material_check = NULL
                     WHERE key_id = ?1 AND (wrapped IS NOT NULL OR material_check IS NOT NULL)",
                    [id],
                )?;
                let state = tx.execute(
                    "UPDATE cmks SET state = 'Destroyed',
                         deletion_date = coalesce(deletion_date, ?2)
                     WHERE key_id = ?1 AND state <> 'Destroyed'",
                    (id, stone.destroyed_at),
                )?;
                for table in ["aliases", "grants", "import_params"] {
                    tx.execute(&format!("DELETE FROM {table} WHERE key_id = ?1"), [id])?;
                }
                if wrapped + state > 0 {
                    again.cmks.push(id.clone());
                }
            } else {
                let wrapped = tx.execute(
                    "UPDATE cmk_materials SET wrapped = NULL
                     WHERE key_id = ?1 AND version = ?2 AND wrapped IS NOT NULL",
                    (id, stone.version),
                )?;
                tx.execute(
                    "UPDATE cmks SET state = 'PendingImport'
                     WHERE key_id = ?1 AND state IN ('Enabled', 'Disabled')
                       AND NOT EXISTS (SELECT 1 FROM cmk_materials
                                       WHERE key_id = ?1 AND wrapped IS NOT NULL)",
                    [id],
                )?;
                if wrapped > 0 {
                    again.materials.push((id.clone(), stone.version));
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO tombstones (key_id, version, destroyed_at)
                 VALUES (?1, ?2, ?3)",
                (id, stone.version, stone.destroyed_at),
            )?;
        }
        super::seal::commit(tx, &self.seal_key)?;
        inner.cache.clear();
        super::checkpoint_truncate(&inner.conn, "destroying restored keys again");
        Ok(again)
    }
}

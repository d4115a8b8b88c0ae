//! Who may use a CMK: the rules that judge a caller against a CMK's owner and grants, and
//! `authorize`, the one door through which the mount gets CMK material for an object (every
//! call audited and counted). The caller and grant types live in `grant`.

use super::audit::{self, AuditEvent};
use super::cache::CachedCmk;
use super::cmk::{cmk_entry, key_id_for, require_enabled};
use super::grant::{Caller, KeyOp};
use super::{Inner, Keystore, KeystoreError};
use crate::crypto::Key256;
use rusqlite::{Connection, TransactionBehavior};

/// Whether `caller` may do `op` with the CMK: root, its owner, any caller for a CMK managed
/// by ssefs (the default CMK), or a grantee of that operation.
pub(super) fn may_use(entry: &CachedCmk, op: KeyOp, caller: &Caller) -> bool {
    caller.is_root()
        || caller.uid == entry.owner_uid
        || entry.service_managed
        || entry
            .grants
            .iter()
            .any(|g| g.operations.contains(&op) && g.grantee.covers(caller))
}

/// Whether `caller` may change the CMK itself (state, aliases, grants, material): its owner
/// or root.
pub(super) fn may_administer(owner_uid: u32, caller: &Caller) -> bool {
    caller.is_root() || caller.uid == owner_uid
}

impl Keystore {
    /// The newest material of the CMK `key` (an id or alias) for `op` by `caller` on the object
    /// `object_path`: `(key id, material version, material)`. Root, the CMK's owner and its
    /// grantees for `op` pass, others get `AccessDenied` (`EACCES`); an unknown key is
    /// `UnknownKey` (`ENOKEY`); a CMK that is not Enabled is `KeyRevoked` (`EKEYREVOKED`).
    /// Every call, refused or not, is an audit record (`GenerateDataKey` for `Encrypt`,
    /// `Decrypt` for `Decrypt`) and counts in the CMK's usage; if that record cannot be
    /// written the call fails.
    pub fn authorize(
        &self,
        key: &str,
        op: KeyOp,
        caller: &Caller,
        object_path: &str,
    ) -> Result<(String, u32, Key256), KeystoreError> {
        self.authorize_version(key, None, op, caller, object_path)
    }

    /// As [`Keystore::authorize`] with `KeyOp::Decrypt`, for an existing object wrapped under
    /// material version `version` of CMK `key_id` (the id its header names).
    pub fn authorize_decrypt(
        &self,
        key_id: &str,
        version: u32,
        caller: &Caller,
        object_path: &str,
    ) -> Result<Key256, KeystoreError> {
        self.authorize_version(key_id, Some(version), KeyOp::Decrypt, caller, object_path)
            .map(|(_, _, material)| material)
    }

    fn authorize_version(
        &self,
        key: &str,
        version: Option<u32>,
        op: KeyOp,
        caller: &Caller,
        object_path: &str,
    ) -> Result<(String, u32, Key256), KeystoreError> {
        let now = self.now();
        let mut inner = self.fresh()?;
        let (key_id, outcome) = self.authorized_material(&mut inner, key, version, op, caller);
        let detail = match &outcome {
            Ok((version, _)) => format!("material version {version}"),
            Err(e) => e.to_string(),
        };
        let result = outcome
            .as_ref()
            .map_or_else(|e| e.audit_result(), |_| "Success");
        let event = AuditEvent {
            uid: Some(caller.uid),
            pid: Some(caller.pid),
            key_id: Some(key_id.as_deref().unwrap_or(key)),
            operation: op.audit_operation(),
            object_path: Some(object_path),
            result,
            detail: Some(&detail),
        };
        let known_key = key_id
            .as_deref()
            .filter(|_| !matches!(outcome, Err(KeystoreError::UnknownKey(_))));
        record_use(
            &inner.conn,
            &self.seal_key,
            now,
            &event,
            known_key,
            op,
            outcome.is_ok(),
        )?;
        let (version, material) = outcome?;
        Ok((key_id.unwrap_or_else(|| key.to_string()), version, material))
    }

    /// The checks of `authorize`, in order: the key exists, the caller may use it, it is
    /// Enabled, the version has material. Returns the key id when it is known.
    fn authorized_material(
        &self,
        inner: &mut Inner,
        key: &str,
        version: Option<u32>,
        op: KeyOp,
        caller: &Caller,
    ) -> (Option<String>, Result<(u32, Key256), KeystoreError>) {
        let key_id = match key_id_for(inner, key) {
            Ok(key_id) => key_id,
            Err(e) => return (None, Err(e)),
        };
        let outcome = cmk_entry(inner, &key_id).and_then(|entry| {
            if !may_use(&entry, op, caller) {
                return Err(KeystoreError::AccessDenied {
                    key_id: key_id.clone(),
                    uid: caller.uid,
                    action: op.as_str().to_string(),
                });
            }
            require_enabled(&key_id, &entry)?;
            let version = match version {
                Some(version) => version,
                None => entry.newest.ok_or_else(|| {
                    KeystoreError::Corrupt(format!("CMK {key_id} is Enabled but has no material"))
                })?,
            };
            Ok((version, self.cmk_material(inner, &key_id, version)?))
        });
        (Some(key_id), outcome)
    }
}

/// Writes the audit record of a use of a key and counts it, in one transaction. Uses
/// `synchronous=NORMAL` for it (the record survives a crash of the process, and all but the
/// last moments before a power loss), so an open does not wait for an fsync; every key change
/// still commits with `FULL`.
fn record_use(
    conn: &Connection,
    key: &Key256,
    now: i64,
    event: &AuditEvent<'_>,
    known_key: Option<&str>,
    op: KeyOp,
    allowed: bool,
) -> Result<(), KeystoreError> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let written = write_use(conn, key, now, event, known_key, op, allowed);
    let restored = conn.pragma_update(None, "synchronous", "FULL");
    written?;
    Ok(restored?)
}

fn write_use(
    conn: &Connection,
    key: &Key256,
    now: i64,
    event: &AuditEvent<'_>,
    known_key: Option<&str>,
    op: KeyOp,
    allowed: bool,
) -> Result<(), KeystoreError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    audit::insert(&tx, key, now, event)?;
    if let Some(key_id) = known_key {
        let (encrypts, decrypts, denied) = match (allowed, op) {
            (true, KeyOp::Encrypt) => (1, 0, 0),
            (true, KeyOp::Decrypt) => (0, 1, 0),
            (false, _) => (0, 0, 1),
        };
        add_usage(
            &tx,
            key_id,
            (encrypts, decrypts, denied),
            allowed.then_some(now),
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Adds uses to a CMK's usage counters (`GenerateDataKey`, `Decrypt`, denied), and the time
/// of the last allowed one if later than the one recorded.
pub(super) fn add_usage(
    conn: &Connection,
    key_id: &str,
    (encrypts, decrypts, denied): (i64, i64, i64),
    last_used: Option<i64>,
) -> Result<(), KeystoreError> {
    conn.prepare_cached(
        "INSERT INTO cmk_usage (key_id, generate_data_key, decrypt, denied, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key_id) DO UPDATE SET
             generate_data_key = generate_data_key + excluded.generate_data_key,
             decrypt = decrypt + excluded.decrypt,
             denied = denied + excluded.denied,
             last_used_at = CASE
                 WHEN excluded.last_used_at IS NULL THEN last_used_at
                 WHEN last_used_at IS NULL THEN excluded.last_used_at
                 ELSE max(last_used_at, excluded.last_used_at)
             END",
    )?
    .execute((key_id, encrypts, decrypts, denied, last_used))?;
    Ok(())
}

//! Key rotation in the keystore: new master key versions (on demand or by age), new CMK
//! material versions and per-CMK rotation periods, and retiring master versions no object
//! uses. Older versions stay for reading until retired; knows nothing of object files.

use super::cmk::cmk_context;
use super::{
    CmkOrigin, CmkState, Keystore, KeystoreError, StoreId, copy_key, ids, insert_master_key,
    require_current_root_key,
};
use crate::crypto::{Key256, wrap_key};
use rusqlite::{OptionalExtension, Transaction};
use std::collections::BTreeSet;
use std::num::NonZeroU32;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// One master key version as rotation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterVersion {
    pub version: u32,
    pub created_at: i64,
}

/// What `retire_unused_master_keys` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retirement {
    /// Versions destroyed (their rows deleted, overwritten in the file).
    pub retired: Vec<u32>,
    /// Versions kept because objects still use them.
    pub in_use: Vec<u32>,
    /// The current version (never retired).
    pub current: u32,
}

impl Keystore {
    /// Every master key version, oldest first.
    pub fn master_versions(&self) -> Result<Vec<MasterVersion>, KeystoreError> {
        let inner = self.lock();
        let mut stmt = inner
            .conn
            .prepare("SELECT version, created_at FROM master_keys ORDER BY version")?;
        let rows = stmt.query_map([], |r| {
            Ok(MasterVersion {
                version: r.get(0)?,
                created_at: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a new master key version if the current one is at least `max_age_days` old (by
    /// this keystore's clock). Checked and added in one immediate transaction, so two
    /// processes checking at once add one version. Returns the new version, if any.
    pub fn rotate_master_if_older(&self, max_age_days: u32) -> Result<Option<u32>, KeystoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let newest: Option<(u32, i64)> = tx
            .query_row(
                "SELECT version, created_at FROM master_keys ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (version, created_at) =
            newest.ok_or_else(|| KeystoreError::Corrupt("there is no master key".into()))?;
        if now.saturating_sub(created_at) < i64::from(max_age_days).saturating_mul(DAY) {
            return Ok(None);
        }
        let next = version
            .checked_add(1)
            .ok_or_else(|| KeystoreError::Corrupt("master key versions exhausted".into()))?;
        insert_master_key(&tx, &self.root_key, &self.store_id, next, now)?;
        super::seal::commit(tx, &self.seal_key)?;
        inner.cache.current_master = Some(next);
        Ok(Some(next))
    }

    /// Destroys every master key version below `below` that is not in `in_use` and is not
    /// the current one. `below` must be the current version read *before* the objects were
    /// scanned, so a version that became old during the scan is never taken. Returns what was
    /// retired and what is still in use.
    pub fn retire_unused_master_keys(
        &self,
        in_use: &BTreeSet<u32>,
        below: u32,
    ) -> Result<Retirement, KeystoreError> {
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let current: u32 = tx
            .query_row("SELECT max(version) FROM master_keys", [], |r| {
                r.get::<_, Option<u32>>(0)
            })?
            .ok_or_else(|| KeystoreError::Corrupt("there is no master key".into()))?;
        let versions: Vec<u32> = {
            let mut stmt = tx.prepare("SELECT version FROM master_keys ORDER BY version")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut outcome = Retirement {
            current,
            ..Retirement::default()
        };
        for version in versions {
            if version == current || version >= below {
                continue;
            }
            if in_use.contains(&version) {
                outcome.in_use.push(version);
                continue;
            }
            tx.execute("DELETE FROM master_keys WHERE version = ?1", [version])?;
            outcome.retired.push(version);
        }
        super::seal::commit(tx, &self.seal_key)?;
        inner.cache.clear();
        if !outcome.retired.is_empty() {
            // The deleted rows also leave the WAL.
            super::checkpoint_truncate(&inner.conn, "retiring master keys");
        }
        Ok(outcome)
    }

    /// Adds a new material version to an `Enabled` CMK of origin `ssefs` (owner or root
    /// only); older versions stay for decrypting. Returns the new version.
    pub fn rotate_cmk(&self, key: &str, caller: &super::Caller) -> Result<u32, KeystoreError> {
        let root_key = copy_key(&self.root_key)?;
        self.administer("RotateKey", key, caller, |tx, row, now| {
            if row.origin != CmkOrigin::Ssefs {
                return Err(KeystoreError::InvalidKeyState {
                    key_id: row.key_id.clone(),
                    state: row.state,
                    action: "rotate",
                    hint: "; imported (EXTERNAL) material cannot be rotated by ssefs",
                });
            }
            if row.state != CmkState::Enabled {
                return Err(KeystoreError::InvalidKeyState {
                    key_id: row.key_id.clone(),
                    state: row.state,
                    action: "rotate",
                    hint: "",
                });
            }
            let version = insert_next_material(tx, &root_key, &self.store_id, &row.key_id, now)?;
            Ok((version, format!("new material version {version}")))
        })
    }

    /// Sets (`Some(days)`) or clears (`None`) a CMK's automatic rotation period.
    pub fn set_cmk_rotation(
        &self,
        key: &str,
        days: Option<NonZeroU32>,
        caller: &super::Caller,
    ) -> Result<(), KeystoreError> {
        let days = days.map(NonZeroU32::get);
        self.administer("UpdateRotationPolicy", key, caller, |tx, row, _| {
            tx.execute(
                "UPDATE cmks SET rotation_days = ?1 WHERE key_id = ?2",
                (days, &row.key_id),
            )?;
            let detail = match days {
                Some(d) => format!("rotation every {d} days"),
                None => "automatic rotation off".to_string(),
            };
            Ok(((), detail))
        })
    }

    /// Rotates every `Enabled` CMK of origin `ssefs` whose rotation period has passed since
    /// its newest material. Returns `(key id, new version)` for each.
    pub fn rotate_due_cmks(&self) -> Result<Vec<(String, u32)>, KeystoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let tx = self.begin_sealed(&mut inner.conn)?;
        let due: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT c.key_id FROM cmks c
                 WHERE c.state = 'Enabled' AND c.origin = 'ssefs' AND c.rotation_days IS NOT NULL
                   AND ?1 - (SELECT max(created_at) FROM cmk_materials m
                             WHERE m.key_id = c.key_id) >= c.rotation_days * 86400
                 ORDER BY c.key_id",
            )?;
            let rows = stmt.query_map([now], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut rotated = Vec::with_capacity(due.len());
        for key_id in due {
            let version = insert_next_material(&tx, &self.root_key, &self.store_id, &key_id, now)?;
            rotated.push((key_id, version));
        }
        super::seal::commit(tx, &self.seal_key)?;
        inner.cache.clear();
        Ok(rotated)
    }

    /// Checks that master key `version` unwraps (for tests and checks of a rotation).
    pub fn master_key_version(&self, version: u32) -> Result<Key256, KeystoreError> {
        let mut inner = self.fresh()?;
        self.master_key(&mut inner, version)
    }
}

/// Inserts material version `newest + 1` of `key_id`, wrapped under the root key.
fn insert_next_material(
    tx: &Transaction<'_>,
    root_key: &Key256,
    store_id: &StoreId,
    key_id: &str,
    now: i64,
) -> Result<u32, KeystoreError> {
    require_current_root_key(tx, root_key, store_id)?;
    let newest: Option<u32> = tx.query_row(
        "SELECT max(version) FROM cmk_materials WHERE key_id = ?1",
        [key_id],
        |r| r.get(0),
    )?;
    let version = newest
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| KeystoreError::Corrupt(format!("CMK {key_id}: versions exhausted")))?;
    let material = Key256::generate()?;
    let wrapped = wrap_key(root_key, &cmk_context(store_id, key_id, version), &material)?;
    tx.execute(
        "INSERT INTO cmk_materials (key_id, version, wrapped, material_check, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        (
            key_id,
            version,
            wrapped.0,
            ids::material_check(&material, key_id)?,
            now,
        ),
    )?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::super::{Caller, Clock};
    use super::*;

    fn new_store() -> (tempfile::TempDir, Key256, Keystore) {
        let dir = tempfile::tempdir().unwrap();
        let root = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &root).unwrap();
        (dir, root, ks)
    }

    fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            pid: 1,
        }
    }

    #[test]
    fn rotation_by_age_adds_one_version_only_when_due() {
        let (_dir, _root, mut ks) = new_store();
        let created = ks.master_versions().unwrap()[0].created_at;
        ks.set_clock(Clock::Fixed(created + 89 * DAY));
        assert_eq!(ks.rotate_master_if_older(90).unwrap(), None);
        ks.set_clock(Clock::Fixed(created + 90 * DAY));
        assert_eq!(ks.rotate_master_if_older(90).unwrap(), Some(2));
        // Version 2 was created at that (fixed) time, so it is not due yet.
        assert_eq!(ks.rotate_master_if_older(90).unwrap(), None);
        assert_eq!(ks.current_master_key().unwrap().0, 2);
    }

    #[test]
    fn a_rotation_by_another_connection_is_used_at_the_next_create() {
        let (dir, root, ks) = new_store();
        let (v1, k1) = ks.current_master_key().unwrap();
        let other = Keystore::open(dir.path(), &root).unwrap();
        assert_eq!(other.new_master_key().unwrap(), 2);
        let (v2, k2) = ks.current_master_key().unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert_ne!(k1.expose_secret(), k2.expose_secret());
        // The old version still reads.
        let again = ks.master_key_version(1).unwrap();
        assert_eq!(again.expose_secret(), k1.expose_secret());
    }

    #[test]
    fn retiring_keeps_current_in_use_and_newer_than_the_scan() {
        let (dir, root, ks) = new_store();
        for _ in 0..4 {
            ks.new_master_key().unwrap();
        }
        // Versions 1..=5; the scan saw 4 as current, 2 in use; 5 came during the scan.
        let in_use = BTreeSet::from([2]);
        let outcome = ks.retire_unused_master_keys(&in_use, 4).unwrap();
        assert_eq!(outcome.retired, vec![1, 3]);
        assert_eq!(outcome.in_use, vec![2]);
        assert_eq!(outcome.current, 5);
        let left: Vec<u32> = ks
            .master_versions()
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(left, vec![2, 4, 5]);
        let reopened = Keystore::open(dir.path(), &root).unwrap();
        assert!(matches!(
            reopened.master_key_version(1),
            Err(KeystoreError::UnknownMasterKey(1))
        ));
        reopened.master_key_version(2).unwrap();
    }

    #[test]
    fn cmk_rotation_adds_material_and_keeps_the_old_version() {
        let (_dir, _root, mut ks) = new_store();
        let id = ks.create_cmk("r", None, CmkOrigin::Ssefs, 0).unwrap();
        let (_, v1, m1) = ks.resolve_cmk(&id).unwrap();
        assert_eq!(ks.rotate_cmk(&id, &root()).unwrap(), 2);
        let (_, v2, m2) = ks.resolve_cmk(&id).unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert_ne!(m1.expose_secret(), m2.expose_secret());
        let old = ks
            .resolve(&crate::crypto::KeyRef::Cmk {
                key_id: id.clone(),
                version: 1,
            })
            .unwrap()
            .unwrap();
        assert_eq!(old.expose_secret(), m1.expose_secret());
        // Someone else may not rotate it.
        let stranger = Caller {
            uid: 4242,
            gid: 4242,
            groups: Vec::new(),
            pid: 2,
        };
        assert!(matches!(
            ks.rotate_cmk(&id, &stranger),
            Err(KeystoreError::AccessDenied { .. })
        ));
        // Automatic rotation by period.
        ks.set_cmk_rotation(&id, NonZeroU32::new(30), &root())
            .unwrap();
        assert_eq!(ks.cmk_info(&id).unwrap().rotation_days, Some(30));
        assert!(ks.rotate_due_cmks().unwrap().is_empty());
        ks.set_clock(Clock::Fixed(ks.now() + 31 * DAY));
        assert_eq!(ks.rotate_due_cmks().unwrap(), vec![(id.clone(), 3)]);
        assert!(ks.rotate_due_cmks().unwrap().is_empty());
        ks.set_cmk_rotation(&id, None, &root()).unwrap();
        assert_eq!(ks.cmk_info(&id).unwrap().rotation_days, None);
    }

    #[test]
    fn a_process_holding_a_replaced_root_key_cannot_add_versions() {
        let (dir, old_root, ks) = new_store();
        let id = ks.create_cmk("c", None, CmkOrigin::Ssefs, 0).unwrap();
        let stale = Keystore::open(dir.path(), &old_root).unwrap();
        let new_root = Key256::generate().unwrap();
        ks.change_root_key(&new_root, None).unwrap();
        assert!(matches!(
            stale.new_master_key(),
            Err(KeystoreError::WrongRootKey)
        ));
        assert!(matches!(
            stale.rotate_cmk(&id, &root()),
            Err(KeystoreError::WrongRootKey)
        ));
        let fresh = Keystore::open(dir.path(), &new_root).unwrap();
        assert_eq!(fresh.new_master_key().unwrap(), 2);
        fresh.master_key_version(1).unwrap();
    }

    #[test]
    fn disabled_or_external_cmks_are_not_rotated() {
        let (_dir, _root, ks) = new_store();
        let id = ks.create_cmk("d", None, CmkOrigin::Ssefs, 0).unwrap();
        ks.disable_cmk(&id, &root()).unwrap();
        assert!(matches!(
            ks.rotate_cmk(&id, &root()),
            Err(KeystoreError::InvalidKeyState { .. })
        ));
        let ext = ks.create_cmk("e", None, CmkOrigin::External, 0).unwrap();
        let err = ks.rotate_cmk(&ext, &root()).unwrap_err();
        assert!(err.to_string().contains("EXTERNAL"), "{err}");
    }
}

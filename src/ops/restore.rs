//! What a keystore restore would do to the store's objects: which keys the objects name (from
//! their unauthenticated headers, read through the `Store`), and which of those the backup
//! lacks while the keystore it replaces holds them. Decides nothing on its own: `ssefs
//! keystore restore` refuses or warns on what this finds.

use super::scan::{inventory, peek_object};
use crate::crypto::{FORMAT_V1, KeyRef};
use crate::keystore::backup::KeysHeld;
use crate::store::Store;
use std::collections::BTreeMap;

/// The keys and formats the objects of a store name in their headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectKeys {
    /// Objects by format version.
    pub formats: BTreeMap<u16, u64>,
    /// Objects by master key version.
    pub masters: BTreeMap<u32, u64>,
    /// Objects by CMK material version, as (CMK id, version).
    pub materials: BTreeMap<(String, u32), u64>,
    /// Files in buckets whose header could not be read (they name no key).
    pub unreadable: u64,
}

impl ObjectKeys {
    /// Objects of format 2 or later: authenticated by the store key.
    pub fn store_key_users(&self) -> u64 {
        self.formats
            .iter()
            .filter(|(v, _)| **v > FORMAT_V1)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads the header of every object of `store` (not the temporaries: they are removed, never
/// published, once the store is not mounted).
pub fn object_keys(store: &Store) -> ObjectKeys {
    let mut keys = ObjectKeys::default();
    for rel in &inventory(store).objects {
        let Ok(info) = peek_object(store, rel) else {
            keys.unreadable += 1;
            continue;
        };
        *keys.formats.entry(info.version).or_default() += 1;
        match info.key_ref {
            KeyRef::None => {}
            KeyRef::Master { version } => *keys.masters.entry(version).or_default() += 1,
            KeyRef::Cmk { key_id, version } => {
                *keys.materials.entry((key_id, version)).or_default() += 1;
            }
        }
    }
    keys
}

/// What restoring a backup would do to the objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreImpact {
    /// Objects that read now and would not after the restore, one sentence per key: the
    /// current keystore holds the key, the backup does not. A restore refuses these unless
    /// told to accept them.
    pub lost: Vec<String>,
    /// Objects whose key neither keystore holds (or that no keystore is left to say): they
    /// do not read now and will not after the restore either. Warnings.
    pub unreadable_anyway: Vec<String>,
}

/// Compares what the objects of a store need with what the backup (`backup`, once its
/// tombstones are honoured) and the keystore it replaces (`current`, `None` when it is gone
/// or unreadable) hold. `backup_authenticates` says whether objects of format 2 tried with
/// the backup's store key authenticated (`None`: none could be tried); when they do, a
/// different key in the current keystore is one no object uses.
pub fn restore_impact(
    backup: &KeysHeld,
    current: Option<&KeysHeld>,
    objects: &ObjectKeys,
    backup_authenticates: Option<bool>,
) -> RestoreImpact {
    let mut impact = RestoreImpact::default();
    let mut sort = |lost: bool, text: String| {
        if lost {
            impact.lost.push(text);
        } else {
            impact.unreadable_anyway.push(text);
        }
    };
    let users = objects.store_key_users();
    if users > 0 {
        let current_key = current.is_some_and(|c| c.store_key().is_some());
        match backup.store_key() {
            None => sort(
                current_key,
                format!(
                    "{users} object(s) of format 2 or later are authenticated by the store's \
                     object-authentication key, which the backup does not hold (it was made \
                     before the store had one), so they would read as EIO"
                ),
            ),
            Some(_)
                if current_key
                    && !current.is_some_and(|c| c.same_store_key(backup))
                    && backup_authenticates != Some(true) =>
            {
                sort(
                    true,
                    format!(
                        "{users} object(s) of format 2 or later are authenticated by the current keystore's \
                     object-authentication key, and the backup holds another one, so they \
                     would read as EIO"
                    ),
                )
            }
            Some(_) => {}
        }
    }
    for (version, n) in &objects.masters {
        if backup.masters.contains(version) {
            continue;
        }
        let held = current.is_some_and(|c| c.masters.contains(version));
        sort(
            held,
            format!(
                "{n} object(s) under master key version {version}, which the backup does not \
                 hold{}",
                held_text(held, current.is_some())
            ),
        );
    }
    for ((key_id, version), n) in &objects.materials {
        let material = (key_id.clone(), *version);
        if backup.materials.contains(&material) {
            continue;
        }
        let held = current.is_some_and(|c| c.materials.contains(&material));
        sort(
            held,
            format!(
                "{n} object(s) under CMK {key_id} material version {version}, which the backup \
                 does not hold{}",
                held_text(held, current.is_some())
            ),
        );
    }
    impact
}

fn held_text(held: bool, current: bool) -> &'static str {
    match (held, current) {
        (true, _) => " (the current keystore does)",
        (false, true) => " (nor does the current keystore)",
        (false, false) => " (and no current keystore is left to)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(masters: &[u32], materials: &[(&str, u32)]) -> KeysHeld {
        let mut keys = KeysHeld::default();
        keys.floor = 2;
        keys.masters = masters.iter().copied().collect();
        keys.cmks = materials.iter().map(|(id, _)| id.to_string()).collect();
        keys.materials = materials
            .iter()
            .map(|(id, v)| (id.to_string(), *v))
            .collect();
        keys
    }

    fn objects() -> ObjectKeys {
        ObjectKeys {
            formats: [(1, 3)].into_iter().collect(),
            masters: [(1, 1), (2, 1)].into_iter().collect(),
            materials: [(("k".to_string(), 1), 1)].into_iter().collect(),
            unreadable: 0,
        }
    }

    #[test]
    fn a_key_only_the_current_keystore_holds_is_lost_one_nobody_holds_is_a_warning() {
        let backup = held(&[1], &[]);
        let current = held(&[1, 2], &[]);
        let impact = restore_impact(&backup, Some(&current), &objects(), None);
        assert_eq!(impact.lost.len(), 1, "{impact:?}");
        assert!(
            impact.lost[0].contains("master key version 2"),
            "{impact:?}"
        );
        assert_eq!(impact.unreadable_anyway.len(), 1, "{impact:?}");
        assert!(impact.unreadable_anyway[0].contains("CMK k"), "{impact:?}");

        let everything = held(&[1, 2], &[("k", 1)]);
        let impact = restore_impact(&everything, Some(&current), &objects(), None);
        assert_eq!(impact, RestoreImpact::default());

        // Without a current keystore nothing that reads now can be lost.
        let impact = restore_impact(&backup, None, &objects(), None);
        assert!(impact.lost.is_empty(), "{impact:?}");
        assert_eq!(impact.unreadable_anyway.len(), 2, "{impact:?}");
    }
}

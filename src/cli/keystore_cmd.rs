//! `ssefs keystore backup|restore|replaced`: an online, consistent copy of the keystore (still
//! wrapped under the root key); a restore that takes the store lock, checks the backup belongs
//! to this store, opens with the root key and leaves no object that reads now unreadable, then
//! replaces the keystore atomically; and the replaced keystores a restore was asked to keep.

use super::root_key::{
    KeyArgs, StoreArgs, existing_passphrase, load_key_file, locate_root_key, token_root_key,
};
use crate::crypto::KeyRef;
use crate::keystore::backup::{
    BackupError, Burial, CurrentKeystore, CurrentView, KeysMissing, Replaced, StagedKeystore,
    backup_keystore, prune_backups, remove_replaced_keystores, replaced_keystores,
};
use crate::keystore::inspect::summarize_file;
use crate::keystore::{
    Keystore, KeystoreError, StoreId, keystore_dir, read_backup_passphrase_kdf,
    read_backup_token_root,
};
use crate::ops::fsck::objects_opening_with;
use crate::ops::restore::{ObjectKeys, RestoreImpact, object_keys, restore_impact};
use crate::store::{Store, StoreError};
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// How many encrypted objects a restore tries when the store's own keystore is gone.
const OBJECTS_TO_TRY: usize = 16;

#[derive(Subcommand, Debug, Clone)]
pub enum KeystoreAction {
    /// Copy the keystore to FILE (created 0600, never overwritten). Safe while mounted; the copy
    /// stays wrapped under the root key, which is not in it: keep the two apart.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        /// The new backup file.
        file: PathBuf,
        /// Then remove all but the N newest backups of this store in FILE's directory (a
        /// backup is key escrow: it brings back every key destroyed since it was made).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the keystore with the backup FILE. Refused while the store is mounted; the
    /// backup must be of this store and open with the root key, and is refused if objects
    /// that read now would not read after it. The replaced keystore is overwritten and
    /// removed unless --keep-replaced is given.
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup made by `ssefs keystore backup`.
        file: PathBuf,
        /// The backup's root key (for a backup whose root key comes from a passphrase, the
        /// passphrase it was made under).
        #[command(flatten)]
        key: KeyArgs,
        /// Keep the replaced keystore as .ssefs/keystore.db.replaced-SECONDS (a second copy
        /// of its keys: key escrow; see `ssefs keystore replaced`).
        #[arg(long)]
        keep_replaced: bool,
        /// Restore even though objects that read now would not read afterwards (their key
        /// is in the current keystore only); the replaced keystore is then kept.
        #[arg(long)]
        allow_unreadable: bool,
        /// Print what was done as JSON (warnings still go to standard error).
        #[arg(long)]
        json: bool,
    },
    /// List the keystores restores kept (.ssefs/keystore.db.replaced-*), or overwrite and
    /// remove them. Each still holds the keys it had: key escrow.
    Replaced {
        #[command(flatten)]
        store: StoreArgs,
        /// Overwrite and remove them, all but the --keep newest.
        #[arg(long)]
        remove: bool,
        /// With --remove: keep the N newest.
        #[arg(long, value_name = "N", requires = "remove", default_value_t = 0)]
        keep: u32,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How a restore goes about what it might lose.
struct RestoreOptions {
    keep_replaced: bool,
    allow_unreadable: bool,
    json: bool,
}

pub fn run(action: KeystoreAction) -> Result<(), String> {
    match action {
        KeystoreAction::Backup {
            store,
            file,
            keep,
            json,
        } => backup(store.path().map_err(|e| e.to_string())?, &file, keep, json),
        KeystoreAction::Restore {
            store,
            file,
            key,
            keep_replaced,
            allow_unreadable,
            json,
        } => restore(
            store.path().map_err(|e| e.to_string())?,
            &file,
            &key,
            &RestoreOptions {
                keep_replaced,
                allow_unreadable,
                json,
            },
        ),
        KeystoreAction::Replaced {
            store,
            remove,
            keep,
            json,
        } => replaced(store.path().map_err(|e| e.to_string())?, remove, keep, json),
    }
}

fn backup(store: &Path, file: &Path, keep: Option<u32>, json: bool) -> Result<(), String> {
    let report = backup_keystore(&keystore_dir(store), file).map_err(|e| e.to_string())?;
    if !json {
        println!(
            "backed up the keystore of store {} ({} master key version(s), {} bytes) to {}; \
             it is useless without the root key, which it does not contain",
            report.store_id,
            report.master_key_versions,
            report.bytes,
            file.display()
        );
    }
    let mut removed = Vec::new();
    if let Some(keep) = keep {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        removed = prune_backups(dir, &report.store_id, keep as usize).map_err(|e| e.to_string())?;
        if !json {
            for old in &removed {
                println!("removed the old backup {}", old.display());
            }
        }
    }
    if json {
        let out = serde_json::json!({
            "store_id": report.store_id.to_string(),
            "file": file.display().to_string(),
            "master_key_versions": report.master_key_versions,
            "bytes": report.bytes,
            "removed": removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        });
        println!("{out}");
    }
    Ok(())
}

fn restore(
    store: &Path,
    file: &Path,
    key_args: &KeyArgs,
    options: &RestoreOptions,
) -> Result<(), String> {
    let locked = Store::open_locked(store).map_err(|e| match e {
        StoreError::AlreadyMounted(path) => format!(
            "store {} is mounted; unmount it before restoring its keystore",
            path.display()
        ),
        other => other.to_string(),
    })?;
    let dir = locked.meta_dir();
    let current_id = Keystore::read_store_id(&dir);
    // Another store's backup is named as such before any key is tried (its root key is
    // another one, and "wrong root key" would send the user after the wrong thing).
    if let (Ok(store_id), Ok(backup_id)) = (&current_id, summarize_backup(file)) {
        if *store_id != backup_id {
            return Err(format!(
                "{} is a keystore backup of another store (id {backup_id}); this store is \
                 {store_id}: restore a backup of this store",
                file.display()
            ));
        }
    }
    let key = restore_key(store, file, key_args, &current_id)?;
    let mut staged = StagedKeystore::stage(&dir, file, &key).map_err(|e| e.to_string())?;
    match &current_id {
        Ok(id) if id != staged.store_id() => {
            return Err(BackupError::OtherStore {
                backup: *staged.store_id(),
                store: *id,
            }
            .to_string());
        }
        Ok(_) => {}
        Err(e) => check_against_objects(locked.root(), &staged, e)?,
    }
    let current = staged.current(&key).map_err(|e| e.to_string())?;
    let objects = object_keys(&locked);
    let backup_keys = staged.keys(&current);
    let authenticates = backup_store_key_opens_objects(locked.root(), &staged)?;
    let impact = restore_impact(&backup_keys, current.keys.as_ref(), &objects, authenticates);
    if !impact.lost.is_empty() && !options.allow_unreadable {
        return Err(format!(
            "refusing to restore {}: objects that read now would not read after it: {}; \
             restore a newer backup of this store (or keep the current keystore), or give \
             --allow-unreadable to restore it anyway (the replaced keystore, which holds those \
             keys, is then kept)",
            file.display(),
            impact.lost.join("; ")
        ));
    }
    let replaced_had = current
        .keys
        .as_ref()
        .map(|keys| keys.missing_from(&backup_keys))
        .unwrap_or_default();
    // The replaced keystore goes only when it is known to hold nothing objects need that the
    // restored one lacks: when nothing is lost and it could be read as ssefs wrote it (one
    // changed outside ssefs may hide a removed key in its free pages: it is evidence).
    let keep = options.keep_replaced
        || !impact.lost.is_empty()
        || matches!(
            current.state,
            CurrentKeystore::Unreadable(_) | CurrentKeystore::Tampered(_)
        );
    let floor = staged.floor_after(&current);
    let burial = staged
        .carry_forward(&key, &current)
        .map_err(|e| e.to_string())?;
    let replaced = staged.install(keep).map_err(|e| e.to_string())?;
    let floor_note = upgrade_note(locked.root(), floor, &objects);
    warn_of_escrow(&burial.current);
    warn_of_impact(&impact, &floor_note);
    if options.json {
        print_restore_json(
            locked.root(),
            file,
            &burial,
            &impact,
            &replaced_had,
            &replaced,
        );
        return Ok(());
    }
    println!(
        "restored the keystore of store {} from {}",
        locked.root().display(),
        file.display()
    );
    report_burial(&burial);
    report_replaced(&current, &replaced_had, &replaced);
    Ok(())
}

/// The backup's root key: from the passphrase its own parameters name, or a key file.
fn restore_key(
    store: &Path,
    file: &Path,
    key_args: &KeyArgs,
    current_id: &Result<StoreId, KeystoreError>,
) -> Result<crate::crypto::Key256, String> {
    let (root_key, passphrase_fd) = (key_args.root_key.as_deref(), key_args.passphrase_fd);
    // The backup itself says whether its root key comes from a passphrase or a token (the
    // keystore it replaces may be lost).
    let backup_error = |e: KeystoreError| format!("backup {}: {e}", file.display());
    let (kdf, token) = match root_key {
        Some(_) => (None, None),
        None => (
            read_backup_passphrase_kdf(file).map_err(backup_error)?,
            read_backup_token_root(file).map_err(backup_error)?,
        ),
    };
    match (kdf, token) {
        (_, Some(token)) => {
            let store_id = summarize_backup(file).map_err(backup_error)?;
            token_root_key(store, key_args, token, &store_id).map_err(|e| e.to_string())
        }
        (Some(kdf), None) => {
            let passphrase =
                existing_passphrase(store, passphrase_fd).map_err(|e| e.to_string())?;
            kdf.derive(passphrase.expose_secret())
                .map_err(|e| e.to_string())
        }
        (None, None) => {
            let location =
                locate_root_key(
                    root_key,
                    &|name| std::env::var_os(name),
                    || match current_id {
                        Ok(id) => Ok(*id),
                        Err(_) => summarize_backup(file),
                    },
                )
                .map_err(|e| e.to_string())?;
            load_key_file(store, &location).map_err(|e| e.to_string())
        }
    }
}

/// A note when the restored keystore accepts objects of format 1 and the store has none.
fn upgrade_note(store: &Path, floor: u16, objects: &ObjectKeys) -> Option<String> {
    let old = objects
        .formats
        .iter()
        .filter(|(v, _)| **v < crate::crypto::FORMAT_VERSION)
        .count();
    (floor < crate::crypto::FORMAT_VERSION && old == 0).then(|| {
        format!(
            "note: the restored keystore still accepts objects of format {floor}, and the \
             store holds none; run `ssefs upgrade --store {}` to refuse them again",
            store.display()
        )
    })
}

/// Warns (on standard error) of objects the restore leaves unreadable.
fn warn_of_impact(impact: &RestoreImpact, floor_note: &Option<String>) {
    for lost in &impact.lost {
        eprintln!("warning: restored although {lost}");
    }
    for gone in &impact.unreadable_anyway {
        eprintln!("warning: {gone}: they cannot be read, before or after this restore");
    }
    if let Some(note) = floor_note {
        eprintln!("{note}");
    }
}

/// Says what became of the replaced keystore and which keys it had that the restored one
/// lacks.
fn report_replaced(current: &CurrentView, had: &KeysMissing, replaced: &Replaced) {
    for line in missing_lines(had) {
        println!("the replaced keystore had {line}, which the restored one lacks");
    }
    match replaced {
        Replaced::Nothing => {}
        Replaced::Kept(path) => println!(
            "the replaced keystore is kept as {} (key escrow: it holds every key it had; \
             `ssefs keystore replaced --remove` removes it)",
            path.display()
        ),
        Replaced::Removed => println!("the replaced keystore was overwritten and removed"),
        Replaced::NotRemoved(path, why) => eprintln!(
            "warning: the replaced keystore could not be removed ({why}); it is still {} \
             (`ssefs keystore replaced --remove` removes it)",
            path.display()
        ),
    }
    match &current.state {
        CurrentKeystore::Unreadable(why) => {
            println!("the replaced keystore could not be read ({why}), so it was kept");
        }
        CurrentKeystore::Tampered(_) => {
            println!("the replaced keystore was changed outside ssefs, so it was kept");
        }
        _ => {}
    }
}

fn missing_lines(had: &KeysMissing) -> Vec<String> {
    let mut lines = Vec::new();
    if had.store_key {
        lines.push("the store's object-authentication key".to_string());
    }
    for version in &had.masters {
        lines.push(format!("master key version {version}"));
    }
    for key_id in &had.cmks {
        lines.push(format!("CMK {key_id}"));
    }
    for (key_id, version) in &had.materials {
        lines.push(format!("CMK {key_id} material version {version}"));
    }
    lines
}

fn print_restore_json(
    store: &Path,
    file: &Path,
    burial: &Burial,
    impact: &RestoreImpact,
    had: &KeysMissing,
    replaced: &Replaced,
) {
    let (kept, removed) = match replaced {
        Replaced::Kept(path) | Replaced::NotRemoved(path, _) => {
            (Some(path.display().to_string()), false)
        }
        Replaced::Removed => (None, true),
        Replaced::Nothing => (None, false),
    };
    let out = serde_json::json!({
        "store": store.display().to_string(),
        "file": file.display().to_string(),
        "destroyed_again": {
            "cmks": burial.again.cmks,
            "materials": burial.again.materials.iter()
                .map(|(key_id, version)| serde_json::json!({
                    "key_id": key_id, "version": version,
                }))
                .collect::<Vec<_>>(),
        },
        "floor_raised": burial.floor_raised,
        "unreadable": impact.lost,
        "unreadable_before": impact.unreadable_anyway,
        "replaced_had": missing_lines(had),
        "kept": kept,
        "removed": removed,
    });
    println!("{out}");
}

fn replaced(store: &Path, remove: bool, keep: u32, json: bool) -> Result<(), String> {
    let dir = keystore_dir(store);
    let removed = if remove {
        // The store lock keeps a restore from keeping a new one meanwhile.
        let _locked = Store::open_locked(store).map_err(|e| match e {
            StoreError::AlreadyMounted(path) => format!(
                "store {} is mounted; unmount it before removing replaced keystores",
                path.display()
            ),
            other => other.to_string(),
        })?;
        remove_replaced_keystores(&dir, keep as usize).map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    let left = replaced_keystores(&dir).map_err(|e| e.to_string())?;
    if json {
        let out = serde_json::json!({
            "replaced": left.iter().map(|r| serde_json::json!({
                "file": r.path.display().to_string(),
                "replaced_at": system_time_text(r.modified),
                "bytes": r.bytes,
            })).collect::<Vec<_>>(),
            "removed": removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    for path in &removed {
        println!("overwrote and removed {}", path.display());
    }
    for r in &left {
        println!(
            "{}  replaced {}  {} bytes",
            r.path.display(),
            system_time_text(r.modified),
            r.bytes
        );
    }
    if left.is_empty() && removed.is_empty() {
        println!("no replaced keystore is kept in {}", dir.display());
    }
    Ok(())
}

fn system_time_text(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    super::time::format_rfc3339(secs)
}

/// Says which destroyed keys the backup still held (and are destroyed again), and whether the
/// object format floor was carried forward.
fn report_burial(burial: &Burial) {
    for key_id in &burial.again.cmks {
        println!("destroyed CMK {key_id} again: it was destroyed after this backup was made");
    }
    for (key_id, version) in &burial.again.materials {
        println!(
            "deleted the material of CMK {key_id} version {version} again: it was deleted \
             after this backup was made"
        );
    }
    if let Some(floor) = burial.floor_raised {
        println!(
            "raised the object format floor to {floor}, as the replaced keystore had it: \
             objects of older formats stay refused"
        );
    }
}

/// Warns (on standard error) when nothing could say which keys were destroyed since the backup
/// was made.
fn warn_of_escrow(current: &CurrentKeystore) {
    let escrow = "a keystore backup is key escrow: it brings back every key destroyed since \
                  it was made; keep as few as you need and destroy old ones";
    match current {
        CurrentKeystore::Sealed => {}
        CurrentKeystore::Missing => eprintln!(
            "warning: this store had no keystore, so nothing says which keys were destroyed \
             since the backup was made; {escrow}"
        ),
        CurrentKeystore::Unreadable(why) => eprintln!(
            "warning: the replaced keystore could not be read ({why}), so nothing says which \
             keys were destroyed since the backup was made; {escrow}"
        ),
        CurrentKeystore::Unsealed => eprintln!(
            "warning: the replaced keystore could not say for sure which keys were destroyed \
             since the backup was made; {escrow}"
        ),
        CurrentKeystore::Tampered(problems) => eprintln!(
            "warning: the replaced keystore was changed outside ssefs ({}), so keys destroyed \
             since the backup was made may be back; {escrow}",
            problems.join("; ")
        ),
    }
}

fn summarize_backup(file: &Path) -> Result<StoreId, KeystoreError> {
    Ok(summarize_file(file)?.store_id)
}

/// Whether the objects of format 2 tried (those under its master keys, and `none` ones) all
/// authenticate under the backup's store key: `None` when it has none or no such object
/// could be tried.
fn backup_store_key_opens_objects(
    store: &Path,
    staged: &StagedKeystore,
) -> Result<Option<bool>, String> {
    let Some(store_key) = staged.store_key() else {
        return Ok(None);
    };
    let keys = |key_ref: &KeyRef| match key_ref {
        KeyRef::Master { version } => staged.master_key(*version).map(|k| k.duplicate()),
        _ => None,
    };
    let (tried, opened) = objects_opening_with(
        store,
        staged.store_id().as_bytes(),
        Some(store_key),
        true,
        &keys,
        OBJECTS_TO_TRY,
    )
    .map_err(|e| e.to_string())?;
    // Every object tried must authenticate: one that does not may be under the current key.
    Ok((tried > 0).then_some(opened == tried))
}

/// Without a keystore to compare store ids with, the backup must open the store's objects.
fn check_against_objects(
    store: &Path,
    staged: &StagedKeystore,
    why: &KeystoreError,
) -> Result<(), String> {
    let keys = |key_ref: &KeyRef| match key_ref {
        KeyRef::Master { version } => staged.master_key(*version).map(|k| k.duplicate()),
        _ => None,
    };
    let (tried, opened) = objects_opening_with(
        store,
        staged.store_id().as_bytes(),
        staged.store_key(),
        false,
        &keys,
        OBJECTS_TO_TRY,
    )
    .map_err(|e| e.to_string())?;
    match (tried, opened) {
        (0, _) => {
            println!(
                "note: the current keystore is unusable ({why}) and no AES256 object could be \
                 checked against the backup"
            );
            Ok(())
        }
        (_, 0) => Err(format!(
            "the backup opens none of the {tried} object(s) tried (neither their keys nor the \
             store's object-authentication key match): it is not this store's keystore"
        )),
        _ => Ok(()),
    }
}

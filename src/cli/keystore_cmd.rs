//! `ssefs keystore backup|restore`: an online, consistent copy of the keystore (still wrapped
//! under the root key), and a restore that takes the store lock, checks the backup belongs to
//! this store and opens with the root key, then replaces the keystore atomically.

use super::root_key::{
    KeyArgs, StoreArgs, existing_passphrase, load_key_file, locate_root_key, token_root_key,
};
use crate::crypto::KeyRef;
use crate::keystore::backup::{
    BackupError, Burial, CurrentKeystore, StagedKeystore, backup_keystore, prune_backups,
};
use crate::keystore::inspect::summarize_file;
use crate::keystore::{
    Keystore, KeystoreError, StoreId, keystore_dir, read_backup_passphrase_kdf,
    read_backup_token_root,
};
use crate::ops::fsck::objects_opening_with;
use crate::store::{Store, StoreError};
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// How many encrypted objects a restore tries when the store's own keystore is gone.
const OBJECTS_TO_TRY: usize = 16;

#[derive(Subcommand, Debug)]
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
    /// backup must be of this store and open with the root key. The old keystore is kept.
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup made by `ssefs keystore backup`.
        file: PathBuf,
        /// The backup's root key (for a backup whose root key comes from a passphrase, the
        /// passphrase it was made under).
        #[command(flatten)]
        key: KeyArgs,
        /// Print what was done as JSON (warnings still go to standard error).
        #[arg(long)]
        json: bool,
    },
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
            json,
        } => restore(store.path().map_err(|e| e.to_string())?, &file, &key, json),
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

fn restore(store: &Path, file: &Path, key_args: &KeyArgs, json: bool) -> Result<(), String> {
    let (root_key, passphrase_fd) = (key_args.root_key.as_deref(), key_args.passphrase_fd);
    let locked = Store::open_locked(store).map_err(|e| match e {
        StoreError::AlreadyMounted(path) => format!(
            "store {} is mounted; unmount it before restoring its keystore",
            path.display()
        ),
        other => other.to_string(),
    })?;
    let dir = locked.meta_dir();
    let current = Keystore::read_store_id(&dir);
    // Another store's backup is named as such before any key is tried (its root key is
    // another one, and "wrong root key" would send the user after the wrong thing).
    if let (Ok(store_id), Ok(backup_id)) = (&current, summarize_backup(file)) {
        if *store_id != backup_id {
            return Err(format!(
                "{} is a keystore backup of another store (id {backup_id}); this store is \
                 {store_id}: restore a backup of this store",
                file.display()
            ));
        }
    }
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
    let key = match (kdf, token) {
        (_, Some(token)) => {
            let store_id = summarize_backup(file).map_err(backup_error)?;
            token_root_key(store, key_args, token, &store_id).map_err(|e| e.to_string())?
        }
        (Some(kdf), None) => {
            let passphrase =
                existing_passphrase(store, passphrase_fd).map_err(|e| e.to_string())?;
            kdf.derive(passphrase.expose_secret())
                .map_err(|e| e.to_string())?
        }
        (None, None) => {
            let location =
                locate_root_key(
                    root_key,
                    &|name| std::env::var_os(name),
                    || match &current {
                        Ok(id) => Ok(*id),
                        Err(_) => summarize_backup(file),
                    },
                )
                .map_err(|e| e.to_string())?;
            load_key_file(store, &location).map_err(|e| e.to_string())?
        }
    };
    let mut staged = StagedKeystore::stage(&dir, file, &key).map_err(|e| e.to_string())?;
    match &current {
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
    let burial = staged
        .bury_destroyed_keys(&key)
        .map_err(|e| e.to_string())?;
    let kept = staged.install().map_err(|e| e.to_string())?;
    if json {
        warn_of_escrow(&burial.current);
        let out = serde_json::json!({
            "store": locked.root().display().to_string(),
            "file": file.display().to_string(),
            "destroyed_again": {
                "cmks": burial.again.cmks,
                "materials": burial.again.materials.iter()
                    .map(|(key_id, version)| serde_json::json!({
                        "key_id": key_id, "version": version,
                    }))
                    .collect::<Vec<_>>(),
            },
            "kept": kept.as_ref().map(|p| p.display().to_string()),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "restored the keystore of store {} from {}",
        locked.root().display(),
        file.display()
    );
    report_burial(&burial);
    if let Some(kept) = kept {
        println!("the keystore it replaced is kept as {}", kept.display());
    }
    Ok(())
}

/// Says which destroyed keys the backup still held (and are destroyed again), and warns when
/// nothing could say which keys were destroyed since the backup was made.
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
    warn_of_escrow(&burial.current);
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
    let (tried, opened) =
        objects_opening_with(store, staged.store_id().as_bytes(), &keys, OBJECTS_TO_TRY)
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
            "the backup opens none of the {tried} object(s) tried: it is not this store's keystore"
        )),
        _ => Ok(()),
    }
}

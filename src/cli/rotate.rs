//! `ssefs rotate-master`: a new master key version now or when the current one is old, and
//! retiring versions no object uses; plus the mount's background rotation check. Works while
//! the store is mounted (the keystore is shared); reads object headers only to count users.

use super::root_key::{KeyArgs, RootKeyError, StoreArgs, open_keystore};
use crate::crypto::KeyRef;
use crate::fs::scan::{inventory, peek_object};
use crate::keystore::{Keystore, KeystoreError};
use clap::Args;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The default age at which a mount rotates the master key.
pub const DEFAULT_MASTER_ROTATION_DAYS: u32 = 90;
/// How often a mount checks whether a rotation is due.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Args, Debug)]
pub struct RotateMasterArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Rotate only if the current version is at least N days old (for timers).
    #[arg(long, value_name = "N", conflicts_with_all = ["retire_unused", "retire"])]
    pub if_older_than_days: Option<u32>,
    /// Destroy every old version that no object uses any more (never the current one).
    #[arg(long, conflicts_with = "retire")]
    pub retire_unused: bool,
    /// Destroy this old version; refused while any object uses it.
    #[arg(long, value_name = "VERSION")]
    pub retire: Option<u32>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The store scan could not show which versions are in use.
    #[error("{0}")]
    Usage(String),
    #[error("there is no master key version {0}")]
    NoSuchVersion(u32),
    #[error("master key version {0} is the current one")]
    CurrentVersion(u32),
    #[error(
        "master key version {version}: {objects} object(s) still use it; run `ssefs rewrap \
         --store {}` first",
        store.display()
    )]
    StillUsed {
        version: u32,
        objects: u64,
        store: PathBuf,
    },
}

pub fn run(args: &RotateMasterArgs) -> Result<(), RotateError> {
    let store = args.store.path()?;
    let keystore = open_keystore(store, &args.key)?;
    if args.retire_unused || args.retire.is_some() {
        return retire(&keystore, store, args.retire, args.json);
    }
    let rotated = match args.if_older_than_days {
        Some(days) => keystore.rotate_master_if_older(days)?,
        None => Some(keystore.new_master_key()?),
    };
    if args.json {
        let (current, _) = keystore.current_master_key()?;
        let out = serde_json::json!({ "rotated": rotated.is_some(), "current_version": current });
        println!("{out}");
        return Ok(());
    }
    match rotated {
        Some(version) => println!(
            "master key version {version} is now current; run `ssefs rewrap --store {}` to \
             re-wrap older objects",
            store.display()
        ),
        None => {
            let (current, _) = keystore.current_master_key()?;
            println!(
                "master key version {current} is younger than {} days: not rotated",
                args.if_older_than_days.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// How many objects each master key version wraps, from the headers in the store. Fails if
/// any object's header cannot be read (then no version can be proven unused).
pub fn master_usage(store: &Path) -> Result<BTreeMap<u32, u64>, String> {
    let inv = inventory(store).map_err(|e| e.to_string())?;
    let mut usage = BTreeMap::new();
    let mut unreadable = Vec::new();
    for rel in &inv.objects {
        match peek_object(&inv.root, rel) {
            Ok(info) => {
                if let KeyRef::Master { version } = info.key_ref {
                    *usage.entry(version).or_default() += 1;
                }
            }
            Err(e) => unreadable.push(format!("{}: {e}", rel.display())),
        }
    }
    // Temporaries are objects being created or re-encrypted; a torn one is skipped.
    for rel in &inv.temporaries {
        if let Ok(info) = peek_object(&inv.root, rel) {
            if let KeyRef::Master { version } = info.key_ref {
                *usage.entry(version).or_default() += 1;
            }
        }
    }
    if let Some((dir, e)) = inv.unreadable.first() {
        unreadable.push(format!("{}: {e}", dir.display()));
    }
    if !unreadable.is_empty() {
        return Err(format!(
            "cannot read {} object header(s) or directories, so no version can be shown unused \
             (first: {}); run `ssefs fsck`",
            unreadable.len(),
            unreadable[0]
        ));
    }
    Ok(usage)
}

fn retire(
    keystore: &Keystore,
    store: &Path,
    only: Option<u32>,
    json: bool,
) -> Result<(), RotateError> {
    // The current version before the scan: anything created during the scan uses it or a
    // newer one, and those are never retired.
    let (before_scan, _) = keystore.current_master_key()?;
    let usage = master_usage(store).map_err(RotateError::Usage)?;
    if let Some(version) = only {
        if !keystore
            .master_versions()?
            .iter()
            .any(|m| m.version == version)
        {
            return Err(RotateError::NoSuchVersion(version));
        }
        if version >= before_scan {
            return Err(RotateError::CurrentVersion(version));
        }
        if let Some(n) = usage.get(&version) {
            return Err(RotateError::StillUsed {
                version,
                objects: *n,
                store: store.to_path_buf(),
            });
        }
    }
    let in_use: BTreeSet<u32> = match only {
        // Everything else counts as in use, so only the one version goes.
        Some(version) => keystore
            .master_versions()?
            .iter()
            .map(|m| m.version)
            .filter(|v| *v != version)
            .collect(),
        None => usage.keys().copied().collect(),
    };
    let outcome = keystore.retire_unused_master_keys(&in_use, before_scan)?;
    if json {
        let kept: Vec<_> = match only {
            Some(_) => Vec::new(),
            None => outcome
                .in_use
                .iter()
                .map(|v| {
                    let objects = usage.get(v).copied().unwrap_or_default();
                    serde_json::json!({ "version": v, "objects": objects })
                })
                .collect(),
        };
        let out = serde_json::json!({
            "retired": outcome.retired,
            "kept": kept,
            "current_version": outcome.current,
        });
        println!("{out}");
        return Ok(());
    }
    for version in &outcome.retired {
        println!("retired master key version {version}");
    }
    if only.is_none() {
        for version in &outcome.in_use {
            let n = usage.get(version).copied().unwrap_or_default();
            let used = RotateError::StillUsed {
                version: *version,
                objects: n,
                store: store.to_path_buf(),
            };
            println!("kept {used}");
        }
    }
    println!(
        "{} version(s) retired; current version {}",
        outcome.retired.len(),
        outcome.current
    );
    Ok(())
}

/// Starts the mount's rotation check: at once and then hourly, a new master key version when
/// the current one is `master_days` old (0: never), and new material for every CMK whose own
/// rotation period has passed. Failures are logged and retried at the next check. The
/// thread ends once the mount has dropped the keystore.
pub fn spawn_rotation_checks(keystore: Arc<Keystore>, master_days: u32) {
    // The thread must never take SIGINT or SIGTERM: the mount waits for them in one thread
    // and unmounts cleanly, but a thread with them unblocked would be killed by the default
    // action. It inherits the mask in force when it is started.
    let previous = block_termination_signals();
    // Only a weak reference between checks: when the mount ends, the keystore is closed (and
    // its write-ahead log checkpointed and removed) as if there were no check.
    let weak = Arc::downgrade(&keystore);
    drop(keystore);
    let spawned = std::thread::Builder::new()
        .name("ssefs-rotation".to_string())
        .spawn(move || {
            while let Some(keystore) = weak.upgrade() {
                check_rotation(&keystore, master_days);
                drop(keystore);
                std::thread::sleep(CHECK_INTERVAL);
            }
        });
    if let Some(previous) = previous {
        // SAFETY: `previous` is the mask pthread_sigmask returned for this thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    }
    if let Err(e) = spawned {
        log::error!("cannot start the key rotation check: {e}");
    }
}

/// Blocks SIGINT and SIGTERM in this thread; returns the mask before, `None` on failure.
fn block_termination_signals() -> Option<libc::sigset_t> {
    // SAFETY: the sets are initialised by sigemptyset before use; pthread_sigmask only reads
    // `set` and writes `previous`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        (libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous) == 0).then_some(previous)
    }
}

fn check_rotation(keystore: &Keystore, master_days: u32) {
    if master_days > 0 {
        match keystore.rotate_master_if_older(master_days) {
            Ok(Some(version)) => log::info!("rotated the master key: version {version}"),
            Ok(None) => {}
            Err(e) => log::warn!("master key rotation check failed: {e}"),
        }
    }
    match keystore.rotate_due_cmks() {
        Ok(rotated) => {
            for (key_id, version) in rotated {
                log::info!("rotated CMK {key_id}: material version {version}");
            }
        }
        Err(e) => log::warn!("CMK rotation check failed: {e}"),
    }
}

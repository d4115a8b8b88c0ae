//! `ssefs rotate-master`: a new master key version now or when the current one is old, and
//! retiring versions no object uses; plus the mount's background rotation check. Works while
//! the store is mounted (the keystore is shared); the retire check is `ops::retire`.

use super::root_key::{KeyArgs, RootKeyError, StoreArgs, open_keystore};
use crate::keystore::{Keystore, KeystoreError};
use crate::ops::retire::{RetireError, retire_master_keys};
use crate::store::{Store, StoreError};
use crate::sys;
use clap::Args;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The default age at which a mount rotates the master key.
pub const DEFAULT_MASTER_ROTATION_DAYS: u32 = 90;
/// How often a mount checks whether a rotation is due.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Args, Debug, Clone)]
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
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Retiring was refused or the store scan could not show which versions are in use.
    #[error(transparent)]
    Retire(#[from] RetireError),
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
            args.store.name().display()
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

fn retire(
    keystore: &Keystore,
    store: &Path,
    only: Option<u32>,
    json: bool,
) -> Result<(), RotateError> {
    let store = Store::open(store)?;
    let outcome = retire_master_keys(keystore, &store, only)?;
    if json {
        let kept: Vec<_> = match only {
            Some(_) => Vec::new(),
            None => outcome
                .retirement
                .in_use
                .iter()
                .map(|v| {
                    let objects = outcome.usage.objects.get(v).copied().unwrap_or_default();
                    let temporaries = outcome
                        .usage
                        .temporaries
                        .get(v)
                        .copied()
                        .unwrap_or_default();
                    serde_json::json!({
                        "version": v, "objects": objects, "temporaries": temporaries
                    })
                })
                .collect(),
        };
        let out = serde_json::json!({
            "retired": outcome.retirement.retired,
            "kept": kept,
            "current_version": outcome.retirement.current,
        });
        println!("{out}");
        return Ok(());
    }
    for version in &outcome.retirement.retired {
        println!("retired master key version {version}");
    }
    if only.is_none() {
        for version in &outcome.retirement.in_use {
            println!("kept {}", outcome.usage.still_used(store.root(), *version));
        }
    }
    println!(
        "{} version(s) retired; current version {}",
        outcome.retirement.retired.len(),
        outcome.retirement.current
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
        let _ = sys::set_signal_mask(&previous);
    }
    if let Err(e) = spawned {
        log::error!("cannot start the key rotation check: {e}");
    }
}

/// Blocks SIGINT and SIGTERM in this thread; returns the mask before, `None` on failure.
fn block_termination_signals() -> Option<sys::SignalSet> {
    sys::block_signals(&sys::SignalSet::of(&[libc::SIGINT, libc::SIGTERM])).ok()
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

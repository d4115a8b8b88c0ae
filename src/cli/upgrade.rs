//! `ssefs upgrade`: opens the keystore and reports what the upgrade of the store's objects
//! did (the work itself is `ops::upgrade`).

use super::root_key::{KeyArgs, RootKeyError, StoreArgs, open_keystore};
use crate::ops::upgrade::{UpgradeError, upgrade_store};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug, Clone)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeCliError {
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    #[error("store {store}: {source}")]
    Upgrade {
        store: PathBuf,
        source: UpgradeError,
    },
    #[error("{0} object(s) not upgraded; the store still accepts the older format")]
    Failed(usize),
}

/// Upgrades the store; an error when any object could not be upgraded.
pub fn run(args: &UpgradeArgs) -> Result<(), UpgradeCliError> {
    let store = args.store.path()?;
    let keystore = Arc::new(open_keystore(store, &args.key)?);
    let report = upgrade_store(store, keystore).map_err(|source| UpgradeCliError::Upgrade {
        store: store.to_path_buf(),
        source,
    })?;
    for (rel, why) in &report.failed {
        eprintln!("ssefs: cannot upgrade {}: {why}", rel.display());
    }
    if args.json {
        let out = serde_json::json!({
            "upgraded": report.upgraded.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "failed": report.failed.iter().map(|(p, why)| serde_json::json!({
                "path": p.display().to_string(), "error": why,
            })).collect::<Vec<_>>(),
            "floor_raised": report.floor_raised,
        });
        println!("{out}");
    } else {
        for rel in &report.upgraded {
            println!("upgraded {}", rel.display());
        }
    }
    if !report.failed.is_empty() {
        return Err(UpgradeCliError::Failed(report.failed.len()));
    }
    if !args.json {
        println!(
            "{} object(s) upgraded; every object is on the current format{}",
            report.upgraded.len(),
            if report.floor_raised {
                " and older formats are now refused"
            } else {
                ""
            }
        );
    }
    Ok(())
}

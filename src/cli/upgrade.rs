//! `ssefs upgrade`: opens the keystore and reports what the upgrade of the store's objects
//! did (the work itself is `fs::upgrade`).

use super::root_key::open_keystore;
use crate::ops::upgrade::upgrade_store;
use std::path::Path;
use std::sync::Arc;

/// Upgrades the store; an error when any object could not be upgraded.
pub fn run(
    store: &Path,
    root_key: Option<&Path>,
    passphrase_fd: Option<i32>,
) -> Result<(), String> {
    let keystore = Arc::new(open_keystore(store, root_key, passphrase_fd)?);
    let report =
        upgrade_store(store, keystore).map_err(|e| format!("store {}: {e}", store.display()))?;
    for rel in &report.upgraded {
        println!("upgraded {}", rel.display());
    }
    for (rel, why) in &report.failed {
        eprintln!("ssefs: cannot upgrade {}: {why}", rel.display());
    }
    if !report.failed.is_empty() {
        return Err(format!(
            "{} object(s) not upgraded; the store still accepts the older format",
            report.failed.len()
        ));
    }
    println!(
        "{} object(s) upgraded; every object is on the current format{}",
        report.upgraded.len(),
        if report.floor_raised {
            " and older formats are now refused"
        } else {
            ""
        }
    );
    Ok(())
}

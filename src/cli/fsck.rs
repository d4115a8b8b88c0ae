//! `ssefs fsck --store STORE [--root-key FILE] [--repair] [--json]`: finds the root key, runs
//! the check of `ops::fsck` with a progress bar on a terminal, and prints the report as text or
//! JSON. Exit status: 0 clean, 4 problems left, 1 when the store cannot be checked.

use super::json::Json;
use super::outcome::Status;
use super::root_key::{KeyArgs, RootKeyError, StoreArgs, is_missing_key, load_root_key, open_with};
use super::status::{bucket_mount_line, bucket_mounts_json};
use crate::crypto::{Key256, KeyRef};
use crate::keystore::{Keystore, KeystoreError};
use crate::ops::fsck::{
    FsckError, FsckOptions, FsckReport, KeyLookup, Problem, ProblemKind, check_store,
};
use crate::store::bucket_lock::bucket_mounts;
use crate::store::layout::keystore_rel_path;
use clap::Args;
use std::io::IsTerminal;
use std::path::Path;

#[derive(Args, Debug, Clone)]
pub struct FsckArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The root key, to check blocks [without one: headers only].
    #[command(flatten)]
    pub key: KeyArgs,
    /// Remove leftover temporary files, and accept the block map of objects whose blocks all
    /// authenticate but whose map does not match (after a power loss); only while the store
    /// is not mounted.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FsckCliError {
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    #[error(transparent)]
    Check(#[from] FsckError),
    #[error("the store's object-authentication key: {0}")]
    StoreKey(#[source] KeystoreError),
    #[error("the audit log: {0}")]
    Audit(#[source] KeystoreError),
}

/// Runs fsck and prints its report: whether problems remain.
pub fn run(args: &FsckArgs) -> Result<Status, FsckCliError> {
    let (repair, json) = (args.repair, args.json);
    let store = args.store.path()?;
    let mut notes = Vec::new();
    let mut tampered = Vec::new();
    let keystore = open_keystore(store, &args.key, &mut notes, &mut tampered)?;
    if let Some(ks) = &keystore {
        let audit = ks.verify_audit().map_err(FsckCliError::Audit)?;
        tampered.extend(audit.problems);
    }
    let lookup = |key_ref: &KeyRef| -> Result<Option<Key256>, KeystoreError> {
        match &keystore {
            Some(ks) => ks.resolve(key_ref),
            None => Ok(None),
        }
    };
    let store_key = match &keystore {
        Some(ks) => Some(ks.store_key().map_err(FsckCliError::StoreKey)?),
        None => None,
    };
    let keys: KeyLookup<'_> = store_key.as_ref().map(|sk| (sk, &lookup as _));
    let bar = progress_bar(json);
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let mut report = check_store(store, keys, FsckOptions { repair }, &mut progress)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    notes.append(&mut report.notes);
    report.notes = notes;
    if args.store.named.is_some() {
        // A remote store: name it by its URL, not by the local copy checked.
        report.store = args.store.name().to_path_buf();
    }
    report
        .problems
        .extend(tampered.into_iter().map(|detail| Problem {
            path: keystore_rel_path(),
            kind: ProblemKind::KeystoreIntegrity,
            detail: format!("changed outside ssefs: {detail}"),
            repaired: false,
        }));
    if json {
        println!("{}", to_json(&report));
    } else {
        print_text(&report);
    }
    Ok(if report.is_clean() {
        Status::Success
    } else {
        Status::ProblemsLeft
    })
}

/// The keystore opened with the root key (a key file, or the passphrase of a passphrase
/// store), for checking blocks; `None` (with a note) when no root key was given and none is
/// found, or the keystore does not open (the check reports why).
fn open_keystore(
    store: &Path,
    key: &KeyArgs,
    notes: &mut Vec<String>,
    tampered: &mut Vec<String>,
) -> Result<Option<Keystore>, RootKeyError> {
    let given = key.root_key.is_some() || key.passphrase_fd.is_some();
    let root_key = match load_root_key(store, key) {
        Ok(root_key) => root_key,
        Err(e) if is_missing_key(&e) && !given => {
            notes.push(format!("{e}: headers checked, blocks not"));
            return Ok(None);
        }
        // A damaged keystore is reported by the check itself.
        Err(e @ RootKeyError::Store { .. }) => {
            notes.push(format!("{e}: headers checked, blocks not"));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match open_with(store, key, &root_key) {
        Ok(ks) => Ok(Some(ks)),
        Err(e @ RootKeyError::WrongRootKey { .. }) => Err(e),
        Err(RootKeyError::Store {
            source: KeystoreError::Tampered(problems),
            ..
        }) => {
            *tampered = problems;
            notes
                .push("the keystore was changed outside ssefs: headers checked, blocks not".into());
            Ok(None)
        }
        Err(e) => {
            notes.push(format!(
                "the keystore does not open ({e}): headers checked, blocks not"
            ));
            Ok(None)
        }
    }
}

fn progress_bar(json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("checking objects {bar:40} {pos}/{len} {eta}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

fn print_text(report: &FsckReport) {
    let store = report.store.display();
    match report.lock_holders.as_slice() {
        [] => println!("store {store}"),
        pids => println!(
            "store {store} (mounted: lock held by pid {})",
            super::status::pid_list(pids)
        ),
    }
    for mount in bucket_mounts(&report.store).unwrap_or_default() {
        println!("{}", bucket_mount_line(&mount));
    }
    for p in &report.problems {
        let path = p.path.display();
        if p.repaired {
            let what = match p.kind {
                ProblemKind::BlockMapMismatch => "block map accepted as found",
                _ => "removed",
            };
            println!("repaired {}: {path}: {what}", p.kind.as_str());
        } else {
            println!("{}: {path}: {}", p.kind.as_str(), p.detail);
        }
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    let left = report.unrepaired().count();
    println!(
        "{} bucket(s), {} object(s), {} verified ({} blocks); {}",
        report.buckets,
        report.objects,
        report.verified,
        report.blocks,
        match (left, report.problems.len() - left) {
            (0, 0) => "clean".to_string(),
            (0, fixed) => format!("clean after repairing {fixed} problem(s)"),
            (left, fixed) => format!("{left} problem(s), {fixed} repaired"),
        }
    );
}

fn to_json(report: &FsckReport) -> Json {
    let problems = report
        .problems
        .iter()
        .map(|p| {
            Json::object([
                ("path", Json::str(p.path.to_string_lossy())),
                ("kind", Json::str(p.kind.as_str())),
                ("detail", Json::str(p.detail.as_str())),
                ("repaired", Json::Bool(p.repaired)),
            ])
        })
        .collect();
    Json::object([
        ("store", Json::str(report.store.to_string_lossy())),
        ("clean", Json::Bool(report.is_clean())),
        (
            "lock_holders",
            Json::Array(report.lock_holders.iter().map(|&p| Json::uint(p)).collect()),
        ),
        (
            "bucket_mounts",
            bucket_mounts_json(&bucket_mounts(&report.store).unwrap_or_default()),
        ),
        ("buckets", Json::uint(report.buckets)),
        ("objects", Json::uint(report.objects)),
        ("verified", Json::uint(report.verified)),
        ("blocks", Json::uint(report.blocks)),
        ("problems", Json::Array(problems)),
        (
            "notes",
            Json::Array(report.notes.iter().map(|n| Json::str(n.as_str())).collect()),
        ),
    ])
}

//! `ssefs fsck --store STORE [--root-key FILE] [--repair] [--json]`: finds the root key, runs
//! the check of `fs::fsck` with a progress bar on a terminal, and prints the report as text or
//! JSON. Exit status: 0 clean, 4 problems left, 1 when the store cannot be checked.

use super::json::Json;
use super::root_key::existing_passphrase;
use super::rootkey::{RootKeyOrigin, root_key_location};
use crate::crypto::{Key256, KeyRef};
use crate::fs::fsck::{FsckOptions, FsckReport, KeyLookup, Problem, ProblemKind, check_store};
use crate::keystore::{
    KEYSTORE_FILE, Keystore, KeystoreError, STATE_DIR, keystore_dir, load_root_key_file,
    read_passphrase_kdf,
};
use std::io::IsTerminal;
use std::path::Path;

/// The exit status when problems remain.
pub const EXIT_PROBLEMS: i32 = 4;

/// Runs fsck and prints its report; returns the exit status.
pub fn run(
    store: &Path,
    root_key: Option<&Path>,
    passphrase_fd: Option<i32>,
    repair: bool,
    json: bool,
) -> Result<i32, String> {
    let mut notes = Vec::new();
    let mut tampered = Vec::new();
    let keystore = open_keystore(store, root_key, passphrase_fd, &mut notes, &mut tampered)?;
    if let Some(ks) = &keystore {
        let audit = ks.verify_audit().map_err(|e| e.to_string())?;
        tampered.extend(audit.problems);
    }
    let lookup = |key_ref: &KeyRef| -> Result<Option<Key256>, KeystoreError> {
        match &keystore {
            Some(ks) => ks.resolve(key_ref),
            None => Ok(None),
        }
    };
    let keys: KeyLookup<'_> = keystore.as_ref().map(|_| &lookup as _);
    let bar = progress_bar(json);
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let mut report = check_store(store, keys, FsckOptions { repair }, &mut progress)
        .map_err(|e| e.to_string())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    notes.append(&mut report.notes);
    report.notes = notes;
    report
        .problems
        .extend(tampered.into_iter().map(|detail| Problem {
            path: Path::new(STATE_DIR).join(KEYSTORE_FILE),
            kind: ProblemKind::KeystoreIntegrity,
            detail: format!("changed outside ssefs: {detail}"),
            repaired: false,
        }));
    if json {
        println!("{}", to_json(&report));
    } else {
        print_text(&report);
    }
    Ok(if report.is_clean() { 0 } else { EXIT_PROBLEMS })
}

/// The keystore opened with the root key (a key file, or the passphrase of a passphrase
/// store), for checking blocks; `None` (with a note) when no root key is to be found by
/// default or the keystore does not open (fsck reports why).
fn open_keystore(
    store: &Path,
    explicit: Option<&Path>,
    passphrase_fd: Option<i32>,
    notes: &mut Vec<String>,
    tampered: &mut Vec<String>,
) -> Result<Option<Keystore>, String> {
    if explicit.is_none() {
        // A damaged keystore is reported by the check itself; here it only means "no kdf".
        if let Ok(Some(kdf)) = read_passphrase_kdf(&keystore_dir(store)) {
            let passphrase = match existing_passphrase(store, passphrase_fd) {
                Ok(passphrase) => passphrase,
                // A descriptor named on the command line must work.
                Err(e) if passphrase_fd.is_some() => return Err(e.to_string()),
                Err(e) => {
                    notes.push(format!("{e}: headers checked, blocks not"));
                    return Ok(None);
                }
            };
            let key = kdf
                .derive(passphrase.expose_secret())
                .map_err(|e| e.to_string())?;
            return open_with(store, &key, "the passphrase", notes, tampered);
        }
    }
    let location = match root_key_location(explicit, store) {
        Ok(location) => location,
        Err(e) => {
            notes.push(format!("no root key ({e}): headers checked, blocks not"));
            return Ok(None);
        }
    };
    if location.origin != RootKeyOrigin::Option && !location.path.exists() {
        notes.push(format!(
            "no root key at {} (give --root-key): headers checked, blocks not",
            location.path.display()
        ));
        return Ok(None);
    }
    let key = load_root_key_file(&location.path).map_err(|e| e.to_string())?;
    let what = format!("the root key {}", location.path.display());
    open_with(store, &key, &what, notes, tampered)
}

fn open_with(
    store: &Path,
    key: &Key256,
    what: &str,
    notes: &mut Vec<String>,
    tampered: &mut Vec<String>,
) -> Result<Option<Keystore>, String> {
    match Keystore::open(&keystore_dir(store), key) {
        Ok(ks) => Ok(Some(ks)),
        Err(KeystoreError::WrongRootKey) => Err(format!(
            "{what} is not the one of store {}",
            store.display()
        )),
        Err(KeystoreError::Tampered(problems)) => {
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
        pids => println!("store {store} (mounted: lock held by pid {pids:?})"),
    }
    for p in &report.problems {
        let path = p.path.display();
        if p.repaired {
            println!("repaired {}: {path}: removed", p.kind.as_str());
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

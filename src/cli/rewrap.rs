//! `ssefs rewrap`: re-wraps the DEK of every affected object under the newest version of its
//! master key or CMK, rewriting only object headers. Through the live mount (the write-only
//! attribute `user.ssefs.rewrap`) when the store is mounted, else under the store lock with
//! `ops::rewrap`. This module walks, shows progress and reports.

use super::root_key::{KeyArgs, RootKeyError, StoreArgs, open_keystore};
use super::stat::{ObjectEncryption, collect_objects, get_attr, set_attr};
use super::status::store_mounts;
use crate::crypto::KeyRef;
use crate::fs::{AES256, KEY_VERSION_ATTR, KMS, REWRAP_ATTR};
use crate::keystore::Keystore;
use crate::ops::rewrap::{
    KeyFilter, NewestVersions, OfflineRewrap, Outcome, RewrapError as OfflineError,
};
use crate::ops::scan::inventory;
use crate::store::bucket_lock::{BucketLock, BucketMount};
use crate::store::{Store, StoreError};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Args, Debug, Clone)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub root_key: KeyArgs,
    /// Only the objects of this bucket.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Only the objects under this key: `master` (AES256 objects) or a CMK id or alias.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The counts a run ends with.
#[derive(Debug, Default)]
struct Tally {
    rewrapped: u64,
    already_current: u64,
    failures: Vec<(String, String)>,
    interrupted: bool,
}

impl Tally {
    /// Adds the counts of a run over another part of the store.
    fn add(&mut self, other: Tally) {
        self.rewrapped += other.rewrapped;
        self.already_current += other.already_current;
        self.failures.extend(other.failures);
        self.interrupted |= other.interrupted;
    }
}

fn key_version(key_ref: &KeyRef) -> u32 {
    match key_ref {
        KeyRef::None => 0,
        KeyRef::Master { version } | KeyRef::Cmk { version, .. } => *version,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    #[error(transparent)]
    Offline(#[from] OfflineError),
    #[error("--bucket {0:?} is not a bucket name (3-63 characters of a-z, 0-9 and -)")]
    InvalidBucketName(String),
    #[error("cannot watch for Ctrl-C: {0}")]
    Signals(std::io::Error),
    #[error("store {}: {source}", store.display())]
    Store {
        store: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} (a mount in another mount namespace? run ssefs rewrap there)")]
    Locked(StoreError),
    /// The run could not start (no such bucket, an unreadable store).
    #[error("{0}")]
    Start(String),
    #[error("interrupted; run the same command again to continue")]
    Interrupted,
    #[error("{0} object(s) failed")]
    Failed(usize),
}

pub fn run(args: &RewrapArgs) -> Result<(), RewrapError> {
    let store = args.store.path()?;
    let keystore = open_keystore(store, &args.root_key)?;
    let filter = KeyFilter::new(&keystore, args.key.as_deref())?;
    if let Some(bucket) = &args.bucket {
        if !crate::fs::is_bucket_name(bucket) {
            return Err(RewrapError::InvalidBucketName(bucket.clone()));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(RewrapError::Signals)?;
    }
    let root = store.canonicalize().map_err(|source| RewrapError::Store {
        store: store.to_path_buf(),
        source,
    })?;
    let mut newest = NewestVersions::new(&keystore);
    let mounts = store_mounts(&root);
    let tally = match mounts.whole.into_iter().next() {
        Some(mountpoint) => {
            let run = MountedRewrap {
                mountpoint,
                bucket: args.bucket.as_deref(),
                filter: &filter,
                single_bucket: false,
            };
            run.run(&mut newest, &stop).map_err(RewrapError::Start)?
        }
        None if !mounts.buckets.is_empty() => {
            let run = BesideBucketMounts {
                root: &root,
                mounts: &mounts.buckets,
                filter: &filter,
            };
            run.run(args.bucket.as_deref(), &mut newest, &keystore, &stop)
                .map_err(RewrapError::Start)?
        }
        None => {
            let store = Store::open_locked(&root).map_err(RewrapError::Locked)?;
            let run = OfflineRewrap::new(&store, &keystore, &filter)?;
            offline(&run, args.bucket.as_deref(), &mut newest, &stop).map_err(RewrapError::Start)?
        }
    };
    report(&tally, args.json);
    if tally.interrupted {
        return Err(RewrapError::Interrupted);
    }
    if !tally.failures.is_empty() {
        return Err(RewrapError::Failed(tally.failures.len()));
    }
    Ok(())
}

/// Runs `process` on every item with a progress bar (on a terminal), counting outcomes;
/// stops between objects when asked to.
fn run_all<T>(
    items: &[T],
    name: impl Fn(&T) -> String,
    mut process: impl FnMut(&T) -> Result<Outcome, String>,
    stop: &AtomicBool,
    tally: &mut Tally,
) {
    let bar = progress_bar(items.len() as u64);
    for item in items {
        if stop.load(Ordering::SeqCst) {
            tally.interrupted = true;
            break;
        }
        match process(item) {
            Ok(Outcome::Rewrapped) => tally.rewrapped += 1,
            Ok(Outcome::AlreadyCurrent) => tally.already_current += 1,
            Ok(Outcome::NotAffected) => {}
            Err(message) => {
                let path = name(item);
                bar.suspend(|| eprintln!("ssefs: {path}: {message}"));
                tally.failures.push((path, message));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
}

/// A rewrap through a live mount: the daemon rewrites each header under the object's lock.
struct MountedRewrap<'a> {
    mountpoint: PathBuf,
    bucket: Option<&'a str>,
    filter: &'a KeyFilter,
    /// The mount's root is one bucket (`ssefs mount --bucket`).
    single_bucket: bool,
}

impl MountedRewrap<'_> {
    fn run(&self, newest: &mut NewestVersions<'_>, stop: &AtomicBool) -> Result<Tally, String> {
        let buckets = match self.bucket {
            _ if self.single_bucket => vec![self.mountpoint.clone()],
            Some(bucket) => {
                let path = self.mountpoint.join(bucket);
                if !path.is_dir() {
                    return Err(format!("there is no bucket {bucket}"));
                }
                vec![path]
            }
            None => list_dirs(&self.mountpoint)?,
        };
        let (objects, errors) = collect_objects(&buckets);
        let mut tally = Tally::default();
        for e in errors {
            tally.failures.push((String::new(), e.to_string()));
        }
        run_all(
            &objects,
            |p| p.display().to_string(),
            |object| self.process(object, newest),
            stop,
            &mut tally,
        );
        Ok(tally)
    }

    fn process(&self, object: &Path, newest: &mut NewestVersions<'_>) -> Result<Outcome, String> {
        let before = ObjectEncryption::read(object).map_err(|e| e.to_string())?;
        let key_ref = match (before.algorithm.as_str(), before.key_version, before.key_id) {
            (AES256, Some(version), _) => KeyRef::Master { version },
            (KMS, Some(version), Some(key_id)) => KeyRef::Cmk { key_id, version },
            _ => KeyRef::None,
        };
        if !self.filter.selects(&key_ref) {
            return Ok(Outcome::NotAffected);
        }
        if newest.is_current(&key_ref).map_err(|e| e.to_string())? {
            return Ok(Outcome::AlreadyCurrent);
        }
        set_attr(object, REWRAP_ATTR, "1").map_err(|e| e.to_string())?;
        let after = get_attr(object, KEY_VERSION_ATTR)
            .map_err(|e| e.to_string())?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u32>().ok());
        if after == Some(key_version(&key_ref)) {
            Ok(Outcome::AlreadyCurrent)
        } else {
            Ok(Outcome::Rewrapped)
        }
    }
}

/// The directories (buckets) at a mount's root.
fn list_dirs(root: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", root.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// A rewrap of a store whose buckets are mounted on their own: each mounted bucket through
/// its mount, each other bucket in place under its bucket lock (so no mount starts on it
/// meanwhile).
struct BesideBucketMounts<'a> {
    root: &'a Path,
    mounts: &'a [BucketMount],
    filter: &'a KeyFilter,
}

impl BesideBucketMounts<'_> {
    fn run(
        &self,
        only: Option<&str>,
        newest: &mut NewestVersions<'_>,
        keystore: &Keystore,
        stop: &AtomicBool,
    ) -> Result<Tally, String> {
        let buckets = match only {
            Some(bucket) => vec![bucket.to_string()],
            None => {
                let store = Store::open(self.root).map_err(|e| e.to_string())?;
                inventory(&store).buckets
            }
        };
        let mut tally = Tally::default();
        for bucket in &buckets {
            if stop.load(Ordering::SeqCst) {
                tally.interrupted = true;
                break;
            }
            let mounted = self.mounts.iter().find(|m| &m.bucket == bucket);
            let part = match mounted.and_then(|m| m.mountpoint.clone()) {
                Some(mountpoint) => MountedRewrap {
                    mountpoint,
                    bucket: None,
                    filter: self.filter,
                    single_bucket: true,
                }
                .run(newest, stop)?,
                None => {
                    let (store, _lock) =
                        BucketLock::acquire(self.root, bucket).map_err(|e| e.to_string())?;
                    let run = OfflineRewrap::new(&store, keystore, self.filter)
                        .map_err(|e| e.to_string())?;
                    offline(&run, Some(bucket), newest, stop)?
                }
            };
            tally.add(part);
        }
        Ok(tally)
    }
}

/// A rewrap of an unmounted store, holding its lock: each header is rewritten in place.
fn offline(
    run: &OfflineRewrap<'_>,
    bucket: Option<&str>,
    newest: &mut NewestVersions<'_>,
    stop: &AtomicBool,
) -> Result<Tally, String> {
    let (objects, unreadable) = run.objects(bucket).map_err(|e| e.to_string())?;
    let mut tally = Tally::default();
    for (dir, e) in unreadable {
        tally.failures.push((dir.display().to_string(), e));
    }
    run_all(
        &objects,
        |rel| rel.display().to_string(),
        |rel| run.rewrap(rel, newest).map_err(|e| e.to_string()),
        stop,
        &mut tally,
    );
    Ok(tally)
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} objects, {elapsed} rewrap")
        {
            bar.set_style(style);
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

fn report(tally: &Tally, json: bool) {
    if json {
        let failures: Vec<_> = tally
            .failures
            .iter()
            .map(|(path, error)| serde_json::json!({"path": path, "error": error}))
            .collect();
        let out = serde_json::json!({
            "rewrapped": tally.rewrapped,
            "already_current": tally.already_current,
            "failed": tally.failures.len(),
            "interrupted": tally.interrupted,
            "failures": failures,
        });
        println!("{out}");
        return;
    }
    println!(
        "rewrapped {}, already current {}, failed {}{}",
        tally.rewrapped,
        tally.already_current,
        tally.failures.len(),
        if tally.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
}

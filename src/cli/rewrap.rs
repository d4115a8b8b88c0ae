//! `ssefs rewrap`: re-wraps the DEK of every affected object under the newest version of its
//! master key or CMK, rewriting only object headers. Through the live mount (the write-only
//! attribute `user.ssefs.rewrap`) when the store is mounted, else directly under the store lock.

use super::root_key::{KeyArgs, RootKeyError, StoreArgs, open_keystore};
use super::stat::{ObjectEncryption, collect_objects, get_attr, set_attr};
use super::status::mounts_of;
use crate::crypto::{KeyRef, Object, peek_header};
use crate::fs::scan::inventory;
use crate::fs::{
    AES256, Caller, KEY_VERSION_ATTR, KMS, KeyUse, REWRAP_ATTR, Rewrap, rewrap_object,
};
use crate::keystore::{Keystore, KeystoreError};
use crate::store::{Store, StoreError};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::fs::{File, FileTimes, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Args, Debug)]
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

/// Which objects `--key` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyFilter {
    Any,
    Master,
    Cmk(String),
}

impl KeyFilter {
    fn new(keystore: &Keystore, key: Option<&str>) -> Result<KeyFilter, RewrapError> {
        match key {
            None => Ok(KeyFilter::Any),
            Some("master") => Ok(KeyFilter::Master),
            Some(key) => keystore
                .cmk_info(key)
                .map(|info| KeyFilter::Cmk(info.key_id))
                .map_err(|source| RewrapError::Key {
                    key: key.to_string(),
                    source,
                }),
        }
    }

    /// Whether an object wrapped under `key_ref` is affected (unencrypted objects never are).
    fn selects(&self, key_ref: &KeyRef) -> bool {
        match (self, key_ref) {
            (_, KeyRef::None) => false,
            (KeyFilter::Any, _) => true,
            (KeyFilter::Master, KeyRef::Master { .. }) => true,
            (KeyFilter::Cmk(wanted), KeyRef::Cmk { key_id, .. }) => wanted == key_id,
            _ => false,
        }
    }
}

/// What happened to one object.
enum Outcome {
    Rewrapped,
    AlreadyCurrent,
    /// Not encrypted or under another key than `--key`.
    NotAffected,
}

/// The counts a run ends with.
#[derive(Debug, Default)]
struct Tally {
    rewrapped: u64,
    already_current: u64,
    failures: Vec<(String, String)>,
    interrupted: bool,
}

/// The newest version of each key, asked of the keystore once per run (a rotation during the
/// run is still honoured: the rewrap itself takes the newest version).
struct NewestVersions<'a> {
    keystore: &'a Keystore,
    known: HashMap<Option<String>, u32>,
}

impl NewestVersions<'_> {
    /// Whether `key_ref` already is the newest version of its key.
    fn is_current(&mut self, key_ref: &KeyRef) -> Result<bool, String> {
        let (key, version) = match key_ref {
            KeyRef::None => return Ok(true),
            KeyRef::Master { version } => (None, *version),
            KeyRef::Cmk { key_id, version } => (Some(key_id.clone()), *version),
        };
        if let Some(newest) = self.known.get(&key) {
            return Ok(version >= *newest);
        }
        // From the keystore's metadata: finding the newest version unwraps no key.
        let newest = match &key {
            None => self
                .keystore
                .master_versions()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|v| v.version)
                .max(),
            Some(key_id) => {
                self.keystore
                    .cmk_info(key_id)
                    .map_err(|e| e.to_string())?
                    .newest_version
            }
        }
        .unwrap_or(version);
        self.known.insert(key, newest);
        Ok(version >= newest)
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
    #[error("--key {key}: {source}")]
    Key { key: String, source: KeystoreError },
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
    let mut newest = NewestVersions {
        keystore: &keystore,
        known: HashMap::new(),
    };
    let tally = match mounts_of(&root).into_iter().next() {
        Some(mountpoint) => {
            let run = MountedRewrap {
                mountpoint,
                bucket: args.bucket.as_deref(),
                filter: &filter,
            };
            run.run(&mut newest, &stop).map_err(RewrapError::Start)?
        }
        None => {
            let store = Store::open_locked(&root).map_err(RewrapError::Locked)?;
            let run = OfflineRewrap {
                root: store.root().to_path_buf(),
                bucket: args.bucket.as_deref(),
                filter: &filter,
            };
            let tally = run
                .run(&mut newest, &keystore, &stop)
                .map_err(RewrapError::Start)?;
            drop(store);
            tally
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
}

impl MountedRewrap<'_> {
    fn run(&self, newest: &mut NewestVersions<'_>, stop: &AtomicBool) -> Result<Tally, String> {
        let buckets = match self.bucket {
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
        if newest.is_current(&key_ref)? {
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

/// A rewrap of an unmounted store, holding its lock: each header is rewritten in place.
struct OfflineRewrap<'a> {
    root: PathBuf,
    bucket: Option<&'a str>,
    filter: &'a KeyFilter,
}

impl OfflineRewrap<'_> {
    fn run(
        &self,
        newest: &mut NewestVersions<'_>,
        keystore: &Keystore,
        stop: &AtomicBool,
    ) -> Result<Tally, String> {
        let inv = inventory(&self.root).map_err(|e| e.to_string())?;
        if let Some(bucket) = self.bucket {
            if !inv.buckets.iter().any(|b| b == bucket) {
                return Err(format!("there is no bucket {bucket}"));
            }
        }
        let objects: Vec<&PathBuf> = inv
            .objects
            .iter()
            .filter(|rel| self.bucket.is_none_or(|b| rel.starts_with(b)))
            .collect();
        let mut tally = Tally::default();
        for (dir, e) in &inv.unreadable {
            tally.failures.push((dir.display().to_string(), e.clone()));
        }
        run_all(
            &objects,
            |rel| rel.display().to_string(),
            |rel| self.process(rel, newest, keystore),
            stop,
            &mut tally,
        );
        Ok(tally)
    }

    fn process(
        &self,
        rel: &Path,
        newest: &mut NewestVersions<'_>,
        keystore: &Keystore,
    ) -> Result<Outcome, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.root.join(rel))
            .map_err(|e| e.to_string())?;
        let header = peek_header(&file).map_err(|e| e.to_string())?;
        if !self.filter.selects(&header.key_ref) {
            return Ok(Outcome::NotAffected);
        }
        if newest.is_current(&header.key_ref)? {
            return Ok(Outcome::AlreadyCurrent);
        }
        let times = file_times(&file)?;
        let kek = keystore
            .resolve(&header.key_ref)
            .map_err(|e| e.to_string())?;
        let mut object = Object::open(file, kek.as_ref()).map_err(|e| e.to_string())?;
        // Offline, the operator holding the root key is the caller (and is audited as such).
        let path = || rel.display().to_string();
        let user = KeyUse::new(Caller::this_process(), &path);
        let outcome = rewrap_object(&mut object, keystore, &user).map_err(|e| e.to_string())?;
        // Not closed: closing would also end a write session a crash left open; the object
        // stays exactly as it was apart from its header.
        if let Err(e) = object.io().set_times(times) {
            eprintln!("ssefs: {}: cannot keep the times: {e}", rel.display());
        }
        Ok(match outcome {
            Rewrap::Rewrapped { .. } => Outcome::Rewrapped,
            Rewrap::AlreadyCurrent => Outcome::AlreadyCurrent,
            Rewrap::NotEncrypted => Outcome::NotAffected,
        })
    }
}

/// The access and modification times of a backing file, to put back after the rewrite.
fn file_times(file: &File) -> Result<FileTimes, String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let accessed = meta.accessed().map_err(|e| e.to_string())?;
    let modified = meta.modified().map_err(|e| e.to_string())?;
    Ok(FileTimes::new()
        .set_accessed(accessed)
        .set_modified(modified))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_filter_selects_encrypted_objects_of_its_key_only() {
        let master = KeyRef::Master { version: 1 };
        let cmk = KeyRef::Cmk {
            key_id: "k".into(),
            version: 2,
        };
        assert!(!KeyFilter::Any.selects(&KeyRef::None));
        assert!(KeyFilter::Any.selects(&master) && KeyFilter::Any.selects(&cmk));
        assert!(KeyFilter::Master.selects(&master) && !KeyFilter::Master.selects(&cmk));
        assert!(KeyFilter::Cmk("k".into()).selects(&cmk));
        assert!(!KeyFilter::Cmk("other".into()).selects(&cmk));
        assert!(!KeyFilter::Cmk("k".into()).selects(&master));
    }
}

//! `ssefs reencrypt`: brings every object under the given paths under a chosen setting or its
//! bucket's current default, one atomic re-encryption per object, through the attributes of
//! a live mount. Never touches the store or the keystore directly.

use super::stat::{
    MountPathError, ObjectEncryption, bucket_of, collect_objects, get_attr, mount_root_of,
    remove_attr, set_attr,
};
use crate::crypto::Algorithm;
use crate::fs::{AES256, KMS, SSE_ATTR, SSE_KEY_ID_ATTR};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the objects should be encrypted under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Aes256,
    /// `KMS` under the named CMK (id or alias), or the default CMK.
    Kms(Option<String>),
    /// Each bucket's current rule; objects in buckets without one are skipped.
    BucketDefault,
}

impl Target {
    /// The target the options ask for: a key id alone means `KMS`.
    pub fn from_options(
        algorithm: Option<Algorithm>,
        kms_key_id: Option<String>,
    ) -> Result<Target, ReencryptError> {
        match (algorithm, kms_key_id) {
            (None, None) => Ok(Target::BucketDefault),
            (Some(Algorithm::Aes256), None) => Ok(Target::Aes256),
            (Some(Algorithm::Aes256), Some(_)) => Err(ReencryptError::KeyIdWithAes256),
            (Some(Algorithm::Kms) | None, key) => Ok(Target::Kms(key)),
            (Some(Algorithm::None), _) => Err(ReencryptError::NoAlgorithm),
        }
    }
}

/// A bucket's rule as its attributes show it: `(algorithm, key id)`.
type BucketRuleAttrs = Option<(String, Option<String>)>;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reencrypted,
    AlreadyMatching,
    /// Skipped, with the note to print once.
    Skipped(String),
}

/// The counts a run ends with.
#[derive(Debug, Default)]
struct Tally {
    reencrypted: u64,
    already_matching: u64,
    skipped: u64,
    failures: Vec<(PathBuf, String)>,
    notes: BTreeSet<String>,
    interrupted: bool,
}

struct Run {
    target: Target,
    buckets: HashMap<PathBuf, BucketRuleAttrs>,
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Why one object was not re-encrypted (reported, and the run goes on).
#[derive(Debug, thiserror::Error)]
enum ObjectError {
    #[error(transparent)]
    Path(#[from] MountPathError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The mount answers `EMLINK`.
    #[error(
        "{}: the object has more than one hard link, and an object with several links cannot \
         be re-encrypted in place: re-encryption writes a new object and swaps it in, which \
         would leave the other links with the old contents. Copy it to a new file (cp), \
         re-encrypt or replace the original with the copy, and link again (or remove the \
         other links first)",
        .0.display()
    )]
    MultipleLinks(PathBuf),
}

/// An I/O error on `path`, with the reason a hard-linked object is refused.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ObjectError + '_ {
    move |source| {
        if source.raw_os_error() == Some(libc::EMLINK) {
            ObjectError::MultipleLinks(path.to_path_buf())
        } else {
            ObjectError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

impl Run {
    fn bucket_rule(&mut self, object: &Path) -> Result<(PathBuf, BucketRuleAttrs), ObjectError> {
        let bucket = bucket_of(object)?;
        if let Some(rule) = self.buckets.get(&bucket) {
            return Ok((bucket, rule.clone()));
        }
        let algorithm = text(get_attr(&bucket, SSE_ATTR).map_err(io_error(&bucket))?);
        let key_id = text(get_attr(&bucket, SSE_KEY_ID_ATTR).map_err(io_error(&bucket))?);
        let rule = algorithm.map(|a| (a, key_id));
        self.buckets.insert(bucket.clone(), rule.clone());
        Ok((bucket, rule))
    }

    /// Re-encrypts one object if needed; the file ID tells whether the mount rewrote it.
    fn process(&mut self, object: &Path) -> Result<Outcome, ObjectError> {
        mount_root_of(object)?;
        let before = ObjectEncryption::read(object).map_err(io_error(object))?;
        let io = io_error(object);
        match self.target.clone() {
            Target::Aes256 => {
                if before.algorithm == AES256 {
                    return Ok(Outcome::AlreadyMatching);
                }
                set_attr(object, SSE_ATTR, AES256).map_err(&io)?;
            }
            Target::Kms(None) => set_attr(object, SSE_ATTR, KMS).map_err(&io)?,
            Target::Kms(Some(key_id)) => {
                if before.algorithm == KMS && before.key_id.as_deref() == Some(&key_id) {
                    return Ok(Outcome::AlreadyMatching);
                }
                // Two steps: a key id can only be set on a KMS object. Each step is atomic,
                // and a re-run finishes an object left after the first.
                if before.algorithm != KMS {
                    set_attr(object, SSE_ATTR, KMS).map_err(&io)?;
                }
                set_attr(object, SSE_KEY_ID_ATTR, &key_id).map_err(&io)?;
            }
            Target::BucketDefault => {
                let (bucket, rule) = self.bucket_rule(object)?;
                let Some((algorithm, key_id)) = rule else {
                    return Ok(Outcome::Skipped(format!(
                        "bucket {} has no default encryption rule: its objects are skipped \
                         (give --algorithm to choose one)",
                        bucket.display()
                    )));
                };
                if algorithm == AES256 && before.algorithm == AES256 {
                    return Ok(Outcome::AlreadyMatching);
                }
                if key_id.is_some() && before.key_id == key_id {
                    return Ok(Outcome::AlreadyMatching);
                }
                // Removing the per-object setting brings the object under the bucket's rule
                // in one step.
                remove_attr(object, SSE_ATTR).map_err(&io)?;
            }
        }
        let after = ObjectEncryption::read(object).map_err(io_error(object))?;
        if after.file_id != before.file_id {
            Ok(Outcome::Reencrypted)
        } else {
            Ok(Outcome::AlreadyMatching)
        }
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} objects, {elapsed} {wide_msg}")
        {
            bar.set_style(style);
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

#[derive(Debug, thiserror::Error)]
pub enum ReencryptError {
    #[error("--kms-key-id goes only with --algorithm KMS")]
    KeyIdWithAes256,
    #[error("--algorithm takes AES256 or KMS")]
    NoAlgorithm,
    #[error("cannot watch for Ctrl-C: {0}")]
    Signals(std::io::Error),
    #[error("interrupted; run the same command again to continue")]
    Interrupted,
    #[error("{0} object(s) failed")]
    Failed(usize),
}

/// Runs `ssefs reencrypt`; fails when any object failed or the run was interrupted.
pub fn run(
    paths: &[PathBuf],
    algorithm: Option<Algorithm>,
    kms_key_id: Option<String>,
    json: bool,
) -> Result<(), ReencryptError> {
    let target = Target::from_options(algorithm, kms_key_id)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(ReencryptError::Signals)?;
    }
    let (objects, errors) = collect_objects(paths);
    let mut tally = Tally::default();
    record_walk_errors(&mut tally, errors);
    let mut run = Run {
        target,
        buckets: HashMap::new(),
    };
    let bar = progress_bar(objects.len() as u64);
    for object in &objects {
        if stop.load(Ordering::SeqCst) {
            tally.interrupted = true;
            break;
        }
        bar.set_message(object.display().to_string());
        match run.process(object) {
            Ok(Outcome::Reencrypted) => tally.reencrypted += 1,
            Ok(Outcome::AlreadyMatching) => tally.already_matching += 1,
            Ok(Outcome::Skipped(note)) => {
                tally.skipped += 1;
                tally.notes.insert(note);
            }
            Err(e) => {
                bar.suspend(|| eprintln!("ssefs: {e}"));
                tally.failures.push((object.clone(), e.to_string()));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    report(&tally, json);
    if tally.interrupted {
        return Err(ReencryptError::Interrupted);
    }
    if !tally.failures.is_empty() {
        return Err(ReencryptError::Failed(tally.failures.len()));
    }
    Ok(())
}

fn record_walk_errors(tally: &mut Tally, errors: Vec<MountPathError>) {
    for e in errors {
        let path = match &e {
            MountPathError::Io { path, .. } => path.clone(),
            MountPathError::NotOnMount(path) | MountPathError::NotInBucket(path) => path.clone(),
        };
        eprintln!("ssefs: {e}");
        tally.failures.push((path, e.to_string()));
    }
}

fn report(tally: &Tally, json: bool) {
    if json {
        let failures: Vec<_> = tally
            .failures
            .iter()
            .map(|(path, error)| serde_json::json!({"path": path.display().to_string(), "error": error}))
            .collect();
        let out = serde_json::json!({
            "reencrypted": tally.reencrypted,
            "already_matching": tally.already_matching,
            "skipped": tally.skipped,
            "failed": tally.failures.len(),
            "interrupted": tally.interrupted,
            "failures": failures,
            "notes": tally.notes,
        });
        println!("{out}");
        return;
    }
    for note in &tally.notes {
        println!("note: {note}");
    }
    println!(
        "re-encrypted {}, already matching {}, skipped {}, failed {}{}",
        tally.reencrypted,
        tally.already_matching,
        tally.skipped,
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
    fn options_choose_the_target() {
        let target = |a, k: Option<&str>| Target::from_options(a, k.map(str::to_string)).ok();
        assert_eq!(target(None, None), Some(Target::BucketDefault));
        assert_eq!(target(Some(Algorithm::Aes256), None), Some(Target::Aes256));
        assert_eq!(target(Some(Algorithm::Kms), None), Some(Target::Kms(None)));
        assert_eq!(target(None, Some("k")), Some(Target::Kms(Some("k".into()))));
        assert_eq!(target(Some(Algorithm::Aes256), Some("k")), None);
        assert_eq!(target(Some(Algorithm::None), None), None);
    }
}

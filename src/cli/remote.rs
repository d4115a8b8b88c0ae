//! Commands on a store in an object store (`s3://BUCKET[/PREFIX]`): connecting with
//! `--endpoint`/`--region` and the standard credentials, `ssefs init` of a new remote store,
//! the keystore-only commands, which run unchanged on a local working copy of the keystore
//! that is put back with `If-Match` afterwards, and the commands that read or rewrite
//! objects, which run on a full local copy whose changed objects are put back the same way.
//! The mount is `mount_remote.rs`.

use crate::store::remote::{
    CredentialsError, DEFAULT_REGION, Endpoint, RemoteConfig, RemoteError, RemoteStore, StoreUrl,
    UrlError, WorkingCopy, WorkingCopyError, find_credentials, is_remote,
};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How long a keystore command waits for a mount on this host to take its change.
const MOUNT_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The environment variable giving the endpoint when `--endpoint` is not given.
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL";
/// The environment variable giving the region when `--region` is not given.
pub const REGION_ENV: &str = "AWS_REGION";

#[derive(Debug, thiserror::Error)]
pub enum RemoteCliError {
    #[error("`ssefs {command}` is not yet supported for remote stores ({store})")]
    Unsupported {
        command: &'static str,
        store: String,
    },
    #[error(
        "{store} is a remote store: give the object store's endpoint with --endpoint URL \
         (or ${ENDPOINT_ENV})"
    )]
    NoEndpoint { store: String },
    #[error(
        "--endpoint and --region are for a store in an object store (s3://BUCKET[/PREFIX]); \
         {store} is a local directory"
    )]
    NotRemote { store: String },
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    WorkingCopy(#[from] WorkingCopyError),
    #[error(transparent)]
    Init(#[from] super::init::InitError),
    #[error(transparent)]
    Mirror(#[from] crate::store::remote::MirrorError),
    #[error(transparent)]
    Lease(#[from] crate::store::remote::LeaseError),
    #[error("{0}")]
    HostsBehind(String),
}

impl RemoteCliError {
    /// Whether the command lost a race for the keystore (another host changed it).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            RemoteCliError::WorkingCopy(WorkingCopyError::Conflict { .. })
                | RemoteCliError::Lease(crate::store::remote::LeaseError::Held { .. })
        )
    }

    /// Whether the command does not work on remote stores yet.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, RemoteCliError::Unsupported { .. })
    }
}

/// Whether a store argument names a remote store.
pub fn names_remote(store: &Path) -> bool {
    store.to_str().is_some_and(is_remote)
}

/// Whether a command that reads or rewrites objects runs on a full copy of a remote store
/// ([`RemoteCopy`]).
pub fn runs_on_a_copy(command: &str) -> bool {
    matches!(
        command,
        "fsck"
            | "rewrap"
            | "upgrade"
            | "rotate-master"
            | "bucket-encryption"
            | "keystore restore"
            | "keystore replaced"
            | "change-root-key"
    )
}

/// The error of a command that does not work on remote stores yet.
pub fn unsupported(command: &'static str, store: &Path) -> RemoteCliError {
    RemoteCliError::Unsupported {
        command,
        store: store.display().to_string(),
    }
}

/// The error of `--endpoint` or `--region` given with a local store.
pub fn not_remote(store: &Path) -> RemoteCliError {
    RemoteCliError::NotRemote {
        store: store.display().to_string(),
    }
}

/// A client of the remote store `store`, at `endpoint` (else `$AWS_ENDPOINT_URL`) in
/// `region` (else `$AWS_REGION`, else us-east-1), with the credentials of the environment.
pub fn connect(
    store: &Path,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<RemoteStore, RemoteCliError> {
    let text = store.to_str().unwrap_or_default();
    let url = StoreUrl::parse(text)?;
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = match endpoint
        .map(str::to_string)
        .or_else(|| from_env(ENDPOINT_ENV))
    {
        Some(endpoint) => Endpoint::parse(&endpoint)?,
        None => {
            return Err(RemoteCliError::NoEndpoint {
                store: url.to_string(),
            });
        }
    };
    let mut config = RemoteConfig::new(url, endpoint);
    config.region = region
        .map(str::to_string)
        .or_else(|| from_env(REGION_ENV))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let credentials = find_credentials(&|name| std::env::var_os(name))?;
    Ok(RemoteStore::connect(config, &credentials)?)
}

/// A keystore-only command running on a working copy of a remote store's keystore.
#[derive(Debug)]
pub struct RemoteKeystore {
    remote: RemoteStore,
    copy: WorkingCopy,
}

impl RemoteKeystore {
    /// Downloads the keystore of `store` into a working copy.
    pub fn begin(
        store: &Path,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<RemoteKeystore, RemoteCliError> {
        let remote = connect(store, endpoint, region)?;
        let copy = remote.checkout_keystore()?;
        Ok(RemoteKeystore { remote, copy })
    }

    /// The directory the command takes as its store.
    pub fn local_store(&self) -> PathBuf {
        self.copy.root().to_path_buf()
    }

    /// The heartbeats of the mounts of this store (for `ssefs status`).
    pub fn hosts(&self) -> Result<Vec<crate::store::remote::HostBeat>, RemoteCliError> {
        Ok(crate::store::remote::hosts(&self.remote)?)
    }

    /// Puts the keystore back if the command changed it (only over the version read);
    /// then a mount of the store on this host, if there is one, is asked to take it at once
    /// (mounts elsewhere take it within their `keystore_refresh`), as a local store's
    /// mount sees a change at once.
    pub fn finish(self) -> Result<(), RemoteCliError> {
        let store_id = crate::keystore::inspect::summarize_file(&self.copy.keystore())
            .ok()
            .map(|summary| summary.store_id.to_string());
        if !self.remote.checkin_keystore(&self.copy)? {
            return Ok(());
        }
        let Some(store_id) = store_id else {
            return Ok(());
        };
        if crate::store::remote::request_sync(&store_id, MOUNT_SYNC_WAIT) == Some(false) {
            eprintln!(
                "ssefs: the mount of {} on this host has not taken the change yet; it does \
                 within its keystore_refresh interval",
                self.remote.url()
            );
        }
        Ok(())
    }
}

/// Runs `run` with this process's standard output going to a temporary file, and returns
/// its result and what it printed (for a command that may be run again, whose output is
/// shown once it counts).
pub fn capture_stdout<T>(run: impl FnOnce() -> T) -> std::io::Result<(T, Vec<u8>)> {
    use std::io::{Read, Seek, Write};
    let saved = rustix::io::dup(std::io::stdout())?;
    let mut file = tempfile_in_runtime_dir()?;
    std::io::stdout().flush()?;
    rustix::stdio::dup2_stdout(&file)?;
    let result = run();
    let _ = std::io::stdout().flush();
    rustix::stdio::dup2_stdout(&saved)?;
    let mut output = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut output)?;
    Ok((result, output))
}

/// Writes what [`capture_stdout`] captured to the standard output.
pub fn print_captured(output: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(output);
    let _ = out.flush();
}

/// An unnamed temporary file (gone when closed).
fn tempfile_in_runtime_dir() -> std::io::Result<std::fs::File> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
}

/// A command that reads or rewrites objects, running on a full local copy of a remote
/// store: every object downloaded into a private directory, the command run unchanged on
/// it, then the objects it changed uploaded (each only over the version downloaded) and
/// the keystore put back. It costs a download of the whole store; a command that fails
/// uploads nothing.
#[derive(Debug)]
pub struct RemoteCopy {
    mirror: crate::store::remote::Mirror,
    snapshot: crate::store::remote::Snapshot,
    _scratch: WorkingCopy,
    /// Held from before the download until the last upload.
    _lease: Option<crate::store::remote::Lease>,
}

/// How a command on a full copy excludes others of its kind on every host.
#[derive(Debug, Clone, Copy)]
pub struct Exclusive {
    /// What the command does, for whoever finds the lease held.
    pub what: &'static str,
    /// It retires master key versions: every live mount must have taken the newest master
    /// key first (so none puts new objects under a version being retired).
    pub retires: bool,
}

/// The lease that makes master key retirement and rewrap run on one host at a time.
const ROTATION_LEASE: &str = "rotation";
/// How long a retirement waits for every live mount to take the newest master key.
const HOSTS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Overrides [`HOSTS_WAIT`] (seconds).
pub const HOSTS_WAIT_ENV: &str = "SSEFS_HOSTS_WAIT";

/// Waits until every live mount of the store (its heartbeat not expired) puts new objects
/// under the newest master key version of the store's keystore.
fn wait_for_hosts_at_newest(remote: &RemoteStore) -> Result<(), RemoteCliError> {
    let copy = remote.checkout_keystore()?;
    let summary = crate::keystore::inspect::summarize_file(&copy.keystore())
        .map_err(|e| RemoteCliError::HostsBehind(format!("the keystore cannot be read: {e}")))?;
    let Some(newest) = summary.master_keys.iter().map(|m| m.version).max() else {
        return Ok(());
    };
    let wait = std::env::var(HOSTS_WAIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(HOSTS_WAIT, std::time::Duration::from_secs);
    let start = std::time::Instant::now();
    loop {
        let now = crate::store::remote::unix_now();
        let behind: Vec<String> = crate::store::remote::hosts(remote)?
            .into_iter()
            .filter(|h| !h.expired(now) && h.master_version.is_none_or(|v| v < newest))
            .map(|h| {
                format!(
                    "{} pid {} (mounted on {}) puts new objects under master key version {}",
                    h.host,
                    h.pid,
                    h.mountpoint,
                    h.master_version
                        .map_or("unknown".to_string(), |v| v.to_string())
                )
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= wait {
            return Err(RemoteCliError::HostsBehind(format!(
                "not every mount has taken master key version {newest} yet, so an old version \
                 may still get new objects: {}; nothing was retired (a mount takes it within \
                 its keystore_refresh; unmount one that does not, then run this again)",
                behind.join("; ")
            )));
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

impl RemoteCopy {
    /// Downloads the keystore and every object of `store`; with `exclusive`, under the
    /// store's rotation lease (and, for a retirement, once every live mount took the newest
    /// master key).
    pub fn begin(
        store: &Path,
        endpoint: Option<&str>,
        region: Option<&str>,
        exclusive: Option<Exclusive>,
    ) -> Result<RemoteCopy, RemoteCliError> {
        let remote = std::sync::Arc::new(connect(store, endpoint, region)?);
        let lease = match exclusive {
            Some(ex) => Some(crate::store::remote::Lease::acquire(
                std::sync::Arc::clone(&remote),
                ROTATION_LEASE,
                ex.what,
                crate::store::remote::LEASE_TERM,
            )?),
            None => None,
        };
        if exclusive.is_some_and(|ex| ex.retires) {
            wait_for_hosts_at_newest(&remote)?;
        }
        let scratch = WorkingCopy::empty()?;
        let dir = scratch.root().join("cache");
        let mirror = crate::store::remote::Mirror::open(remote, |_| Ok(dir))?;
        let snapshot = mirror.download_all()?;
        Ok(RemoteCopy {
            mirror,
            snapshot,
            _scratch: scratch,
            _lease: lease,
        })
    }

    /// The directory the command takes as its store.
    pub fn local_store(&self) -> PathBuf {
        self.mirror.store_root()
    }

    /// Uploads what the command changed, then the keystore if it changed.
    pub fn finish(self) -> Result<(), RemoteCliError> {
        let report = self.mirror.push_changes(&self.snapshot)?;
        if report.uploaded + report.removed > 0 {
            log::info!(
                "{} object(s) uploaded and {} removed in the object store",
                report.uploaded,
                report.removed
            );
        }
        if !report.conflicts.is_empty() {
            let shown: Vec<&str> = report
                .conflicts
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            return Err(RemoteCliError::Mirror(
                crate::store::remote::MirrorError::Other(format!(
                    "{} object(s) were changed by another host while this command ran and \
                     were left as that host made them ({}{}); the keystore was not changed: \
                     run the command again to finish (what is done stays done)",
                    report.conflicts.len(),
                    shown.join(", "),
                    if report.conflicts.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                )),
            ));
        }
        if self.mirror.push_keystore()? {
            let keystore = crate::store::layout::keystore_path(&self.mirror.store_root());
            if let Ok(summary) = crate::keystore::inspect::summarize_file(&keystore) {
                let id = summary.store_id.to_string();
                crate::store::remote::request_sync(&id, MOUNT_SYNC_WAIT);
            }
        }
        Ok(())
    }
}

/// `ssefs init s3://…`: makes the store (keystore and root key) in a private working
/// directory with `make` (the local init), then uploads the keystore with `If-None-Match`.
/// A root key file `make` created is removed again if the upload fails. Returns what
/// `make` returned.
pub fn init<T>(
    store: &Path,
    endpoint: Option<&str>,
    region: Option<&str>,
    make: impl FnOnce(&Path) -> Result<(T, Option<PathBuf>), super::init::InitError>,
) -> Result<(T, StoreUrl), RemoteCliError> {
    let remote = connect(store, endpoint, region)?;
    remote.check_new_store()?;
    let copy = WorkingCopy::empty()?;
    let (made, created_key) = make(copy.root())?;
    if let Err(e) = remote.create_store(copy.root()) {
        if let Some(key) = created_key {
            let _ = std::fs::remove_file(key);
        }
        return Err(e.into());
    }
    Ok((made, remote.url().clone()))
}

/// The options of `ssefs init` for a remote store.
#[derive(Debug)]
pub struct InitArgs<'a> {
    pub store: &'a Path,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub root_key: Option<&'a Path>,
    pub passphrase: bool,
    pub passphrase_fd: Option<i32>,
}

/// Runs `ssefs init s3://…` and prints its one line.
pub fn run_init(args: &InitArgs<'_>) -> Result<(), RemoteCliError> {
    if args.passphrase {
        let passphrase = super::root_key::new_passphrase(
            args.passphrase_fd,
            "give the passphrase with --passphrase-fd N or run on a terminal",
        )
        .map_err(super::init::InitError::from)?;
        let (store_id, url) = init(args.store, args.endpoint, args.region, |dir| {
            let id = super::init::init_with_passphrase(dir, passphrase.expose_secret())?;
            Ok((id, None))
        })?;
        println!(
            "created store {url} (id {store_id}) whose root key is derived from your \
             passphrase; without the passphrase nothing in the store can be read"
        );
        return Ok(());
    }
    let (done, url) = init(args.store, args.endpoint, args.region, |dir| {
        let done = super::init::init(dir, args.root_key, &|name| std::env::var_os(name))?;
        let created = done.root_key_created.then(|| done.root_key.path.clone());
        Ok((done, created))
    })?;
    println!(
        "created store {url} (id {}) with the {} root key {}; keep the root key apart from \
         the store and back it up: without it nothing in the store can be read",
        done.store_id,
        if done.root_key_created {
            "new"
        } else {
            "existing"
        },
        done.root_key.path.display(),
    );
    Ok(())
}

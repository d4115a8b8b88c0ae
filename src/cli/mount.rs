//! `ssefs mount STORE MOUNTPOINT`: parses `-o` options, checks everything that can be checked
//! before mounting (store, lock, root key, mountpoint), then serves the mount in the foreground.

use super::root_key::{KeyArgs, RootKeyError, load_root_key, open_with};
use crate::fs::{BucketFs, DefaultSse, FsOptions};
use crate::fuse::MountConfig;
use crate::keystore::{Keystore, KeystoreError};
use crate::store::bucket_lock::{BucketLock, bucket_mounts};
use crate::store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a mount destroys the CMKs whose deletion date has passed.
const DELETION_INTERVAL: Duration = Duration::from_secs(60);

/// The parsed `-o` options of `ssefs mount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    pub default_sse: DefaultSse,
    pub fsname: Option<String>,
    pub auto_unmount: bool,
    pub noexec: bool,
    pub noatime: bool,
    /// Mount over a mountpoint that holds files (hiding them while mounted).
    pub nonempty: bool,
    /// Rotate the master key when the current one is this many days old (0: never).
    pub master_rotation_days: u32,
    /// Mount this bucket as the root (`bucket=NAME`) instead of the whole store.
    pub bucket: Option<String>,
    /// Make the bucket first if it does not exist (`create_bucket`).
    pub create_bucket: bool,
    /// A remote store's cache directory (`cache_dir=DIR`).
    pub cache_dir: Option<PathBuf>,
    /// A remote store's cache size in bytes (`cache_size=SIZE`).
    pub cache_size: Option<u64>,
    /// A remote store's endpoint and region (`endpoint=URL`, `region=R`), for fstab.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// A remote store's keystore sync interval in seconds (`keystore_refresh=SECS`).
    pub keystore_refresh: Option<u64>,
    /// How long a remote store's mount trusts what it knows of an object or a directory
    /// before asking the store again, in seconds (`metadata_ttl=SECS`).
    pub metadata_ttl: Option<u64>,
    /// Take FUSE requests through io_uring when the kernel offers it (`noio_uring`: never).
    pub io_uring: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            allow_root: false,
            default_permissions: true,
            read_only: false,
            default_sse: DefaultSse::Aes256,
            fsname: None,
            auto_unmount: false,
            noexec: false,
            noatime: false,
            nonempty: false,
            master_rotation_days: super::rotate::DEFAULT_MASTER_ROTATION_DAYS,
            bucket: None,
            create_bucket: false,
            cache_dir: None,
            cache_size: None,
            endpoint: None,
            region: None,
            keystore_refresh: None,
            metadata_ttl: None,
            io_uring: true,
        }
    }
}

/// The cache size of a remote store when none is given.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

/// Parses a number of seconds of the option `option`, at least `min`, at most a day.
fn parse_seconds(option: &str, value: &str, min: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=86_400).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid {option:?}: give whole seconds from {min} to 86400"
        )),
    }
}

/// Parses a size: bytes, or a number with a suffix K, M, G or T (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, shift) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("invalid size {text:?} (bytes, or K, M, G, T)")),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("invalid size {text:?} (bytes, or K, M, G, T)"))
}

impl MountOptions {
    /// Parses every `-o` argument (each a comma-separated list); unknown options are errors.
    /// Options meant for mount(8) or systemd (`defaults`, `nofail`, `_netdev`, `auto`,
    /// `noauto`, `x-*`) are accepted and ignored, so fstab lines work.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, String> {
        let mut options = MountOptions::default();
        for arg in args {
            for option in arg.as_ref().split(',').filter(|o| !o.is_empty()) {
                options.apply(option)?;
            }
        }
        if options.allow_other && options.allow_root {
            return Err("allow_other and allow_root cannot be used together".to_string());
        }
        Ok(options)
    }

    fn apply(&mut self, option: &str) -> Result<(), String> {
        match option.split_once('=') {
            Some(("default_sse", value)) => self.default_sse = value.parse()?,
            Some(("fsname", value)) if !value.is_empty() => self.fsname = Some(value.to_string()),
            Some(("bucket", value)) => {
                crate::fs::validate_bucket_name(std::ffi::OsStr::new(value))
                    .map_err(|e| e.to_string())?;
                self.bucket = Some(value.to_string());
            }
            Some(("master_rotation_days", value)) => {
                self.master_rotation_days = value.parse().map_err(|_| {
                    format!("invalid master_rotation_days {value:?} (days, 0 = never)")
                })?;
            }
            Some(("cache_dir", value)) if !value.is_empty() => {
                self.cache_dir = Some(PathBuf::from(value));
            }
            Some(("cache_size", value)) => self.cache_size = Some(parse_size(value)?),
            Some(("keystore_refresh", value)) => {
                self.keystore_refresh = Some(parse_seconds(option, value, 1)?);
            }
            Some(("metadata_ttl", value)) => {
                self.metadata_ttl = Some(parse_seconds(option, value, 0)?);
            }
            Some(("endpoint", value)) if !value.is_empty() => {
                self.endpoint = Some(value.to_string());
            }
            Some(("region", value)) if !value.is_empty() => self.region = Some(value.to_string()),
            Some((name, _)) if name.starts_with("x-") => {}
            Some(_) => return Err(format!("unknown mount option {option:?}")),
            None => match option {
                "allow_other" => self.allow_other = true,
                "allow_root" => self.allow_root = true,
                "default_permissions" => self.default_permissions = true,
                "ro" => self.read_only = true,
                "rw" => self.read_only = false,
                "auto_unmount" => self.auto_unmount = true,
                "noexec" => self.noexec = true,
                "exec" => self.noexec = false,
                "noatime" => self.noatime = true,
                "create_bucket" => self.create_bucket = true,
                "atime" => self.noatime = false,
                "nonempty" => self.nonempty = true,
                "io_uring" => self.io_uring = true,
                "noio_uring" => self.io_uring = false,
                "nodev" | "nosuid" | "defaults" | "nofail" | "_netdev" | "auto" | "noauto" => {}
                name if name.starts_with("x-") => {}
                _ => return Err(format!("unknown mount option {option:?}")),
            },
        }
        Ok(())
    }
}

/// Refuses a missing mountpoint, one that is not a directory, one with a file system
/// already mounted on it (or a dead FUSE mount left behind), one inside the store (`store`,
/// canonical), and one that holds files unless `nonempty`.
pub(super) fn check_mountpoint(
    mountpoint: &Path,
    store: &Path,
    nonempty: bool,
) -> Result<PathBuf, String> {
    let shown = mountpoint.display();
    let meta = match std::fs::metadata(mountpoint) {
        Ok(meta) => meta,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(format!(
                "mountpoint {shown} is a dead mount (run `fusermount3 -u {shown}` first)"
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("mountpoint {shown} does not exist"));
        }
        Err(e) => return Err(format!("mountpoint {shown}: {e}")),
    };
    if !meta.is_dir() {
        return Err(format!("mountpoint {shown} is not a directory"));
    }
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| format!("mountpoint {shown}: {e}"))?;
    if canonical.starts_with(store) {
        return Err(format!(
            "mountpoint {shown} is inside the store {}: the mount would hide the store it \
             serves; choose a directory outside it",
            store.display()
        ));
    }
    if is_mount_point(&canonical) {
        return Err(format!(
            "mountpoint {shown} is busy: a file system is already mounted there"
        ));
    }
    if !nonempty {
        let mut entries =
            std::fs::read_dir(&canonical).map_err(|e| format!("mountpoint {shown}: {e}"))?;
        if entries.next().is_some() {
            return Err(format!(
                "mountpoint {shown} is not empty: the mount would hide its files (use \
                 -o nonempty to mount over them)"
            ));
        }
    }
    Ok(canonical)
}

/// How long a mount waits for a daemon that still holds the store after its mount is gone
/// (`umount` returns before the daemon has exited).
const EXITING_DAEMON_WAIT: Duration = Duration::from_secs(5);

/// Opens and locks the store; while the lock is held by a daemon whose mount is already
/// gone (it is exiting), waits for it, at most [`EXITING_DAEMON_WAIT`].
fn open_store_waiting(store: &Path) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + EXITING_DAEMON_WAIT;
    loop {
        match Store::open_locked(store) {
            Err(StoreError::AlreadyMounted(_))
                if std::time::Instant::now() < deadline && holder_is_exiting(store) =>
            {
                std::thread::sleep(Duration::from_millis(25));
            }
            opened => return opened,
        }
    }
}

/// Whether the daemon holding the store lock has no mount any more: the mountpoint it
/// recorded shows no mount (or it recorded none yet, or it has just let go).
fn holder_is_exiting(store: &Path) -> bool {
    match crate::store::lock_probe::locked_mountpoint(store) {
        Some(mountpoint) => !is_mount_point(&mountpoint),
        None => true,
    }
}

/// Whether `path` (canonical) is the mount point of a mounted file system.
fn is_mount_point(path: &Path) -> bool {
    crate::sys::is_mount_point(path)
}

/// Refuses a keystore SQLite finds damaged, before anything is mounted on it.
fn check_keystore(keystore: &Keystore, store: &Path) -> Result<(), String> {
    let problems = keystore
        .check_integrity()
        .map_err(|e| keystore_refusal(store, &e))?;
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    Err(format!(
        "store {}: the keystore is damaged ({}){}; restore it from a backup with `ssefs \
         keystore restore` (see `ssefs fsck` for a full report)",
        store.display(),
        shown.join("; "),
        if problems.len() > shown.len() {
            format!(" and {} more problems", problems.len() - shown.len())
        } else {
            String::new()
        }
    ))
}

/// The message for a keystore that cannot be used; one whose database is damaged also
/// says how to restore it.
fn keystore_refusal(store: &Path, e: &KeystoreError) -> String {
    let hint = if e.is_damage() {
        "; restore it from a backup with `ssefs keystore restore`"
    } else if matches!(e, KeystoreError::Tampered(_)) {
        "; if nobody with the root key made that change, restore the keystore from a backup \
         with `ssefs keystore restore`"
    } else {
        ""
    };
    format!("store {}: {e}{hint}", store.display())
}

/// Makes the process undumpable (no core files holding keys).
fn harden_process() {
    if let Err(e) = crate::sys::make_undumpable() {
        log::warn!("cannot disable core dumps: {e}");
    }
}

/// Destroys the CMKs whose deletion date has passed and logs each one.
fn process_deletions(keystore: &Keystore) {
    match keystore.process_pending_deletions(keystore.now()) {
        Ok(destroyed) => {
            for cmk in destroyed {
                log::warn!(
                    "CMK {} destroyed: its deletion date {} has passed; objects under it can no \
                     longer be read",
                    cmk.key_id,
                    cmk.deletion_date
                );
            }
        }
        Err(e) => log::error!("cannot process scheduled CMK deletions: {e}"),
    }
}

/// The background thread that processes scheduled CMK deletions while the mount lives;
/// dropping it (at unmount) stops and joins the thread.
struct DeletionTimer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DeletionTimer {
    fn start(keystore: Arc<Keystore>, interval: Duration) -> DeletionTimer {
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("ssefs-deletions".to_string())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    process_deletions(&keystore);
                }
            });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::error!("cannot start processing scheduled CMK deletions: {e}");
                None
            }
        };
        DeletionTimer {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for DeletionTimer {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the CMK deletion thread panicked");
            }
        }
    }
}

/// Told once whether the mount answers requests (`Ok`) or never will (`Err`).
pub type ReadyHook = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Waits, on its own thread, until the mount answers a `stat` of its root (the kernel holds
/// requests until the FUSE handshake is done), then sends `READY=1` and calls `on_ready`.
fn announce_when_answering(mountpoint: PathBuf, on_ready: ReadyHook) {
    let spawned = std::thread::Builder::new()
        .name("ssefs-ready".to_string())
        .spawn(move || {
            let answered = std::fs::metadata(&mountpoint)
                .map(|_| ())
                .map_err(|e| format!("the mount on {} does not answer: {e}", mountpoint.display()));
            if answered.is_ok() {
                if let Err(e) = super::notify::notify("READY=1") {
                    log::warn!("cannot tell systemd the mount is ready: {e}");
                }
            }
            on_ready(answered);
        });
    if let Err(e) = spawned {
        log::error!("cannot start the readiness check: {e}");
    }
}

/// Opens the store for a whole-store mount (its lock exclusively) or for a mount of one
/// bucket (the store lock shared, the bucket's exclusively), and records the mountpoint
/// where tools look for it.
fn lock_store(
    store: &Path,
    bucket: Option<&str>,
    mountpoint: &Path,
) -> Result<(Store, Option<BucketLock>), String> {
    let Some(bucket) = bucket else {
        let store = open_store_waiting(store).map_err(|e| match e {
            StoreError::AlreadyMounted(_) => refusal_beside_bucket_mounts(store, e),
            e => e.to_string(),
        })?;
        if let Err(e) = store.record_mountpoint(mountpoint) {
            log::warn!("cannot record the mountpoint in the store lock: {e}");
        }
        return Ok((store, None));
    };
    let (store, lock) = BucketLock::acquire(store, bucket).map_err(|e| e.to_string())?;
    if let Err(e) = lock.record_mountpoint(mountpoint) {
        log::warn!("cannot record the mountpoint in the bucket lock: {e}");
    }
    Ok((store, Some(lock)))
}

/// Why a whole-store mount is refused: says so when buckets of the store are mounted.
fn refusal_beside_bucket_mounts(store: &Path, e: StoreError) -> String {
    let mounts = store
        .canonicalize()
        .ok()
        .and_then(|root| bucket_mounts(&root).ok())
        .unwrap_or_default();
    if mounts.is_empty() {
        return e.to_string();
    }
    let names: Vec<&str> = mounts.iter().map(|m| m.bucket.as_str()).collect();
    format!(
        "{e}: bucket(s) {} of it are mounted on their own, and a whole-store mount cannot be \
         used beside them on this host (unmount them first)",
        names.join(", ")
    )
}

/// Runs `ssefs mount` of a local store; returns when the filesystem is unmounted.
pub fn run(
    store: &Path,
    mountpoint: &Path,
    key: &KeyArgs,
    options: &[String],
) -> Result<(), String> {
    run_announcing(store, mountpoint, key, options, Box::new(|_| {}))
}

/// As [`run`]; once the mount answers, tells systemd (`READY=1` when `$NOTIFY_SOCKET` is set)
/// and then `on_ready`.
pub fn run_announcing(
    store: &Path,
    mountpoint: &Path,
    key: &KeyArgs,
    options: &[String],
    on_ready: ReadyHook,
) -> Result<(), String> {
    let options = start_daemon(options)?;
    if options.cache_dir.is_some() || options.cache_size.is_some() || options.endpoint.is_some() {
        return Err(format!(
            "cache_dir, cache_size and endpoint are for remote stores (s3://…), not {}",
            store.display()
        ));
    }
    // A store that cannot be resolved is reported by opening it, below.
    let store_dir = store.canonicalize().unwrap_or_else(|_| store.to_path_buf());
    let mountpoint = check_mountpoint(mountpoint, &store_dir, options.nonempty)?;
    let (store, bucket_lock) = lock_store(&store_dir, options.bucket.as_deref(), &mountpoint)?;
    let root_key = load_root_key(store.root(), key).map_err(|e| e.to_string())?;
    let keystore = open_keystore(store.root(), key, &root_key)?;
    drop(root_key);
    let shown = store.root().display().to_string();
    serve_store(
        store,
        MountKeys::local(Arc::new(keystore)),
        &options,
        &mountpoint,
        &shown,
        on_ready,
    )?;
    drop(bucket_lock);
    Ok(())
}

/// What every mount does first: logging set up, the process hardened, and its options
/// parsed and checked.
pub(super) fn start_daemon(options: &[String]) -> Result<MountOptions, String> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
    harden_process();
    let options = MountOptions::parse(options)?;
    if options.create_bucket && options.bucket.is_none() {
        return Err("create_bucket needs bucket=NAME".to_string());
    }
    Ok(options)
}

/// Opens and checks the keystore of a store about to be mounted.
pub(super) fn open_keystore(
    store: &Path,
    key: &KeyArgs,
    root_key: &crate::crypto::Key256,
) -> Result<Keystore, String> {
    let keystore = open_with(store, key, root_key).map_err(|e| match e {
        RootKeyError::Store { source, .. } => keystore_refusal(store, &source),
        e => e.to_string(),
    })?;
    check_keystore(&keystore, store)?;
    // A master key that no longer unwraps (a damaged keystore) is refused here, not found
    // by the first object created.
    keystore
        .current_master_key()
        .map_err(|e| keystore_refusal(store, &e))?;
    Ok(keystore)
}

/// The keys a mount serves with.
pub(super) struct MountKeys {
    pub keystore: Arc<Keystore>,
    /// What the filesystem asks for keys: the keystore, or a remote store's synced view.
    pub source: Arc<dyn crate::fs::KeySource>,
    /// Other hosts change the store too (a remote store): no maintenance here (its mount
    /// runs deletions and rotation by age in its keystore sync), and the kernel keeps no
    /// file's pages from one open to the next.
    pub shared: bool,
}

impl MountKeys {
    /// A local store's: the keystore alone.
    pub(super) fn local(keystore: Arc<Keystore>) -> MountKeys {
        MountKeys {
            source: Arc::clone(&keystore) as _,
            keystore,
            shared: false,
        }
    }
}

/// Serves an opened store on `mountpoint` until it is unmounted. `shown` names the store in
/// messages.
pub(super) fn serve_store(
    store: Store,
    keys: MountKeys,
    options: &MountOptions,
    mountpoint: &Path,
    shown: &str,
    on_ready: ReadyHook,
) -> Result<(), String> {
    let MountKeys {
        keystore,
        source: keys,
        shared,
    } = keys;
    let maintain = !shared;
    if maintain {
        process_deletions(&keystore);
        super::rotate::spawn_rotation_checks(Arc::clone(&keystore), options.master_rotation_days);
    }
    let fs_options = FsOptions {
        read_only: options.read_only,
        default_sse: options.default_sse,
        shared,
    };
    // Before the filesystem sizes its descriptor cache from the limit.
    crate::fuse::raise_open_file_limit();
    let fs = match &options.bucket {
        Some(bucket) => {
            BucketFs::for_bucket(store, keys, fs_options, bucket, options.create_bucket)
                .map_err(|e| format!("store {shown}: {e}"))?
        }
        None => {
            BucketFs::new(store, keys, fs_options).map_err(|e| format!("store {shown}: {e}"))?
        }
    };
    let config = MountConfig {
        mountpoint: mountpoint.to_path_buf(),
        fsname: options.fsname.clone().unwrap_or_else(|| shown.to_string()),
        allow_other: options.allow_other,
        allow_root: options.allow_root,
        default_permissions: options.default_permissions,
        read_only: options.read_only,
        auto_unmount: options.auto_unmount,
        noexec: options.noexec,
        noatime: options.noatime,
        io_uring: options.io_uring,
    };
    let shown_store = match &options.bucket {
        Some(bucket) => format!("bucket {bucket} of store {shown}"),
        None => format!("store {shown}"),
    };
    let shown = (shown_store.as_str(), mountpoint.display());
    // Started once mounted, from the serving thread: its thread then inherits the mask that
    // keeps SIGTERM and SIGINT for the signal thread (a thread started earlier would take
    // them and end the daemon without unmounting).
    let mut deletions = None;
    let mountpoint = mountpoint.to_path_buf();
    let served = crate::fuse::serve(fs, &config, || {
        log::info!("mounted {} on {}", shown.0, shown.1);
        if maintain {
            deletions = Some(DeletionTimer::start(keystore, DELETION_INTERVAL));
        }
        announce_when_answering(mountpoint.clone(), on_ready);
    });
    drop(deletions);
    served.map_err(|e| format!("cannot mount {} on {}: {e}", shown.0, shown.1))?;
    log::info!("unmounted {}", shown.1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_defaults_and_overrides() {
        let o = MountOptions::parse::<&str>(&[]).unwrap();
        assert_eq!(o, MountOptions::default());
        assert!(o.default_permissions);
        let o = MountOptions::parse(&["ro,allow_other", "default_sse=none,fsname=vault"]).unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.default_sse, DefaultSse::None);
        assert_eq!(o.fsname.as_deref(), Some("vault"));
        let o = MountOptions::parse(&["ro,rw,default_sse=KMS,nofail,x-systemd.automount"]).unwrap();
        assert!(!o.read_only);
        assert_eq!(o.default_sse, DefaultSse::Kms);
        let o = MountOptions::parse(&["bucket=photos,create_bucket"]).unwrap();
        assert_eq!(o.bucket.as_deref(), Some("photos"));
        assert!(o.create_bucket);
    }

    #[test]
    fn unknown_or_bad_options_are_refused() {
        for bad in [
            "bogus",
            "default_sse=aes",
            "allow_other,allow_root",
            "fsname=",
            "suid",
            "bucket=Photos",
            "bucket=ab",
            "bucket=.ssefs",
            "keystore_refresh=0",
            "keystore_refresh=ten",
            "metadata_ttl=-1",
            "metadata_ttl=86401",
        ] {
            assert!(MountOptions::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn io_uring_is_asked_for_unless_refused() {
        assert!(MountOptions::parse::<&str>(&[]).unwrap().io_uring);
        assert!(!MountOptions::parse(&["noio_uring"]).unwrap().io_uring);
        assert!(
            MountOptions::parse(&["noio_uring,io_uring"])
                .unwrap()
                .io_uring
        );
        assert!(MountOptions::parse(&["io_uring=1"]).is_err());
    }

    #[test]
    fn a_remote_stores_intervals_parse() {
        let o = MountOptions::parse(&["metadata_ttl=0,keystore_refresh=30"]).unwrap();
        assert_eq!((o.metadata_ttl, o.keystore_refresh), (Some(0), Some(30)));
        let o = MountOptions::parse::<&str>(&[]).unwrap();
        assert_eq!((o.metadata_ttl, o.keystore_refresh), (None, None));
    }

    #[test]
    fn mountpoint_checks_come_before_mounting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let store = Path::new("/nonexistent-store");
        assert!(
            check_mountpoint(&missing, store, false)
                .unwrap_err()
                .contains("does not exist")
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(
            check_mountpoint(&file, store, false)
                .unwrap_err()
                .contains("not a directory")
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(check_mountpoint(&empty, store, false).is_ok());
        assert!(
            check_mountpoint(dir.path(), store, false)
                .unwrap_err()
                .contains("is not empty")
        );
        assert!(check_mountpoint(dir.path(), store, true).is_ok());
        let canonical = dir.path().canonicalize().unwrap();
        assert!(
            check_mountpoint(&empty, &canonical, false)
                .unwrap_err()
                .contains("inside the store")
        );
        assert!(is_mount_point(Path::new("/")));
    }

    /// A keystore whose clock stands 8 days after a CMK was scheduled for deletion in 7.
    fn keystore_past_a_deletion_date() -> (tempfile::TempDir, Arc<Keystore>, String) {
        use crate::keystore::{Caller, Clock, CmkOrigin, CmkState};
        const T0: i64 = 1_700_000_000;
        let dir = tempfile::tempdir().unwrap();
        let root = crate::crypto::Key256::generate().unwrap();
        let mut keystore = Keystore::create(dir.path(), &root).unwrap();
        keystore.set_clock(Clock::Fixed(T0));
        let owner = Caller {
            uid: 1000,
            gid: 1000,
            groups: Vec::new(),
            pid: 1,
        };
        let key = keystore
            .create_cmk_for("doomed", None, CmkOrigin::Ssefs, &owner)
            .unwrap();
        keystore.schedule_cmk_deletion(&key, 7, &owner).unwrap();
        keystore.set_clock(Clock::Fixed(T0 + 8 * 86_400));
        let state = keystore.cmk_info(&key).unwrap().state;
        assert_eq!(state, CmkState::PendingDeletion, "nothing processed it yet");
        (dir, Arc::new(keystore), key)
    }

    #[test]
    fn the_deletion_timer_destroys_keys_past_their_date_while_it_runs() {
        use crate::keystore::CmkState;
        let (_dir, keystore, key) = keystore_past_a_deletion_date();
        let timer = DeletionTimer::start(Arc::clone(&keystore), Duration::from_millis(20));
        let start = std::time::Instant::now();
        while keystore.cmk_info(&key).unwrap().state != CmkState::Destroyed {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the timer did not destroy the CMK"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(timer);
        assert_eq!(Arc::strong_count(&keystore), 1, "the thread has let go");
    }

    #[test]
    fn dropping_the_deletion_timer_stops_its_thread_at_once() {
        use crate::keystore::CmkState;
        let (_dir, keystore, key) = keystore_past_a_deletion_date();
        let timer = DeletionTimer::start(Arc::clone(&keystore), Duration::from_secs(3600));
        assert_eq!(Arc::strong_count(&keystore), 2);
        let start = std::time::Instant::now();
        drop(timer);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "unmounting waits for the next tick: {:?}",
            start.elapsed()
        );
        assert_eq!(Arc::strong_count(&keystore), 1, "the thread has ended");
        let state = keystore.cmk_info(&key).unwrap().state;
        assert_eq!(
            state,
            CmkState::PendingDeletion,
            "no tick came before the stop"
        );
        process_deletions(&keystore);
        let state = keystore.cmk_info(&key).unwrap().state;
        assert_eq!(state, CmkState::Destroyed, "as at mount start");
    }
}

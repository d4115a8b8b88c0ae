//! `ssefs mount s3://BUCKET[/PREFIX] MOUNTPOINT`: mounts a remote store over its local cache
//! (`store::remote::Mirror`). Before serving, what a crashed mount left is uploaded and the
//! local copy brought in line with the store and the keystore synced; while serving,
//! directory markers are written every second and the keystore synced every
//! `keystore_refresh`; at unmount every dirty file, every marker and the keystore's new
//! records are uploaded.

use super::keystore_sync::{DEFAULT_KEYSTORE_REFRESH, KeystoreSync, SharedKeys, Synced};
use super::mount::{
    DEFAULT_CACHE_SIZE, MountKeys, MountOptions, ReadyHook, check_mountpoint, open_keystore,
    serve_store, start_daemon,
};
use super::root_key::{KeyArgs, load_root_key};
use crate::store::Store;
use crate::store::remote::{HEARTBEAT_INTERVAL, Heartbeat, Mirror, RemoteBacking};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often the markers of changed directories are written while mounted.
const MARKER_INTERVAL: Duration = Duration::from_secs(1);
/// How often a mount looks for other hosts' heartbeats (a writer's close uploads before it
/// returns while there are any).
const OTHERS_INTERVAL: Duration = Duration::from_secs(5);
/// How long a mount trusts what it knows of an object or a directory before asking the
/// store again (`metadata_ttl=SECS`): the most another host's change takes to show.
const DEFAULT_METADATA_TTL: Duration = Duration::from_secs(1);
/// Where cache directories go by default, one per store id.
const SYSTEM_CACHE: &str = "/var/cache/ssefs";

/// The cache directory: the one given, else `/var/cache/ssefs/STORE-ID` for root, else
/// `$XDG_CACHE_HOME/ssefs/STORE-ID` (or `~/.cache/ssefs/STORE-ID`).
fn cache_dir(given: Option<&Path>, keystore: &[u8]) -> Result<PathBuf, String> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    let scratch = crate::store::remote::WorkingCopy::empty().map_err(|e| e.to_string())?;
    let path = scratch.root().join(crate::store::layout::KEYSTORE_FILE);
    std::fs::write(&path, keystore).map_err(|e| format!("{}: {e}", path.display()))?;
    let summary = crate::keystore::inspect::summarize_file(&path)
        .map_err(|e| format!("the store's keystore cannot be read: {e}"))?;
    let id = summary.store_id.to_string();
    if rustix::process::getuid().is_root() {
        return Ok(Path::new(SYSTEM_CACHE).join(id));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or("no cache directory: give --cache-dir (HOME is not set)")?;
    Ok(base.join("ssefs").join(id))
}

/// The mount's background work until dropped: markers of changed directories written every
/// [`MARKER_INTERVAL`], the heartbeat every [`HEARTBEAT_INTERVAL`], the keystore synced
/// every `refresh` and whenever a command on this host asks.
struct Background {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(
        backing: Arc<RemoteBacking>,
        heartbeat: Option<Heartbeat>,
        sync: Arc<KeystoreSync>,
        mirror: Arc<Mirror>,
        refresh: Duration,
    ) -> Background {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ssefs-remote".to_string())
            .spawn(move || {
                let mut last_beat = Instant::now();
                let mut last_beat_written = Instant::now();
                let mut last_sync = Instant::now();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(MARKER_INTERVAL) {
                    if let Err(e) = backing.flush_markers() {
                        log::warn!("directory markers not written yet (retried): {e}");
                    }
                    if let Some(beat) = &heartbeat
                        && last_beat.elapsed() >= OTHERS_INTERVAL
                    {
                        if last_beat_written.elapsed() >= HEARTBEAT_INTERVAL {
                            last_beat_written = Instant::now();
                            if let Err(e) = beat.beat() {
                                log::warn!("heartbeat not written (retried): {e}");
                            }
                        }
                        last_beat = Instant::now();
                        match beat.others_live() {
                            Ok(others) => backing.set_shared(others > 0),
                            Err(e) => {
                                backing.set_shared(true);
                                log::warn!("other hosts' heartbeats not read (retried): {e}");
                            }
                        }
                    }
                    let asked = mirror.sync_requested();
                    if asked || last_sync.elapsed() >= refresh {
                        last_sync = Instant::now();
                        report_sync(&sync.sync());
                        if asked {
                            mirror.sync_done();
                        }
                        if let Some(beat) = &heartbeat {
                            beat.set_master_version(sync.master_version());
                        }
                    }
                }
                // The heartbeat goes with the thread: removed from the store at unmount.
                drop(heartbeat);
            });
        match thread {
            Ok(thread) => Background {
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(e) => {
                log::error!("cannot start the remote store's background work: {e}");
                Background {
                    stop: None,
                    thread: None,
                }
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Logs what a keystore sync did (nothing when it did nothing).
fn report_sync(result: &Result<Synced, String>) {
    match result {
        Ok(done) if done.took => log::info!(
            "took the keystore as changed on the object store{}",
            if done.carried.is_empty() {
                String::new()
            } else {
                format!(
                    ", with this mount's {} audit record(s) added",
                    done.carried.records
                )
            }
        ),
        Ok(done) if done.wrote => log::debug!(
            "wrote the keystore: {} audit record(s) of this mount",
            done.carried.records
        ),
        Ok(_) => {}
        Err(e) => log::warn!("keystore not synced with the object store (retried): {e}"),
    }
}

/// The entry of `ssefs mount` and of the mount helper for any store: a remote store
/// (`s3://…`) is mounted here, a local one by `mount.rs`. Returns when it is unmounted; once
/// the mount answers, `on_ready` is told.
pub fn run_any(
    store: &Path,
    mountpoint: &Path,
    key: &KeyArgs,
    options: &[String],
    on_ready: ReadyHook,
) -> Result<(), String> {
    if !super::remote::names_remote(store) {
        return super::mount::run_announcing(store, mountpoint, key, options, on_ready);
    }
    let options = start_daemon(options)?;
    run(store, mountpoint, key, &options, on_ready)
}

/// Mounts the remote store `url` on `mountpoint`; returns when it is unmounted.
fn run(
    url: &Path,
    mountpoint: &Path,
    key: &KeyArgs,
    options: &MountOptions,
    on_ready: ReadyHook,
) -> Result<(), String> {
    let shown = url.display().to_string();
    let remote =
        super::remote::connect(url, options.endpoint.as_deref(), options.region.as_deref())
            .map_err(|e| e.to_string())?;
    let remote = Arc::new(remote);
    let mirror = Mirror::open(Arc::clone(&remote), |bytes| {
        cache_dir(options.cache_dir.as_deref(), bytes)
    })
    .map_err(|e| e.to_string())?;
    let root = mirror.store_root();
    let mountpoint = check_mountpoint(mountpoint, mirror.dir(), options.nonempty)?;
    let root_key = load_root_key(&root, key)
        .map_err(|e| e.to_string().replace(&root.display().to_string(), &shown))?;
    let keystore = open_keystore(&root, key, &root_key)
        .map_err(|e| e.replace(&root.display().to_string(), &shown))?;
    let keystore = Arc::new(keystore);
    let marker_key = crate::keystore::remote_marker_key(&root_key, keystore.store_id())
        .map_err(|e| e.to_string())?;
    drop(root_key);
    let backing = mirror
        .backing(
            *marker_key,
            options.cache_size.unwrap_or(DEFAULT_CACHE_SIZE),
            Duration::from_secs(
                options
                    .metadata_ttl
                    .unwrap_or(DEFAULT_METADATA_TTL.as_secs()),
            ),
        )
        .map_err(|e| e.to_string())?;
    drop(marker_key);
    // The heartbeat first, so that the other hosts know of this mount before it lists the
    // store; while there are others, a writer's close uploads before it returns.
    let master_version = keystore
        .current_master_key()
        .map(|(version, _)| version)
        .unwrap_or(0);
    let heartbeat = Heartbeat::start(
        Arc::clone(&remote),
        &mountpoint.display().to_string(),
        master_version,
    )
    .map_err(|e| log::warn!("{shown}: no heartbeat (ssefs status will not show this mount): {e}"))
    .ok();
    backing.set_shared(
        heartbeat
            .as_ref()
            .is_none_or(|beat| beat.others_live().map_or(true, |others| others > 0)),
    );
    let report = mirror.reconcile(&backing).map_err(|e| e.to_string())?;
    log::info!(
        "{shown}: {} objects in {} directories ({} new to this cache, {} removed from it, {} \
         left dirty by the last mount uploaded, {} kept aside as conflicts)",
        report.objects,
        report.directories,
        report.placeholders,
        report.removed,
        report.uploaded,
        report.conflicts
    );
    let mirror = Arc::new(mirror);
    let sync = Arc::new(KeystoreSync::new(
        Arc::clone(&mirror),
        Arc::clone(&keystore),
        options.master_rotation_days,
    ));
    // Before serving: what the last mount with this cache added to the keystore is carried
    // onto the store's, and key changes made meanwhile are taken.
    let synced = sync
        .sync()
        .map_err(|e| format!("{shown}: the keystore cannot be synced: {e}"))?;
    report_sync(&Ok(synced));
    let refresh = Duration::from_secs(
        options
            .keystore_refresh
            .unwrap_or(DEFAULT_KEYSTORE_REFRESH.as_secs()),
    );
    let store_id = keystore.store_id().to_string();
    let store =
        Store::open_with(&root, Arc::clone(&backing) as _, true).map_err(|e| e.to_string())?;
    let record = mirror
        .register_mount(&store_id)
        .map_err(|e| log::warn!("{shown}: commands on this host will not find the mount: {e}"))
        .ok();
    let background = Background::start(
        Arc::clone(&backing),
        heartbeat,
        Arc::clone(&sync),
        Arc::clone(&mirror),
        refresh,
    );
    let keys = MountKeys {
        keystore: Arc::clone(&keystore),
        source: Arc::new(SharedKeys::new(Arc::clone(&keystore), Arc::clone(&sync))),
        shared: true,
    };
    let served = serve_store(store, keys, options, &mountpoint, &shown, on_ready);
    drop(record);
    drop(background);
    let failed = backing.upload_dirty();
    if let Err(e) = backing.flush_markers() {
        log::error!("{shown}: directory markers not written: {e} (written at the next mount)");
    }
    if let Err(e) = sync.sync() {
        log::error!(
            "{shown}: the keystore was not synced: {e} (this mount's audit records stay in the \
             cache and are added by the next mount with it)"
        );
    }
    if failed > 0 {
        log::error!(
            "{shown}: {failed} file(s) could not be uploaded and stay dirty in the cache {}; \
             the next mount with this cache uploads them",
            mirror.dir().display()
        );
    }
    log::info!("{shown}: {}", remote.traffic());
    served
}

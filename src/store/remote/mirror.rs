//! The cache directory of a mounted remote store: a local copy laid out as a local store
//! (`DIR/store/`), the keystore's working copy inside it, the journal of directory markers
//! still to write, and a lock so that one mount at a time uses it.
//!
//! ```text
//! DIR/lock                  flock: one mount per cache directory
//! DIR/keystore.version      the ETag the local keystore copy was read or last written at
//! DIR/keystore.base.db      the keystore as the store held it at that ETag
//! DIR/sync.request          a command on this host asks the mount to take the keystore
//! DIR/markers.journal       directories whose markers are not written yet
//! DIR/conflicts/            local copies the object store refused (changed by others)
//! DIR/store/.ssefs/         the keystore's working copy, temporary files
//! DIR/store/BUCKET/PATH     the local copy of object PREFIX/BUCKET/PATH (holes where not
//!                           fetched), its state in the `user.ssefs.cache` attribute
//! ```
//!
//! Before a mount serves, [`Mirror::reconcile`] uploads what a crash left dirty, writes the
//! journalled markers, then brings the local copy in line with one listing of the store.

use super::cache::{RemoteBacking, allocated};
use super::local_copy::{
    apply_attrs, is_dirty, lstat, make_placeholder, make_special, read_state, remove_any,
    set_times, walk,
};
use super::namespace::{Marker, marker_dir, marker_key, parent_key};
use super::working_copy::keystore_key;
use super::{ObjectInfo, RemoteError, RemoteStore, Version, WriteMode};
use crate::store::backing::Backing;
use crate::store::layout;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the cache directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{store} is not an ssefs store (no keystore object; run `ssefs init` first)")]
    NotAStore { store: String },
    #[error("the cache directory {} is in use by another mount", path.display())]
    Busy { path: PathBuf },
    #[error("the cache directory {}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Other(String),
}

fn local(path: &Path) -> impl FnOnce(io::Error) -> MirrorError + '_ {
    move |source| MirrorError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// A remote store's cache directory, locked for one mount.
#[derive(Debug)]
pub struct Mirror {
    dir: PathBuf,
    _lock: File,
    remote: Arc<RemoteStore>,
}

impl Mirror {
    /// Fetches the store's keystore, then opens (making it if needed, mode 0700) and locks
    /// the cache directory `choose` names from the keystore's bytes, and puts the keystore
    /// in its local copy, unless the local copy holds changes not yet uploaded over the
    /// same version.
    pub fn open(
        remote: Arc<RemoteStore>,
        choose: impl FnOnce(&[u8]) -> Result<PathBuf, String>,
    ) -> Result<Mirror, MirrorError> {
        let (bytes, version) = remote.get(&keystore_key()).map_err(|e| match e {
            RemoteError::NotFound { .. } => MirrorError::NotAStore {
                store: remote.url().to_string(),
            },
            e => e.into(),
        })?;
        let dir = choose(&bytes).map_err(MirrorError::Other)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(local(&dir))?;
        let dir = dir.canonicalize().map_err(local(&dir))?;
        let lock_path = dir.join(layout::LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(local(&lock_path))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(MirrorError::Busy { path: dir });
        }
        let mirror = Mirror {
            dir,
            _lock: lock,
            remote,
        };
        for sub in [
            mirror.store_root(),
            layout::meta_dir(&mirror.store_root()),
            mirror.dir.join("conflicts"),
        ] {
            match DirBuilder::new().mode(0o700).create(&sub) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(local(&sub)(e)),
            }
        }
        mirror.take_keystore(bytes, version)?;
        Ok(mirror)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The local copy, laid out as a local store.
    pub fn store_root(&self) -> PathBuf {
        self.dir.join("store")
    }

    fn version_path(&self) -> PathBuf {
        self.dir.join("keystore.version")
    }

    /// The version the local keystore copy was fetched or uploaded at, and a digest of its
    /// bytes then (to tell whether the copy changed since).
    fn recorded_keystore(&self) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.version_path()).ok()?;
        let (etag, digest) = text.trim_end().split_once('\n')?;
        Some((etag.to_string(), digest.to_string()))
    }

    fn record_keystore(&self, etag: &str, bytes: &[u8]) -> Result<(), MirrorError> {
        let base = self.keystore_base();
        write_synced(&base, bytes).map_err(local(&base))?;
        let text = format!("{etag}\n{}\n", digest(bytes));
        write_synced(&self.version_path(), text.as_bytes()).map_err(local(&self.version_path()))
    }

    /// The keystore as the store held it when this cache last took or wrote it: what a
    /// mount's own changes (audit records, usage) are counted from.
    pub fn keystore_base(&self) -> PathBuf {
        self.dir.join("keystore.base.db")
    }

    /// The store's keystore if it is another version than the one last taken or written
    /// here (one `HEAD`, and a `GET` when it changed): its bytes and `ETag`.
    pub fn changed_keystore(&self) -> Result<Option<(Vec<u8>, String)>, MirrorError> {
        let recorded = self.recorded_keystore().map(|(etag, _)| etag);
        let now = self.remote.head(&keystore_key())?.version.etag;
        if now.is_some() && now == recorded {
            return Ok(None);
        }
        let (bytes, version) = self.remote.get(&keystore_key())?;
        Ok(Some((bytes, version.etag.unwrap_or_default())))
    }

    /// The `ETag` of the keystore version last taken or written here.
    pub fn keystore_etag(&self) -> Option<String> {
        self.recorded_keystore().map(|(etag, _)| etag)
    }

    /// Records that the store's keystore version `etag` (`bytes`) was taken as it is.
    pub fn took_keystore(&self, etag: &str, bytes: &[u8]) -> Result<(), MirrorError> {
        self.record_keystore(etag, bytes)
    }

    /// Writes `bytes` as the store's keystore over the version `over` (`If-Match`); a
    /// conflict (another host wrote it meanwhile) is `MirrorError::Remote` with
    /// `is_conflict`.
    pub fn publish_keystore(&self, bytes: Vec<u8>, over: &str) -> Result<(), MirrorError> {
        let version = Version {
            etag: Some(over.to_string()),
            version: None,
        };
        let done = self
            .remote
            .put(&keystore_key(), bytes.clone(), WriteMode::Replace(version))?;
        let etag = match done.etag {
            Some(etag) => etag,
            None => self
                .remote
                .head(&keystore_key())?
                .version
                .etag
                .unwrap_or_default(),
        };
        self.record_keystore(&etag, &bytes)
    }

    /// Whether a command on this host asks for a keystore sync (see [`request_sync`]).
    pub fn sync_requested(&self) -> bool {
        self.dir.join(SYNC_REQUEST).exists()
    }

    /// Tells a command waiting in [`request_sync`] that the sync it asked for is done.
    pub fn sync_done(&self) {
        let _ = std::fs::remove_file(self.dir.join(SYNC_REQUEST));
    }

    /// Puts the fetched keystore in the local copy, unless the copy holds changes not yet
    /// uploaded over this same version (a mount that ended without uploading them). Local
    /// changes over an older version (the store's keystore changed meanwhile) are kept
    /// aside in `conflicts/` and the store's keystore is used.
    fn take_keystore(&self, bytes: Vec<u8>, version: Version) -> Result<(), MirrorError> {
        let path = layout::keystore_path(&self.store_root());
        if self.keystore_base().exists() && path.exists() {
            // What the local copy added since the base (a mount's audit records) is carried
            // onto the store's keystore by the mount's first sync, before it serves.
            return Ok(());
        }
        let etag = version.etag.clone().unwrap_or_default();
        let local_bytes = std::fs::read(&path).ok();
        if let (Some((recorded, was)), Some(local_bytes)) = (self.recorded_keystore(), &local_bytes)
            && digest(local_bytes) != was
            && *local_bytes != bytes
        {
            if recorded == etag {
                log::warn!(
                    "the cached keystore of {} has changes that were not uploaded; keeping them \
                     (uploaded at unmount)",
                    self.remote.url()
                );
                return Ok(());
            }
            let aside = self.dir.join("conflicts").join(format!(
                "{}.{}",
                layout::KEYSTORE_FILE,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ));
            log::warn!(
                "the keystore of {} changed on the object store while the cached copy had \
                 changes not uploaded; the cached copy is kept aside in {} and the store's is \
                 used",
                self.remote.url(),
                aside.display()
            );
            std::fs::copy(&path, &aside).map_err(local(&aside))?;
        }
        for file in layout::companion_files(&path) {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(local(&file)(e)),
            }
        }
        write_synced(&path, &bytes).map_err(local(&path))?;
        self.record_keystore(&etag, &bytes)
    }

    /// Uploads the local keystore if it changed since it was fetched, over the version it
    /// was fetched at. Call once SQLite is done with it (no write-ahead log left).
    pub fn push_keystore(&self) -> Result<bool, MirrorError> {
        let path = layout::keystore_path(&self.store_root());
        let [wal, _] = layout::companion_files(&path);
        if std::fs::metadata(&wal)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            return Err(MirrorError::Other(format!(
                "the keystore copy {} still has a write-ahead log; not uploading it",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(local(&path))?;
        let Some((etag, was)) = self.recorded_keystore() else {
            return Err(MirrorError::Other(format!(
                "{} does not say which version of the keystore the copy is",
                self.version_path().display()
            )));
        };
        if digest(&bytes) == was {
            return Ok(false);
        }
        self.publish_keystore(bytes, &etag).map_err(|e| match e {
            MirrorError::Remote(e) if e.is_conflict() => MirrorError::Other(format!(
                "the keystore of {} was changed by another host; this copy's changes were \
                 not uploaded",
                self.remote.url()
            )),
            e => e,
        })?;
        Ok(true)
    }

    /// The backing of a mount over this cache.
    pub fn backing(
        &self,
        marker_key: [u8; 32],
        cache_size: u64,
        metadata_ttl: std::time::Duration,
    ) -> Result<Arc<RemoteBacking>, MirrorError> {
        let root = self.store_root().canonicalize().map_err(local(&self.dir))?;
        let path = self.dir.join("markers.journal");
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(local(&path))?;
        Ok(Arc::new(RemoteBacking::new(
            Arc::clone(&self.remote),
            root,
            marker_key,
            cache_size,
            journal,
            metadata_ttl,
        )))
    }

    /// Makes the local copy match the store: first what the last mount left (dirty files
    /// uploaded, journalled markers written), then one listing of the store applied.
    pub fn reconcile(&self, backing: &RemoteBacking) -> Result<ReconcileReport, MirrorError> {
        let root = self.store_root();
        let mut report = ReconcileReport::default();
        // 1. What a crashed mount left: markers from the journal, dirty files.
        let journal = self.dir.join("markers.journal");
        let pending = std::fs::read_to_string(&journal).unwrap_or_default();
        let mut dirty_files = Vec::new();
        walk(&root, "", &mut |key, path, meta| {
            if meta.is_file() && is_dirty(path) {
                dirty_files.push((key.to_string(), path.to_path_buf()));
            }
        })
        .map_err(local(&root))?;
        for (key, path) in dirty_files {
            // Only a real conflict sets a copy aside: the store holds another version than
            // the one this copy was read at. Any other failure stops the mount, changing
            // nothing, so that an unreachable store never costs a copy its place.
            let recorded = read_state(&path).and_then(|(_, etag)| etag);
            let current = match self.remote.head(&key) {
                Ok(info) => info.version.etag,
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            let conflict = current.is_some() && current != recorded;
            if !conflict {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(local(&path))?;
                match backing.sync_data(&file) {
                    Ok(()) => {
                        report.uploaded += 1;
                        continue;
                    }
                    Err(e) => {
                        let conflicted = match self.remote.head(&key) {
                            Ok(info) => info.version.etag != recorded,
                            Err(gone) if gone.is_not_found() => recorded.is_some(),
                            Err(_) => false,
                        };
                        if !conflicted {
                            return Err(MirrorError::Other(format!(
                                "{key} was left dirty by the last mount and cannot be uploaded: \
                                 {e}; nothing was changed (mount again when the object store \
                                 answers)"
                            )));
                        }
                    }
                }
            }
            let aside = self.dir.join("conflicts").join(key.replace('/', "%2F"));
            log::error!(
                "{key} was changed in the object store since this cache read it; the cached \
                 copy, never uploaded, is kept in {} and the store's version is used",
                aside.display()
            );
            std::fs::rename(&path, &aside).map_err(local(&path))?;
            report.conflicts += 1;
        }
        for dir in pending.lines().collect::<BTreeSet<_>>() {
            if root.join(dir).is_dir() {
                backing.note_dir(dir);
            }
        }
        backing.flush_markers().map_err(local(&journal))?;
        // 2. One listing of the store.
        let listing = self.remote.list_all("")?;
        let mut objects: BTreeMap<String, ObjectInfo> = BTreeMap::new();
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let mut markers: Vec<String> = Vec::new();
        for info in listing {
            if info.key.starts_with(&format!("{}/", layout::META_DIR)) {
                continue;
            }
            let mut parent = parent_key(&info.key);
            while !parent.is_empty() && dirs.insert(parent.to_string()) {
                parent = parent_key(parent);
            }
            if let Some(dir) = marker_dir(&info.key) {
                markers.push(dir.to_string());
                if !dir.is_empty() {
                    dirs.insert(dir.to_string());
                }
                continue;
            }
            objects.insert(info.key.clone(), info);
        }
        // A key that is also a directory (objects put there by other tools, `a` and `a/b`):
        // the directory wins; the object is left alone in the object store.
        objects.retain(|key, _| {
            let clash = dirs.contains(key);
            if clash {
                log::warn!(
                    "{key} is both an object and a directory in the store; showing the directory"
                );
            }
            !clash
        });
        let mut attrs: BTreeMap<String, Marker> = BTreeMap::new();
        for dir in markers {
            match self.remote.get(&marker_key(&dir)) {
                Ok((body, _)) => match Marker::decode(backing.marker_key(), &dir, &body) {
                    Ok(marker) => {
                        attrs.insert(dir, marker);
                    }
                    Err(e) => {
                        log::error!(
                            "the marker of {dir:?} is refused: {e}; default attributes used"
                        );
                        report.bad_markers += 1;
                    }
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // 3. Directories, then objects, then what the markers alone hold.
        for dir in &dirs {
            let path = root.join(dir);
            match lstat(&path) {
                Ok(st) if st.is_dir() => {}
                Ok(_) => remove_any(&path).map_err(local(&path))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(local(&path)(e)),
            }
            if !path.exists() {
                DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .map_err(local(&path))?;
            }
        }
        let mut adopted = Vec::new();
        for (key, info) in &objects {
            let path = root.join(key);
            let etag = info.version.etag.clone();
            let cached = match lstat(&path) {
                Ok(st) if st.is_file() => {
                    read_state(&path).filter(|(_, e)| e.is_some() && *e == etag)
                }
                Ok(_) => {
                    remove_any(&path).map_err(local(&path))?;
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(local(&path)(e)),
            };
            if cached.is_none() {
                make_placeholder(&path, info.size, etag.as_deref()).map_err(local(&path))?;
                report.placeholders += 1;
            } else if std::fs::metadata(&path).is_ok_and(|m| allocated(&m) > 0) {
                adopted.push(path.clone());
            }
            let entry = attrs.get(parent_key(key)).and_then(|m| {
                m.entries
                    .get(&OsString::from(key.rsplit('/').next().unwrap_or(key)))
            });
            if let Some(node) = entry
                && node.mode & libc::S_IFMT == libc::S_IFREG
            {
                apply_attrs(&path, node).map_err(local(&path))?;
            } else {
                let mtime = crate::store::backing::Timestamp {
                    secs: info.modified,
                    nanos: 0,
                };
                set_times(&path, mtime, mtime).map_err(local(&path))?;
            }
        }
        for (dir, marker) in &attrs {
            for (name, node) in &marker.entries {
                let kind = node.mode & libc::S_IFMT;
                if kind == libc::S_IFREG {
                    continue;
                }
                let path = root.join(dir).join(name);
                if let Ok(st) = lstat(&path)
                    && st.mode & libc::S_IFMT == kind
                {
                    if kind == libc::S_IFLNK
                        && std::fs::read_link(&path)
                            .ok()
                            .map(|t| t.into_os_string().into_encoded_bytes())
                            != node.target
                    {
                        remove_any(&path).map_err(local(&path))?;
                    } else {
                        let _ = apply_attrs(&path, node);
                        continue;
                    }
                } else if lstat(&path).is_ok() {
                    remove_any(&path).map_err(local(&path))?;
                }
                make_special(&path, node).map_err(local(&path))?;
            }
        }
        // 4. What the store no longer has.
        let mut extra = Vec::new();
        walk(&root, "", &mut |key, path, meta| {
            let keep = if meta.is_dir() {
                dirs.contains(key)
            } else if meta.is_file() {
                objects.contains_key(key)
            } else {
                let name = OsString::from(key.rsplit('/').next().unwrap_or(key));
                attrs
                    .get(parent_key(key))
                    .is_some_and(|m| m.entries.contains_key(&name))
            };
            if !keep {
                extra.push(path.to_path_buf());
            }
        })
        .map_err(local(&root))?;
        for path in extra {
            if path.exists() || lstat(&path).is_ok() {
                remove_any(&path).map_err(local(&path))?;
                report.removed += 1;
            }
        }
        // Last, and deepest first: filling a directory changes its times.
        for dir in dirs.iter().rev() {
            if let Some(marker) = attrs.get(dir.as_str()) {
                let path = root.join(dir);
                apply_attrs(&path, &marker.dir).map_err(local(&path))?;
            }
        }
        // What the cache already holds counts against its size, and can be evicted.
        for path in adopted {
            if let Err(e) = backing.adopt(&path) {
                log::warn!("{}: not counted in the cache size: {e}", path.display());
            }
        }
        backing.evict();
        report.objects = objects.len();
        report.directories = dirs.len();
        Ok(report)
    }
}

/// What [`Mirror::reconcile`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReconcileReport {
    pub objects: usize,
    pub directories: usize,
    pub placeholders: usize,
    pub removed: usize,
    pub uploaded: usize,
    pub conflicts: usize,
    pub bad_markers: usize,
}

/// The SHA-256 of `bytes`, in hex.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("new");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// What a full copy held when it was made: each object's version and local file identity,
/// so that [`Mirror::push_changes`] uploads exactly what a command changed.
#[derive(Debug, Default)]
pub struct Snapshot {
    files: BTreeMap<String, (Option<String>, FileId)>,
}

/// What identifies a local file's contents between two looks: a change to it changes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What [`Mirror::push_changes`] did.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub uploaded: usize,
    pub removed: usize,
    /// Objects another host changed or removed after the download: left as that host made
    /// them, this command's version not uploaded.
    pub conflicts: Vec<String>,
}

/// Objects are downloaded in pieces of this size, a few at a time.
const DOWNLOAD_PIECE: u64 = 8 << 20;

impl Mirror {
    /// Downloads every object of the store whole into the local copy (directories made,
    /// default attributes), for a command that reads or rewrites objects offline. Returns
    /// what was downloaded.
    pub fn download_all(&self) -> Result<Snapshot, MirrorError> {
        let root = self.store_root();
        let mut snapshot = Snapshot::default();
        for info in self.remote.list_all("")? {
            if info.key.starts_with(&format!("{}/", layout::META_DIR)) {
                continue;
            }
            if let Some(dir) = marker_dir(&info.key) {
                let path = root.join(dir);
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&path)
                    .map_err(local(&path))?;
                continue;
            }
            let path = root.join(&info.key);
            if let Some(parent) = path.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(local(parent))?;
            }
            self.download(&info, &path)?;
            let meta = std::fs::metadata(&path).map_err(local(&path))?;
            snapshot.files.insert(
                info.key.clone(),
                (info.version.etag.clone(), FileId::of(&meta)),
            );
        }
        Ok(snapshot)
    }

    fn download(&self, info: &ObjectInfo, path: &Path) -> Result<(), MirrorError> {
        use std::os::unix::fs::FileExt;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(local(path))?;
        let pieces: Vec<std::ops::Range<u64>> = (0..info.size)
            .step_by(DOWNLOAD_PIECE as usize)
            .map(|a| a..(a + DOWNLOAD_PIECE).min(info.size))
            .collect();
        for batch in pieces.chunks(4) {
            let bodies = self.remote.get_ranges(&info.key, batch)?;
            for (range, body) in batch.iter().zip(bodies) {
                if body.len() as u64 != range.end - range.start {
                    return Err(MirrorError::Other(format!(
                        "{} changed while it was downloaded",
                        info.key
                    )));
                }
                file.write_all_at(&body, range.start).map_err(local(path))?;
            }
        }
        file.sync_all().map_err(local(path))
    }

    /// Uploads the objects a command changed in a full copy (each over the version it was
    /// downloaded at), and removes those it removed.
    pub fn push_changes(&self, snapshot: &Snapshot) -> Result<PushReport, MirrorError> {
        let root = self.store_root();
        let mut report = PushReport::default();
        let mut seen = BTreeSet::new();
        let mut changed = Vec::new();
        walk(&root, "", &mut |key, path, meta| {
            if !meta.is_file() {
                return;
            }
            seen.insert(key.to_string());
            match snapshot.files.get(key) {
                Some((_, id)) if *id == FileId::of(meta) => {}
                Some((etag, _)) => {
                    changed.push((key.to_string(), path.to_path_buf(), etag.clone()))
                }
                None => changed.push((key.to_string(), path.to_path_buf(), None)),
            }
        })
        .map_err(local(&root))?;
        for (key, path, etag) in changed {
            let file = File::open(&path).map_err(local(&path))?;
            let mode = match etag {
                Some(etag) => WriteMode::Replace(Version {
                    etag: Some(etag),
                    version: None,
                }),
                None => WriteMode::Create,
            };
            let len = file.metadata().map_err(local(&path))?.len();
            let done = if len <= self.remote.config().part_size as u64 {
                let body = std::fs::read(&path).map_err(local(&path))?;
                self.remote.put(&key, body, mode)
            } else {
                // S3 has no condition on a multipart upload: check just before.
                match self.still_as_read(&key, &mode) {
                    Ok(true) => {
                        let mut reader = io::BufReader::new(file);
                        self.remote.put_multipart(&key, &mut reader)
                    }
                    Ok(false) => Err(RemoteError::Conflict {
                        op: "multipart PUT",
                        target: key.clone(),
                    }),
                    Err(e) => Err(e),
                }
            };
            match done {
                Ok(_) => report.uploaded += 1,
                Err(e) if e.is_conflict() => report.conflicts.push(key),
                Err(e) => return Err(e.into()),
            }
        }
        for (key, (etag, _)) in &snapshot.files {
            if seen.contains(key) {
                continue;
            }
            let read = WriteMode::Replace(Version {
                etag: etag.clone(),
                version: None,
            });
            if self.still_as_read(key, &read)? {
                self.remote.delete(key)?;
                report.removed += 1;
            } else {
                report.conflicts.push(key.clone());
            }
        }
        Ok(report)
    }
}

impl Mirror {
    /// Whether the object `key` is still as `mode` expects (absent for `Create`, at the
    /// version read for `Replace`); a small race remains until the request that follows.
    fn still_as_read(&self, key: &str, mode: &WriteMode) -> Result<bool, RemoteError> {
        let now = match self.remote.head(key) {
            Ok(info) => Some(info.version.etag),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        Ok(match (mode, now) {
            (WriteMode::Create, None) | (WriteMode::Overwrite, _) => true,
            (WriteMode::Replace(v), Some(etag)) => etag == v.etag,
            _ => false,
        })
    }
}

/// Where live mounts of remote stores say which cache they use, so that a command run on
/// the same store on this host can ask the mount to take a keystore change at once, and
/// `status` can list the mount's conflicts: `/run/ssefs/remote/STORE-ID` for root, else
/// under `$XDG_RUNTIME_DIR`. One entry per store: of two mounts of one store on one host,
/// the one mounted last.
fn registry_dir() -> PathBuf {
    if rustix::process::getuid().is_root() {
        return PathBuf::from("/run/ssefs/remote");
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("ssefs-remote")
}

/// A live mount's entry in the registry; removed when dropped.
#[derive(Debug)]
pub struct MountRecord {
    path: PathBuf,
}

impl Drop for MountRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Mirror {
    /// Records that this cache serves a mount of the store `store_id` on this host.
    pub fn register_mount(&self, store_id: &str) -> io::Result<MountRecord> {
        let dir = registry_dir();
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let path = dir.join(store_id);
        write_synced(&path, self.dir.as_os_str().as_encoded_bytes())?;
        Ok(MountRecord { path })
    }
}

/// The file in a cache directory by which a command asks the mount to sync its keystore.
const SYNC_REQUEST: &str = "sync.request";

/// Asks the mount of the store `store_id` on this host, if there is one, to take the
/// store's keystore now (after a command changed it), and waits up to `wait` for it.
/// `None` if no mount serves it here; else whether the mount took it in time.
pub fn request_sync(store_id: &str, wait: std::time::Duration) -> Option<bool> {
    let cache = mounted_copy(store_id)?.parent()?.to_path_buf();
    let request = cache.join(SYNC_REQUEST);
    if write_synced(&request, b"").is_err() {
        return Some(false);
    }
    let start = std::time::Instant::now();
    while request.exists() {
        if start.elapsed() >= wait {
            return Some(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(true)
}

/// The copies a mount of the store `store_id` on this host set aside because another host
/// wrote their objects first (its cache's `conflicts/`), sorted; empty if none is mounted.
pub fn conflicts_here(store_id: &str) -> Vec<PathBuf> {
    let Some(dir) = mounted_copy(store_id).and_then(|c| c.parent().map(|p| p.join("conflicts")))
    else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// The local copy (a store directory) of the store `store_id` if a mount on this host
/// serves it now: its cache is registered and still locked.
pub fn mounted_copy(store_id: &str) -> Option<PathBuf> {
    let text = std::fs::read(registry_dir().join(store_id)).ok()?;
    let cache = PathBuf::from(std::ffi::OsString::from_vec(text));
    let lock = File::open(cache.join(layout::LOCK_FILE)).ok()?;
    let free =
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
    (!free).then(|| cache.join("store"))
}

//! Close-to-open consistency between hosts: what a mount knows of a directory or an
//! object is trusted for `metadata_ttl`, then asked again. A directory is listed again
//! (one `LIST` and its marker) when it is read or a name in it is not found; an object is
//! checked again (one `HEAD`) when it is opened and nobody here has it open. A clean local
//! copy whose object changed is emptied in place (same inode, new size, nothing fetched);
//! one whose object is gone is removed; dirty copies and open files are never touched, so a
//! reader here never sees a mix of two versions.

use super::local_copy::{
    apply_attrs, is_dirty, lstat, make_placeholder, make_special, read_state, remove_any,
    reset_placeholder, walk,
};
use super::namespace::{DIR_MARKER, Marker, NodeAttrs, marker_key, parent_key};
use super::{ObjectInfo, RemoteError, RemoteStore};
use crate::store::layout;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many listing and check times are kept before those past the TTL are dropped.
const REMEMBERED: usize = 65_536;
/// Longer than a marker takes to be written after a change (every second, and retried).
const MARKER_LAG: Duration = Duration::from_secs(10);
/// How long a key this mount made or uploaded is remembered (longer than any listing).
const TOUCH_KEPT: Duration = Duration::from_secs(300);

/// When directories were listed and objects checked, and which files are open here.
#[derive(Debug)]
pub(super) struct Freshness {
    ttl: Duration,
    listed: Mutex<HashMap<String, Instant>>,
    checked: Mutex<HashMap<u64, Instant>>,
    open: Mutex<HashMap<u64, usize>>,
    /// Keys this mount made or uploaded, and when.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Freshness {
    pub(super) fn new(ttl: Duration) -> Freshness {
        Freshness {
            ttl,
            listed: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// This mount made or uploaded `key` just now.
    pub(super) fn touch(&self, key: &str) {
        let mut touched = lock(&self.touched);
        if touched.len() >= REMEMBERED {
            touched.retain(|_, at| at.elapsed() < TOUCH_KEPT);
        }
        touched.insert(key.to_string(), Instant::now());
    }

    fn touched_since(&self, key: &str, since: Instant) -> bool {
        lock(&self.touched).get(key).is_some_and(|at| *at >= since)
    }

    /// Whether this mount made `key` within `window` (a node only a marker records, whose
    /// marker is written within a second).
    fn touched_within(&self, key: &str, window: Duration) -> bool {
        lock(&self.touched)
            .get(key)
            .is_some_and(|at| at.elapsed() < window)
    }

    /// True if the listing of `dir` is older than the TTL, and then it counts as listed
    /// now (one thread lists it; the others go on with what the cache holds).
    pub(super) fn claim_dir(&self, dir: &str) -> bool {
        let mut listed = lock(&self.listed);
        if listed.len() >= REMEMBERED {
            listed.retain(|_, at| at.elapsed() < self.ttl);
        }
        match listed.get(dir) {
            Some(at) if at.elapsed() < self.ttl => false,
            _ => {
                listed.insert(dir.to_string(), Instant::now());
                true
            }
        }
    }

    /// True if the file `ino` was last checked longer than the TTL ago, and then it counts
    /// as checked now.
    pub(super) fn claim_file(&self, ino: u64) -> bool {
        let mut checked = lock(&self.checked);
        if checked.len() >= REMEMBERED {
            // What is older than the TTL would be checked again anyway.
            checked.retain(|_, at| at.elapsed() < self.ttl);
        }
        match checked.get(&ino) {
            Some(at) if at.elapsed() < self.ttl => false,
            _ => {
                checked.insert(ino, Instant::now());
                true
            }
        }
    }

    fn checked_now(&self, ino: u64) {
        lock(&self.checked).insert(ino, Instant::now());
    }

    /// One more open file of `ino`; true if it is the only one.
    pub(super) fn opened(&self, ino: u64) -> bool {
        let mut open = lock(&self.open);
        let n = open.entry(ino).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// One open file of `ino` fewer; true if that was the last.
    pub(super) fn closed(&self, ino: u64) -> bool {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ino);
                return true;
            }
        }
        false
    }

    fn is_open(&self, ino: u64) -> bool {
        lock(&self.open).contains_key(&ino)
    }
}

/// What a refresh changed in the local copy: the inodes of files emptied or removed (their
/// cached state is stale), and counts for the log.
#[derive(Debug, Default)]
pub(super) struct Refreshed {
    pub stale: Vec<u64>,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

/// Why a refresh stopped (what it did before stays done; the next use tries again).
#[derive(Debug, thiserror::Error)]
pub(super) enum RefreshError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{}: {source}", path.display())]
    Local {
        path: std::path::PathBuf,
        source: io::Error,
    },
}

fn local_err(path: &Path) -> impl FnOnce(io::Error) -> RefreshError + '_ {
    move |source| RefreshError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// The entry of `name` in `marker`, if the marker holds one.
fn entry_of<'m>(marker: Option<&'m Marker>, name: &str) -> Option<&'m NodeAttrs> {
    marker.and_then(|m| m.entries.get(&OsString::from(name)))
}

/// Lists the directory `dir` (a key; empty for the store's top) and brings its local copy
/// at `root/dir` in line: new objects get placeholders, changed clean ones are emptied,
/// vanished clean ones removed, new subdirectories made; the marker's attributes applied
/// to what changed. Dirty and open files stay as they are.
pub(super) fn refresh_dir(
    remote: &RemoteStore,
    marker_key_bytes: &[u8; 32],
    fresh: &Freshness,
    root: &Path,
    dir: &str,
) -> Result<Refreshed, RefreshError> {
    // What this mount made or uploaded since the listing began is newer than the listing:
    // left alone.
    let listed_at = Instant::now();
    let key_of = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    let newer = |name: &str| fresh.touched_since(&key_of(name), listed_at);
    let page = remote.list_dir(dir)?;
    let local_dir = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    let name_of = |key: &str| key.rsplit('/').next().unwrap_or(key).to_string();
    let mut objects: BTreeMap<String, ObjectInfo> = BTreeMap::new();
    let mut has_marker = false;
    // Only direct children (an object store may also answer with the directory itself).
    let child = |key: &str| !key.is_empty() && key != dir && parent_key(key) == dir;
    for info in page.objects {
        if !child(&info.key) {
            continue;
        }
        let name = name_of(&info.key);
        if name == DIR_MARKER {
            has_marker = true;
            continue;
        }
        objects.insert(name, info);
    }
    let subdirs: BTreeSet<String> = page
        .dirs
        .iter()
        .map(|d| d.trim_end_matches('/'))
        .filter(|d| child(d))
        .map(name_of)
        .filter(|n| !(dir.is_empty() && n == layout::META_DIR))
        .collect();
    objects.retain(|name, _| !subdirs.contains(name));
    let marker = if has_marker {
        match remote.get(&marker_key(dir)) {
            Ok((body, _)) => match Marker::decode(marker_key_bytes, dir, &body) {
                Ok(marker) => Some(marker),
                Err(e) => {
                    log::error!("the marker of {dir:?} is refused: {e}; its attributes unused");
                    None
                }
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let mut done = Refreshed::default();
    // Objects: new, changed, or as they were.
    for (name, info) in &objects {
        let path = local_dir.join(name);
        let etag = info.version.etag.as_deref();
        let node =
            entry_of(marker.as_ref(), name).filter(|n| n.mode & libc::S_IFMT == libc::S_IFREG);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                make_placeholder(&path, info.size, etag).map_err(local_err(&path))?;
                give_attrs(&path, node, info).map_err(local_err(&path))?;
                if let Ok(meta) = std::fs::metadata(&path) {
                    fresh.checked_now(meta.ino());
                }
                done.added += 1;
            }
            Err(e) => return Err(local_err(&path)(e)),
            Ok(meta) if meta.is_file() => {
                fresh.checked_now(meta.ino());
                let Some((dirty, cached)) = read_state(&path) else {
                    continue;
                };
                if dirty || fresh.is_open(meta.ino()) || cached.as_deref() == etag || newer(name) {
                    continue;
                }
                reset_placeholder(&path, info.size, etag).map_err(local_err(&path))?;
                give_attrs(&path, node, info).map_err(local_err(&path))?;
                done.stale.push(meta.ino());
                done.changed += 1;
            }
            // Another kind of node where the store now has an object: left alone.
            Ok(_) => {}
        }
    }
    // Subdirectories that are new here.
    for name in &subdirs {
        let path = local_dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let key = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        // A directory made by ssefs has its marker from mkdir on; a prefix without one is
        // a directory being removed (some stores list an emptied prefix for a while).
        let body = match remote.get(&marker_key(&key)) {
            Ok((body, _)) => body,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        std::fs::create_dir(&path).map_err(local_err(&path))?;
        match Marker::decode(marker_key_bytes, &key, &body) {
            Ok(sub) => apply_attrs(&path, &sub.dir).map_err(local_err(&path))?,
            Err(e) => log::error!("the marker of {key:?} is refused: {e}"),
        }
        done.added += 1;
    }
    // Nodes only the marker holds (symbolic links, devices), new here.
    if let Some(marker) = &marker {
        for (name, node) in &marker.entries {
            let kind = node.mode & libc::S_IFMT;
            if kind == libc::S_IFREG || kind == libc::S_IFDIR {
                continue;
            }
            let path = local_dir.join(name);
            if lstat(&path).is_err() {
                make_special(&path, node).map_err(local_err(&path))?;
                done.added += 1;
            }
        }
    }
    // What the store no longer has.
    let entries = std::fs::read_dir(&local_dir).map_err(local_err(&local_dir))?;
    for entry in entries {
        let entry = entry.map_err(local_err(&local_dir))?;
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            continue;
        };
        if (dir.is_empty() && name == layout::META_DIR) || name == DIR_MARKER {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if newer(name) {
            continue;
        }
        let gone = if meta.is_file() {
            !objects.contains_key(name)
                && read_state(&path).is_some_and(|(dirty, etag)| !dirty && etag.is_some())
                && !fresh.is_open(meta.ino())
        } else if meta.is_dir() {
            // A directory exists in the store while its marker does (made at mkdir).
            !subdirs.contains(name) && !holds_local_work(&path)
        } else {
            marker.is_some()
                && entry_of(marker.as_ref(), name).is_none()
                && !fresh.touched_within(&key_of(name), MARKER_LAG)
        };
        if gone {
            remove_any(&path).map_err(local_err(&path))?;
            if meta.is_file() {
                done.stale.push(meta.ino());
            }
            done.removed += 1;
        }
    }
    Ok(done)
}

/// Whether a local directory holds a file not uploaded (its removal would lose it).
fn holds_local_work(dir: &Path) -> bool {
    let mut found = false;
    let walked = walk(dir, "-", &mut |_, path, meta| {
        if meta.is_file() && is_dirty(path) {
            found = true;
        }
    });
    found || walked.is_err()
}

/// The marker's attributes for a file, else its object's modification time.
fn give_attrs(path: &Path, node: Option<&NodeAttrs>, info: &ObjectInfo) -> io::Result<()> {
    match node {
        Some(node) => apply_attrs(path, node),
        None => {
            let mtime = crate::store::backing::Timestamp {
                secs: info.modified,
                nanos: 0,
            };
            super::local_copy::set_times(path, mtime, mtime)
        }
    }
}

//! [`RemoteBacking`]: the [`Backing`] of a mounted remote store. The mount runs on a local
//! copy of the store in the cache directory (the same layout as a local store), and this
//! backing keeps that copy and the object store in step:
//!
//! - a file's bytes are fetched when first read, only the pages asked for (ranged GETs, a
//!   growing window for sequential readers, the whole file when it is small); what is not
//!   fetched is a hole in the local file;
//! - a file is marked dirty (durably) before its first change, fetched whole first, and
//!   uploaded at `fsync` (which returns after the upload) and when its last writer closes,
//!   conditional on the version it was read at;
//! - namespace changes go to the object store as they happen (`mkdir`, `unlink`, `rename`),
//!   and attributes the object store cannot keep are written to the directory markers of
//!   `namespace.rs`, within a second and at every `fsync`;
//! - clean files are evicted least recently used above the cache size (their pages are
//!   punched out); dirty ones never are.
//!
//! The state of each cached file is an extended attribute of the local file
//! ([`CACHE_ATTR`]): dirty or clean, the version it was last fetched or uploaded at, and
//! whether all of it is present. Files under `.ssefs/` (the keystore, temporary files) are
//! local only.

use super::local_copy::{
    CACHE_ATTR, local_xattrs, lstat, remove_any, reset_placeholder, set_times,
};
use super::namespace::{DIR_MARKER, Marker, NodeAttrs, child_key, marker_key, parent_key};
use super::refresh::{Freshness, refresh_dir};
use super::{ObjectInfo, RemoteError, RemoteStore, Version, WriteMode};
use crate::store::backing::{
    Backing, DirEntryInfo, FsUsage, LocalBacking, RenameMode, Stat, TimeUpdate,
};
use crate::store::layout;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Fetches are whole pages of this size.
const PAGE: u64 = 4096;
/// A refused upload is compared with the store's object (an earlier upload's lost answer)
/// only below this size; above, it is treated as a conflict.
const COMPARED_BELOW: u64 = 256 << 20;
/// Files this small are fetched whole on first read.
const WHOLE_BELOW: u64 = 1 << 20;
/// The first and the largest read-ahead window of a sequential reader.
const FIRST_WINDOW: u64 = 256 << 10;
const MAX_WINDOW: u64 = 32 << 20;
/// How far past the last fetch a miss may start and still count as sequential.
const SEQUENTIAL_SLACK: u64 = 4 << 20;
/// Fetched in one ranged GET at most (larger ranges are split, fetched in parallel).
const MAX_RANGE: u64 = 4 << 20;
/// A first read of a small file fetches up to this many small untouched files of its
/// directory with it, in parallel (as `ls -l`, `cp -r` and `tar c` read them all next).
const SIBLINGS: usize = 64;
/// ... and up to this many bytes of them (held in memory while they arrive).
const SIBLING_BYTES: u64 = 8 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The errno a failed request gives the caller.
pub(super) fn remote_errno(e: &RemoteError) -> io::Error {
    match e {
        RemoteError::Denied { .. } => errno(libc::EACCES),
        RemoteError::NotFound { .. } => errno(libc::ESTALE),
        _ => errno(libc::EIO),
    }
}

/// Sorted, disjoint `[start, end)` ranges.
#[derive(Debug, Default, Clone)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        out.push((s, e));
        out.sort_unstable();
        self.0 = out;
    }
    /// The parts of `[start, end)` not covered.
    fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for &(a, b) in &self.0 {
            if b <= at {
                continue;
            }
            if a >= end {
                break;
            }
            if a > at {
                out.push((at, a.min(end)));
            }
            at = at.max(b);
            if at >= end {
                break;
            }
        }
        if at < end {
            out.push((at, end));
        }
        out
    }
    fn bytes(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }
}

/// What a cached file's attribute records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Persisted {
    dirty: bool,
    complete: bool,
    etag: Option<String>,
}

impl Persisted {
    fn encode(&self) -> String {
        format!(
            "v1 dirty={} complete={} etag={}",
            u8::from(self.dirty),
            u8::from(self.complete),
            self.etag.as_deref().unwrap_or("-")
        )
    }
    fn decode(bytes: &[u8]) -> Option<Persisted> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let dirty = parts.next()?.strip_prefix("dirty=")? == "1";
        let complete = parts.next()?.strip_prefix("complete=")? == "1";
        let etag = parts.next()?.strip_prefix("etag=")?;
        Some(Persisted {
            dirty,
            complete,
            etag: (etag != "-").then(|| etag.to_string()),
        })
    }
}

/// The state of one cached file while the mount knows it.
#[derive(Debug)]
struct State {
    persisted: Persisted,
    /// The pages present locally (meaningful while not complete).
    present: Ranges,
    /// The local file's length (the object's size while clean).
    len: u64,
    /// The file's key (relative to the store), kept up to date by renames.
    key: String,
    last_used: u64,
    /// Where a sequential reader's next read starts, and its read-ahead window.
    next_read: u64,
    window: u64,
    /// Pages announced by `will_need`, fetched with the next miss.
    hints: Vec<(u64, u64)>,
    /// The bytes of this file counted in the cache's size.
    counted: u64,
    /// Where this file's copy was set aside when its upload lost to another writer; it is
    /// never uploaded again, and once nobody here has it open it takes the store's version.
    conflict: Option<PathBuf>,
}

impl State {
    /// The bytes of the file held locally.
    fn resident(&self) -> u64 {
        if self.persisted.complete {
            self.len
        } else {
            self.present.bytes()
        }
    }
}

#[derive(Debug)]
struct Entry {
    ino: u64,
    state: RwLock<State>,
}

#[derive(Debug, Clone)]
enum Slot {
    /// Not part of the remote namespace (under `.ssefs/`).
    Local,
    Tracked(Arc<Entry>),
}

/// Where a node is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Under `.ssefs/`: local only.
    Meta,
    /// In the namespace, with this key (empty for the store's top).
    Node(String),
}

/// The backing of a mounted remote store (see the module documentation).
pub struct RemoteBacking {
    local: LocalBacking,
    remote: Arc<RemoteStore>,
    /// The local copy's root (canonical).
    root: PathBuf,
    marker_key: zeroize::Zeroizing<[u8; 32]>,
    entries: Mutex<HashMap<u64, Slot>>,
    cache_size: u64,
    used: AtomicU64,
    clock: AtomicU64,
    /// Directories whose markers must be rewritten, and the journal that keeps that list
    /// across a crash.
    dirty_dirs: Mutex<BTreeSet<String>>,
    journal: Mutex<File>,
    /// Serialises marker writes (a flush must not overtake an older one).
    marker_writes: Mutex<()>,
    /// Files being fetched by a prefetch of small siblings: loading their state waits.
    prefetching: Mutex<std::collections::HashSet<u64>>,
    prefetched: std::sync::Condvar,
    /// Set when an upload failed because the object store could not be reached.
    unreachable: std::sync::atomic::AtomicBool,
    /// When directories were listed and objects checked again (close-to-open consistency).
    fresh: Freshness,
    /// Where copies that lost to another writer are kept.
    conflicts: PathBuf,
    /// Whether a writer's `close` uploads before it returns: while other hosts have the
    /// store mounted (close-to-open for them); alone, the upload follows the close.
    close_uploads: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RemoteBacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBacking")
            .field("root", &self.root)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl RemoteBacking {
    /// A backing over the local copy at `root` of the store `remote` reaches; `journal` is
    /// the file listing directories whose markers are not written yet.
    pub(super) fn new(
        remote: Arc<RemoteStore>,
        root: PathBuf,
        marker_key: [u8; 32],
        cache_size: u64,
        journal: File,
        metadata_ttl: std::time::Duration,
    ) -> RemoteBacking {
        let conflicts = root
            .parent()
            .map(|p| p.join("conflicts"))
            .unwrap_or_else(|| root.join("conflicts"));
        RemoteBacking {
            local: LocalBacking,
            remote,
            root,
            marker_key: zeroize::Zeroizing::new(marker_key),
            entries: Mutex::new(HashMap::new()),
            cache_size,
            used: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            dirty_dirs: Mutex::new(BTreeSet::new()),
            journal: Mutex::new(journal),
            marker_writes: Mutex::new(()),
            prefetching: Mutex::new(std::collections::HashSet::new()),
            prefetched: std::sync::Condvar::new(),
            unreachable: std::sync::atomic::AtomicBool::new(false),
            fresh: Freshness::new(metadata_ttl),
            conflicts,
            close_uploads: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether other hosts have the store mounted now: a writer's `close` then uploads
    /// before it returns (see [`RemoteBacking::publish`]).
    pub fn set_shared(&self, shared: bool) {
        let was = self.close_uploads.swap(shared, Ordering::Relaxed);
        if was != shared {
            log::info!(
                "{}",
                if shared {
                    "another host has the store mounted: a close now returns once its file is \
                     uploaded"
                } else {
                    "no other host has the store mounted: files are uploaded just after close"
                }
            );
        }
    }

    /// Lists the directory `dir` again if its listing is older than the TTL (see
    /// refresh.rs). A failure leaves what the cache holds, and is tried again after the TTL.
    /// True if it listed the directory.
    fn refresh_if_stale(&self, dir: &str) -> bool {
        if !self.fresh.claim_dir(dir) {
            return false;
        }
        match refresh_dir(&self.remote, &self.marker_key, &self.fresh, &self.root, dir) {
            Ok(done) => {
                for ino in &done.stale {
                    self.forget(*ino);
                }
                if done.added + done.changed + done.removed > 0 {
                    log::debug!(
                        "{dir:?} listed again: {} new, {} changed, {} removed by other hosts",
                        done.added,
                        done.changed,
                        done.removed
                    );
                }
            }
            Err(e) => {
                log::warn!("{dir:?} could not be listed again (what the cache holds is shown): {e}")
            }
        }
        true
    }

    /// The directory `dir` (a descriptor) listed again if stale; for a name not found in it.
    fn refresh_parent(&self, dir: BorrowedFd<'_>) -> bool {
        match self.place_of(dir) {
            Ok(Place::Node(key)) => self.refresh_if_stale(&key),
            _ => false,
        }
    }

    /// Checks a clean file opened while nobody here had it open against its object (one
    /// `HEAD`, at most once per TTL): a changed object empties the local copy in place, a
    /// removed one removes it (`ENOENT`). An unreachable store serves what the cache holds.
    fn revalidate(&self, file: &File, ino: u64) -> io::Result<()> {
        let Place::Node(key) = self.place_of(file.as_fd())? else {
            return Ok(());
        };
        let Some(persisted) = self.read_persisted(file.as_fd())? else {
            return Ok(());
        };
        if persisted.dirty || persisted.etag.is_none() {
            return Ok(());
        }
        let path = self.local.path_of(file.as_fd())?;
        match self.remote.head(&key) {
            Ok(info) if info.version.etag == persisted.etag => Ok(()),
            Ok(info) => {
                self.take_store_version(&path, ino, &info)?;
                log::debug!("{key}: changed by another host; the cached copy was dropped");
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                remove_any(&path)?;
                self.forget(ino);
                Err(errno(libc::ENOENT))
            }
            Err(e) => {
                log::warn!("{key}: not checked against the object store (cached copy used): {e}");
                Ok(())
            }
        }
    }

    /// The object store this backing keeps in step.
    pub fn remote(&self) -> &Arc<RemoteStore> {
        &self.remote
    }

    pub(super) fn marker_key(&self) -> &[u8; 32] {
        &self.marker_key
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    // ---- where things are ----

    fn place_of_path(&self, path: &Path) -> io::Result<Place> {
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| errno(libc::EXDEV))?;
        let mut parts = rel.components();
        if let Some(first) = parts.next()
            && first.as_os_str() == layout::META_DIR
        {
            return Ok(Place::Meta);
        }
        let text = rel.to_str().ok_or_else(|| errno(libc::EINVAL))?;
        Ok(Place::Node(text.to_string()))
    }

    fn place_of(&self, fd: BorrowedFd<'_>) -> io::Result<Place> {
        self.place_of_path(&self.local.path_of(fd)?)
    }

    /// The place of `name` in the directory `dir`. Names the object store cannot hold
    /// (not UTF-8) and the marker's name are refused in the namespace.
    fn child_place(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Place> {
        match self.place_of(dir)? {
            Place::Meta => Ok(Place::Meta),
            Place::Node(dir) => {
                if dir.is_empty() && name == layout::META_DIR {
                    return Ok(Place::Meta);
                }
                if name == DIR_MARKER {
                    return Err(errno(libc::EINVAL));
                }
                child_key(&dir, name)
                    .map(Place::Node)
                    .ok_or_else(|| errno(libc::EINVAL))
            }
        }
    }

    // ---- the state of cached files ----

    fn read_persisted(&self, fd: BorrowedFd<'_>) -> io::Result<Option<Persisted>> {
        match self.local.get_xattr(fd, OsStr::new(CACHE_ATTR)) {
            Ok(bytes) => Ok(Persisted::decode(&bytes)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_persisted(&self, fd: BorrowedFd<'_>, p: &Persisted) -> io::Result<()> {
        self.local
            .set_xattr(fd, OsStr::new(CACHE_ATTR), p.encode().as_bytes(), 0)
    }

    /// The tracked entry of an open local file, loaded from its attribute the first time;
    /// `None` for files outside the namespace.
    fn entry(&self, file: &File) -> io::Result<Option<Arc<Entry>>> {
        let meta = file.metadata()?;
        // A file unlinked while open has no key any more: what is written to it stays local.
        if !meta.is_file() || meta.nlink() == 0 {
            return Ok(None);
        }
        if let Some(slot) = lock(&self.entries).get(&meta.ino()) {
            return Ok(match slot {
                Slot::Local => None,
                Slot::Tracked(entry) => Some(Arc::clone(entry)),
            });
        }
        self.wait_for_prefetch(meta.ino());
        let key = match self.place_of(file.as_fd())? {
            Place::Meta => {
                lock(&self.entries).insert(meta.ino(), Slot::Local);
                return Ok(None);
            }
            Place::Node(key) => key,
        };
        let persisted = match self.read_persisted(file.as_fd())? {
            Some(p) => p,
            None => {
                // A file of the namespace this cache never uploaded.
                let p = Persisted {
                    dirty: true,
                    complete: true,
                    etag: None,
                };
                self.write_persisted(file.as_fd(), &p)?;
                p
            }
        };
        let present = if persisted.complete {
            Ranges::default()
        } else {
            scan_present(file, meta.len())?
        };
        let entry = Arc::new(Entry {
            ino: meta.ino(),
            state: RwLock::new(State {
                persisted,
                present,
                len: meta.len(),
                key,
                last_used: self.tick(),
                next_read: 0,
                window: 0,
                hints: Vec::new(),
                counted: 0,
                conflict: None,
            }),
        });
        let mut entries = lock(&self.entries);
        let slot = entries.entry(meta.ino()).or_insert_with(|| {
            if let Ok(mut st) = entry.state.write() {
                let resident = st.resident();
                self.recount(&mut st, resident);
            }
            Slot::Tracked(Arc::clone(&entry))
        });
        Ok(match slot {
            Slot::Local => None,
            Slot::Tracked(e) => Some(Arc::clone(e)),
        })
    }

    fn wait_for_prefetch(&self, ino: u64) {
        let mut busy = lock(&self.prefetching);
        while busy.contains(&ino) {
            busy = self
                .prefetched
                .wait(busy)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Fetches, in parallel, small files of `key`'s directory that nothing has read yet:
    /// each whole, recorded complete. Best effort: a file that fails is simply left.
    fn prefetch_siblings(&self, key: &str) {
        let dir_key = parent_key(key);
        let Ok(listing) = std::fs::read_dir(self.root.join(dir_key)) else {
            return;
        };
        let name = key.rsplit('/').next().unwrap_or(key);
        let mut names: Vec<String> = listing
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != name)
            .collect();
        names.sort();
        // Those after this one first: the order `ls` and `tar` go in.
        let split = names.partition_point(|n| n.as_str() < name);
        names.rotate_left(split);
        let mut chosen: Vec<(File, u64, String, u64, Persisted)> = Vec::new();
        let mut bytes = 0;
        for sibling in names.into_iter().take(4 * SIBLINGS) {
            if chosen.len() >= SIBLINGS || bytes >= SIBLING_BYTES {
                break;
            }
            let Some(sibling_key) = child_key(dir_key, OsStr::new(&sibling)) else {
                continue;
            };
            let path = self.root.join(&sibling_key);
            let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path)
            else {
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            if !meta.is_file() || meta.len() == 0 || meta.len() > WHOLE_BELOW {
                continue;
            }
            // Nothing of it fetched yet (its attribute may take a block: look for data).
            if !scan_present(&file, meta.len()).is_ok_and(|r| r.0.is_empty()) {
                continue;
            }
            let Ok(Some(p)) = self.read_persisted(file.as_fd()) else {
                continue;
            };
            if p.dirty || p.complete {
                continue;
            }
            {
                let entries = lock(&self.entries);
                let mut busy = lock(&self.prefetching);
                if entries.contains_key(&meta.ino()) || !busy.insert(meta.ino()) {
                    continue;
                }
            }
            bytes += meta.len();
            chosen.push((file, meta.ino(), sibling_key, meta.len(), p));
        }
        if chosen.is_empty() {
            return;
        }
        let wanted: Vec<(String, u64)> = chosen
            .iter()
            .map(|(_, _, key, len, _)| (key.clone(), *len))
            .collect();
        let started = std::time::Instant::now();
        let bodies = self.remote.get_many(&wanted);
        log::debug!(
            "prefetched {} small files of {dir_key:?} in {:?}",
            wanted.len(),
            started.elapsed()
        );
        for ((file, _, key, len, persisted), body) in chosen.iter().zip(bodies) {
            let Ok(body) = body else {
                continue;
            };
            if body.len() as u64 != *len {
                log::warn!("{key} changed size under the mount; not prefetched");
                continue;
            }
            let Ok(times) = file_times(file) else {
                continue;
            };
            if file.write_all_at(&body, 0).is_err() || file.set_times(times).is_err() {
                continue;
            }
            let done = Persisted {
                complete: true,
                ..persisted.clone()
            };
            let _ = self.write_persisted(file.as_fd(), &done);
        }
        {
            let mut busy = lock(&self.prefetching);
            for (_, ino, _, _, _) in &chosen {
                busy.remove(ino);
            }
        }
        self.prefetched.notify_all();
        // Counted in the cache's size (and so evictable) like any other file.
        for (file, _, _, _, _) in &chosen {
            let _ = self.entry(file);
        }
    }

    fn forget(&self, ino: u64) {
        let gone = lock(&self.entries).remove(&ino);
        if let Some(Slot::Tracked(entry)) = gone
            && let Ok(mut st) = entry.state.write()
        {
            self.recount(&mut st, 0);
        }
    }

    /// Sets the bytes of an entry counted in the cache's size to `now`.
    fn recount(&self, st: &mut State, now: u64) {
        let before = std::mem::replace(&mut st.counted, now);
        if now >= before {
            self.used.fetch_add(now - before, Ordering::Relaxed);
        } else {
            let less = before - now;
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(less))
                });
        }
    }

    /// Counts a cached file found when the mount starts, so that it can be evicted.
    pub(super) fn adopt(&self, path: &Path) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        self.entry(&file).map(|_| ())
    }

    /// Fetches what a read of `[offset, offset + len)` needs that is not present.
    fn fetch_for_read(&self, file: &File, st: &mut State, offset: u64, len: u64) -> io::Result<()> {
        let size = st.len;
        let (start, mut end) = if size <= WHOLE_BELOW {
            (0, size)
        } else {
            (
                offset / PAGE * PAGE,
                (offset + len).div_ceil(PAGE).saturating_mul(PAGE).min(size),
            )
        };
        // A miss at (or just past) where the last fetch ended is a sequential reader's: the
        // window grows. Reads inside a fetched window never miss, so the next miss of a
        // sequential reader comes at its end (the block map's meta pages are inside it).
        // Reads of one stream arrive from several request threads, a little out of order:
        // a miss somewhat behind the frontier still belongs to it (the window is kept).
        let ahead = offset <= st.next_read.saturating_add(SEQUENTIAL_SLACK);
        let behind = offset + SEQUENTIAL_SLACK + st.window >= st.next_read;
        if offset > 0 && ahead && behind {
            if offset + PAGE >= st.next_read {
                st.window = (st.window * 2).clamp(FIRST_WINDOW, MAX_WINDOW);
            }
            end = (end + st.window.max(FIRST_WINDOW)).min(size);
        } else {
            st.window = 0;
        }
        let mut frontier = end.max(if st.window > 0 { st.next_read } else { 0 });
        let mut wanted = st.present.missing(start, end);
        for (a, b) in std::mem::take(&mut st.hints) {
            let (a, b) = (
                a / PAGE * PAGE,
                b.div_ceil(PAGE).saturating_mul(PAGE).min(size),
            );
            wanted.extend(st.present.missing(a, b));
            // Read-ahead hints of a sequential reader extend what it has fetched; the block
            // map's hints (far-apart pages) do not.
            if b - a > PAGE && a <= frontier.saturating_add(SEQUENTIAL_SLACK) {
                frontier = frontier.max(b);
            }
        }
        st.next_read = frontier;
        log::trace!(
            "miss at {offset}+{len}: window {}, fetching to {end}",
            st.window
        );
        self.fetch(file, st, wanted)
    }

    /// Fetches the ranges `wanted` of the entry's object into the local file.
    fn fetch(&self, file: &File, st: &mut State, wanted: Vec<(u64, u64)>) -> io::Result<()> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut sorted = wanted;
        sorted.sort_unstable();
        for (a, b) in sorted {
            if a >= b {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.end >= a => last.end = last.end.max(b),
                _ => ranges.push(a..b),
            }
        }
        let ranges: Vec<Range<u64>> = ranges
            .into_iter()
            .flat_map(|r| {
                (r.start..r.end)
                    .step_by(MAX_RANGE as usize)
                    .map(move |a| a..(a + MAX_RANGE).min(r.end))
            })
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let bodies = self.remote.get_ranges(&st.key, &ranges).map_err(|e| {
            log::error!("cannot fetch {}: {e}", st.key);
            remote_errno(&e)
        })?;
        let writer = reopen_for_writing(file)?;
        let times = file_times(&writer)?;
        let mut fetched = 0;
        for (range, body) in ranges.iter().zip(&bodies) {
            if body.len() as u64 != range.end - range.start {
                log::error!(
                    "fetching {}: the object store returned {} bytes for {} bytes at {} \
                     (changed under the mount?)",
                    st.key,
                    body.len(),
                    range.end - range.start,
                    range.start
                );
                return Err(errno(libc::EIO));
            }
            writer.write_all_at(body, range.start)?;
            st.present.insert(range.start, range.end);
            fetched += body.len() as u64;
        }
        // Fetching is not a change: the file keeps its times.
        writer.set_times(times)?;
        let counted = st.counted + fetched;
        self.recount(st, counted);
        if st.present.missing(0, st.len).is_empty() {
            st.persisted.complete = true;
            self.write_persisted(writer.as_fd(), &st.persisted)?;
        }
        Ok(())
    }

    /// Before the first change of a clean file: fetches what is missing and records it
    /// dirty, durably, so a crash never leaves a changed file that looks clean.
    fn make_dirty(&self, file: &File, st: &mut State) -> io::Result<()> {
        if st.persisted.dirty {
            return Ok(());
        }
        if !st.persisted.complete {
            let missing = st.present.missing(0, st.len);
            self.fetch(file, st, missing)?;
            st.persisted.complete = true;
        }
        st.persisted.dirty = true;
        let writer = reopen_for_writing(file)?;
        self.write_persisted(writer.as_fd(), &st.persisted)?;
        writer.sync_all()
    }

    /// Uploads a dirty file, conditional on the version it was read at (or on nothing
    /// being there, for a new file), and records it clean.
    fn upload(&self, file: &File, st: &mut State) -> io::Result<()> {
        if !st.persisted.dirty {
            return Ok(());
        }
        let key = st.key.clone();
        if let Some(aside) = st.conflict.clone() {
            // The kept copy follows what this host writes until it closes the file.
            self.copy_aside(file, &aside)?;
            log::error!(
                "{key}: not uploaded: another host wrote it first; this host's version is kept \
                 in {}",
                aside.display()
            );
            return Err(errno(libc::EIO));
        }
        let mode = match &st.persisted.etag {
            Some(etag) => WriteMode::Replace(Version {
                etag: Some(etag.clone()),
                version: None,
            }),
            None => WriteMode::Create,
        };
        let len = file.metadata()?.len();
        let part = self.remote.config().part_size as u64;
        let put = if len <= part {
            let mut body = vec![0u8; len as usize];
            file.read_exact_at(&mut body, 0)?;
            self.remote.put(&key, body, mode)
        } else {
            self.check_condition(&key, &mode)
                .and_then(|()| self.remote.put_multipart(&key, &mut ReadAt::new(file)))
        };
        let version = match put {
            Ok(v) => v,
            Err(e) if e.is_conflict() && self.store_holds(file, &key, len) => {
                // An earlier upload of these very bytes reached the store though its answer
                // was lost (the store stopped after it): it is this version, not a conflict.
                log::info!("{key}: an upload whose answer was lost had reached the store");
                Version::default()
            }
            Err(e) if e.is_conflict() => {
                let aside = self.set_aside(file, &key)?;
                log::error!(
                    "{key} was changed or created by another host since this host read it; \
                     not overwriting it: this host's version is kept in {} (fsync gets EIO); \
                     once closed here, the file shows the store's version",
                    aside.display()
                );
                st.conflict = Some(aside);
                return Err(errno(libc::EIO));
            }
            Err(e) => {
                log::error!("cannot upload {key}: {e}");
                if matches!(
                    e,
                    RemoteError::Unreachable { .. } | RemoteError::TimedOut { .. }
                ) {
                    self.unreachable.store(true, Ordering::Relaxed);
                }
                return Err(remote_errno(&e));
            }
        };
        self.unreachable.store(false, Ordering::Relaxed);
        let etag = match version.etag {
            Some(etag) => Some(etag),
            None => self
                .remote
                .head(&key)
                .ok()
                .and_then(|info| info.version.etag),
        };
        self.fresh.touch(&key);
        st.persisted.dirty = false;
        st.persisted.complete = true;
        st.persisted.etag = etag;
        st.len = len;
        self.recount(st, len);
        let writer = reopen_for_writing(file)?;
        self.write_persisted(writer.as_fd(), &st.persisted)?;
        self.note_dir(parent_key(&key));
        Ok(())
    }

    /// Whether the store's object `key` is byte for byte the local file (of `len` bytes): a
    /// HEAD, and a GET when the sizes agree. False when that cannot be told.
    fn store_holds(&self, file: &File, key: &str, len: u64) -> bool {
        if len > COMPARED_BELOW {
            return false;
        }
        match self.remote.head(key) {
            Ok(info) if info.size == len => {}
            _ => return false,
        }
        let Ok((body, _)) = self.remote.get(key) else {
            return false;
        };
        let mut local = vec![0u8; body.len()];
        body.len() as u64 == len && file.read_exact_at(&mut local, 0).is_ok() && local == body
    }

    /// Copies a file whose upload lost to another writer into the conflicts directory,
    /// durably, under its key (slashes as `%2F`) and the time.
    fn set_aside(&self, file: &File, key: &str) -> io::Result<PathBuf> {
        let when = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = self
            .conflicts
            .join(format!("{}.{when}", key.replace('/', "%2F")));
        self.copy_aside(file, &aside)?;
        Ok(aside)
    }

    /// Writes the whole of `file` to `aside`, durably.
    fn copy_aside(&self, file: &File, aside: &Path) -> io::Result<()> {
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(aside)?;
        io::copy(&mut ReadAt::new(file), &mut copy)?;
        copy.sync_all()?;
        File::open(&self.conflicts)?.sync_all()
    }

    /// Once nobody here has a conflicted file open, it takes the store's version (its own
    /// is in the conflicts directory).
    fn settle_conflict(&self, file: &File) -> io::Result<()> {
        let Some(entry) = self.entry(file)? else {
            return Ok(());
        };
        let st = entry.state.read().map_err(|_| errno(libc::EIO))?;
        if st.conflict.is_none() {
            return Ok(());
        }
        let info = self.remote.head(&st.key).map_err(|e| remote_errno(&e))?;
        let path = self.local.path_of(file.as_fd())?;
        drop(st);
        self.take_store_version(&path, entry.ino, &info)
    }

    /// Makes the clean local copy at `path` (inode `ino`) the object's version `info`: emptied
    /// in place (nothing fetched), dated as the object, its cached state dropped.
    fn take_store_version(&self, path: &Path, ino: u64, info: &ObjectInfo) -> io::Result<()> {
        reset_placeholder(path, info.size, info.version.etag.as_deref())?;
        let mtime = crate::store::backing::Timestamp {
            secs: info.modified,
            nanos: 0,
        };
        set_times(path, mtime, mtime)?;
        self.forget(ino);
        Ok(())
    }

    /// A multipart upload has no condition: check it just before (a small race, logged).
    fn check_condition(&self, key: &str, mode: &WriteMode) -> Result<(), RemoteError> {
        let now = match self.remote.head(key) {
            Ok(info) => Some(info.version.etag),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let ok = match (mode, now) {
            (WriteMode::Create, None) | (WriteMode::Overwrite, _) => true,
            (WriteMode::Replace(v), Some(etag)) => etag == v.etag,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(RemoteError::Conflict {
                op: "multipart PUT",
                target: key.to_string(),
            })
        }
    }

    /// Uploads an open file if it is dirty.
    fn upload_file(&self, file: &File) -> io::Result<()> {
        let Some(entry) = self.entry(file)? else {
            return Ok(());
        };
        let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
        self.upload(file, &mut st)
    }

    /// Evicts clean, idle files, least recently used first, until the cache is within its
    /// size (dirty ones are never evicted).
    pub(super) fn evict(&self) {
        if self.used.load(Ordering::Relaxed) <= self.cache_size {
            return;
        }
        let mut candidates: Vec<(u64, Arc<Entry>)> = lock(&self.entries)
            .values()
            .filter_map(|slot| match slot {
                Slot::Tracked(e) => Some(Arc::clone(e)),
                Slot::Local => None,
            })
            .filter_map(|e| {
                let st = e.state.try_read().ok()?;
                let bytes = if st.persisted.complete {
                    st.len
                } else {
                    st.present.bytes()
                };
                (!st.persisted.dirty && bytes > 0).then(|| (st.last_used, Arc::clone(&e)))
            })
            .collect();
        candidates.sort_by_key(|(used, _)| *used);
        for (_, entry) in candidates {
            if self.used.load(Ordering::Relaxed) <= self.cache_size {
                break;
            }
            let Ok(mut st) = entry.state.try_write() else {
                continue;
            };
            if st.persisted.dirty {
                continue;
            }
            match self.punch(&entry, &mut st) {
                Ok(true) => self.recount(&mut st, 0),
                Ok(false) => {}
                Err(e) => log::warn!("cannot evict {} from the cache: {e}", st.key),
            }
        }
    }

    /// Punches out a clean file's pages (it keeps its size and times); whether it did.
    fn punch(&self, entry: &Entry, st: &mut State) -> io::Result<bool> {
        let path = self.root.join(&st.key);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        if file.metadata()?.ino() != entry.ino {
            return Ok(false);
        }
        let times = file_times(&file)?;
        st.persisted.complete = false;
        self.write_persisted(file.as_fd(), &st.persisted)?;
        use rustix::fs::FallocateFlags;
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&file, flags, 0, st.len)?;
        file.set_times(times)?;
        st.present = Ranges::default();
        Ok(true)
    }

    // ---- directory markers ----

    /// Records that the marker of `dir` must be rewritten (journalled, so a crash does not
    /// lose it).
    pub(super) fn note_dir(&self, dir: &str) {
        if lock(&self.dirty_dirs).insert(dir.to_string()) {
            let mut journal = lock(&self.journal);
            if let Err(e) = writeln!(journal, "{dir}") {
                log::warn!("cannot journal the directory {dir:?}: {e}");
            }
        }
    }

    /// Writes the markers of every directory noted since the last flush.
    pub fn flush_markers(&self) -> io::Result<()> {
        let _serial = lock(&self.marker_writes);
        let dirs: Vec<String> = std::mem::take(&mut *lock(&self.dirty_dirs))
            .into_iter()
            .collect();
        if dirs.is_empty() {
            return Ok(());
        }
        let mut failed = None;
        for dir in &dirs {
            if let Err(e) = self.write_marker(dir) {
                log::error!("cannot write the directory marker of {dir:?}: {e}");
                lock(&self.dirty_dirs).insert(dir.clone());
                failed = Some(e);
            }
        }
        if failed.is_none() && lock(&self.dirty_dirs).is_empty() {
            let journal = lock(&self.journal);
            journal.set_len(0)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the marker of `dir` if it was noted.
    fn flush_marker_of(&self, dir: &str) -> io::Result<()> {
        let _serial = lock(&self.marker_writes);
        if !lock(&self.dirty_dirs).remove(dir) {
            return Ok(());
        }
        self.write_marker(dir).inspect_err(|_| {
            lock(&self.dirty_dirs).insert(dir.to_string());
        })
    }

    /// Builds `dir`'s marker from the local copy and uploads it (or nothing, if the
    /// directory is gone).
    pub(super) fn write_marker(&self, dir: &str) -> io::Result<()> {
        let path = self.root.join(dir);
        let marker = match local_marker(&path, dir.is_empty()) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let body = marker.encode(&self.marker_key, dir);
        self.remote
            .put(&marker_key(dir), body, WriteMode::Overwrite)
            .map_err(|e| remote_errno(&e))?;
        Ok(())
    }

    /// Uploads every file still dirty in the entries this mount knows (at unmount).
    pub fn upload_dirty(&self) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.entries)
            .values()
            .filter_map(|slot| match slot {
                Slot::Tracked(e) => Some(Arc::clone(e)),
                Slot::Local => None,
            })
            .collect();
        let mut failed = 0;
        for entry in entries {
            let Ok(mut st) = entry.state.write() else {
                continue;
            };
            if !st.persisted.dirty {
                continue;
            }
            let path = self.root.join(&st.key);
            let uploaded = std::fs::File::open(&path).and_then(|file| {
                if file.metadata()?.ino() != entry.ino {
                    return Ok(());
                }
                self.upload(&file, &mut st)
            });
            if let Err(e) = uploaded {
                log::error!("{} stays dirty in the cache: {e}", st.key);
                failed += 1;
                if self.unreachable.load(Ordering::Relaxed) {
                    // Each attempt would wait out the retries again: the rest stay dirty
                    // too, for the next mount of this cache.
                    failed += self.dirty_count();
                    log::error!("the object store is unreachable: not trying the other files");
                    break;
                }
            }
        }
        failed
    }

    /// How many files this mount knows are dirty.
    fn dirty_count(&self) -> usize {
        lock(&self.entries)
            .values()
            .filter(|slot| match slot {
                Slot::Tracked(e) => e
                    .state
                    .try_read()
                    .map(|st| st.persisted.dirty)
                    .unwrap_or(true),
                Slot::Local => false,
            })
            .count()
            .saturating_sub(1)
    }

    /// Moves the state of a renamed file to its new key.
    fn rekey(&self, ino: u64, key: &str) {
        if let Some(Slot::Tracked(entry)) = lock(&self.entries).get(&ino)
            && let Ok(mut st) = entry.state.write()
        {
            st.key = key.to_string();
        }
    }

    /// The state of the regular file `name` in `dir`, if it is one in the namespace.
    fn file_state(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> io::Result<Option<(u64, Persisted)>> {
        let st = match self.local.stat_at(dir, name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !st.is_file() {
            return Ok(None);
        }
        if let Some(Slot::Tracked(entry)) = lock(&self.entries).get(&st.ino)
            && let Ok(state) = entry.state.read()
        {
            return Ok(Some((st.ino, state.persisted.clone())));
        }
        let fd = self.local.open_path_at(dir, name)?;
        let persisted = self.read_persisted(fd.as_fd())?.unwrap_or(Persisted {
            dirty: true,
            complete: true,
            etag: None,
        });
        Ok(Some((st.ino, persisted)))
    }

    fn rename_file(
        &self,
        (old_dir, old_name, old_key): (BorrowedFd<'_>, &OsStr, &str),
        (new_dir, new_name, new_key): (BorrowedFd<'_>, &OsStr, &str),
        mode: RenameMode,
    ) -> io::Result<()> {
        let Some((ino, before)) = self.file_state(old_dir, old_name)? else {
            return Err(errno(libc::ENOENT));
        };
        let displaced = self.file_state(new_dir, new_name)?;
        // A clean file not all present is fetched first: its old key goes away.
        if !before.dirty && !before.complete {
            let fd = self.local.open_path_at(old_dir, old_name)?;
            let file = self.local.reopen(fd.as_fd(), libc::O_RDWR)?;
            if let Some(entry) = self.entry(&file)? {
                let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
                let missing = st.present.missing(0, st.len);
                self.fetch(&file, &mut st, missing)?;
            }
        }
        self.local
            .rename_at(old_dir, old_name, new_dir, new_name, mode)?;
        if let Some((gone, _)) = &displaced {
            self.forget(*gone);
        }
        self.rekey(ino, new_key);
        // The new key gets the object: copied inside the object store when the file is
        // clean, else uploaded when it is next closed or synced (or at unmount).
        let mut after = Persisted {
            dirty: before.dirty,
            complete: true,
            etag: None,
        };
        let displaced_etag = displaced.and_then(|(_, p)| p.etag);
        if !before.dirty && before.etag.is_some() {
            match self
                .remote
                .copy(old_key, new_key)
                .and_then(|()| self.remote.head(new_key))
            {
                Ok(info) => after.etag = info.version.etag,
                Err(e) => {
                    log::warn!("copying {old_key} to {new_key} failed ({e}); uploading it");
                    after.dirty = true;
                    after.etag = displaced_etag;
                }
            }
        } else {
            after.dirty = true;
            after.etag = displaced_etag;
        }
        let fd = self.local.open_path_at(new_dir, new_name)?;
        self.write_persisted(fd.as_fd(), &after)?;
        if let Some(Slot::Tracked(entry)) = lock(&self.entries).get(&ino)
            && let Ok(mut st) = entry.state.write()
        {
            st.persisted = after.clone();
        }
        if before.etag.is_some()
            && let Err(e) = self.remote.delete(old_key)
        {
            log::error!("cannot remove {old_key} after renaming it to {new_key}: {e}");
        }
        if after.dirty {
            let file = self.local.reopen(fd.as_fd(), libc::O_RDONLY)?;
            if let Err(e) = self.upload_file(&file) {
                log::warn!("{new_key} stays dirty until it is next synced or closed: {e}");
            }
        }
        Ok(())
    }
}

/// A file's access and modification times, to put back after changes that are not the
/// file's own (a fetch, an eviction).
fn file_times(file: &File) -> io::Result<std::fs::FileTimes> {
    let meta = file.metadata()?;
    Ok(std::fs::FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?))
}

/// A second descriptor of `file` open for writing (the first may be read-only).
fn reopen_for_writing(file: &File) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// The data ranges of a sparse file (`SEEK_DATA`/`SEEK_HOLE`).
fn scan_present(file: &File, len: u64) -> io::Result<Ranges> {
    use rustix::fs::{SeekFrom, seek};
    let mut ranges = Ranges::default();
    let mut at = 0;
    while at < len {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = seek(file, SeekFrom::Hole(data))?;
        ranges.insert(data, hole.min(len));
        at = hole;
    }
    Ok(ranges)
}

/// The allocated bytes of a file.
pub(super) fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.blocks() * 512
}

/// Reads a file from its start through `pread`.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl<'a> ReadAt<'a> {
    fn new(file: &'a File) -> Self {
        ReadAt { file, at: 0 }
    }
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The marker of the local directory at `path`: its attributes and those of its entries
/// that are not directories.
pub(super) fn local_marker(path: &Path, top: bool) -> io::Result<Marker> {
    let st = lstat(path)?;
    let dir = NodeAttrs::from_stat(&st, local_xattrs(path)?, None);
    let mut entries = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && name == layout::META_DIR {
            continue;
        }
        let child = path.join(&name);
        let st = match lstat(&child) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if st.is_dir() {
            continue;
        }
        let (xattrs, target) = if st.is_symlink() {
            (
                Vec::new(),
                Some(
                    std::fs::read_link(&child)?
                        .into_os_string()
                        .into_encoded_bytes(),
                ),
            )
        } else if st.is_file() {
            (local_xattrs(&child)?, None)
        } else {
            (Vec::new(), None)
        };
        entries.insert(name, NodeAttrs::from_stat(&st, xattrs, target));
    }
    Ok(Marker { dir, entries })
}

impl Backing for RemoteBacking {
    fn stat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat> {
        self.local.stat(fd)
    }
    fn stat_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
        match self.local.stat_at(dir, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && self.refresh_parent(dir) => {
                self.local.stat_at(dir, name)
            }
            found => found,
        }
    }
    fn open_path_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
        match self.local.open_path_at(dir, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && self.refresh_parent(dir) => {
                self.local.open_path_at(dir, name)
            }
            found => found,
        }
    }
    fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
        let file = self.local.reopen(fd, flags)?;
        if flags & libc::O_PATH != 0 {
            return Ok(file);
        }
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(file);
        }
        // Counted until the object's file is dropped (`closed`): an open file is never
        // refreshed under its reader.
        if self.fresh.opened(meta.ino())
            && self.fresh.claim_file(meta.ino())
            && let Err(e) = self.revalidate(&file, meta.ino())
        {
            self.fresh.closed(meta.ino());
            return Err(e);
        }
        Ok(file)
    }

    fn create_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
        let place = self.child_place(dir, name)?;
        let file = self.local.create_at(dir, name, mode)?;
        if let Ok(meta) = file.metadata() {
            self.fresh.opened(meta.ino());
        }
        if let Place::Node(key) = place {
            let p = Persisted {
                dirty: true,
                complete: true,
                etag: None,
            };
            self.write_persisted(file.as_fd(), &p)?;
            self.fresh.touch(&key);
            self.note_dir(parent_key(&key));
        }
        Ok(file)
    }

    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
        let place = self.child_place(dir, name)?;
        self.local.mkdir_at(dir, name, mode)?;
        if let Place::Node(key) = place {
            self.fresh.touch(&key);
            if let Err(e) = self.write_marker(&key) {
                let _ = self.local.unlink_at(dir, name, true);
                return Err(e);
            }
        }
        Ok(())
    }

    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        let place = self.child_place(dir, name)?;
        self.local.mknod_at(dir, name, mode, rdev)?;
        if let Place::Node(key) = place {
            if mode & libc::S_IFMT == libc::S_IFREG {
                let fd = self.local.open_path_at(dir, name)?;
                let p = Persisted {
                    dirty: true,
                    complete: true,
                    etag: None,
                };
                self.write_persisted(fd.as_fd(), &p)?;
            }
            self.fresh.touch(&key);
            self.note_dir(parent_key(&key));
        }
        Ok(())
    }

    fn symlink_at(&self, target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let place = self.child_place(dir, name)?;
        self.local.symlink_at(target, dir, name)?;
        if let Place::Node(key) = place {
            self.fresh.touch(&key);
            self.note_dir(parent_key(&key));
        }
        Ok(())
    }

    fn link_at(&self, fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match self.child_place(dir, name)? {
            // One object per name: the object store has no hard links.
            Place::Node(_) => Err(errno(libc::EPERM)),
            Place::Meta => self.local.link_at(fd, dir, name),
        }
    }

    fn unlink_at(&self, dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
        let Place::Node(key) = self.child_place(dir, name)? else {
            return self.local.unlink_at(dir, name, is_dir);
        };
        if is_dir {
            let fd = self.local.open_path_at(dir, name)?;
            if !self.local.read_dir(fd.as_fd())?.is_empty() {
                return Err(errno(libc::ENOTEMPTY));
            }
            self.remote
                .delete(&marker_key(&key))
                .map_err(|e| remote_errno(&e))?;
            self.local.unlink_at(dir, name, true)?;
            lock(&self.dirty_dirs).remove(&key);
            return Ok(());
        }
        if let Some((ino, _)) = self.file_state(dir, name)? {
            self.remote.delete(&key).map_err(|e| {
                log::error!("cannot remove {key}: {e}");
                remote_errno(&e)
            })?;
            self.local.unlink_at(dir, name, false)?;
            self.forget(ino);
        } else {
            self.local.unlink_at(dir, name, false)?;
        }
        self.note_dir(parent_key(&key));
        Ok(())
    }

    fn rename_at(
        &self,
        old_dir: BorrowedFd<'_>,
        old_name: &OsStr,
        new_dir: BorrowedFd<'_>,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> io::Result<()> {
        let from = self.child_place(old_dir, old_name)?;
        let to = self.child_place(new_dir, new_name)?;
        match (from, to) {
            (Place::Meta, Place::Meta) => self
                .local
                .rename_at(old_dir, old_name, new_dir, new_name, mode),
            // A new object published, or a re-encrypted one swapped in.
            (Place::Meta, Place::Node(key)) => {
                self.fresh.touch(&key);
                let displaced = self.file_state(new_dir, new_name)?;
                self.local
                    .rename_at(old_dir, old_name, new_dir, new_name, mode)?;
                let st = self.local.stat_at(new_dir, new_name)?;
                self.forget(st.ino);
                if let Some((ino, _)) = &displaced {
                    self.forget(*ino);
                }
                if st.is_file() {
                    let p = Persisted {
                        dirty: true,
                        complete: true,
                        etag: displaced.and_then(|(_, p)| p.etag),
                    };
                    let fd = self.local.open_path_at(new_dir, new_name)?;
                    self.write_persisted(fd.as_fd(), &p)?;
                    if mode == RenameMode::Exchange {
                        let file = self.local.reopen(fd.as_fd(), libc::O_RDONLY)?;
                        self.upload_file(&file)?;
                    }
                }
                self.note_dir(parent_key(&key));
                Ok(())
            }
            (Place::Node(_), Place::Meta) => Err(errno(libc::EXDEV)),
            (Place::Node(old_key), Place::Node(new_key)) => {
                if mode == RenameMode::Exchange {
                    return Err(errno(libc::EINVAL));
                }
                self.fresh.touch(&new_key);
                let st = self.local.stat_at(old_dir, old_name)?;
                if st.is_dir() {
                    let fd = self.local.open_path_at(old_dir, old_name)?;
                    if !self.local.read_dir(fd.as_fd())?.is_empty() {
                        // Its objects would all have to be copied: refused, as
                        // mountpoint-s3 does, so tools copy and delete instead.
                        return Err(errno(libc::EXDEV));
                    }
                    self.local
                        .rename_at(old_dir, old_name, new_dir, new_name, mode)?;
                    lock(&self.dirty_dirs).remove(&old_key);
                    if let Err(e) = self.write_marker(&new_key) {
                        log::error!("cannot write the marker of {new_key}: {e}");
                        self.note_dir(&new_key);
                    }
                    if let Err(e) = self.remote.delete(&marker_key(&old_key)) {
                        log::error!("cannot remove the marker of {old_key}: {e}");
                    }
                } else if st.is_file() {
                    self.rename_file(
                        (old_dir, old_name, &old_key),
                        (new_dir, new_name, &new_key),
                        mode,
                    )?;
                } else {
                    if let Some((ino, _)) = self.file_state(new_dir, new_name)? {
                        self.remote.delete(&new_key).map_err(|e| remote_errno(&e))?;
                        self.forget(ino);
                    }
                    self.local
                        .rename_at(old_dir, old_name, new_dir, new_name, mode)?;
                }
                self.note_dir(parent_key(&old_key));
                self.note_dir(parent_key(&new_key));
                Ok(())
            }
        }
    }

    fn readlink(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        self.local.readlink(fd)
    }
    fn read_dir(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<DirEntryInfo>> {
        if let Ok(Place::Node(key)) = self.place_of(fd) {
            let _ = self.refresh_if_stale(&key);
        }
        self.local.read_dir(fd)
    }
    fn path_of(&self, fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
        self.local.path_of(fd)
    }

    fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        self.local.chmod(fd, mode)?;
        self.note_node(fd);
        Ok(())
    }
    fn chown(&self, fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.local.chown(fd, uid, gid)?;
        self.note_node(fd);
        Ok(())
    }
    fn utimens(
        &self,
        fd: BorrowedFd<'_>,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()> {
        self.local.utimens(fd, atime, mtime)?;
        self.note_node(fd);
        Ok(())
    }
    fn utimens_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()> {
        self.local.utimens_at(dir, name, atime, mtime)?;
        if let Ok(Place::Node(key)) = self.child_place(dir, name) {
            self.note_dir(parent_key(&key));
        }
        Ok(())
    }
    fn get_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
        if name == CACHE_ATTR {
            return Err(errno(libc::ENODATA));
        }
        self.local.get_xattr(fd, name)
    }
    fn list_xattr(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        let names = self.local.list_xattr(fd)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if name != CACHE_ATTR.as_bytes() {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }
    fn set_xattr(
        &self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        if name == CACHE_ATTR {
            return Err(errno(libc::EPERM));
        }
        self.local.set_xattr(fd, name, value, flags)?;
        self.note_node(fd);
        Ok(())
    }
    fn remove_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if name == CACHE_ATTR {
            return Err(errno(libc::EPERM));
        }
        self.local.remove_xattr(fd, name)?;
        self.note_node(fd);
        Ok(())
    }
    fn statvfs(&self, fd: BorrowedFd<'_>) -> io::Result<FsUsage> {
        self.local.statvfs(fd)
    }

    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(entry) = self.entry(file)? else {
            return self.local.read_at(file, buf, offset);
        };
        {
            let st = entry.state.read().map_err(|_| errno(libc::EIO))?;
            let end = (offset + buf.len() as u64).min(st.len);
            if st.persisted.complete || offset >= end || st.present.missing(offset, end).is_empty()
            {
                return self.local.read_at(file, buf, offset);
            }
        }
        let n = {
            let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
            st.last_used = self.tick();
            let first = !st.persisted.complete && st.present.0.is_empty();
            if !st.persisted.complete {
                self.fetch_for_read(file, &mut st, offset, buf.len() as u64)?;
            }
            let n = self.local.read_at(file, buf, offset)?;
            if first && st.len <= WHOLE_BELOW {
                let key = st.key.clone();
                drop(st);
                self.prefetch_siblings(&key);
            }
            n
        };
        self.evict();
        Ok(n)
    }

    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        let Some(entry) = self.entry(file)? else {
            return self.local.write_at(file, buf, offset);
        };
        let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
        self.make_dirty(file, &mut st)?;
        st.last_used = self.tick();
        let n = self.local.write_at(file, buf, offset)?;
        st.len = st.len.max(offset + n as u64);
        Ok(n)
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        let Some(entry) = self.entry(file)? else {
            return self.local.set_len(file, len);
        };
        let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
        self.make_dirty(file, &mut st)?;
        self.local.set_len(file, len)?;
        st.len = len;
        Ok(())
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.local.sync_data(file)?;
        let Some(entry) = self.entry(file)? else {
            return Ok(());
        };
        let key = {
            let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
            self.upload(file, &mut st)?;
            st.key.clone()
        };
        self.flush_marker_of(parent_key(&key))
    }

    fn publish(&self, file: &File) -> io::Result<()> {
        if !self.close_uploads.load(Ordering::Relaxed) {
            // Alone on the store: uploaded when the file is released (`closed`), after
            // `close` returned.
            return Ok(());
        }
        // As `sync_data`, but the directory's marker is left to the marker writer (within
        // a second): a close must not rewrite a directory's marker each time.
        self.local.sync_data(file)?;
        let Some(entry) = self.entry(file)? else {
            return Ok(());
        };
        let mut st = entry.state.write().map_err(|_| errno(libc::EIO))?;
        self.upload(file, &mut st)
    }

    fn will_need(&self, file: &File, offset: u64, len: u64) {
        match self.entry(file) {
            Ok(Some(entry)) => {
                if let Ok(mut st) = entry.state.write()
                    && !st.persisted.complete
                {
                    st.hints.push((offset, offset.saturating_add(len)));
                }
            }
            _ => self.local.will_need(file, offset, len),
        }
    }

    fn closed(&self, file: &File) {
        use rustix::fs::OFlags;
        let writable = matches!(
            rustix::fs::fcntl_getfl(file),
            Ok(flags) if flags.intersects(OFlags::WRONLY | OFlags::RDWR)
        );
        if writable {
            if let Err(e) = self.upload_file(file) {
                log::warn!("upload at close failed (the file stays dirty in the cache): {e}");
            }
            // What was uploaded is clean now, and counts against the cache's size.
            self.evict();
        }
        if let Ok(meta) = file.metadata()
            && self.fresh.closed(meta.ino())
            && let Err(e) = self.settle_conflict(file)
        {
            log::warn!("a conflicted file does not show the store's version yet: {e}");
        }
    }
}

impl RemoteBacking {
    /// Notes the marker that holds the attributes of the node behind `fd`: its own for a
    /// directory, its parent's for anything else.
    fn note_node(&self, fd: BorrowedFd<'_>) {
        let Ok(Place::Node(key)) = self.place_of(fd) else {
            return;
        };
        match self.local.stat(fd) {
            Ok(st) if st.is_dir() => self.note_dir(&key),
            _ => self.note_dir(parent_key(&key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_what_is_missing() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        r.insert(15, 35);
        assert_eq!(r.0, vec![(10, 40)]);
        assert_eq!(r.missing(12, 38), vec![]);
        assert_eq!(r.bytes(), 30);
        r.insert(40, 41);
        assert_eq!(r.0, vec![(10, 41)]);
    }

    #[test]
    fn the_cache_attribute_round_trips() {
        for p in [
            Persisted {
                dirty: true,
                complete: false,
                etag: None,
            },
            Persisted {
                dirty: false,
                complete: true,
                etag: Some("\"abc-2\"".to_string()),
            },
        ] {
            assert_eq!(Persisted::decode(p.encode().as_bytes()), Some(p));
        }
        assert_eq!(Persisted::decode(b"v2 dirty=1"), None);
    }

    #[test]
    fn a_sparse_file_shows_its_data_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(1 << 20).unwrap();
        file.write_all_at(&[1u8; 4096], 65536).unwrap();
        let r = scan_present(&file, 1 << 20).unwrap();
        assert!(r.missing(65536, 65536 + 4096).is_empty(), "{r:?}");
        assert!(!r.missing(0, 4096).is_empty(), "{r:?}");
    }
}

//! The inode table: one entry per backing node the kernel knows, with the kernel's lookup
//! count, the names it was reached by, the plaintext size cache and the slot of the shared
//! open object. Hard links share one entry. Descriptors are bounded: an open object's file
//! serves its inode, other inodes keep an `O_PATH` descriptor in a bounded cache and reopen it
//! from a parent and a remembered name when it was dropped. Knows nothing of FUSE or crypto.

use super::open_object::OpenObject;
use super::{FsError, lock};
use crate::store::{Backing, Stat, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The inode number of the mount root.
pub const ROOT_INO: u64 = 1;
/// The generation of the mount root (the kernel makes the root inode with 0 itself).
const ROOT_GENERATION: u64 = 0;

/// The plaintext size of a closed object, valid while the backing file is unchanged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SizeCache {
    pub backing_size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub plaintext_size: u64,
}

impl SizeCache {
    pub fn matches(&self, stat: &Stat) -> bool {
        self.backing_size == stat.size && self.mtime == stat.mtime && self.ctime == stat.ctime
    }
}

/// The open object of an inode and how many handles (and truncates) use it.
pub(crate) struct ObjectSlot {
    pub object: Arc<OpenObject>,
    pub users: usize,
}

/// The descriptor an operation on an inode goes through: its cached `O_PATH` descriptor or
/// the file of its open object. Holding it keeps the descriptor open.
pub(crate) enum NodeFd {
    Path(Arc<OwnedFd>),
    Open(Arc<File>),
}

impl AsFd for NodeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            NodeFd::Path(fd) => fd.as_fd(),
            NodeFd::Open(file) => file.as_fd(),
        }
    }
}

/// The descriptors an inode holds now (either may be absent).
#[derive(Default)]
struct NodeFds {
    /// An `O_PATH` descriptor, counted in the [`PathFdCache`] (except the root's).
    path: Option<Arc<OwnedFd>>,
    /// The backing file of the open object, while there is one.
    open: Option<Arc<File>>,
}

/// The bounded set of inodes that hold an `O_PATH` descriptor: when more than `limit` do, the
/// least recently used half give theirs up (they reopen it by name when next needed).
pub(crate) struct PathFdCache {
    backing: Arc<dyn Backing>,
    dev: u64,
    limit: AtomicUsize,
    clock: AtomicU64,
    /// Inodes holding a counted descriptor, by address.
    holders: Mutex<HashMap<usize, Weak<Inode>>>,
}

impl PathFdCache {
    /// A cache letting at most `limit` inodes (at least 16) hold an `O_PATH` descriptor.
    pub fn new(backing: Arc<dyn Backing>, dev: u64, limit: usize) -> Arc<Self> {
        Arc::new(PathFdCache {
            backing,
            dev,
            limit: AtomicUsize::new(limit.max(16)),
            clock: AtomicU64::new(1),
            holders: Mutex::new(HashMap::new()),
        })
    }

    /// How many inodes hold a counted descriptor now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        lock(&self.holders).len()
    }

    /// Changes the limit (at least 16); it applies from the next admission.
    #[cfg(test)]
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(16), Ordering::Relaxed);
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts `inode`'s new descriptor and, past the limit, takes the older half away.
    fn admit(&self, inode: &Inode) {
        // Strong references made under the lock are dropped after it: dropping the last one
        // of an inode takes the lock again.
        let mut alive: Vec<Arc<Inode>> = Vec::new();
        let mut victims: Vec<Arc<Inode>> = Vec::new();
        {
            let mut holders = lock(&self.holders);
            holders.insert(inode.key(), Weak::clone(&inode.me));
            let limit = self.limit.load(Ordering::Relaxed);
            if holders.len() <= limit {
                return;
            }
            alive.extend(holders.values().filter_map(Weak::upgrade));
            holders.retain(|_, weak| weak.strong_count() > 0);
            let keep = limit / 2;
            if alive.len() > keep {
                let cut = alive.len() - keep;
                alive.select_nth_unstable_by_key(cut - 1, |i| i.stamp.load(Ordering::Relaxed));
                victims = alive.drain(..cut).collect();
                for victim in &victims {
                    holders.remove(&victim.key());
                }
            }
        }
        let mut busy = Vec::new();
        for victim in victims {
            let taken = match victim.node.try_lock() {
                Ok(mut node) => {
                    node.path = None;
                    true
                }
                Err(_) => false,
            };
            if !taken {
                busy.push(victim);
            }
        }
        if !busy.is_empty() {
            let mut holders = lock(&self.holders);
            for victim in &busy {
                holders.insert(victim.key(), Weak::clone(&victim.me));
            }
        }
    }

    fn release(&self, inode: &Inode) {
        lock(&self.holders).remove(&inode.key());
    }
}

/// One backing node known to the kernel.
pub(crate) struct Inode {
    pub ino: u64,
    /// Tells this node from earlier nodes that had the same number: the backing filesystem
    /// gives a freed number to a new node, possibly while the kernel still knows the old one
    /// (its `FORGET` in flight, or a reference such as an `O_PATH` descriptor keeping it). The
    /// kernel takes an entry whose generation differs for a new inode and retires the old
    /// one; with the same generation it would take the new node for the old inode.
    pub generation: u64,
    me: Weak<Inode>,
    cache: Arc<PathFdCache>,
    /// The backing inode number the node has (changes when a re-encryption replaces it).
    backing_ino: AtomicU64,
    /// Never gives up its descriptor (the root).
    pinned: bool,
    node: Mutex<NodeFds>,
    /// When the descriptor was last used ([`PathFdCache`]'s clock).
    stamp: AtomicU64,
    pub file_type: u32,
    pub size_cache: Mutex<Option<SizeCache>>,
    pub object: Mutex<Option<ObjectSlot>>,
    /// The names the kernel last reached this inode by (parent, name), most recent first, at
    /// most [`NAMES_KEPT`]; any may be stale, so users check before trusting one. They reopen
    /// the descriptor; symlinks need one to set their times (`utimensat` cannot reach a
    /// symlink through an `O_PATH` descriptor), re-encryption to replace an object whose first
    /// name is gone.
    names: Mutex<VecDeque<(Arc<Inode>, OsString)>>,
    /// Serialises setting times with the header bookkeeping that must put them back, so a
    /// `utimensat` racing with an asynchronous release is never undone.
    pub times: Mutex<()>,
    /// The backing node whose number this inode carries, once a re-encryption replaced it:
    /// kept referenced so the backing filesystem cannot give its number to another file
    /// while the kernel knows this inode.
    retired: Mutex<Option<OwnedFd>>,
    /// Once re-encrypted: the node the inode shows now, kept referenced too, so its number
    /// (aliased to this inode) cannot be given to another node while the kernel knows it.
    current: Mutex<Option<OwnedFd>>,
}

/// How many recent names an inode remembers.
const NAMES_KEPT: usize = 8;

impl Inode {
    fn new(
        cache: &Arc<PathFdCache>,
        (ino, generation): (u64, u64),
        stat: &Stat,
        fds: NodeFds,
        object: Option<ObjectSlot>,
    ) -> Arc<Inode> {
        Arc::new_cyclic(|me| Inode {
            ino,
            generation,
            me: Weak::clone(me),
            cache: Arc::clone(cache),
            backing_ino: AtomicU64::new(stat.ino),
            pinned: false,
            node: Mutex::new(fds),
            stamp: AtomicU64::new(cache.tick()),
            file_type: stat.file_type(),
            size_cache: Mutex::new(None),
            object: Mutex::new(object),
            names: Mutex::new(VecDeque::new()),
            retired: Mutex::new(None),
            current: Mutex::new(None),
            times: Mutex::new(()),
        })
    }

    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Remembers that `name` in directory `parent` led to this inode.
    pub fn note_name(&self, parent: &Arc<Inode>, name: &OsStr) {
        let mut names = lock(&self.names);
        names.retain(|(p, n)| !(p.ino == parent.ino && n.as_os_str() == name));
        names.push_front((Arc::clone(parent), name.to_os_string()));
        names.truncate(NAMES_KEPT);
    }

    /// The remembered names, most recent first.
    pub fn recent_names(&self) -> Vec<(Arc<Inode>, OsString)> {
        lock(&self.names).iter().cloned().collect()
    }

    /// The descriptor of this node: the open object's file, the cached `O_PATH` descriptor,
    /// or one reopened from a remembered name that still leads here (`ESTALE` if none does).
    pub fn fd(&self) -> io::Result<NodeFd> {
        let mut node = lock(&self.node);
        if let Some(file) = &node.open {
            return Ok(NodeFd::Open(Arc::clone(file)));
        }
        if let Some(fd) = &node.path {
            self.stamp.store(self.cache.tick(), Ordering::Relaxed);
            return Ok(NodeFd::Path(Arc::clone(fd)));
        }
        let fd = Arc::new(self.reopen_by_name()?);
        node.path = Some(Arc::clone(&fd));
        drop(node);
        self.stamp.store(self.cache.tick(), Ordering::Relaxed);
        self.cache.admit(self);
        Ok(NodeFd::Path(fd))
    }

    fn reopen_by_name(&self) -> io::Result<OwnedFd> {
        let backing = &self.cache.backing;
        for (parent, name) in self.recent_names() {
            let Ok(dir) = parent.fd() else {
                continue;
            };
            let Ok(fd) = backing.open_path_at(dir.as_fd(), &name) else {
                continue;
            };
            let leads_here = backing.stat(fd.as_fd()).is_ok_and(|st| {
                st.dev == self.cache.dev && st.ino == self.backing_ino.load(Ordering::Acquire)
            });
            if leads_here {
                return Ok(fd);
            }
        }
        Err(io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// Lets the open object's backing file serve this inode (`Some`), or stops (`None`). An
    /// `O_PATH` descriptor it held is given up meanwhile.
    pub fn set_open_file(&self, file: Option<Arc<File>>) {
        let mut node = lock(&self.node);
        if file.is_some() && !self.pinned && node.path.take().is_some() {
            self.cache.release(self);
        }
        node.open = file;
    }

    /// Keeps the cached plaintext size valid across a change of metadata only (mode, owner,
    /// times), which changes `ctime` but not the object: when the cache held for the node as
    /// it was (`before`), it now holds for the node as it is (`after`).
    pub fn carry_size_cache(&self, before: &Stat, after: &Stat) {
        let mut cache = lock(&self.size_cache);
        if let Some(entry) = cache.as_mut().filter(|c| c.matches(before)) {
            entry.backing_size = after.size;
            entry.mtime = after.mtime;
            entry.ctime = after.ctime;
        }
    }

    pub fn is_dir(&self) -> bool {
        self.file_type == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.file_type == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type == libc::S_IFLNK
    }

    /// Points this inode at another backing node (the new object of a re-encryption), at once
    /// for every later user of [`Inode::fd`]. The first node replaced stays referenced (see
    /// `retired`); later ones are closed when their last user is done.
    pub fn repoint(&self, node: BorrowedFd<'_>) -> io::Result<()> {
        let new = node.try_clone_to_owned()?;
        let st = self.cache.backing.stat(new.as_fd())?;
        let mut retired = lock(&self.retired);
        let mut fds = lock(&self.node);
        if retired.is_none() {
            let old = match (&fds.open, &fds.path) {
                (Some(file), _) => Some(file.as_fd().try_clone_to_owned()?),
                (None, Some(fd)) => Some(fd.as_fd().try_clone_to_owned()?),
                (None, None) => None,
            };
            *retired = old;
        }
        *lock(&self.current) = Some(new.try_clone()?);
        self.backing_ino.store(st.ino, Ordering::Release);
        fds.open = None;
        let had_path = fds.path.replace(Arc::new(new)).is_some();
        drop(fds);
        if !had_path && !self.pinned {
            self.cache.admit(self);
        }
        Ok(())
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        if !self.pinned && lock(&self.node).path.is_some() {
            self.cache.release(self);
        }
    }
}

struct Entry {
    inode: Arc<Inode>,
    /// The kernel's lookups of this number, summed over every inode the kernel holds for it:
    /// the current node's and those of earlier nodes of the same number not forgotten yet
    /// (`FORGET` names a number, not a generation).
    lookups: u64,
}

/// Whether the node an entry is about was just made by the operation reporting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Found by name: a known inode of that number and type is this node.
    Found,
    /// Just made (`mkdir`, `symlink`, `mknod`): a known inode of that number is an earlier
    /// node whose number the backing filesystem gave again.
    Made,
}

/// A new object registered before its name appears, with the kernel's lookup of it already
/// counted; [`InodeTable::withdraw`] undoes both if the name never appears.
pub(crate) struct Preloaded {
    pub inode: Arc<Inode>,
    /// The earlier node of the same number the new one took the place of.
    displaced: Option<Arc<Inode>>,
}

/// Maps inode numbers to known nodes. The inode number of a node is its backing inode
/// number (stable across remounts, shared by hard links), except that the store root is
/// always [`ROOT_INO`] and a backing node numbered 1 takes the root's backing number. A
/// number the backing filesystem gives again to a new node gets a new generation.
pub(crate) struct InodeTable {
    dev: u64,
    root_backing_ino: u64,
    cache: Arc<PathFdCache>,
    entries: Mutex<HashMap<u64, Entry>>,
    /// Backing numbers of re-encrypted objects -> the inode number they keep showing.
    /// Lock order: `entries` before `aliases`.
    aliases: Mutex<HashMap<u64, u64>>,
    /// The last generation given to a node (the root has [`ROOT_GENERATION`]).
    generations: AtomicU64,
}

impl InodeTable {
    /// The table of a store whose root is `root_fd`; at most `path_fds` inodes besides the
    /// root keep an `O_PATH` descriptor at once.
    pub fn new(backing: Arc<dyn Backing>, root_fd: OwnedFd, root: &Stat, path_fds: usize) -> Self {
        let cache = PathFdCache::new(backing, root.dev, path_fds);
        let fds = NodeFds {
            path: Some(Arc::new(root_fd)),
            open: None,
        };
        let inode = Arc::new_cyclic(|me| Inode {
            ino: ROOT_INO,
            generation: ROOT_GENERATION,
            me: Weak::clone(me),
            cache: Arc::clone(&cache),
            backing_ino: AtomicU64::new(root.ino),
            pinned: true,
            node: Mutex::new(fds),
            stamp: AtomicU64::new(0),
            file_type: root.file_type(),
            size_cache: Mutex::new(None),
            object: Mutex::new(None),
            names: Mutex::new(VecDeque::new()),
            retired: Mutex::new(None),
            current: Mutex::new(None),
            times: Mutex::new(()),
        });
        let mut entries = HashMap::new();
        entries.insert(ROOT_INO, Entry { inode, lookups: 1 });
        InodeTable {
            dev: root.dev,
            root_backing_ino: root.ino,
            cache,
            entries: Mutex::new(entries),
            aliases: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(ROOT_GENERATION),
        }
    }

    /// The cache of `O_PATH` descriptors (for tests).
    #[cfg(test)]
    pub fn path_fds(&self) -> &PathFdCache {
        &self.cache
    }

    /// A new inode numbered `ino` with a generation no node had before.
    fn new_inode(
        &self,
        ino: u64,
        stat: &Stat,
        fds: NodeFds,
        object: Option<ObjectSlot>,
    ) -> Arc<Inode> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        Inode::new(&self.cache, (ino, generation), stat, fds, object)
    }

    /// The inode number the mount shows for a backing node.
    pub fn ino_of(&self, backing_ino: u64) -> u64 {
        if let Some(ino) = lock(&self.aliases).get(&backing_ino) {
            *ino
        } else if backing_ino == self.root_backing_ino {
            ROOT_INO
        } else if backing_ino == ROOT_INO {
            self.root_backing_ino
        } else {
            backing_ino
        }
    }

    pub fn get(&self, ino: u64) -> Result<Arc<Inode>, FsError> {
        lock(&self.entries)
            .get(&ino)
            .map(|e| Arc::clone(&e.inode))
            .ok_or(FsError::StaleInode(ino))
    }

    /// The known inode for a backing node, if any (does not count a lookup).
    pub fn find(&self, stat: &Stat) -> Option<Arc<Inode>> {
        if stat.dev != self.dev {
            return None;
        }
        lock(&self.entries)
            .get(&self.ino_of(stat.ino))
            .map(|e| Arc::clone(&e.inode))
    }

    /// Records one kernel lookup of the node `name` in `parent` leads to (whose attributes
    /// are `stat`); a node not known yet gets an entry whose descriptor is opened when first
    /// needed, and so does a node that only has the number of a known one (`origin`).
    pub fn remember(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        stat: &Stat,
        origin: Origin,
    ) -> Result<Arc<Inode>, FsError> {
        if stat.dev != self.dev {
            return Err(FsError::OtherFilesystem(
                name.to_string_lossy().into_owned(),
            ));
        }
        let ino = self.ino_of(stat.ino);
        let inode = {
            let mut entries = lock(&self.entries);
            let entry = entries.entry(ino).or_insert_with(|| Entry {
                inode: self.new_inode(ino, stat, NodeFds::default(), None),
                lookups: 0,
            });
            let earlier_node = origin == Origin::Made || entry.inode.file_type != stat.file_type();
            if earlier_node && entry.lookups > 0 {
                // The number of a removed node the kernel still knows, given to a new node.
                entry.inode = self.new_inode(ino, stat, NodeFds::default(), None);
            }
            entry.lookups += 1;
            Arc::clone(&entry.inode)
        };
        inode.note_name(parent, name);
        Ok(inode)
    }

    /// Registers a node the kernel does not know yet, with its open object (whose backing
    /// file is `file`) already in place, and counts the kernel's lookup of it: a new object
    /// before its name appears, so a concurrent lookup and open finds the same open object
    /// instead of opening a second one. Counting here, under the same lock, matters: a
    /// `FORGET` of an earlier node of the same number may come at any moment.
    pub fn preload(&self, file: Arc<File>, stat: &Stat, object: Arc<OpenObject>) -> Preloaded {
        let ino = self.ino_of(stat.ino);
        let slot = ObjectSlot { object, users: 1 };
        let fds = NodeFds {
            path: None,
            open: Some(file),
        };
        let inode = self.new_inode(ino, stat, fds, Some(slot));
        let mut entries = lock(&self.entries);
        let entry = entries.entry(ino).or_insert_with(|| Entry {
            inode: Arc::clone(&inode),
            lookups: 0,
        });
        // The node is new, so a known inode of that number is an earlier node the kernel
        // has not forgotten yet (nothing held it open, so its number was given again): the
        // new node takes its place, and its lookups, which the kernel will forget.
        let displaced = (!Arc::ptr_eq(&entry.inode, &inode))
            .then(|| std::mem::replace(&mut entry.inode, Arc::clone(&inode)));
        entry.lookups += 1;
        Preloaded { inode, displaced }
    }

    /// Undoes a [`preload`](Self::preload) whose name never appeared: the lookup goes, and
    /// the node it displaced comes back.
    pub fn withdraw(&self, preloaded: Preloaded) {
        let ino = preloaded.inode.ino;
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(&ino) else {
            return;
        };
        if !Arc::ptr_eq(&entry.inode, &preloaded.inode) {
            return;
        }
        entry.lookups = entry.lookups.saturating_sub(1);
        match preloaded.displaced {
            _ if entry.lookups == 0 => {
                entries.remove(&ino);
            }
            Some(earlier) => entry.inode = earlier,
            None => {}
        }
    }

    /// The kernel forgets `n` lookups; the entry goes when none are left (never the root).
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(&ino) {
            entry.lookups = entry.lookups.saturating_sub(n);
            if entry.lookups == 0 {
                entries.remove(&ino);
                lock(&self.aliases).retain(|_, aliased| *aliased != ino);
            }
        }
    }

    /// Makes the backing node numbered `backing_ino` (the new object of a re-encryption)
    /// show as inode `ino` for as long as the kernel knows `ino`.
    pub fn alias(&self, backing_ino: u64, ino: u64) {
        let mut aliases = lock(&self.aliases);
        aliases.retain(|_, aliased| *aliased != ino);
        if backing_ino != ino {
            aliases.insert(backing_ino, ino);
        }
    }

    /// The lookup count of an inode (for tests and diagnostics).
    pub fn lookups(&self, ino: u64) -> Option<u64> {
        lock(&self.entries).get(&ino).map(|e| e.lookups)
    }
}

/// How many inodes may keep an `O_PATH` descriptor: a quarter of the open-file limit (the
/// rest is for open objects, directory listings and the keystore), at most 16,384.
pub(crate) fn path_fd_budget() -> usize {
    let soft = crate::sys::open_file_limit()
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    (soft / 4).clamp(16, 16_384)
}

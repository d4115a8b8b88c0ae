//! The inode table: one entry per backing node the kernel knows, holding an `O_PATH`
//! descriptor (so renames never invalidate it), the kernel's lookup count, the plaintext size
//! cache and the slot of the shared open object. Hard links share one entry.

use super::FsError;
use super::object::OpenObject;
use crate::store::{Stat, Timestamp};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The inode number of the mount root.
pub const ROOT_INO: u64 = 1;

/// Locks a mutex whose data stays consistent even if a holder panicked (plain maps and
/// counters updated in one step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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

/// One backing node known to the kernel.
pub(crate) struct Inode {
    pub ino: u64,
    fd: OwnedFd,
    pub file_type: u32,
    pub size_cache: Mutex<Option<SizeCache>>,
    pub object: Mutex<Option<ObjectSlot>>,
    /// For symlinks only: the last known parent and name, to set their times
    /// (`utimensat` cannot reach a symlink through an `O_PATH` descriptor).
    pub link_name: Mutex<Option<(u64, OsString)>>,
    /// Serialises setting times with the header bookkeeping that must put them back, so a
    /// `utimensat` racing with an asynchronous release is never undone.
    pub times: Mutex<()>,
}

impl Inode {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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
}

struct Entry {
    inode: Arc<Inode>,
    lookups: u64,
}

/// Maps inode numbers to known nodes. The inode number of a node is its backing inode
/// number (stable across remounts, shared by hard links), except that the store root is
/// always [`ROOT_INO`] and a backing node numbered 1 takes the root's backing number.
pub(crate) struct InodeTable {
    dev: u64,
    root_backing_ino: u64,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, root: &Stat) -> Self {
        let inode = Arc::new(Inode {
            ino: ROOT_INO,
            fd: root_fd,
            file_type: root.file_type(),
            size_cache: Mutex::new(None),
            object: Mutex::new(None),
            link_name: Mutex::new(None),
            times: Mutex::new(()),
        });
        let mut entries = HashMap::new();
        entries.insert(ROOT_INO, Entry { inode, lookups: 1 });
        InodeTable {
            dev: root.dev,
            root_backing_ino: root.ino,
            entries: Mutex::new(entries),
        }
    }

    /// The inode number the mount shows for a backing node.
    pub fn ino_of(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_backing_ino {
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

    /// Records one kernel lookup of the node `fd` refers to (whose attributes are `stat`),
    /// reusing the existing entry (and dropping `fd`) when the node is already known.
    pub fn remember(&self, fd: OwnedFd, stat: &Stat, name: &str) -> Result<Arc<Inode>, FsError> {
        if stat.dev != self.dev {
            return Err(FsError::OtherFilesystem(name.to_string()));
        }
        let ino = self.ino_of(stat.ino);
        let mut entries = lock(&self.entries);
        let entry = entries.entry(ino).or_insert_with(|| Entry {
            inode: Arc::new(Inode {
                ino,
                fd,
                file_type: stat.file_type(),
                size_cache: Mutex::new(None),
                object: Mutex::new(None),
                link_name: Mutex::new(None),
                times: Mutex::new(()),
            }),
            lookups: 0,
        });
        entry.lookups += 1;
        Ok(Arc::clone(&entry.inode))
    }

    /// Registers a node the kernel does not know yet, with its open object already in place:
    /// a new object before its name appears, so a concurrent lookup and open finds the same
    /// open object instead of opening a second one.
    pub fn preload(
        &self,
        fd: OwnedFd,
        stat: &Stat,
        object: Arc<OpenObject>,
    ) -> Result<Arc<Inode>, FsError> {
        let ino = self.ino_of(stat.ino);
        let inode = Arc::new(Inode {
            ino,
            fd,
            file_type: stat.file_type(),
            size_cache: Mutex::new(None),
            object: Mutex::new(Some(ObjectSlot { object, users: 1 })),
            link_name: Mutex::new(None),
            times: Mutex::new(()),
        });
        let mut entries = lock(&self.entries);
        if entries.contains_key(&ino) {
            return Err(FsError::StaleInode(ino));
        }
        entries.insert(
            ino,
            Entry {
                inode: Arc::clone(&inode),
                lookups: 0,
            },
        );
        Ok(inode)
    }

    /// Counts one kernel lookup of a known inode.
    pub fn count_lookup(&self, ino: u64) -> Result<(), FsError> {
        let mut entries = lock(&self.entries);
        let entry = entries.get_mut(&ino).ok_or(FsError::StaleInode(ino))?;
        entry.lookups += 1;
        Ok(())
    }

    /// Drops a preloaded entry the kernel never learnt about.
    pub fn discard_unused(&self, ino: u64) {
        let mut entries = lock(&self.entries);
        if entries.get(&ino).is_some_and(|e| e.lookups == 0) {
            entries.remove(&ino);
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
            }
        }
    }

    /// The lookup count of an inode (for tests and diagnostics).
    pub fn lookups(&self, ino: u64) -> Option<u64> {
        lock(&self.entries).get(&ino).map(|e| e.lookups)
    }
}

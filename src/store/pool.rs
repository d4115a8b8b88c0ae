//! Unnamed backing files made ahead of need. Allocating an inode is the slowest step of
//! creating a file on the backing filesystem (ext4 looks at the inode table for every new
//! inode); a thread of its own makes a few files ahead, so creating an object takes one
//! that is ready. The thread works only after files were taken: an idle mount costs nothing.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::Backing;

/// Files kept ready at most.
const CAPACITY: usize = 32;
/// The thread refills once no more than this many are left.
const REFILL_AT: usize = CAPACITY / 2;
/// The mode files are made with, exactly (the commonest mode of a new file; nobody can open
/// a file without a name, so none is too wide); a file taken for another mode gets its own.
pub(super) const POOL_MODE: u32 = 0o644;

#[derive(Default)]
struct State {
    files: Vec<File>,
    /// The owner is gone: the thread ends.
    stop: bool,
    /// Making a file failed (an error such as `ENOSPC`): the thread waits to be asked again
    /// rather than retry at once.
    failed: bool,
    /// The backing turned out to have no unnamed files: the thread has ended.
    unsupported: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool of one store, with the thread that fills it. Dropping it stops the thread and
/// closes the files left, which the backing filesystem then frees (they have no name).
pub(super) struct UnnamedPool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl UnnamedPool {
    /// Starts the thread that makes unnamed files in the directory `dir` through `backing`.
    /// `None` if the thread cannot be started (creating then goes without the pool).
    pub(super) fn start(backing: Arc<dyn Backing>, dir: OwnedFd) -> Option<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ssefs-newfiles".into())
            .spawn(move || fill(&theirs, backing.as_ref(), dir))
            .inspect_err(|e| log::warn!("cannot start the thread that makes files ahead: {e}"))
            .ok()?;
        Some(UnnamedPool {
            shared,
            thread: Some(thread),
        })
    }

    /// A ready file ([`POOL_MODE`], owned by this process), if one is left; asks for more
    /// when few are.
    pub(super) fn take(&self) -> Option<File> {
        let mut state = self.shared.lock();
        let file = state.files.pop();
        let wanted = state.files.len() == REFILL_AT || (file.is_none() && state.failed);
        if wanted && !state.unsupported {
            state.failed = false;
            drop(state);
            self.shared.wake.notify_one();
        }
        file
    }

    #[cfg(test)]
    fn ready(&self) -> usize {
        self.shared.lock().files.len()
    }
}

impl Drop for UnnamedPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn fill(shared: &Shared, backing: &dyn Backing, dir: OwnedFd) {
    let mut state = shared.lock();
    loop {
        while !state.stop && (state.failed || state.files.len() > REFILL_AT) {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.stop {
            return;
        }
        while !state.stop && state.files.len() < CAPACITY {
            drop(state);
            let made = backing.create_unnamed(dir.as_fd(), POOL_MODE);
            state = shared.lock();
            match made {
                Ok(Some(file)) => state.files.push(file),
                Ok(None) => {
                    state.unsupported = true;
                    return;
                }
                Err(e) => {
                    log::debug!("making a file ahead failed: {e}");
                    state.failed = true;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalBacking;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    fn wait_for(pool: &UnnamedPool, want: usize) {
        let start = Instant::now();
        while pool.ready() < want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "pool never reached {want}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_failing_backing_leaves_the_pool_empty_until_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let fd = OwnedFd::from(File::open(&gone).unwrap());
        std::fs::remove_dir(&gone).unwrap();
        let pool = UnnamedPool::start(Arc::new(LocalBacking), fd).unwrap();
        let start = Instant::now();
        while !pool.shared.lock().failed {
            assert!(start.elapsed() < Duration::from_secs(10), "never failed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(pool.take().is_none());
        // Asked again: it tries again, fails again, and waits.
        let start = Instant::now();
        while !pool.shared.lock().failed {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never tried again"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.ready(), 0);
    }

    #[test]
    fn fills_up_refills_after_takes_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let fd = OwnedFd::from(File::open(dir.path()).unwrap());
        let pool = UnnamedPool::start(Arc::new(LocalBacking), fd).unwrap();
        wait_for(&pool, CAPACITY);
        // Full: the thread waits.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.ready(), CAPACITY);
        let mut taken = Vec::new();
        for _ in 0..CAPACITY - REFILL_AT {
            taken.push(pool.take().unwrap());
        }
        wait_for(&pool, CAPACITY);
        for file in &taken {
            let meta = file.metadata().unwrap();
            assert_eq!(meta.mode() & 0o7777, POOL_MODE);
            assert_eq!(meta.nlink(), 0, "a ready file has no name");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(pool);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

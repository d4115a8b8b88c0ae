//! Unnamed backing files made ahead of need. Allocating an inode is the slowest step of
//! creating a file on the backing filesystem (ext4 looks at the inode table for every new
//! inode); a thread of its own makes a few files ahead, so creating an object takes one
//! that is ready. The thread works only after files were taken: an idle mount costs nothing.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

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
    /// Starts the thread that makes unnamed files with `make` (`Backing::create_unnamed`
    /// with [`POOL_MODE`]; `Ok(None)`: the backing has none). `None` if the thread cannot be
    /// started (creating then goes without the pool).
    pub(super) fn start<F>(make: F) -> Option<Self>
    where
        F: FnMut() -> io::Result<Option<File>> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ssefs-newfiles".into())
            .spawn(move || fill(&theirs, make))
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

fn fill(shared: &Shared, mut make: impl FnMut() -> io::Result<Option<File>>) {
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
            let made = make();
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
    use crate::store::{Backing, LocalBacking};
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "never {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A `make` that counts its calls and answers with `answer`.
    fn counting(
        answer: fn() -> io::Result<Option<File>>,
    ) -> (
        Arc<AtomicUsize>,
        impl FnMut() -> io::Result<Option<File>> + Send,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let theirs = Arc::clone(&calls);
        (calls, move || {
            theirs.fetch_add(1, Ordering::SeqCst);
            answer()
        })
    }

    #[test]
    fn fills_up_refills_after_takes_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let fd = OwnedFd::from(File::open(dir.path()).unwrap());
        let pool =
            UnnamedPool::start(move || LocalBacking.create_unnamed(fd.as_fd(), POOL_MODE)).unwrap();
        wait_until("full", || pool.ready() == CAPACITY);
        // Full: the thread waits.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.ready(), CAPACITY);
        let mut taken = Vec::new();
        for _ in 0..CAPACITY - REFILL_AT {
            taken.push(pool.take().unwrap());
        }
        wait_until("full again", || pool.ready() == CAPACITY);
        for file in &taken {
            let meta = file.metadata().unwrap();
            assert_eq!(meta.mode() & 0o7777, POOL_MODE);
            assert_eq!(meta.nlink(), 0, "a ready file has no name");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(pool);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failure_is_tried_again_only_when_a_create_asks() {
        let (calls, make) = counting(|| Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        let pool = UnnamedPool::start(make).unwrap();
        wait_until("failed", || pool.shared.lock().failed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "retried without being asked"
        );
        assert!(pool.take().is_none());
        wait_until("tried again", || calls.load(Ordering::SeqCst) == 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(pool.ready(), 0);
    }

    #[test]
    fn a_backing_without_unnamed_files_ends_the_thread_for_good() {
        let (calls, make) = counting(|| Ok(None));
        let pool = UnnamedPool::start(make).unwrap();
        wait_until("ended", || {
            pool.thread.as_ref().is_some_and(|t| t.is_finished())
        });
        assert!(pool.shared.lock().unsupported);
        for _ in 0..10 {
            assert!(pool.take().is_none());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

//! Crashes: the daemon is killed with SIGKILL at random moments while several writers overwrite
//! and append, some calling fsync. After `fusermount3 -u` and a remount, every file holds what
//! its completed writes (and so at least what fsync returned for) put there, the next writes
//! continue on the recovered objects, and no object fails authentication.

mod support;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use support::model::{Rng, data_for};
use support::mount::{Mount, TestStore, is_dead_daemon_error, mount_tests_enabled, unmount_dead};
use support::rng::test_seed;

const BLOCK: usize = 4096;
/// Blocks per overwritten file: more than one meta page group (36 blocks).
const BLOCKS: usize = 40;
const ROUNDS: u64 = 4;
/// How long writers may take to notice the dead daemon before the test calls it a hang.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The 4096 bytes of block `b` of version `v` of overwritten file `w`: a 16-byte label, then
/// bytes derived from it.
fn version_block(w: u32, v: u32, b: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    out.extend_from_slice(b"OWv1");
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    let seed = (u64::from(w) << 48) ^ (u64::from(v) << 16) ^ u64::from(b);
    out.extend_from_slice(&data_for(seed, BLOCK - 16));
    out
}

/// The version block `b` of file `w` holds, if it is exactly one of that file's blocks.
fn decode_block(w: u32, b: u32, bytes: &[u8]) -> Option<u32> {
    if bytes.len() != BLOCK || &bytes[..4] != b"OWv1" {
        return None;
    }
    let v = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    (bytes == version_block(w, v, b).as_slice()).then_some(v)
}

/// Byte `offset..offset+len` of append stream `w`.
fn stream(w: u32, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let block = at / BLOCK as u64;
        let bytes = data_for((u64::from(w) << 40) ^ block ^ 0xA99E, BLOCK);
        let start = (at % BLOCK as u64) as usize;
        let take = (BLOCK - start).min(len - out.len());
        out.extend_from_slice(&bytes[start..start + take]);
        at += take as u64;
    }
    out
}

/// What a writer knows it achieved, shared with the checker.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Overwriters: the last version whose every block write returned; appenders: the length
    /// all returned appends reach.
    completed: u64,
    /// The last version (or length) for which fsync returned success.
    synced: u64,
    /// Overwriters: the version being written when the writer stopped.
    started: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Overwrite,
    Append,
}

struct Writer {
    id: u32,
    kind: Kind,
    /// fsync after every `sync_every` versions or appends (0: never).
    sync_every: u64,
    path: PathBuf,
    progress: Arc<Mutex<Progress>>,
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

impl Writer {
    /// Writes until an error (the daemon died) or `stop`; returns the error seen, if any.
    fn run(&self, seed: u64, stop: &AtomicBool) -> Option<io::Error> {
        let mut rng = Rng::new(seed);
        let file = match open_rw(&self.path) {
            Ok(f) => f,
            Err(e) => return Some(e),
        };
        let mut count = 0u64;
        while !stop.load(Ordering::Relaxed) {
            count += 1;
            let result = match self.kind {
                Kind::Overwrite => self.overwrite_once(&file, &mut rng),
                Kind::Append => self.append_once(&file, &mut rng),
            };
            if let Err(e) = result {
                return Some(e);
            }
            if self.sync_every > 0 && count % self.sync_every == 0 {
                let reached = self.progress.lock().unwrap().completed;
                if let Err(e) = file.sync_all() {
                    return Some(e);
                }
                self.progress.lock().unwrap().synced = reached;
            }
        }
        None
    }

    fn overwrite_once(&self, file: &File, rng: &mut Rng) -> io::Result<()> {
        let v = {
            let mut p = self.progress.lock().unwrap();
            p.started = p.completed + 1;
            p.started as u32
        };
        let mut b = 0;
        while b < BLOCKS {
            let n = (1 + rng.below(3) as usize).min(BLOCKS - b);
            let mut buf = Vec::with_capacity(n * BLOCK);
            for k in b..b + n {
                buf.extend_from_slice(&version_block(self.id, v, k as u32));
            }
            file.write_all_at(&buf, (b * BLOCK) as u64)?;
            b += n;
        }
        self.progress.lock().unwrap().completed = u64::from(v);
        Ok(())
    }

    fn append_once(&self, file: &File, rng: &mut Rng) -> io::Result<()> {
        let at = self.progress.lock().unwrap().completed;
        let len = 1 + rng.below(8_000) as usize;
        file.write_all_at(&stream(self.id, at, len), at)?;
        self.progress.lock().unwrap().completed = at + len as u64;
        Ok(())
    }

    /// Checks the file after a crash and returns the progress to continue from.
    fn check(&self, p: Progress) -> Progress {
        let shown = self.path.display();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => panic!("{shown} after kill -9 ({p:?}): read failed: {e}"),
        };
        match self.kind {
            Kind::Overwrite => self.check_versions(&bytes, p),
            Kind::Append => {
                assert!(
                    bytes.len() as u64 >= p.completed,
                    "{shown}: {} bytes after kill -9, but appends up to {} had returned \
                     (fsync returned for {})",
                    bytes.len(),
                    p.completed,
                    p.synced
                );
                let want = stream(self.id, 0, bytes.len());
                let first = bytes.iter().zip(&want).position(|(a, b)| a != b);
                assert_eq!(
                    first, None,
                    "{shown}: bytes differ from what was appended ({p:?})"
                );
                Progress {
                    completed: bytes.len() as u64,
                    synced: bytes.len() as u64,
                    started: 0,
                }
            }
        }
    }

    fn check_versions(&self, bytes: &[u8], p: Progress) -> Progress {
        let shown = self.path.display();
        if p.completed == 0 {
            // No version completed: the file may hold a prefix of the first one.
            assert!(bytes.len() <= BLOCKS * BLOCK, "{shown}: too long ({p:?})");
        } else {
            assert_eq!(
                bytes.len(),
                BLOCKS * BLOCK,
                "{shown}: size after kill -9 ({p:?})"
            );
        }
        let mut newest = 0;
        for (b, block) in bytes.chunks(BLOCK).enumerate() {
            let v = decode_block(self.id, b as u32, block).unwrap_or_else(|| {
                panic!("{shown}: block {b} is not a block this writer wrote ({p:?})")
            });
            let (v, lowest) = (u64::from(v), p.completed.max(p.synced));
            assert!(
                v >= lowest && v <= p.started.max(p.completed),
                "{shown}: block {b} holds version {v}; versions up to {} completed, fsync \
                 returned for {}, {} was being written",
                p.completed,
                p.synced,
                p.started
            );
            newest = newest.max(v);
        }
        Progress {
            completed: newest,
            synced: newest,
            started: newest,
        }
    }
}

/// Joins the writer threads, failing the test if one hangs.
fn join_all(
    handles: Vec<(u32, mpsc::Receiver<Option<io::Error>>)>,
) -> Vec<(u32, Option<io::Error>)> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    handles
        .into_iter()
        .map(|(id, rx)| {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(result) => (id, result),
                Err(_) => panic!("writer {id} did not stop within {JOIN_TIMEOUT:?} of the crash"),
            }
        })
        .collect()
}

#[test]
fn kill_9_during_heavy_writing_keeps_every_completed_write() {
    if !mount_tests_enabled() {
        return;
    }
    let (seed, _guard) = test_seed();
    let mut rng = Rng::new(seed);
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    mount.bucket("crash");
    let bucket = store.mountpoint.join("crash");
    let kinds = [
        (Kind::Overwrite, 1),
        (Kind::Overwrite, 3),
        (Kind::Overwrite, 0),
        (Kind::Overwrite, 2),
        (Kind::Append, 1),
        (Kind::Append, 4),
        (Kind::Append, 0),
    ];
    let writers: Vec<Arc<Writer>> = kinds
        .iter()
        .enumerate()
        .map(|(i, (kind, sync_every))| {
            Arc::new(Writer {
                id: i as u32 + 1,
                kind: *kind,
                sync_every: *sync_every,
                path: bucket.join(format!("w{}", i + 1)),
                progress: Arc::new(Mutex::new(Progress::default())),
            })
        })
        .collect();
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in &writers {
            let (tx, rx) = mpsc::channel();
            handles.push((w.id, rx));
            let (w, stop, s) = (Arc::clone(w), Arc::clone(&stop), rng.next_u64());
            thread::spawn(move || {
                let _ = tx.send(w.run(s, &stop));
            });
        }
        let delay = Duration::from_millis(300 + rng.below(1200));
        thread::sleep(delay);
        mount.signal(libc::SIGKILL);
        let status = mount.wait_exit();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "daemon: {status}");
        let results = join_all(handles);
        stop.store(true, Ordering::Relaxed);
        for (id, error) in &results {
            let error = error
                .as_ref()
                .unwrap_or_else(|| panic!("writer {id} stopped without seeing the crash"));
            assert!(
                is_dead_daemon_error(error),
                "writer {id} saw {error} when the daemon died"
            );
        }
        unmount_dead(&store.mountpoint);
        drop(mount);
        mount = Mount::new(&store, &[]);
        for w in &writers {
            let p = *w.progress.lock().unwrap();
            let next = w.check(p);
            *w.progress.lock().unwrap() = next;
            eprintln!(
                "round {round} (killed after {delay:?}): writer {} {p:?}",
                w.id
            );
        }
    }
    // After a clean unmount and mount, the recovered objects read the same.
    let before: Vec<Vec<u8>> = writers.iter().map(|w| fs::read(&w.path).unwrap()).collect();
    let status = mount.unmount();
    assert!(status.success(), "daemon exited with {status} on unmount");
    let _mount = Mount::new(&store, &[]);
    for (w, old) in writers.iter().zip(before) {
        assert!(
            fs::read(&w.path).unwrap() == old,
            "{} changed on remount",
            w.path.display()
        );
    }
}

//! Inode numbers given again: the backing filesystem hands the number of a removed file to
//! the next new one, often while the kernel's `FORGET` of the removed file is still on its
//! way. Creating, writing and removing files as fast as possible from many threads must
//! never fail: no `EEXIST` for a name just removed, no `ESTALE`, no file that shows another
//! file's attributes.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};
use support::mount::{Mount, TestStore, mount_tests_enabled};

const THREADS: usize = 8;
const RUN_FOR: Duration = Duration::from_secs(6);

/// Creates (`O_EXCL`), writes, checks and removes one name over and over; returns the
/// failures it met.
fn churn(dir: PathBuf, id: usize) -> (u64, Vec<String>) {
    let path = dir.join(format!("f{id}"));
    let mut failures = Vec::new();
    let mut rounds = 0;
    let started = Instant::now();
    while started.elapsed() < RUN_FOR && failures.len() < 5 {
        rounds += 1;
        let body = format!("thread {id} round {rounds}\n");
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(body.as_bytes()));
        if let Err(e) = made {
            failures.push(format!("round {rounds}: create {}: {e}", path.display()));
            let _ = fs::remove_file(&path);
            continue;
        }
        match fs::metadata(&path) {
            Ok(meta) if meta.size() == body.len() as u64 && meta.nlink() == 1 => {}
            Ok(meta) => failures.push(format!(
                "round {rounds}: {} shows size {} and {} links, not this file's",
                path.display(),
                meta.size(),
                meta.nlink()
            )),
            Err(e) => failures.push(format!("round {rounds}: stat {}: {e}", path.display())),
        }
        if let Err(e) = fs::remove_file(&path) {
            failures.push(format!("round {rounds}: remove {}: {e}", path.display()));
        }
    }
    (rounds, failures)
}

#[test]
fn files_removed_and_created_again_at_once_never_fail() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("reuse");
    let workers: Vec<_> = (0..THREADS)
        .map(|id| {
            // Two threads per directory: creates in one directory run in parallel with
            // the removals in another.
            let dir = bucket.join(format!("d{}", id / 2));
            let _ = fs::create_dir(&dir);
            thread::spawn(move || churn(dir, id))
        })
        .collect();
    let mut rounds = 0;
    let mut failures = Vec::new();
    for worker in workers {
        let (n, failed) = worker.join().expect("a worker panicked");
        rounds += n;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds failed: {failures:#?}\n{}",
        failures.len(),
        mount.log_text()
    );
    assert!(rounds > 1000, "too few rounds to mean anything: {rounds}");
    assert!(mount.unmount().success());
}

//! Concurrency through the mount: threads and processes read and write the same and different
//! files, rename, delete and recreate, all at once. No corrupted record, no write that
//! completed is lost, no EIO, and nothing hangs (every join has a deadline). A read racing a
//! write of the same page may see part of each (Linux gives buffered reads and writes no
//! atomicity against each other, docs/SEMANTICS.md), but every byte it sees was written there
//! by some write, and once the writes are done every record is whole.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use support::model::{Rng, data_for};
use support::mount::{Mount, TestStore, mount_tests_enabled, wait_timeout};
use support::rng::test_seed;
use support::shell::q;

const RECORD: usize = 4096;
const RECORDS: u64 = 48;
const SHARED: usize = 3;
const THREADS: u64 = 6;
const RUN_FOR: Duration = Duration::from_millis(2500);
const DEADLINE: Duration = Duration::from_secs(90);

/// A self-describing record: which file and slot it belongs to, who wrote it, and bytes that
/// depend on all of that, so a torn or misplaced record is recognised.
fn record(file: u64, slot: u64, writer: u64, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD);
    for v in [file, slot, writer, seq] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let seed = file << 48 ^ slot << 32 ^ writer << 24 ^ seq;
    out.extend_from_slice(&data_for(seed, RECORD - 32));
    out
}

fn check_record(bytes: &[u8], file: u64, slot: u64, what: &str) {
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(
        (word(0), word(1)),
        (file, slot),
        "{what}: record of another place"
    );
    assert!(
        bytes == record(file, slot, word(2), word(3)).as_slice(),
        "{what}: torn or corrupted record (writer {}, seq {})",
        word(2),
        word(3)
    );
}

/// Every record written to each place of the shared files, as (writer, seq): noted before the
/// write starts, so a reader that sees any of it finds it here.
type Written = Arc<Mutex<HashMap<(u64, u64), Vec<(u64, u64)>>>>;

/// Reads that raced a write of their page and saw parts of more than one record.
static MIXED_READS: AtomicU64 = AtomicU64::new(0);

/// Explains a read of the place (`file`, `slot`) as pieces, each the bytes at the same offsets
/// of some record written there (the initial one included): `(start, writer, seq)` each.
/// `Err(offset)` when the byte at `offset` is in no record ever written to this place.
fn pieces_of(
    bytes: &[u8],
    file: u64,
    slot: u64,
    written: &Written,
) -> Result<Vec<(usize, u64, u64)>, usize> {
    let mut ids = vec![(0, 0)];
    ids.extend(
        written
            .lock()
            .unwrap()
            .get(&(file, slot))
            .cloned()
            .unwrap_or_default(),
    );
    let records: Vec<_> = ids
        .into_iter()
        .map(|(w, s)| ((w, s), record(file, slot, w, s)))
        .collect();
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let longest = records
            .iter()
            .map(|(id, r)| {
                let n = bytes[at..]
                    .iter()
                    .zip(&r[at..])
                    .take_while(|(a, b)| a == b)
                    .count();
                (n, *id)
            })
            .max();
        match longest {
            Some((n, (w, s))) if n > 0 => {
                pieces.push((at, w, s));
                at += n;
            }
            _ => return Err(at),
        }
    }
    Ok(pieces)
}

/// A read that may have raced writes of its page: each byte must come from a record written
/// to this place. Linux lets a buffered read copy a cached page while a buffered write copies
/// into it (neither takes a lock the other waits on), so a whole record is not guaranteed.
fn check_racing_read(bytes: &[u8], file: u64, slot: u64, written: &Written, what: &str) {
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    if bytes == record(file, slot, word(2), word(3)).as_slice() {
        return;
    }
    match pieces_of(bytes, file, slot, written) {
        Ok(pieces) => {
            MIXED_READS.fetch_add(1, Ordering::Relaxed);
            eprintln!("{what}: a read racing a write saw parts of records {pieces:?}");
        }
        Err(at) => panic!(
            "{what}: corrupted record: byte {at} was written by no record of file {file} slot \
             {slot}"
        ),
    }
}

fn shared_path(bucket: &Path, i: usize) -> PathBuf {
    bucket.join(format!("shared-{i}"))
}

/// One thread's work: shared records, plus private files it models exactly.
fn worker(bucket: PathBuf, id: u64, seed: u64, written: Written) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    let dirs = [
        bucket.join(format!("t{id}-a")),
        bucket.join(format!("t{id}-b")),
    ];
    for d in &dirs {
        fs::create_dir(d).unwrap();
    }
    // name -> (which dir, contents)
    let mut own: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < RUN_FOR {
        seq += 1;
        let shared = rng.below(SHARED as u64) as usize;
        let slot = rng.below(RECORDS);
        let name = format!("f{}", rng.below(4));
        match rng.below(10) {
            0..=2 => {
                written
                    .lock()
                    .unwrap()
                    .entry((shared as u64, slot))
                    .or_default()
                    .push((id, seq));
                let f = OpenOptions::new()
                    .write(true)
                    .open(shared_path(&bucket, shared))
                    .unwrap();
                f.write_all_at(&record(shared as u64, slot, id, seq), slot * RECORD as u64)
                    .unwrap_or_else(|e| panic!("thread {id}: shared write: {e}"));
            }
            3..=4 => {
                let f = fs::File::open(shared_path(&bucket, shared)).unwrap();
                let mut buf = vec![0u8; RECORD];
                f.read_exact_at(&mut buf, slot * RECORD as u64)
                    .unwrap_or_else(|e| panic!("thread {id}: shared read: {e}"));
                check_racing_read(
                    &buf,
                    shared as u64,
                    slot,
                    &written,
                    &format!("thread {id} shared-{shared} slot {slot}"),
                );
            }
            5..=6 => {
                let (dir, data) = own.entry(name.clone()).or_insert((0, Vec::new()));
                let path = dirs[*dir].join(&name);
                let offset = rng.below(3 * RECORD as u64) as usize;
                let bytes = data_for(rng.next_u64(), 1 + rng.below(2 * RECORD as u64) as usize);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("thread {id}: open {}: {e}", path.display()));
                f.write_all_at(&bytes, offset as u64).unwrap();
                if rng.chance(30) {
                    f.sync_all().unwrap();
                }
                if data.len() < offset + bytes.len() {
                    data.resize(offset + bytes.len(), 0);
                }
                data[offset..offset + bytes.len()].copy_from_slice(&bytes);
            }
            7 => {
                if let Some((dir, _)) = own.get_mut(&name) {
                    let to = 1 - *dir;
                    fs::rename(dirs[*dir].join(&name), dirs[to].join(&name))
                        .unwrap_or_else(|e| panic!("thread {id}: rename: {e}"));
                    *dir = to;
                }
            }
            8 => {
                if let Some((dir, _)) = own.remove(&name) {
                    fs::remove_file(dirs[dir].join(&name))
                        .unwrap_or_else(|e| panic!("thread {id}: unlink: {e}"));
                }
            }
            _ => {
                for (name, (dir, data)) in &own {
                    let got = fs::read(dirs[*dir].join(name))
                        .unwrap_or_else(|e| panic!("thread {id}: read own {name}: {e}"));
                    assert!(got == *data, "thread {id}: own file {name} lost a write");
                }
                fs::read_dir(&bucket)
                    .unwrap()
                    .for_each(|e| drop(e.unwrap()));
            }
        }
    }
    own.into_iter()
        .map(|(name, (dir, data))| {
            let rel = format!(
                "{}/{name}",
                dirs[dir].file_name().unwrap().to_string_lossy()
            );
            (rel, data)
        })
        .collect()
}

#[test]
fn threads_and_processes_share_files_without_corruption_or_loss() {
    if !mount_tests_enabled() {
        return;
    }
    let (seed, _guard) = test_seed();
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("conc");
    for i in 0..SHARED {
        let mut all = Vec::new();
        for slot in 0..RECORDS {
            all.extend_from_slice(&record(i as u64, slot, 0, 0));
        }
        fs::write(shared_path(&bucket, i), all).unwrap();
    }
    // Processes: three shells append lines to one log, one line per open, and one copies a
    // file (written once) and compares the copy while everything runs.
    fs::write(bucket.join("static"), data_for(seed, 1 << 20)).unwrap();
    let log = bucket.join("log");
    let mut children: Vec<_> = (0..3)
        .map(|p| {
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "for i in $(seq 1 300); do echo \"P{p} $i\" >> {}; done",
                    q(&log)
                ))
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let copier = format!(
        "for i in $(seq 1 40); do cp {0} {1} && cmp {0} {1} && rm {1} || exit 1; done",
        q(&bucket.join("static")),
        q(&bucket.join("copy"))
    );
    children.push(
        Command::new("sh")
            .arg("-c")
            .arg(copier)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let written = Written::default();
    let workers: Vec<_> = (0..THREADS)
        .map(|id| {
            let (tx, rx) = mpsc::channel();
            let bucket = bucket.clone();
            let s = seed.wrapping_add(id);
            let written = Arc::clone(&written);
            thread::spawn(move || {
                let result = std::panic::catch_unwind(|| worker(bucket, id + 1, s, written));
                let _ = tx.send(result);
            });
            rx
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    let mut own = BTreeMap::new();
    for (id, rx) in workers.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(files)) => own.extend(files),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!(
                "worker {} did not finish within {DEADLINE:?}: a hang",
                id + 1
            ),
        }
    }
    for mut child in children {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = wait_timeout(&mut child, left).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("a shell did not finish within {DEADLINE:?}: a hang")
        });
        assert!(status.success(), "a shell failed: {status}");
    }

    let check = |bucket: &Path, when: &str| {
        let text = fs::read_to_string(bucket.join("log")).unwrap();
        for p in 0..3 {
            let seen: Vec<u32> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("P{p} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                seen,
                (1..=300).collect::<Vec<_>>(),
                "{when}: appends of process {p}"
            );
        }
        assert_eq!(text.lines().count(), 900, "{when}: stray lines in the log");
        for i in 0..SHARED {
            let bytes = fs::read(shared_path(bucket, i)).unwrap();
            assert_eq!(
                bytes.len(),
                RECORDS as usize * RECORD,
                "{when}: shared-{i} size"
            );
            for (slot, rec) in bytes.chunks(RECORD).enumerate() {
                check_record(rec, i as u64, slot as u64, &format!("{when}: shared-{i}"));
            }
        }
        for (rel, data) in &own {
            let got = fs::read(bucket.join(rel)).unwrap_or_else(|e| panic!("{when}: {rel}: {e}"));
            assert!(got == *data, "{when}: {rel} lost a completed write");
        }
    };
    eprintln!(
        "{} read(s) raced a write of their page",
        MIXED_READS.load(Ordering::Relaxed)
    );
    // Quiescent now: every record is whole.
    check(&bucket, "after the run");
    assert!(mount.unmount().success());
    let mount = Mount::new(&store, &[]);
    check(&mount.join("conc"), "after a remount");
    assert!(!mount.log_text().contains("WARN"), "{}", mount.log_text());
}

/// The check of racing reads accepts a read made of records written to its place, cut
/// anywhere, and nothing else: not a flipped byte, not a record of another place.
#[test]
fn a_racing_read_is_only_ever_made_of_records_written_to_its_place() {
    let written = Written::default();
    written
        .lock()
        .unwrap()
        .insert((1, 7), vec![(3, 680), (5, 778)]);
    let (a, b) = (record(1, 7, 3, 680), record(1, 7, 5, 778));
    let mut mixed = a[..208].to_vec();
    mixed.extend_from_slice(&b[208..]);
    assert_eq!(
        pieces_of(&mixed, 1, 7, &written),
        Ok(vec![(0, 3, 680), (208, 5, 778)])
    );
    let mut flipped = b.clone();
    flipped[3000] ^= 1;
    assert_eq!(pieces_of(&flipped, 1, 7, &written), Err(3000));
    let elsewhere = record(1, 8, 3, 680);
    assert!(pieces_of(&elsewhere, 1, 7, &written).is_err());
    let unwritten = record(1, 7, 4, 1);
    assert!(pieces_of(&unwritten, 1, 7, &written).is_err());
    let zeros = vec![0u8; RECORD];
    assert_eq!(pieces_of(&zeros, 1, 7, &written), Err(0));
}

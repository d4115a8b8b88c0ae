//! Reference tests: the same seeded random writes, reads and truncates go to a file in the mount
//! and to a plain file in a temporary directory, and every answer is compared. Also O_APPEND,
//! holes, and two handles on one file.

mod support;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::{TestRng, test_seed};

/// Upper bound on offsets the random operations touch, to keep the test fast.
const SPAN: u64 = 3 << 20;

/// `pread` until `len` bytes or end of file.
fn pread(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A file in the mount and its plain twin, driven by the same operations.
struct Twin<'a> {
    mounted_path: &'a Path,
    plain_path: &'a Path,
    mounted: File,
    plain: File,
    log: Vec<String>,
}

impl Twin<'_> {
    fn fail(&self, what: String) -> ! {
        let recent: Vec<&String> = self.log.iter().rev().take(12).rev().collect();
        panic!("{what}\nlast operations (oldest first):\n  {recent:#?}");
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.log
            .push(format!("write({offset}, {} bytes)", data.len()));
        self.plain.write_all_at(data, offset).expect("plain write");
        if let Err(e) = self.mounted.write_all_at(data, offset) {
            self.fail(format!("mount write({offset}, {}) failed: {e}", data.len()));
        }
    }

    fn truncate(&mut self, len: u64) {
        self.log.push(format!("truncate({len})"));
        self.plain.set_len(len).expect("plain truncate");
        if let Err(e) = self.mounted.set_len(len) {
            self.fail(format!("mount truncate({len}) failed: {e}"));
        }
    }

    fn read(&mut self, offset: u64, len: usize) {
        self.log.push(format!("read({offset}, {len})"));
        let want = pread(&self.plain, offset, len).expect("plain read");
        let got = match pread(&self.mounted, offset, len) {
            Ok(got) => got,
            Err(e) => self.fail(format!("mount read({offset}, {len}) failed: {e}")),
        };
        self.compare(&got, &want, offset, "read");
    }

    fn compare(&self, got: &[u8], want: &[u8], base: u64, what: &str) {
        if got.len() != want.len() {
            self.fail(format!(
                "{what} at {base}: mount returned {} bytes, plain file {}",
                got.len(),
                want.len()
            ));
        }
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            self.fail(format!(
                "{what} at {base}: first difference at file offset {} (mount {:#04x}, plain {:#04x})",
                base + i as u64,
                got[i],
                want[i]
            ));
        }
    }

    fn check_size(&self) {
        let want = self.plain.metadata().expect("plain fstat").len();
        let by_handle = self.mounted.metadata().map(|m| m.len());
        let by_path = fs::metadata(self.mounted_path).map(|m| m.len());
        if by_handle.as_ref().ok() != Some(&want) || by_path.as_ref().ok() != Some(&want) {
            self.fail(format!(
                "size: plain {want}, mount fstat {by_handle:?}, mount stat {by_path:?}"
            ));
        }
    }

    fn check_whole(&self) {
        let want = fs::read(self.plain_path).expect("plain read");
        let got = fs::read(self.mounted_path)
            .unwrap_or_else(|e| self.fail(format!("read whole mounted file: {e}")));
        self.compare(&got, &want, 0, "whole-file read");
    }

    fn reopen(&mut self) {
        self.log.push("reopen".to_string());
        self.mounted = open_rw(self.mounted_path);
        self.plain = open_rw(self.plain_path);
    }
}

fn random_step(twin: &mut Twin, rng: &mut TestRng) {
    let len = twin.plain.metadata().expect("plain fstat").len();
    match rng.below(100) {
        0..=44 => {
            let offset = if rng.below(3) == 0 {
                // Near a 4 KiB boundary, where block-based formats split writes.
                let boundary = rng.below(len / 4096 + 2) * 4096;
                (boundary + rng.below(64)).saturating_sub(32).min(SPAN)
            } else {
                rng.below((len + 20_000).min(SPAN))
            };
            let size = match rng.below(4) {
                0 => 4096,
                1 => 1 + rng.below(64) as usize,
                _ => 1 + rng.below(70_000) as usize,
            };
            let data = rng.bytes(size);
            twin.write(offset, &data);
        }
        45..=79 => {
            let offset = rng.below(len + 5_000);
            let size = 1 + rng.below(80_000) as usize;
            twin.read(offset, size);
        }
        80..=94 => {
            let new_len = if rng.below(2) == 0 {
                rng.below(len + 1)
            } else {
                (len + rng.below(300_000)).min(SPAN)
            };
            twin.truncate(new_len);
        }
        _ => twin.reopen(),
    }
}

#[test]
fn random_writes_reads_truncates_match_a_plain_file() {
    if !mount_tests_enabled() {
        return;
    }
    let (seed, _guard) = test_seed();
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("reference");
    let plain_dir = store.scratch_dir("plain");
    let mounted_path = bucket.join("twin");
    let plain_path = plain_dir.join("twin");
    let mut rng = TestRng::new(seed);
    {
        let mut twin = Twin {
            mounted_path: &mounted_path,
            plain_path: &plain_path,
            mounted: open_rw(&mounted_path),
            plain: open_rw(&plain_path),
            log: Vec::new(),
        };
        for step in 0..600 {
            random_step(&mut twin, &mut rng);
            twin.check_size();
            if step % 40 == 39 {
                twin.check_whole();
            }
        }
        twin.mounted.sync_all().expect("fsync mounted file");
        twin.check_whole();
    }
    mount.remount();
    let mounted_path = mount.join("reference/twin");
    let got = fs::read(&mounted_path).expect("read after remount");
    let want = fs::read(&plain_path).expect("read plain");
    assert_eq!(got.len(), want.len(), "size after remount");
    assert!(got == want, "contents differ after remount (seed {seed})");
}

#[test]
fn holes_and_truncate_up_read_as_zeros() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("holes");
    let path = bucket.join("sparse");
    {
        let file = open_rw(&path);
        file.set_len(1 << 20).expect("truncate up to 1 MiB");
        assert_eq!(pread(&file, 0, 1 << 20).unwrap(), vec![0u8; 1 << 20]);
        file.write_all_at(b"middle", 500_000).expect("write");
        file.write_all_at(b"far", 3 << 20)
            .expect("write past the end");
        assert_eq!(file.metadata().unwrap().len(), (3 << 20) + 3);
        let hole = pread(&file, (1 << 20) - 10, (2 << 20) + 10).unwrap();
        assert!(
            hole.iter().all(|&b| b == 0),
            "hole before 3 MiB is not zero"
        );
        assert_eq!(pread(&file, 500_000 - 2, 10).unwrap(), b"\0\0middle\0\0");

        // Data cut off by a truncate must not come back when the file grows again.
        file.write_all_at(&[0xAB; 10_000], 100_000).expect("write");
        file.set_len(105_000).expect("truncate down into the data");
        file.set_len(200_000).expect("truncate up again");
        let back = pread(&file, 100_000, 100_000).unwrap();
        assert!(back[..5_000].iter().all(|&b| b == 0xAB));
        assert!(
            back[5_000..].iter().all(|&b| b == 0),
            "bytes beyond a truncate point came back after growing the file"
        );
        file.sync_all().expect("fsync");
    }
    mount.remount();
    let file = File::open(mount.join("holes/sparse")).expect("open after remount");
    assert_eq!(file.metadata().unwrap().len(), 200_000);
    let all = pread(&file, 0, 200_000).unwrap();
    assert!(all[..100_000].iter().all(|&b| b == 0));
    assert!(all[100_000..105_000].iter().all(|&b| b == 0xAB));
    assert!(all[105_000..].iter().all(|&b| b == 0));
}

#[test]
fn o_append_writes_at_the_current_end() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("append");
    let path = bucket.join("log");
    fs::write(&path, b"head\n").expect("create");
    let mut appender = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open O_APPEND");
    let other = open_rw(&path);
    let mut expected = b"head\n".to_vec();
    for i in 0..50 {
        let line = format!("line {i} {}\n", "x".repeat(i * 97));
        appender.write_all(line.as_bytes()).expect("append");
        expected.extend_from_slice(line.as_bytes());
        if i % 10 == 5 {
            // Another handle extends the file; the next append must land after its bytes.
            let end = expected.len() as u64;
            other
                .write_all_at(b"EXTERNAL\n", end)
                .expect("pwrite at end");
            expected.extend_from_slice(b"EXTERNAL\n");
        }
    }
    drop(appender);
    assert_eq!(fs::metadata(&path).unwrap().len(), expected.len() as u64);
    assert!(
        fs::read(&path).unwrap() == expected,
        "appended contents differ"
    );
}

#[test]
fn two_handles_see_each_others_writes() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("handles");
    let path = bucket.join("shared");
    let a = open_rw(&path);
    let b = open_rw(&path);
    let mut rng = TestRng::new(4242);
    let first = rng.bytes(10_000);
    a.write_all_at(&first, 0).expect("write via a");
    assert_eq!(pread(&b, 0, 20_000).unwrap(), first, "b reads a's write");
    let second = rng.bytes(70_000);
    b.write_all_at(&second, 5_000).expect("write via b");
    let mut expected = first[..5_000].to_vec();
    expected.extend_from_slice(&second);
    assert_eq!(
        pread(&a, 0, 100_000).unwrap(),
        expected,
        "a reads b's write"
    );
    a.set_len(30_000).expect("truncate via a");
    assert_eq!(b.metadata().unwrap().len(), 30_000, "b sees a's truncate");
    expected.truncate(30_000);
    assert_eq!(pread(&b, 0, 100_000).unwrap(), expected);
    drop(a);
    b.write_all_at(b"tail", 30_000)
        .expect("write via b after a closed");
    drop(b);
    expected.extend_from_slice(b"tail");
    assert!(
        fs::read(&path).unwrap() == expected,
        "final contents differ"
    );
}

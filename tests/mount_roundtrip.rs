//! Round trips through a real mount: files of sizes around block boundaries up to 64 MiB are
//! written, read back, checked with `stat`, and read back again after a remount.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::TestRng;
use support::sys::read_full;

const SIZES: &[usize] = &[0, 1, 4095, 4096, 4097, (1 << 20) + 1, 64 << 20];

fn assert_file_is(path: &Path, expected: &[u8]) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    assert_eq!(
        meta.len(),
        expected.len() as u64,
        "stat size of {}",
        path.display()
    );
    let got = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        got.len(),
        expected.len(),
        "bytes read from {}",
        path.display()
    );
    if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
        panic!(
            "{}: first wrong byte at offset {i} (got {:#04x}, expected {:#04x})",
            path.display(),
            got[i],
            expected[i]
        );
    }
}

/// Reads with an odd buffer size so reads straddle every block boundary.
fn assert_file_is_in_odd_chunks(path: &Path, expected: &[u8]) {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = vec![0u8; 4097];
    loop {
        let n = read_full(&mut file, &mut buf).expect("read");
        got.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    assert!(
        got == expected,
        "{}: odd-chunk read differs",
        path.display()
    );
}

#[test]
fn sizes_round_trip_and_survive_remount() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("sizes");
    let mut rng = TestRng::new(0x0051_75e5);
    let files: Vec<(String, Vec<u8>)> = SIZES
        .iter()
        .map(|&size| (format!("file-{size}"), rng.bytes(size)))
        .collect();

    for (name, data) in &files {
        let path = bucket.join(name);
        fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        assert_file_is(&path, data);
    }
    assert_file_is_in_odd_chunks(&bucket.join(format!("file-{}", (1 << 20) + 1)), &files[5].1);

    mount.remount();
    let bucket = mount.join("sizes");
    for (name, data) in &files {
        assert_file_is(&bucket.join(name), data);
    }
    assert_file_is_in_odd_chunks(&bucket.join(format!("file-{}", (1 << 20) + 1)), &files[5].1);
}

#[test]
fn small_appending_writes_round_trip() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("chunks");
    let path = bucket.join("many-writes");
    let mut rng = TestRng::new(77);
    let mut expected = Vec::new();
    {
        let mut file = fs::File::create(&path).expect("create");
        // Writes of awkward sizes, none aligned to a block.
        for _ in 0..200 {
            let len = 1 + rng.below(9000) as usize;
            let chunk = rng.bytes(len);
            file.write_all(&chunk).expect("write");
            expected.extend_from_slice(&chunk);
        }
        file.sync_all().expect("fsync");
    }
    assert_file_is(&path, &expected);
    mount.remount();
    let path = mount.join("chunks/many-writes");
    assert_file_is(&path, &expected);
}

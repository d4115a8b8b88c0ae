//! Tampering with backing files is detected through the mount: a flipped byte in a data page or
//! a cut-off tail reads as EIO, never as altered plaintext, and other objects stay readable.

mod common;

use common::{Mount, TestRng, TestStore, mount_tests_enabled};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open backing file {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

fn assert_eio(path: &Path, what: &str) {
    let result = fs::read(path);
    match result {
        Ok(bytes) => panic!(
            "{what}: read of {} succeeded ({} bytes) but must fail with EIO",
            path.display(),
            bytes.len()
        ),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "{what}: expected EIO, got {e}"
        ),
    }
}

#[test]
fn tampered_objects_read_as_eio_and_others_stay_readable() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("tamper");
    let mut rng = TestRng::new(0x7A3);
    let flipped = rng.bytes(256 * 1024);
    let cut = rng.bytes(100_000);
    let intact = rng.bytes(256 * 1024);
    fs::write(bucket.join("flipped"), &flipped).unwrap();
    fs::write(bucket.join("cut"), &cut).unwrap();
    fs::write(bucket.join("intact"), &intact).unwrap();
    // Tamper while unmounted so no cache can answer for the store.
    let status = mount.unmount();
    assert!(status.success());

    let backing = store.store.join("tamper/flipped");
    let len = fs::metadata(&backing).unwrap().len();
    assert!(
        len >= flipped.len() as u64,
        "backing file shorter than the object"
    );
    // The middle of a 256 KiB object is inside a data page whatever the header size.
    flip_byte(&backing, len / 2);
    let backing_cut = store.store.join("tamper/cut");
    let cut_len = fs::metadata(&backing_cut).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&backing_cut)
        .unwrap()
        .set_len(cut_len - 1)
        .unwrap();

    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("tamper/flipped"), "flipped byte");
    assert_eio(&mount.join("tamper/cut"), "cut-off tail");
    assert_eq!(
        fs::read(mount.join("tamper/intact")).expect("intact object after tampering"),
        intact
    );
}

/// The kernel keeps a file's pages between opens, but any page it reads from the daemon again
/// is authenticated again: tampering while mounted shows as EIO once the cached pages go.
#[test]
fn tampering_while_mounted_reads_as_eio_once_cached_pages_are_dropped() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("tamper");
    let data = TestRng::new(0x7A4).bytes(256 * 1024);
    let path = bucket.join("live");
    fs::write(&path, &data).unwrap();
    assert_eq!(fs::read(&path).unwrap(), data, "first read");

    let backing = store.store.join("tamper/live");
    let len = fs::metadata(&backing).unwrap().len();
    flip_byte(&backing, len / 2);
    // Drop the mount's cached pages of the file, as memory pressure would.
    let file = fs::File::open(&path).unwrap();
    // SAFETY: plain system call on a descriptor `file` keeps open.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED)");
    drop(file);
    assert_eio(&path, "flipped byte while mounted");
}

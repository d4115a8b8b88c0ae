//! Requests the filesystem does not implement are answered quietly with the errno a tool
//! expects: `ENOTTY` for every ioctl (Python's `open()` asks `TCGETS` of every file), and
//! `ENOSYS` for `copy_file_range`, `lseek` and `fallocate`, after which the kernel does the
//! work itself. None of them logs a warning.

mod support;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use support::mount::{Mount, TestStore, mount_tests_enabled};

/// `ioctl(fd, request, &mut arg)` with a zeroed 256-byte argument buffer.
fn ioctl(file: &File, request: libc::c_ulong) -> io::Result<()> {
    let mut arg = [0u8; 256];
    // SAFETY: `arg` is larger than what any of the requests used here writes.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg.as_mut_ptr()) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[test]
fn ioctls_get_enotty_and_unimplemented_requests_log_nothing() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("quiet");
    let path = bucket.join("file");
    fs::write(&path, vec![7u8; 100_000]).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    for request in [libc::TCGETS, FS_IOC_GETFLAGS] {
        let e = ioctl(&file, request).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOTTY),
            "ioctl {request:#x}: {e}"
        );
    }
    // copy_file_range (what std::io::copy between files uses): the kernel copies itself.
    let copy = bucket.join("copy");
    fs::copy(&path, &copy).unwrap();
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&path).unwrap());
    // lseek with SEEK_DATA: the kernel answers.
    // SAFETY: plain lseek on an open descriptor.
    let data = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert_eq!(data, 0);
    let mut file = file;
    assert_eq!(file.seek(SeekFrom::End(0)).unwrap(), 100_000);
    // fallocate: not supported, said so.
    // SAFETY: plain fallocate on an open descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 4096) };
    assert_eq!(rc, -1);
    assert_eq!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    drop(file);
    let log = mount.log_text();
    assert!(
        !log.contains("WARN") && !log.contains("Not Implemented"),
        "{log}"
    );
    assert!(mount.unmount().success());
}

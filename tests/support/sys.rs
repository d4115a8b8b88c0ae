//! Thin wrappers over system calls the standard library does not offer, and errno checks.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The errno of a failed operation; fails the test if the operation succeeded.
pub fn errno_of<T: std::fmt::Debug>(result: io::Result<T>, what: &str) -> i32 {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Asserts that `result` failed with `expected` errno.
pub fn assert_errno<T: std::fmt::Debug>(result: io::Result<T>, expected: i32, what: &str) {
    let got = errno_of(result, what);
    assert_eq!(
        got,
        expected,
        "{what}: expected errno {expected} ({}), got {got} ({})",
        io::Error::from_raw_os_error(expected),
        io::Error::from_raw_os_error(got)
    );
}

/// `path` as a C string for libc calls.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Turns a libc return code into an io::Result.
pub fn check_rc(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mkfifo(path, mode)`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let c = cpath(path);
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    check_rc(unsafe { libc::mkfifo(c.as_ptr(), mode) })
}

/// Sets atime and mtime of `path` (not following symlinks) to the given (seconds, nanoseconds).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(path);
    let times = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as libc::c_long,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as libc::c_long,
        },
    ];
    // SAFETY: c and times are valid for the duration of the call.
    check_rc(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Reads until `buf` is full or end of file; returns the number of bytes read.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Lists a directory with `opendir`/`readdir`, including `.` and `..`, sorted.
pub fn readdir_all(dir: &Path) -> io::Result<Vec<String>> {
    let c = cpath(dir);
    // SAFETY: c is valid; the DIR pointer is checked and closed below.
    let handle = unsafe { libc::opendir(c.as_ptr()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: errno is thread-local; reset it to tell end-of-directory from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: handle is a valid open DIR.
        let entry = unsafe { libc::readdir(handle) };
        if entry.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: handle is valid and closed exactly once.
            unsafe { libc::closedir(handle) };
            if err.raw_os_error() == Some(0) {
                break;
            }
            return Err(err);
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry readdir returned.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        names.push(
            OsStr::from_bytes(name.to_bytes())
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

/// Whether the tests run as root (the effective uid).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and takes no pointers.
    unsafe { libc::geteuid() == 0 }
}

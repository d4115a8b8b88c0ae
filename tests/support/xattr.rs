//! Extended attributes: the names ssefs answers to, and the get, set, list and remove calls
//! on a path (following symlinks), each returning the error the kernel gave.

use super::sys::{check_rc, cpath};
use std::ffi::CString;
use std::io;
use std::path::Path;

/// The bucket or object encryption rule (`AES256` or `KMS`).
pub const SSE: &str = "user.oss.server-side-encryption";
/// The CMK of a `KMS` rule or object.
pub const SSE_KEY_ID: &str = "user.oss.server-side-encryption-key-id";
/// The master key or CMK material version wrapping an object.
pub const KEY_VERSION: &str = "user.ssefs.key-version";
/// An object's file id.
pub const FILE_ID: &str = "user.ssefs.file-id";

/// Room for the largest value Linux allows (64 KiB) and then some.
const VALUE_ROOM: usize = 70_000;
/// Room for a list of many long names.
const LIST_ROOM: usize = 1 << 20;

fn cname(name: &str) -> CString {
    CString::new(name).expect("no NUL in attribute names")
}

/// `getxattr`: the attribute's value, or the error (`ENODATA` when it does not exist).
pub fn read_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (p, n) = (cpath(path), cname(name));
    let mut buf = vec![0u8; VALUE_ROOM];
    // SAFETY: NUL-terminated strings and a buffer valid for its length.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// An attribute's value as text, `None` when it does not exist.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<String>> {
    match read_xattr(path, name) {
        Ok(value) => Ok(Some(String::from_utf8(value).expect("UTF-8 attribute"))),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `setxattr` with no flags (create or replace).
pub fn set_xattr(path: &Path, name: &str, value: impl AsRef<[u8]>) -> io::Result<()> {
    let (p, n, value) = (cpath(path), cname(name), value.as_ref());
    // SAFETY: NUL-terminated strings and a value valid for its length.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check_rc(rc)
}

/// `removexattr`.
pub fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let (p, n) = (cpath(path), cname(name));
    // SAFETY: NUL-terminated strings.
    let rc = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    check_rc(rc)
}

/// `listxattr`: every name, in the order the kernel gave them.
pub fn list_xattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path);
    let mut buf = vec![0u8; LIST_ROOM];
    // SAFETY: `p` is NUL-terminated; `buf` is valid for its length.
    let got = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..got as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// The master key or CMK material version wrapping an object, as the mount reports it.
pub fn key_version(path: &Path) -> u32 {
    get_xattr(path, KEY_VERSION)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .unwrap_or_else(|| panic!("{} has no key version", path.display()))
        .parse()
        .expect("numeric key version")
}

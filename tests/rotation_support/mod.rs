//! Helpers shared by the key rotation tests: running the `ssefs` binary on a store, reading
//! and setting extended attributes on a mount, and comparing an object's backing file.
//! Talks to ssefs only through its command line, the mount and the backing files.
#![allow(dead_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

pub const SSEFS_BIN: &str = env!("CARGO_BIN_EXE_ssefs");
pub const SSE: &str = "user.oss.server-side-encryption";
pub const SSE_KEY_ID: &str = "user.oss.server-side-encryption-key-id";
pub const KEY_VERSION: &str = "user.ssefs.key-version";
pub const FILE_ID: &str = "user.ssefs.file-id";

/// `ssefs ARGS` with no root key found from the environment (tests name it explicitly).
pub fn ssefs_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(SSEFS_BIN);
    cmd.args(args)
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("HOME", "/nonexistent");
    cmd
}

/// Runs `ssefs ARGS` and returns its output.
pub fn ssefs(args: &[&str]) -> Output {
    ssefs_cmd(args).output().expect("run ssefs")
}

/// Runs `ssefs ARGS`, fails the test unless it succeeds, and returns its stdout.
pub fn ssefs_ok(args: &[&str]) -> String {
    let out = ssefs(args);
    assert!(
        out.status.success(),
        "ssefs {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn c(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("no NUL in test paths")
}

/// An attribute's value, `None` when it does not exist.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<String>> {
    let (p, n) = (c(path.as_os_str().as_bytes()), c(name.as_bytes()));
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a buffer valid for its length.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(got as usize);
    Ok(Some(String::from_utf8(buf).expect("UTF-8 attribute")))
}

pub fn set_xattr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    let (p, n) = (c(path.as_os_str().as_bytes()), c(name.as_bytes()));
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
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The master key or CMK material version wrapping an object, as the mount reports it.
pub fn key_version(path: &Path) -> u32 {
    get_xattr(path, KEY_VERSION)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .unwrap_or_else(|| panic!("{} has no key version", path.display()))
        .parse()
        .expect("numeric key version")
}

/// Deterministic test content for object `i`.
pub fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u64 * 31 + i as u64 * 7919 + (k >> 8) as u64) as u8)
        .collect()
}

//! The local copy of a remote store as files: the state attribute of a cached file,
//! placeholders (a file of the object's size, nothing fetched), the nodes only markers hold,
//! and the attributes markers give. Used by the mount's cache, its listing at mount and its
//! refreshes while mounted.

use super::namespace::NodeAttrs;
use crate::store::backing::{Backing, LocalBacking, Stat, TimeUpdate};
use crate::store::layout;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The extended attribute holding a cached file's state.
pub const CACHE_ATTR: &str = "user.ssefs.cache";

/// The `user.*` attributes of a local node (the cache's own left out).
pub(super) fn local_xattrs(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let local = LocalBacking;
    let names = local.list_xattr(file.as_fd())?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !name.starts_with(b"user.") || name == CACHE_ATTR.as_bytes() {
            continue;
        }
        let name = OsStr::from_bytes(name);
        match local.get_xattr(file.as_fd(), name) {
            Ok(value) => out.push((name.to_os_string(), value)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn lstat(path: &Path) -> io::Result<Stat> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    LocalBacking.stat(file.as_fd())
}

/// Every node under `dir` (not `.ssefs` at the top), children before their directory.
pub(super) fn walk(
    dir: &Path,
    key: &str,
    visit: &mut dyn FnMut(&str, &Path, &std::fs::Metadata),
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if key.is_empty() && name == layout::META_DIR {
            continue;
        }
        let Some(name) = name.to_str() else {
            continue;
        };
        let child_key = if key.is_empty() {
            name.to_string()
        } else {
            format!("{key}/{name}")
        };
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            walk(&path, &child_key, visit)?;
        }
        visit(&child_key, &path, &meta);
    }
    Ok(())
}

pub(super) fn read_state(path: &Path) -> Option<(bool, Option<String>)> {
    let file = File::open(path).ok()?;
    let value = LocalBacking
        .get_xattr(file.as_fd(), std::ffi::OsStr::new(CACHE_ATTR))
        .ok()?;
    let text = String::from_utf8(value).ok()?;
    let dirty = text.contains("dirty=1");
    let etag = text
        .split(' ')
        .find_map(|p| p.strip_prefix("etag="))
        .filter(|e| *e != "-")
        .map(str::to_string);
    Some((dirty, etag))
}

pub(super) fn is_dirty(path: &Path) -> bool {
    match read_state(path) {
        Some((dirty, _)) => dirty,
        // A file the cache never recorded is local work not uploaded.
        None => true,
    }
}

pub(super) fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A local file of the object's size with nothing fetched yet (all holes), recorded clean
/// at `etag`.
pub(super) fn make_placeholder(path: &Path, size: u64, etag: Option<&str>) -> io::Result<()> {
    remove_any(path)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_len(size)?;
    let state = format!(
        "v1 dirty=0 complete={} etag={}",
        u8::from(size == 0),
        etag.unwrap_or("-")
    );
    LocalBacking.set_xattr(
        file.as_fd(),
        std::ffi::OsStr::new(CACHE_ATTR),
        state.as_bytes(),
        0,
    )
}

pub(super) fn make_special(path: &Path, node: &NodeAttrs) -> io::Result<()> {
    let kind = node.mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        let target = node.target.clone().unwrap_or_default();
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), path)?;
    } else {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let kind = FileType::from_raw_mode(node.mode);
        mknodat(
            CWD,
            path,
            kind,
            Mode::from_raw_mode(node.mode & 0o7777),
            node.rdev,
        )?;
    }
    apply_attrs(path, node)
}

pub(super) fn set_times(
    path: &Path,
    atime: crate::store::backing::Timestamp,
    mtime: crate::store::backing::Timestamp,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    LocalBacking.utimens_at(
        dir.as_fd(),
        name,
        Some(TimeUpdate::At(atime)),
        Some(TimeUpdate::At(mtime)),
    )
}

/// Gives a local node the recorded mode, owner, `user.*` attributes and times.
pub(super) fn apply_attrs(path: &Path, node: &NodeAttrs) -> io::Result<()> {
    let st = lstat(path)?;
    let is_link = st.is_symlink();
    {
        use rustix::fs::{AtFlags, CWD, Gid, Uid, chownat};
        let (uid, gid) = (Uid::from_raw(node.uid), Gid::from_raw(node.gid));
        chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    if !is_link {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let present = local_xattrs(path)?;
        for (name, _) in &present {
            if !node.xattrs.iter().any(|(n, _)| n == name) {
                LocalBacking.remove_xattr(file.as_fd(), name)?;
            }
        }
        for (name, value) in &node.xattrs {
            if name.as_bytes().starts_with(b"user.") && name != CACHE_ATTR {
                LocalBacking.set_xattr(file.as_fd(), name, value, 0)?;
            }
        }
    }
    set_times(path, node.atime, node.mtime)
}

/// Empties a clean local copy in place for a new version of its object (the same inode, so
/// that whoever holds its name keeps it): the object's size, nothing fetched, recorded
/// clean at `etag`.
pub(super) fn reset_placeholder(path: &Path, size: u64, etag: Option<&str>) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.set_len(0)?;
    file.set_len(size)?;
    let state = format!(
        "v1 dirty=0 complete={} etag={}",
        u8::from(size == 0),
        etag.unwrap_or("-")
    );
    LocalBacking.set_xattr(file.as_fd(), OsStr::new(CACHE_ATTR), state.as_bytes(), 0)
}

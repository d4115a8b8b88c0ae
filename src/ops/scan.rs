//! A read-only inventory of a store's backing directory, for `fsck`, `status`, the offline
//! rewrap and the retire check: buckets, the backing files of objects, temporaries in
//! `.ssefs/tmp/` and whatever does not belong. Reads through the `Store` (its `Backing`),
//! follows no symlink, opens no object and changes nothing.

use crate::crypto::{CryptoError, HeaderInfo, peek_header};
use crate::fs::{BackingFile, validate_bucket_name};
use crate::store::layout::temp_rel_dir;
use crate::store::{META_DIR, Store, TempKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a store's backing directory holds. Paths are relative to the store root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreInventory {
    /// The canonical store path.
    pub root: PathBuf,
    pub buckets: Vec<String>,
    /// Regular files inside buckets: each should be an ssefs object.
    pub objects: Vec<PathBuf>,
    /// ssefs temporary files in `.ssefs/tmp/`, with their kind.
    pub temporaries: Vec<(PathBuf, TempKind)>,
    /// Entries that do not belong, with the reason.
    pub strays: Vec<(PathBuf, String)>,
    /// Directories that could not be listed, with the error.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Lists `store` without changing it.
pub fn inventory(store: &Store) -> StoreInventory {
    let mut inv = StoreInventory {
        root: store.root().to_path_buf(),
        ..StoreInventory::default()
    };
    scan_root(store, &mut inv);
    scan_temporaries(store, &mut inv);
    for bucket in inv.buckets.clone() {
        scan_bucket(store, &mut inv, PathBuf::from(bucket));
    }
    inv
}

/// Opens the backing file `rel` of `store` for object I/O through its `Backing`, read-only or
/// for reading and writing; never follows a symlink.
pub(crate) fn open_backing_file(
    store: &Store,
    rel: &Path,
    write: bool,
) -> std::io::Result<BackingFile> {
    let file = store.open_file(rel, write)?;
    Ok(BackingFile::new(file, Arc::clone(store.backing())))
}

/// The unauthenticated header of the object `rel` (no key needed).
pub fn peek_object(store: &Store, rel: &Path) -> Result<HeaderInfo, CryptoError> {
    peek_header(&open_backing_file(store, rel, false)?)
}

/// The uid owning the bucket directory `bucket` (a name already checked), or `None` when the
/// store has no such directory.
pub fn bucket_owner(store: &Store, bucket: &str) -> std::io::Result<Option<u32>> {
    let fd = match store.open_path(Path::new(bucket)) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = store.backing().stat(std::os::fd::AsFd::as_fd(&fd))?;
    Ok(st.is_dir().then_some(st.uid))
}

/// The kind of a backing entry, as far as a scan cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    Device,
}

impl Kind {
    fn from_mode(file_type: u32) -> Kind {
        match file_type {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::Device,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::Device => "device node",
        }
    }
}

/// The sorted entries of `rel` with their kinds (not following symlinks).
fn list(store: &Store, inv: &mut StoreInventory, rel: &Path) -> Vec<(PathBuf, Kind)> {
    let entries = match store.list_dir(rel) {
        Ok(entries) => entries,
        Err(e) => {
            inv.unreadable.push((rel.to_path_buf(), e.to_string()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = rel.join(&entry.name);
        let file_type = match entry.file_type {
            // The backing filesystem did not say: ask it.
            0 => match store
                .open_path(&path)
                .and_then(|fd| store.backing().stat(std::os::fd::AsFd::as_fd(&fd)))
            {
                Ok(st) => st.file_type(),
                Err(e) => {
                    inv.unreadable.push((path, e.to_string()));
                    continue;
                }
            },
            known => known,
        };
        out.push((path, Kind::from_mode(file_type)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn scan_root(store: &Store, inv: &mut StoreInventory) {
    for (rel, kind) in list(store, inv, Path::new("")) {
        let name = rel.as_os_str().to_os_string();
        if name == META_DIR {
            continue;
        }
        if kind != Kind::Dir {
            let what = kind.describe();
            inv.strays
                .push((rel, format!("a {what} at the store root, not a bucket")));
            continue;
        }
        match validate_bucket_name(&name) {
            Ok(bucket) => inv.buckets.push(bucket.to_string()),
            Err(_) => inv.strays.push((
                rel,
                "a directory at the store root whose name is not a valid bucket name".into(),
            )),
        }
    }
}

fn scan_temporaries(store: &Store, inv: &mut StoreInventory) {
    let tmp = temp_rel_dir();
    let exists = store
        .open_path(&tmp)
        .and_then(|fd| store.backing().stat(std::os::fd::AsFd::as_fd(&fd)))
        .is_ok_and(|st| st.is_dir());
    if !exists {
        return;
    }
    for (rel, kind) in list(store, inv, &tmp) {
        let temp = rel.file_name().and_then(TempKind::parse);
        if let (Kind::File, Some(temp)) = (kind, temp) {
            inv.temporaries.push((rel, temp));
        } else {
            let what = kind.describe();
            inv.strays.push((
                rel,
                format!("a {what} in the temporary directory that ssefs did not make"),
            ));
        }
    }
}

fn scan_bucket(store: &Store, inv: &mut StoreInventory, bucket: PathBuf) {
    let mut pending = vec![bucket];
    while let Some(dir) = pending.pop() {
        for (rel, kind) in list(store, inv, &dir) {
            match kind {
                Kind::Dir => pending.push(rel),
                Kind::File => inv.objects.push(rel),
                Kind::Device => inv
                    .strays
                    .push((rel, "a device node (ssefs never makes one)".into())),
                // Symlinks, FIFOs and sockets are ordinary entries of a bucket.
                Kind::Symlink | Kind::Fifo | Kind::Socket => {}
            }
        }
    }
    inv.objects.sort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_objects_temporaries_and_strays_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".ssefs/tmp")).unwrap();
        let hex = "00ff00ff00ff00ff00ff00ff";
        for name in [format!("create-{hex}"), format!("reencrypt-{hex}")] {
            std::fs::write(root.join(".ssefs/tmp").join(name), b"x").unwrap();
        }
        std::fs::write(root.join(format!(".ssefs/tmp/replace-{hex}")), b"x").unwrap();
        std::fs::write(root.join(".ssefs/tmp/notes.txt"), b"x").unwrap();
        std::fs::create_dir_all(root.join("photos/2024/may")).unwrap();
        std::fs::write(root.join("photos/a.jpg"), b"x").unwrap();
        std::fs::write(root.join("photos/2024/may/b.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink("a.jpg", root.join("photos/link")).unwrap();
        std::fs::create_dir(root.join("Bad_Name")).unwrap();
        std::fs::write(root.join("loose.txt"), b"x").unwrap();
        let inv = inventory(&Store::open(root).unwrap());
        assert_eq!(inv.buckets, ["photos"]);
        assert_eq!(
            inv.objects,
            [
                PathBuf::from("photos/2024/may/b.jpg"),
                PathBuf::from("photos/a.jpg")
            ]
        );
        assert_eq!(
            inv.temporaries,
            [
                (
                    PathBuf::from(format!(".ssefs/tmp/create-{hex}")),
                    TempKind::Create
                ),
                (
                    PathBuf::from(format!(".ssefs/tmp/reencrypt-{hex}")),
                    TempKind::Reencrypt
                ),
            ]
        );
        let strays: Vec<PathBuf> = inv.strays.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            strays,
            [
                PathBuf::from("Bad_Name"),
                PathBuf::from("loose.txt"),
                PathBuf::from(".ssefs/tmp/notes.txt"),
                PathBuf::from(format!(".ssefs/tmp/replace-{hex}")),
            ]
        );
        assert!(inv.unreadable.is_empty());
    }

    #[test]
    fn objects_are_read_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".ssefs")).unwrap();
        std::fs::create_dir(dir.path().join("photos")).unwrap();
        std::fs::write(dir.path().join("photos/plain"), b"not an object at all").unwrap();
        std::os::unix::fs::symlink("plain", dir.path().join("photos/link")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = peek_object(&store, Path::new("photos/plain")).unwrap_err();
        assert!(matches!(err, CryptoError::NotAnObject), "{err}");
        assert!(peek_object(&store, Path::new("photos/link")).is_err());
        assert!(peek_object(&store, Path::new("../photos/plain")).is_err());
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(dir.path().join("photos")).unwrap().uid();
        assert_eq!(bucket_owner(&store, "photos").unwrap(), Some(uid));
        assert_eq!(bucket_owner(&store, "nobucket").unwrap(), None);
        std::fs::write(dir.path().join("loose"), b"x").unwrap();
        assert_eq!(bucket_owner(&store, "loose").unwrap(), None);
    }
}

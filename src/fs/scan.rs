//! A read-only inventory of a store's backing directory, for `fsck` and `status`: buckets,
//! the backing files of objects, temporaries in `.ssefs/tmp/` and whatever does not belong.
//! Follows no symlink, opens no object and changes nothing.

use super::policy::validate_bucket_name;
use crate::crypto::{CryptoError, HeaderInfo, peek_header};
use crate::store::layout::temp_rel_dir;
use crate::store::{META_DIR, StoreError, TempKind};
use std::fs::{File, FileType, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// Lists `store` without changing it. Fails only if `store` is not an ssefs store.
pub fn inventory(store: &Path) -> Result<StoreInventory, StoreError> {
    let root = match store.canonicalize() {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::NotFound(store.to_path_buf()));
        }
        Err(source) => {
            return Err(StoreError::Io {
                path: store.to_path_buf(),
                source,
            });
        }
    };
    if !root.is_dir() {
        return Err(StoreError::NotADirectory(root));
    }
    if !root.join(META_DIR).is_dir() {
        return Err(StoreError::NotAStore(root));
    }
    let mut inv = StoreInventory {
        root,
        ..StoreInventory::default()
    };
    scan_root(&mut inv);
    scan_temporaries(&mut inv);
    for bucket in inv.buckets.clone() {
        scan_bucket(&mut inv, PathBuf::from(bucket));
    }
    Ok(inv)
}

/// Opens the backing file `root/rel` read-only, never following a symlink.
pub fn open_backing_file(root: &Path, rel: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(root.join(rel))
}

/// The unauthenticated header of the object `root/rel` (no key needed).
pub fn peek_object(root: &Path, rel: &Path) -> Result<HeaderInfo, CryptoError> {
    peek_header(&open_backing_file(root, rel)?)
}

/// The sorted entries of `root/rel` with their types (not following symlinks).
fn list(inv: &mut StoreInventory, rel: &Path) -> Vec<(PathBuf, FileType)> {
    let dir = inv.root.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            inv.unreadable.push((rel.to_path_buf(), e.to_string()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        match entry.and_then(|e| Ok((e.file_name(), e.file_type()?))) {
            Ok((name, kind)) => out.push((rel.join(name), kind)),
            Err(e) => inv.unreadable.push((rel.to_path_buf(), e.to_string())),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn scan_root(inv: &mut StoreInventory) {
    for (rel, kind) in list(inv, Path::new("")) {
        let name = rel.as_os_str().to_os_string();
        if name == META_DIR {
            continue;
        }
        if !kind.is_dir() {
            let what = describe(&kind);
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

fn scan_temporaries(inv: &mut StoreInventory) {
    let tmp = temp_rel_dir();
    if !inv.root.join(&tmp).is_dir() {
        return;
    }
    for (rel, kind) in list(inv, &tmp) {
        let temp = rel.file_name().and_then(TempKind::parse);
        if let (true, Some(temp)) = (kind.is_file(), temp) {
            inv.temporaries.push((rel, temp));
        } else {
            let what = describe(&kind);
            inv.strays.push((
                rel,
                format!("a {what} in the temporary directory that ssefs did not make"),
            ));
        }
    }
}

fn scan_bucket(inv: &mut StoreInventory, bucket: PathBuf) {
    let mut pending = vec![bucket];
    while let Some(dir) = pending.pop() {
        for (rel, kind) in list(inv, &dir) {
            if kind.is_dir() {
                pending.push(rel);
            } else if kind.is_file() {
                inv.objects.push(rel);
            } else if kind.is_block_device() || kind.is_char_device() {
                inv.strays
                    .push((rel, "a device node (ssefs never makes one)".into()));
            }
            // Symlinks, FIFOs and sockets are ordinary entries of a bucket.
        }
    }
    inv.objects.sort();
}

fn describe(kind: &FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_file() {
        "file"
    } else if kind.is_symlink() {
        "symlink"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "device node"
    }
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
        let inv = inventory(root).unwrap();
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
    fn a_directory_without_meta_dir_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            inventory(dir.path()),
            Err(StoreError::NotAStore(_))
        ));
        assert!(matches!(
            inventory(&dir.path().join("missing")),
            Err(StoreError::NotFound(_))
        ));
    }
}

//! `ssefs stat`: how each object under the given paths is encrypted, read from a live mount
//! through its attributes. Also the attribute and tree-walking helpers `ssefs reencrypt`
//! shares. Talks to the mount only (never to the store or the keystore).

use crate::fs::{AES256, BUCKET_ATTR, FILE_ID_ATTR, KEY_VERSION_ATTR, SSE_ATTR, SSE_KEY_ID_ATTR};
use rustix::io::Errno;
use std::io;
use std::path::{Path, PathBuf};

/// Why a path cannot be worked on.
#[derive(Debug, thiserror::Error)]
pub enum MountPathError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not on an ssefs mount", .0.display())]
    NotOnMount(PathBuf),
    #[error("{} is not inside a bucket", .0.display())]
    NotInBucket(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MountPathError + '_ {
    move |source| MountPathError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An attribute's value, `None` when it does not exist (`ENODATA`).
pub(crate) fn get_attr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn get_text(path: &Path, name: &str) -> io::Result<Option<String>> {
    Ok(get_attr(path, name)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Sets an attribute (no flags).
pub(crate) fn set_attr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    Ok(rustix::fs::lsetxattr(
        path,
        name,
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )?)
}

/// Removes an attribute.
pub(crate) fn remove_attr(path: &Path, name: &str) -> io::Result<()> {
    Ok(rustix::fs::lremovexattr(path, name)?)
}

/// How an object is encrypted now, as its attributes say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectEncryption {
    /// `none`, `AES256` or `KMS`.
    pub algorithm: String,
    /// The CMK id of a `KMS` object.
    pub key_id: Option<String>,
    /// The master key version (`AES256`) or CMK material version (`KMS`).
    pub key_version: Option<u32>,
    /// Changes exactly when the object is rewritten.
    pub file_id: Option<String>,
}

impl ObjectEncryption {
    pub fn read(path: &Path) -> io::Result<ObjectEncryption> {
        let algorithm = get_text(path, SSE_ATTR)?.unwrap_or_else(|| "none".to_string());
        let key_version = match get_text(path, KEY_VERSION_ATTR)? {
            Some(text) => Some(text.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "unreadable key version")
            })?),
            None => None,
        };
        Ok(ObjectEncryption {
            key_id: get_text(path, SSE_KEY_ID_ATTR)?,
            file_id: get_text(path, FILE_ID_ATTR)?,
            algorithm,
            key_version,
        })
    }

    /// The key reference: `master`, `cmk:ID`, or `-` when unencrypted.
    pub fn key_reference(&self) -> String {
        match (self.algorithm.as_str(), &self.key_id) {
            (AES256, _) => "master".to_string(),
            (_, Some(id)) => format!("cmk:{id}"),
            _ => "-".to_string(),
        }
    }

    pub fn to_json(&self, path: &Path) -> serde_json::Value {
        let key = match (self.algorithm.as_str(), &self.key_id) {
            (AES256, _) => serde_json::json!({"type": "master"}),
            (_, Some(id)) => serde_json::json!({"type": "cmk", "key_id": id}),
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "path": path.display().to_string(),
            "algorithm": self.algorithm,
            "key": key,
            "key_version": self.key_version,
        })
    }
}

/// The ssefs mount a canonical path lies on: the longest mountpoint containing it, which must
/// be of type `fuse.ssefs`.
pub(crate) fn mount_root_of(path: &Path) -> Result<PathBuf, MountPathError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(mountinfo).map_err(io_at(mountinfo))?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mountpoint) = fields
            .get(4)
            .map(|f| PathBuf::from(crate::sys::unescape(f)))
        else {
            continue;
        };
        let fstype = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|dash| fields.get(dash + 1));
        if !path.starts_with(&mountpoint) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| mountpoint.as_os_str().len() >= b.as_os_str().len());
        if longer {
            best = Some((mountpoint, fstype == Some(&"fuse.ssefs")));
        }
    }
    match best {
        Some((root, true)) => Ok(root),
        _ => Err(MountPathError::NotOnMount(path.to_path_buf())),
    }
}

/// The bucket directory (on the mount) that holds a canonical path: the mount's root on a
/// single-bucket mount, else the top-level directory of the mount the path is in.
pub(crate) fn bucket_of(path: &Path) -> Result<PathBuf, MountPathError> {
    let root = mount_root_of(path)?;
    if get_attr(&root, BUCKET_ATTR)
        .map_err(io_at(&root))?
        .is_some()
    {
        return Ok(root);
    }
    let rel = path
        .strip_prefix(&root)
        .map_err(|_| MountPathError::NotOnMount(path.to_path_buf()))?;
    let bucket = rel
        .components()
        .next()
        .ok_or_else(|| MountPathError::NotInBucket(path.to_path_buf()))?;
    Ok(root.join(bucket))
}

/// Every regular file under the given paths (directories recursively, symlinks not
/// followed below a given path), in a stable order. Unreadable paths are reported in `errors`.
pub(crate) fn collect_objects(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<MountPathError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match path.canonicalize() {
            Ok(path) => walk(&path, &mut objects, &mut errors),
            Err(e) => errors.push(io_at(path)(e)),
        }
    }
    (objects, errors)
}

fn walk(path: &Path, objects: &mut Vec<PathBuf>, errors: &mut Vec<MountPathError>) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return errors.push(io_at(path)(e)),
    };
    if meta.is_file() {
        objects.push(path.to_path_buf());
        return;
    }
    if !meta.is_dir() {
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return errors.push(io_at(path)(e)),
    };
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.path()),
            Err(e) => errors.push(io_at(path)(e)),
        }
    }
    names.sort();
    for name in names {
        walk(&name, objects, errors);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatError {
    #[error("{0} path(s) could not be read")]
    Unreadable(usize),
}

/// Runs `ssefs stat`: one line (or JSON record) per object; fails if any path failed.
pub fn run(paths: &[PathBuf], json: bool) -> Result<(), StatError> {
    let (objects, mut errors) = collect_objects(paths);
    let mut records = Vec::new();
    for object in &objects {
        if let Err(e) = mount_root_of(object) {
            errors.push(e);
            continue;
        }
        match ObjectEncryption::read(object) {
            Ok(encryption) => {
                if json {
                    records.push(encryption.to_json(object));
                } else {
                    let version = encryption
                        .key_version
                        .map_or_else(|| "-".to_string(), |v| v.to_string());
                    println!(
                        "{}\t{}\t{}\t{}",
                        object.display(),
                        encryption.algorithm,
                        encryption.key_reference(),
                        version
                    );
                }
            }
            Err(e) => errors.push(io_at(object)(e)),
        }
    }
    if json {
        let failures: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let out = serde_json::json!({"objects": records, "errors": failures});
        println!("{out}");
    } else {
        for e in &errors {
            eprintln!("ssefs: {e}");
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StatError::Unreadable(errors.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_name_the_key() {
        let mut e = ObjectEncryption {
            algorithm: "KMS".into(),
            key_id: Some("key-1".into()),
            key_version: Some(2),
            file_id: None,
        };
        assert_eq!(e.key_reference(), "cmk:key-1");
        assert_eq!(
            e.to_json(Path::new("/m/b/o"))["key"]["key_id"],
            serde_json::json!("key-1")
        );
        e.algorithm = "AES256".into();
        e.key_id = None;
        assert_eq!(e.key_reference(), "master");
        e.algorithm = "none".into();
        assert_eq!(e.key_reference(), "-");
        assert!(e.to_json(Path::new("/x"))["key"].is_null());
    }

    #[test]
    fn paths_off_any_ssefs_mount_are_refused() {
        let err = mount_root_of(Path::new("/proc/self")).unwrap_err();
        assert!(matches!(err, MountPathError::NotOnMount(_)), "{err}");
    }
}

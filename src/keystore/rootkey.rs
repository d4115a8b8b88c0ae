//! The root key: the one secret kept outside the store, as a file of 32 raw random bytes.
//! Creates and loads that file with strict modes; knows nothing of where the file should be
//! (the CLI decides) and never prints the key.

use super::KeystoreError;
use crate::crypto::Key256;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes in a root key file.
pub const ROOT_KEY_LEN: u64 = 32;

/// Where the root key comes from.
#[derive(Clone, Debug)]
pub enum RootKeySource {
    File(std::path::PathBuf),
}

impl RootKeySource {
    /// Loads the key (mode-checked).
    pub fn load(&self) -> Result<Key256, KeystoreError> {
        match self {
            RootKeySource::File(path) => load_root_key_file(path),
        }
    }
}

/// Creates a new root key file (32 random bytes, mode 0600); refuses to overwrite.
/// Missing parent directories are created with mode 0700. The file and every directory entry
/// made here are fsynced before returning.
pub fn create_root_key_file(path: &Path) -> Result<Key256, KeystoreError> {
    let parent = parent_dir(path);
    create_private_dirs(&parent)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => KeystoreError::RootKeyExists(path.to_path_buf()),
            _ => KeystoreError::File {
                action: "create root key file",
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    let written = Key256::generate()
        .map_err(KeystoreError::from)
        .and_then(|key| {
            file.write_all(key.expose_secret())
                .and_then(|()| file.sync_all())
                .map_err(KeystoreError::file("write root key file", path))?;
            Ok(key)
        });
    match written {
        Ok(key) => {
            sync_dir(&parent)?;
            Ok(key)
        }
        Err(e) => {
            // The file is ours and holds no usable key: do not leave a short key file behind.
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Loads a root key file; refuses one readable or writable by group or others, one that is
/// not a regular file, and one that is not exactly 32 bytes.
pub fn load_root_key_file(path: &Path) -> Result<Key256, KeystoreError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => KeystoreError::RootKeyMissing(path.to_path_buf()),
        _ => KeystoreError::File {
            action: "read root key file",
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let meta = file
        .metadata()
        .map_err(KeystoreError::file("read root key file", path))?;
    if !meta.is_file() {
        return Err(KeystoreError::RootKeyNotAFile(path.to_path_buf()));
    }
    check_private_mode(path, meta.permissions().mode())?;
    if meta.len() != ROOT_KEY_LEN {
        return Err(KeystoreError::RootKeyWrongSize {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(ROOT_KEY_LEN as usize + 1));
    file.take(ROOT_KEY_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(KeystoreError::file("read root key file", path))?;
    if bytes.len() as u64 != ROOT_KEY_LEN {
        return Err(KeystoreError::RootKeyWrongSize {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    Ok(Key256::from_bytes(&bytes)?)
}

/// Refuses a secret file whose mode gives group or others any access.
pub(crate) fn check_private_mode(path: &Path, mode: u32) -> Result<(), KeystoreError> {
    if mode & 0o077 != 0 {
        return Err(KeystoreError::InsecurePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// The directories that `create_root_key_file(path)` would create, outermost first.
pub fn missing_parent_dirs(path: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut dir = parent_dir(path);
    while std::fs::symlink_metadata(&dir).is_err() {
        missing.push(dir.clone());
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => break,
        }
    }
    missing.reverse();
    missing
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates each missing directory down to `dir` with mode 0700, fsyncing each new entry.
fn create_private_dirs(dir: &Path) -> Result<(), KeystoreError> {
    for missing in missing_parent_dirs(&dir.join("x")) {
        match DirBuilder::new().mode(0o700).create(&missing) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(KeystoreError::file("create directory", missing)(e)),
        }
        sync_dir(&parent_dir(&missing))?;
    }
    Ok(())
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(KeystoreError::file("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/root.key");
        let created = create_root_key_file(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&dir.path().join("a")), 0o700);
        assert_eq!(mode_of(&dir.path().join("a/b")), 0o700);
        assert_eq!(std::fs::read(&path).unwrap(), created.expose_secret());
        let loaded = load_root_key_file(&path).unwrap();
        assert_eq!(loaded.expose_secret(), created.expose_secret());
    }

    #[test]
    fn create_refuses_to_overwrite_and_keeps_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let first = create_root_key_file(&path).unwrap();
        let err = create_root_key_file(&path).unwrap_err();
        assert!(matches!(err, KeystoreError::RootKeyExists(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), first.expose_secret());
    }

    #[test]
    fn load_refuses_group_or_other_access_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        create_root_key_file(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_root_key_file(&path).unwrap_err();
            assert!(
                matches!(err, KeystoreError::InsecurePermissions { mode: m, .. } if m == mode),
                "{err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(
                msg.contains(&format!("chmod 600 {}", path.display())),
                "{msg}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        load_root_key_file(&path).unwrap();
    }

    #[test]
    fn load_refuses_wrong_sizes_missing_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        for len in [0usize, 31, 33, 64] {
            std::fs::write(&path, vec![7u8; len]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = load_root_key_file(&path).unwrap_err();
            assert!(
                matches!(err, KeystoreError::RootKeyWrongSize { size, .. } if size == len as u64),
                "{err}"
            );
        }
        let missing = dir.path().join("nope.key");
        assert!(matches!(
            load_root_key_file(&missing).unwrap_err(),
            KeystoreError::RootKeyMissing(p) if p == missing
        ));
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            load_root_key_file(&sub).unwrap_err(),
            KeystoreError::RootKeyNotAFile(_)
        ));
    }

    #[test]
    fn missing_parent_dirs_lists_outermost_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/k");
        assert_eq!(
            missing_parent_dirs(&path),
            vec![dir.path().join("x"), dir.path().join("x/y")]
        );
        assert!(missing_parent_dirs(&dir.path().join("k")).is_empty());
    }
}

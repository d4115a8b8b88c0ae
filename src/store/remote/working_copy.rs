//! The keystore of a remote store lives in the object store beside the data, as the object
//! `PREFIX/.ssefs/keystore.db`. A command that changes it works on a local working copy
//! laid out like a local store (`DIR/.ssefs/keystore.db`, in a private directory removed
//! afterwards), then puts it back with `If-Match` on the ETag it was read at: a keystore
//! changed meanwhile by another host is never overwritten; the command fails instead.

use super::{RemoteError, RemoteStore, Version, WriteMode};
use crate::store::layout;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a working copy could not be made or put back.
#[derive(Debug, thiserror::Error)]
pub enum WorkingCopyError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{store} is not an ssefs store (no keystore object {key}; run `ssefs init` first)")]
    NotAStore { store: String, key: String },
    #[error("{store} is already an ssefs store")]
    AlreadyAStore { store: String },
    #[error("{store} holds objects already; a new store needs an empty prefix (found {example})")]
    NotEmpty { store: String, example: String },
    #[error(
        "the keystore of {store} was changed by another host while this command ran; nothing \
         was written: run the command again"
    )]
    Conflict { store: String },
    #[error("the local working copy {}: {source}", path.display())]
    Local { path: PathBuf, source: io::Error },
    #[error(
        "the local working copy {} still has a write-ahead log after the command; not \
         uploading a keystore that may be incomplete",
        path.display()
    )]
    Unsettled { path: PathBuf },
}

fn local(path: &Path) -> impl FnOnce(io::Error) -> WorkingCopyError + '_ {
    move |source| WorkingCopyError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// A private directory laid out like a store, holding a copy of a remote store's keystore;
/// removed when dropped.
#[derive(Debug)]
pub struct WorkingCopy {
    root: PathBuf,
    /// The keystore as downloaded (empty for a new store) and the version it was read at.
    original: Vec<u8>,
    version: Option<Version>,
}

impl WorkingCopy {
    /// The directory to hand to commands as the store: it holds `.ssefs/keystore.db`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keystore file of the copy.
    pub fn keystore(&self) -> PathBuf {
        layout::keystore_path(&self.root)
    }

    /// An empty private directory (mode 0700): `ssefs init` makes the new store in it before
    /// [`RemoteStore::create_store`]; [`RemoteStore::checkout_keystore`] puts the keystore in.
    pub fn empty() -> Result<WorkingCopy, WorkingCopyError> {
        Ok(WorkingCopy {
            root: private_dir()?,
            original: Vec::new(),
            version: None,
        })
    }
}

impl Drop for WorkingCopy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            log::warn!(
                "cannot remove the keystore working copy {}: {e}",
                self.root.display()
            );
        }
    }
}

/// A new directory, mode 0700, under `$XDG_RUNTIME_DIR` or the system's temporary
/// directory, with a random name.
fn private_dir() -> Result<PathBuf, WorkingCopyError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    for _ in 0..8 {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| local(&base)(io::Error::other(e.to_string())))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("ssefs-keystore-{name}"));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(local(&dir)(e)),
        }
    }
    Err(local(&base)(io::Error::other(
        "no free name for a working directory",
    )))
}

/// The keystore's key relative to the store: `.ssefs/keystore.db`.
pub fn keystore_key() -> String {
    layout::keystore_rel_path().to_string_lossy().into_owned()
}

impl RemoteStore {
    /// Downloads the store's keystore into a new working copy.
    pub fn checkout_keystore(&self) -> Result<WorkingCopy, WorkingCopyError> {
        let key = keystore_key();
        let (bytes, version) = self.get(&key).map_err(|e| match e {
            RemoteError::NotFound { .. } => WorkingCopyError::NotAStore {
                store: self.url().to_string(),
                key: key.clone(),
            },
            other => other.into(),
        })?;
        let mut copy = WorkingCopy::empty()?;
        let meta = layout::meta_dir(&copy.root);
        DirBuilder::new()
            .mode(0o700)
            .create(&meta)
            .map_err(local(&meta))?;
        let path = copy.keystore();
        write_private(&path, &bytes)?;
        copy.original = bytes;
        copy.version = Some(version);
        Ok(copy)
    }

    /// Puts the working copy's keystore back if the command changed it, only over the
    /// version it was read at. Returns whether it was uploaded.
    pub fn checkin_keystore(&self, copy: &WorkingCopy) -> Result<bool, WorkingCopyError> {
        let bytes = settled_keystore(copy)?;
        if bytes == copy.original {
            return Ok(false);
        }
        let mode = match &copy.version {
            Some(version) => WriteMode::Replace(version.clone()),
            None => WriteMode::Create,
        };
        match self.put(&keystore_key(), bytes, mode) {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() || e.is_not_found() => Err(WorkingCopyError::Conflict {
                store: self.url().to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses to make a store where one is, or where the prefix holds any object.
    pub fn check_new_store(&self) -> Result<(), WorkingCopyError> {
        let store = self.url().to_string();
        match self.head(&keystore_key()) {
            Ok(_) => return Err(WorkingCopyError::AlreadyAStore { store }),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let page = self.list_page("", None, 1)?;
        let example = page
            .objects
            .first()
            .map(|o| o.key.clone())
            .or_else(|| page.dirs.first().map(|d| format!("{d}/")));
        match example {
            Some(example) => Err(WorkingCopyError::NotEmpty { store, example }),
            None => Ok(()),
        }
    }

    /// Uploads the keystore of the new local store `store` (made by `ssefs init`) as this
    /// remote store's keystore, with `If-None-Match` so that an existing store is never
    /// overwritten, even by a race with another `init`.
    pub fn create_store(&self, store: &Path) -> Result<(), WorkingCopyError> {
        let path = layout::keystore_path(store);
        let bytes = std::fs::read(&path).map_err(local(&path))?;
        match self.put(&keystore_key(), bytes, WriteMode::Create) {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Err(WorkingCopyError::AlreadyAStore {
                store: self.url().to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// The bytes of the copy's keystore once SQLite is done with it: no write-ahead log left.
fn settled_keystore(copy: &WorkingCopy) -> Result<Vec<u8>, WorkingCopyError> {
    let path = copy.keystore();
    let [wal, _shared_memory] = layout::companion_files(&path);
    match std::fs::metadata(&wal) {
        Ok(meta) if meta.len() > 0 => return Err(WorkingCopyError::Unsettled { path: wal }),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(local(&wal)(e)),
    }
    std::fs::read(&path).map_err(local(&path))
}

/// Writes `bytes` to a new file at `path`, mode 0600, synced.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WorkingCopyError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(local(path))?;
    file.write_all(bytes).map_err(local(path))?;
    file.sync_all().map_err(local(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_copy_is_private_and_removed_when_dropped() {
        let copy = WorkingCopy::empty().unwrap();
        let root = copy.root().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        assert_eq!(copy.keystore(), layout::keystore_path(&root));
        drop(copy);
        assert!(!root.exists());
    }

    #[test]
    fn the_keystore_key_is_the_layout_path() {
        assert_eq!(
            keystore_key(),
            layout::keystore_rel_path().to_string_lossy()
        );
    }
}

//! What the mount's root shows: the whole store (its buckets as top-level directories) or a
//! single bucket, whose objects then live at the root. Decides only what depends on that
//! choice (where buckets are, which names are hidden); every other rule is the same in both.

use super::inode::{self, Inode, InodeTable};
use super::policy::{DefaultSse, KeySource, validate_bucket_name};
use super::{BucketFs, FsError, FsOptions, ROOT_INO};
use crate::store::Store;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// The read-only, unlisted attribute of a single-bucket mount's root: the bucket's name (how
/// tools on the mount tell that its root is a bucket).
pub const BUCKET_ATTR: &str = "user.ssefs.bucket";

/// What the root of a mount is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RootView {
    /// The store: buckets at the root, objects below them.
    #[default]
    Store,
    /// One bucket of the store: its objects at the root.
    Bucket(String),
}

/// Why a single-bucket mount cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BucketRootError {
    #[error(transparent)]
    InvalidName(FsError),
    #[error("there is no bucket {0} in the store (-o create_bucket creates it)")]
    Missing(String),
    #[error("there is no bucket {0} in the store, and a read-only mount does not create one")]
    MissingReadOnly(String),
    #[error("{0} in the store is not a bucket (not a directory)")]
    NotADirectory(String),
    #[error("bucket {bucket}: {source}")]
    Fs { bucket: String, source: FsError },
}

impl BucketFs {
    /// A filesystem whose root is the bucket `name` of the store; with `create`, a missing
    /// bucket is made first, as `mkdir` at a whole-store root makes one (owned by this
    /// process, under the mount's default rule), except on a read-only mount.
    pub fn for_bucket(
        store: Store,
        keys: Arc<dyn KeySource>,
        options: FsOptions,
        name: &str,
        create: bool,
    ) -> Result<BucketFs, BucketRootError> {
        let bucket = validate_bucket_name(OsStr::new(name))
            .map_err(BucketRootError::InvalidName)?
            .to_string();
        let fs_error = |source: FsError| BucketRootError::Fs {
            bucket: bucket.clone(),
            source,
        };
        let backing = Arc::clone(store.backing());
        let dir = OsStr::new(&bucket);
        let stat = match backing.stat_at(store.root_fd(), dir) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && options.read_only => {
                return Err(BucketRootError::MissingReadOnly(bucket));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                make_bucket(&store, keys.as_ref(), options.default_sse, &bucket)
                    .map_err(fs_error)?;
                backing
                    .stat_at(store.root_fd(), dir)
                    .map_err(|e| fs_error(e.into()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BucketRootError::Missing(bucket));
            }
            Err(e) => return Err(fs_error(e.into())),
        };
        if !stat.is_dir() {
            return Err(BucketRootError::NotADirectory(bucket));
        }
        let root_fd = backing
            .open_path_at(store.root_fd(), dir)
            .map_err(|e| fs_error(e.into()))?;
        let mut fs = BucketFs::new(store, keys, options).map_err(fs_error)?;
        fs.inodes = InodeTable::new(backing, root_fd, &stat, inode::path_fd_budget());
        fs.view = RootView::Bucket(bucket);
        Ok(fs)
    }

    /// What the mount's root is.
    pub fn view(&self) -> &RootView {
        &self.view
    }

    /// Whether `ino` is the root of a whole-store mount (where only buckets live).
    pub(super) fn at_store_root(&self, ino: u64) -> bool {
        ino == ROOT_INO && self.view == RootView::Store
    }

    /// Hides the store's metadata directory at a whole-store root.
    pub(super) fn visible(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        if self.at_store_root(parent) && name.as_bytes() == crate::store::META_DIR.as_bytes() {
            return Err(FsError::NotFound);
        }
        Ok(())
    }

    /// The bucket a directory node is, if it is one: a top-level directory of a whole-store
    /// mount, or the root of a single-bucket mount.
    pub(super) fn bucket_node(&self, inode: &Inode) -> Result<Option<String>, FsError> {
        if !inode.is_dir() {
            return Ok(None);
        }
        match &self.view {
            RootView::Bucket(bucket) => Ok((inode.ino == ROOT_INO).then(|| bucket.clone())),
            RootView::Store if inode.ino == ROOT_INO => Ok(None),
            RootView::Store => {
                let path = self.backing().path_of(inode.fd()?.as_fd())?;
                if path.parent() == Some(self.store.root()) {
                    Ok(Some(self.bucket_of(inode)?))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The bucket of a single-bucket mount, which every node belongs to.
    pub(super) fn mounted_bucket(&self) -> Option<&str> {
        match &self.view {
            RootView::Bucket(bucket) => Some(bucket),
            RootView::Store => None,
        }
    }

    /// The value of [`BUCKET_ATTR`]: only on the root of a single-bucket mount.
    pub(super) fn bucket_attr(&self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        match self.mounted_bucket() {
            Some(bucket) if inode.ino == ROOT_INO => Ok(bucket.as_bytes().to_vec()),
            _ => Err(FsError::NoAttribute),
        }
    }
}

/// Records the encryption rule of a new bucket: the mount's default (a rule left by a bucket
/// of the same name removed behind our back is replaced).
pub(super) fn record_default_rule(
    keys: &dyn KeySource,
    default_sse: DefaultSse,
    bucket: &str,
) -> Result<(), FsError> {
    match default_sse.bucket_rule() {
        Some(rule) => keys.put_bucket_rule(bucket, &rule),
        None => keys.delete_bucket_rule(bucket),
    }
}

/// Makes the bucket directory and records its rule; removes the directory if that fails.
fn make_bucket(
    store: &Store,
    keys: &dyn KeySource,
    default_sse: DefaultSse,
    bucket: &str,
) -> Result<(), FsError> {
    let backing = store.backing();
    let name = OsStr::new(bucket);
    backing.mkdir_at(store.root_fd(), name, 0o755)?;
    if let Err(e) = record_default_rule(keys, default_sse, bucket) {
        let _ = backing.unlink_at(store.root_fd(), name, true);
        return Err(e);
    }
    log::info!("created bucket {bucket}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Algorithm, Key256};
    use crate::fs::RenameMode;
    use crate::fs::{Caller, SSE_ATTR, SSE_KEY_ID_ATTR};
    use crate::keystore::Keystore;
    use crate::store::{LocalBacking, META_DIR};
    use std::path::Path;

    const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 1,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        keys: Arc<Keystore>,
    }

    fn store() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join(META_DIR);
        std::fs::create_dir(&meta).unwrap();
        let keys = Arc::new(Keystore::create(&meta, &Key256::generate().unwrap()).unwrap());
        Fixture { dir, keys }
    }

    impl Fixture {
        fn mount(&self, bucket: &str, create: bool) -> Result<BucketFs, BucketRootError> {
            self.mount_with(FsOptions::default(), bucket, create)
        }

        fn mount_with(
            &self,
            options: FsOptions,
            bucket: &str,
            create: bool,
        ) -> Result<BucketFs, BucketRootError> {
            let store = Store::open_locked(self.dir.path()).unwrap();
            let keys = Arc::clone(&self.keys) as Arc<dyn KeySource>;
            BucketFs::for_bucket(store, keys, options, bucket, create)
        }
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn a_missing_bad_or_non_directory_bucket_is_refused() {
        let f = store();
        let err = f.mount("photos", false).err().unwrap();
        assert!(matches!(err, BucketRootError::Missing(ref b) if b == "photos"));
        assert!(err.to_string().contains("create_bucket"), "{err}");
        for bad in ["Photos", "ab", ".ssefs", "a/b", "-ab"] {
            let err = f.mount(bad, true).err().unwrap();
            assert!(matches!(err, BucketRootError::InvalidName(_)), "{bad}");
        }
        let read_only = FsOptions {
            read_only: true,
            ..FsOptions::default()
        };
        let err = f.mount_with(read_only, "photos", true).err().unwrap();
        assert!(matches!(err, BucketRootError::MissingReadOnly(_)), "{err}");
        std::fs::write(f.dir.path().join("file"), b"").unwrap();
        let err = f.mount("file", false).err().unwrap();
        assert!(matches!(err, BucketRootError::NotADirectory(_)), "{err}");
        assert!(!f.dir.path().join("photos").exists(), "nothing was made");
    }

    #[test]
    fn create_makes_the_bucket_with_the_default_rule() {
        let f = store();
        let fs = f.mount("photos", true).unwrap();
        assert!(f.dir.path().join("photos").is_dir());
        let rule = f.keys.bucket_rule("photos").unwrap().unwrap();
        assert_eq!(rule.algorithm, Algorithm::Aes256);
        assert_eq!(fs.view(), &RootView::Bucket("photos".to_string()));
        assert_eq!(fs.getxattr(ROOT_INO, os(SSE_ATTR)).unwrap(), b"AES256");
        assert_eq!(fs.getxattr(ROOT_INO, os(BUCKET_ATTR)).unwrap(), b"photos");
        drop(fs);
        // An existing bucket is mounted as it is.
        let fs = f.mount("photos", true).unwrap();
        assert_eq!(fs.getattr(ROOT_INO).unwrap().ino, ROOT_INO);
    }

    #[test]
    fn every_kind_of_node_lives_at_a_bucket_root() {
        let f = store();
        let fs = f.mount("docs", true).unwrap();
        let (attr, fh) = fs
            .create(ROOT, ROOT_INO, os("a.txt"), 0o644, libc::O_WRONLY)
            .unwrap();
        fs.write(fh, 0, b"hello").unwrap();
        fs.release(fh).unwrap();
        let on_disk = std::fs::read(f.dir.path().join("docs/a.txt")).unwrap();
        assert!(
            !on_disk.windows(5).any(|w| w == b"hello"),
            "ciphertext only"
        );
        assert_eq!(fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"AES256");
        let sub = fs.mkdir(ROOT, ROOT_INO, os("sub"), 0o755).unwrap();
        assert_eq!(f.keys.bucket_rule("sub").unwrap(), None, "not a bucket");
        assert_eq!(
            fs.getxattr(sub.ino, os(SSE_ATTR)).unwrap_err().errno(),
            libc::ENODATA
        );
        fs.symlink(ROOT, ROOT_INO, os("ln"), Path::new("a.txt"))
            .unwrap();
        fs.mknod(ROOT, ROOT_INO, os("fifo"), libc::S_IFIFO | 0o600, 0)
            .unwrap();
        fs.link(attr.ino, ROOT_INO, os("hard")).unwrap();
        fs.rename(
            ROOT_INO,
            os("hard"),
            sub.ino,
            os("moved"),
            RenameMode::Replace,
        )
        .unwrap();
        // The store's metadata directory name is an ordinary name inside a bucket.
        fs.mkdir(ROOT, ROOT_INO, os(META_DIR), 0o755).unwrap();
        let fh = fs.opendir(ROOT_INO).unwrap();
        let mut names: Vec<String> = fs
            .readdir(fh, 0)
            .unwrap()
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        fs.releasedir(fh).unwrap();
        names.sort();
        assert_eq!(names, [".", "..", META_DIR, "a.txt", "fifo", "ln", "sub"]);
        fs.rmdir(ROOT_INO, os(META_DIR)).unwrap();
        fs.unlink(ROOT_INO, os("ln")).unwrap();
        assert!(f.keys.bucket_rule("docs").unwrap().is_some(), "rule kept");
    }

    #[test]
    fn the_root_carries_the_bucket_rule_and_new_objects_follow_it() {
        let f = store();
        let fs = f.mount("vault", true).unwrap();
        fs.setxattr(ROOT, ROOT_INO, os(SSE_ATTR), b"KMS", 0)
            .unwrap();
        let rule = f.keys.bucket_rule("vault").unwrap().unwrap();
        assert_eq!(rule.algorithm, Algorithm::Kms);
        let (attr, fh) = fs
            .create(ROOT, ROOT_INO, os("secret"), 0o600, libc::O_WRONLY)
            .unwrap();
        fs.release(fh).unwrap();
        assert_eq!(fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"KMS");
        assert!(fs.getxattr(attr.ino, os(SSE_KEY_ID_ATTR)).is_ok());
        // An object override, then back under the bucket's rule.
        fs.setxattr(ROOT, attr.ino, os(SSE_ATTR), b"AES256", 0)
            .unwrap();
        assert_eq!(fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"AES256");
        fs.removexattr(ROOT, attr.ino, os(SSE_ATTR)).unwrap();
        assert_eq!(fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"KMS");
        // Only the bucket's owner or root changes the rule.
        let other = Caller {
            uid: 4242,
            gid: 4242,
            pid: 1,
        };
        let err = fs
            .setxattr(other, ROOT_INO, os(SSE_ATTR), b"AES256", 0)
            .unwrap_err();
        assert_eq!(err.errno(), libc::EPERM);
        fs.removexattr(ROOT, ROOT_INO, os(SSE_ATTR)).unwrap();
        assert_eq!(f.keys.bucket_rule("vault").unwrap(), None);
        assert_eq!(
            fs.getxattr(ROOT_INO, os(BUCKET_ATTR)).unwrap(),
            b"vault",
            "still readable"
        );
        assert_eq!(
            fs.setxattr(ROOT, ROOT_INO, os(BUCKET_ATTR), b"x", 0)
                .unwrap_err()
                .errno(),
            libc::EPERM
        );
    }

    #[test]
    fn a_whole_store_mount_has_no_bucket_attribute() {
        let f = store();
        let store = Store::open_with(f.dir.path(), Arc::new(LocalBacking), false).unwrap();
        let fs = BucketFs::new(store, Arc::clone(&f.keys) as _, FsOptions::default()).unwrap();
        assert_eq!(fs.view(), &RootView::Store);
        let err = fs.getxattr(ROOT_INO, os(BUCKET_ATTR)).unwrap_err();
        assert_eq!(err.errno(), libc::ENODATA);
        let bucket = fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
        let err = fs.getxattr(bucket.ino, os(BUCKET_ATTR)).unwrap_err();
        assert_eq!(err.errno(), libc::ENODATA);
    }
}

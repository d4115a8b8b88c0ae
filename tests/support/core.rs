//! The fs core without a kernel: a temporary store with a real keystore, a `BucketFs` over a
//! chosen `Backing`, and path resolution on top of its inode interface, so tests can drive it
//! the way the kernel does.

use ssefs::crypto::Key256;
use ssefs::fs::{BucketFs, Caller, FsError, FsOptions, NodeKind, ROOT_INO};
use ssefs::keystore::Keystore;
use ssefs::store::{Backing, LocalBacking, META_DIR, Store, StoreError};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

/// A store with its keystore, mounted (without a kernel) as a `BucketFs`.
pub struct CoreStore {
    pub dir: tempfile::TempDir,
    root_key: Key256,
    pub backing: Arc<dyn Backing>,
    pub fs: Option<BucketFs>,
}

impl CoreStore {
    /// A new store (in `parent`, or the default temporary directory) over `backing`.
    pub fn new(backing: Arc<dyn Backing>, parent: Option<&Path>) -> CoreStore {
        let builder = tempfile::Builder::new().prefix("ssefs-core-").tempdir_in(
            parent
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir),
        );
        let dir = builder.expect("temp dir");
        let meta = dir.path().join(META_DIR);
        std::fs::create_dir(&meta).unwrap();
        std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o700)).unwrap();
        let root_key = Key256::generate().unwrap();
        drop(Keystore::create(&meta, &root_key).unwrap());
        let mut store = CoreStore {
            dir,
            root_key,
            backing,
            fs: None,
        };
        store.open();
        store
    }

    pub fn local() -> CoreStore {
        CoreStore::new(Arc::new(LocalBacking), None)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Opens (mounts) the store: the store lock, the keystore, a fresh inode table.
    pub fn open(&mut self) {
        assert!(self.fs.is_none(), "already open");
        // A process forked by a concurrent test holds a copy of the lock's descriptor until it
        // execs, so the lock may stay taken for a moment after the previous drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let store = loop {
            match Store::open_with(self.dir.path(), Arc::clone(&self.backing), true) {
                Err(StoreError::AlreadyMounted(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.unwrap(),
            }
        };
        let keys = Keystore::open(&self.dir.path().join(META_DIR), &self.root_key).unwrap();
        self.fs = Some(BucketFs::new(store, Arc::new(keys), FsOptions::default()).unwrap());
    }

    /// Drops the filesystem (closing every object) and opens it again.
    pub fn reopen(&mut self) {
        self.fs = None;
        self.open();
    }

    pub fn fs(&self) -> &BucketFs {
        self.fs.as_ref().expect("store open")
    }

    /// Resolves `path` (components separated by `/`) from `start`, as the kernel would:
    /// every component but the last must be a directory.
    pub fn resolve(&self, start: u64, path: &[u8]) -> Result<u64, FsError> {
        let mut ino = start;
        for comp in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            let kind = self.fs().getattr(ino)?.kind;
            if kind != NodeKind::Directory {
                return Err(FsError::Io(std::io::Error::from_raw_os_error(
                    libc::ENOTDIR,
                )));
            }
            ino = self.fs().lookup(ino, OsStr::from_bytes(comp))?.ino;
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last component of `path`.
    pub fn resolve_parent<'p>(
        &self,
        start: u64,
        path: &'p [u8],
    ) -> Result<(u64, &'p OsStr), FsError> {
        let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        let dir = self.resolve(start, parent)?;
        if self.fs().getattr(dir)?.kind != NodeKind::Directory {
            return Err(FsError::Io(std::io::Error::from_raw_os_error(
                libc::ENOTDIR,
            )));
        }
        Ok((dir, OsStr::from_bytes(name)))
    }

    /// Makes a bucket at the root and returns its inode.
    pub fn bucket(&self, name: &str) -> u64 {
        self.fs()
            .mkdir(ROOT, ROOT_INO, OsStr::new(name), 0o755)
            .unwrap()
            .ino
    }

    /// Creates `name` in `dir` with `data` and closes it.
    pub fn put(&self, dir: u64, name: &str, data: &[u8]) -> Result<u64, FsError> {
        let (attr, fh) = self.fs().create(
            ROOT,
            dir,
            OsStr::new(name),
            0o644,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        )?;
        let written = self.fs().write(fh, 0, data);
        let closed = self.fs().release(fh);
        written?;
        closed?;
        Ok(attr.ino)
    }

    /// The whole contents of the object `name` in `dir`.
    pub fn get(&self, dir: u64, name: &str) -> Result<Vec<u8>, FsError> {
        let ino = self.fs().lookup(dir, OsStr::new(name))?.ino;
        self.read_all(ino)
    }

    pub fn read_all(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let fh = self.fs().open(ROOT, ino, libc::O_RDONLY)?;
        let mut out = Vec::new();
        let result = loop {
            match self.fs().read(fh, out.len() as u64, 1 << 20) {
                Ok(chunk) if chunk.is_empty() => break Ok(()),
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => break Err(e),
            }
        };
        let closed = self.fs().release(fh);
        result?;
        closed?;
        Ok(out)
    }
}

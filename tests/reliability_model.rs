//! The randomized model test: random sequences of create, write, read, truncate, rename, link,
//! unlink, mkdir/rmdir, fsync, close/reopen, remount and encryption changes run through a real
//! mount and through the fs core without a kernel, checked step by step against an in-memory
//! model. `SSEFS_MODEL_SEED`, `SSEFS_MODEL_CASES`, `SSEFS_MODEL_OPS`, `SSEFS_MODEL_SECS` tune it.

mod support;

use ssefs::fs::RenameMode;
use ssefs::fs::{FsError, NodeKind, SSE_ATTR};
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use support::core::{CoreStore, ROOT};
use support::model::{self, Errno, Kind, ModelSettings, OpMix, StatInfo, Target};
use support::mount::{Mount, MountArgs, TestStore, mount_tests_enabled};

/// The bucket every run happens in; new buckets get `AES256` by default.
const BUCKET: &str = "model";
const DEFAULT_SSE: &[u8] = b"AES256";

fn errno(e: io::Error) -> Errno {
    // An error without an errno (a short write) can never match the model.
    e.raw_os_error().unwrap_or(-1)
}

fn fs_errno(e: FsError) -> Errno {
    e.errno()
}

// ---------------------------------------------------------------------------------------------
// Through the mount
// ---------------------------------------------------------------------------------------------

struct MountTarget<'s> {
    store: &'s TestStore,
    /// `-o bucket=BUCKET`: the bucket is the mount's root.
    bucket_root: bool,
    mount: Option<Mount>,
    run: PathBuf,
    runs: u64,
    handles: Vec<File>,
}

impl<'s> MountTarget<'s> {
    fn new(store: &'s TestStore, bucket_root: bool) -> Self {
        let mount = Mount::with_args(Self::args(store, bucket_root));
        if !bucket_root {
            mount.bucket(BUCKET);
        }
        MountTarget {
            store,
            bucket_root,
            mount: Some(mount),
            run: PathBuf::new(),
            runs: 0,
            handles: Vec::new(),
        }
    }

    fn args(store: &TestStore, bucket_root: bool) -> MountArgs {
        let mut args = MountArgs::of(store, &[]);
        if bucket_root {
            args.options = vec![format!("bucket={BUCKET}"), "create_bucket".to_string()];
        }
        args
    }

    fn mount(&self) -> &Mount {
        self.mount.as_ref().expect("mounted")
    }

    /// Where the bucket is on the mount.
    fn bucket_dir(&self) -> PathBuf {
        if self.bucket_root {
            self.mount().path().to_path_buf()
        } else {
            self.mount().join(BUCKET)
        }
    }

    fn at(&self, path: &[u8]) -> PathBuf {
        if path.is_empty() {
            self.run.clone()
        } else {
            self.run.join(OsStr::from_bytes(path))
        }
    }

    fn xattr(&self, path: &[u8]) -> (CString, CString) {
        let p = CString::new(self.at(path).as_os_str().as_bytes()).expect("no NUL");
        (p, CString::new(SSE_ATTR).expect("no NUL"))
    }
}

impl Target for MountTarget<'_> {
    fn begin(&mut self) {
        self.runs += 1;
        self.run = self.bucket_dir().join(format!("run-{}", self.runs));
        fs::create_dir(&self.run).expect("create run directory");
    }
    fn end(&mut self) {
        self.handles.clear();
    }
    fn create(&mut self, path: &[u8]) -> Result<(), Errno> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.at(path))
            .map_err(errno)?;
        self.handles.push(file);
        Ok(())
    }
    fn open(&mut self, path: &[u8], trunc: bool) -> Result<(), Errno> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(trunc)
            .open(self.at(path))
            .map_err(errno)?;
        self.handles.push(file);
        Ok(())
    }
    fn write(&mut self, h: usize, offset: u64, data: &[u8]) -> Result<(), Errno> {
        self.handles[h].write_all_at(data, offset).map_err(errno)
    }
    fn read(&mut self, h: usize, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match self.handles[h].read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }
    fn truncate(&mut self, h: usize, size: u64) -> Result<(), Errno> {
        self.handles[h].set_len(size).map_err(errno)
    }
    fn truncate_path(&mut self, path: &[u8], size: u64) -> Result<(), Errno> {
        let p = CString::new(self.at(path).as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `p` is NUL-terminated.
        if unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) } == 0 {
            Ok(())
        } else {
            Err(errno(io::Error::last_os_error()))
        }
    }
    fn fsync(&mut self, h: usize) -> Result<(), Errno> {
        self.handles[h].sync_all().map_err(errno)
    }
    fn close(&mut self, h: usize) -> Result<(), Errno> {
        drop(self.handles.remove(h));
        Ok(())
    }
    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        fs::rename(self.at(from), self.at(to)).map_err(errno)
    }
    fn unlink(&mut self, path: &[u8]) -> Result<(), Errno> {
        fs::remove_file(self.at(path)).map_err(errno)
    }
    fn link(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        fs::hard_link(self.at(from), self.at(to)).map_err(errno)
    }
    fn mkdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        fs::create_dir(self.at(path)).map_err(errno)
    }
    fn rmdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        fs::remove_dir(self.at(path)).map_err(errno)
    }
    fn stat(&mut self, path: &[u8]) -> Result<StatInfo, Errno> {
        let meta = fs::symlink_metadata(self.at(path)).map_err(errno)?;
        Ok(if meta.is_dir() {
            StatInfo {
                kind: Kind::Dir,
                size: 0,
                nlink: 0,
            }
        } else {
            StatInfo {
                kind: Kind::File,
                size: meta.len(),
                nlink: meta.nlink(),
            }
        })
    }
    fn read_dir(&mut self, path: &[u8]) -> Result<Vec<Vec<u8>>, Errno> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.at(path)).map_err(errno)? {
            names.push(entry.map_err(errno)?.file_name().as_bytes().to_vec());
        }
        names.sort();
        Ok(names)
    }
    fn read_file(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno> {
        fs::read(self.at(path)).map_err(errno)
    }
    fn get_sse(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno> {
        let (p, name) = self.xattr(path);
        let mut buf = vec![0u8; 256];
        // SAFETY: strings are NUL-terminated; `buf` is valid for its length.
        let n = unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(errno(io::Error::last_os_error()));
        }
        buf.truncate(n as usize);
        Ok(buf)
    }
    fn set_sse(&mut self, path: &[u8], value: &[u8]) -> Result<(), Errno> {
        let (p, name) = self.xattr(path);
        // SAFETY: strings are NUL-terminated; `value` is valid for its length.
        let rc = unsafe {
            libc::setxattr(
                p.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(errno(io::Error::last_os_error()))
        }
    }
    fn remount(&mut self) {
        self.handles.clear();
        // Not `Mount::remount`: it assigns over the old `Mount`, whose drop then unmounts the
        // fresh mount on the same mountpoint.
        let status = self.mount.take().expect("mounted").unmount();
        assert!(status.success(), "daemon exited with {status} on unmount");
        self.mount = Some(Mount::with_args(Self::args(self.store, self.bucket_root)));
    }
}

// ---------------------------------------------------------------------------------------------
// Through the fs core, without a kernel
// ---------------------------------------------------------------------------------------------

struct CoreTarget {
    store: CoreStore,
    /// A planted bug (writes that cross a group boundary lose their tail), to check that the
    /// runner notices wrong answers and shrinks them.
    planted_bug: bool,
    run_name: String,
    run: u64,
    runs: u64,
    /// (file handle, inode) of each open handle.
    handles: Vec<(u64, u64)>,
}

impl CoreTarget {
    fn new() -> Self {
        let store = CoreStore::local();
        store.bucket(BUCKET);
        CoreTarget {
            store,
            planted_bug: false,
            run_name: String::new(),
            run: 0,
            runs: 0,
            handles: Vec::new(),
        }
    }

    fn locate_run(&mut self) {
        let bucket = self
            .store
            .resolve(ssefs::fs::ROOT_INO, BUCKET.as_bytes())
            .unwrap();
        self.run = self
            .store
            .resolve(bucket, self.run_name.as_bytes())
            .unwrap();
    }

    fn resolve(&self, path: &[u8]) -> Result<u64, Errno> {
        self.store.resolve(self.run, path).map_err(fs_errno)
    }

    fn parent(&self, path: &[u8]) -> Result<(u64, Vec<u8>), Errno> {
        let (dir, name) = self
            .store
            .resolve_parent(self.run, path)
            .map_err(fs_errno)?;
        Ok((dir, name.as_bytes().to_vec()))
    }

    fn kind(&self, ino: u64) -> Result<NodeKind, Errno> {
        Ok(self.store.fs().getattr(ino).map_err(fs_errno)?.kind)
    }

    fn release_all(&mut self) {
        for (fh, _) in self.handles.drain(..) {
            self.store.fs().release(fh).expect("release");
        }
    }
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

impl Target for CoreTarget {
    fn begin(&mut self) {
        self.runs += 1;
        self.run_name = format!("run-{}", self.runs);
        let bucket = self
            .store
            .resolve(ssefs::fs::ROOT_INO, BUCKET.as_bytes())
            .unwrap();
        self.store
            .fs()
            .mkdir(ROOT, bucket, OsStr::new(&self.run_name), 0o755)
            .unwrap();
        self.locate_run();
    }
    fn end(&mut self) {
        self.release_all();
    }
    fn create(&mut self, path: &[u8]) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        let (attr, fh) = self
            .store
            .fs()
            .create(ROOT, dir, os(&name), 0o644, flags)
            .map_err(fs_errno)?;
        self.handles.push((fh, attr.ino));
        Ok(())
    }
    fn open(&mut self, path: &[u8], trunc: bool) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        if self.kind(ino)? == NodeKind::Directory {
            return Err(libc::EISDIR);
        }
        let flags = libc::O_RDWR | if trunc { libc::O_TRUNC } else { 0 };
        let fh = self.store.fs().open(ROOT, ino, flags).map_err(fs_errno)?;
        self.handles.push((fh, ino));
        Ok(())
    }
    fn write(&mut self, h: usize, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let boundary = (offset / model::GROUP + 1) * model::GROUP;
        let data = if self.planted_bug && offset + (data.len() as u64) > boundary {
            &data[..(boundary - offset) as usize]
        } else {
            data
        };
        let n = self
            .store
            .fs()
            .write(self.handles[h].0, offset, data)
            .map_err(fs_errno)?;
        assert_eq!(n, data.len(), "short write from the core");
        Ok(())
    }
    fn read(&mut self, h: usize, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        self.store
            .fs()
            .read(self.handles[h].0, offset, len as u32)
            .map_err(fs_errno)
    }
    fn truncate(&mut self, h: usize, size: u64) -> Result<(), Errno> {
        let (fh, ino) = self.handles[h];
        let changes = ssefs::fs::SetAttr {
            size: Some(size),
            handle: Some(fh),
            ..Default::default()
        };
        self.store
            .fs()
            .setattr(ROOT, ino, changes)
            .map(|_| ())
            .map_err(fs_errno)
    }
    fn truncate_path(&mut self, path: &[u8], size: u64) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        let changes = ssefs::fs::SetAttr {
            size: Some(size),
            ..Default::default()
        };
        self.store
            .fs()
            .setattr(ROOT, ino, changes)
            .map(|_| ())
            .map_err(fs_errno)
    }
    fn fsync(&mut self, h: usize) -> Result<(), Errno> {
        self.store.fs().fsync(self.handles[h].0).map_err(fs_errno)
    }
    fn close(&mut self, h: usize) -> Result<(), Errno> {
        let (fh, _) = self.handles.remove(h);
        self.store.fs().release(fh).map_err(fs_errno)
    }
    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        let (old_dir, old_name) = self.parent(from)?;
        let (new_dir, new_name) = self.parent(to)?;
        self.store
            .fs()
            .rename(
                old_dir,
                os(&old_name),
                new_dir,
                os(&new_name),
                RenameMode::Replace,
            )
            .map_err(fs_errno)
    }
    fn unlink(&mut self, path: &[u8]) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        self.store.fs().unlink(dir, os(&name)).map_err(fs_errno)
    }
    fn link(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        let ino = self.resolve(from)?;
        let (dir, name) = self.parent(to)?;
        self.store
            .fs()
            .link(ino, dir, os(&name))
            .map(|_| ())
            .map_err(fs_errno)
    }
    fn mkdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        self.store
            .fs()
            .mkdir(ROOT, dir, os(&name), 0o755)
            .map(|_| ())
            .map_err(fs_errno)
    }
    fn rmdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        self.store.fs().rmdir(dir, os(&name)).map_err(fs_errno)
    }
    fn stat(&mut self, path: &[u8]) -> Result<StatInfo, Errno> {
        let ino = self.resolve(path)?;
        let attr = self.store.fs().getattr(ino).map_err(fs_errno)?;
        Ok(match attr.kind {
            NodeKind::Directory => StatInfo {
                kind: Kind::Dir,
                size: 0,
                nlink: 0,
            },
            _ => StatInfo {
                kind: Kind::File,
                size: attr.size,
                nlink: u64::from(attr.nlink),
            },
        })
    }
    fn read_dir(&mut self, path: &[u8]) -> Result<Vec<Vec<u8>>, Errno> {
        let ino = self.resolve(path)?;
        let fs = self.store.fs();
        let fh = fs.opendir(ino).map_err(fs_errno)?;
        let entries = fs.readdir(fh, 0).map_err(fs_errno);
        fs.releasedir(fh).map_err(fs_errno)?;
        let mut names: Vec<Vec<u8>> = entries?
            .into_iter()
            .map(|e| e.name.as_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        names.sort();
        Ok(names)
    }
    fn read_file(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno> {
        let ino = self.resolve(path)?;
        if self.kind(ino)? == NodeKind::Directory {
            return Err(libc::EISDIR);
        }
        self.store.read_all(ino).map_err(fs_errno)
    }
    fn get_sse(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno> {
        let ino = self.resolve(path)?;
        self.store
            .fs()
            .getxattr(ino, OsStr::new(SSE_ATTR))
            .map_err(fs_errno)
    }
    fn set_sse(&mut self, path: &[u8], value: &[u8]) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        self.store
            .fs()
            .setxattr(ROOT, ino, OsStr::new(SSE_ATTR), value, 0)
            .map_err(fs_errno)
    }
    fn remount(&mut self) {
        self.release_all();
        self.store.reopen();
        self.locate_run();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Whether setting `user.oss.server-side-encryption` on an object re-encrypts it here: the
/// model includes that operation only then (it is `EOPNOTSUPP` until re-encryption exists).
fn probe_set_sse(target: &mut dyn Target, name: &str) -> bool {
    target.begin();
    target.create(b"a").expect("probe create");
    target.write(0, 0, b"probe").expect("probe write");
    target.close(0).expect("probe close");
    let supported = match target.set_sse(b"a", b"KMS") {
        Ok(()) => {
            assert_eq!(target.read_file(b"a"), Ok(b"probe".to_vec()));
            assert_eq!(target.get_sse(b"a"), Ok(b"KMS".to_vec()));
            true
        }
        Err(libc::EOPNOTSUPP) => {
            eprintln!(
                "{name}: setting {SSE_ATTR} gives EOPNOTSUPP here; the model runs without it"
            );
            false
        }
        Err(e) => panic!("{name}: setxattr {SSE_ATTR}=KMS failed with errno {e}"),
    };
    target.end();
    supported
}

/// Every 32-byte window at each 512-byte step of the plaintexts (all-zero windows skipped).
fn plaintext_windows(data: &[&[u8]]) -> HashSet<[u8; 32]> {
    let mut set = HashSet::new();
    for bytes in data {
        for start in (0..bytes.len().saturating_sub(32)).step_by(512) {
            let window: [u8; 32] = bytes[start..start + 32].try_into().expect("32 bytes");
            if window.iter().any(|b| *b != 0) {
                set.insert(window);
            }
        }
    }
    set
}

/// Scans every file under `root` (store and keystore) for any of the windows and for `secret`.
fn assert_no_plaintext(root: &Path, windows: &HashSet<[u8; 32]>, secret: &[u8]) {
    for entry in support::tree::walk(root).keys() {
        let path = root.join(entry);
        if !fs::symlink_metadata(&path).unwrap().is_file() {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        for i in 0..bytes.len().saturating_sub(31) {
            let window: &[u8; 32] = bytes[i..i + 32].try_into().expect("32 bytes");
            assert!(
                !windows.contains(window),
                "{} holds plaintext at offset {i}",
                path.display()
            );
        }
        assert!(
            support::tree::find(&bytes, secret).is_none(),
            "{} holds the root key in clear",
            path.display()
        );
    }
}

#[test]
fn random_operations_through_a_real_mount_match_the_model() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut target = MountTarget::new(&store, false);
    let set_sse = probe_set_sse(&mut target, "mount model");
    let mix = OpMix {
        set_sse,
        remount_per_mille: 12,
    };
    let settings = ModelSettings::from_env(60, 150);
    let (cases, last) = model::run_cases(&mut target, settings, mix, DEFAULT_SSE, "mount model");
    assert!(cases > 0, "no case ran");
    // Everything the runs left behind is in the store, encrypted.
    let _ = target.store;
    target.mount.take().expect("mounted").unmount();
    let model = last.expect("a passing case");
    let windows = plaintext_windows(&model.all_data());
    let root_key = fs::read(&store.root_key).unwrap();
    assert_no_plaintext(&store.store, &windows, &root_key);
}

#[test]
fn random_operations_through_a_single_bucket_mount_match_the_model() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut target = MountTarget::new(&store, true);
    let set_sse = probe_set_sse(&mut target, "bucket mount model");
    let mix = OpMix {
        set_sse,
        remount_per_mille: 12,
    };
    let settings = ModelSettings::from_env(30, 150);
    let name = "bucket mount model";
    let (cases, last) = model::run_cases(&mut target, settings, mix, DEFAULT_SSE, name);
    assert!(cases > 0, "no case ran");
    target.mount.take().expect("mounted").unmount();
    assert!(
        store.store.join(BUCKET).join("run-1").is_dir(),
        "runs at the root"
    );
    let model = last.expect("a passing case");
    let windows = plaintext_windows(&model.all_data());
    let root_key = fs::read(&store.root_key).unwrap();
    assert_no_plaintext(&store.store, &windows, &root_key);
}

#[test]
fn random_operations_on_the_fs_core_match_the_model() {
    let mut target = CoreTarget::new();
    let set_sse = probe_set_sse(&mut target, "core model");
    let mix = OpMix {
        set_sse,
        remount_per_mille: 8,
    };
    let settings = ModelSettings::from_env(150, 150);
    let (cases, _) = model::run_cases(&mut target, settings, mix, DEFAULT_SSE, "core model");
    assert!(cases > 0, "no case ran");
}

/// The model itself, checked on a few hand-written sequences against Linux semantics, so a
/// wrong model cannot hide a wrong filesystem.
#[test]
fn the_model_follows_posix_on_known_cases() {
    let mut m = model::Model::new(DEFAULT_SSE);
    assert_eq!(m.mkdir(b"a"), Ok(()));
    assert_eq!(m.mkdir(b"a"), Err(libc::EEXIST));
    assert_eq!(m.create(b"a/b"), Ok(()));
    assert_eq!(m.create(b"a/b/c"), Err(libc::ENOTDIR));
    assert_eq!(m.rename(b"a", b"a/c"), Err(libc::EINVAL));
    assert_eq!(m.rename(b"a/b", b"a"), Err(libc::ENOTEMPTY));
    assert_eq!(m.rmdir(b"a"), Err(libc::ENOTEMPTY));
    assert_eq!(m.unlink(b"a"), Err(libc::EISDIR));
    assert_eq!(m.link(b"a", b"b"), Err(libc::EPERM));
    assert_eq!(m.link(b"a/b", b"b"), Ok(()));
    assert_eq!(m.stat(b"b").map(|s| s.nlink), Ok(2));
    assert_eq!(
        m.rename(b"a/b", b"b"),
        Ok(()),
        "rename onto a hard link of itself"
    );
    assert_eq!(m.stat(b"a/b").map(|s| s.nlink), Ok(2));
    m.write(0, 10, b"xyz");
    assert_eq!(m.read(0, 8, 10), vec![0, 0, b'x', b'y', b'z']);
    assert_eq!(m.unlink(b"a/b"), Ok(()));
    assert_eq!(m.unlink(b"b"), Ok(()));
    assert_eq!(
        m.read(0, 10, 3),
        b"xyz",
        "an open unlinked file stays readable"
    );
    m.close(0);
    assert_eq!(m.all_data().len(), 0, "closed unlinked file is gone");
    assert_eq!(m.mkdir(b"b"), Ok(()));
    assert_eq!(m.create(b"f"), Ok(()));
    assert_eq!(m.rename(b"f", b"b"), Err(libc::EISDIR));
    assert_eq!(m.rename(b"b", b"f"), Err(libc::ENOTDIR));
    assert_eq!(
        m.rename(b"b", b"a"),
        Ok(()),
        "a directory replaces an empty one"
    );
    assert_eq!(m.read_dir(b""), Ok(vec![b"a".to_vec(), b"f".to_vec()]));
}

#[test]
fn a_wrong_answer_is_caught_and_shrunk_to_a_few_operations() {
    let mut target = CoreTarget::new();
    target.planted_bug = true;
    let mix = OpMix {
        set_sse: false,
        remount_per_mille: 8,
    };
    let failing = (0..50u64)
        .map(|seed| model::generate(seed, 150, mix))
        .find(|ops| {
            let mut stats = model::Stats::default();
            model::run(&mut target, ops, mix, DEFAULT_SSE, &mut stats).is_err()
        })
        .expect("the planted bug is found within 50 cases");
    let (shrunk, failure) = model::shrink(
        &mut target,
        failing.clone(),
        mix,
        DEFAULT_SSE,
        std::time::Duration::from_secs(60),
    );
    assert!(
        shrunk.len() <= 4 && shrunk.len() < failing.len(),
        "shrunk to {} ops: {shrunk:#?} ({failure})",
        shrunk.len()
    );
    assert!(
        shrunk
            .iter()
            .any(|op| matches!(op, model::Op::Write { .. })),
        "{shrunk:#?}"
    );
}

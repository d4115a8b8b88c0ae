//! Faults from the backing store: a `Backing` that wraps `LocalBacking` and makes chosen calls
//! fail with `EIO` or `ENOSPC`, or write short, drives the fs core directly. The caller must get
//! the errno, and nothing else may be damaged: other objects read back, the object's committed
//! content (or, block by block, the new content) reads back, nothing fails authentication, and
//! no half-created object or temporary file is left.

mod support;

use ssefs::fs::{BucketFs, FsError, ROOT_INO, SetAttr};
use ssefs::store::{Backing, DirEntryInfo, FsUsage, LocalBacking, RenameMode, Stat, TimeUpdate};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::core::{CoreStore, ROOT};
use support::model::{BLOCK, GROUP, data_for};

/// The backing calls a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Write,
    Read,
    SetLen,
    Sync,
    Create,
    Rename,
    Reopen,
    SetXattr,
    Mkdir,
}

/// What a faulty call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Fail(i32),
    /// Writes only this many bytes (at least one) and reports that.
    Short(usize),
}

/// Fail the `skip`-th matching call from arming on (0: the first); `sticky` keeps failing
/// every later matching call too (a full disk), otherwise it fails once (a transient error).
#[derive(Clone, Copy, Debug)]
struct Fault {
    call: Call,
    skip: usize,
    effect: Effect,
    sticky: bool,
}

/// `LocalBacking` with one armed fault at a time; counts the calls it sees.
#[derive(Default)]
struct FaultyBacking {
    inner: LocalBacking,
    fault: Mutex<Option<Fault>>,
    seen: AtomicUsize,
    fired: AtomicUsize,
}

impl FaultyBacking {
    fn arm(&self, fault: Fault) {
        self.seen.store(0, Ordering::SeqCst);
        self.fired.store(0, Ordering::SeqCst);
        *self.fault.lock().unwrap() = Some(fault);
    }
    fn disarm(&self) {
        *self.fault.lock().unwrap() = None;
    }
    fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// The effect for this call, if the armed fault hits it.
    fn hit(&self, call: Call) -> Option<Effect> {
        let mut guard = self.fault.lock().unwrap();
        let fault = (*guard)?;
        if fault.call != call {
            return None;
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n < fault.skip {
            return None;
        }
        if !fault.sticky {
            *guard = None;
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        Some(fault.effect)
    }

    fn check(&self, call: Call) -> io::Result<()> {
        match self.hit(call) {
            Some(Effect::Fail(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Effect::Short(_)) | None => Ok(()),
        }
    }
}

impl Backing for FaultyBacking {
    fn stat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat> {
        self.inner.stat(fd)
    }
    fn stat_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
        self.inner.stat_at(dir, name)
    }
    fn open_path_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
        self.inner.open_path_at(dir, name)
    }
    fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
        self.check(Call::Reopen)?;
        self.inner.reopen(fd, flags)
    }
    fn create_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
        self.check(Call::Create)?;
        self.inner.create_at(dir, name, mode)
    }
    fn create_unnamed(&self, dir: BorrowedFd<'_>, mode: u32) -> io::Result<Option<File>> {
        self.check(Call::Create)?;
        self.inner.create_unnamed(dir, mode)
    }
    fn link_unnamed(&self, file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        self.check(Call::Rename)?;
        self.inner.link_unnamed(file, dir, name)
    }
    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
        self.check(Call::Mkdir)?;
        self.inner.mkdir_at(dir, name, mode)
    }
    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        self.inner.mknod_at(dir, name, mode, rdev)
    }
    fn symlink_at(&self, target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        self.inner.symlink_at(target, dir, name)
    }
    fn link_at(&self, fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        self.inner.link_at(fd, dir, name)
    }
    fn unlink_at(&self, dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
        self.inner.unlink_at(dir, name, is_dir)
    }
    fn rename_at(
        &self,
        old_dir: BorrowedFd<'_>,
        old_name: &OsStr,
        new_dir: BorrowedFd<'_>,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> io::Result<()> {
        self.check(Call::Rename)?;
        self.inner
            .rename_at(old_dir, old_name, new_dir, new_name, mode)
    }
    fn readlink(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        self.inner.readlink(fd)
    }
    fn read_dir(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<DirEntryInfo>> {
        self.inner.read_dir(fd)
    }
    fn path_of(&self, fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
        self.inner.path_of(fd)
    }
    fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        self.inner.chmod(fd, mode)
    }
    fn chown(&self, fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.inner.chown(fd, uid, gid)
    }
    fn utimens(
        &self,
        fd: BorrowedFd<'_>,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()> {
        self.inner.utimens(fd, atime, mtime)
    }
    fn utimens_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()> {
        self.inner.utimens_at(dir, name, atime, mtime)
    }
    fn get_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
        self.inner.get_xattr(fd, name)
    }
    fn list_xattr(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        self.inner.list_xattr(fd)
    }
    fn set_xattr(
        &self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        self.check(Call::SetXattr)?;
        self.inner.set_xattr(fd, name, value, flags)
    }
    fn remove_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        self.inner.remove_xattr(fd, name)
    }
    fn statvfs(&self, fd: BorrowedFd<'_>) -> io::Result<FsUsage> {
        self.inner.statvfs(fd)
    }
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check(Call::Read)?;
        self.inner.read_at(file, buf, offset)
    }
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        match self.hit(Call::Write) {
            Some(Effect::Fail(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Effect::Short(n)) => {
                self.inner
                    .write_at(file, &buf[..n.clamp(1, buf.len())], offset)
            }
            None => self.inner.write_at(file, buf, offset),
        }
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        self.check(Call::SetLen)?;
        self.inner.set_len(file, len)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.check(Call::Sync)?;
        self.inner.sync_data(file)
    }
}

/// A store over a `FaultyBacking`, with a bucket, a bystander object and a victim object.
struct Scene {
    backing: Arc<FaultyBacking>,
    store: CoreStore,
    bucket: u64,
    bystander: Vec<u8>,
    victim: Vec<u8>,
}

const OLD_LEN: usize = 3 * BLOCK as usize + 100;
/// The new write covers more than a meta page group.
const NEW_LEN: usize = (GROUP + 4 * BLOCK) as usize + 77;

impl Scene {
    fn new() -> Scene {
        let backing = Arc::new(FaultyBacking::default());
        let store = CoreStore::new(Arc::clone(&backing) as Arc<dyn Backing>, None);
        let bucket = store.bucket("faults");
        let bystander = data_for(1, 2 * GROUP as usize + 5);
        let victim = data_for(2, OLD_LEN);
        store.put(bucket, "bystander", &bystander).unwrap();
        store.put(bucket, "victim", &victim).unwrap();
        Scene {
            backing,
            store,
            bucket,
            bystander,
            victim,
        }
    }

    fn fs(&self) -> &BucketFs {
        self.store.fs()
    }

    /// Unmounts and mounts the store again (a new inode table: look the bucket up again).
    fn reopen(&mut self) {
        self.store.reopen();
        self.bucket = self
            .fs()
            .lookup(ROOT_INO, OsStr::new("faults"))
            .unwrap()
            .ino;
    }

    fn victim_ino(&self) -> u64 {
        self.fs()
            .lookup(self.bucket, OsStr::new("victim"))
            .unwrap()
            .ino
    }

    /// Nothing else is damaged: the bystander reads back, the victim reads without an
    /// integrity failure and each of its blocks is its old or its new content, the bucket lists
    /// exactly the expected names, and no temporary file is left.
    fn check_undamaged(&self, new: Option<&[u8]>, what: &str) {
        assert_eq!(
            self.store
                .get(self.bucket, "bystander")
                .map_err(|e| e.errno()),
            Ok(self.bystander.clone()),
            "{what}: the bystander object"
        );
        let got = self.store.get(self.bucket, "victim").unwrap_or_else(|e| {
            panic!(
                "{what}: the victim fails to read: {e} (errno {})",
                e.errno()
            )
        });
        match new {
            None => assert!(
                got == self.victim,
                "{what}: the victim changed ({} bytes)",
                got.len()
            ),
            Some(new) => {
                let sizes = self.victim.len()..=new.len().max(self.victim.len());
                assert!(
                    sizes.contains(&got.len()),
                    "{what}: victim size {} not in {sizes:?}",
                    got.len()
                );
                for (b, block) in got.chunks(BLOCK as usize).enumerate() {
                    let at = b * BLOCK as usize;
                    let old = self
                        .victim
                        .get(at..(at + block.len()).min(self.victim.len()))
                        .unwrap_or(&[]);
                    let fresh = &new[at..(at + block.len()).min(new.len())];
                    assert!(
                        block == old || block == fresh,
                        "{what}: victim block {b} is neither old nor new content"
                    );
                }
            }
        }
        let tmp = self.store.path().join(".ssefs/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{what}: temporary files left: {left:?}");
        let fh = self.fs().opendir(self.bucket).unwrap();
        let mut names: Vec<String> = self
            .fs()
            .readdir(fh, 0)
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        self.fs().releasedir(fh).unwrap();
        names.sort();
        assert_eq!(
            names,
            [".", "..", "bystander", "victim"],
            "{what}: bucket listing"
        );
    }
}

fn errno_of(result: Result<(), FsError>) -> Option<i32> {
    result.err().map(|e| e.errno())
}

/// Open, overwrite and extend across a group boundary, fsync, close; a fault fires on the
/// `skip`-th backing write. The first error must carry the injected errno, and the victim
/// must afterwards read back block by block as old or new content, before and after a remount.
#[test]
fn write_faults_give_the_errno_and_damage_nothing() {
    let new = data_for(3, NEW_LEN);
    let mut hit = 0;
    for (errno, sticky) in [(libc::EIO, false), (libc::ENOSPC, true), (libc::EIO, true)] {
        for skip in 0..20 {
            let mut scene = Scene::new();
            let what = format!("errno {errno} sticky={sticky} on write call {skip}");
            let ino = scene.victim_ino();
            let fh = scene.fs().open(ROOT, ino, libc::O_RDWR).unwrap();
            scene.backing.arm(Fault {
                call: Call::Write,
                skip,
                effect: Effect::Fail(errno),
                sticky,
            });
            // In 32 KiB requests, as the kernel sends them, until the first error.
            let written = new.chunks(32 << 10).enumerate().try_for_each(|(i, piece)| {
                scene
                    .fs()
                    .write(fh, (i * (32 << 10)) as u64, piece)
                    .map(|_| ())
            });
            let synced = scene.fs().fsync(fh);
            let released = scene.fs().release(fh);
            let fired = scene.backing.fired();
            scene.backing.disarm();
            let first = [errno_of(written), errno_of(synced), errno_of(released)]
                .into_iter()
                .flatten()
                .next();
            if fired > 0 {
                hit += 1;
                assert_eq!(
                    first,
                    Some(errno),
                    "{what}: the caller must see the injected errno"
                );
            } else {
                assert_eq!(first, None, "{what}: no fault fired, yet an error");
            }
            scene.check_undamaged(Some(&new), &format!("{what}, same mount"));
            scene.reopen();
            scene.check_undamaged(Some(&new), &format!("{what}, after remount"));
            if fired == 0 {
                assert_eq!(
                    scene.store.get(scene.bucket, "victim").unwrap(),
                    new,
                    "{what}"
                );
            }
            // The object still takes writes once the fault is gone.
            let ino = scene.victim_ino();
            let fh = scene
                .fs()
                .open(ROOT, ino, libc::O_RDWR | libc::O_TRUNC)
                .unwrap();
            scene.fs().write(fh, 0, b"recovered").unwrap();
            scene.fs().release(fh).unwrap();
            assert_eq!(
                scene.store.get(scene.bucket, "victim").unwrap(),
                b"recovered",
                "{what}"
            );
        }
    }
    // The writes of the sequence (header, slots, data pages, size header, close) were hit.
    assert!(hit >= 50, "only {hit} of 60 scenarios injected a fault");
}

/// Short writes (as a nearly full disk or a signal gives them) are finished, not lost.
#[test]
fn short_writes_are_completed() {
    let scene = Scene::new();
    let new = data_for(4, NEW_LEN);
    scene.backing.arm(Fault {
        call: Call::Write,
        skip: 0,
        effect: Effect::Short(1000),
        sticky: true,
    });
    let ino = scene.victim_ino();
    let fh = scene.fs().open(ROOT, ino, libc::O_RDWR).unwrap();
    scene.fs().write(fh, 0, &new).unwrap();
    scene.fs().fsync(fh).unwrap();
    scene.fs().release(fh).unwrap();
    let created = scene
        .store
        .put(scene.bucket, "made-short", &new[..5000])
        .map(|_| ());
    assert!(scene.backing.fired() > 10, "short writes were injected");
    scene.backing.disarm();
    created.unwrap();
    assert_eq!(scene.store.get(scene.bucket, "victim").unwrap(), new);
    assert_eq!(
        scene.store.get(scene.bucket, "made-short").unwrap(),
        &new[..5000]
    );
    scene
        .fs()
        .unlink(scene.bucket, OsStr::new("made-short"))
        .unwrap();
    scene.check_undamaged(Some(&new), "short writes");
}

/// A short write followed by ENOSPC (the real shape of a full disk) reports ENOSPC.
#[test]
fn a_short_write_then_enospc_reports_enospc() {
    let scene = Scene::new();
    let new = data_for(5, NEW_LEN);
    let ino = scene.victim_ino();
    let fh = scene.fs().open(ROOT, ino, libc::O_RDWR).unwrap();
    scene.backing.arm(Fault {
        call: Call::Write,
        skip: 2,
        effect: Effect::Short(300),
        sticky: false,
    });
    // The short write is retried; the retry hits a sticky ENOSPC.
    let written = scene.fs().write(fh, 0, &new[..8192]);
    assert!(
        written.is_ok(),
        "a single short write is completed: {written:?}"
    );
    scene.backing.arm(Fault {
        call: Call::Write,
        skip: 1,
        effect: Effect::Fail(libc::ENOSPC),
        sticky: true,
    });
    let written = scene.fs().write(fh, 0, &new);
    assert_eq!(written.map_err(|e| e.errno()).err(), Some(libc::ENOSPC));
    scene.backing.disarm();
    let _ = scene.fs().release(fh);
    scene.check_undamaged(Some(&new), "short write then ENOSPC");
}

/// Failing syncs, reads, truncates, creates, renames, opens, mkdirs and setxattrs: the errno
/// comes back and nothing is damaged.
#[test]
fn other_backing_faults_give_the_errno_and_damage_nothing() {
    for errno in [libc::EIO, libc::ENOSPC] {
        let fault = |call| Fault {
            call,
            skip: 0,
            effect: Effect::Fail(errno),
            sticky: false,
        };

        // fsync
        let scene = Scene::new();
        let ino = scene.victim_ino();
        let fh = scene.fs().open(ROOT, ino, libc::O_RDWR).unwrap();
        scene.fs().write(fh, 5, b"synced?").unwrap();
        scene.backing.arm(fault(Call::Sync));
        assert_eq!(errno_of(scene.fs().fsync(fh)), Some(errno), "fsync");
        scene.fs().release(fh).unwrap();
        let mut expected = scene.victim.clone();
        expected[5..12].copy_from_slice(b"synced?");
        assert!(scene.store.get(scene.bucket, "victim").unwrap() == expected);

        // read
        let scene = Scene::new();
        let ino = scene.victim_ino();
        let fh = scene.fs().open(ROOT, ino, libc::O_RDONLY).unwrap();
        scene.backing.arm(fault(Call::Read));
        let read = scene.fs().read(fh, 0, 4096).map(|_| ());
        assert_eq!(errno_of(read), Some(errno), "read");
        scene.fs().release(fh).unwrap();
        scene.check_undamaged(None, "read fault");

        // truncate down and up
        for size in [10u64, 3 * GROUP] {
            let scene = Scene::new();
            let ino = scene.victim_ino();
            scene.backing.arm(Fault {
                sticky: true,
                ..fault(Call::SetLen)
            });
            let changes = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            let result = scene.fs().setattr(ROOT, ino, changes).map(|_| ());
            let fired = scene.backing.fired();
            scene.backing.disarm();
            if fired > 0 {
                assert_eq!(errno_of(result), Some(errno), "truncate to {size}");
            }
            let mut resized = scene.victim.clone();
            resized.resize(size as usize, 0);
            let got = scene.store.get(scene.bucket, "victim").unwrap();
            assert!(
                got == scene.victim || got == resized,
                "truncate to {size} under a fault left {} bytes of something else",
                got.len()
            );
        }

        // create (an unnamed file), publish (its link), mkdir, setxattr
        for call in [Call::Create, Call::Rename] {
            let scene = Scene::new();
            scene.backing.arm(fault(call));
            let created = scene
                .store
                .put(scene.bucket, "new-object", b"data")
                .map(|_| ());
            let fired = scene.backing.fired();
            scene.backing.disarm();
            assert!(fired > 0, "{call:?} was never called by create");
            assert_eq!(
                errno_of(created),
                Some(errno),
                "create with a failing {call:?}"
            );
            scene.check_undamaged(None, &format!("create with a failing {call:?}"));
        }
        let scene = Scene::new();
        scene.backing.arm(fault(Call::Reopen));
        let ino = scene.victim_ino();
        assert_eq!(
            errno_of(scene.fs().open(ROOT, ino, libc::O_RDONLY).map(|_| ())),
            Some(errno)
        );
        scene.backing.disarm();
        scene.backing.arm(fault(Call::Mkdir));
        let made = scene
            .fs()
            .mkdir(ROOT, ROOT_INO, OsStr::new("other-bucket"), 0o755);
        assert_eq!(errno_of(made.map(|_| ())), Some(errno), "mkdir");
        assert_eq!(
            errno_of(
                scene
                    .fs()
                    .lookup(ROOT_INO, OsStr::new("other-bucket"))
                    .map(|_| ())
            ),
            Some(libc::ENOENT)
        );
        scene.backing.arm(fault(Call::SetXattr));
        let set = scene
            .fs()
            .setxattr(ROOT, ino, OsStr::new("user.note"), &[7u8; 100], 0);
        assert_eq!(errno_of(set), Some(errno), "setxattr");
        scene.check_undamaged(None, "open, mkdir and setxattr faults");
    }
}

//! The backing-directory system calls the filesystem needs, behind the [`Backing`] trait so a
//! test can inject faults. Every call is relative to an `O_PATH` descriptor (`*at()` calls);
//! nothing here knows about objects, keys or FUSE.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The attributes of one backing node, as `fstatat` returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

impl Stat {
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.file_type() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type() == libc::S_IFLNK
    }
}

/// Seconds and nanoseconds since the Unix epoch (seconds may be negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// A time to set with `utimensat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUpdate {
    Now,
    At(Timestamp),
}

/// Usage figures of the backing filesystem (`statvfs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_max: u32,
    pub fragment_size: u32,
}

/// One directory entry as the backing directory lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryInfo {
    pub name: std::ffi::OsString,
    pub ino: u64,
    /// `S_IFDIR`, `S_IFREG`, ... (`0` when the backing filesystem cannot tell).
    pub file_type: u32,
}

/// How `rename_at` treats an existing destination (`renameat2` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    Replace,
    NoReplace,
    Exchange,
}

/// The backing operations of the filesystem, relative to `O_PATH` descriptors.
/// Names are single path components (no `/`), already checked by the caller.
pub trait Backing: Send + Sync {
    /// `fstat` of the node an `O_PATH` descriptor refers to (never follows a symlink).
    fn stat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat>;
    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    fn stat_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat>;
    /// An `O_PATH | O_NOFOLLOW` descriptor for `name` in `dir`.
    fn open_path_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd>;
    /// Opens the regular file or directory behind an `O_PATH` descriptor for I/O.
    fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<File>;
    /// Creates a new regular file (`O_CREAT | O_EXCL | O_RDWR`) with exactly `mode`.
    fn create_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File>;
    /// Creates a new regular file with exactly `mode` and no name yet, on the filesystem of
    /// the directory `dir` and placed near it (`O_TMPFILE`), for [`Backing::link_unnamed`]
    /// to name once it is complete; a crash before that leaves nothing behind. `Ok(None)`
    /// where this backing has no unnamed files: the caller then writes a named temporary
    /// file and renames it.
    fn create_unnamed(&self, dir: BorrowedFd<'_>, mode: u32) -> io::Result<Option<File>> {
        let _ = (dir, mode);
        Ok(None)
    }
    /// Whether files from [`Backing::create_unnamed`] may be made ahead of need, in the
    /// temporary directory, by a thread of their own (`store::pool`): where making one is
    /// slow and nothing observes when it happens.
    fn makes_files_ahead(&self) -> bool {
        false
    }
    /// Names a file [`Backing::create_unnamed`] made `dir/name`; `AlreadyExists` if the name
    /// is taken (it is never replaced).
    fn link_unnamed(&self, file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let _ = (file, dir, name);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()>;
    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()>;
    fn symlink_at(&self, target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()>;
    /// A new hard link `dir/name` to the node behind `fd`.
    fn link_at(&self, fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()>;
    /// `unlinkat`, with `AT_REMOVEDIR` when `is_dir`.
    fn unlink_at(&self, dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()>;
    fn rename_at(
        &self,
        old_dir: BorrowedFd<'_>,
        old_name: &OsStr,
        new_dir: BorrowedFd<'_>,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> io::Result<()>;
    fn readlink(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>>;
    /// The entries of a directory, without `.` and `..`.
    fn read_dir(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<DirEntryInfo>>;
    /// The absolute backing path of the node behind `fd` (from `/proc/self/fd`).
    fn path_of(&self, fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf>;
    /// `chmod` of a regular file or directory (symlinks have no mode of their own).
    fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()>;
    /// `lchown`; `None` leaves that id unchanged.
    fn chown(&self, fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    /// `utimensat` on a regular file or directory; `None` leaves that time unchanged.
    fn utimens(
        &self,
        fd: BorrowedFd<'_>,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()>;
    /// `utimensat(dir, name, AT_SYMLINK_NOFOLLOW)`, for symlinks.
    fn utimens_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()>;
    /// The value of an extended attribute of a regular file or directory.
    fn get_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>>;
    /// The NUL-separated attribute names of a regular file or directory.
    fn list_xattr(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>>;
    fn set_xattr(
        &self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()>;
    fn remove_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()>;
    fn statvfs(&self, fd: BorrowedFd<'_>) -> io::Result<FsUsage>;

    // Object data moves through these four, so a test can inject faults into it as well;
    // the defaults are the plain system calls on the open file.

    /// One `pread` of an open backing file; may return fewer bytes than asked.
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(file, buf, offset)
    }
    /// One `pwrite` to an open backing file; may write fewer bytes than given.
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(file, buf, offset)
    }
    /// `ftruncate` of an open backing file.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    /// `fdatasync` of an open backing file.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    /// The end of a writer's session on an open backing file (a `close`): durable, and
    /// where other hosts read the store, theirs to see. By default `sync_data`.
    fn publish(&self, file: &File) -> io::Result<()> {
        self.sync_data(file)
    }
    /// The object on an open backing file was closed by its last user (a store that
    /// writes back, such as a remote store's cache, uploads it here). Errors are the
    /// backing's to report.
    fn closed(&self, _file: &File) {}
    /// `posix_fadvise(POSIX_FADV_WILLNEED)`: starts reading a range ahead. A hint, so an
    /// error is ignored.
    fn will_need(&self, file: &File, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: plain system call on a descriptor `file` keeps open.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
        }
    }
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts writing a range's dirty pages back
    /// without waiting for them. A hint (durability comes from `sync_data`), so an error is
    /// ignored.
    fn start_writeback(&self, file: &File, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: plain system call on a descriptor `file` keeps open.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

/// [`Backing`] on the local filesystem, through Linux system calls.
#[derive(Debug, Default)]
pub struct LocalBacking;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // A decimal number never contains NUL, so this cannot fail.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Gives a node just created with `mode` exactly that mode: the process umask (or a default
/// ACL of the directory) applied at creation, and the caller's mode is already masked.
fn exact_mode(fd: libc::c_int, mode: u32) -> io::Result<()> {
    // SAFETY: plain system call on a valid descriptor.
    check(unsafe { libc::fchmod(fd, mode) })
}

/// Set once `O_TMPFILE` failed as unsupported: the backing filesystem has no unnamed files.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);
/// Set once `linkat(AT_EMPTY_PATH)` was refused (it needs `CAP_DAC_READ_SEARCH`): unnamed
/// files are linked through their `/proc/self/fd` link from then on.
static NO_EMPTY_PATH_LINK: AtomicBool = AtomicBool::new(false);

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

const EMPTY: &CStr = c"";

fn to_stat(st: &libc::stat) -> Stat {
    let ts = |secs: i64, nanos: i64| Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    };
    Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        blksize: st.st_blksize.clamp(0, i64::from(u32::MAX)) as u32,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
    }
}

fn fstatat(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `name` is NUL-terminated and `st` is a valid out-pointer.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(to_stat(&st))
}

fn timespec(t: Option<TimeUpdate>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeUpdate::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeUpdate::At(ts)) => libc::timespec {
            tv_sec: ts.secs,
            tv_nsec: i64::from(ts.nanos),
        },
    }
}

fn read_growing(mut call: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf) {
            Ok(n) if n < buf.len() => {
                buf.truncate(n);
                return Ok(buf);
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {}
            Err(e) => return Err(e),
        }
        if buf.len() >= 1 << 20 {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        let grown = buf.len() * 4;
        buf.resize(grown, 0);
    }
}

impl Backing for LocalBacking {
    fn stat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat> {
        fstatat(
            fd.as_raw_fd(),
            EMPTY,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    }

    fn stat_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
        fstatat(dir.as_raw_fd(), &cstr(name)?, libc::AT_SYMLINK_NOFOLLOW)
    }

    fn open_path_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
        let name = cstr(name)?;
        let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated; the returned descriptor is owned by us.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        check(fd)?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
        let path = proc_path(fd);
        let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_APPEND))
            | libc::O_CLOEXEC;
        // SAFETY: `path` is NUL-terminated; the returned descriptor is owned by us.
        let new = unsafe { libc::open(path.as_ptr(), flags) };
        check(new)?;
        // SAFETY: `new` is a fresh descriptor nobody else owns.
        Ok(unsafe { File::from_raw_fd(new) })
    }

    fn create_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
        let name = cstr(name)?;
        let flags =
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated; the returned descriptor is owned by us.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode & 0o7777) };
        check(fd)?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        exact_mode(file.as_raw_fd(), mode & 0o7777)?;
        Ok(file)
    }

    fn makes_files_ahead(&self) -> bool {
        true
    }

    fn create_unnamed(&self, dir: BorrowedFd<'_>, mode: u32) -> io::Result<Option<File>> {
        if NO_TMPFILE.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
        // SAFETY: "." is NUL-terminated; the returned descriptor is owned by us.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, mode & 0o7777) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // EOPNOTSUPP: this filesystem has no O_TMPFILE; EISDIR: the kernel does not know
            // the flag and saw only its O_DIRECTORY part.
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP | libc::EISDIR) => {
                    NO_TMPFILE.store(true, Ordering::Relaxed);
                    Ok(None)
                }
                _ => Err(e),
            };
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        exact_mode(file.as_raw_fd(), mode & 0o7777)?;
        Ok(Some(file))
    }

    fn link_unnamed(&self, file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if !NO_EMPTY_PATH_LINK.load(Ordering::Relaxed) {
            let cname = cstr(name)?;
            // SAFETY: both strings are NUL-terminated.
            let linked = check(unsafe {
                libc::linkat(
                    file.as_raw_fd(),
                    EMPTY.as_ptr(),
                    dir.as_raw_fd(),
                    cname.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            });
            match linked {
                // Without CAP_DAC_READ_SEARCH the kernel answers ENOENT.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    NO_EMPTY_PATH_LINK.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        // Through the /proc magic link, as any hard link: that links the unnamed file itself.
        self.link_at(file.as_fd(), dir, name)
    }

    fn mkdir_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
        let name = cstr(name)?;
        // SAFETY: `name` is NUL-terminated.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777) })?;
        // Apply the exact mode: the daemon's umask must not narrow the caller's.
        // SAFETY: `name` is NUL-terminated.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777, 0) })
    }

    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        let name = cstr(name)?;
        // SAFETY: `name` is NUL-terminated.
        check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })?;
        // SAFETY: `name` is NUL-terminated.
        check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777, 0) })
    }

    fn symlink_at(&self, target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let (target, name) = (cstr(target)?, cstr(name)?);
        // SAFETY: both strings are NUL-terminated.
        check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    fn link_at(&self, fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let (path, name) = (proc_path(fd), cstr(name)?);
        // SAFETY: both strings are NUL-terminated. Following the /proc magic link links the
        // node itself, without needing CAP_DAC_READ_SEARCH for AT_EMPTY_PATH.
        check(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                path.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
    }

    fn unlink_at(&self, dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
        let name = cstr(name)?;
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: `name` is NUL-terminated.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
    }

    fn rename_at(
        &self,
        old_dir: BorrowedFd<'_>,
        old_name: &OsStr,
        new_dir: BorrowedFd<'_>,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> io::Result<()> {
        let (old_name, new_name) = (cstr(old_name)?, cstr(new_name)?);
        let flags = match mode {
            RenameMode::Replace => 0,
            RenameMode::NoReplace => libc::RENAME_NOREPLACE,
            RenameMode::Exchange => libc::RENAME_EXCHANGE,
        };
        // SAFETY: both names are NUL-terminated.
        check(unsafe {
            libc::renameat2(
                old_dir.as_raw_fd(),
                old_name.as_ptr(),
                new_dir.as_raw_fd(),
                new_name.as_ptr(),
                flags,
            )
        })
    }

    fn readlink(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        read_growing(|buf| {
            // SAFETY: `buf` is a valid writable buffer of the given length.
            check_size(unsafe {
                libc::readlinkat(
                    fd.as_raw_fd(),
                    EMPTY.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            })
        })
    }

    fn read_dir(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<DirEntryInfo>> {
        use std::os::unix::fs::{DirEntryExt, FileTypeExt};
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))? {
            let entry = entry?;
            let file_type = match entry.file_type() {
                Ok(t) if t.is_dir() => libc::S_IFDIR,
                Ok(t) if t.is_file() => libc::S_IFREG,
                Ok(t) if t.is_symlink() => libc::S_IFLNK,
                Ok(t) if t.is_fifo() => libc::S_IFIFO,
                Ok(t) if t.is_socket() => libc::S_IFSOCK,
                Ok(t) if t.is_char_device() => libc::S_IFCHR,
                Ok(t) if t.is_block_device() => libc::S_IFBLK,
                Ok(_) | Err(_) => 0,
            };
            entries.push(DirEntryInfo {
                name: entry.file_name(),
                ino: entry.ino(),
                file_type,
            });
        }
        Ok(entries)
    }

    fn path_of(&self, fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        let path = proc_path(fd);
        // SAFETY: `path` is NUL-terminated.
        check(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode & 0o7777, 0) })
    }

    fn chown(&self, fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let uid = uid.unwrap_or(u32::MAX);
        let gid = gid.unwrap_or(u32::MAX);
        let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
        // SAFETY: the empty name is NUL-terminated; -1 ids mean "unchanged".
        check(unsafe { libc::fchownat(fd.as_raw_fd(), EMPTY.as_ptr(), uid, gid, flags) })
    }

    fn utimens(
        &self,
        fd: BorrowedFd<'_>,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()> {
        let path = proc_path(fd);
        let times = [timespec(atime), timespec(mtime)];
        // SAFETY: `path` is NUL-terminated and `times` holds two timespecs.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) })
    }

    fn utimens_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        atime: Option<TimeUpdate>,
        mtime: Option<TimeUpdate>,
    ) -> io::Result<()> {
        let name = cstr(name)?;
        let times = [timespec(atime), timespec(mtime)];
        let flags = libc::AT_SYMLINK_NOFOLLOW;
        // SAFETY: `name` is NUL-terminated and `times` holds two timespecs.
        check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
    }

    fn get_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
        let (path, name) = (proc_path(fd), cstr(name)?);
        read_growing(|buf| {
            // SAFETY: strings are NUL-terminated; `buf` is valid for its length.
            check_size(unsafe {
                libc::getxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            })
        })
    }

    fn list_xattr(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        let path = proc_path(fd);
        read_growing(|buf| {
            // SAFETY: `path` is NUL-terminated; `buf` is valid for its length.
            check_size(unsafe {
                libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            })
        })
    }

    fn set_xattr(
        &self,
        fd: BorrowedFd<'_>,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        let (path, name) = (proc_path(fd), cstr(name)?);
        // SAFETY: strings are NUL-terminated; `value` is valid for its length.
        check(unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
    }

    fn remove_xattr(&self, fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let (path, name) = (proc_path(fd), cstr(name)?);
        // SAFETY: both strings are NUL-terminated.
        check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) })
    }

    fn statvfs(&self, fd: BorrowedFd<'_>) -> io::Result<FsUsage> {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `st` is a valid out-pointer; fstatvfs accepts O_PATH descriptors.
        check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstatvfs succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        let clamp = |v: libc::c_ulong| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(FsUsage {
            blocks: st.f_blocks,
            blocks_free: st.f_bfree,
            blocks_available: st.f_bavail,
            files: st.f_files,
            files_free: st.f_ffree,
            block_size: clamp(st.f_bsize),
            name_max: clamp(st.f_namemax),
            fragment_size: clamp(st.f_frsize),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        OwnedFd::from(File::open(path).unwrap())
    }

    /// Modes the umask would narrow, set-ID and sticky bits, and plain ones: each node gets
    /// exactly its mode.
    #[test]
    fn new_nodes_get_exactly_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fd = dir_fd(dir.path());
        let b = LocalBacking;
        for (i, mode) in [0o644, 0o600, 0o666, 0o777, 0o4755, 0o2750, 0o1777, 0o000]
            .into_iter()
            .enumerate()
        {
            let name = format!("f{i}");
            let file = b.create_at(fd.as_fd(), OsStr::new(&name), mode).unwrap();
            assert_eq!(
                file.metadata().unwrap().mode() & 0o7777,
                mode,
                "create {mode:o}"
            );
            let file = b.create_unnamed(fd.as_fd(), mode).unwrap().unwrap();
            assert_eq!(
                file.metadata().unwrap().mode() & 0o7777,
                mode,
                "unnamed {mode:o}"
            );
            let name = format!("d{i}");
            b.mkdir_at(fd.as_fd(), OsStr::new(&name), mode).unwrap();
            let meta = std::fs::metadata(dir.path().join(&name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "mkdir {mode:o}");
        }
    }

    #[test]
    fn an_unnamed_file_is_linked_once_and_never_over_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let fd = dir_fd(dir.path());
        let b = LocalBacking;
        std::fs::write(dir.path().join("taken"), b"old").unwrap();
        let mut file = b.create_unnamed(fd.as_fd(), 0o640).unwrap().unwrap();
        std::io::Write::write_all(&mut file, b"new").unwrap();
        assert_eq!(file.metadata().unwrap().nlink(), 0);
        let err = b
            .link_unnamed(&file, fd.as_fd(), OsStr::new("taken"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"old");
        b.link_unnamed(&file, fd.as_fd(), OsStr::new("new"))
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), b"new");
        assert_eq!(file.metadata().unwrap().nlink(), 1);
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // The way without CAP_DAC_READ_SEARCH: the /proc link of an unnamed file.
        let file = b.create_unnamed(fd.as_fd(), 0o600).unwrap().unwrap();
        b.link_at(file.as_fd(), fd.as_fd(), OsStr::new("via-proc"))
            .unwrap();
        assert_eq!(file.metadata().unwrap().nlink(), 1);
        assert!(dir.path().join("via-proc").is_file());
    }
}

//! Facts of the running system read in one place: this process's ids, groups and open-file
//! limit (through `rustix`'s safe calls) and the mount table (`/proc/self/mountinfo`). Also
//! the few system calls `rustix` offers no safe form of (fork, signal masks and `sigwait`,
//! syslog, adopting an inherited descriptor), each behind a safe function holding the one
//! `unsafe` block with its SAFETY note. Knows nothing of stores, keys or FUSE requests.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The real uid and gid and the pid of this process.
pub fn process_ids() -> (u32, u32, u32) {
    use rustix::process::{Pid, getgid, getpid, getuid};
    let pid = u32::try_from(Pid::as_raw(Some(getpid()))).unwrap_or(0);
    (getuid().as_raw(), getgid().as_raw(), pid)
}

/// The supplementary groups of this process (none when they cannot be read).
pub fn supplementary_groups() -> Vec<u32> {
    rustix::process::getgroups()
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}

/// The soft limit on open files of this process (`None`: unlimited).
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force
/// (`None`: unlimited).
pub fn raise_open_file_limit() -> io::Result<Option<u64>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
    }
    Ok(limit.maximum)
}

/// Makes this process undumpable: no core file (which could hold keys), no ptrace by
/// unprivileged users.
pub fn make_undumpable() -> io::Result<()> {
    use rustix::process::{DumpableBehavior, set_dumpable_behavior};
    Ok(set_dumpable_behavior(DumpableBehavior::NotDumpable)?)
}

/// Restores the default disposition of SIGPIPE (the process ends on a write to a closed
/// pipe). Meant for the start of `main`, before any thread is started.
pub fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal; no handler runs, nothing is
    // read or written through a pointer.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A set of signals (a `sigset_t`), also a thread's signal mask.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set holding exactly `signals`.
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before sigaddset; both
        // only write the set they are given.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            SignalSet(set)
        }
    }
}

/// Blocks `set` in this thread (and the threads it starts from now on); returns the mask
/// before.
pub fn block_signals(set: &SignalSet) -> io::Result<SignalSet> {
    // SAFETY: `set` is an initialised set; pthread_sigmask only reads it and writes
    // `previous`, which it fully initialises on success (it is zeroed before).
    unsafe {
        let mut previous: libc::sigset_t = std::mem::zeroed();
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, &mut previous) {
            0 => Ok(SignalSet(previous)),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

/// Makes `mask` this thread's signal mask (as returned by `block_signals`).
pub fn set_signal_mask(mask: &SignalSet) -> io::Result<()> {
    // SAFETY: `mask` is an initialised set, only read; no old mask is asked for.
    match unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) } {
        0 => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// Waits for one of the signals of `set` (which should be blocked in every thread) and
/// returns its number.
pub fn wait_for_signal(set: &SignalSet) -> io::Result<libc::c_int> {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is an initialised set, only read; `signal` is a valid out-pointer.
    match unsafe { libc::sigwait(&set.0, &mut signal) } {
        0 => Ok(signal),
        rc => Err(io::Error::from_raw_os_error(rc)),
    }
}

/// Which side of a fork this is.
pub enum Forked {
    /// The parent, with the child's pid.
    Parent(rustix::process::Pid),
    Child,
}

/// Forks this process, which must still have a single thread: with more, the child could
/// inherit a lock another thread held, so that is refused (`EBUSY`) rather than trusted.
pub fn fork() -> io::Result<Forked> {
    if thread_count()? != 1 {
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "cannot fork a process that has more than one thread",
        ));
    }
    // SAFETY: the process has one thread (checked above, and only this thread could start
    // another), so no lock or allocator state of another thread is copied half-held into the
    // child, and the child may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        child => rustix::process::Pid::from_raw(child)
            .map(Forked::Parent)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD)),
    }
}

/// The number of threads of this process (`Threads:` of `/proc/self/status`).
fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no thread count in /proc"))
}

/// Opens the connection to syslog for this process: identifier `ssefs`, with the pid,
/// facility daemon.
pub fn open_syslog() {
    // SAFETY: the identifier is a static C string, as openlog requires (it keeps the pointer).
    unsafe { libc::openlog(c"ssefs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

/// Sends `text` to syslog at `priority` (a `libc::LOG_*` level).
pub fn syslog(priority: libc::c_int, text: &std::ffi::CStr) {
    // SAFETY: a constant format string with one NUL-terminated string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
}

/// Takes ownership of descriptor `fd`, handed to this process (e.g. `--passphrase-fd`) to be
/// read and closed; an error if it is not open.
pub fn adopt_inherited_fd(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is only borrowed to ask whether it is open.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) })?;
    // SAFETY: the descriptor is open, and was handed to this process to be consumed; the
    // caller adopts it once, so it is closed once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One line of `/proc/self/mountinfo`, its escapes undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub device: String,
    pub mount_point: PathBuf,
    /// The filesystem type, e.g. `fuse.ssefs`.
    pub fs_type: String,
    /// The mount source (for ssefs: the store, or `-o fsname`).
    pub source: OsString,
}

/// The mounts this process sees, in mount order (the last one at a path is the top one).
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Whether a filesystem is mounted at `path` (as given: canonical paths match).
pub fn is_mount_point(path: &Path) -> bool {
    mounts().is_ok_and(|mounts| mounts.iter().any(|m| m.mount_point == path))
}

/// The entries of a mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS`
fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|f| *f == "-")?;
    Some(MountEntry {
        device: fields.get(2)?.to_string(),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
        fs_type: fields.get(separator + 1)?.to_string(),
        source: unescape(fields.get(separator + 2)?),
    })
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); a backslash not followed by three octal digits stays as it is.
pub fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from(OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_while_another_thread_runs() {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        assert!(thread_count().unwrap() >= 2);
        let refused = fork().err().expect("a second thread must refuse the fork");
        assert_eq!(refused.kind(), io::ErrorKind::ResourceBusy);
        drop(stop);
        other.join().unwrap();
    }

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes_undone() {
        let text = "42 27 0:40 / /srv/my\\040data rw,nosuid shared:1 - fuse.ssefs /srv/st\\134ore rw\n\
                    bogus line\n\
                    43 27 8:1 / / rw - ext4 /dev/vda rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].device, "0:40");
        assert_eq!(mounts[0].mount_point, Path::new("/srv/my data"));
        assert_eq!(mounts[0].fs_type, "fuse.ssefs");
        assert_eq!(mounts[0].source, OsString::from("/srv/st\\ore"));
        assert_eq!(mounts[1].mount_point, Path::new("/"));
        assert!(is_mount_point(Path::new("/")));
    }

    #[test]
    fn process_facts_match_what_the_kernel_reports() {
        let (uid, gid, pid) = process_ids();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        };
        assert_eq!((uid, gid), (field("Uid:"), field("Gid:")));
        assert_eq!(pid, std::process::id());
        assert!(open_file_limit().is_none_or(|n| n > 0));
        let groups: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        assert_eq!(supplementary_groups(), groups);
    }

    #[test]
    fn the_daemon_process_is_hardened() {
        use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
        make_undumpable().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        let limit = raise_open_file_limit().unwrap();
        let now = getrlimit(Resource::Nofile);
        assert_eq!((now.current, now.maximum), (limit, limit));
    }

    #[test]
    fn a_blocked_signal_mask_is_restored_and_a_closed_descriptor_is_not_adopted() {
        use std::io::{Read, Write};
        std::thread::spawn(|| {
            let set = SignalSet::of(&[libc::SIGUSR2]);
            let previous = block_signals(&set).unwrap();
            let now = block_signals(&SignalSet::of(&[])).unwrap();
            // SAFETY: reads initialised sets only.
            let member = |s: &SignalSet| unsafe { libc::sigismember(&s.0, libc::SIGUSR2) };
            assert_eq!((member(&previous), member(&now)), (0, 1));
            set_signal_mask(&previous).unwrap();
            assert_eq!(member(&block_signals(&SignalSet::of(&[])).unwrap()), 0);
        })
        .join()
        .unwrap();

        assert!(adopt_inherited_fd(-1).is_err());
        let (read, write) = rustix::pipe::pipe().unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(read);
        std::fs::File::from(write).write_all(b"pass").unwrap();
        let mut text = String::new();
        std::fs::File::from(adopt_inherited_fd(raw).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "pass");
        assert_eq!(
            adopt_inherited_fd(i32::MAX).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn unescaping_leaves_what_is_no_escape() {
        assert_eq!(
            unescape("/a\\040b\\011c\\012d"),
            OsString::from("/a b\tc\nd")
        );
        assert_eq!(unescape("/plain"), OsString::from("/plain"));
        assert_eq!(unescape("/end\\"), OsString::from("/end\\"));
        assert_eq!(unescape("/x\\09z"), OsString::from("/x\\09z"));
    }
}

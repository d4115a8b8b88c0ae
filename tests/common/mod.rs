//! Harness for the tests that go through a real kernel mount: temporary stores, a daemon that is
//! always unmounted and reaped (even when a test panics), shell and tree-comparison helpers.
//! Talks to ssefs only through its command line and the mounted filesystem.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daemon binary under test.
pub const SSEFS: &str = env!("CARGO_BIN_EXE_ssefs");
/// How long a mount may take to appear, and a daemon to exit after an unmount.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
/// Set to `1` to skip (loudly) the tests that need a kernel mount.
pub const SKIP_VAR: &str = "SSEFS_SKIP_MOUNT_TESTS";
/// How long one mount may live before the watchdog kills its daemon so a hung test fails.
const WATCHDOG_VAR: &str = "SSEFS_TEST_MOUNT_TIMEOUT_SECS";
const WATCHDOG_DEFAULT_SECS: u64 = 240;

/// Returns whether mount tests can run here. Fails the calling test with a clear message when
/// they cannot (not root, no `/dev/fuse`, no `fusermount3`) unless `SSEFS_SKIP_MOUNT_TESTS=1`,
/// in which case it prints that the test was skipped and returns false.
pub fn mount_tests_enabled() -> bool {
    let test = thread::current().name().unwrap_or("<unnamed>").to_string();
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: {SKIP_VAR}=1 is set, this test needs a FUSE mount");
        return false;
    }
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root privileges (run as root)".to_string());
    }
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse (load the fuse module)".to_string());
    }
    if which("fusermount3").is_none() {
        missing.push("fusermount3 (install fuse3)".to_string());
    }
    assert!(
        missing.is_empty(),
        "{test} needs a FUSE mount but this machine lacks: {}. \
         Set {SKIP_VAR}=1 to skip the mount tests explicitly.",
        missing.join(", ")
    );
    true
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

// ---------------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------------

/// A freshly initialised store in its own temporary directory, with its root key file and an
/// empty mountpoint next to it.
pub struct TestStore {
    dir: tempfile::TempDir,
    pub store: PathBuf,
    pub root_key: PathBuf,
    pub mountpoint: PathBuf,
}

impl TestStore {
    /// Creates `TMP/store` with `ssefs init`, the key `TMP/root.key` and the mountpoint `TMP/mnt`.
    pub fn new() -> TestStore {
        reap_stale_test_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("create temp dir");
        let base = fs::canonicalize(dir.path()).expect("canonicalize temp dir");
        let store = base.join("store");
        let root_key = base.join("root.key");
        let mountpoint = base.join("mnt");
        fs::create_dir(&mountpoint).expect("create mountpoint");
        init_store(&store, &root_key);
        TestStore {
            dir,
            store,
            root_key,
            mountpoint,
        }
    }

    /// The temporary directory holding the store, the key and the mountpoint.
    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// A new empty directory next to the store (for plain reference files, extra mountpoints).
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let path = fs::canonicalize(self.dir.path())
            .expect("canonicalize temp dir")
            .join(name);
        fs::create_dir_all(&path).expect("create scratch dir");
        path
    }
}

/// Temporary directories are named `ssefs-test-PID-…` after the test process that made them.
const TEMP_PREFIX: &str = "ssefs-test-";

/// Once per test process: lazily unmounts and removes what an earlier test process left behind
/// when it was killed without unwinding (SIGKILL, a CI timeout). Only directories named after a
/// process that no longer exists are touched.
fn reap_stale_test_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let tmp = fs::canonicalize(std::env::temp_dir()).unwrap_or_else(|_| std::env::temp_dir());
        let stale_owner = |name: &str| -> bool {
            let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
                return false;
            };
            let Some(pid) = rest
                .split('-')
                .next()
                .and_then(|p| p.parse::<libc::pid_t>().ok())
            else {
                return false;
            };
            // SAFETY: signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0
                || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            !alive
        };
        for entry in mount_entries() {
            let Ok(rel) = entry.mountpoint.strip_prefix(&tmp) else {
                continue;
            };
            let first = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy());
            if first.is_some_and(|name| stale_owner(&name)) {
                eprintln!(
                    "cleanup: unmounting stale test mount {}",
                    entry.mountpoint.display()
                );
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&entry.mountpoint)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let Ok(entries) = fs::read_dir(&tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale_owner(&name)
                && !mount_entries()
                    .iter()
                    .any(|m| m.mountpoint.starts_with(entry.path()))
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// Runs `ssefs init STORE --root-key KEY` and fails the test with its stderr if it fails.
pub fn init_store(store: &Path, root_key: &Path) {
    let out = Command::new(SSEFS)
        .arg("init")
        .arg(store)
        .arg("--root-key")
        .arg(root_key)
        .output()
        .expect("run ssefs init");
    assert!(
        out.status.success(),
        "ssefs init {} failed ({}): {}",
        store.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

/// What to mount and how; `Mount::new` uses the store's own key and mountpoint.
#[derive(Clone, Debug)]
pub struct MountArgs {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub root_key: PathBuf,
    pub options: Vec<String>,
}

impl MountArgs {
    pub fn of(store: &TestStore, options: &[&str]) -> MountArgs {
        MountArgs {
            store: store.store.clone(),
            mountpoint: store.mountpoint.clone(),
            root_key: store.root_key.clone(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }
}

/// How a daemon that did not mount ended.
#[derive(Debug)]
pub struct DaemonFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running `ssefs mount` daemon. Dropping it unmounts (`fusermount3 -u`, then `umount -l`),
/// waits for the daemon (bounded) and kills it if it lingers, so nothing is left behind.
pub struct Mount {
    args: MountArgs,
    child: Option<Child>,
    log: PathBuf,
    watchdog: Option<mpsc::Sender<()>>,
    /// Set once this daemon's mount appeared: only then may `Drop` unmount the mountpoint
    /// (which may by then hold another daemon's mount, e.g. after a failed second mount).
    mounted: bool,
}

static DAEMON_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Mount {
    /// Mounts `store` at its mountpoint with `-o options` and waits until the kernel shows it.
    pub fn new(store: &TestStore, options: &[&str]) -> Mount {
        Mount::with_args(MountArgs::of(store, options))
    }

    /// Mounts with explicit arguments; fails the test with the daemon's output if it does not mount.
    pub fn with_args(args: MountArgs) -> Mount {
        match Mount::try_with_args(args.clone()) {
            Ok(mount) => mount,
            Err(failure) => panic!(
                "ssefs mount {} {} exited without mounting ({}): {}",
                args.store.display(),
                args.mountpoint.display(),
                failure.status,
                failure.stderr
            ),
        }
    }

    /// Starts a daemon and waits until either the mount appears (Ok) or the daemon exits (Err).
    /// A daemon that does neither within the timeout fails the test.
    pub fn try_with_args(args: MountArgs) -> Result<Mount, DaemonFailure> {
        let n = DAEMON_COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = args
            .mountpoint
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .join(format!("daemon-{}-{n}.log", std::process::id()));
        let child = spawn_daemon(&args, &log);
        let mut mount = Mount {
            args,
            child: Some(child),
            log,
            watchdog: None,
            mounted: false,
        };
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if is_ssefs_mount(&mount.args.mountpoint) {
                mount.mounted = true;
                mount.start_watchdog();
                return Ok(mount);
            }
            let child = mount.child.as_mut().expect("daemon present while mounting");
            if let Some(status) = child.try_wait().expect("poll daemon") {
                mount.child = None;
                return Err(DaemonFailure {
                    status,
                    stderr: mount.log_text(),
                });
            }
            if Instant::now() > deadline {
                let text = mount.log_text();
                drop(mount);
                panic!(
                    "ssefs mount did not appear in /proc/self/mountinfo within {DAEMON_TIMEOUT:?}; daemon output: {text}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.args.mountpoint
    }

    /// `MOUNTPOINT/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.args.mountpoint.join(rel)
    }

    /// Creates the bucket `name` and returns its path in the mount.
    pub fn bucket(&self, name: &str) -> PathBuf {
        let path = self.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir bucket {}: {e}", path.display()));
        path
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The daemon's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts with `fusermount3 -u` and returns the daemon's exit status (it must exit within
    /// the timeout). The mount is gone afterwards.
    pub fn unmount(mut self) -> ExitStatus {
        self.unmount_in_place()
    }

    fn unmount_in_place(&mut self) -> ExitStatus {
        self.stop_watchdog();
        // A process that glances at a fresh mount (a shell's stat, a file manager, a
        // concurrent test walking /tmp) makes the unmount EBUSY for an instant: retry briefly.
        let mut out = fusermount_u(&self.args.mountpoint);
        for _ in 0..20 {
            if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = fusermount_u(&self.args.mountpoint);
        }
        assert!(
            out.status.success(),
            "fusermount3 -u {} failed: {}",
            self.args.mountpoint.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
        let mut child = self.child.take().expect("daemon running");
        let status = wait_timeout(&mut child, DAEMON_TIMEOUT);
        let status = match status {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not exit within {DAEMON_TIMEOUT:?} after fusermount3 -u; output: {}",
                    self.log_text()
                );
            }
        };
        assert!(
            !is_mounted(&self.args.mountpoint),
            "{} still mounted after unmount",
            self.args.mountpoint.display()
        );
        status
    }

    /// Unmounts cleanly (daemon must exit 0) and mounts again with the same arguments.
    pub fn remount(&mut self) {
        let status = self.unmount_in_place();
        assert!(
            status.success(),
            "daemon exited with {status} on unmount; output: {}",
            self.log_text()
        );
        let mut fresh = Mount::with_args(self.args.clone());
        // Move the new daemon into `self`; `fresh` is left owning nothing, so its drop is a no-op.
        self.child = fresh.child.take();
        self.watchdog = fresh.watchdog.take();
        self.log = fresh.log.clone();
        self.mounted = std::mem::take(&mut fresh.mounted);
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            io::Error::last_os_error()
        );
    }

    /// Waits (bounded) for the daemon to exit, e.g. after a signal, and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.stop_watchdog();
        // The daemon is gone; a dead mount left behind is the test's to clean up, and `Drop`
        // still clears it if the test does not.
        let mut child = self.child.take().expect("daemon running");
        match wait_timeout(&mut child, DAEMON_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not exit within {DAEMON_TIMEOUT:?}; output: {}",
                    self.log_text()
                )
            }
        }
    }

    /// Whether the kernel still lists the mountpoint as a mount.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.args.mountpoint)
    }

    fn start_watchdog(&mut self) {
        let secs = std::env::var(WATCHDOG_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WATCHDOG_DEFAULT_SECS);
        let pid = self.pid() as libc::pid_t;
        let mountpoint = self.args.mountpoint.clone();
        let (tx, rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs))
            {
                eprintln!(
                    "WATCHDOG: mount {} alive for {secs}s; killing daemon {pid} so the test fails instead of hanging",
                    mountpoint.display()
                );
                // SAFETY: the daemon is our child and is not reaped while the watchdog lives.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        self.watchdog = Some(tx);
    }

    fn stop_watchdog(&mut self) {
        self.watchdog = None;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop_watchdog();
        if thread::panicking() {
            let log = self.log_text();
            if !log.trim().is_empty() {
                eprintln!("--- ssefs daemon output ---\n{log}\n--- end of daemon output ---");
            }
        }
        if !self.mounted {
            // Never mounted (refused or timed out): just make sure the daemon is gone.
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            return;
        }
        if is_mounted(&self.args.mountpoint) {
            let out = fusermount_u(&self.args.mountpoint);
            if !out.status.success() {
                eprintln!(
                    "cleanup: fusermount3 -u {} failed ({}), falling back to umount -l",
                    self.args.mountpoint.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.args.mountpoint)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, DAEMON_TIMEOUT).is_none() {
                eprintln!("cleanup: daemon {} did not exit, killing it", child.id());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.args.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.args.mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn spawn_daemon(args: &MountArgs, log: &Path) -> Child {
    let log_file = fs::File::create(log).expect("create daemon log");
    let log_err = log_file.try_clone().expect("clone daemon log");
    let mut cmd = Command::new(SSEFS);
    cmd.arg("mount")
        .arg(&args.store)
        .arg(&args.mountpoint)
        .arg("--root-key")
        .arg(&args.root_key);
    if !args.options.is_empty() {
        cmd.arg("-o").arg(args.options.join(","));
    }
    // The daemon logs only what the test run asks for, so stderr holds just its messages.
    match std::env::var_os("SSEFS_TEST_DAEMON_LOG") {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
    // If the test process dies without unwinding (SIGKILL, abort), the daemon gets SIGTERM and
    // unmounts itself instead of lingering.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn ssefs mount")
}

/// Runs `fusermount3 -u PATH`.
pub fn fusermount_u(path: &Path) -> Output {
    Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .output()
        .expect("run fusermount3")
}

/// Waits for `child` up to `timeout`; None if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(e) => panic!("wait for child: {e}"),
        }
    }
}

/// A mount as listed in `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

/// Parses `/proc/self/mountinfo`.
pub fn mount_entries() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    Some(MountEntry {
        mountpoint: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
        options: fields.get(5)?.to_string(),
        fstype: fields.get(sep + 1)?.to_string(),
        source: fields.get(sep + 2)?.to_string(),
    })
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether anything is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mount_entries().iter().any(|m| m.mountpoint == path)
}

/// Whether a FUSE mount is at `path` (a mountpoint the harness made, so it is the daemon's).
/// The type is `fuse.ssefs` when mounted through fusermount3 with the subtype; a direct
/// mount(2) as root may list plain `fuse`. `mount_daemon.rs` pins the exact type.
pub fn is_ssefs_mount(path: &Path) -> bool {
    mount_entries()
        .iter()
        .any(|m| m.mountpoint == path && (m.fstype == "fuse.ssefs" || m.fstype == "fuse"))
}

/// The mountinfo entry of the mount at `path`, if any.
pub fn mount_entry(path: &Path) -> Option<MountEntry> {
    mount_entries().into_iter().find(|m| m.mountpoint == path)
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

/// Runs `sh -c script`, fails the test with its output unless it exits 0, returns stdout.
pub fn sh(script: &str) -> String {
    let out = sh_output(script);
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sh -c script` and returns its output, whatever the status.
pub fn sh_output(script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

/// Runs `sh -c script` as uid and gid 65534 with no supplementary groups (and so no
/// capabilities), and returns its output, whatever the status.
pub fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

/// Deletes a store's keystore (`keystore.db` and its `-wal`/`-shm` files), as a lost disk
/// would: what a keystore backup is for.
pub fn remove_keystore(store: &Path) {
    for entry in fs::read_dir(store.join(".ssefs")).expect("read .ssefs") {
        let path = entry.expect("entry of .ssefs").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("keystore.db"))
        {
            fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
    }
}

/// Quotes a path for `sh`.
pub fn q(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Describes how a process ended, for messages.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The errno of a failed operation; fails the test if the operation succeeded.
pub fn errno_of<T: std::fmt::Debug>(result: io::Result<T>, what: &str) -> i32 {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Asserts that `result` failed with `expected` errno.
pub fn assert_errno<T: std::fmt::Debug>(result: io::Result<T>, expected: i32, what: &str) {
    let got = errno_of(result, what);
    assert_eq!(
        got,
        expected,
        "{what}: expected errno {expected} ({}), got {got} ({})",
        io::Error::from_raw_os_error(expected),
        io::Error::from_raw_os_error(got)
    );
}

/// `path` as a C string for libc calls.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// Turns a libc return code into an io::Result.
pub fn check_rc(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mkfifo(path, mode)`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let c = cpath(path);
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    check_rc(unsafe { libc::mkfifo(c.as_ptr(), mode) })
}

/// Sets atime and mtime of `path` (not following symlinks) to the given (seconds, nanoseconds).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(path);
    let times = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as libc::c_long,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as libc::c_long,
        },
    ];
    // SAFETY: c and times are valid for the duration of the call.
    check_rc(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

// One generator for every test crate: the reliability support includes the same file.
// Crates that also use `tests/support` load the file twice, as two separate types.
#[allow(clippy::duplicate_mod)]
#[path = "../support/rng.rs"]
mod rng;
#[allow(unused_imports)] // not every test crate draws random data
pub use rng::TestRng;

/// A seed from `SSEFS_TEST_SEED` or the clock. Keep the guard alive for the test: if the test
/// panics, the guard prints the seed and how to replay it.
pub fn test_seed() -> (u64, SeedGuard) {
    let seed = std::env::var("SSEFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
    (seed, SeedGuard(seed))
}

pub struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "test failed with seed {0}; replay with SSEFS_TEST_SEED={0}",
                self.0
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------------------------

/// What `assert_trees_equal` compares besides names, types, bytes and symlink targets.
#[derive(Clone, Copy, Debug)]
pub struct TreeCompare {
    pub modes: bool,
    pub mtimes: bool,
    pub owners: bool,
    /// Hard-link groups (paths sharing an inode) must be the same on both sides.
    pub hard_links: bool,
}

impl TreeCompare {
    pub const ALL: TreeCompare = TreeCompare {
        modes: true,
        mtimes: true,
        owners: true,
        hard_links: true,
    };
}

/// Relative path -> metadata, for every entry under `root` (not following symlinks).
pub fn walk(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    walk_into(root, Path::new(""), &mut out);
    out
}

fn walk_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, fs::Metadata>) {
    let dir = root.join(rel);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir entry in {}: {e}", dir.display()));
        let rel_child = rel.join(entry.file_name());
        let path = root.join(&rel_child);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let is_dir = meta.is_dir();
        out.insert(rel_child.clone(), meta);
        if is_dir {
            walk_into(root, &rel_child, out);
        }
    }
}

fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    }
}

/// Asserts that two trees hold the same entries with the same types, bytes and symlink targets,
/// and, as asked, the same modes, mtimes (to the nanosecond; the roots' own mtimes are not
/// compared), owners and hard-link groups. Reports every difference at once.
pub fn assert_trees_equal(a: &Path, b: &Path, what: TreeCompare) {
    let left = walk(a);
    let right = walk(b);
    let mut diffs = Vec::new();
    for rel in left.keys().filter(|k| !right.contains_key(*k)) {
        diffs.push(format!("only in {}: {}", a.display(), rel.display()));
    }
    for rel in right.keys().filter(|k| !left.contains_key(*k)) {
        diffs.push(format!("only in {}: {}", b.display(), rel.display()));
    }
    for (rel, lm) in &left {
        let Some(rm) = right.get(rel) else { continue };
        let shown = rel.display();
        if kind(lm) != kind(rm) {
            diffs.push(format!("{shown}: {} vs {}", kind(lm), kind(rm)));
            continue;
        }
        if lm.is_file() {
            if lm.len() != rm.len() {
                diffs.push(format!("{shown}: size {} vs {}", lm.len(), rm.len()));
            } else if let Some(off) = first_difference(&a.join(rel), &b.join(rel)) {
                diffs.push(format!("{shown}: contents differ at byte {off}"));
            }
        }
        if lm.file_type().is_symlink() {
            let lt = fs::read_link(a.join(rel)).ok();
            let rt = fs::read_link(b.join(rel)).ok();
            if lt != rt {
                diffs.push(format!("{shown}: symlink target {lt:?} vs {rt:?}"));
            }
        }
        let is_link = lm.file_type().is_symlink();
        if what.modes && !is_link && lm.mode() & 0o7777 != rm.mode() & 0o7777 {
            diffs.push(format!(
                "{shown}: mode {:o} vs {:o}",
                lm.mode() & 0o7777,
                rm.mode() & 0o7777
            ));
        }
        if what.owners && (lm.uid(), lm.gid()) != (rm.uid(), rm.gid()) {
            diffs.push(format!(
                "{shown}: owner {}:{} vs {}:{}",
                lm.uid(),
                lm.gid(),
                rm.uid(),
                rm.gid()
            ));
        }
        if what.mtimes && !is_link && (lm.mtime(), lm.mtime_nsec()) != (rm.mtime(), rm.mtime_nsec())
        {
            diffs.push(format!(
                "{shown}: mtime {}.{:09} vs {}.{:09}",
                lm.mtime(),
                lm.mtime_nsec(),
                rm.mtime(),
                rm.mtime_nsec()
            ));
        }
    }
    if what.hard_links {
        let lg = hard_link_groups(&left);
        let rg = hard_link_groups(&right);
        if lg != rg {
            diffs.push(format!(
                "hard-link groups differ: {lg:?} in {} vs {rg:?} in {}",
                a.display(),
                b.display()
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "trees {} and {} differ:\n  {}",
        a.display(),
        b.display(),
        diffs.join("\n  ")
    );
}

/// Sets of relative paths (of regular files) sharing an inode, for inodes with more than one.
fn hard_link_groups(tree: &BTreeMap<PathBuf, fs::Metadata>) -> Vec<Vec<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for (rel, meta) in tree {
        if meta.is_file() && meta.nlink() > 1 {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel.clone());
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_inode.into_values().collect();
    groups.sort();
    groups
}

/// The offset of the first differing byte of two files (one longer than the other differs at the
/// shorter's length), or None if they are equal.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = fs::File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = fs::File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let na =
            read_full(&mut fa, &mut ba).unwrap_or_else(|e| panic!("read {}: {e}", a.display()));
        let nb =
            read_full(&mut fb, &mut bb).unwrap_or_else(|e| panic!("read {}: {e}", b.display()));
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Some(offset + i as u64);
        }
        if na != nb {
            return Some(offset + n as u64);
        }
        if na == 0 {
            return None;
        }
        offset += na as u64;
    }
}

/// Reads until `buf` is full or end of file; returns the number of bytes read.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A place where a pattern was found: the file and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternHit {
    pub file: PathBuf,
    pub offset: u64,
}

/// Scans the bytes of every regular file under `root` (symlinks not followed; their targets are
/// names, scanned too) for `needle`; returns every hit.
pub fn scan_tree_for(root: &Path, needle: &[u8]) -> Vec<PatternHit> {
    assert!(!needle.is_empty(), "empty needle");
    let mut hits = Vec::new();
    for (rel, meta) in walk(root) {
        let path = root.join(&rel);
        let bytes = if meta.is_file() {
            fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path)
                .map(|t| t.as_os_str().as_bytes().to_vec())
                .unwrap_or_default()
        } else {
            continue;
        };
        let mut start = 0;
        while let Some(i) = find(&bytes[start..], needle) {
            hits.push(PatternHit {
                file: path.clone(),
                offset: (start + i) as u64,
            });
            start += i + 1;
        }
    }
    hits
}

/// The first index of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    let first = needle[0];
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &haystack[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Lists a directory with `opendir`/`readdir`, including `.` and `..`, sorted.
pub fn readdir_all(dir: &Path) -> io::Result<Vec<String>> {
    let c = cpath(dir);
    // SAFETY: c is valid; the DIR pointer is checked and closed below.
    let handle = unsafe { libc::opendir(c.as_ptr()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: errno is thread-local; reset it to tell end-of-directory from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: handle is a valid open DIR.
        let entry = unsafe { libc::readdir(handle) };
        if entry.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: handle is valid and closed exactly once.
            unsafe { libc::closedir(handle) };
            if err.raw_os_error() == Some(0) {
                break;
            }
            return Err(err);
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry readdir returned.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        names.push(
            OsStr::from_bytes(name.to_bytes())
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

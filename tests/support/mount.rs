//! Harness for the tests that go through a real kernel mount: temporary stores and a daemon
//! that is always unmounted and reaped (even when a test panics), and the mount table.
//! Talks to ssefs only through its command line and the mounted filesystem.

use super::cli::SSEFS;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a mount may take to appear, and a daemon to exit after an unmount.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
/// Set to `1` to skip (loudly) the tests that need a kernel mount.
pub const SKIP_VAR: &str = "SSEFS_SKIP_MOUNT_TESTS";
/// Set to `remote` to run the mount tests on stores in an object store (the shared SeaweedFS
/// of `s3.rs`) instead of local directories; only suites that never look into the store's
/// directory can run so (`scripts/test.sh` names them).
pub const STORE_VAR: &str = "SSEFS_TEST_STORE";

/// Whether the tests run on remote stores (see [`STORE_VAR`]).
pub fn remote_mode() -> bool {
    std::env::var(STORE_VAR).is_ok_and(|v| v == "remote")
}

/// In remote mode, gives `cmd` the test server's credentials and endpoint, so that every
/// command the tests run reaches the remote stores.
pub fn reach_remote_stores(cmd: &mut Command) {
    if remote_mode() {
        let server = super::s3::S3Server::shared();
        cmd.envs(super::s3::S3Server::env())
            .env("AWS_ENDPOINT_URL", server.endpoint());
    }
}

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
        let store = if remote_mode() {
            let prefix = super::s3::S3Server::unique_prefix("suite");
            PathBuf::from(super::s3::S3Server::store_url(&prefix))
        } else {
            base.join("store")
        };
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
    let mut cmd = Command::new(SSEFS);
    cmd.arg("init").arg(store).arg("--root-key").arg(root_key);
    reach_remote_stores(&mut cmd);
    let out = cmd.output().expect("run ssefs init");
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
    if args.store.starts_with("s3:") {
        // One cache per mountpoint, kept across remounts like a local store's directory.
        let cache = args.mountpoint.with_extension("cache");
        cmd.arg("--cache-dir").arg(cache);
        let server = super::s3::S3Server::shared();
        cmd.envs(super::s3::S3Server::env())
            .env("AWS_ENDPOINT_URL", server.endpoint());
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

/// Takes away the mount a killed daemon left at `path` (`fusermount3 -u`, which must work).
pub fn unmount_dead(path: &Path) {
    let out = fusermount_u(path);
    assert!(
        out.status.success(),
        "fusermount3 -u of the dead mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `error` is what a request gets when the mount's daemon was killed: the kernel ends
/// the connection (`ENOTCONN`), a request it had queued (`ECONNABORTED`), or one it was handing
/// to the dead daemon's io_uring ring (`ECANCELED`); never `EIO`.
pub fn is_dead_daemon_error(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
    )
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

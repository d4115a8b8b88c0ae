//! Harness for mounts of stores kept on an S3 server (`s3.rs`): a store under its own prefix
//! with its root key, mountpoint and cache directories in one temporary directory; a daemon
//! that is always unmounted and reaped; and a weed server started again on its own directory
//! and ports. Drives ssefs only through its command line and the mounted filesystem; looks at
//! the server with the crate's object-store client.
// Tests use the parts they need, as with the rest of `support`.
#![allow(dead_code)]

use super::cli::SSEFS;
use super::mount::{fusermount_u, is_mounted, is_ssefs_mount, wait_timeout};
use super::s3::{S3Server, weed_binary};
use ssefs::store::remote::{Endpoint, RemoteConfig, RemoteStore, StoreUrl, WriteMode};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a remote mount may take to appear: it fetches the keystore first, and after a
/// crash uploads what the last daemon left dirty before it serves.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a daemon may take to exit after an unmount: it uploads everything still dirty,
/// the directory markers and the keystore first.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long one mount may live before its watchdog kills the daemon so a hung test fails.
const WATCHDOG_VAR: &str = "SSEFS_TEST_MOUNT_TIMEOUT_SECS";
const WATCHDOG_DEFAULT_SECS: u64 = 300;
/// Temporary directories are named like the local mount harness's, after the test process.
const TEMP_PREFIX: &str = "ssefs-test-";

/// A store under its own prefix of an S3 server, made by `ssefs init`, with its root key,
/// a mountpoint and room for cache directories in one temporary directory. Dropping it
/// deletes the store's objects (best effort) and the directory.
pub struct RemoteTestStore {
    pub url: String,
    pub prefix: String,
    pub endpoint: String,
    pub root_key: PathBuf,
    pub mountpoint: PathBuf,
    base: PathBuf,
    dir: tempfile::TempDir,
    caches: AtomicUsize,
}

impl RemoteTestStore {
    /// A new store on the shared server.
    pub fn new(name: &str) -> RemoteTestStore {
        RemoteTestStore::on(S3Server::shared(), name)
    }

    /// A new store on `server`.
    pub fn on(server: &S3Server, name: &str) -> RemoteTestStore {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-remote-", std::process::id()))
            .tempdir()
            .expect("create temp dir");
        let base = fs::canonicalize(dir.path()).expect("canonicalize temp dir");
        let mountpoint = base.join("mnt");
        fs::create_dir(&mountpoint).expect("create mountpoint");
        let prefix = S3Server::unique_prefix(name);
        let store = RemoteTestStore {
            url: S3Server::store_url(&prefix),
            prefix,
            endpoint: server.endpoint(),
            root_key: base.join("root.key"),
            mountpoint,
            base,
            dir,
            caches: AtomicUsize::new(0),
        };
        let key = store.root_key.to_string_lossy().into_owned();
        store.ssefs_ok(&[
            "init",
            &store.url,
            "--endpoint",
            &store.endpoint,
            "--root-key",
            &key,
        ]);
        store
    }

    /// The temporary directory holding the key, the mountpoint and the cache directories.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// A new empty directory in the temporary directory.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let path = self.base.join(name);
        fs::create_dir_all(&path).expect("create scratch dir");
        path
    }

    /// A new cache directory no mount has used (`cache-N`, made by the daemon).
    pub fn fresh_cache(&self) -> PathBuf {
        let n = self.caches.fetch_add(1, Ordering::Relaxed);
        self.base.join(format!("cache-{n}"))
    }

    /// `ssefs ARGS` with the server's credentials, a private HOME and no root key or
    /// endpoint from the caller's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SSEFS);
        cmd.args(args)
            .env("HOME", self.base.join("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .env_remove("SSEFS_PASSPHRASE_FD")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
        for (name, value) in S3Server::env() {
            cmd.env(name, value);
        }
        cmd
    }

    /// Runs `ssefs ARGS`, fails the test unless it succeeds, returns its stdout.
    pub fn ssefs_ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run ssefs");
        assert!(
            out.status.success(),
            "ssefs {args:?} failed ({}): {}",
            out.status,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ssefs COMMAND… --store URL --endpoint E --root-key K`, expected to succeed.
    pub fn on_store_ok(&self, args: &[&str]) -> String {
        let key = self.root_key.to_string_lossy().into_owned();
        let mut all = args.to_vec();
        all.extend(["--store", &self.url, "--endpoint", &self.endpoint]);
        all.extend(["--root-key", &key]);
        self.ssefs_ok(&all)
    }

    /// `ssefs kms create` on the store: the new CMK's id.
    pub fn create_cmk(&self) -> String {
        let created: serde_json::Value =
            serde_json::from_str(&self.on_store_ok(&["kms", "create", "--json"]))
                .expect("kms create --json prints JSON");
        created["KeyMetadata"]["KeyId"]
            .as_str()
            .expect("KeyId")
            .to_string()
    }

    /// Mounts the store with the cache directory `cache` (and no size given).
    pub fn mount(&self, cache: &Path) -> RemoteMount {
        let cache = cache.to_string_lossy().into_owned();
        self.mount_with(&["--cache-dir", &cache])
    }

    /// `ssefs mount URL MOUNTPOINT --endpoint E --root-key K ARGS`, waiting until the kernel
    /// lists the mount; fails the test with the daemon's output if it exits first.
    pub fn mount_with(&self, args: &[&str]) -> RemoteMount {
        self.mount_at(&self.mountpoint, args)
    }

    /// As [`RemoteTestStore::mount_with`] on another mountpoint: a second "host" of the
    /// store (give it its own `--cache-dir`).
    pub fn mount_at(&self, mountpoint: &Path, args: &[&str]) -> RemoteMount {
        let n = DAEMONS.fetch_add(1, Ordering::Relaxed);
        let log = self.base.join(format!("daemon-{n}.log"));
        let mut cmd = self.command(&["mount", &self.url]);
        cmd.arg(mountpoint)
            .args(["--endpoint", &self.endpoint])
            .arg("--root-key")
            .arg(&self.root_key)
            .args(args);
        let child = spawn_daemon(cmd, &log);
        let mut mount = RemoteMount {
            mountpoint: mountpoint.to_path_buf(),
            child: Some(child),
            log,
            watchdog: None,
            mounted: false,
        };
        mount.wait_mounted();
        mount
    }

    /// A client of the store's prefix on the object store, to look at what the server holds.
    pub fn client(&self) -> RemoteStore {
        self.client_with(Duration::from_secs(5))
    }

    fn client_with(&self, retry_timeout: Duration) -> RemoteStore {
        let url = StoreUrl::parse(&self.url).expect("test store URL");
        let endpoint = Endpoint::parse(&self.endpoint).expect("test endpoint");
        let mut config = RemoteConfig::new(url, endpoint);
        config.retry_timeout = retry_timeout;
        config.request_timeout = Duration::from_secs(10);
        RemoteStore::connect(config, &S3Server::credentials()).expect("connect")
    }

    /// Every object key of the store (relative to its prefix), sorted.
    pub fn object_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .client()
            .list_all("")
            .expect("list the store's objects")
            .into_iter()
            .map(|info| info.key)
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for RemoteTestStore {
    fn drop(&mut self) {
        // Best effort: a test that stopped its server has nothing left to delete.
        let client = self.client_with(Duration::from_secs(1));
        if let Ok(objects) = client.list_all("") {
            for info in objects {
                let _ = client.delete(&info.key);
            }
        }
    }
}

static DAEMONS: AtomicUsize = AtomicUsize::new(0);

/// The text of a finished command's stdout and stderr.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn spawn_daemon(mut cmd: Command, log: &Path) -> Child {
    let log_file = fs::File::create(log).expect("create daemon log");
    let log_err = log_file.try_clone().expect("clone daemon log");
    // Info level at least: the transfer counts the tests read are logged at info.
    let level = std::env::var_os("SSEFS_TEST_DAEMON_LOG").unwrap_or_else(|| "info".into());
    cmd.env("RUST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
    // If the test dies without unwinding, the daemon gets SIGTERM and unmounts itself.
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

/// A running `ssefs mount` of a remote store. Dropping it unmounts (`fusermount3 -u`, then
/// `umount -l`), waits for the daemon (bounded) and kills it if it lingers.
pub struct RemoteMount {
    mountpoint: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    watchdog: Option<mpsc::Sender<()>>,
    mounted: bool,
}

impl RemoteMount {
    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_ssefs_mount(&self.mountpoint) {
                self.mounted = true;
                self.start_watchdog();
                return;
            }
            let child = self.child.as_mut().expect("daemon present while mounting");
            if let Some(status) = child.try_wait().expect("poll daemon") {
                self.child = None;
                panic!(
                    "ssefs mount exited without mounting ({status}): {}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the mount did not appear within {MOUNT_TIMEOUT:?}; daemon output: {}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `MOUNTPOINT/rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Creates the bucket `name` and returns its path in the mount.
    pub fn bucket(&self, name: &str) -> PathBuf {
        let path = self.join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir bucket {}: {e}", path.display()));
        path
    }

    /// The daemon's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the daemon is still running.
    pub fn daemon_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("poll daemon").is_none())
    }

    /// Whether the kernel still lists the mount.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mountpoint)
    }

    /// Unmounts with `fusermount3 -u`, expects the daemon to exit 0 (after its uploads) and
    /// returns its output.
    pub fn unmount(mut self) -> String {
        let status = self.unmount_in_place();
        let log = self.log_text();
        assert!(
            status.success(),
            "daemon exited with {status} on unmount; output: {log}"
        );
        log
    }

    fn unmount_in_place(&mut self) -> ExitStatus {
        self.watchdog = None;
        // A process glancing at a fresh mount makes the unmount EBUSY for an instant: retry.
        let mut out = fusermount_u(&self.mountpoint);
        for _ in 0..20 {
            if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("busy") {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            out = fusermount_u(&self.mountpoint);
        }
        assert!(
            out.status.success(),
            "fusermount3 -u {} failed: {}",
            self.mountpoint.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
        let mut child = self.child.take().expect("daemon running");
        let Some(status) = wait_timeout(&mut child, UNMOUNT_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon did not exit within {UNMOUNT_TIMEOUT:?} after fusermount3 -u; output: {}",
                self.log_text()
            );
        };
        assert!(
            !is_mounted(&self.mountpoint),
            "{} still mounted after unmount",
            self.mountpoint.display()
        );
        status
    }

    /// SIGKILL to the daemon, then `fusermount3 -uz` of the dead mount it leaves; returns
    /// the daemon's output.
    pub fn kill9(mut self) -> String {
        self.watchdog = None;
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("SIGKILL the daemon");
        let _ = child.wait();
        let out = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mountpoint)
            .output()
            .expect("run fusermount3");
        assert!(
            out.status.success() || !is_mounted(&self.mountpoint),
            "fusermount3 -uz {}: {}",
            self.mountpoint.display(),
            output_text(&out)
        );
        self.mounted = false;
        self.log_text()
    }

    fn start_watchdog(&mut self) {
        let secs = std::env::var(WATCHDOG_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WATCHDOG_DEFAULT_SECS);
        let pid = self.child.as_ref().expect("daemon running").id() as libc::pid_t;
        let mountpoint = self.mountpoint.clone();
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
}

impl Drop for RemoteMount {
    fn drop(&mut self) {
        self.watchdog = None;
        if thread::panicking() {
            let log = self.log_text();
            if !log.trim().is_empty() {
                eprintln!("--- ssefs daemon output ---\n{log}\n--- end of daemon output ---");
            }
        }
        if self.mounted && is_mounted(&self.mountpoint) {
            let out = fusermount_u(&self.mountpoint);
            if !out.status.success() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, UNMOUNT_TIMEOUT).is_none() {
                eprintln!("cleanup: daemon {} did not exit, killing it", child.id());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.mounted && is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What a daemon's unmount line says it moved: `fetched N bytes in M requests` and
/// `uploaded U bytes in K requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfers {
    pub fetched_bytes: u64,
    pub fetch_requests: u64,
    pub uploaded_bytes: u64,
    pub upload_requests: u64,
}

impl Transfers {
    /// The counts of the last such line in a daemon's output; fails the test if there is none.
    pub fn from_log(log: &str) -> Transfers {
        let line = log
            .lines()
            .rev()
            .find(|line| line.contains("fetched ") && line.contains("uploaded "))
            .unwrap_or_else(|| {
                panic!("no `fetched … uploaded …` line in the daemon output:\n{log}")
            });
        let (fetched_bytes, fetch_requests) = counts_after(line, "fetched ");
        let (uploaded_bytes, upload_requests) = counts_after(line, "uploaded ");
        Transfers {
            fetched_bytes,
            fetch_requests,
            uploaded_bytes,
            upload_requests,
        }
    }
}

/// `N` and `M` of `WORD N bytes in M requests` in `line`.
fn counts_after(line: &str, word: &str) -> (u64, u64) {
    let start = line.find(word).expect("the word is in the line") + word.len();
    let mut tokens = line[start..].split_whitespace();
    let number = |token: Option<&str>| -> u64 {
        let token = token.unwrap_or_default();
        token
            .replace([',', '_'], "")
            .parse()
            .unwrap_or_else(|_| panic!("no count after {word:?} in: {line}"))
    };
    let bytes = number(tokens.next());
    assert_eq!(tokens.next(), Some("bytes"), "{line}");
    assert_eq!(tokens.next(), Some("in"), "{line}");
    let requests = number(tokens.next());
    (bytes, requests)
}

/// Bytes allocated on disk (`st_blocks`) by every file under `dir`.
pub fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                todo.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// A server started again
// ---------------------------------------------------------------------------------------------

/// How a running weed server was started (its command line, directory and ports), so it can
/// be started again on the same data after [`S3Server::stop`].
pub struct ServerCommand {
    args: Vec<OsString>,
    dir: PathBuf,
}

impl ServerCommand {
    /// Reads the command line of `server` while it runs.
    pub fn of(server: &S3Server) -> ServerCommand {
        let cmdline = fs::read(format!("/proc/{}/cmdline", server.pid()))
            .expect("read the server's command line");
        let args: Vec<OsString> = cmdline
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .skip(1)
            .map(|arg| OsString::from_vec(arg.to_vec()))
            .collect();
        assert!(
            args.first().is_some_and(|a| a == "server"),
            "unexpected server command line: {args:?}"
        );
        ServerCommand {
            args,
            dir: server.dir().to_path_buf(),
        }
    }

    /// Starts the server again with the same arguments in the same directory (which `server`
    /// still owns and removes when dropped) and waits until it answers a signed upload.
    pub fn start(&self, server: &S3Server) -> RestartedServer {
        let log = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("weed.log"))
            .expect("open the server log");
        let log_err = log.try_clone().expect("clone the server log");
        let child = Command::new(weed_binary())
            .args(&self.args)
            .env("TMPDIR", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .expect("start weed server again");
        let watchdog = kill_group_when_closed(child.id());
        let mut restarted = RestartedServer {
            child,
            watchdog: Some(watchdog),
        };
        restarted.wait_ready(server);
        restarted
    }
}

/// A weed server started again by [`ServerCommand::start`]; dropping it kills it.
pub struct RestartedServer {
    child: Child,
    watchdog: Option<(Child, ChildStdin)>,
}

impl RestartedServer {
    fn wait_ready(&mut self, server: &S3Server) {
        let probe = server.client_with("ready", Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the restarted weed server exited ({status}); see its log in {}",
                    server.dir().display()
                );
            }
            if probe
                .put("probe", b"ready".to_vec(), WriteMode::Overwrite)
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted server did not answer S3 within 60 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RestartedServer {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill takes no pointers; a negative pid names the server's process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        if let Some((mut watchdog, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = watchdog.wait();
        }
    }
}

/// A shell holding the read end of a pipe from this process: when the pipe closes (this
/// process ends in any way), it kills the process group `pgid`.
fn kill_group_when_closed(pgid: u32) -> (Child, ChildStdin) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read _line; kill -9 -\"$1\" 2>/dev/null")
        .arg("ssefs-s3-watchdog")
        .arg(pgid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watchdog shell");
    let stdin = child.stdin.take().expect("watchdog stdin");
    (child, stdin)
}

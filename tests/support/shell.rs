//! Child processes: running `sh` scripts (as root or as nobody), quoting paths for them,
//! describing how a process ended, and a guard that kills and reaps a child.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

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

/// Kills and reaps a child when dropped (a failed assertion leaves nothing behind).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

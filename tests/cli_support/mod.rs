//! Scratch stores for the tests that drive the `ssefs` binary without a mount: a temporary
//! directory with a store `st` made by `ssefs init` and its root key `root.key`, and commands
//! that see none of the caller's root-key environment.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssefs"));
        cmd.env("HOME", self.path("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSEFS_ROOT_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY");
        cmd
    }
}

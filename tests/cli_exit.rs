//! How commands end, through the binary: the documented exit statuses, and output into a
//! closed pipe (`ssefs kms audit | head -1`, `ssefs stat DIR | head -1`) ending quietly by
//! SIGPIPE as `cat` does, without a panic.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use support::cli::{Scratch, text};

/// Runs `cmd` with its standard output a pipe whose reading end is already closed.
fn into_closed_pipe(mut cmd: Command) -> Output {
    let (read, write) = rustix::pipe::pipe().unwrap();
    drop(read);
    cmd.stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn assert_quiet_sigpipe(out: &Output, what: &str) {
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{what}: {:?} {}",
        out.status,
        text(out)
    );
    assert!(out.stderr.is_empty(), "{what}: {}", text(out));
}

#[test]
fn kms_audit_into_a_closed_pipe_ends_quietly() {
    let s = Scratch::new();
    let kms = |args: &[&str]| {
        let mut cmd = s.bare();
        cmd.arg("kms")
            .args(args)
            .arg("--store")
            .arg(s.store())
            .arg("--root-key")
            .arg(s.key());
        cmd
    };
    for _ in 0..3 {
        let out = kms(&["create"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = into_closed_pipe(kms(&["audit"]));
    assert_quiet_sigpipe(&out, "kms audit");
    let out = into_closed_pipe(kms(&["list"]));
    assert_quiet_sigpipe(&out, "kms list");
}

#[test]
fn stat_into_a_closed_pipe_ends_quietly() {
    if !support::mount::mount_tests_enabled() {
        return;
    }
    let store = support::mount::TestStore::new();
    let mount = support::mount::Mount::new(&store, &[]);
    let bucket = mount.bucket("photos");
    for i in 0..5 {
        std::fs::write(bucket.join(format!("{i}.txt")), b"x").unwrap();
    }
    let mut cmd = Command::new(support::cli::SSEFS);
    cmd.arg("stat").arg(&bucket);
    let out = into_closed_pipe(cmd);
    assert_quiet_sigpipe(&out, "stat");
}

#[test]
fn exit_statuses_are_the_documented_ones() {
    let s = Scratch::new();
    let run = |args: &[&str]| {
        let mut cmd = s.bare();
        cmd.args(args);
        cmd.output().unwrap()
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("Exit status:"), "{help}");
    // 2: usage, for a missing required --store as for any bad command line.
    assert_eq!(run(&["fsck"]).status.code(), Some(2));
    assert_eq!(run(&["rotate-master"]).status.code(), Some(2));
    assert_eq!(run(&["kms", "no-such-command"]).status.code(), Some(2));
    // 1: a failure, with one line saying why.
    let out = run(&["kms", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).starts_with("ssefs: --store STORE is required"));
    // 3: a bucket without a rule.
    std::fs::create_dir(s.store().join("plain")).unwrap();
    let store = s.store().to_string_lossy().into_owned();
    let key = s.key().to_string_lossy().into_owned();
    let args = [
        "bucket-encryption",
        "get",
        "plain",
        "--store",
        &store,
        "--root-key",
        &key,
    ];
    assert_eq!(run(&args).status.code(), Some(3));
    // 4: fsck with problems left (a foreign file at the store root).
    std::fs::write(s.store().join("stray.txt"), b"x").unwrap();
    let out = run(&["fsck", "--store", &store, "--root-key", &key]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
}

#[test]
fn every_command_line_names_algorithms_by_the_one_rule() {
    let s = Scratch::new();
    std::fs::create_dir(s.store().join("photos")).unwrap();
    let store = s.store().to_string_lossy().into_owned();
    for args in [
        &["reencrypt", "--algorithm", "aes256", "/nowhere"][..],
        &[
            "bucket-encryption",
            "put",
            "photos",
            "--algorithm",
            "aes256",
            "--store",
            &store,
        ],
    ] {
        let out = s.bare().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out)
                .contains("unknown server-side encryption algorithm \"aes256\": use AES256 or KMS"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // The same rule takes the right names.
    let out = s
        .bare()
        .args(["reencrypt", "--algorithm", "AES256", "/nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

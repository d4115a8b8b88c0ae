//! The command line documents itself: every command and every argument has help text, every
//! administrative command takes `--json`, and the man pages and shell completions generated
//! from the same definitions are well formed and render.

mod support;

use std::path::Path;
use std::process::Command;
use support::cli::SSEFS;

/// `path: --arg` for every argument (and `path` for every command) without help text.
fn undocumented(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    if cmd.get_about().is_none() && path != "ssefs" {
        missing.push(path.to_string());
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || arg.is_hide_set() {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path}: {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        undocumented(sub, &format!("{path} {}", sub.get_name()), missing);
    }
}

#[test]
fn every_command_and_argument_has_help_text() {
    let mut cmd = ssefs::cli::command();
    cmd.build();
    let mut missing = Vec::new();
    undocumented(&cmd, "ssefs", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

/// The commands that administer a store (as opposed to mounting or creating one).
const ADMIN: &[&str] = &[
    "rotate-master",
    "rewrap",
    "change-root-key",
    "kms",
    "bucket-encryption",
    "reencrypt",
    "stat",
    "fsck",
    "status",
    "upgrade",
];

/// Admin commands that have subcommands of their own, each of which takes `--json`.
const ADMIN_GROUPS: &[(&str, &[&str])] = &[("keystore", &["backup", "restore", "replaced"])];

#[test]
fn every_admin_command_takes_json() {
    let mut cmd = ssefs::cli::command();
    cmd.build();
    for name in ADMIN {
        let sub = cmd
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no command {name}"));
        assert!(
            sub.get_arguments().any(|a| a.get_long() == Some("json")),
            "{name} has no --json"
        );
    }
    for (group, subs) in ADMIN_GROUPS {
        let group_cmd = cmd
            .find_subcommand(group)
            .unwrap_or_else(|| panic!("no command {group}"));
        for name in *subs {
            let sub = group_cmd
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no command {group} {name}"));
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some("json")),
                "{group} {name} has no --json"
            );
        }
    }
}

#[test]
fn rotate_master_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("st");
    let key = dir.path().join("k");
    let ssefs = SSEFS;
    let out = Command::new(ssefs)
        .arg("init")
        .arg(&store)
        .arg("--root-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let run = |extra: &[&str]| {
        let out = Command::new(ssefs)
            .arg("rotate-master")
            .arg("--store")
            .arg(&store)
            .arg("--root-key")
            .arg(&key)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run(&[]);
    assert_eq!(v["rotated"], serde_json::json!(true));
    assert_eq!(v["current_version"], serde_json::json!(2));
    let v = run(&["--if-older-than-days", "30"]);
    assert_eq!(v["rotated"], serde_json::json!(false));
    let v = run(&["--retire-unused"]);
    assert_eq!(v["retired"], serde_json::json!([1]));
    assert_eq!(v["current_version"], serde_json::json!(2));
}

fn ssefs(args: &[&str]) -> std::process::Output {
    Command::new(SSEFS).args(args).output().unwrap()
}

#[test]
fn man_pages_are_generated_for_every_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = ssefs(&["man", "--out-dir", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut cmd = ssefs::cli::command();
    cmd.build();
    let mut expected = vec!["ssefs.1".to_string()];
    for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
        expected.push(format!("ssefs-{}.1", sub.get_name()));
        for leaf in sub.get_subcommands().filter(|c| c.get_name() != "help") {
            expected.push(format!("ssefs-{}-{}.1", sub.get_name(), leaf.get_name()));
        }
    }
    for page in &expected {
        let path = out_dir.join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
        assert!(text.contains(".SH NAME"), "{page}");
    }
    let kms = std::fs::read_to_string(out_dir.join("ssefs-kms.1")).unwrap();
    assert!(kms.contains("ssefs\\-kms\\-create(1)"), "{kms}");
    if which("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(out_dir.join("ssefs-kms.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains("ssefs-kms"),
            "{text}"
        );
    } else {
        eprintln!("man is not installed: rendering not checked, only the page's structure");
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, needle) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef ssefs"),
        ("fish", "complete -c ssefs"),
    ] {
        let out = ssefs(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{shell}: {text}");
        assert!(text.contains("rotate-master"), "{shell}");
    }
    let out = ssefs(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn install_puts_man_pages_and_completions_in_place_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let usr = dir.path().join("usr");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let run = |extra: &[&str]| {
        Command::new("bash")
            .arg(&script)
            .arg("--prefix")
            .arg(&usr)
            .arg("--unitdir")
            .arg(dir.path().join("units"))
            .arg("--sbindir")
            .arg(dir.path().join("sbin"))
            .arg("--binary")
            .arg(SSEFS)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{out:?}");
    let files = [
        usr.join("bin/ssefs"),
        usr.join("share/man/man1/ssefs.1"),
        usr.join("share/man/man1/ssefs-kms.1"),
        usr.join("share/man/man1/ssefs-kms-create.1"),
        usr.join("share/bash-completion/completions/ssefs"),
        usr.join("share/zsh/site-functions/_ssefs"),
        usr.join("share/fish/vendor_completions.d/ssefs.fish"),
    ];
    for file in &files {
        assert!(file.is_file(), "{} not installed: {out:?}", file.display());
    }
    let out = Command::new("bash")
        .arg(&script)
        .args(["--uninstall", "--prefix"])
        .arg(&usr)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for file in &files {
        assert!(!file.exists(), "{} left behind", file.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(usr.join("share/man/man1"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_readme_demo_leaves_nothing_untracked() {
    let root = env!("CARGO_MANIFEST_DIR");
    let inside = Command::new("git")
        .args(["-C", root, "rev-parse", "--is-inside-work-tree"])
        .output();
    if !inside.is_ok_and(|o| o.status.success()) {
        eprintln!("not a git work tree: .gitignore not checked");
        return;
    }
    for name in ["demo.key", "demo-store", "demo-mnt/photos/note.txt"] {
        let out = Command::new("git")
            .args(["-C", root, "check-ignore", "-q", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} is not ignored");
    }
}

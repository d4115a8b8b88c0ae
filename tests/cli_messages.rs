//! Messages that name the right cause, through the binary: a revoke from a grantee without a
//! grant, another store's backup, a zero rotation period, a missing import directory, daemon
//! pids, a root key changed to itself, and re-encrypting a hard-linked object.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::cli::{Scratch, text};

fn kms(s: &Scratch, args: &[&str]) -> Output {
    s.bare()
        .arg("kms")
        .args(args)
        .arg("--store")
        .arg(s.store())
        .arg("--root-key")
        .arg(s.key())
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn new_cmk(s: &Scratch) -> String {
    let out = ok(kms(s, &["create", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

#[test]
fn revoking_a_gid_names_that_gid_and_lists_the_grants_left() {
    let s = Scratch::new();
    let id = new_cmk(&s);
    ok(kms(
        &s,
        &["grant", &id, "--uid", "1000", "--operations", "encrypt"],
    ));
    ok(kms(
        &s,
        &["grant", &id, "--gid", "100", "--operations", "decrypt"],
    ));
    let out = ok(kms(&s, &["revoke", &id, "--gid", "100"]));
    assert!(
        out.contains(&format!("gid 100 has no grant on CMK {id} now")),
        "{out}"
    );
    assert!(
        out.contains(&format!("grants of CMK {id}: uid 1000 (encrypt)")),
        "{out}"
    );
    assert!(!out.contains("has no grants"), "{out}");
    // Again: there is no gid-100 grant, and the message says what there is.
    let out = kms(&s, &["revoke", &id, "--gid", "100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!(
            "CMK {id} has no grant to gid 100; its grants: uid 1000 (encrypt)"
        )),
        "{}",
        text(&out)
    );
    // Part of a grant: what the grantee keeps.
    ok(kms(
        &s,
        &[
            "grant",
            &id,
            "--uid",
            "7",
            "--operations",
            "encrypt,decrypt",
        ],
    ));
    let out = ok(kms(
        &s,
        &["revoke", &id, "--uid", "7", "--operations", "encrypt"],
    ));
    assert!(
        out.contains(&format!("uid 7 keeps decrypt on CMK {id}")),
        "{out}"
    );
}

fn store_id(s: &Scratch) -> String {
    let out = ok(s
        .bare()
        .args(["status", "--json", "--store"])
        .arg(s.store())
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["store_id"].as_str().unwrap().to_string()
}

#[test]
fn restoring_another_stores_backup_names_both_stores() {
    let (a, b) = (Scratch::new(), Scratch::new());
    let backup = b.path("b.backup");
    ok(b.bare()
        .args(["keystore", "backup", "--store"])
        .arg(b.store())
        .arg(&backup)
        .output()
        .unwrap());
    let out = a
        .bare()
        .args(["keystore", "restore", "--store"])
        .arg(a.store())
        .arg(&backup)
        .arg("--root-key")
        .arg(a.key())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(msg.contains("backup of another store"), "{msg}");
    assert!(!msg.contains("wrong root key"), "{msg}");
    for id in [store_id(&a), store_id(&b)] {
        assert!(msg.contains(&id), "{id} missing from {msg}");
    }
}

#[test]
fn a_zero_rotation_period_says_the_range() {
    let s = Scratch::new();
    let id = new_cmk(&s);
    let out = kms(&s, &["set-rotation", &id, "--days", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("0 is not in 1..=3650"), "{msg}");
    assert!(!msg.contains("non-zero type"), "{msg}");
    ok(kms(&s, &["set-rotation", &id, "--days", "365"]));
}

#[test]
fn import_params_go_into_a_directory_made_for_them() {
    let s = Scratch::new();
    let out = ok(kms(&s, &["create", "--origin", "external", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let dir = s.path("params/new");
    let out = ok(kms(
        &s,
        &["get-import-params", &id, "--out-dir", dir.to_str().unwrap()],
    ));
    assert!(out.contains("import token"), "{out}");
    for suffix in ["public_key.der", "public_key.pem", "import_token"] {
        assert!(dir.join(format!("{id}.{suffix}")).is_file(), "{suffix}");
    }
}

#[test]
fn changing_the_root_key_to_itself_says_so_and_changes_nothing() {
    let s = Scratch::new();
    let out = ok(s
        .bare()
        .args(["change-root-key", "--store"])
        .arg(s.store())
        .arg("--root-key")
        .arg(s.key())
        .arg("--new-root-key")
        .arg(s.key())
        .output()
        .unwrap());
    assert!(
        out.contains("is already the current root key") && out.contains("nothing changed"),
        "{out}"
    );
    assert!(!out.contains("no longer opens"), "{out}");
    ok(kms(&s, &["list"]));
}

#[test]
fn status_names_the_daemon_pid_plainly() {
    if !support::mount::mount_tests_enabled() {
        return;
    }
    let store = support::mount::TestStore::new();
    let mount = support::mount::Mount::new(&store, &[]);
    let out = ok(Command::new(support::cli::SSEFS)
        .args(["status", "--store"])
        .arg(&store.store)
        .output()
        .unwrap());
    assert!(
        out.contains(&format!("(daemon pid {})", mount.pid())),
        "{out}"
    );
    assert!(!out.contains('['), "{out}");
}

#[test]
fn reencrypting_a_hard_linked_object_says_why_and_what_to_do() {
    if !support::mount::mount_tests_enabled() {
        return;
    }
    let store = support::mount::TestStore::new();
    let mount = support::mount::Mount::new(&store, &[]);
    let bucket = mount.bucket("photos");
    let object = bucket.join("a.txt");
    std::fs::write(&object, b"hello").unwrap();
    std::fs::hard_link(&object, bucket.join("b.txt")).unwrap();
    let out = Command::new(support::cli::SSEFS)
        .args(["reencrypt", "--algorithm", "KMS"])
        .arg(&object)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(
        msg.contains("more than one hard link") && msg.contains("cannot be re-encrypted in place"),
        "{msg}"
    );
    assert!(msg.contains("cp") && !msg.contains("os error 31"), "{msg}");
    assert!(Path::new(&object).exists());
}

//! Keystore backups are key escrow, so the rotation unit keeps only the newest few:
//! `ssefs keystore backup --keep N` removes older backups of the same store and nothing else.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use support::cli::SSEFS;
use support::mount::TestStore;

fn backup(store: &TestStore, file: &Path, keep: Option<&str>) -> Output {
    let mut cmd = Command::new(SSEFS);
    cmd.args(["keystore", "backup", "--store"])
        .arg(&store.store)
        .arg(file);
    if let Some(keep) = keep {
        cmd.args(["--keep", keep]);
    }
    cmd.output().expect("run ssefs keystore backup")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read backup dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn backup_keep_prunes_only_older_backups_of_the_same_store() {
    let store = TestStore::new();
    let other = TestStore::new();
    let dir = store.scratch_dir("backups");
    fs::write(dir.join("notes.txt"), b"not a backup").expect("write notes");
    let out = backup(&other, &dir.join("other-1.db"), None);
    assert!(out.status.success(), "{out:?}");
    for n in 1..=3 {
        let out = backup(&store, &dir.join(format!("mine-{n}.db")), None);
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = backup(&store, &dir.join("mine-4.db"), Some("2"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("removed the old backup"), "{text}");
    assert_eq!(
        names(&dir),
        ["mine-3.db", "mine-4.db", "notes.txt", "other-1.db"],
        "the two newest of this store, and nothing else, are left"
    );

    // Zero would remove the backup just written: refused before anything is written.
    let out = backup(&store, &dir.join("mine-5.db"), Some("0"));
    assert!(!out.status.success(), "{out:?}");
    assert!(!dir.join("mine-5.db").exists());
}

#[test]
fn backup_json_names_the_file_the_store_and_what_was_pruned() {
    let store = TestStore::new();
    let dir = store.scratch_dir("json-backups");
    let out = backup(&store, &dir.join("first.db"), None);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = Command::new(SSEFS)
        .args(["keystore", "backup", "--json", "--keep", "1", "--store"])
        .arg(&store.store)
        .arg(dir.join("second.db"))
        .output()
        .expect("run ssefs keystore backup --json");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["store_id"].as_str().map(str::len), Some(32), "{v}");
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    assert!(
        v["file"].as_str().is_some_and(|f| f.ends_with("second.db")),
        "{v}"
    );
    let removed = v["removed"].as_array().expect("removed is a list");
    assert_eq!(removed.len(), 1, "{v}");
    assert!(
        removed[0].as_str().is_some_and(|f| f.ends_with("first.db")),
        "{v}"
    );
}

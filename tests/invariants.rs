//! Invariant 5 of the design, checked directly: secrets are zeroized when dropped and never
//! printed by `Debug`, and the layering holds in the sources (crypto imports nothing from the
//! crate and knows no paths, SQLite or FUSE; only `src/fuse/` imports `fuser`).

use ssefs::crypto::{DataKey, Key256};
use std::fs;
use std::mem::{MaybeUninit, size_of};
use std::path::{Path, PathBuf};

const PATTERN: [u8; 32] = [0xA5; 32];

/// The bytes of the storage behind `slot`, initialised or not (the slot outlives any drop).
fn storage_bytes<T>(slot: &MaybeUninit<T>) -> Vec<u8> {
    // SAFETY: the slot is `size_of::<T>()` bytes we own; every byte of it was written (by the
    // zero fill below, then by the value or by its drop), so reading it as bytes is defined.
    unsafe { std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), size_of::<T>()).to_vec() }
}

#[test]
fn a_key_is_zeroized_in_place_when_dropped() {
    let mut slot = MaybeUninit::<Key256>::zeroed();
    slot.write(Key256::from_bytes(&PATTERN).expect("32 bytes make a key"));
    let before = storage_bytes(&slot);
    assert!(
        before.windows(PATTERN.len()).any(|w| w == PATTERN),
        "the key's bytes live inline in the value, so this test sees them"
    );
    // SAFETY: the slot was initialised just above and is dropped exactly once.
    unsafe { slot.assume_init_drop() };
    let after = storage_bytes(&slot);
    assert!(
        after.iter().all(|&b| b == 0),
        "a dropped key left bytes behind: {after:02x?}"
    );
}

#[test]
fn a_duplicated_data_key_is_zeroized_too() {
    let original: DataKey = Key256::from_bytes(&PATTERN).expect("32 bytes make a key");
    let mut slot = MaybeUninit::<DataKey>::zeroed();
    slot.write(original.duplicate());
    drop(original);
    assert!(
        storage_bytes(&slot)
            .windows(PATTERN.len())
            .any(|w| w == PATTERN)
    );
    // SAFETY: initialised above, dropped once.
    unsafe { slot.assume_init_drop() };
    assert!(storage_bytes(&slot).iter().all(|&b| b == 0));
}

#[test]
fn debug_never_prints_a_key() {
    let key = Key256::from_bytes(&PATTERN).expect("32 bytes make a key");
    for text in [
        format!("{key:?}"),
        format!("{key:#?}"),
        format!("{:?}", Some(&key)),
    ] {
        let lower = text.to_lowercase();
        assert!(!lower.contains("a5a5"), "hex of the key in {text:?}");
        assert!(
            !lower.contains("165"),
            "decimal bytes of the key in {text:?}"
        );
        assert!(lower.contains("redacted"), "unexpected Debug form {text:?}");
    }
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The code of a source file without its comments (line comments and doc comments), so that
/// prose naming a crate does not count as a use of it.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = match line.find("//") {
                Some(at) => &line[..at],
                None => line,
            };
            (!code.trim().is_empty()).then(|| (i + 1, code.to_string()))
        })
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn crypto_imports_nothing_from_the_crate_and_knows_no_paths_sqlite_or_fuse() {
    let forbidden = [
        "crate::",
        "rusqlite",
        "fuser",
        "std::path",
        "Path",
        "keystore",
    ];
    let mut found = Vec::new();
    let files = rust_files(&src().join("crypto"));
    assert!(files.len() >= 5, "crypto sources not found: {files:?}");
    for file in files {
        for (n, line) in code_lines(&file) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{n}: {word}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "crypto/ reaches outside itself:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_fuse_layer_imports_fuser() {
    let mut found = Vec::new();
    let mut seen_in_fuse_rs = false;
    let fuse_dir = src().join("fuse");
    for file in rust_files(&src()) {
        let is_fuse_rs = file.starts_with(&fuse_dir);
        for (n, line) in code_lines(&file) {
            if line.contains("fuser::") {
                if is_fuse_rs {
                    seen_in_fuse_rs = true;
                } else {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        seen_in_fuse_rs,
        "src/fuse/ no longer imports fuser: is the check still looking?"
    );
    assert!(
        found.is_empty(),
        "fuser used outside src/fuse/:\n{}",
        found.join("\n")
    );
}

#[test]
fn fs_and_keystore_do_not_reach_up_into_the_cli_or_fuse() {
    let mut found = Vec::new();
    for layer in ["fs", "keystore", "store"] {
        for file in rust_files(&src().join(layer)) {
            for (n, line) in code_lines(&file) {
                if line.contains("crate::cli") || line.contains("crate::fuse") {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a lower layer uses an upper one:\n{}",
        found.join("\n")
    );
}

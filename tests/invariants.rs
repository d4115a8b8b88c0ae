//! Invariant 5 of `docs/DESIGN.md`, checked directly: secrets are zeroized when dropped and
//! never printed by `Debug`; and the boundaries of its layering, checked in the sources as
//! text: crypto imports nothing from the crate and knows no paths, SQLite or FUSE; only the
//! `fuse` module imports `fuser`; only `keystore/` uses `rusqlite`; `fs/` and `ops/` make no
//! filesystem calls of their own (the store's bytes are reached through `store::Store`); the
//! store layout is spelled only in `store/layout.rs`; no layer imports one above it.

use ssefs::crypto::{DataKey, Key256};
use std::collections::{BTreeMap, BTreeSet};
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

/// Whether a source file holds only tests (`tests.rs`, `tests_*.rs`, `*_tests.rs`).
fn is_test_file(path: &Path) -> bool {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    stem.starts_with("tests") || stem.ends_with("_tests")
}

/// The code lines of a source file that are not tests: none of a test file; in others, an
/// item after `#[cfg(test)]` is left out: a `mod x;` line, or an inline `mod x {` and
/// everything after it (an inline test module closes each file).
fn production_lines(path: &Path) -> Vec<(usize, String)> {
    if is_test_file(path) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut lines = code_lines(path).into_iter();
    while let Some((n, line)) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push((n, line));
            continue;
        }
        match lines.next() {
            Some((_, item)) if item.trim_end().ends_with('{') => break,
            _ => {}
        }
    }
    out
}

/// `path` relative to `src/`, with `/` separators.
fn rel_src(path: &Path) -> String {
    path.strip_prefix(src())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The production lines of every source file under `src/` (minus `skip`) that contain one of
/// `words`, as `file:line: word: code`.
fn uses_of(words: &[&str], skip: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let rel = rel_src(&file);
        if skip(&rel) {
            continue;
        }
        for (n, line) in production_lines(&file) {
            for word in words {
                if line.contains(word) {
                    found.push(format!("src/{rel}:{n}: {word}: {}", line.trim()));
                }
            }
        }
    }
    found
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

/// Whether `rel` (relative to `src/`) is the FUSE adapter: `fuse.rs`, or a file of `fuse/`.
fn is_fuse_module(rel: &str) -> bool {
    rel == "fuse.rs" || rel.starts_with("fuse/")
}

#[test]
fn only_the_fuse_module_imports_fuser() {
    let seen = rust_files(&src()).iter().any(|file| {
        is_fuse_module(&rel_src(file))
            && code_lines(file)
                .iter()
                .any(|(_, line)| line.contains("fuser::"))
    });
    assert!(
        seen,
        "the fuse module no longer imports fuser: is the check still looking?"
    );
    let found = uses_of(&["fuser::", "use fuser"], is_fuse_module);
    assert!(
        found.is_empty(),
        "fuser used outside the fuse module:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_keystore_uses_rusqlite() {
    let in_keystore = |rel: &str| rel.starts_with("keystore/");
    let found = uses_of(&["rusqlite"], in_keystore);
    assert!(
        found.is_empty(),
        "rusqlite used outside keystore/ (ask keystore::inspect for a summary):\n{}",
        found.join("\n")
    );
    let seen = rust_files(&src().join("keystore")).iter().any(|f| {
        production_lines(f)
            .iter()
            .any(|(_, l)| l.contains("rusqlite"))
    });
    assert!(
        seen,
        "keystore/ no longer uses rusqlite: is the check looking?"
    );
}

/// One file owns the PKCS#11 token: `cryptoki` appears nowhere else in `src/`.
#[test]
fn only_the_token_module_uses_cryptoki() {
    let found = uses_of(&["cryptoki"], |rel| rel == "keystore/pkcs11.rs");
    assert!(
        found.is_empty(),
        "cryptoki used outside keystore/pkcs11.rs (ask the keystore for what the token does):\n{}",
        found.join("\n")
    );
    let seen = production_lines(&src().join("keystore/pkcs11.rs"))
        .iter()
        .any(|(_, l)| l.contains("cryptoki"));
    assert!(
        seen,
        "keystore/pkcs11.rs no longer uses cryptoki: is the check looking?"
    );
}

/// Only `store/remote/` talks to an object store: the rest of the crate sees its blocking
/// client and error type, so the HTTP stack, its runtime and its errors have one owner.
#[test]
fn only_the_remote_store_uses_object_store() {
    let in_remote = |rel: &str| rel.starts_with("store/remote/");
    let found = uses_of(&["object_store", "tokio::", "reqwest"], in_remote);
    assert!(
        found.is_empty(),
        "object_store (or its runtime) used outside store/remote/:\n{}",
        found.join("\n")
    );
    let seen = rust_files(&src().join("store/remote")).iter().any(|f| {
        production_lines(f)
            .iter()
            .any(|(_, l)| l.contains("object_store::"))
    });
    assert!(
        seen,
        "store/remote/ no longer uses object_store: is the check looking?"
    );
}

/// In `fs/` and `ops/` (the mount's core and the offline operations), outside tests, the
/// only item of `std::fs` allowed is the `File` type of descriptors `store::Backing` hands
/// out, and the only path read is the caller's `/proc` status: every byte of a store is
/// reached through `store::Store` and its `Backing`, so the store owns the layout and a test
/// can inject faults into all of it.
#[test]
fn fs_and_ops_reach_the_store_only_through_store() {
    let forbidden = [
        "std::fs::",
        "OpenOptions",
        "File::open",
        "File::create",
        "DirBuilder",
        "read_dir(",
        "canonicalize(",
        "symlink_metadata",
        "remove_file",
    ];
    let mut found = Vec::new();
    let mut files = 0;
    for layer in ["fs", "ops"] {
        for file in rust_files(&src().join(layer)) {
            files += 1;
            for (n, line) in production_lines(&file) {
                if line.contains("\"/proc/") {
                    continue;
                }
                let rest = line.replace("std::fs::File", "File");
                for word in forbidden {
                    let hit = match word {
                        // `store.list_dir` and `backing.read_dir` are the store's own calls.
                        "read_dir(" => rest.contains("std::fs::read_dir("),
                        _ => rest.contains(word),
                    };
                    if hit {
                        found.push(format!("{}:{n}: {word}: {}", rel_src(&file), line.trim()));
                    }
                }
            }
        }
    }
    assert!(files >= 10, "fs/ and ops/ sources not found");
    assert!(
        found.is_empty(),
        "fs/ or ops/ reach the file system around store::Store:\n{}",
        found.join("\n")
    );
}

/// The names of the store layout (meta directory, keystore file and its companions, lock,
/// temporary directory, temporary prefixes) are spelled once, in `store/layout.rs`; everyone
/// else uses its constants and functions.
#[test]
fn the_store_layout_is_spelled_only_in_store_layout() {
    let names = [
        "\".ssefs",
        "\"keystore.db",
        "\"tmp\"",
        "\"lock\"",
        "\"-wal\"",
        "\"-shm\"",
        "\"create-",
        "\"reencrypt-",
        "\"replace-",
    ];
    let found = uses_of(&names, |rel| rel == "store/layout.rs");
    assert!(
        found.is_empty(),
        "a layout name spelled outside store/layout.rs:\n{}",
        found.join("\n")
    );
    let layout = production_lines(&src().join("store/layout.rs"));
    for name in names {
        assert!(
            name == "\"replace-" || layout.iter().any(|(_, l)| l.contains(name)),
            "store/layout.rs no longer names {name}: is the check looking?"
        );
    }
}

#[test]
fn no_layer_reaches_up() {
    // What each layer may not import: the layers above it (and, for `store/`, every other
    // layer but the leaf `crypto`-free world: it knows nothing of objects, keys or FUSE).
    let rules: [(&str, &[&str]); 4] = [
        ("fs", &["crate::cli", "crate::fuse", "crate::ops"]),
        (
            "keystore",
            &["crate::cli", "crate::fuse", "crate::ops", "crate::fs"],
        ),
        (
            "store",
            &[
                "crate::cli",
                "crate::fuse",
                "crate::ops",
                "crate::fs",
                "crate::keystore",
                "crate::crypto",
            ],
        ),
        ("ops", &["crate::cli", "crate::fuse"]),
    ];
    let mut found = Vec::new();
    for (layer, forbidden) in rules {
        let files = rust_files(&src().join(layer));
        assert!(!files.is_empty(), "src/{layer} not found");
        for file in files {
            for (n, line) in code_lines(&file) {
                for word in forbidden {
                    if line.contains(word) {
                        found.push(format!("src/{}:{n}: {}", rel_src(&file), line.trim()));
                    }
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

/// The modules named right after `super::` in `code`: `super::x::…`, `super::{x::…, y}`.
fn super_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("super::") {
        let rest = &code[at + "super::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.insert(leading_ident(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                names.insert(leading_ident(&item));
            }
            None if rest.starts_with("super::") => {}
            None => {
                let name = leading_ident(rest);
                if rest[name.len()..].starts_with("::") {
                    names.insert(name);
                }
            }
        }
    }
    names
}

fn leading_ident(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_two_files_of_a_module_import_each_other() {
    // A pair that does shares a type or rule with no single owner: it belongs in one of them,
    // or in a small module of its own that both import.
    let mut imports: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if stem == "mod" || stem == "lib" || stem == "main" || is_test_file(&file) {
            continue;
        }
        let code: Vec<String> = production_lines(&file)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        imports.insert(file, super_paths(&code.join("\n")));
    }
    let mut cycles = Vec::new();
    for (file, names) in &imports {
        let dir = file.parent().expect("a file has a directory");
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        for name in names {
            let sibling = dir.join(format!("{name}.rs"));
            if sibling > *file
                && imports
                    .get(&sibling)
                    .is_some_and(|back| back.contains(stem))
            {
                cycles.push(format!(
                    "src/{} <-> src/{}",
                    rel_src(file),
                    rel_src(&sibling)
                ));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files of one module import each other:\n{}",
        cycles.join("\n")
    );
    assert!(
        imports.values().any(|names| names.contains("inode")),
        "no file imports a sibling through super: is the check looking?"
    );
}

/// Whether a code line is an attribute about `unsafe_code` (`#![forbid(unsafe_code)]`), which
/// forbids unsafe code rather than using it.
fn is_unsafe_code_attribute(line: &str) -> bool {
    let line = line.trim();
    line.starts_with('#') && line.contains("(unsafe_code)")
}

/// Every `unsafe` block lives in one of the two system-call modules, each with its SAFETY
/// note: `sys.rs` (the calls `rustix` has no safe form of) and `store/backing.rs` (the
/// store's `*at` calls). Everywhere else a safe call (`rustix`, std) does the work. Tests
/// inside `src/` count too.
#[test]
fn unsafe_lives_only_in_the_system_call_modules() {
    let allowed = |rel: &str| rel == "sys.rs" || rel == "store/backing.rs";
    let mut found = Vec::new();
    let mut seen = false;
    for file in rust_files(&src()) {
        let rel = rel_src(&file);
        for (n, line) in code_lines(&file) {
            if !line.contains("unsafe") || is_unsafe_code_attribute(&line) {
                continue;
            }
            if allowed(&rel) {
                seen = true;
            } else {
                found.push(format!("src/{rel}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        seen,
        "sys.rs holds no unsafe block: is the check still looking?"
    );
    assert!(
        found.is_empty(),
        "unsafe outside sys.rs and store/backing.rs (add a safe wrapper to sys.rs):\n{}",
        found.join("\n")
    );
}

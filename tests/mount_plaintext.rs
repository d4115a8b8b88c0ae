//! No plaintext reaches the store: files of a known random pattern and of known text are written
//! through the mount, and every byte under the store (keystore included) and of the daemon's
//! most verbose log is scanned for them, for the root key and for the master key in clear.

mod support;

use ssefs::keystore::{Keystore, keystore_dir, load_root_key_file};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::{TestRng, test_seed};
use support::tree::scan_tree_for;

/// The daemon log files the harness writes beside the mountpoint.
fn daemon_logs(base: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(base).unwrap_or_else(|e| panic!("read {}: {e}", base.display()));
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("daemon-") && name.ends_with(".log")
        })
        .map(|e| e.path())
        .collect()
}

/// Candidate byte strings a root key file may encode: the file as is, trimmed, and the bytes a
/// hex or base64 text decodes to.
fn root_key_encodings(file: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![file.to_vec()];
    let text = String::from_utf8_lossy(file).trim().to_string();
    if text.len() != file.len() && !text.is_empty() {
        out.push(text.as_bytes().to_vec());
    }
    if let Some(bytes) = decode_hex(&text) {
        out.push(bytes);
    }
    if let Some(bytes) = decode_base64(&text) {
        out.push(bytes);
    }
    out.retain(|v| v.len() >= 16);
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() < 32 || text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body = text.trim_end_matches('=');
    if body.len() < 22 {
        return None;
    }
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in body.bytes() {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => ALPHABET.iter().position(|&a| a == c)?,
        } as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    Some(out)
}

#[test]
fn store_holds_no_plaintext_and_no_clear_key() {
    if !mount_tests_enabled() {
        return;
    }
    let (seed, _guard) = test_seed();
    let mut rng = TestRng::new(seed);
    let pattern = rng.bytes(64);
    let marker = format!("plaintext-marker-{:016x}", rng.next_u64());
    let text = format!(
        "Call me Ishmael. {marker} Some years ago, never mind how long precisely, having \
         little or no money in my purse.\n"
    );

    // The daemon logs at its most verbose level: not even trace output may carry a secret.
    // SAFETY: this file holds one test, so no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("SSEFS_TEST_DAEMON_LOG", "trace") };
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("secrets");
    fs::create_dir(bucket.join("nested")).unwrap();
    fs::write(bucket.join("pattern.bin"), pattern.repeat(40_000)).unwrap();
    // One block's worth, exactly, and a short file: small objects must be encrypted too.
    fs::write(bucket.join("nested/pattern-4k.bin"), pattern.repeat(64)).unwrap();
    fs::write(bucket.join("nested/pattern-once.bin"), &pattern).unwrap();
    fs::write(bucket.join("text.txt"), text.repeat(500)).unwrap();
    fs::write(bucket.join("short.txt"), &marker).unwrap();
    {
        // Written in small pieces and fsynced: no plaintext staging file may stay behind.
        let mut f = fs::File::create(bucket.join("pieces.txt")).unwrap();
        for _ in 0..50 {
            f.write_all(text.as_bytes()).unwrap();
        }
        f.sync_all().unwrap();
    }
    // Sanity: the pattern is readable through the mount, so the scan below is meaningful.
    assert_eq!(
        fs::read(bucket.join("nested/pattern-once.bin")).unwrap(),
        pattern
    );
    let status = mount.unmount();
    assert!(status.success(), "daemon exit {status}");

    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("64-byte random pattern", pattern.clone()),
        ("first 16 bytes of the pattern", pattern[..16].to_vec()),
        ("text marker", marker.as_bytes().to_vec()),
        ("text sentence", b"Call me Ishmael.".to_vec()),
    ];
    let mut found = Vec::new();
    for (what, needle) in &needles {
        for hit in scan_tree_for(&store.store, needle) {
            found.push(format!(
                "{what} in {} at {}",
                hit.file.display(),
                hit.offset
            ));
        }
    }
    let key_file = fs::read(&store.root_key).expect("read root key file");
    let mut secrets: Vec<(String, Vec<u8>)> = root_key_encodings(&key_file)
        .into_iter()
        .enumerate()
        .map(|(i, key)| (format!("root key (encoding {i})"), key))
        .collect();
    let root = load_root_key_file(&store.root_key).expect("load root key");
    let keystore = Keystore::open(&keystore_dir(&store.store), &root).expect("open keystore");
    let (version, master) = keystore.current_master_key().expect("current master key");
    drop(keystore);
    secrets.push((
        format!("master key v{version}"),
        master.expose_secret().to_vec(),
    ));
    for (what, key) in &secrets {
        for hit in scan_tree_for(&store.store, key) {
            found.push(format!(
                "{what} in {} at {}",
                hit.file.display(),
                hit.offset
            ));
        }
    }
    // The daemon's log (stdout and stderr) of the whole session, unmount included.
    let logs = daemon_logs(store.base());
    assert!(
        !logs.is_empty(),
        "no daemon log under {}",
        store.base().display()
    );
    for log in &logs {
        let text = fs::read(log).expect("read daemon log");
        assert!(
            String::from_utf8_lossy(&text).contains("TRACE")
                || String::from_utf8_lossy(&text).contains("DEBUG"),
            "the daemon did not log verbosely, so this scan would prove nothing: {}",
            String::from_utf8_lossy(&text)
        );
        let needles_and_secrets = needles
            .iter()
            .map(|(w, n)| (w.to_string(), n.clone()))
            .chain(secrets.iter().cloned());
        for (what, needle) in needles_and_secrets {
            if text.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push(format!("{what} in the daemon log {}", log.display()));
            }
            let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
            if String::from_utf8_lossy(&text).to_lowercase().contains(&hex) {
                found.push(format!("{what} as hex in the daemon log {}", log.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "plaintext or key material in the store (seed {seed}):\n  {}",
        found.join("\n  ")
    );
    // And the objects are really there, as files of at least their plaintext size.
    let backing = store.store.join("secrets/pattern.bin");
    let len = fs::metadata(&backing)
        .unwrap_or_else(|e| panic!("backing file {}: {e}", backing.display()))
        .len();
    assert!(len >= 64 * 40_000, "backing file only {len} bytes");
}

//! Many hosts on one remote store: two and three daemons on this machine, each with its own
//! cache directory and mountpoint, on one SeaweedFS (needs root and /dev/fuse, set
//! SSEFS_SKIP_MOUNT_TESTS=1 to skip). What one host closes another opens whole; a reader
//! never sees a mix of two versions; two writers of one object: one wins, the other is
//! told and its version kept; key changes reach every mount within its interval and every
//! mount's audit records reach the one trail; a rotation while both write; a daemon killed
//! while the other goes on. docs/REMOTE.md "Many hosts" says what these check.

mod support;

use ssefs::crypto::peek_header;
use ssefs::store::remote::WriteMode;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::mount::mount_tests_enabled;
use support::remote_mount::{RemoteMount, RemoteTestStore};
use support::rng::TestRng;
use support::xattr::{SSE, SSE_KEY_ID, key_version, set_xattr};

/// The metadata TTL the tests mount with, and how long a change may take to show on
/// another host: the TTL, the kernel's attribute timeout (1 s) and slack for a loaded
/// machine.
const TTL: &str = "metadata_ttl=1";
const SHOWS_WITHIN: Duration = Duration::from_secs(8);

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    TestRng::new(seed).bytes(len)
}

/// One test at a time: a file a test holds open is also closed (and so flushed, which
/// uploads it) whenever another test thread starts a program, and these tests watch what
/// is uploaded when.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A host: a mountpoint and a cache directory of its own.
fn host(store: &RemoteTestStore, name: &str, options: &[&str]) -> RemoteMount {
    let mountpoint = store.scratch_dir(&format!("mnt-{name}"));
    let cache = store.base().join(format!("cache-{name}"));
    let cache = cache.to_string_lossy().into_owned();
    let mut args = vec!["--cache-dir", cache.as_str()];
    for option in options {
        args.extend(["-o", option]);
    }
    store.mount_at(&mountpoint, &args)
}

/// Polls `check` until it returns `Some`, for at most `limit`; the time it took.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(found) = check() {
            return (found, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `close(2)` of a file, with its result (dropping a `File` ignores it).
fn close(file: fs::File) -> Result<(), i32> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken from the `File`, which no longer owns it; it is closed once.
    let rc = unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// `cat PATH` in a process of its own (its pid names it in the audit log).
fn cat(path: &Path) -> (std::process::Output, u32) {
    let child = Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cat");
    let pid = child.id();
    (child.wait_with_output().expect("wait for cat"), pid)
}

#[test]
fn what_one_host_closes_another_opens_whole_and_an_open_reader_keeps_its_version() {
    if !mount_tests_enabled() {
        return;
    }
    let _serial = serial();
    let store = RemoteTestStore::new("hosts-c2o");
    // B first: a command on this host asks the mount registered last (A) to sync at once,
    // so what B shows of a key made now comes from B's own sync on a miss.
    let b = host(&store, "b", &[TTL]);
    let a = host(&store, "a", &[TTL]);
    let v1 = pattern(1, 300 * 1024);
    let v2 = pattern(2, 700 * 1024 + 17);
    // A, mounted last, finds B's heartbeat at once: its closes upload before they return.
    assert!(
        !a.log_text().contains("no other host has the store mounted"),
        "{}",
        a.log_text()
    );

    // A CMK made after both mounted, a bucket under it made on A: B opens A's object at
    // once (well within its 10 s keystore_refresh), and B's own object in that bucket is
    // under the bucket's rule.
    let key = store.create_cmk();
    fs::create_dir(a.join("sealed")).unwrap();
    set_xattr(&a.join("sealed"), SSE, "KMS").unwrap();
    set_xattr(&a.join("sealed"), SSE_KEY_ID, &key).unwrap();
    fs::write(a.join("sealed/by-a"), b"under a new CMK").unwrap();
    let (_, took) = wait_for(
        Duration::from_secs(5),
        "A's object under the new CMK on B",
        || {
            fs::read(b.join("sealed/by-a"))
                .ok()
                .filter(|v| v == b"under a new CMK")
        },
    );
    eprintln!("an object under a CMK made after B's last sync opened on B after {took:?}");
    fs::write(b.join("sealed/by-b"), b"B's").unwrap();
    assert_eq!(
        support::xattr::get_xattr(&b.join("sealed/by-b"), SSE_KEY_ID).unwrap(),
        Some(key.clone()),
        "B's object in A's bucket is not under the bucket's CMK"
    );

    // A new bucket and file on A show on B, whole.
    fs::create_dir(a.join("web")).unwrap();
    fs::write(a.join("web/page"), &v1).unwrap();
    let (_, took) = wait_for(SHOWS_WITHIN, "the new file on B", || {
        match fs::read(b.join("web/page")) {
            Ok(bytes) => {
                assert_eq!(bytes.len(), v1.len(), "B read a partial first version");
                assert!(bytes == v1, "B read other bytes than A wrote");
                Some(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("B: {e}"),
        }
    });
    eprintln!("a new file on A showed on B after {took:?}");

    // A reader on B that opened the first version keeps reading it whole while A writes
    // a second one and B lists the directory again.
    let mut reader = fs::File::open(b.join("web/page")).unwrap();
    let mut head = vec![0u8; 100 * 1024];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head, v1[..head.len()]);
    fs::write(a.join("web/page"), &v2).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _ = fs::read_dir(b.join("web")).unwrap().count();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(
        rest == v1[head.len()..],
        "an open reader on B saw bytes of another version"
    );
    drop(reader);

    // A new open on B sees the second version whole; every read before is one version.
    let (_, took) = wait_for(SHOWS_WITHIN, "the second version on B", || {
        let bytes = fs::read(b.join("web/page")).unwrap();
        if bytes == v2 {
            Some(())
        } else {
            assert!(
                bytes == v1,
                "B read a mix of two versions ({} bytes)",
                bytes.len()
            );
            None
        }
    });
    eprintln!("a changed file on A showed on B after {took:?}");
    assert_eq!(
        fs::metadata(b.join("web/page")).unwrap().len(),
        v2.len() as u64
    );

    // What A writes and has not closed or synced, B does not see (the file A created
    // shows, empty, as a create on NFS does). The writer is a process of its own: a
    // descriptor this test process held would also be closed, and flushed, whenever
    // another test thread starts a program.
    // (Not a shell: its redirection of a builtin's output closes a copy of the descriptor.)
    let mut writer = Command::new("python3")
        .args([
            "-c",
            "import os, sys, time\n\
             fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n\
             os.write(fd, b'not yet')\n\
             time.sleep(4)\n",
        ])
        .arg(a.join("web/unfinished"))
        .spawn()
        .expect("start the writer");
    std::thread::sleep(Duration::from_millis(2500));
    match fs::read(b.join("web/unfinished")) {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "B sees data A has neither closed nor synced: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }
    assert!(writer.wait().expect("wait for the writer").success());
    wait_for(SHOWS_WITHIN, "the file once A closed it", || {
        fs::read(b.join("web/unfinished"))
            .ok()
            .filter(|v| v == b"not yet")
    });
    fs::remove_file(a.join("web/unfinished")).unwrap();

    // A directory made and a file removed on A.
    fs::create_dir(a.join("web/assets")).unwrap();
    fs::write(a.join("web/assets/style.css"), b"body{}").unwrap();
    fs::remove_file(a.join("web/page")).unwrap();
    wait_for(
        SHOWS_WITHIN,
        "the removal and the new directory on B",
        || {
            let gone = matches!(
                fs::metadata(b.join("web/page")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            );
            let css = fs::read(b.join("web/assets/style.css")).ok();
            (gone && css.as_deref() == Some(b"body{}")).then_some(())
        },
    );
    let names: Vec<String> = fs::read_dir(b.join("web"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["assets"]);

    // And back: what B writes, A opens.
    fs::write(b.join("web/from-b"), b"written on B").unwrap();
    wait_for(SHOWS_WITHIN, "B's file on A", || {
        fs::read(a.join("web/from-b"))
            .ok()
            .filter(|b| b == b"written on B")
    });
    a.unmount();
    b.unmount();
}

#[test]
fn two_hosts_writing_one_object_at_once_keep_one_version_and_set_the_other_aside() {
    if !mount_tests_enabled() {
        return;
    }
    let _serial = serial();
    let store = RemoteTestStore::new("hosts-race");
    let a = host(&store, "a", &[TTL]);
    let b = host(&store, "b", &[TTL]);
    fs::create_dir(a.join("docs")).unwrap();
    fs::write(a.join("docs/report"), b"version 0").unwrap();
    wait_for(SHOWS_WITHIN, "the file on B", || {
        fs::read(b.join("docs/report"))
            .ok()
            .filter(|v| v == b"version 0")
    });

    // Both open the same version for writing; A closes first.
    let mut on_a = fs::OpenOptions::new()
        .write(true)
        .open(a.join("docs/report"))
        .unwrap();
    let mut on_b = fs::OpenOptions::new()
        .write(true)
        .open(b.join("docs/report"))
        .unwrap();
    let from_a = pattern(10, 50_000);
    let from_b = pattern(11, 70_000);
    on_a.write_all(&from_a).unwrap();
    on_b.write_all(&from_b).unwrap();
    on_a.sync_all().expect("A's fsync: A wrote first");
    drop(on_a);
    let err = on_b
        .sync_all()
        .expect_err("B's fsync must fail: A wrote first");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // B is told again at every fsync while it holds the file.
    on_b.seek(SeekFrom::Start(0)).unwrap();
    on_b.write_all(b"more").unwrap();
    let err = on_b.sync_all().expect_err("B's second fsync must fail too");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(close(on_b), Err(libc::EIO), "B's close must fail too");

    // The store holds A's version whole, on both hosts once B closed.
    assert_eq!(fs::read(a.join("docs/report")).unwrap(), from_a);
    wait_for(SHOWS_WITHIN, "A's version on B after B closed", || {
        (fs::read(b.join("docs/report")).unwrap() == from_a).then_some(())
    });
    // B's version is kept, named in B's log and by `ssefs status` on this host.
    let aside = b.log_text();
    let line = aside
        .lines()
        .find(|l| l.contains("docs/report") && l.contains("kept in"))
        .unwrap_or_else(|| panic!("B's log names no kept copy: {aside}"))
        .to_string();
    let path = PathBuf::from(
        line.split("kept in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect("a path after 'kept in'"),
    );
    let kept = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = peek_header(&fs::File::open(&path).unwrap()).expect("an object's header");
    // B's version as it last wrote it (the kept copy follows its writes until it closes).
    let mut last_b = from_b.clone();
    last_b[..4].copy_from_slice(b"more");
    assert_eq!(
        header.size,
        last_b.len() as u64,
        "the kept copy is B's version"
    );
    let status = store.ssefs_ok(&[
        "status",
        "--store",
        &store.url,
        "--endpoint",
        &store.endpoint,
    ]);
    assert!(
        status.contains(&path.display().to_string()),
        "status does not name the kept copy: {status}"
    );
    // Recovered as docs/REMOTE.md says: put back under a new name with any S3 tool, it
    // reads through every mount (an object is bound to its store, not to its name).
    store
        .client()
        .put("docs/report.from-b", kept, WriteMode::Create)
        .unwrap();
    for m in [&a, &b] {
        let (recovered, _) = wait_for(SHOWS_WITHIN, "the recovered copy", || {
            fs::read(m.join("docs/report.from-b")).ok()
        });
        assert!(
            recovered == last_b,
            "the recovered copy is not B's last version"
        );
    }

    // A new name made on both hosts at once: one wins, the other is told at close.
    let mut first = fs::File::create(a.join("docs/new")).unwrap();
    let mut second = fs::File::create(b.join("docs/new")).unwrap();
    first.write_all(b"from A").unwrap();
    second.write_all(b"from B").unwrap();
    first.sync_all().unwrap();
    let err = second
        .sync_all()
        .expect_err("the second creator must be told");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(close(first), Ok(()));
    assert_eq!(close(second), Err(libc::EIO));
    wait_for(SHOWS_WITHIN, "the winner on both hosts", || {
        let on_a = fs::read(a.join("docs/new")).ok()?;
        let on_b = fs::read(b.join("docs/new")).ok()?;
        (on_a == b"from A" && on_b == b"from A").then_some(())
    });
    a.unmount();
    b.unmount();
}

#[test]
fn key_changes_reach_every_mount_within_the_interval_and_audit_records_reach_one_trail() {
    if !mount_tests_enabled() {
        return;
    }
    let _serial = serial();
    let store = RemoteTestStore::new("hosts-keys");
    let key = store.create_cmk();
    // B first: the command below asks the mount registered last on this host (A) to sync
    // at once, so B shows the interval.
    let b = host(&store, "b", &[TTL, "keystore_refresh=2"]);
    let a = host(&store, "a", &[TTL]);
    let bucket = a.join("vault");
    fs::create_dir(&bucket).unwrap();
    set_xattr(&bucket, SSE, "KMS").unwrap();
    set_xattr(&bucket, SSE_KEY_ID, &key).unwrap();
    fs::write(bucket.join("secret"), b"under the CMK").unwrap();
    let (out_a, pid_a) = cat(&a.join("vault/secret"));
    assert!(out_a.status.success());
    let ((out_b, pid_b), _) = wait_for(SHOWS_WITHIN, "the object on B", || {
        let (out, pid) = cat(&b.join("vault/secret"));
        out.status.success().then_some((out, pid))
    });
    assert_eq!(out_b.stdout, b"under the CMK");

    // Two administrators at once, from two "hosts": both grants land.
    let key_for_grants = key.clone();
    let grants: Vec<_> = [5001, 5002]
        .into_iter()
        .map(|uid| {
            let key = key_for_grants.clone();
            let uid = uid.to_string();
            let cmd = {
                let k = store.root_key.to_string_lossy().into_owned();
                let mut c = store.command(&["kms", "grant", &key, "--uid", &uid]);
                c.args(["--operations", "decrypt", "--store", &store.url])
                    .args(["--endpoint", &store.endpoint, "--root-key", &k]);
                c
            };
            std::thread::spawn(move || {
                let mut cmd = cmd;
                cmd.output().expect("run ssefs kms grant")
            })
        })
        .collect();
    for grant in grants {
        let out = grant.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&store.on_store_ok(&["kms", "grants", &key, "--json"])).unwrap();
    let uids: Vec<u64> = listed["Grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["GranteeUid"].as_u64())
        .collect();
    assert!(uids.contains(&5001) && uids.contains(&5002), "{listed}");

    // Disabled from the command line: refused on A at once, on B within its interval.
    let disabled_at = Instant::now();
    store.on_store_ok(&["kms", "disable", &key]);
    let (out, _) = cat(&a.join("vault/secret"));
    assert!(!out.status.success(), "A still reads under a disabled CMK");
    let (_, took) = wait_for(Duration::from_secs(2 + 4), "the refusal on B", || {
        let (out, _) = cat(&b.join("vault/secret"));
        (!out.status.success()).then_some(())
    });
    eprintln!(
        "the disabled CMK was refused on B {took:?} after the check started ({:?} after \
         the disable began)",
        disabled_at.elapsed()
    );
    assert!(
        b.log_text().contains("took the keystore as changed"),
        "{}",
        b.log_text()
    );

    // Both mounts' records end up in the one trail (after their next sync).
    a.unmount();
    b.unmount();
    let audit: serde_json::Value =
        serde_json::from_str(&store.on_store_ok(&["kms", "audit", "--key", &key, "--json"]))
            .unwrap();
    let records = audit["Records"].as_array().unwrap();
    let decrypted_by = |pid: u32| {
        records.iter().any(|r| {
            r["Pid"].as_u64() == Some(u64::from(pid))
                && r["Operation"] == "Decrypt"
                && r["Result"] == "Success"
        })
    };
    assert!(decrypted_by(pid_a), "A's Decrypt is missing: {audit}");
    assert!(decrypted_by(pid_b), "B's Decrypt is missing: {audit}");
    let refused = records
        .iter()
        .filter(|r| r["Operation"] == "Decrypt" && r["Result"] != "Success")
        .count();
    assert!(
        refused >= 2,
        "both hosts' refusals are in the trail: {audit}"
    );
    let verified = store.on_store_ok(&["kms", "audit", "--verify"]);
    assert!(!verified.is_empty());
}

#[test]
fn a_rotation_while_two_hosts_write_reaches_both_and_loses_nothing() {
    if !mount_tests_enabled() {
        return;
    }
    let _serial = serial();
    let store = RemoteTestStore::new("hosts-rotate");
    let a = host(&store, "a", &[TTL, "keystore_refresh=2"]);
    let b = host(&store, "b", &[TTL, "keystore_refresh=2"]);
    fs::create_dir(a.join("logs")).unwrap();
    wait_for(SHOWS_WITHIN, "the bucket on B", || {
        b.join("logs").is_dir().then_some(())
    });
    let writer = |root: PathBuf, tag: &'static str| {
        std::thread::spawn(move || {
            let mut written = Vec::new();
            for i in 0..30 {
                let name = format!("{tag}-{i}");
                let body = pattern(i + if tag == "a" { 0 } else { 1000 }, 20_000);
                fs::write(root.join("logs").join(&name), &body).unwrap();
                written.push((name, body));
                std::thread::sleep(Duration::from_millis(50));
            }
            written
        })
    };
    let wa = writer(a.path().to_path_buf(), "a");
    let wb = writer(b.path().to_path_buf(), "b");
    std::thread::sleep(Duration::from_millis(300));
    store.on_store_ok(&["rotate-master"]);
    let mut all = wa.join().unwrap();
    all.extend(wb.join().unwrap());
    // Every file reads back whole on both hosts.
    for (name, body) in &all {
        for m in [&a, &b] {
            let path = m.join("logs").join(name);
            let (got, _) = wait_for(SHOWS_WITHIN, &format!("{}", path.display()), || {
                fs::read(&path).ok()
            });
            assert!(&got == body, "{} differs", path.display());
            // Under the master key (the bucket's rule), also what B wrote into A's bucket.
            assert!(key_version(&path) >= 1);
        }
    }
    // Both hosts take the new master key for new objects within their interval.
    for (m, tag) in [(&a, "a"), (&b, "b")] {
        wait_for(
            Duration::from_secs(8),
            &format!("the new master key on {tag}"),
            || {
                let path = m.join(format!("logs/after-{tag}"));
                fs::write(&path, b"after").unwrap();
                (key_version(&path) == 2).then_some(())
            },
        );
    }
    a.unmount();
    b.unmount();
}

#[test]
fn a_host_killed_while_another_goes_on_loses_only_what_it_had_not_synced() {
    if !mount_tests_enabled() {
        return;
    }
    let _serial = serial();
    let store = RemoteTestStore::new("hosts-kill");
    let a = host(&store, "a", &[TTL]);
    let b = host(&store, "b", &[TTL]);
    let c = host(&store, "c", &[TTL]);
    fs::create_dir(a.join("data")).unwrap();
    let body = pattern(7, 123_456);
    let mut file = fs::File::create(a.join("data/synced")).unwrap();
    file.write_all(&body).unwrap();
    file.sync_all().unwrap();
    // A mounted first and alone; it learns of the others from their heartbeats.
    assert!(a.log_text().contains("no other host has the store mounted"));
    wait_for(Duration::from_secs(12), "A to find the other hosts", || {
        a.log_text()
            .contains("another host has the store mounted")
            .then_some(())
    });
    // Killed with the file still open: what fsync returned for is in the store.
    a.kill9();
    drop(file);
    for m in [&b, &c] {
        let (got, _) = wait_for(SHOWS_WITHIN, "the synced file", || {
            fs::read(m.join("data/synced")).ok()
        });
        assert!(got == body);
    }
    // The others go on writing and reading each other's files.
    fs::write(b.join("data/from-b"), b"b").unwrap();
    fs::write(c.join("data/from-c"), b"c").unwrap();
    wait_for(SHOWS_WITHIN, "each other's files", || {
        let on_b = fs::read(b.join("data/from-c")).ok()?;
        let on_c = fs::read(c.join("data/from-b")).ok()?;
        (on_b == b"c" && on_c == b"b").then_some(())
    });
    b.unmount();
    c.unmount();
}

#[test]
fn retiring_a_master_key_runs_under_one_lease_and_waits_for_every_host() {
    if !mount_tests_enabled() {
        return;
    }
    let _serial = serial();
    let store = RemoteTestStore::new("hosts-retire");
    let a = host(&store, "a", &[TTL, "keystore_refresh=2"]);
    fs::create_dir(a.join("old")).unwrap();
    for i in 0..5 {
        fs::write(a.join(format!("old/{i}")), pattern(i, 10_000)).unwrap();
    }
    assert_eq!(key_version(&a.join("old/0")), 1);
    store.on_store_ok(&["rotate-master"]);

    // Another host holds the rotation lease: rewrap is refused (exit 6), naming it.
    let client = store.client();
    let held = serde_json::json!({
        "host": "other-host", "pid": 4242, "what": "rewrap", "term": 3, "taken": 0
    });
    client
        .put(
            ".ssefs/leases/rotation",
            held.to_string().into_bytes(),
            WriteMode::Create,
        )
        .unwrap();
    let key = store.root_key.to_string_lossy().into_owned();
    let rewrap = |store: &RemoteTestStore| {
        store
            .command(&[
                "rewrap",
                "--store",
                &store.url,
                "--endpoint",
                &store.endpoint,
            ])
            .args(["--root-key", &key])
            .output()
            .expect("run ssefs rewrap")
    };
    let out = rewrap(&store);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other-host pid 4242"), "{stderr}");
    // Not renewed for its term: taken over, and removed when done.
    std::thread::sleep(Duration::from_secs(5));
    let out = rewrap(&store);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        client
            .head(".ssefs/leases/rotation")
            .unwrap_err()
            .is_not_found()
    );

    // A live mount that has not taken the newest master key holds a retirement back.
    let stale = serde_json::json!({
        "host": "stale-host", "pid": 7, "version": "0", "mountpoint": "/m",
        "started": 0, "master_version": 1
    });
    client
        .put(
            ".ssefs/hosts/stale-host-7-0",
            stale.to_string().into_bytes(),
            WriteMode::Overwrite,
        )
        .unwrap();
    let retire = |store: &RemoteTestStore| {
        store
            .command(&["rotate-master", "--retire", "1", "--store", &store.url])
            .args(["--endpoint", &store.endpoint, "--root-key", &key])
            .env("SSEFS_HOSTS_WAIT", "3")
            .output()
            .expect("run ssefs rotate-master")
    };
    let out = retire(&store);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("stale-host pid 7") && stderr.contains("nothing was retired"),
        "{stderr}"
    );
    client.delete(".ssefs/hosts/stale-host-7-0").unwrap();
    // A's mount takes version 2 within its interval and says so in its heartbeat; then the
    // retirement runs, and every file still reads on A.
    let (out, _) = wait_for(Duration::from_secs(30), "the retirement", || {
        let out = retire(&store);
        out.status.success().then_some(out)
    });
    assert!(out.status.success());
    for i in 0..5 {
        let path = a.join(format!("old/{i}"));
        let (got, _) = wait_for(SHOWS_WITHIN, "a rewrapped file", || fs::read(&path).ok());
        assert!(got == pattern(i, 10_000));
        assert_eq!(key_version(&path), 2);
    }
    fs::write(a.join("old/new"), b"new").unwrap();
    assert_eq!(key_version(&a.join("old/new")), 2);
    a.unmount();
}

//! The remote-store client against a real S3 server (SeaweedFS, started by the tests):
//! conditional writes, ranged reads, multipart uploads, paginated listings, copies, and
//! bounded errors when the server is gone or the credentials are wrong. And the harness's
//! promise: no server outlives the test process that started it.

mod support;

use ssefs::store::remote::{
    Credentials, Endpoint, RemoteConfig, RemoteError, RemoteStore, StoreUrl, Version, WriteMode,
};
use std::time::{Duration, Instant};
use support::s3::S3Server;

fn client(name: &str) -> RemoteStore {
    S3Server::shared().client(&S3Server::unique_prefix(name))
}

#[test]
fn the_server_starts_and_reports_how_long_it_took() {
    let server = S3Server::shared();
    eprintln!("weed server answered S3 after {:?}", server.started_in());
    assert!(server.started_in() < Duration::from_secs(60));
}

#[test]
fn a_conditional_create_never_replaces_an_object() {
    let s3 = client("create");
    let first = s3
        .put("marker", b"one".to_vec(), WriteMode::Create)
        .unwrap();
    let err = s3
        .put("marker", b"two".to_vec(), WriteMode::Create)
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    let (body, version) = s3.get("marker").unwrap();
    assert_eq!(body, b"one");
    assert_eq!(version.etag, first.etag);
}

#[test]
fn if_match_replaces_only_the_version_read() {
    let s3 = client("match");
    let v1 = s3
        .put("db", b"version 1".to_vec(), WriteMode::Create)
        .unwrap();
    assert!(v1.etag.is_some(), "the server gave no ETag: {v1:?}");
    let v2 = s3
        .put("db", b"version 2".to_vec(), WriteMode::Replace(v1.clone()))
        .unwrap();
    assert_ne!(v1.etag, v2.etag);
    // A second writer that read version 1 loses.
    let err = s3
        .put("db", b"stale".to_vec(), WriteMode::Replace(v1))
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(s3.get("db").unwrap().0, b"version 2");
    // If-Match on a missing object is a conflict too, never a create.
    let err = s3
        .put("absent", b"x".to_vec(), WriteMode::Replace(v2))
        .unwrap_err();
    assert!(err.is_conflict() || err.is_not_found(), "{err:?}");
    assert!(s3.head("absent").unwrap_err().is_not_found());
}

#[test]
fn ranged_gets_return_exactly_the_range() {
    let s3 = client("range");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    s3.put("obj", body.clone(), WriteMode::Overwrite).unwrap();
    for range in [0..1, 0..4096, 4096..8192, 99_000..100_000, 12_345..67_890] {
        let got = s3.get_range("obj", range.clone()).unwrap();
        assert_eq!(
            got,
            &body[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert!(s3.get_range("obj", 10..10).unwrap().is_empty());
    let info = s3.head("obj").unwrap();
    assert_eq!(info.size, 100_000);
    assert_eq!(info.key, "obj");
    assert!(s3.get_range("missing", 0..10).unwrap_err().is_not_found());
}

#[test]
fn a_body_above_the_part_size_goes_up_in_parts_and_comes_back_whole() {
    let s3 = client("multipart");
    let part = s3.config().part_size;
    let len = 2 * part + 12_345;
    let body: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    let version = s3.put_multipart("big", &mut body.as_slice()).unwrap();
    let info = s3.head("big").unwrap();
    assert_eq!(info.size, len as u64);
    assert_eq!(info.version.etag, version.etag);
    let (back, _) = s3.get("big").unwrap();
    assert!(
        back == body,
        "the multipart object differs from what was uploaded"
    );
    let tail = s3.get_range("big", (len - 100) as u64..len as u64).unwrap();
    assert_eq!(tail, &body[len - 100..]);
}

#[test]
fn listings_page_through_many_keys_with_directories_apart() {
    let s3 = client("list");
    let count = 250;
    for i in 0..count {
        s3.put(
            &format!("d/f{i:04}"),
            vec![b'x'; i % 3],
            WriteMode::Overwrite,
        )
        .unwrap();
    }
    for sub in ["sub1", "sub2"] {
        s3.put(
            &format!("d/{sub}/inner"),
            b"i".to_vec(),
            WriteMode::Overwrite,
        )
        .unwrap();
    }
    let mut pages = 0;
    let mut keys = Vec::new();
    let mut dirs = Vec::new();
    let mut token = None;
    loop {
        let page = s3.list_page("d", token, 100).unwrap();
        pages += 1;
        assert!(
            page.objects.len() + page.dirs.len() <= 100,
            "page of {}",
            page.objects.len()
        );
        keys.extend(page.objects.into_iter().map(|o| o.key));
        dirs.extend(page.dirs);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 10, "the listing does not end");
    }
    assert!(pages >= 3, "{pages} pages for {count} keys of 100 a page");
    let expected: Vec<String> = (0..count).map(|i| format!("d/f{i:04}")).collect();
    keys.sort();
    assert_eq!(keys, expected);
    dirs.sort();
    assert_eq!(dirs, ["d/sub1", "d/sub2"]);

    let whole = s3.list_dir("d").unwrap();
    assert_eq!(whole.objects.len(), count);
    assert_eq!(whole.dirs.len(), 2);
    assert_eq!(s3.list_all("d").unwrap().len(), count + 2);
    assert!(s3.list_dir("nothing-here").unwrap().objects.is_empty());
}

#[test]
fn copies_and_deletes_work_and_a_missing_object_is_not_found() {
    let s3 = client("copy");
    s3.put("a", b"payload".to_vec(), WriteMode::Overwrite)
        .unwrap();
    s3.copy("a", "b").unwrap();
    assert_eq!(s3.get("b").unwrap().0, b"payload");
    s3.delete("a").unwrap();
    assert!(s3.get("a").unwrap_err().is_not_found());
    s3.delete("a").unwrap();
    let err = s3.copy("a", "c").unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let msg = s3.get("a").unwrap_err().to_string();
    assert!(
        msg.contains("s3://ssefs-test/copy-") && msg.contains("/a"),
        "{msg}"
    );
}

#[test]
fn wrong_credentials_are_denied_not_retried_forever() {
    let server = S3Server::shared();
    let url = StoreUrl::parse(&S3Server::store_url("denied")).unwrap();
    let mut config = RemoteConfig::new(url, Endpoint::parse(&server.endpoint()).unwrap());
    config.retry_timeout = Duration::from_secs(2);
    let wrong = Credentials::new(support::s3::ACCESS_KEY, "not-the-secret", "test");
    let s3 = RemoteStore::connect(config, &wrong).unwrap();
    let started = Instant::now();
    let err = s3
        .put("x", b"x".to_vec(), WriteMode::Overwrite)
        .unwrap_err();
    assert!(matches!(err, RemoteError::Denied { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_server_stopped_mid_test_gives_a_bounded_error() {
    let mut server = S3Server::start();
    let s3 = server.client_with("stopped", Duration::from_secs(2));
    let version: Version = s3.put("k", b"v".to_vec(), WriteMode::Create).unwrap();
    assert_eq!(s3.get("k").unwrap().1.etag, version.etag);
    server.stop();
    for op in ["get", "put", "list"] {
        let started = Instant::now();
        let err = match op {
            "get" => s3.get("k").unwrap_err(),
            "put" => s3
                .put("k", b"w".to_vec(), WriteMode::Replace(version.clone()))
                .unwrap_err(),
            _ => s3.list_dir("").unwrap_err(),
        };
        let took = started.elapsed();
        assert!(
            matches!(
                err,
                RemoteError::Unreachable { .. } | RemoteError::TimedOut { .. }
            ),
            "{op}: {err:?}"
        );
        assert!(took < Duration::from_secs(30), "{op} took {took:?}");
        assert!(err.to_string().contains("127.0.0.1"), "{op}: {err}");
    }
}

/// Run by `a_server_is_gone_when_its_test_process_dies`: starts a server, says where it
/// is, and aborts without running any destructor.
#[test]
#[ignore = "run only as the child of a_server_is_gone_when_its_test_process_dies"]
fn child_starts_a_server_and_aborts() {
    if std::env::var_os("SSEFS_S3_CHILD").is_none() {
        return;
    }
    let server = S3Server::start();
    println!("SERVER {} {}", server.pid(), server.dir().display());
    std::process::abort();
}

#[test]
fn a_server_is_gone_when_its_test_process_dies() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_a_server_and_aborts",
            "--ignored",
            "--nocapture",
        ])
        .env("SSEFS_S3_CHILD", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SERVER "))
        .unwrap_or_else(|| {
            panic!(
                "the child said nothing: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let (pid, dir) = line.split_once(' ').unwrap();
    let pid: i32 = pid.parse().unwrap();
    assert!(!out.status.success(), "the child was meant to abort");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        let dir_left = std::path::Path::new(dir).exists();
        if !alive && !dir_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after its test process died, server {pid} alive: {alive}, directory {dir} left: {dir_left}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dropping_a_server_kills_it_and_removes_its_directory() {
    let server = S3Server::start();
    let (pid, dir) = (server.pid(), server.dir().to_path_buf());
    assert!(dir.is_dir());
    let sockets = server.grpc_sockets();
    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let left: Vec<_> = sockets.iter().filter(|s| s.exists()).collect();
    assert!(left.is_empty(), "sockets left behind: {left:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server {pid} still running"
    );
}

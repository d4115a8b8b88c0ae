//! Runs `scripts/tour.sh`, the tour the README shows, against the built binary: it must finish,
//! show the encryption attribute and leave no mount behind.

mod support;

use std::process::{Command, Stdio};
use support::mount::{DAEMON_TIMEOUT, mount_entries, mount_tests_enabled, wait_timeout};
use support::shell::describe;

#[test]
fn the_tour_script_works() {
    if !mount_tests_enabled() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tour.sh");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tour.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("bash")
        .arg(script)
        .env("SSEFS", support::cli::SSEFS)
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("run tour.sh");
    let status = match wait_timeout(&mut child, DAEMON_TIMEOUT * 6) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tour.sh did not finish:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.success(),
        "tour.sh failed ({}):\n{output}",
        describe(&status)
    );
    assert!(
        output.contains("user.oss.server-side-encryption=\"AES256\""),
        "tour did not show AES256:\n{output}"
    );
    assert!(output.contains("Tour complete."), "{output}");
    let leftover: Vec<_> = mount_entries()
        .into_iter()
        .filter(|m| m.mountpoint.starts_with(dir.path()))
        .collect();
    assert!(leftover.is_empty(), "tour left mounts: {leftover:?}");
    let left_files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "tour.log")
        .collect();
    assert!(left_files.is_empty(), "tour left files: {left_files:?}");
}

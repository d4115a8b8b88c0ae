//! Descriptors through a real mount: under a small open-file limit (soft below hard, which the
//! daemon raises), the daemon holds more files open than half the limit and creates and serves
//! more files than the limit in one directory.

mod support;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use support::mount::{Mount, TestStore, mount_tests_enabled};

/// The hard open-file limit the daemon runs under.
const HARD: u64 = 1024;
/// The soft limit it starts with.
const SOFT: u64 = 512;

fn set_open_file_limit(soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn the_daemon_holds_many_files_under_a_small_descriptor_limit() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    set_open_file_limit(SOFT, HARD);
    let mount = Mount::new(&store, &[]);
    // This process holds the files open: it needs the full limit itself.
    set_open_file_limit(HARD, HARD);
    let dir = mount.bucket("many");

    // More files than the limit in one directory, each written and read back.
    let count = HARD as usize + 100;
    for i in 0..count {
        let mut f = File::create(dir.join(format!("f{i}"))).unwrap();
        write!(f, "file {i}").unwrap();
    }
    let mut listed = fs::read_dir(&dir).unwrap().count();
    assert_eq!(listed, count);
    for i in (0..count).rev() {
        let path = dir.join(format!("f{i}"));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            format!("file {i}").len() as u64
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("file {i}"));
    }

    // More than half the limit held open at once, each read and written while all are open.
    let held = HARD as usize / 2 + 100;
    let mut files: Vec<File> = (0..held)
        .map(|i| {
            File::options()
                .read(true)
                .write(true)
                .open(dir.join(format!("f{i}")))
                .unwrap_or_else(|e| panic!("open f{i} with {i} files open: {e}"))
        })
        .collect();
    for (i, f) in files.iter_mut().enumerate() {
        let mut first = [0u8; 4];
        f.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"file");
        f.write_all_at(b"FILE", 0).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            format!("file {i}").len() as u64
        );
    }
    drop(files);
    for i in 0..held {
        let text = fs::read_to_string(dir.join(format!("f{i}"))).unwrap();
        assert_eq!(text, format!("FILE {i}"));
    }

    // Renamed files are still found once their descriptors are long gone.
    fs::create_dir(dir.join("sub")).unwrap();
    for i in 0..10 {
        fs::rename(
            dir.join(format!("f{i}")),
            dir.join("sub").join(format!("g{i}")),
        )
        .unwrap();
    }
    listed = fs::read_dir(dir.join("sub")).unwrap().count();
    assert_eq!(listed, 10);
    for i in 0..10 {
        let text = fs::read_to_string(dir.join("sub").join(format!("g{i}"))).unwrap();
        assert_eq!(text, format!("FILE {i}"));
    }
    assert!(mount.unmount().success());
}

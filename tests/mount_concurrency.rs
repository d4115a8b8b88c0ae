//! Concurrency through a real mount: eight threads writing and reading their own files, and
//! eight threads sharing one file (disjoint writes, concurrent reads of stable regions).

mod support;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};
use std::thread;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::TestRng;
use support::sys::read_full;

const THREADS: usize = 8;

/// The bytes thread `t` owns: deterministic, different per thread.
fn thread_data(t: usize, len: usize) -> Vec<u8> {
    TestRng::new(0xC0FFEE + t as u64).bytes(len)
}

#[test]
fn threads_write_and_read_their_own_files() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("own-files");
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let path = bucket.join(format!("t{t}"));
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<(), String> {
                let data = thread_data(t, 1_500_000 + t * 1_234);
                let mut rng = TestRng::new(t as u64);
                barrier.wait();
                for round in 0..3 {
                    let mut f = fs::File::create(&path).map_err(|e| format!("create: {e}"))?;
                    let mut written = 0;
                    while written < data.len() {
                        let n = (1 + rng.below(200_000) as usize).min(data.len() - written);
                        f.write_all(&data[written..written + n])
                            .map_err(|e| format!("round {round} write: {e}"))?;
                        written += n;
                    }
                    drop(f);
                    let mut back = Vec::new();
                    fs::File::open(&path)
                        .and_then(|mut f| f.read_to_end(&mut back))
                        .map_err(|e| format!("round {round} read: {e}"))?;
                    if back != data {
                        return Err(format!(
                            "round {round}: read {} bytes, differs from the {} written",
                            back.len(),
                            data.len()
                        ));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .enumerate()
        .filter_map(|(t, h)| match h.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("thread {t}: {e}")),
            Err(_) => Some(format!("thread {t} panicked")),
        })
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    mount.remount();
    for t in 0..THREADS {
        let got = fs::read(mount.join(format!("own-files/t{t}"))).unwrap();
        assert!(
            got == thread_data(t, 1_500_000 + t * 1_234),
            "t{t} after remount"
        );
    }
}

#[test]
fn threads_share_one_file() {
    if !mount_tests_enabled() {
        return;
    }
    const REGION: usize = 300_001; // not block aligned: neighbours share blocks
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("shared");
    let path = bucket.join("one-file");
    // A stable prefix that readers check while writers fill the regions after it.
    let prefix = thread_data(99, 500_000);
    fs::write(&path, &prefix).unwrap();

    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let path = path.clone();
            let prefix = prefix.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<(), String> {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("open: {e}"))?;
                let data = thread_data(t, REGION);
                let base = (prefix.len() + t * REGION) as u64;
                let mut rng = TestRng::new(1000 + t as u64);
                barrier.wait();
                let mut done = 0;
                while done < REGION {
                    let n = (1 + rng.below(40_000) as usize).min(REGION - done);
                    f.write_all_at(&data[done..done + n], base + done as u64)
                        .map_err(|e| format!("write at {}: {e}", base + done as u64))?;
                    done += n;
                    // Read a random piece of the stable prefix in between.
                    let off = rng.below(prefix.len() as u64 - 10_000) as usize;
                    let mut buf = vec![0u8; 10_000];
                    let got = f
                        .read_at(&mut buf, off as u64)
                        .map_err(|e| format!("read prefix at {off}: {e}"))?;
                    if buf[..got] != prefix[off..off + got] || got == 0 {
                        return Err(format!("prefix read at {off} wrong ({got} bytes)"));
                    }
                }
                // Own region reads back through this handle.
                let mut back = vec![0u8; REGION];
                let mut reader = fs::File::open(&path).map_err(|e| format!("reopen: {e}"))?;
                std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(base))
                    .map_err(|e| format!("seek: {e}"))?;
                let n = read_full(&mut reader, &mut back).map_err(|e| format!("read: {e}"))?;
                if n != REGION || back != data {
                    return Err(format!("own region at {base} reads back wrong ({n} bytes)"));
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .enumerate()
        .filter_map(|(t, h)| match h.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("thread {t}: {e}")),
            Err(_) => Some(format!("thread {t} panicked")),
        })
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    let mut expected = prefix.clone();
    for t in 0..THREADS {
        expected.extend_from_slice(&thread_data(t, REGION));
    }
    let check = |got: Vec<u8>, when: &str| {
        assert_eq!(got.len(), expected.len(), "size {when}");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            panic!(
                "shared file differs {when} at offset {i} (region of thread {})",
                (i.saturating_sub(prefix.len())) / REGION
            );
        }
    };
    check(fs::read(&path).unwrap(), "after the threads");
    mount.remount();
    check(
        fs::read(mount.join("shared/one-file")).unwrap(),
        "after remount",
    );
}

//! Tests of the bounded descriptor cache without a kernel: with room for few `O_PATH`
//! descriptors, every known inode stays reachable (by a remembered name, after renames and
//! links), open objects hold no extra descriptor, and the cache never grows past its limit.

use super::tests::{ROOT, fixture};
use super::*;

const LIMIT: usize = 16;
const RW: i32 = libc::O_RDWR;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Creates `n` empty objects in `dir` (closed again) and returns their inode numbers.
fn make_files(fs: &BucketFs, dir: u64, prefix: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let (attr, fh) = fs.create(ROOT, dir, os(&name), 0o644, RW).unwrap();
            fs.write(fh, 0, name.as_bytes()).unwrap();
            fs.release(fh).unwrap();
            attr.ino
        })
        .collect()
}

/// Uses many other inodes, so earlier ones lose their cached descriptor.
fn churn(fs: &BucketFs, inos: &[u64]) {
    for &ino in inos {
        fs.getattr(ino).unwrap();
    }
    assert!(fs.path_fds_held() <= LIMIT);
}

#[test]
fn every_known_inode_stays_reachable_with_few_descriptors() {
    let f = fixture();
    f.fs.limit_path_fds(LIMIT);
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap().ino;
    let deep = f.fs.mkdir(ROOT, b, os("a"), 0o755).unwrap().ino;
    let deep = f.fs.mkdir(ROOT, deep, os("b"), 0o755).unwrap().ino;
    let files = make_files(&f.fs, deep, "f", 10 * LIMIT);
    assert!(f.fs.path_fds_held() <= LIMIT);
    for (i, &ino) in files.iter().enumerate() {
        let attr = f.fs.getattr(ino).unwrap();
        assert_eq!(attr.size, format!("f{i}").len() as u64);
        let fh = f.fs.open(ROOT, ino, libc::O_RDONLY).unwrap();
        assert_eq!(f.fs.read(fh, 0, 100).unwrap(), format!("f{i}").as_bytes());
        f.fs.release(fh).unwrap();
        assert!(f.fs.path_fds_held() <= LIMIT);
    }
    // A lookup of a known inode finds the same entry.
    assert_eq!(f.fs.lookup(deep, os("f3")).unwrap().ino, files[3]);
}

#[test]
fn open_objects_need_no_descriptor_of_their_own() {
    let f = fixture();
    f.fs.limit_path_fds(LIMIT);
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap().ino;
    let files = make_files(&f.fs, b, "f", 8 * LIMIT);
    let handles: Vec<u64> = files
        .iter()
        .map(|&ino| f.fs.open(ROOT, ino, RW).unwrap())
        .collect();
    assert!(f.fs.path_fds_held() <= LIMIT);
    for (i, (&ino, &fh)) in files.iter().zip(&handles).enumerate() {
        f.fs.write(fh, 0, b"new").unwrap();
        let attr = f.fs.getattr(ino).unwrap();
        assert_eq!(attr.size, format!("f{i}").len().max(3) as u64);
        f.fs.setattr(
            ROOT,
            ino,
            SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .unwrap();
    }
    // Only the directory's (and nothing per open object) is cached.
    assert!(f.fs.path_fds_held() <= 1, "{}", f.fs.path_fds_held());
    for fh in handles {
        f.fs.release(fh).unwrap();
    }
    for &ino in &files {
        assert_eq!(f.fs.getattr(ino).unwrap().perm, 0o600);
    }
}

#[test]
fn renamed_linked_and_moved_nodes_are_found_by_their_new_names() {
    let f = fixture();
    f.fs.limit_path_fds(LIMIT);
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap().ino;
    let other = f.fs.mkdir(ROOT, ROOT_INO, os("other"), 0o755).unwrap().ino;
    let dir = f.fs.mkdir(ROOT, b, os("dir"), 0o755).unwrap().ino;
    let inner = make_files(&f.fs, dir, "in", 1)[0];
    let moved = make_files(&f.fs, b, "moved", 1)[0];
    let linked = make_files(&f.fs, b, "linked", 1)[0];
    let filler = make_files(&f.fs, other, "x", 4 * LIMIT);

    f.fs.rename(b, os("moved0"), other, os("renamed"), RenameMode::Replace)
        .unwrap();
    f.fs.link(linked, other, os("second")).unwrap();
    f.fs.unlink(b, os("linked0")).unwrap();
    f.fs.rename(b, os("dir"), other, os("dir2"), RenameMode::Replace)
        .unwrap();
    churn(&f.fs, &filler);

    assert_eq!(f.fs.getattr(moved).unwrap().size, 6);
    assert_eq!(f.fs.getattr(linked).unwrap().nlink, 1);
    let fh = f.fs.open(ROOT, inner, libc::O_RDONLY).unwrap();
    assert_eq!(f.fs.read(fh, 0, 10).unwrap(), b"in0");
    f.fs.release(fh).unwrap();
    assert!(names_of(&f.fs, dir).contains(&"in0".to_string()));
}

#[test]
fn an_unlinked_open_object_stays_usable_without_its_descriptor() {
    let f = fixture();
    f.fs.limit_path_fds(LIMIT);
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap().ino;
    let (attr, fh) = f.fs.create(ROOT, b, os("gone"), 0o644, RW).unwrap();
    f.fs.write(fh, 0, b"kept").unwrap();
    f.fs.unlink(b, os("gone")).unwrap();
    let filler = make_files(&f.fs, b, "x", 4 * LIMIT);
    churn(&f.fs, &filler);
    assert_eq!(f.fs.getattr(attr.ino).unwrap().nlink, 0);
    assert_eq!(f.fs.read(fh, 0, 10).unwrap(), b"kept");
    f.fs.release(fh).unwrap();
    // Gone and closed: nothing leads to it any more.
    churn(&f.fs, &filler);
    assert_eq!(f.fs.getattr(attr.ino).unwrap_err().errno(), libc::ESTALE);
}

fn names_of(fs: &BucketFs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).unwrap();
    let entries = fs.readdir(fh, 0).unwrap();
    fs.releasedir(fh).unwrap();
    entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect()
}

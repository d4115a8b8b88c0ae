//! The POSIX namespace inside buckets through a real mount: renames (plain, over a file, of
//! directories, across buckets, NOREPLACE/EXCHANGE), unlink while open, hard links, symlinks,
//! FIFOs, chmod/chown/utimens, readdir, statfs and `user.*` xattrs.

mod support;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::thread;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::shell::{as_nobody, q, sh, sh_output};
use support::sys::{assert_errno, check_rc, cpath, mkfifo, readdir_all, set_times};

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: both strings are valid NUL-terminated paths for the duration of the call.
    check_rc(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn rename_over_files_of_directories_and_across_buckets() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let one = mount.bucket("bucket-one");
    let two = mount.bucket("bucket-two");

    // Over an existing file: the target takes the source's content, the source name is gone.
    fs::write(one.join("old"), b"old contents that are longer").unwrap();
    fs::write(one.join("new"), b"new contents").unwrap();
    fs::rename(one.join("new"), one.join("old")).unwrap();
    assert_eq!(read(&one.join("old")), b"new contents");
    assert_errno(
        fs::metadata(one.join("new")),
        libc::ENOENT,
        "stat renamed-away source",
    );

    // A directory with files inside, nested.
    fs::create_dir_all(one.join("dir/sub")).unwrap();
    fs::write(one.join("dir/a"), vec![7u8; 70_000]).unwrap();
    fs::write(one.join("dir/sub/b"), b"bee").unwrap();
    fs::rename(one.join("dir"), one.join("moved")).unwrap();
    assert_eq!(read(&one.join("moved/a")), vec![7u8; 70_000]);
    assert_eq!(read(&one.join("moved/sub/b")), b"bee");
    assert_errno(
        fs::metadata(one.join("dir")),
        libc::ENOENT,
        "stat old dir name",
    );
    fs::rename(one.join("moved/sub"), one.join("sub-up")).unwrap();
    assert_eq!(read(&one.join("sub-up/b")), b"bee");

    // Across buckets, for a file and for a directory.
    fs::rename(one.join("old"), two.join("from-one")).unwrap();
    assert_eq!(read(&two.join("from-one")), b"new contents");
    fs::rename(one.join("moved"), two.join("dir-from-one")).unwrap();
    assert_eq!(read(&two.join("dir-from-one/a")), vec![7u8; 70_000]);

    mount.remount();
    assert_eq!(read(&mount.join("bucket-two/from-one")), b"new contents");
    assert_eq!(
        read(&mount.join("bucket-two/dir-from-one/a")),
        vec![7u8; 70_000]
    );
    assert_eq!(read(&mount.join("bucket-one/sub-up/b")), b"bee");
    assert_errno(
        fs::metadata(mount.join("bucket-one/old")),
        libc::ENOENT,
        "stat moved file after remount",
    );
}

#[test]
fn renameat2_noreplace_and_exchange() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("flags");
    fs::write(b.join("x"), b"xxx").unwrap();
    fs::write(b.join("y"), b"yyyyyy").unwrap();

    assert_errno(
        renameat2(&b.join("x"), &b.join("y"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto an existing file",
    );
    assert_eq!(read(&b.join("x")), b"xxx", "x untouched by failed rename");
    assert_eq!(
        read(&b.join("y")),
        b"yyyyyy",
        "y untouched by failed rename"
    );
    renameat2(&b.join("x"), &b.join("z"), libc::RENAME_NOREPLACE)
        .expect("RENAME_NOREPLACE onto a free name");
    assert_eq!(read(&b.join("z")), b"xxx");

    renameat2(&b.join("z"), &b.join("y"), libc::RENAME_EXCHANGE).expect("RENAME_EXCHANGE");
    assert_eq!(read(&b.join("z")), b"yyyyyy");
    assert_eq!(read(&b.join("y")), b"xxx");
    assert_eq!(fs::metadata(b.join("z")).unwrap().len(), 6);

    fs::create_dir(b.join("d")).unwrap();
    fs::write(b.join("d/inner"), b"in d").unwrap();
    renameat2(&b.join("d"), &b.join("y"), libc::RENAME_EXCHANGE).expect("exchange dir and file");
    assert_eq!(read(&b.join("y/inner")), b"in d");
    assert_eq!(read(&b.join("d")), b"xxx");

    mount.remount();
    assert_eq!(read(&mount.join("flags/y/inner")), b"in d");
    assert_eq!(read(&mount.join("flags/d")), b"xxx");
    assert_eq!(read(&mount.join("flags/z")), b"yyyyyy");
}

#[test]
fn unlinked_file_stays_readable_through_an_open_handle() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let b = mount.bucket("unlink");
    let path = b.join("doomed");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&path, &data).unwrap();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    fs::remove_file(&path).unwrap();
    assert_errno(fs::metadata(&path), libc::ENOENT, "stat after unlink");
    assert!(!readdir_all(&b).unwrap().contains(&"doomed".to_string()));

    let mut got = Vec::new();
    file.read_to_end(&mut got).expect("read unlinked file");
    assert!(got == data, "unlinked file content differs");
    file.write_all(b"more").expect("write to unlinked file");
    file.seek(SeekFrom::Start(199_998)).unwrap();
    let mut tail = [0u8; 6];
    file.read_exact(&mut tail)
        .expect("read back write to unlinked file");
    assert_eq!(
        &tail,
        &[data[199_998], data[199_999], b'm', b'o', b'r', b'e']
    );

    // A new file may take the name while the old one is still open.
    fs::write(&path, b"replacement").unwrap();
    drop(file);
    assert_eq!(read(&path), b"replacement");
}

#[test]
fn hard_links_share_content_and_count() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("links");
    fs::create_dir(b.join("sub")).unwrap();
    fs::write(b.join("orig"), b"shared").unwrap();
    fs::hard_link(b.join("orig"), b.join("sub/alias")).unwrap();
    let (m1, m2) = (
        fs::metadata(b.join("orig")).unwrap(),
        fs::metadata(b.join("sub/alias")).unwrap(),
    );
    assert_eq!(m1.nlink(), 2);
    assert_eq!(m2.nlink(), 2);
    assert_eq!(m1.ino(), m2.ino(), "hard links share an inode number");

    OpenOptions::new()
        .append(true)
        .open(b.join("sub/alias"))
        .unwrap()
        .write_all(b" and appended")
        .unwrap();
    assert_eq!(read(&b.join("orig")), b"shared and appended");

    mount.remount();
    let b = mount.join("links");
    assert_eq!(fs::metadata(b.join("orig")).unwrap().nlink(), 2);
    assert_eq!(read(&b.join("sub/alias")), b"shared and appended");
    fs::remove_file(b.join("orig")).unwrap();
    let m = fs::metadata(b.join("sub/alias")).unwrap();
    assert_eq!(m.nlink(), 1, "link count after removing one name");
    assert_eq!(read(&b.join("sub/alias")), b"shared and appended");
}

#[test]
fn symlinks_resolve_and_persist() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("symlinks");
    fs::create_dir(b.join("dir")).unwrap();
    fs::write(b.join("dir/target"), b"pointed at").unwrap();
    symlink("dir/target", b.join("rel")).unwrap();
    symlink("dir", b.join("to-dir")).unwrap();
    symlink("does/not/exist", b.join("dangling")).unwrap();
    let long_target = "x/".repeat(1000) + "end";
    symlink(&long_target, b.join("long")).unwrap();

    let meta = fs::symlink_metadata(b.join("rel")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(
        meta.len(),
        "dir/target".len() as u64,
        "symlink size is its target length"
    );
    assert_eq!(read(&b.join("rel")), b"pointed at");
    assert_eq!(read(&b.join("to-dir/target")), b"pointed at");
    assert_errno(
        fs::metadata(b.join("dangling")),
        libc::ENOENT,
        "follow dangling symlink",
    );

    mount.remount();
    let b = mount.join("symlinks");
    assert_eq!(
        fs::read_link(b.join("rel")).unwrap(),
        Path::new("dir/target")
    );
    assert_eq!(
        fs::read_link(b.join("dangling")).unwrap(),
        Path::new("does/not/exist")
    );
    assert_eq!(
        fs::read_link(b.join("long")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(read(&b.join("to-dir/target")), b"pointed at");
    fs::remove_file(b.join("to-dir")).unwrap();
    assert!(
        b.join("dir/target").exists(),
        "removing a symlink keeps its target"
    );
}

#[test]
fn fifos_pass_data() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("fifos");
    let fifo = b.join("pipe");
    mkfifo(&fifo, 0o644).expect("mkfifo in a bucket");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    let writer_path = fifo.clone();
    let writer = thread::spawn(move || {
        let mut w = OpenOptions::new().write(true).open(&writer_path).unwrap();
        w.write_all(b"through the pipe").unwrap();
    });
    let mut got = String::new();
    File::open(&fifo).unwrap().read_to_string(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through the pipe");

    mount.remount();
    let meta = fs::symlink_metadata(mount.join("fifos/pipe")).unwrap();
    assert!(meta.file_type().is_fifo(), "fifo type survives remount");
    assert_eq!(meta.mode() & 0o777, 0o644);
}

#[test]
fn chmod_chown_utimens_show_in_stat_and_persist() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("attrs");
    let f = b.join("file");
    let d = b.join("dir");
    fs::write(&f, b"attributes").unwrap();
    fs::create_dir(&d).unwrap();

    // chown first: chown of a regular file clears its set-uid bit.
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(&d, Some(4321), Some(8765)).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
    set_times(
        &f,
        (1_111_111_111, 222_222_222),
        (1_333_333_333, 444_444_444),
    )
    .unwrap();
    set_times(&d, (2_000_000_000, 1), (2_000_000_001, 999_999_999)).unwrap();

    let check = |f: &Path, d: &Path| {
        let m = fs::metadata(f).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4751, "file mode");
        assert!(m.file_type().is_file());
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "file owner");
        assert_eq!(
            (m.atime(), m.atime_nsec()),
            (1_111_111_111, 222_222_222),
            "atime"
        );
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (1_333_333_333, 444_444_444),
            "mtime"
        );
        assert_eq!(m.len(), 10);
        let m = fs::metadata(d).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o1777, "dir mode");
        assert_eq!((m.uid(), m.gid()), (4321, 8765), "dir owner");
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (2_000_000_001, 999_999_999),
            "dir mtime"
        );
    };
    check(&f, &d);

    // Writing moves mtime forward to about now.
    let before = std::time::SystemTime::now();
    OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    let m = fs::metadata(&f).unwrap();
    let mtime = m.modified().unwrap();
    assert!(
        mtime + std::time::Duration::from_secs(2) >= before,
        "mtime did not move on write"
    );
    set_times(
        &f,
        (1_111_111_111, 222_222_222),
        (1_333_333_333, 444_444_444),
    )
    .unwrap();
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(10)
        .unwrap();
    set_times(
        &f,
        (1_111_111_111, 222_222_222),
        (1_333_333_333, 444_444_444),
    )
    .unwrap();

    mount.remount();
    let b = mount.join("attrs");
    check(&b.join("file"), &b.join("dir"));
}

#[test]
fn readdir_lists_dot_dotdot_and_every_entry() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("listing");
    let mut expected = vec![".".to_string(), "..".to_string()];
    // Enough entries that the kernel needs several readdir calls.
    for i in 0..500 {
        let name = format!("entry-{i:04}-{}", "n".repeat(i % 40));
        if i % 7 == 0 {
            fs::create_dir(b.join(&name)).unwrap();
        } else {
            fs::write(b.join(&name), i.to_string()).unwrap();
        }
        expected.push(name);
    }
    expected.sort();
    assert_eq!(readdir_all(&b).unwrap(), expected);
    let empty = b.join("entry-0000-");
    assert_eq!(readdir_all(&empty).unwrap(), vec![".", ".."]);
    assert_eq!(
        readdir_all(mount.path()).unwrap(),
        vec![".", "..", "listing"]
    );

    // `..` of a bucket is the mount root, of a subdirectory the bucket.
    let root_ino = fs::metadata(mount.path()).unwrap().ino();
    assert_eq!(fs::metadata(b.join("..")).unwrap().ino(), root_ino);
    assert_eq!(
        fs::metadata(empty.join("..")).unwrap().ino(),
        fs::metadata(&b).unwrap().ino()
    );

    mount.remount();
    assert_eq!(readdir_all(&mount.join("listing")).unwrap(), expected);
}

#[test]
fn statfs_reports_the_filesystem() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let b = mount.bucket("stats");
    let c = cpath(&b);
    // SAFETY: statvfs is plain data; all-zero is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid path and st a valid out-pointer.
    check_rc(unsafe { libc::statvfs(c.as_ptr(), &mut st) }).expect("statvfs on the mount");
    assert!(st.f_bsize > 0, "f_bsize is 0");
    assert!(st.f_blocks > 0, "f_blocks is 0");
    assert!(st.f_bfree <= st.f_blocks && st.f_bavail <= st.f_blocks);
    assert!(st.f_namemax >= 255, "f_namemax {}", st.f_namemax);
    let df = sh(&format!("df -P {}", q(mount.path())));
    assert!(df.lines().count() >= 2, "df printed: {df}");
}

#[test]
fn user_xattrs_set_get_list_remove() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mut mount = Mount::new(&store, &[]);
    let b = mount.bucket("xattrs");
    let f = b.join("file");
    fs::write(&f, b"has attributes").unwrap();
    let qf = q(&f);
    sh(&format!("setfattr -n user.colour -v blue {qf}"));
    sh(&format!("setfattr -n user.empty {qf}"));
    sh(&format!("setfattr -n user.binary -v 0x00ff10 {qf}"));
    assert_eq!(
        sh(&format!("getfattr --only-values -n user.colour {qf}")),
        "blue"
    );
    assert_eq!(
        sh(&format!("getfattr -e hex -n user.binary {qf}"))
            .lines()
            .find(|l| l.starts_with("user.binary"))
            .unwrap(),
        "user.binary=0x00ff10"
    );
    let listed = sh(&format!("getfattr -d -m '^user\\.' {qf}"));
    for name in ["user.colour", "user.empty", "user.binary"] {
        assert!(listed.contains(name), "{name} not listed:\n{listed}");
    }
    sh(&format!("setfattr -n user.colour -v green {qf}"));
    assert_eq!(
        sh(&format!("getfattr --only-values -n user.colour {qf}")),
        "green"
    );
    sh(&format!("setfattr -n user.dir-attr -v on-a-dir {}", q(&b)));

    mount.remount();
    let f = mount.join("xattrs/file");
    let qf = q(&f);
    assert_eq!(
        sh(&format!("getfattr --only-values -n user.colour {qf}")),
        "green"
    );
    assert_eq!(
        sh(&format!(
            "getfattr --only-values -n user.dir-attr {}",
            q(&mount.join("xattrs"))
        )),
        "on-a-dir"
    );
    sh(&format!("setfattr -x user.colour {qf}"));
    let gone = sh_output(&format!("getfattr -n user.colour {qf}"));
    assert!(!gone.status.success(), "removed xattr still readable");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("No such attribute"),
        "unexpected error for a removed xattr: {}",
        String::from_utf8_lossy(&gone.stderr)
    );
    let listed = sh(&format!("getfattr -d -m '^user\\.' {qf}"));
    assert!(
        !listed.contains("user.colour"),
        "removed xattr still listed"
    );
    assert!(listed.contains("user.binary"));
    assert_eq!(read(&f), b"has attributes", "xattrs do not touch content");
}

#[test]
fn new_objects_report_aes256_encryption() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let b = mount.bucket("sse-default");
    let f = b.join("object");
    fs::write(&f, b"encrypted at rest").unwrap();
    assert_eq!(
        sh(&format!(
            "getfattr --only-values -n user.oss.server-side-encryption {}",
            q(&f)
        )),
        "AES256"
    );
    assert_eq!(
        sh(&format!(
            "getfattr --only-values -n user.oss.server-side-encryption {}",
            q(&b)
        )),
        "AES256",
        "a new bucket's default rule"
    );
}

#[test]
fn a_bucket_rule_set_with_setfattr_applies_to_new_objects() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &["default_sse=none"]);
    let b = mount.bucket("sse-rule");
    let before = b.join("before-rule");
    fs::write(&before, b"written without a rule").unwrap();
    sh(&format!(
        "setfattr -n user.oss.server-side-encryption -v AES256 {}",
        q(&b)
    ));
    // Setting the rule does not touch existing objects.
    let old = sh_output(&format!(
        "getfattr -n user.oss.server-side-encryption {}",
        q(&before)
    ));
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("No such attribute"),
        "object written before the rule: {}{}",
        String::from_utf8_lossy(&old.stdout),
        String::from_utf8_lossy(&old.stderr)
    );
    let g = b.join("after-rule");
    fs::write(&g, b"under the bucket rule").unwrap();
    assert_eq!(
        sh(&format!(
            "getfattr --only-values -n user.oss.server-side-encryption {}",
            q(&g)
        )),
        "AES256"
    );
    assert_eq!(read(&g), b"under the bucket rule");
}

/// The mount clears set-user-ID and set-group-ID bits itself (the kernel leaves it to the
/// mount, so that it need not ask for `security.capability` before each write): a write, a
/// truncate or an `O_TRUNC` open by a user without `CAP_FSETID` clears them, root's do not,
/// and `ls -l` meets no ACL or security label it would have to ask about file by file.
#[test]
fn writes_by_users_clear_setid_bits_and_root_writes_keep_them() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &["allow_other"]);
    fs::set_permissions(store.base(), fs::Permissions::from_mode(0o755)).expect("chmod base");
    fs::set_permissions(mount.path(), fs::Permissions::from_mode(0o755)).expect("chmod root");
    let b = mount.bucket("setid");
    fs::set_permissions(&b, fs::Permissions::from_mode(0o777)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let files: Vec<_> = ["append", "truncate", "otrunc", "root"]
        .iter()
        .map(|n| b.join(n))
        .collect();
    for f in &files {
        fs::write(f, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(f, fs::Permissions::from_mode(0o6777)).unwrap();
    }
    for script in [
        format!("printf x >> {}", q(&files[0])),
        format!("truncate -s 1 {}", q(&files[1])),
        format!(": > {}", q(&files[2])),
    ] {
        let out = as_nobody(&script);
        assert!(out.status.success(), "as uid 65534: `{script}`: {out:?}");
    }
    OpenOptions::new()
        .append(true)
        .open(&files[3])
        .and_then(|mut f| f.write_all(b"# root\n"))
        .unwrap();
    for f in &files[..3] {
        assert_eq!(mode(f), 0o0777, "{}", f.display());
        let backing = store.store.join("setid").join(f.file_name().unwrap());
        assert_eq!(mode(&backing), 0o0777, "backing {}", backing.display());
    }
    assert_eq!(mode(&files[3]), 0o6777, "root keeps the bits");
    assert_eq!(fs::read(&files[0]).unwrap(), b"#!/bin/sh\nx");
    assert_eq!(fs::metadata(&files[1]).unwrap().len(), 1);
    assert_eq!(fs::metadata(&files[2]).unwrap().len(), 0);

    // Namespaces other than user.* are unsupported, for reading too.
    let out = sh_output(&format!(
        "getfattr -n security.selinux {} 2>&1",
        q(&files[3])
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Operation not supported"), "{text}");
    assert_eq!(mount.unmount().code(), Some(0));
}

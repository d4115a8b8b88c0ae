//! Tests of the filesystem core without a kernel: a temporary store with a real keystore,
//! and object data through the real crypto layer.

use super::*;
use crate::crypto::{Algorithm, Key256, KeyRef};
use crate::keystore::{BucketRule, Keystore};
use crate::store::{LocalBacking, META_DIR};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub keys: Arc<Keystore>,
    pub fs: BucketFs,
}

pub(super) const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

pub(super) fn fixture_with(options: FsOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join(META_DIR);
    std::fs::create_dir(&meta).unwrap();
    std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o700)).unwrap();
    let keys = Arc::new(Keystore::create(&meta, &Key256::generate().unwrap()).unwrap());
    let store = Store::open_with(dir.path(), Arc::new(LocalBacking), true).unwrap();
    let fs = BucketFs::new(store, keys.clone(), options).unwrap();
    Fixture { dir, keys, fs }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(FsOptions::default())
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.unwrap_err().errno()
}

fn names(fs: &BucketFs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).unwrap();
    let entries = fs.readdir(fh, 0).unwrap();
    fs.releasedir(fh).unwrap();
    entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn mkdir_at_root_makes_a_bucket_with_the_default_rule() {
    let f = fixture();
    let attr = f.fs.mkdir(ROOT, ROOT_INO, os("photos"), 0o755).unwrap();
    assert_eq!(attr.kind, NodeKind::Directory);
    assert_eq!(attr.perm, 0o755);
    let rule = f.keys.bucket_rule("photos").unwrap().unwrap();
    assert_eq!(rule.algorithm, Algorithm::Aes256);
    assert!(f.dir.path().join("photos").is_dir());
    assert_eq!(f.fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"AES256");
    // Readable by name, but not listed (see listxattr).
    assert!(f.fs.listxattr(attr.ino).unwrap().is_empty());
}

#[test]
fn bucket_names_are_checked_and_nothing_else_lives_at_the_root() {
    let f = fixture();
    for bad in ["Photos", "ab", ".ssefs", "a_b", "-ab"] {
        assert_eq!(
            errno(f.fs.mkdir(ROOT, ROOT_INO, os(bad), 0o755)),
            libc::EINVAL,
            "{bad}"
        );
    }
    assert_eq!(
        errno(f.fs.create(ROOT, ROOT_INO, os("file"), 0o644, libc::O_WRONLY)),
        libc::EPERM
    );
    assert_eq!(
        errno(f.fs.symlink(ROOT, ROOT_INO, os("link"), Path::new("x"))),
        libc::EPERM
    );
    assert_eq!(
        errno(f.fs.mknod(ROOT, ROOT_INO, os("fifo"), libc::S_IFIFO | 0o644, 0)),
        libc::EPERM
    );
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    let fifo =
        f.fs.mknod(ROOT, bucket.ino, os("p"), libc::S_IFIFO | 0o600, 0)
            .unwrap();
    assert_eq!(errno(f.fs.link(fifo.ino, ROOT_INO, os("p"))), libc::EPERM);
    assert_eq!(std::fs::read_dir(f.dir.path()).unwrap().count(), 2);
}

#[test]
fn the_metadata_directory_is_unreachable() {
    let f = fixture();
    f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    assert_eq!(errno(f.fs.lookup(ROOT_INO, os(META_DIR))), libc::ENOENT);
    assert_eq!(errno(f.fs.rmdir(ROOT_INO, os(META_DIR))), libc::ENOENT);
    assert_eq!(errno(f.fs.unlink(ROOT_INO, os(META_DIR))), libc::ENOENT);
    assert_eq!(names(&f.fs, ROOT_INO), [".", "..", "bkt"]);
    assert!(f.dir.path().join(META_DIR).is_dir());
}

#[test]
fn default_sse_none_records_no_rule_and_clears_a_stale_one() {
    let f = fixture_with(FsOptions {
        read_only: false,
        default_sse: DefaultSse::None,
        shared: false,
    });
    let stale = BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    };
    f.keys.put_bucket_rule("plain", &stale).unwrap();
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("plain"), 0o700).unwrap();
    assert_eq!(f.keys.bucket_rule("plain").unwrap(), None);
    assert_eq!(
        errno(f.fs.getxattr(bucket.ino, os(SSE_ATTR))),
        libc::ENODATA
    );
    assert!(f.fs.listxattr(bucket.ino).unwrap().is_empty());
}

#[test]
fn rmdir_of_a_bucket_removes_its_rule_only_when_empty() {
    let f = fixture();
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("docs"), 0o755).unwrap();
    f.fs.mkdir(ROOT, bucket.ino, os("sub"), 0o755).unwrap();
    assert_eq!(errno(f.fs.rmdir(ROOT_INO, os("docs"))), libc::ENOTEMPTY);
    assert!(f.keys.bucket_rule("docs").unwrap().is_some());
    f.fs.rmdir(bucket.ino, os("sub")).unwrap();
    f.fs.rmdir(ROOT_INO, os("docs")).unwrap();
    assert_eq!(f.keys.bucket_rule("docs").unwrap(), None);
    assert!(!f.dir.path().join("docs").exists());
}

#[test]
fn readdir_offsets_are_stable_and_dot_entries_correct() {
    let f = fixture();
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    let sub = f.fs.mkdir(ROOT, bucket.ino, os("sub"), 0o755).unwrap();
    for i in 0..5 {
        f.fs.mkdir(ROOT, sub.ino, os(&format!("d{i}")), 0o755)
            .unwrap();
    }
    let fh = f.fs.opendir(sub.ino).unwrap();
    let all = f.fs.readdir(fh, 0).unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!((all[0].name.to_str(), all[0].ino), (Some("."), sub.ino));
    assert_eq!((all[1].name.to_str(), all[1].ino), (Some(".."), bucket.ino));
    // A directory changed while open keeps serving the same entries at the same offsets.
    f.fs.rmdir(sub.ino, os("d0")).unwrap();
    let tail = f.fs.readdir(fh, all[3].offset).unwrap();
    assert_eq!(tail, all[4..].to_vec());
    assert!(f.fs.readdir(fh, all[6].offset).unwrap().is_empty());
    f.fs.releasedir(fh).unwrap();
    assert_eq!(errno(f.fs.readdir(fh, 0)), libc::EBADF);
    let root = f.fs.readdir(f.fs.opendir(ROOT_INO).unwrap(), 0).unwrap();
    assert_eq!(root[1].ino, ROOT_INO);
}

#[test]
fn buckets_cannot_be_renamed_but_directories_move_between_buckets() {
    let f = fixture();
    let a = f.fs.mkdir(ROOT, ROOT_INO, os("aaa"), 0o755).unwrap();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bbb"), 0o755).unwrap();
    assert_eq!(
        errno(f.fs.rename(
            ROOT_INO,
            os("aaa"),
            ROOT_INO,
            os("ccc"),
            RenameMode::Replace
        )),
        libc::EXDEV
    );
    let dir = f.fs.mkdir(ROOT, a.ino, os("dir"), 0o755).unwrap();
    let inner = f.fs.mkdir(ROOT, dir.ino, os("inner"), 0o755).unwrap();
    assert_eq!(
        errno(f.fs.rename(a.ino, os("dir"), ROOT_INO, os("ddd"), RenameMode::Replace)),
        libc::EXDEV
    );
    f.fs.rename(a.ino, os("dir"), b.ino, os("moved"), RenameMode::Replace)
        .unwrap();
    // Inodes known before the move keep working: they hold descriptors, not paths.
    let deeper = f.fs.mkdir(ROOT, inner.ino, os("deeper"), 0o755).unwrap();
    assert!(f.dir.path().join("bbb/moved/inner/deeper").is_dir());
    assert_eq!(f.fs.getattr(deeper.ino).unwrap().kind, NodeKind::Directory);
    assert_eq!(
        f.fs.bucket_of(&f.fs.inodes.get(inner.ino).unwrap())
            .unwrap(),
        "bbb"
    );
}

#[test]
fn rename_honours_noreplace_and_exchange() {
    let f = fixture();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    let x = f.fs.mkdir(ROOT, b.ino, os("x"), 0o755).unwrap();
    let y =
        f.fs.mknod(ROOT, b.ino, os("y"), libc::S_IFIFO | 0o600, 0)
            .unwrap();
    assert_eq!(
        errno(f.fs.rename(b.ino, os("x"), b.ino, os("y"), RenameMode::NoReplace)),
        libc::EEXIST
    );
    f.fs.rename(b.ino, os("x"), b.ino, os("y"), RenameMode::Exchange)
        .unwrap();
    assert_eq!(f.fs.lookup(b.ino, os("y")).unwrap().ino, x.ino);
    assert_eq!(f.fs.lookup(b.ino, os("x")).unwrap().ino, y.ino);
    f.fs.rename(b.ino, os("x"), b.ino, os("z"), RenameMode::Replace)
        .unwrap();
    assert_eq!(errno(f.fs.lookup(b.ino, os("x"))), libc::ENOENT);
}

#[test]
fn hard_links_share_one_inode_and_lookups_are_counted() {
    let f = fixture();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    let p =
        f.fs.mknod(ROOT, b.ino, os("p"), libc::S_IFIFO | 0o600, 0)
            .unwrap();
    assert_eq!(f.fs.lookup_count(p.ino), Some(1));
    let linked = f.fs.link(p.ino, b.ino, os("q")).unwrap();
    assert_eq!(linked.ino, p.ino);
    assert_eq!(linked.nlink, 2);
    assert_eq!(f.fs.lookup_count(p.ino), Some(2));
    assert_eq!(f.fs.lookup(b.ino, os("q")).unwrap().ino, p.ino);
    f.fs.unlink(b.ino, os("p")).unwrap();
    assert_eq!(f.fs.getattr(p.ino).unwrap().nlink, 1);
    f.fs.forget(p.ino, 3);
    assert_eq!(f.fs.lookup_count(p.ino), None);
    assert_eq!(errno(f.fs.getattr(p.ino)), libc::ESTALE);
    let meta = std::fs::symlink_metadata(f.dir.path().join("bkt/q")).unwrap();
    assert_eq!(f.fs.lookup(b.ino, os("q")).unwrap().ino, meta.ino());
}

#[test]
fn symlinks_fifos_and_devices() {
    let f = fixture();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    let l =
        f.fs.symlink(ROOT, b.ino, os("l"), Path::new("../target name"))
            .unwrap();
    assert_eq!(l.kind, NodeKind::Symlink);
    assert_eq!(f.fs.readlink(l.ino).unwrap(), b"../target name");
    f.fs.rename(b.ino, os("l"), b.ino, os("l2"), RenameMode::Replace)
        .unwrap();
    let when = Timestamp {
        secs: 1_000_000,
        nanos: 7,
    };
    let changes = SetAttr {
        mtime: Some(TimeUpdate::At(system_time(when))),
        ..SetAttr::default()
    };
    let attr = f.fs.setattr(ROOT, l.ino, changes).unwrap();
    assert_eq!(attr.mtime, system_time(when));
    assert_eq!(
        errno(f.fs.setxattr(ROOT, l.ino, os("user.a"), b"v", 0)),
        libc::EPERM
    );
    let fifo =
        f.fs.mknod(ROOT, b.ino, os("fifo"), libc::S_IFIFO | 0o640, 0)
            .unwrap();
    assert_eq!((fifo.kind, fifo.perm), (NodeKind::NamedPipe, 0o640));
    for dev in [libc::S_IFCHR, libc::S_IFBLK] {
        assert_eq!(
            errno(f.fs.mknod(ROOT, b.ino, os("dev"), dev | 0o600, 0x0101)),
            libc::EPERM
        );
    }
    assert!(!f.dir.path().join("bkt/dev").exists());
}

#[test]
fn new_nodes_belong_to_the_caller_and_setattr_applies_to_the_backing_node() {
    let f = fixture();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o777).unwrap();
    let user = Caller {
        uid: 1234,
        gid: 5678,
        pid: 9,
    };
    let d = f.fs.mkdir(user, b.ino, os("mine"), 0o750).unwrap();
    assert_eq!((d.uid, d.gid, d.perm), (1234, 5678, 0o750));
    let path = f.dir.path().join("bkt/mine");
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 1234);
    let changes = SetAttr {
        mode: Some(0o2711),
        uid: Some(42),
        gid: Some(43),
        ..SetAttr::default()
    };
    let attr = f.fs.setattr(ROOT, d.ino, changes).unwrap();
    assert_eq!((attr.uid, attr.gid), (42, 43));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, u32::from(attr.perm));
    // A set-group-ID directory passes its group (and the bit) on to new directories.
    let child = f.fs.mkdir(user, d.ino, os("child"), 0o755).unwrap();
    assert_eq!(child.gid, 43);
    assert_eq!(child.perm & 0o2000, 0o2000);
}

#[test]
fn user_xattrs_are_stored_and_reserved_names_refused() {
    let f = fixture();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o755).unwrap();
    let d = f.fs.mkdir(ROOT, b.ino, os("d"), 0o755).unwrap();
    f.fs.setxattr(ROOT, d.ino, os("user.colour"), b"blue", 0)
        .unwrap();
    assert_eq!(f.fs.getxattr(d.ino, os("user.colour")).unwrap(), b"blue");
    assert_eq!(f.fs.listxattr(d.ino).unwrap(), b"user.colour\0");
    assert_eq!(
        errno(f.fs.setxattr(ROOT, d.ino, os("user.colour"), b"red", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    let name = "user.oss.other";
    assert_eq!(
        errno(f.fs.setxattr(ROOT, b.ino, os(name), b"KMS", 0)),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(f.fs.removexattr(ROOT, b.ino, os(name))),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(f.fs.setxattr(ROOT, d.ino, os("trusted.x"), b"1", 0)),
        libc::EOPNOTSUPP
    );
    // Other namespaces are unsupported for reading too, so that `ls -l` stops asking.
    for name in ["security.selinux", "system.posix_acl_access", "trusted.x"] {
        assert_eq!(errno(f.fs.getxattr(d.ino, os(name))), libc::EOPNOTSUPP);
    }
    assert_eq!(errno(f.fs.getxattr(d.ino, os(SSE_ATTR))), libc::ENODATA);
    assert_eq!(
        errno(f.fs.getxattr(b.ino, os(SSE_KEY_ID_ATTR))),
        libc::ENODATA
    );
    f.fs.removexattr(ROOT, d.ino, os("user.colour")).unwrap();
    assert_eq!(
        errno(f.fs.getxattr(d.ino, os("user.colour"))),
        libc::ENODATA
    );
    assert_eq!(
        errno(f.fs.removexattr(ROOT, d.ino, os("user.colour"))),
        libc::ENODATA
    );
}

#[test]
fn a_read_only_mount_refuses_every_mutation() {
    let f = fixture_with(FsOptions {
        read_only: true,
        default_sse: DefaultSse::Aes256,
        shared: false,
    });
    std::fs::create_dir(f.dir.path().join("bkt")).unwrap();
    let b = f.fs.lookup(ROOT_INO, os("bkt")).unwrap();
    assert_eq!(
        errno(f.fs.mkdir(ROOT, ROOT_INO, os("new"), 0o755)),
        libc::EROFS
    );
    assert_eq!(
        errno(f.fs.mkdir(ROOT, b.ino, os("sub"), 0o755)),
        libc::EROFS
    );
    assert_eq!(
        errno(f.fs.create(ROOT, b.ino, os("f"), 0o644, libc::O_WRONLY)),
        libc::EROFS
    );
    assert_eq!(errno(f.fs.rmdir(ROOT_INO, os("bkt"))), libc::EROFS);
    assert_eq!(
        errno(f.fs.setxattr(ROOT, b.ino, os("user.a"), b"", 0)),
        libc::EROFS
    );
    let chmod = SetAttr {
        mode: Some(0o700),
        ..SetAttr::default()
    };
    assert_eq!(errno(f.fs.setattr(ROOT, b.ino, chmod)), libc::EROFS);
    assert_eq!(
        errno(f.fs.symlink(ROOT, b.ino, os("l"), Path::new("t"))),
        libc::EROFS
    );
    assert!(f.fs.statfs().unwrap().blocks > 0);
}

// ---- Objects: data through the real crypto layer ----

const WRITE: i32 = libc::O_RDWR;

fn bucket(f: &Fixture, name: &str) -> u64 {
    f.fs.mkdir(ROOT, ROOT_INO, os(name), 0o755).unwrap().ino
}

fn read_all(fs: &BucketFs, fh: u64) -> Vec<u8> {
    fs.read(fh, 0, u32::MAX).unwrap()
}

#[test]
fn objects_round_trip_and_only_ciphertext_reaches_the_store() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, fh) = f.fs.create(ROOT, b, os("f.txt"), 0o640, WRITE).unwrap();
    assert_eq!(
        (attr.size, attr.perm, attr.kind),
        (0, 0o640, NodeKind::RegularFile)
    );
    let text = b"attack at dawn; ".repeat(1000);
    assert_eq!(f.fs.write(fh, 0, &text).unwrap(), text.len());
    assert_eq!(f.fs.getattr(attr.ino).unwrap().size, text.len() as u64);
    f.fs.fsync(fh).unwrap();
    f.fs.release(fh).unwrap();
    let backing = std::fs::read(f.dir.path().join("bkt/f.txt")).unwrap();
    assert!(!backing.windows(14).any(|w| w == b"attack at dawn"));
    assert_eq!(f.fs.getattr(attr.ino).unwrap().size, text.len() as u64);
    let fh = f.fs.open(ROOT, attr.ino, libc::O_RDONLY).unwrap();
    assert_eq!(read_all(&f.fs, fh), text);
    assert_eq!(f.fs.read(fh, 15_990, 100).unwrap(), &text[15_990..]);
    assert!(f.fs.read(fh, 1 << 40, 10).unwrap().is_empty());
    f.fs.release(fh).unwrap();
    assert_eq!(f.fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"AES256");
    assert_eq!(
        errno(f.fs.getxattr(attr.ino, os(SSE_KEY_ID_ATTR))),
        libc::ENODATA
    );
}

#[test]
fn truncate_up_and_down_with_and_without_a_handle() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, fh) = f.fs.create(ROOT, b, os("t"), 0o600, WRITE).unwrap();
    f.fs.write(fh, 0, &[7u8; 10_000]).unwrap();
    let shrink = SetAttr {
        size: Some(5000),
        handle: Some(fh),
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(ROOT, attr.ino, shrink).unwrap().size, 5000);
    f.fs.release(fh).unwrap();
    let grow = SetAttr {
        size: Some(9000),
        ..SetAttr::default()
    };
    assert_eq!(f.fs.setattr(ROOT, attr.ino, grow).unwrap().size, 9000);
    let fh = f.fs.open(ROOT, attr.ino, libc::O_RDONLY).unwrap();
    let data = read_all(&f.fs, fh);
    assert_eq!(data.len(), 9000);
    assert!(data[..5000].iter().all(|b| *b == 7));
    assert!(data[5000..].iter().all(|b| *b == 0), "holes read as zeros");
    f.fs.release(fh).unwrap();
    let fh =
        f.fs.open(ROOT, attr.ino, libc::O_WRONLY | libc::O_TRUNC)
            .unwrap();
    assert_eq!(f.fs.getattr(attr.ino).unwrap().size, 0);
    f.fs.release(fh).unwrap();
}

#[test]
fn handles_share_one_object_and_append_goes_to_the_end() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, w) = f.fs.create(ROOT, b, os("log"), 0o644, WRITE).unwrap();
    let r = f.fs.open(ROOT, attr.ino, libc::O_RDONLY).unwrap();
    let a =
        f.fs.open(ROOT, attr.ino, libc::O_WRONLY | libc::O_APPEND)
            .unwrap();
    f.fs.write(w, 0, b"hello").unwrap();
    assert_eq!(read_all(&f.fs, r), b"hello");
    f.fs.write(a, 0, b" world").unwrap();
    f.fs.write(w, 0, b"J").unwrap();
    assert_eq!(read_all(&f.fs, r), b"Jello world");
    assert_eq!(errno(f.fs.write(r, 0, b"x")), libc::EBADF);
    for fh in [w, r, a] {
        f.fs.release(fh).unwrap();
    }
    assert_eq!(errno(f.fs.read(w, 0, 1)), libc::EBADF);
    let linked = f.fs.link(attr.ino, b, os("log2")).unwrap();
    assert_eq!(linked.ino, attr.ino);
    let x = f.fs.open(ROOT, attr.ino, libc::O_RDONLY).unwrap();
    assert_eq!(read_all(&f.fs, x), b"Jello world");
    f.fs.release(x).unwrap();
}

#[test]
fn exclusive_create_and_create_of_an_existing_object() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, fh) = f.fs.create(ROOT, b, os("x"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, b"first").unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(
        errno(f.fs.create(ROOT, b, os("x"), 0o644, WRITE | libc::O_EXCL)),
        libc::EEXIST
    );
    let (again, fh) = f.fs.create(ROOT, b, os("x"), 0o644, WRITE).unwrap();
    assert_eq!(again.ino, attr.ino);
    assert_eq!(read_all(&f.fs, fh), b"first");
    f.fs.release(fh).unwrap();
    let tmp = f.dir.path().join(META_DIR).join(crate::store::TMP_DIR);
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn objects_keep_their_encryption_across_buckets() {
    let f = fixture();
    let plain = bucket(&f, "plain");
    f.keys.delete_bucket_rule("plain").unwrap();
    let enc = bucket(&f, "enc");
    let (p, fh) = f.fs.create(ROOT, plain, os("p"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, b"clear").unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(errno(f.fs.getxattr(p.ino, os(SSE_ATTR))), libc::ENODATA);
    let (e, fh) = f.fs.create(ROOT, enc, os("e"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, b"hidden").unwrap();
    f.fs.release(fh).unwrap();
    f.fs.rename(enc, os("e"), plain, os("e"), RenameMode::Replace)
        .unwrap();
    assert_eq!(f.fs.getxattr(e.ino, os(SSE_ATTR)).unwrap(), b"AES256");
    let list = f.fs.listxattr(e.ino).unwrap();
    assert_eq!(list, format!("{SSE_ATTR}\0").into_bytes());
    let fh = f.fs.open(ROOT, e.ino, libc::O_RDONLY).unwrap();
    assert_eq!(read_all(&f.fs, fh), b"hidden");
    f.fs.release(fh).unwrap();
}

#[test]
fn tampered_objects_give_eio_but_can_be_removed() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, fh) = f.fs.create(ROOT, b, os("v"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, &[1u8; 20_000]).unwrap();
    f.fs.release(fh).unwrap();
    let path = f.dir.path().join("bkt/v");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let opened = f.fs.open(ROOT, attr.ino, libc::O_RDONLY);
    let failed = match opened {
        Err(e) => e.errno(),
        Ok(fh) => {
            let e = f.fs.read(fh, 0, 20_000).unwrap_err().errno();
            f.fs.release(fh).unwrap();
            e
        }
    };
    assert_eq!(failed, libc::EIO);
    assert!(f.fs.getattr(attr.ino).is_ok());
    f.fs.unlink(b, os("v")).unwrap();
    assert!(!path.exists());
}

#[test]
fn kms_buckets_use_the_named_or_default_cmk() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let named = BucketRule {
        algorithm: Algorithm::Kms,
        kms_key_id: Some("alias/missing".into()),
    };
    f.keys.put_bucket_rule("bkt", &named).unwrap();
    assert_eq!(
        errno(f.fs.create(ROOT, b, os("k"), 0o644, WRITE)),
        libc::ENOKEY
    );
    assert!(!f.dir.path().join("bkt/k").exists());
    let default = BucketRule {
        algorithm: Algorithm::Kms,
        kms_key_id: None,
    };
    f.keys.put_bucket_rule("bkt", &default).unwrap();
    let (attr, fh) = f.fs.create(ROOT, b, os("k"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, b"under a CMK").unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.fs.getxattr(attr.ino, os(SSE_ATTR)).unwrap(), b"KMS");
    let key_id = f.keys.default_cmk().unwrap();
    assert_eq!(
        f.fs.getxattr(attr.ino, os(SSE_KEY_ID_ATTR)).unwrap(),
        key_id.as_bytes()
    );
    let list = f.fs.listxattr(attr.ino).unwrap();
    assert_eq!(
        list,
        format!("{SSE_ATTR}\0{SSE_KEY_ID_ATTR}\0").into_bytes()
    );
    let fh = f.fs.open(ROOT, attr.ino, libc::O_RDONLY).unwrap();
    assert_eq!(read_all(&f.fs, fh), b"under a CMK");
    f.fs.release(fh).unwrap();
}

#[test]
fn an_object_under_an_unknown_master_key_gives_enokey() {
    use crate::crypto::{DEFAULT_BLOCK_SIZE, Object};
    let f = fixture();
    let b = bucket(&f, "bkt");
    let kek = Key256::generate().unwrap();
    let orphan = KeyRef::Master { version: 99 };
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(f.dir.path().join("bkt/orphan"))
        .unwrap();
    let mut object = Object::create(
        file,
        &f.keys.store_key().unwrap(),
        Algorithm::Aes256,
        orphan,
        Some(&kek),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    object.write_at(0, b"lost").unwrap();
    object.close().unwrap();
    let attr = f.fs.lookup(b, os("orphan")).unwrap();
    assert_eq!(attr.size, 4, "stat needs no key");
    assert_eq!(
        errno(f.fs.open(ROOT, attr.ino, libc::O_RDONLY)),
        libc::ENOKEY
    );
}

#[test]
fn unlinked_open_objects_stay_usable() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, fh) = f.fs.create(ROOT, b, os("gone"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, b"still here").unwrap();
    f.fs.unlink(b, os("gone")).unwrap();
    f.fs.write(fh, 10, b"!").unwrap();
    assert_eq!(read_all(&f.fs, fh), b"still here!");
    assert_eq!(f.fs.getattr(attr.ino).unwrap().nlink, 0);
    f.fs.release(fh).unwrap();
}

#[test]
fn times_set_before_close_or_fsync_survive_them() {
    let f = fixture();
    let b = bucket(&f, "bkt");
    let (attr, fh) = f.fs.create(ROOT, b, os("old"), 0o644, WRITE).unwrap();
    f.fs.write(fh, 0, &[3u8; 9000]).unwrap();
    let past = Timestamp {
        secs: 1_357_658_954,
        nanos: 0,
    };
    let touch = SetAttr {
        atime: Some(TimeUpdate::At(system_time(past))),
        mtime: Some(TimeUpdate::At(system_time(past))),
        ..SetAttr::default()
    };
    f.fs.setattr(ROOT, attr.ino, touch).unwrap();
    f.fs.fsync(fh).unwrap();
    assert_eq!(f.fs.getattr(attr.ino).unwrap().mtime, system_time(past));
    f.fs.release(fh).unwrap();
    let after = f.fs.getattr(attr.ino).unwrap();
    assert_eq!(
        (after.mtime, after.atime),
        (system_time(past), system_time(past))
    );
    assert_eq!(after.size, 9000);
}

#[test]
fn writes_and_truncates_by_unprivileged_callers_clear_setid_bits() {
    let f = fixture();
    let b = f.fs.mkdir(ROOT, ROOT_INO, os("bkt"), 0o777).unwrap();
    // pid 0: no /proc entry to read, so the uid decides (root keeps the bits).
    let user = Caller {
        uid: 1234,
        gid: 1234,
        pid: 0,
    };
    let root = Caller { pid: 0, ..ROOT };
    let mode_of = |name: &str| {
        std::fs::metadata(f.dir.path().join("bkt").join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let setid = |ino: u64, mode: u32| {
        let changes = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        f.fs.setattr(ROOT, ino, changes).unwrap();
    };
    let truncate = |caller: Caller, ino: u64| {
        let changes = SetAttr {
            size: Some(3),
            ..SetAttr::default()
        };
        f.fs.setattr(caller, ino, changes).unwrap();
    };

    let (exec, fh) =
        f.fs.create(ROOT, b.ino, os("exec"), 0o755, libc::O_RDWR)
            .unwrap();
    f.fs.write(fh, 0, b"contents").unwrap();
    f.fs.release(fh).unwrap();
    setid(exec.ino, 0o6775);
    truncate(root, exec.ino);
    assert_eq!(mode_of("exec"), 0o6775, "root keeps the bits");
    truncate(user, exec.ino);
    assert_eq!(
        mode_of("exec"),
        0o0775,
        "set-group-ID of a group-executable file goes too"
    );

    // Without group execute, set-group-ID marks mandatory locking and stays.
    setid(exec.ino, 0o6755 & !0o010);
    let fh =
        f.fs.open(user, exec.ino, libc::O_WRONLY | libc::O_TRUNC)
            .unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(mode_of("exec"), 0o2745, "O_TRUNC by a user");

    setid(exec.ino, 0o4755);
    let fh = f.fs.open(root, exec.ino, libc::O_WRONLY).unwrap();
    f.fs.write(fh, 0, b"x").unwrap();
    f.fs.clear_setid_after_write(fh).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(mode_of("exec"), 0o0755, "a write the kernel marks");
    assert_eq!(f.fs.getattr(exec.ino).unwrap().perm, 0o755);
}

#[test]
fn timestamps_round_trip_before_and_after_the_epoch() {
    use std::time::{Duration, UNIX_EPOCH};
    for (secs, nanos) in [
        (0i64, 0u32),
        (1_700_000_000, 5),
        (-1, 999_999_999),
        (-10, 1),
    ] {
        let ts = Timestamp { secs, nanos };
        let time = if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos)
        };
        assert_eq!(timestamp(time), ts);
        assert_eq!(system_time(ts), time);
    }
}

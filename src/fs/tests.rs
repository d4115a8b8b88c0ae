//! Tests of the filesystem core without a kernel: a temporary store and an in-memory key
//! source for the namespace; the real keystore and crypto for object data.

use super::*;
use crate::crypto::{Algorithm, Key256, KeyRef};
use crate::keystore::BucketRule;
use crate::store::{LocalBacking, META_DIR};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Mutex;

/// Bucket rules in memory and one master key version; resolves only that version.
#[derive(Default)]
pub(super) struct MemoryKeys {
    rules: Mutex<HashMap<String, BucketRule>>,
}

impl KeySource for MemoryKeys {
    fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, FsError> {
        Ok(self.rules.lock().unwrap().get(bucket).cloned())
    }
    fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), FsError> {
        self.rules
            .lock()
            .unwrap()
            .insert(bucket.to_string(), rule.clone());
        Ok(())
    }
    fn delete_bucket_rule(&self, bucket: &str) -> Result<(), FsError> {
        self.rules.lock().unwrap().remove(bucket);
        Ok(())
    }
    fn current_master_key(&self) -> Result<(u32, Key256), FsError> {
        Ok((3, Key256::from_bytes(&[0x5a; 32])?))
    }
    fn resolve(&self, key_ref: &KeyRef) -> Result<Option<Key256>, FsError> {
        match key_ref {
            KeyRef::None => Ok(None),
            KeyRef::Master { version: 3 } => Ok(Some(Key256::from_bytes(&[0x5a; 32])?)),
            KeyRef::Master { .. } | KeyRef::Cmk { .. } => Ok(None),
        }
    }
}

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub keys: Arc<MemoryKeys>,
    pub fs: BucketFs,
}

pub(super) const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

pub(super) fn fixture_with(options: FsOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(META_DIR)).unwrap();
    let store = Store::open_with(dir.path(), Arc::new(LocalBacking), true).unwrap();
    let keys = Arc::new(MemoryKeys::default());
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
    let listed = f.fs.listxattr(attr.ino).unwrap();
    assert_eq!(listed, format!("{SSE_ATTR}\0").into_bytes());
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
        mtime: Some(TimeUpdate::At(when)),
        ..SetAttr::default()
    };
    let attr = f.fs.setattr(l.ino, changes).unwrap();
    assert_eq!(attr.mtime, system_time(when));
    assert_eq!(
        errno(f.fs.setxattr(l.ino, os("user.a"), b"v", 0)),
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
    let attr = f.fs.setattr(d.ino, changes).unwrap();
    assert_eq!((attr.uid, attr.gid), (42, 43));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, attr.perm.into());
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
    f.fs.setxattr(d.ino, os("user.colour"), b"blue", 0).unwrap();
    assert_eq!(f.fs.getxattr(d.ino, os("user.colour")).unwrap(), b"blue");
    assert_eq!(f.fs.listxattr(d.ino).unwrap(), b"user.colour\0");
    assert_eq!(
        errno(f.fs.setxattr(d.ino, os("user.colour"), b"red", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    for name in [SSE_ATTR, SSE_KEY_ID_ATTR, "user.oss.other"] {
        assert_eq!(
            errno(f.fs.setxattr(b.ino, os(name), b"KMS", 0)),
            libc::EOPNOTSUPP
        );
        assert_eq!(errno(f.fs.removexattr(b.ino, os(name))), libc::EOPNOTSUPP);
    }
    assert_eq!(
        errno(f.fs.setxattr(d.ino, os("trusted.x"), b"1", 0)),
        libc::EOPNOTSUPP
    );
    assert_eq!(errno(f.fs.getxattr(d.ino, os(SSE_ATTR))), libc::ENODATA);
    assert_eq!(
        errno(f.fs.getxattr(b.ino, os(SSE_KEY_ID_ATTR))),
        libc::ENODATA
    );
    f.fs.removexattr(d.ino, os("user.colour")).unwrap();
    assert_eq!(
        errno(f.fs.getxattr(d.ino, os("user.colour"))),
        libc::ENODATA
    );
    assert_eq!(
        errno(f.fs.removexattr(d.ino, os("user.colour"))),
        libc::ENODATA
    );
}

#[test]
fn a_read_only_mount_refuses_every_mutation() {
    let f = fixture_with(FsOptions {
        read_only: true,
        default_sse: DefaultSse::Aes256,
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
        errno(f.fs.setxattr(b.ino, os("user.a"), b"", 0)),
        libc::EROFS
    );
    let chmod = SetAttr {
        mode: Some(0o700),
        ..SetAttr::default()
    };
    assert_eq!(errno(f.fs.setattr(b.ino, chmod)), libc::EROFS);
    assert_eq!(
        errno(f.fs.symlink(ROOT, b.ino, os("l"), Path::new("t"))),
        libc::EROFS
    );
    assert!(f.fs.statfs().unwrap().blocks > 0);
}

//! Tests of the encryption attributes without a kernel: bucket rules set through attributes,
//! re-encryption of objects (contents, open handles, inode identity, failures that change
//! nothing) against a real keystore and the real crypto layer.

use super::tests::{Fixture, ROOT, fixture};
use super::*;
use crate::crypto::{Algorithm, CryptoError, KeyRef, peek_header};
use crate::keystore::{BucketRule, CmkOrigin};
use crate::store::{META_DIR, TMP_DIR};
use std::os::unix::fs::MetadataExt;

const USER: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 2,
};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.unwrap_err().errno()
}

fn rule(f: &Fixture, bucket: &str) -> Option<BucketRule> {
    f.keys.bucket_rule(bucket).unwrap()
}

fn get(f: &Fixture, ino: u64, name: &str) -> Result<String, i32> {
    f.fs.getxattr(ino, os(name))
        .map(|v| String::from_utf8(v).unwrap())
        .map_err(|e| e.errno())
}

fn set(f: &Fixture, ino: u64, name: &str, value: &str) -> Result<(), i32> {
    f.fs.setxattr(ROOT, ino, os(name), value.as_bytes(), 0)
        .map_err(|e| e.errno())
}

fn remove(f: &Fixture, ino: u64, name: &str) -> Result<(), i32> {
    f.fs.removexattr(ROOT, ino, os(name)).map_err(|e| e.errno())
}

/// A bucket owned by `owner` with the given rule.
fn bucket_with(f: &Fixture, name: &str, owner: Caller, rule: Option<BucketRule>) -> u64 {
    let ino = f.fs.mkdir(owner, ROOT_INO, os(name), 0o755).unwrap().ino;
    match rule {
        Some(rule) => f.keys.put_bucket_rule(name, &rule).unwrap(),
        None => f.keys.delete_bucket_rule(name).unwrap(),
    }
    ino
}

fn aes() -> Option<BucketRule> {
    Some(BucketRule {
        algorithm: Algorithm::Aes256,
        kms_key_id: None,
    })
}

fn object(f: &Fixture, bucket: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) =
        f.fs.create(ROOT, bucket, os(name), 0o640, libc::O_RDWR)
            .unwrap();
    f.fs.write(fh, 0, data).unwrap();
    f.fs.release(fh).unwrap();
    attr.ino
}

fn contents(f: &Fixture, ino: u64) -> Vec<u8> {
    let fh = f.fs.open(ROOT, ino, libc::O_RDONLY).unwrap();
    let data = f.fs.read(fh, 0, u32::MAX).unwrap();
    f.fs.release(fh).unwrap();
    data
}

fn key_ref(f: &Fixture, path: &str) -> KeyRef {
    let file = std::fs::File::open(f.dir.path().join(path)).unwrap();
    peek_header(&file).unwrap().key_ref
}

fn tmp_entries(f: &Fixture) -> usize {
    std::fs::read_dir(f.dir.path().join(META_DIR).join(TMP_DIR))
        .unwrap()
        .count()
}

fn set_cmk_state(f: &Fixture, key_id: &str, state: &str) {
    assert_eq!(state, "Disabled");
    let root = crate::keystore::Caller {
        uid: 0,
        gid: 0,
        groups: vec![],
        pid: std::process::id(),
    };
    f.keys.disable_cmk(key_id, &root).unwrap();
}

#[test]
fn bucket_attributes_edit_the_rule() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, None);
    assert_eq!(get(&f, b, SSE_ATTR), Err(libc::ENODATA));
    assert_eq!(get(&f, b, SSE_KEY_ID_ATTR), Err(libc::ENODATA));
    assert_eq!(remove(&f, b, SSE_ATTR), Err(libc::ENODATA));
    set(&f, b, SSE_ATTR, "KMS").unwrap();
    assert_eq!(get(&f, b, SSE_ATTR).unwrap(), "KMS");
    assert_eq!(get(&f, b, SSE_KEY_ID_ATTR), Err(libc::ENODATA));
    assert_eq!(remove(&f, b, SSE_KEY_ID_ATTR), Err(libc::ENODATA));

    let key = f
        .keys
        .create_cmk("t", Some("alias/team"), CmkOrigin::Ssefs, 0)
        .unwrap();
    set(&f, b, SSE_KEY_ID_ATTR, "alias/team").unwrap();
    assert_eq!(get(&f, b, SSE_KEY_ID_ATTR).unwrap(), "alias/team");
    f.fs.setxattr(ROOT, b, os("user.tag"), b"t", 0).unwrap();
    assert_eq!(f.fs.listxattr(b).unwrap(), b"user.tag\0");
    // KMS again keeps the key id; AES256 drops it.
    set(&f, b, SSE_ATTR, "KMS").unwrap();
    assert_eq!(
        rule(&f, "bkt").unwrap().kms_key_id.as_deref(),
        Some("alias/team")
    );
    remove(&f, b, SSE_KEY_ID_ATTR).unwrap();
    assert_eq!(rule(&f, "bkt").unwrap().kms_key_id, None);
    set(&f, b, SSE_KEY_ID_ATTR, &key).unwrap();
    set(&f, b, SSE_ATTR, "AES256").unwrap();
    assert_eq!(rule(&f, "bkt"), aes());
    remove(&f, b, SSE_ATTR).unwrap();
    assert_eq!(rule(&f, "bkt"), None);
}

#[test]
fn failed_bucket_changes_change_nothing() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", USER, aes());
    let before = rule(&f, "bkt");
    // A key id needs a KMS rule; bad values; unknown and disabled CMKs.
    assert_eq!(set(&f, b, SSE_KEY_ID_ATTR, "alias/x"), Err(libc::EINVAL));
    assert_eq!(set(&f, b, SSE_ATTR, "aes256"), Err(libc::EINVAL));
    assert_eq!(set(&f, b, SSE_ATTR, ""), Err(libc::EINVAL));
    assert_eq!(rule(&f, "bkt"), before);
    set(&f, b, SSE_ATTR, "KMS").unwrap();
    let before = rule(&f, "bkt");
    assert_eq!(set(&f, b, SSE_KEY_ID_ATTR, "alias/none"), Err(libc::ENOKEY));
    let key = f.keys.create_cmk("t", None, CmkOrigin::Ssefs, 0).unwrap();
    set_cmk_state(&f, &key, "Disabled");
    assert_eq!(set(&f, b, SSE_KEY_ID_ATTR, &key), Err(libc::EKEYREVOKED));
    assert_eq!(rule(&f, "bkt"), before);
    // Only the owner (or root) may change it.
    let other = Caller { uid: 1001, ..USER };
    let r = f.fs.setxattr(other, b, os(SSE_ATTR), b"AES256", 0);
    assert_eq!(errno(r), libc::EPERM);
    assert_eq!(errno(f.fs.removexattr(other, b, os(SSE_ATTR))), libc::EPERM);
    assert_eq!(rule(&f, "bkt"), before);
    f.fs.setxattr(USER, b, os(SSE_ATTR), b"AES256", 0).unwrap();
    assert_eq!(rule(&f, "bkt"), aes());
    // Flags.
    let r =
        f.fs.setxattr(ROOT, b, os(SSE_ATTR), b"KMS", libc::XATTR_CREATE);
    assert_eq!(errno(r), libc::EEXIST);
    let r =
        f.fs.setxattr(ROOT, b, os(SSE_KEY_ID_ATTR), b"k", libc::XATTR_REPLACE);
    assert_eq!(errno(r), libc::ENODATA);
    assert_eq!(rule(&f, "bkt"), aes());
}

#[test]
fn directories_below_a_bucket_and_internal_names() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, aes());
    let d = f.fs.mkdir(ROOT, b, os("dir"), 0o755).unwrap().ino;
    assert_eq!(get(&f, d, SSE_ATTR), Err(libc::ENODATA));
    assert_eq!(set(&f, d, SSE_ATTR, "AES256"), Err(libc::EINVAL));
    assert_eq!(remove(&f, d, SSE_KEY_ID_ATTR), Err(libc::EINVAL));
    assert_eq!(set(&f, ROOT_INO, SSE_ATTR, "AES256"), Err(libc::EINVAL));
    let o = object(&f, d, "o", b"x");
    assert_eq!(get(&f, o, KEY_VERSION_ATTR).unwrap(), "1");
    assert_eq!(set(&f, o, KEY_VERSION_ATTR, "2"), Err(libc::EPERM));
    assert_eq!(set(&f, o, FILE_ID_ATTR, "00"), Err(libc::EPERM));
    assert_eq!(get(&f, b, FILE_ID_ATTR), Err(libc::ENODATA));
    assert_eq!(remove(&f, o, KEY_VERSION_ATTR), Err(libc::EPERM));
    assert_eq!(set(&f, b, "user.ssefs.other", "2"), Err(libc::EPERM));
    assert_eq!(
        f.fs.listxattr(o).unwrap(),
        format!("{SSE_ATTR}\0").into_bytes()
    );
}

#[test]
fn objects_are_reencrypted_and_keep_their_inode() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, None);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let o = object(&f, b, "o", &data);
    std::fs::File::open(f.dir.path().join("bkt/o")).unwrap();
    f.fs.setxattr(ROOT, o, os("user.note"), b"kept", 0).unwrap();
    let before = f.fs.getattr(o).unwrap();
    assert_eq!(get(&f, o, SSE_ATTR), Err(libc::ENODATA));
    assert_eq!(get(&f, o, KEY_VERSION_ATTR), Err(libc::ENODATA));

    set(&f, o, SSE_ATTR, "AES256").unwrap();
    assert_eq!(key_ref(&f, "bkt/o"), KeyRef::Master { version: 1 });
    assert_eq!(contents(&f, o), data);
    let after = f.fs.getattr(o).unwrap();
    assert_eq!(after.ino, before.ino);
    assert_eq!((after.perm, after.uid, after.size), (0o640, 0, before.size));
    assert_eq!(after.mtime, before.mtime);
    assert_eq!(f.fs.getxattr(o, os("user.note")).unwrap(), b"kept");
    // The name still leads to the same inode, in lookup and readdir.
    assert_eq!(f.fs.lookup(b, os("o")).unwrap().ino, o);
    let fh = f.fs.opendir(b).unwrap();
    let listed = f.fs.readdir(fh, 0).unwrap();
    f.fs.releasedir(fh).unwrap();
    assert!(listed.iter().any(|e| e.name == "o" && e.ino == o));

    set(&f, o, SSE_ATTR, "KMS").unwrap();
    let default = f.keys.default_cmk().unwrap();
    assert_eq!(get(&f, o, SSE_KEY_ID_ATTR).unwrap(), default);
    let key = f
        .keys
        .create_cmk("t", Some("alias/team"), CmkOrigin::Ssefs, 0)
        .unwrap();
    set(&f, o, SSE_KEY_ID_ATTR, "alias/team").unwrap();
    assert_eq!(get(&f, o, SSE_KEY_ID_ATTR).unwrap(), key);
    assert_eq!(
        key_ref(&f, "bkt/o"),
        KeyRef::Cmk {
            key_id: key.clone(),
            version: 1
        }
    );
    assert_eq!(contents(&f, o), data);
    // Removing the attribute brings it under the bucket's rule (none: unencrypted).
    remove(&f, o, SSE_KEY_ID_ATTR).unwrap();
    assert_eq!(key_ref(&f, "bkt/o"), KeyRef::None);
    assert_eq!(contents(&f, o), data);
    assert_eq!(tmp_entries(&f), 0);
}

#[test]
fn matching_objects_are_left_alone() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, aes());
    let o = object(&f, b, "o", b"same");
    let backing = f.dir.path().join("bkt/o");
    let ino = std::fs::metadata(&backing).unwrap().ino();
    let file_id = get(&f, o, FILE_ID_ATTR).unwrap();
    assert_eq!(file_id.len(), 32);
    set(&f, o, SSE_ATTR, "AES256").unwrap();
    remove(&f, o, SSE_ATTR).unwrap();
    assert_eq!(std::fs::metadata(&backing).unwrap().ino(), ino);
    assert_eq!(get(&f, o, FILE_ID_ATTR).unwrap(), file_id);
    set(&f, o, SSE_ATTR, "KMS").unwrap();
    assert_ne!(get(&f, o, FILE_ID_ATTR).unwrap(), file_id);
    set(&f, o, SSE_ATTR, "AES256").unwrap();
    // A hard-linked object that matches is fine; one that must change is refused.
    f.fs.link(o, b, os("o2")).unwrap();
    set(&f, o, SSE_ATTR, "AES256").unwrap();
    assert_eq!(set(&f, o, SSE_ATTR, "KMS"), Err(libc::EMLINK));
    assert_eq!(key_ref(&f, "bkt/o"), KeyRef::Master { version: 1 });
    assert_eq!(contents(&f, o), b"same");
}

#[test]
fn failed_object_changes_change_nothing() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, aes());
    let o = object(&f, b, "o", b"precious");
    let backing = f.dir.path().join("bkt/o");
    let before = (std::fs::read(&backing).unwrap(), key_ref(&f, "bkt/o"));
    let disabled = f.keys.create_cmk("d", None, CmkOrigin::Ssefs, 0).unwrap();
    set_cmk_state(&f, &disabled, "Disabled");
    let cases = [
        (SSE_ATTR, "KMS ", libc::EINVAL),
        (SSE_ATTR, "none", libc::EINVAL),
        (SSE_KEY_ID_ATTR, "alias/team", libc::EINVAL),
    ];
    for (name, value, want) in cases {
        assert_eq!(set(&f, o, name, value), Err(want), "{name}={value}");
    }
    set(&f, o, SSE_ATTR, "KMS").unwrap();
    let before_kms = (std::fs::read(&backing).unwrap(), key_ref(&f, "bkt/o"));
    assert_ne!(before_kms, before);
    assert_eq!(set(&f, o, SSE_KEY_ID_ATTR, "alias/none"), Err(libc::ENOKEY));
    assert_eq!(
        set(&f, o, SSE_KEY_ID_ATTR, &disabled),
        Err(libc::EKEYREVOKED)
    );
    assert_eq!(set(&f, o, SSE_KEY_ID_ATTR, ""), Err(libc::EINVAL));
    let r =
        f.fs.setxattr(ROOT, o, os(SSE_ATTR), b"AES256", libc::XATTR_CREATE);
    assert_eq!(errno(r), libc::EEXIST);
    // Without write permission on the object.
    let r = f.fs.setxattr(USER, o, os(SSE_ATTR), b"AES256", 0);
    assert_eq!(errno(r), libc::EACCES);
    assert_eq!(
        (std::fs::read(&backing).unwrap(), key_ref(&f, "bkt/o")),
        before_kms
    );
    assert_eq!(contents(&f, o), b"precious");
    assert_eq!(tmp_entries(&f), 0);
    assert_eq!(std::fs::metadata(&backing).unwrap().nlink(), 1);
}

#[test]
fn open_handles_follow_the_reencrypted_object() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, aes());
    let (attr, fh) = f.fs.create(ROOT, b, os("o"), 0o600, libc::O_RDWR).unwrap();
    f.fs.write(fh, 0, b"before ").unwrap();
    set(&f, attr.ino, SSE_ATTR, "KMS").unwrap();
    // The handle writes into the new object, and a second open shares it.
    f.fs.write(fh, 7, b"after").unwrap();
    let reader = f.fs.open(ROOT, attr.ino, libc::O_RDONLY).unwrap();
    assert_eq!(f.fs.read(reader, 0, 100).unwrap(), b"before after");
    f.fs.fsync(fh).unwrap();
    f.fs.release(fh).unwrap();
    f.fs.release(reader).unwrap();
    assert!(matches!(key_ref(&f, "bkt/o"), KeyRef::Cmk { .. }));
    assert_eq!(contents(&f, attr.ino), b"before after");
    // An empty file costs nothing and takes its setting before any data.
    let (e, fh) = f.fs.create(ROOT, b, os("e"), 0o600, libc::O_RDWR).unwrap();
    remove(&f, e.ino, SSE_ATTR).unwrap();
    f.keys.delete_bucket_rule("bkt").unwrap();
    remove(&f, e.ino, SSE_ATTR).unwrap();
    assert_eq!(key_ref(&f, "bkt/e"), KeyRef::None);
    f.fs.write(fh, 0, b"plain").unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(contents(&f, e.ino), b"plain");
}

#[test]
fn sparse_objects_stay_sparse_and_read_the_same() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, aes());
    let (attr, fh) = f.fs.create(ROOT, b, os("s"), 0o600, libc::O_RDWR).unwrap();
    f.fs.write(fh, 10 << 20, b"tail").unwrap();
    f.fs.write(fh, 5, b"head").unwrap();
    f.fs.release(fh).unwrap();
    let before = contents(&f, attr.ino);
    set(&f, attr.ino, SSE_ATTR, "KMS").unwrap();
    assert_eq!(contents(&f, attr.ino), before);
    let used = std::fs::metadata(f.dir.path().join("bkt/s"))
        .unwrap()
        .blocks();
    assert!(used * 512 < 2 << 20, "{used} blocks");
}

#[test]
fn tampered_objects_are_not_reencrypted() {
    let f = fixture();
    let b = bucket_with(&f, "bkt", ROOT, aes());
    let o = object(&f, b, "o", &[7u8; 20_000]);
    let backing = f.dir.path().join("bkt/o");
    let mut bytes = std::fs::read(&backing).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&backing, &bytes).unwrap();
    let err = f.fs.setxattr(ROOT, o, os(SSE_ATTR), b"KMS", 0).unwrap_err();
    assert!(
        matches!(err, FsError::Crypto(CryptoError::Authentication(_))),
        "{err}"
    );
    assert_eq!(std::fs::read(&backing).unwrap(), bytes);
    assert_eq!(tmp_entries(&f), 0);
}

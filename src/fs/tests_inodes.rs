//! Tests of the inode table's numbers, generations and lookup counts when the backing
//! filesystem gives the number of a removed node to a new one while the kernel still knows
//! the old node (its `FORGET` not processed yet).

use super::inode::{NodeFd, Origin};
use super::tests::{ROOT, fixture};
use super::*;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The backing attributes of `name` in the directory `dir`, as if the node had `ino`.
fn stat_numbered(f: &BucketFs, dir: u64, name: &str, ino: u64) -> Stat {
    let dir = f.inodes.get(dir).unwrap();
    let mut stat = f
        .backing()
        .stat_at(dir.fd().unwrap().as_fd(), os(name))
        .unwrap();
    stat.ino = ino;
    stat
}

#[test]
fn a_node_made_with_a_known_number_gets_a_new_generation() {
    let f = fixture();
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("gens"), 0o755).unwrap().ino;
    let old = f.fs.mkdir(ROOT, bucket, os("old"), 0o755).unwrap();
    // Looked up again: the same node keeps its generation.
    let again = f.fs.lookup(bucket, os("old")).unwrap();
    assert_eq!((again.ino, again.generation), (old.ino, old.generation));
    f.fs.rmdir(bucket, os("old")).unwrap();
    // A new directory that got the number the kernel still knows (two lookups of it).
    f.fs.mkdir(ROOT, bucket, os("new"), 0o755).unwrap();
    let stat = stat_numbered(&f.fs, bucket, "new", old.ino);
    let parent = f.fs.inodes.get(bucket).unwrap();
    let new =
        f.fs.inodes
            .remember(&parent, os("new"), &stat, Origin::Made)
            .unwrap();
    assert_eq!(new.ino, old.ino);
    assert_ne!(
        new.generation, old.generation,
        "the kernel would take it for the old one"
    );
    // (The backing filesystem may really have given "new" the old number.)
    let counted = f.fs.lookup_count(old.ino).unwrap();
    // The kernel forgets the old node's two lookups: the new node stays known.
    f.fs.forget(old.ino, 2);
    let known =
        f.fs.inodes
            .get(old.ino)
            .expect("the new node is still known");
    assert_eq!(known.generation, new.generation);
    assert_eq!(f.fs.lookup_count(old.ino), Some(counted - 2));
    // Found by name (a lookup, a hard link), the same node keeps its generation.
    let found =
        f.fs.inodes
            .remember(&parent, os("new"), &stat, Origin::Found)
            .unwrap();
    assert_eq!(found.generation, new.generation);
}

/// The open object and backing file of an open regular file's inode.
fn open_parts(f: &BucketFs, ino: u64) -> (Arc<std::fs::File>, Arc<open_object::OpenObject>) {
    let inode = f.inodes.get(ino).unwrap();
    let object = lock(&inode.object).as_ref().unwrap().object.clone();
    match inode.fd().unwrap() {
        NodeFd::Open(file) => (file, object),
        NodeFd::Path(_) => panic!("an open object is served by its file"),
    }
}

#[test]
fn a_new_object_is_counted_before_a_forget_of_the_old_number_can_drop_it() {
    let f = fixture();
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("race"), 0o755).unwrap().ino;
    let (old, fh) =
        f.fs.create(ROOT, bucket, os("old"), 0o644, libc::O_WRONLY)
            .unwrap();
    f.fs.release(fh).unwrap();
    f.fs.unlink(bucket, os("old")).unwrap();
    // A new object whose backing file got the old number, created while the kernel's
    // FORGET of the old node (one lookup) is still on its way.
    let (made, fh) =
        f.fs.create(ROOT, bucket, os("new"), 0o644, libc::O_WRONLY)
            .unwrap();
    let (file, object) = open_parts(&f.fs, made.ino);
    let stat = stat_numbered(&f.fs, bucket, "new", old.ino);
    let preloaded = f.fs.inodes.preload(file, &stat, object);
    assert_ne!(preloaded.inode.generation, old.generation);
    // (The backing filesystem may really have given "new" the old number.)
    let counted = f.fs.lookup_count(old.ino).unwrap();
    // The FORGET lands before the create has answered: the new node must stay known.
    f.fs.forget(old.ino, 1);
    let known =
        f.fs.inodes
            .get(old.ino)
            .expect("the new object is still known");
    assert_eq!(known.generation, preloaded.inode.generation);
    assert_eq!(f.fs.lookup_count(old.ino), Some(counted - 1));
    f.fs.release(fh).unwrap();
}

#[test]
fn a_withdrawn_preload_gives_the_number_back_to_the_node_it_displaced() {
    let f = fixture();
    let bucket = f.fs.mkdir(ROOT, ROOT_INO, os("undo"), 0o755).unwrap().ino;
    let (old, fh) =
        f.fs.create(ROOT, bucket, os("old"), 0o644, libc::O_WRONLY)
            .unwrap();
    f.fs.release(fh).unwrap();
    let (made, fh) =
        f.fs.create(ROOT, bucket, os("new"), 0o644, libc::O_WRONLY)
            .unwrap();
    let (file, object) = open_parts(&f.fs, made.ino);
    let stat = stat_numbered(&f.fs, bucket, "new", old.ino);
    let counted = f.fs.lookup_count(old.ino).unwrap();
    let preloaded = f.fs.inodes.preload(file, &stat, object);
    assert_eq!(f.fs.lookup_count(old.ino), Some(counted + 1));
    f.fs.inodes.withdraw(preloaded);
    assert_eq!(f.fs.lookup_count(old.ino), Some(counted));
    let back = f.fs.inodes.get(old.ino).unwrap();
    assert_eq!(
        back.generation, old.generation,
        "the displaced node is back"
    );
    assert_eq!(f.fs.getattr(old.ino).unwrap().size, 0);
    // A preload over no earlier node leaves nothing behind when withdrawn.
    let (file, object) = open_parts(&f.fs, made.ino);
    let stat = stat_numbered(&f.fs, bucket, "new", u64::MAX - 7);
    let preloaded = f.fs.inodes.preload(file, &stat, object);
    f.fs.inodes.withdraw(preloaded);
    assert_eq!(f.fs.lookup_count(u64::MAX - 7), None);
    f.fs.release(fh).unwrap();
}

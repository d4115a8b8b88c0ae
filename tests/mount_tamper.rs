//! Tampering with backing files is detected through the mount: a flipped byte in a data page or
//! a cut-off tail reads as EIO, never as altered plaintext, and other objects stay readable.
//! So do the attacks of someone who can write the store but holds no root key: a forged
//! object (`none` included), an object copied from another store, a block put back to an older
//! version (alone, with its slot pair, or its whole group), an old block replayed after a
//! truncate, a written block turned into a hole, a group of a sparse object erased.

mod support;

use ssefs::crypto::{Algorithm, DEFAULT_BLOCK_SIZE, Key256, KeyRef, Object, StoreKey};
use ssefs::keystore::{Keystore, keystore_dir};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use support::cli::SSEFS;
use support::mount::{Mount, TestStore, mount_tests_enabled};
use support::rng::TestRng;

const P: u64 = DEFAULT_BLOCK_SIZE as u64;

/// Offset of block `k`'s slot pair for 4 KiB blocks (36 blocks per group), blocks below 36.
fn slot_pair_offset(k: u64) -> u64 {
    P + k * 112
}

/// Offset of block `k`'s data page, blocks below 36.
fn data_offset(k: u64) -> u64 {
    2 * P + k * P
}

fn set_aes256(bucket: &Path) {
    let out = Command::new("setfattr")
        .args(["-n", "user.oss.server-side-encryption", "-v", "AES256"])
        .arg(bucket)
        .output()
        .unwrap();
    assert!(out.status.success(), "setfattr: {out:?}");
}

/// Copies `len` bytes at `offset` of `from` over the same range of `to`.
fn put_back(from: &[u8], to: &Path, offset: u64, len: u64) {
    let f = OpenOptions::new().write(true).open(to).unwrap();
    f.write_all_at(&from[offset as usize..(offset + len) as usize], offset)
        .unwrap();
    f.sync_all().unwrap();
}

/// Zeroes `len` bytes at `offset` of the backing file `path`.
fn zero_range(path: &Path, offset: u64, len: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; len as usize], offset).unwrap();
    f.sync_all().unwrap();
}

/// A store with an AES256 bucket `enc` holding `enc/f`, three blocks of 0xAA, unmounted;
/// and the backing bytes of `enc/f`.
fn store_with_three_blocks() -> (TestStore, Vec<u8>) {
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("enc");
    set_aes256(&bucket);
    fs::write(bucket.join("f"), vec![0xAA; 3 * P as usize]).unwrap();
    assert!(mount.unmount().success());
    let before = fs::read(store.store.join("enc/f")).unwrap();
    (store, before)
}

/// Overwrites block 1 of `enc/f` with 0xBB through a mount.
fn overwrite_block_1(store: &TestStore) {
    let mount = Mount::new(store, &[]);
    let f = OpenOptions::new()
        .write(true)
        .open(mount.join("enc/f"))
        .unwrap();
    f.write_all_at(&vec![0xBB; P as usize], P).unwrap();
    drop(f);
    assert!(mount.unmount().success());
}

/// Writes over `path` an object that follows docs/FORMAT.md exactly, made with a store key
/// the attacker chose (the store id is public; the object-authentication key is not).
fn forge_none_object(store: &Path, path: &Path, content: &[u8]) {
    let store_id = Keystore::read_store_id(&keystore_dir(store)).unwrap();
    let guess = StoreKey::new(*store_id.as_bytes(), Key256::generate().unwrap());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let mut object = Object::create(
        file,
        &guess,
        Algorithm::None,
        KeyRef::None,
        None,
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    object.write_at(0, content).unwrap();
    object.close().unwrap();
}

/// Opens the object at `rel` of an unmounted store directly, with the store's keys (a
/// master key, or none), as a writer other than the mount would.
fn open_with_store_keys(store: &TestStore, rel: &str) -> Object<fs::File> {
    let root = ssefs::keystore::load_root_key_file(&store.root_key).unwrap();
    let keystore = Keystore::open(&keystore_dir(&store.store), &root).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.store.join(rel))
        .unwrap();
    let kek = match ssefs::crypto::peek_header(&file).unwrap().key_ref {
        KeyRef::Master { version } => Some(keystore.master_key_version(version).unwrap()),
        KeyRef::None => None,
        other => panic!("{rel}: a key this helper does not look up: {other:?}"),
    };
    Object::open(file, &keystore.store_key().unwrap(), kek.as_ref()).unwrap()
}

fn fsck(store: &TestStore) -> (bool, String) {
    let out = Command::new(SSEFS)
        .arg("fsck")
        .arg("--store")
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open backing file {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

fn assert_eio(path: &Path, what: &str) {
    let result = fs::read(path);
    match result {
        Ok(bytes) => panic!(
            "{what}: read of {} succeeded ({} bytes) but must fail with EIO",
            path.display(),
            bytes.len()
        ),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "{what}: expected EIO, got {e}"
        ),
    }
}

#[test]
fn tampered_objects_read_as_eio_and_others_stay_readable() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("tamper");
    let mut rng = TestRng::new(0x7A3);
    let flipped = rng.bytes(256 * 1024);
    let cut = rng.bytes(100_000);
    let intact = rng.bytes(256 * 1024);
    fs::write(bucket.join("flipped"), &flipped).unwrap();
    fs::write(bucket.join("cut"), &cut).unwrap();
    fs::write(bucket.join("intact"), &intact).unwrap();
    // Tamper while unmounted so no cache can answer for the store.
    let status = mount.unmount();
    assert!(status.success());

    let backing = store.store.join("tamper/flipped");
    let len = fs::metadata(&backing).unwrap().len();
    assert!(
        len >= flipped.len() as u64,
        "backing file shorter than the object"
    );
    // The middle of a 256 KiB object is inside a data page whatever the header size.
    flip_byte(&backing, len / 2);
    let backing_cut = store.store.join("tamper/cut");
    let cut_len = fs::metadata(&backing_cut).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&backing_cut)
        .unwrap()
        .set_len(cut_len - 1)
        .unwrap();

    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("tamper/flipped"), "flipped byte");
    assert_eio(&mount.join("tamper/cut"), "cut-off tail");
    assert_eq!(
        fs::read(mount.join("tamper/intact")).expect("intact object after tampering"),
        intact
    );
}

/// The kernel keeps a file's pages between opens, but any page it reads from the daemon again
/// is authenticated again: tampering while mounted shows as EIO once the cached pages go.
#[test]
fn tampering_while_mounted_reads_as_eio_once_cached_pages_are_dropped() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("tamper");
    let data = TestRng::new(0x7A4).bytes(256 * 1024);
    let path = bucket.join("live");
    fs::write(&path, &data).unwrap();
    assert_eq!(fs::read(&path).unwrap(), data, "first read");

    let backing = store.store.join("tamper/live");
    let len = fs::metadata(&backing).unwrap().len();
    flip_byte(&backing, len / 2);
    // Drop the mount's cached pages of the file, as memory pressure would.
    let file = fs::File::open(&path).unwrap();
    // SAFETY: plain system call on a descriptor `file` keeps open.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED)");
    drop(file);
    assert_eio(&path, "flipped byte while mounted");
}

/// Attack: a `none` object forged with a guessed store key, written over the backing file of
/// an AES256 object, and an object of the old format (whose `none` tags anyone can compute)
/// planted in the bucket. Both read as EIO, the log names them and fsck reports them.
#[test]
fn forged_none_objects_read_as_eio_are_logged_and_fsck_finds_them() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("enc");
    set_aes256(&bucket);
    fs::write(bucket.join("secret"), b"the real content").unwrap();
    assert!(mount.unmount().success());

    forge_none_object(&store.store, &store.store.join("enc/secret"), b"forged!");
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1/none.obj");
    fs::copy(old, store.store.join("enc/planted")).unwrap();

    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("enc/secret"), "forged none object");
    assert_eio(&mount.join("enc/planted"), "planted old-format object");
    let log = mount.log_text();
    assert!(log.contains("enc/secret"), "log names the object: {log}");
    assert!(log.contains("enc/planted"), "log names the object: {log}");
    assert!(mount.unmount().success());
    let (ok, report) = fsck(&store);
    assert!(!ok, "fsck must fail: {report}");
    assert!(report.contains("enc/secret"), "{report}");
    assert!(report.contains("enc/planted"), "{report}");
}

/// Attack: an object's backing file copied from another store (same format, its own keys).
#[test]
fn an_object_copied_from_another_store_reads_as_eio() {
    if !mount_tests_enabled() {
        return;
    }
    let ours = TestStore::new();
    let theirs = TestStore::new();
    for (store, content) in [(&ours, &b"ours"[..]), (&theirs, &b"theirs"[..])] {
        let mount = Mount::new(store, &[]);
        let bucket = mount.bucket("bkt");
        fs::write(bucket.join("plain"), content).unwrap();
        assert!(mount.unmount().success());
    }
    fs::copy(
        theirs.store.join("bkt/plain"),
        ours.store.join("bkt/copied"),
    )
    .unwrap();
    fs::copy(theirs.store.join("bkt/plain"), ours.store.join("bkt/plain")).unwrap();
    let mount = Mount::new(&ours, &[]);
    assert_eio(&mount.join("bkt/copied"), "object of another store");
    assert_eio(
        &mount.join("bkt/plain"),
        "object of another store over ours",
    );
    assert!(mount.unmount().success());
    let (ok, report) = fsck(&ours);
    assert!(!ok && report.contains("another store"), "{report}");
    assert!(report.contains("bkt/copied"), "{report}");
}

/// Attack: after a block is overwritten, its old data page is put back (its old slot is still
/// there): the block must not read its old content.
#[test]
fn a_block_put_back_to_its_old_version_reads_as_eio() {
    if !mount_tests_enabled() {
        return;
    }
    let (store, before) = store_with_three_blocks();
    let backing = store.store.join("enc/f");
    overwrite_block_1(&store);

    put_back(&before, &backing, data_offset(1), P);
    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("enc/f"), "block 1 put back to its old page");
}

/// Attack: a block cut by a truncate is put back (slot pair and page) after the object grew
/// again over it: it must not come back.
#[test]
fn a_block_from_before_a_truncate_is_not_replayed_into_an_extension() {
    if !mount_tests_enabled() {
        return;
    }
    let (store, before) = store_with_three_blocks();
    let backing = store.store.join("enc/f");

    let mount = Mount::new(&store, &[]);
    let path = mount.join("enc/f");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(P)
        .unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0xCC; 2 * P as usize], P).unwrap();
    drop(f);
    assert!(mount.unmount().success());

    put_back(&before, &backing, slot_pair_offset(2), 112);
    put_back(&before, &backing, data_offset(2), P);
    let mount = Mount::new(&store, &[]);
    assert_eio(
        &mount.join("enc/f"),
        "block 2 replayed from before the truncate",
    );
}

/// A store from before the object format floor: an object of format version 1 (here the
/// kept `none` fixture) reads, refuses writes with EROFS, is listed by fsck, and `ssefs
/// upgrade` rewrites it in the current format; after that the store refuses version 1.
#[test]
fn old_format_objects_are_read_only_listed_and_upgraded() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    mount.bucket("old");
    assert!(mount.unmount().success());
    // Lowering the floor outside ssefs, to let planted old-format objects in, is refused.
    let db = rusqlite::Connection::open(keystore_dir(&store.store).join("keystore.db")).unwrap();
    db.execute("UPDATE meta SET min_object_version = 1", [])
        .unwrap();
    drop(db);
    let root = ssefs::keystore::load_root_key_file(&store.root_key).unwrap();
    let refused = Keystore::open(&keystore_dir(&store.store), &root).err();
    assert!(
        refused.is_some_and(|e| e.to_string().contains("changed outside ssefs")),
        "a lowered floor is tampering"
    );
    let db = rusqlite::Connection::open(keystore_dir(&store.store).join("keystore.db")).unwrap();
    db.execute(
        &format!(
            "UPDATE meta SET min_object_version = {}",
            ssefs::crypto::FORMAT_VERSION
        ),
        [],
    )
    .unwrap();
    drop(db);
    // What the schema step leaves in a keystore from before the floor (sealed, as ssefs
    // writes it).
    Keystore::open(&keystore_dir(&store.store), &root)
        .unwrap()
        .set_object_format_floor_for_tests(1)
        .unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");
    let plaintext = fs::read(format!("{fixtures}/plaintext.bin")).unwrap();
    fs::copy(format!("{fixtures}/none.obj"), store.store.join("old/obj")).unwrap();

    let mount = Mount::new(&store, &[]);
    assert_eq!(fs::read(mount.join("old/obj")).unwrap(), plaintext);
    let write = OpenOptions::new()
        .write(true)
        .open(mount.join("old/obj"))
        .and_then(|f| f.write_all_at(b"x", 0));
    assert_eq!(
        write.unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "an old object is read-only"
    );
    assert!(mount.unmount().success());
    let (_, report) = fsck(&store);
    assert!(report.contains("older object format"), "{report}");
    assert!(report.contains("old/obj"), "{report}");

    let out = Command::new(SSEFS)
        .arg("upgrade")
        .arg("--store")
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "upgrade: {out:?}");
    assert!(text.contains("upgraded old/obj"), "{text}");
    let header = ssefs::crypto::peek_header(&fs::File::open(store.store.join("old/obj")).unwrap());
    assert_eq!(header.unwrap().version, ssefs::crypto::FORMAT_VERSION);
    let (ok, report) = fsck(&store);
    assert!(ok && !report.contains("older object format"), "{report}");

    fs::copy(
        format!("{fixtures}/none.obj"),
        store.store.join("old/again"),
    )
    .unwrap();
    let mount = Mount::new(&store, &[]);
    let path = mount.join("old/obj");
    assert_eq!(fs::read(&path).unwrap(), plaintext);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(b"new", 0)
        .unwrap();
    assert_eq!(&fs::read(&path).unwrap()[..3], b"new");
    assert_eio(&mount.join("old/again"), "version 1 after the upgrade");
}

/// Attack: in a sparse object, a written block's slot pair is zeroed so that it would read as
/// a hole; the group tag catches it. The object's real holes still read as zeros.
#[test]
fn a_written_block_turned_into_a_hole_reads_as_eio() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("enc");
    set_aes256(&bucket);
    let f = fs::File::create(bucket.join("sparse")).unwrap();
    f.write_all_at(&vec![0xAA; P as usize], 0).unwrap();
    f.write_all_at(&vec![0xBB; P as usize], 5 * P).unwrap();
    f.write_all_at(&vec![0xCC; P as usize], 7 * P).unwrap();
    drop(f);
    let data = fs::read(bucket.join("sparse")).unwrap();
    assert!(data[P as usize..5 * P as usize].iter().all(|&b| b == 0));
    assert!(mount.unmount().success());

    zero_range(&store.store.join("enc/sparse"), slot_pair_offset(5), 112);
    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("enc/sparse"), "block 5 zeroed into a hole");
}

/// Attack: an overwritten block is put back together with its slot pair (a complete older
/// version of the block): the block map in the header catches it. fsck names it, and `fsck
/// --repair` accepts the object as found only when asked (after a power loss, say).
#[test]
fn a_block_put_back_with_its_slot_pair_reads_as_eio_and_fsck_names_it() {
    if !mount_tests_enabled() {
        return;
    }
    let (store, before) = store_with_three_blocks();
    let backing = store.store.join("enc/f");
    overwrite_block_1(&store);
    let mount = Mount::new(&store, &[]);
    fs::write(mount.join("enc/other"), b"untouched").unwrap();
    assert!(mount.unmount().success());

    put_back(&before, &backing, slot_pair_offset(1), 112);
    put_back(&before, &backing, data_offset(1), P);
    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("enc/f"), "block 1 put back with its slot pair");
    assert_eq!(fs::read(mount.join("enc/other")).unwrap(), b"untouched");
    // The whole meta page (every slot pair and the group tag) put back: the same.
    assert!(mount.unmount().success());
    put_back(&before, &backing, P, P);
    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("enc/f"), "block 1 put back with its meta page");
    assert!(mount.unmount().success());

    let (ok, report) = fsck(&store);
    assert!(!ok, "{report}");
    assert!(report.contains("block-map-mismatch"), "{report}");
    assert!(report.contains("enc/f"), "{report}");
    let out = Command::new(SSEFS)
        .args(["fsck", "--repair", "--store"])
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "fsck --repair: {out:?}");
    let mount = Mount::new(&store, &[]);
    let data = fs::read(mount.join("enc/f")).unwrap();
    assert_eq!(
        data,
        vec![0xAA; 3 * P as usize],
        "the older version, accepted"
    );
}

/// Attack: a whole group of a sparse object (its meta page and every data page) is zeroed, so
/// that it would look never written and read as zeros.
#[test]
fn an_erased_group_of_a_sparse_object_reads_as_eio() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("enc");
    set_aes256(&bucket);
    let f = fs::File::create(bucket.join("sparse")).unwrap();
    f.write_all_at(&vec![0xAA; P as usize], 0).unwrap();
    f.write_all_at(&vec![0xBB; P as usize], 40 * P).unwrap();
    f.write_all_at(&vec![0xCC; P as usize], 80 * P).unwrap();
    drop(f);
    assert!(mount.unmount().success());

    // Group 1 holds blocks 36..72: its meta page follows group 0's 37 pages.
    zero_range(&store.store.join("enc/sparse"), P + 37 * P, 37 * P);
    let mount = Mount::new(&store, &[]);
    assert_eio(&mount.join("enc/sparse"), "group 1 erased");
}

/// A store that still holds objects of format version 2 (written by an earlier ssefs): they
/// read and write, a write session moves an object to version 3, and `ssefs upgrade` moves
/// the rest by rewriting their headers alone.
#[test]
fn version_2_objects_move_to_version_3_by_header_writes() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("plain");
    fs::write(bucket.join("written"), vec![1u8; 5 * P as usize]).unwrap();
    fs::write(bucket.join("kept"), vec![2u8; 5 * P as usize]).unwrap();
    assert!(mount.unmount().success());
    let root = ssefs::keystore::load_root_key_file(&store.root_key).unwrap();
    Keystore::open(&keystore_dir(&store.store), &root)
        .unwrap()
        .set_object_format_floor_for_tests(2)
        .unwrap();
    for name in ["written", "kept"] {
        let mut object = open_with_store_keys(&store, &format!("plain/{name}"));
        object.write_as_version_2_for_tests().unwrap();
    }
    let version = |name: &str| {
        let file = fs::File::open(store.store.join("plain").join(name)).unwrap();
        ssefs::crypto::peek_header(&file).unwrap().version
    };
    assert_eq!(version("kept"), 2);

    let mount = Mount::new(&store, &[]);
    assert_eq!(
        fs::read(mount.join("plain/kept")).unwrap(),
        vec![2u8; 5 * P as usize]
    );
    OpenOptions::new()
        .write(true)
        .open(mount.join("plain/written"))
        .unwrap()
        .write_all_at(b"v3", 0)
        .unwrap();
    assert!(mount.unmount().success());
    assert_eq!(version("written"), 3);
    assert_eq!(version("kept"), 2);
    let (_, report) = fsck(&store);
    assert!(
        report.contains("older object format") && report.contains("plain/kept"),
        "{report}"
    );

    let kept_before = fs::read(store.store.join("plain/kept")).unwrap();
    let out = Command::new(SSEFS)
        .arg("upgrade")
        .arg("--store")
        .arg(&store.store)
        .arg("--root-key")
        .arg(&store.root_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "upgrade: {out:?}");
    let kept_after = fs::read(store.store.join("plain/kept")).unwrap();
    assert_eq!(version("kept"), 3);
    assert_eq!(
        kept_before[P as usize..],
        kept_after[P as usize..],
        "only the header page changes"
    );
    let (ok, report) = fsck(&store);
    assert!(ok && !report.contains("older object format"), "{report}");
    let mount = Mount::new(&store, &[]);
    assert_eq!(
        fs::read(mount.join("plain/kept")).unwrap(),
        vec![2u8; 5 * P as usize]
    );
    let mut expected = vec![1u8; 5 * P as usize];
    expected[..2].copy_from_slice(b"v3");
    assert_eq!(fs::read(mount.join("plain/written")).unwrap(), expected);
}

/// An object left DIRTY (its writer stopped mid-session, or someone put back such a header)
/// has its block map taken as found until it is closed: never silently. fsck notes it, the
/// mount logs it when it opens it, and the close that follows commits the map again.
#[test]
fn an_object_left_dirty_is_noted_by_fsck_and_logged_by_the_mount() {
    if !mount_tests_enabled() {
        return;
    }
    let store = TestStore::new();
    let mount = Mount::new(&store, &[]);
    let bucket = mount.bucket("enc");
    set_aes256(&bucket);
    fs::write(bucket.join("f"), vec![7u8; 3 * P as usize]).unwrap();
    assert!(mount.unmount().success());

    // A writer that stops after its first write: the header keeps DIRTY.
    let mut object = open_with_store_keys(&store, "enc/f");
    object.write_at(0, b"interrupted").unwrap();
    assert!(object.is_dirty());
    drop(object);

    let (ok, report) = fsck(&store);
    assert!(ok, "{report}");
    assert!(
        report.contains("enc/f") && report.contains("was being written"),
        "{report}"
    );
    let mount = Mount::new(&store, &[]);
    let data = fs::read(mount.join("enc/f")).unwrap();
    assert_eq!(&data[..11], b"interrupted");
    let log = mount.log_text();
    assert!(
        log.contains("enc/f") && log.contains("was being written when its writer stopped"),
        "{log}"
    );
    assert!(mount.unmount().success());
    let (ok, report) = fsck(&store);
    assert!(ok && !report.contains("was being written"), "{report}");
}

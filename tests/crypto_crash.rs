//! Crash safety (invariant 4): every prefix of the backing writes of a series of operations,
//! and every page-boundary tear of a multi-page write, leaves an object that opens and whose
//! blocks each read as their content before or after the interrupted operation.

mod support;

use ssefs::crypto::{Algorithm, DEFAULT_BLOCK_SIZE, Key256, KeyRef, MemoryIo, Object, ObjectIo};
use std::io;
use std::sync::Mutex;
use support::keys::store_key;

const P: usize = DEFAULT_BLOCK_SIZE as usize;
/// The granularity at which the kernel may stop a write when the process is killed.
const PAGE: u64 = 4096;

#[derive(Clone, Debug)]
enum BackingOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// An [`ObjectIo`] over memory that records every change it is asked to make.
#[derive(Default)]
struct RecordingIo {
    inner: MemoryIo,
    log: Mutex<Vec<BackingOp>>,
}

impl RecordingIo {
    fn ops(&self) -> Vec<BackingOp> {
        self.log.lock().unwrap().clone()
    }
}

impl ObjectIo for RecordingIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(BackingOp::Write(offset, buf.to_vec()));
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.log.lock().unwrap().push(BackingOp::SetLen(len));
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Action {
    Write(u64, Vec<u8>),
    SetSize(u64),
    Sync,
}

fn apply(model: &mut Vec<u8>, action: &Action) {
    match action {
        Action::Write(offset, data) => {
            let end = *offset as usize + data.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[*offset as usize..end].copy_from_slice(data);
        }
        Action::SetSize(size) => model.resize(*size as usize, 0),
        Action::Sync => {}
    }
}

fn perform<I: ObjectIo>(object: &mut Object<I>, action: &Action) {
    match action {
        Action::Write(offset, data) => object.write_at(*offset, data).unwrap(),
        Action::SetSize(size) => object.set_size(*size).unwrap(),
        Action::Sync => object.sync().unwrap(),
    }
}

fn replay(image: &mut MemoryIo, op: &BackingOp) {
    match op {
        BackingOp::Write(offset, data) => image.write_at(data, *offset).unwrap(),
        BackingOp::SetLen(len) => image.set_len(*len).unwrap(),
    }
}

fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn key() -> Key256 {
    Key256::from_bytes(&[0x42; 32]).unwrap()
}

/// Byte `i` of a model, zero past its end (holes and extensions read as zeros).
fn zext(model: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    range.map(|i| model.get(i).copied().unwrap_or(0)).collect()
}

/// Opens a crash image and checks it against the states before and after the interrupted
/// operation; then checks that closing repairs it into a clean object with the same bytes.
fn check_image(bytes: Vec<u8>, before: &[u8], after: &[u8], what: &str) {
    let key = key();
    let object = Object::open(MemoryIo::from_bytes(bytes), &store_key(), Some(&key))
        .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let size = object.size() as usize;
    assert!(
        size == before.len() || size == after.len(),
        "{what}: size {size}"
    );
    let mut content = vec![0u8; size];
    object
        .read_at(0, &mut content)
        .unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
    for (k, got) in content.chunks(P).enumerate() {
        let range = k * P..k * P + got.len();
        assert!(
            got == zext(before, range.clone()) || got == zext(after, range),
            "{what}: block {k} is neither old nor new"
        );
    }
    // Recovery: close the interrupted session, reopen clean, then keep writing.
    let io = object
        .close()
        .unwrap_or_else(|e| panic!("{what}: close failed: {e}"));
    let mut object = Object::open(io, &store_key(), Some(&key))
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert!(!object.is_dirty());
    let mut again = vec![0u8; size];
    object.read_at(0, &mut again).unwrap();
    assert_eq!(again, content, "{what}: content changed by recovery");
    object.write_at(size as u64 + 5, b"after recovery").unwrap();
    let io = object.close().unwrap();
    let object = Object::open(io, &store_key(), Some(&key)).unwrap();
    let mut extended = vec![0u8; object.size() as usize];
    object.read_at(0, &mut extended).unwrap();
    let mut expected = content;
    expected.extend_from_slice(&[0u8; 5]);
    expected.extend_from_slice(b"after recovery");
    assert_eq!(extended, expected, "{what}: write after recovery");
}

/// Runs `actions` on an object built by `setup`, then replays every prefix and tear.
fn crash_scenario(name: &str, setup: &[Action], actions: &[Action]) -> usize {
    let key = key();
    let mut object = Object::create(
        MemoryIo::default(),
        &store_key(),
        Algorithm::Aes256,
        KeyRef::Master { version: 1 },
        Some(&key),
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    let mut model = Vec::new();
    for action in setup {
        perform(&mut object, action);
        apply(&mut model, action);
    }
    let pre_state = object.close().unwrap().snapshot().unwrap();

    let recorder = RecordingIo {
        inner: MemoryIo::from_bytes(pre_state.clone()),
        ..Default::default()
    };
    let mut object = Object::open(recorder, &store_key(), Some(&key)).unwrap();
    let mut states = vec![model.clone()];
    let mut bounds = vec![0];
    for action in actions {
        perform(&mut object, action);
        apply(&mut model, action);
        states.push(model.clone());
        bounds.push(object.io().ops().len());
    }
    let io = object.close().unwrap();
    let ops = io.ops();
    states.push(model.clone());
    bounds.push(ops.len());

    let mut images = 0;
    let mut image = MemoryIo::from_bytes(pre_state);
    for (i, op) in ops.iter().enumerate() {
        // The action in progress when the process dies after `i` backing operations.
        let m = bounds.iter().rposition(|&b| b <= i).unwrap();
        let (before, after) = (&states[m], &states[(m + 1).min(states.len() - 1)]);
        check_image(
            image.snapshot().unwrap(),
            before,
            after,
            &format!("{name}: after {i} ops"),
        );
        images += 1;
        if let BackingOp::Write(offset, data) = op {
            let end = offset + data.len() as u64;
            let mut tear = (offset / PAGE + 1) * PAGE;
            while tear < end {
                let torn = MemoryIo::from_bytes(image.snapshot().unwrap());
                let cut = (tear - offset) as usize;
                torn.write_at(&data[..cut], *offset).unwrap();
                let what = format!("{name}: op {i} torn at {tear}");
                check_image(torn.snapshot().unwrap(), before, after, &what);
                images += 1;
                tear += PAGE;
            }
        }
        replay(&mut image, op);
    }
    let last = states.last().unwrap();
    check_image(
        image.snapshot().unwrap(),
        last,
        last,
        &format!("{name}: complete"),
    );
    images + 1
}

#[test]
fn overwrites_survive_every_crash_point() {
    let setup = [Action::Write(0, fill(6 * P + 300, 1))];
    let actions = [
        Action::Write(0, fill(3 * P, 2)),
        Action::Write(P as u64, fill(3 * P, 3)),
        Action::Write(P as u64, fill(2 * P, 4)),
        Action::Write(100, fill(50, 5)),
        Action::Write(2 * P as u64 - 10, fill(20, 6)),
        Action::Sync,
        Action::Write(5 * P as u64 + 7, fill(400, 7)),
    ];
    let images = crash_scenario("overwrites", &setup, &actions);
    assert!(images > 15, "{images}");
}

#[test]
fn appends_across_a_group_survive_every_crash_point() {
    let setup = [Action::Write(0, fill(34 * P + 10, 1))];
    let actions = [
        Action::Write(34 * P as u64 + 10, fill(4 * P, 2)),
        Action::Write(40 * P as u64 + 1, fill(10, 3)),
        Action::Write(33 * P as u64, fill(5 * P, 4)),
    ];
    let images = crash_scenario("appends", &setup, &actions);
    assert!(images > 20, "{images}");
}

#[test]
fn truncation_and_extension_survive_every_crash_point() {
    let setup = [
        Action::Write(0, fill(8 * P + 100, 1)),
        Action::Write(P as u64, fill(2 * P, 9)),
    ];
    let actions = [
        Action::SetSize(3 * P as u64 + 50),
        Action::SetSize(6 * P as u64),
        Action::Write(4 * P as u64 + 3, fill(10, 2)),
        Action::SetSize(P as u64 / 2),
        Action::Write(P as u64, fill(P, 3)),
        Action::SetSize(0),
        Action::Write(10, fill(10, 4)),
    ];
    let images = crash_scenario("truncation", &setup, &actions);
    assert!(images > 20, "{images}");
}

#[test]
fn filling_holes_survives_every_crash_point() {
    let setup = [
        Action::Write(0, fill(100, 1)),
        Action::Write(45 * P as u64, fill(100, 2)),
    ];
    let actions = [
        Action::Write(34 * P as u64, fill(4 * P, 3)),
        Action::Write(34 * P as u64, fill(4 * P, 4)),
        Action::Write(34 * P as u64 + 1, fill(4 * P - 2, 5)),
        Action::Write(40 * P as u64 + 9, fill(9, 6)),
        Action::Write(2 * P as u64, fill(P, 7)),
        Action::SetSize(44 * P as u64),
        Action::SetSize(90 * P as u64),
    ];
    let images = crash_scenario("holes", &setup, &actions);
    assert!(images > 20, "{images}");
}

//! A randomized model test, in the spirit of fsx and of mountpoint-s3's reference tests: random
//! operation sequences run against a target (a real mount, or the fs core) and against a small
//! in-memory model of POSIX semantics, and every answer (data, sizes, errno, listings) must agree.
//! A failing sequence is shrunk by removing operations and printed with its seed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// An errno.
pub type Errno = i32;

pub const BLOCK: u64 = 4096;
/// Blocks per meta page group of the object format.
pub const GROUP: u64 = 36 * BLOCK;

/// The names operations use: two plain ones and one that is not UTF-8.
pub const NAMES: [&[u8]; 3] = [b"a", b"b", b"c\xff\xfe"];

/// Every path operations pick from: depth 1 and 2 over [`NAMES`].
pub fn paths() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = NAMES.iter().map(|n| n.to_vec()).collect();
    for a in NAMES {
        for b in NAMES {
            let mut p = a.to_vec();
            p.push(b'/');
            p.extend_from_slice(b);
            out.push(p);
        }
    }
    out
}

/// One operation. Paths index [`paths()`]; handles index the open handles (modulo their count,
/// so a shrunk sequence stays meaningful); `dir: None` is the run's root directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Create {
        path: usize,
    },
    Open {
        path: usize,
        trunc: bool,
    },
    Write {
        h: usize,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Read {
        h: usize,
        offset: u64,
        len: usize,
    },
    Truncate {
        h: usize,
        size: u64,
    },
    TruncatePath {
        path: usize,
        size: u64,
    },
    Fsync {
        h: usize,
    },
    Close {
        h: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        path: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Mkdir {
        path: usize,
    },
    Rmdir {
        path: usize,
    },
    Stat {
        path: usize,
    },
    ReadDir {
        dir: Option<usize>,
    },
    ReadFile {
        path: usize,
    },
    SetSse {
        path: usize,
        kms: bool,
    },
    Remount,
}

/// Kinds of nodes, as `stat` tells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What `stat` answers that the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatInfo {
    pub kind: Kind,
    /// Files only (directories report 0 here).
    pub size: u64,
    /// Files only (directories report 0 here).
    pub nlink: u64,
}

/// The system under test. Paths are relative to the run's root directory (`b""` is the root).
/// Handles are numbered in the order they were opened; the runner keeps them in step with the
/// model.
pub trait Target {
    /// Starts a fresh, empty run directory.
    fn begin(&mut self);
    /// Closes every handle (end of a run).
    fn end(&mut self);
    fn create(&mut self, path: &[u8]) -> Result<(), Errno>;
    fn open(&mut self, path: &[u8], trunc: bool) -> Result<(), Errno>;
    fn write(&mut self, h: usize, offset: u64, data: &[u8]) -> Result<(), Errno>;
    fn read(&mut self, h: usize, offset: u64, len: usize) -> Result<Vec<u8>, Errno>;
    fn truncate(&mut self, h: usize, size: u64) -> Result<(), Errno>;
    fn truncate_path(&mut self, path: &[u8], size: u64) -> Result<(), Errno>;
    fn fsync(&mut self, h: usize) -> Result<(), Errno>;
    fn close(&mut self, h: usize) -> Result<(), Errno>;
    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno>;
    fn unlink(&mut self, path: &[u8]) -> Result<(), Errno>;
    fn link(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno>;
    fn mkdir(&mut self, path: &[u8]) -> Result<(), Errno>;
    fn rmdir(&mut self, path: &[u8]) -> Result<(), Errno>;
    fn stat(&mut self, path: &[u8]) -> Result<StatInfo, Errno>;
    /// Entry names without `.` and `..`, sorted.
    fn read_dir(&mut self, path: &[u8]) -> Result<Vec<Vec<u8>>, Errno>;
    fn read_file(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno>;
    /// `user.oss.server-side-encryption` of a file.
    fn get_sse(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno>;
    fn set_sse(&mut self, path: &[u8], value: &[u8]) -> Result<(), Errno>;
    /// Closes every handle, unmounts and mounts again (or the core equivalent).
    fn remount(&mut self);
}

// ---------------------------------------------------------------------------------------------
// Random generation
// ---------------------------------------------------------------------------------------------

/// The seeded generator, so a seed reproduces a case exactly.
pub use super::rng::TestRng as Rng;

/// The bytes a `Write` op writes: a pure function of its seed and length.
pub fn data_for(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An offset near the interesting places: block and group boundaries, small offsets, far ones.
fn position(rng: &mut Rng) -> u64 {
    let jitter = |rng: &mut Rng, base: u64| {
        let d = rng.below(80);
        if rng.chance(50) {
            base.saturating_sub(d)
        } else {
            base + d
        }
    };
    match rng.below(6) {
        0 => rng.below(2 * BLOCK),
        1 => {
            let k = 1 + rng.below(10);
            jitter(rng, k * BLOCK)
        }
        2 => {
            let k = 1 + rng.below(2);
            jitter(rng, k * GROUP)
        }
        3 => rng.below(2 * GROUP + 4 * BLOCK),
        4 => 0,
        _ => rng.below(6 * BLOCK),
    }
}

fn length(rng: &mut Rng) -> usize {
    (match rng.below(10) {
        0..=2 => 1 + rng.below(100),
        3..=7 => 1 + rng.below(3 * BLOCK + 200),
        _ => 1 + rng.below(40 * BLOCK),
    }) as usize
}

/// Which operations a run may generate.
#[derive(Clone, Copy, Debug)]
pub struct OpMix {
    /// Setting the encryption attributes (when the target supports re-encryption).
    pub set_sse: bool,
    /// Per-mille of operations that remount.
    pub remount_per_mille: u64,
}

/// Picks a path index: usually one that satisfies `want` in the model, else any.
fn pick(rng: &mut Rng, model: &Model, want: impl Fn(&Model, &[u8]) -> bool) -> usize {
    let all = paths();
    let fitting: Vec<usize> = (0..all.len()).filter(|&i| want(model, &all[i])).collect();
    if !fitting.is_empty() && rng.chance(85) {
        fitting[rng.below(fitting.len() as u64) as usize]
    } else {
        rng.below(all.len() as u64) as usize
    }
}

fn exists_file(m: &Model, p: &[u8]) -> bool {
    m.is_file(p)
}
fn exists_dir(m: &Model, p: &[u8]) -> bool {
    matches!(
        m.stat(p),
        Ok(StatInfo {
            kind: Kind::Dir,
            ..
        })
    )
}
fn exists(m: &Model, p: &[u8]) -> bool {
    m.stat(p).is_ok()
}
/// A name that can be created: its parent is a directory and it does not exist.
fn creatable(m: &Model, p: &[u8]) -> bool {
    let parent_ok = match p.iter().rposition(|b| *b == b'/') {
        Some(i) => exists_dir(m, &p[..i]),
        None => true,
    };
    parent_ok && !exists(m, p)
}

/// A random operation sequence of `count` ops. Choices lean (not always) towards paths that
/// exist or can be created in a model that follows the sequence, so most operations do work.
pub fn generate(seed: u64, count: usize, mix: OpMix) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut model = Model::new(b"AES256");
    let mut ops = Vec::with_capacity(count);
    while ops.len() < count {
        let h = rng.below(8) as usize;
        let op = if rng.below(1000) < mix.remount_per_mille {
            Op::Remount
        } else {
            let mut roll = rng.below(100);
            if model.handle_count() == 0 && (14..=33).contains(&roll) {
                roll = if rng.chance(50) { 0 } else { 8 };
            }
            match roll {
                0..=7 => Op::Create {
                    path: pick(&mut rng, &model, creatable),
                },
                8..=13 => Op::Open {
                    path: pick(&mut rng, &model, exists_file),
                    trunc: rng.chance(15),
                },
                14..=29 => Op::Write {
                    h,
                    offset: position(&mut rng),
                    len: length(&mut rng),
                    seed: rng.next_u64(),
                },
                30..=41 => Op::Read {
                    h,
                    offset: position(&mut rng),
                    len: length(&mut rng),
                },
                42..=47 => Op::Truncate {
                    h,
                    size: position(&mut rng),
                },
                48..=50 => Op::TruncatePath {
                    path: pick(&mut rng, &model, exists_file),
                    size: position(&mut rng),
                },
                51..=54 => Op::Fsync { h },
                55..=60 => Op::Close { h },
                61..=67 => Op::Rename {
                    from: pick(&mut rng, &model, exists),
                    to: if rng.chance(40) {
                        pick(&mut rng, &model, exists)
                    } else {
                        pick(&mut rng, &model, creatable)
                    },
                },
                68..=71 => Op::Unlink {
                    path: pick(&mut rng, &model, exists_file),
                },
                72..=74 => Op::Link {
                    from: pick(&mut rng, &model, exists_file),
                    to: pick(&mut rng, &model, creatable),
                },
                75..=79 => Op::Mkdir {
                    path: pick(&mut rng, &model, creatable),
                },
                80..=82 => Op::Rmdir {
                    path: pick(&mut rng, &model, exists_dir),
                },
                83..=86 => Op::Stat {
                    path: pick(&mut rng, &model, exists),
                },
                87..=89 => Op::ReadDir {
                    dir: if rng.chance(30) {
                        None
                    } else {
                        Some(pick(&mut rng, &model, exists_dir))
                    },
                },
                90..=94 => Op::ReadFile {
                    path: pick(&mut rng, &model, exists_file),
                },
                _ if mix.set_sse => Op::SetSse {
                    path: pick(&mut rng, &model, exists_file),
                    kms: rng.chance(50),
                },
                _ => Op::Stat {
                    path: pick(&mut rng, &model, exists_file),
                },
            }
        };
        apply(&mut model, &op);
        ops.push(op);
    }
    ops
}

/// Applies an op to the model alone (for generation).
fn apply(model: &mut Model, op: &Op) {
    let p = paths();
    let handle = |model: &Model, h: usize| {
        let n = model.handle_count();
        if n == 0 { None } else { Some(h % n) }
    };
    match op {
        Op::Create { path } => drop(model.create(&p[*path])),
        Op::Open { path, trunc } => drop(model.open(&p[*path], *trunc)),
        Op::Write { h, offset, len, .. } => {
            if let Some(h) = handle(model, *h) {
                model.write(h, *offset, &vec![1u8; *len]);
            }
        }
        Op::Truncate { h, size } => {
            if let Some(h) = handle(model, *h) {
                model.truncate(h, *size);
            }
        }
        Op::TruncatePath { path, size } => drop(model.truncate_path(&p[*path], *size)),
        Op::Close { h } => {
            if let Some(h) = handle(model, *h) {
                model.close(h);
            }
        }
        Op::Rename { from, to } => drop(model.rename(&p[*from], &p[*to])),
        Op::Unlink { path } => drop(model.unlink(&p[*path])),
        Op::Link { from, to } => drop(model.link(&p[*from], &p[*to])),
        Op::Mkdir { path } => drop(model.mkdir(&p[*path])),
        Op::Rmdir { path } => drop(model.rmdir(&p[*path])),
        Op::Remount => model.close_all(),
        Op::Read { .. }
        | Op::Fsync { .. }
        | Op::Stat { .. }
        | Op::ReadDir { .. }
        | Op::ReadFile { .. }
        | Op::SetSse { .. } => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Entry {
    File(u64),
    Dir(Dir),
}

#[derive(Clone, Debug, Default)]
struct Dir {
    entries: BTreeMap<Vec<u8>, Entry>,
}

#[derive(Clone, Debug)]
struct FileNode {
    data: Vec<u8>,
    nlink: u64,
    sse: &'static [u8],
}

/// POSIX semantics of the operations, in memory.
#[derive(Clone, Debug)]
pub struct Model {
    root: Dir,
    files: HashMap<u64, FileNode>,
    next_file: u64,
    /// Open handles: the file each refers to.
    handles: Vec<u64>,
    default_sse: &'static [u8],
}

fn split(path: &[u8]) -> Vec<&[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

impl Model {
    pub fn new(default_sse: &'static [u8]) -> Model {
        Model {
            root: Dir::default(),
            files: HashMap::new(),
            next_file: 1,
            handles: Vec::new(),
            default_sse,
        }
    }

    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    /// The directory at `comps` (each component must exist and be a directory).
    fn dir(&self, comps: &[&[u8]]) -> Result<&Dir, Errno> {
        let mut dir = &self.root;
        for c in comps {
            match dir.entries.get(*c) {
                None => return Err(libc::ENOENT),
                Some(Entry::File(_)) => return Err(libc::ENOTDIR),
                Some(Entry::Dir(d)) => dir = d,
            }
        }
        Ok(dir)
    }

    fn dir_mut(&mut self, comps: &[&[u8]]) -> &mut Dir {
        let mut dir = &mut self.root;
        for c in comps {
            dir = match dir.entries.get_mut(*c) {
                Some(Entry::Dir(d)) => d,
                _ => unreachable!("dir_mut on a path checked with dir()"),
            };
        }
        dir
    }

    /// The entry at `path`: errors of the parent walk, then `ENOENT`.
    fn lookup(&self, path: &[u8]) -> Result<&Entry, Errno> {
        let comps = split(path);
        let (last, parent) = comps.split_last().ok_or(libc::EINVAL)?;
        self.dir(parent)?.entries.get(*last).ok_or(libc::ENOENT)
    }

    fn parent_and_name<'p>(&self, path: &'p [u8]) -> Result<(Vec<&'p [u8]>, &'p [u8]), Errno> {
        let comps = split(path);
        let (last, parent) = comps.split_last().ok_or(libc::EINVAL)?;
        self.dir(parent)?;
        Ok((parent.to_vec(), last))
    }

    fn drop_link(&mut self, file: u64) {
        if let Some(node) = self.files.get_mut(&file) {
            node.nlink -= 1;
        }
        self.collect(file);
    }

    /// Forgets a file with no names and no open handles.
    fn collect(&mut self, file: u64) {
        let unused = self
            .files
            .get(&file)
            .is_some_and(|n| n.nlink == 0 && !self.handles.contains(&file));
        if unused {
            self.files.remove(&file);
        }
    }

    fn drop_tree(&mut self, entry: Entry) {
        match entry {
            Entry::File(f) => self.drop_link(f),
            Entry::Dir(d) => {
                for (_, e) in d.entries {
                    self.drop_tree(e);
                }
            }
        }
    }

    pub fn create(&mut self, path: &[u8]) -> Result<(), Errno> {
        let (parent, name) = self.parent_and_name(path)?;
        if self.dir(&parent)?.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let file = self.next_file;
        self.next_file += 1;
        self.files.insert(
            file,
            FileNode {
                data: Vec::new(),
                nlink: 1,
                sse: self.default_sse,
            },
        );
        self.dir_mut(&parent)
            .entries
            .insert(name.to_vec(), Entry::File(file));
        self.handles.push(file);
        Ok(())
    }

    pub fn open(&mut self, path: &[u8], trunc: bool) -> Result<(), Errno> {
        let file = match self.lookup(path)? {
            Entry::Dir(_) => return Err(libc::EISDIR),
            Entry::File(f) => *f,
        };
        if trunc {
            self.node(file).data.clear();
        }
        self.handles.push(file);
        Ok(())
    }

    fn node(&mut self, file: u64) -> &mut FileNode {
        self.files.get_mut(&file).expect("file of a live handle")
    }

    fn handle_file(&self, h: usize) -> u64 {
        self.handles[h]
    }

    pub fn write(&mut self, h: usize, offset: u64, data: &[u8]) {
        let node = self.node(self.handle_file(h));
        let end = offset as usize + data.len();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[offset as usize..end].copy_from_slice(data);
    }

    pub fn read(&mut self, h: usize, offset: u64, len: usize) -> Vec<u8> {
        let node = self.node(self.handle_file(h));
        let start = (offset as usize).min(node.data.len());
        let end = (start + len).min(node.data.len());
        node.data[start..end].to_vec()
    }

    pub fn truncate(&mut self, h: usize, size: u64) {
        let file = self.handle_file(h);
        self.node(file).data.resize(size as usize, 0);
    }

    pub fn truncate_path(&mut self, path: &[u8], size: u64) -> Result<(), Errno> {
        let file = match self.lookup(path)? {
            Entry::Dir(_) => return Err(libc::EISDIR),
            Entry::File(f) => *f,
        };
        self.node(file).data.resize(size as usize, 0);
        Ok(())
    }

    pub fn close(&mut self, h: usize) {
        let file = self.handles.remove(h);
        self.collect(file);
    }

    pub fn close_all(&mut self) {
        while !self.handles.is_empty() {
            self.close(0);
        }
    }

    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        let (old_parent, old_name) = self.parent_and_name(from)?;
        let (new_parent, new_name) = self.parent_and_name(to)?;
        let old_comps = split(from);
        let new_comps = split(to);
        let source = self.lookup(from)?.clone();
        if old_comps == new_comps {
            return Ok(());
        }
        // The source may not be an ancestor of the target, nor the target of the source.
        if new_comps.starts_with(&old_comps) {
            return Err(libc::EINVAL);
        }
        if old_comps.starts_with(&new_comps) {
            return Err(libc::ENOTEMPTY);
        }
        let target = self.dir(&new_parent)?.entries.get(new_name).cloned();
        match (&source, &target) {
            (Entry::File(a), Some(Entry::File(b))) if a == b => return Ok(()),
            (Entry::Dir(_), Some(Entry::File(_))) => return Err(libc::ENOTDIR),
            (Entry::File(_), Some(Entry::Dir(_))) => return Err(libc::EISDIR),
            (Entry::Dir(_), Some(Entry::Dir(d))) if !d.entries.is_empty() => {
                return Err(libc::ENOTEMPTY);
            }
            _ => {}
        }
        let moved = self
            .dir_mut(&old_parent)
            .entries
            .remove(old_name)
            .expect("source present");
        let replaced = self
            .dir_mut(&new_parent)
            .entries
            .insert(new_name.to_vec(), moved);
        if let Some(replaced) = replaced {
            self.drop_tree(replaced);
        }
        Ok(())
    }

    pub fn unlink(&mut self, path: &[u8]) -> Result<(), Errno> {
        let file = match self.lookup(path)? {
            Entry::Dir(_) => return Err(libc::EISDIR),
            Entry::File(f) => *f,
        };
        let (parent, name) = self.parent_and_name(path)?;
        self.dir_mut(&parent).entries.remove(name);
        self.drop_link(file);
        Ok(())
    }

    pub fn link(&mut self, from: &[u8], to: &[u8]) -> Result<(), Errno> {
        let source = self.lookup(from)?.clone();
        let (parent, name) = self.parent_and_name(to)?;
        if self.dir(&parent)?.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let Entry::File(file) = source else {
            return Err(libc::EPERM);
        };
        self.node(file).nlink += 1;
        self.dir_mut(&parent)
            .entries
            .insert(name.to_vec(), Entry::File(file));
        Ok(())
    }

    pub fn mkdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        let (parent, name) = self.parent_and_name(path)?;
        if self.dir(&parent)?.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.dir_mut(&parent)
            .entries
            .insert(name.to_vec(), Entry::Dir(Dir::default()));
        Ok(())
    }

    pub fn rmdir(&mut self, path: &[u8]) -> Result<(), Errno> {
        match self.lookup(path)? {
            Entry::File(_) => return Err(libc::ENOTDIR),
            Entry::Dir(d) if !d.entries.is_empty() => return Err(libc::ENOTEMPTY),
            Entry::Dir(_) => {}
        }
        let (parent, name) = self.parent_and_name(path)?;
        self.dir_mut(&parent).entries.remove(name);
        Ok(())
    }

    pub fn stat(&self, path: &[u8]) -> Result<StatInfo, Errno> {
        Ok(match self.lookup(path)? {
            Entry::Dir(_) => StatInfo {
                kind: Kind::Dir,
                size: 0,
                nlink: 0,
            },
            Entry::File(f) => {
                let node = &self.files[f];
                StatInfo {
                    kind: Kind::File,
                    size: node.data.len() as u64,
                    nlink: node.nlink,
                }
            }
        })
    }

    pub fn read_dir(&self, path: &[u8]) -> Result<Vec<Vec<u8>>, Errno> {
        let dir = if split(path).is_empty() {
            &self.root
        } else {
            match self.lookup(path)? {
                Entry::File(_) => return Err(libc::ENOTDIR),
                Entry::Dir(d) => d,
            }
        };
        Ok(dir.entries.keys().cloned().collect())
    }

    pub fn read_file(&self, path: &[u8]) -> Result<Vec<u8>, Errno> {
        match self.lookup(path)? {
            Entry::Dir(_) => Err(libc::EISDIR),
            Entry::File(f) => Ok(self.files[f].data.clone()),
        }
    }

    pub fn is_file(&self, path: &[u8]) -> bool {
        matches!(self.lookup(path), Ok(Entry::File(_)))
    }

    pub fn sse(&self, path: &[u8]) -> Option<&'static [u8]> {
        match self.lookup(path) {
            Ok(Entry::File(f)) => Some(self.files[f].sse),
            _ => None,
        }
    }

    /// Re-encrypts a file under `value`: nothing to do when it already matches; a file with
    /// several hard links cannot be replaced atomically under all its names (`EMLINK`).
    pub fn set_sse(&mut self, path: &[u8], value: &'static [u8]) -> Result<(), Errno> {
        let Ok(Entry::File(f)) = self.lookup(path) else {
            return Err(libc::ENOENT);
        };
        let f = *f;
        let node = self.node(f);
        if node.sse == value {
            return Ok(());
        }
        if node.nlink > 1 {
            return Err(libc::EMLINK);
        }
        node.sse = value;
        Ok(())
    }

    /// Every path in the tree (files and directories), parents first.
    pub fn all_paths(&self) -> Vec<Vec<u8>> {
        fn walk(dir: &Dir, prefix: &[u8], out: &mut Vec<Vec<u8>>) {
            for (name, entry) in &dir.entries {
                let mut path = prefix.to_vec();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                out.push(path.clone());
                if let Entry::Dir(d) = entry {
                    walk(d, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, b"", &mut out);
        out
    }

    /// The contents of every file still reachable or open (for plaintext scans).
    pub fn all_data(&self) -> Vec<&[u8]> {
        self.files.values().map(|n| n.data.as_slice()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running and shrinking
// ---------------------------------------------------------------------------------------------

/// Where and why a run disagreed with the model.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub step: usize,
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}", self.step, self.message)
    }
}

pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn errno_name(e: Errno) -> String {
    format!("{e} ({})", std::io::Error::from_raw_os_error(e))
}

fn same<T: PartialEq + fmt::Debug>(
    what: &str,
    want: Result<T, Errno>,
    got: Result<T, Errno>,
) -> Result<(), String> {
    match (&want, &got) {
        (Ok(w), Ok(g)) if w == g => Ok(()),
        (Err(w), Err(g)) if w == g => Ok(()),
        (Ok(_), Ok(_)) => Err(format!(
            "{what}: results differ (model {want:?}, target {got:?})"
        )),
        (Err(w), Err(g)) => Err(format!(
            "{what}: model errno {}, target errno {}",
            errno_name(*w),
            errno_name(*g)
        )),
        (Ok(_), Err(g)) => Err(format!(
            "{what}: model succeeds, target fails with {}",
            errno_name(*g)
        )),
        (Err(w), Ok(_)) => Err(format!(
            "{what}: model fails with {}, target succeeds",
            errno_name(*w)
        )),
    }
}

/// Compares data without printing megabytes.
fn same_bytes(
    what: &str,
    want: &Result<Vec<u8>, Errno>,
    got: &Result<Vec<u8>, Errno>,
) -> Result<(), String> {
    match (want, got) {
        (Ok(w), Ok(g)) if w == g => Ok(()),
        (Ok(w), Ok(g)) => {
            let first = w.iter().zip(g.iter()).position(|(a, b)| a != b);
            Err(format!(
                "{what}: model has {} bytes, target {} bytes, first difference at {:?}",
                w.len(),
                g.len(),
                first.or(Some(w.len().min(g.len())))
            ))
        }
        (Err(w), Err(g)) if w == g => Ok(()),
        _ => same(
            what,
            want.as_ref().map(Vec::len).map_err(|e| *e),
            got.as_ref().map(Vec::len).map_err(|e| *e),
        ),
    }
}

const SSE_VALUES: [&[u8]; 2] = [b"AES256", b"KMS"];

/// What a run did, to show the cases are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub applied: u64,
    pub succeeded: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub remounts: u64,
}

fn tally<T, U>(stats: &mut Stats, want: &Result<T, U>) {
    stats.applied += 1;
    if want.is_ok() {
        stats.succeeded += 1;
    }
}

/// Runs one op on the model and the target and compares. Returns Ok(false) for an op that does
/// not apply (a handle op with no handle open), which the target never sees.
fn step(
    model: &mut Model,
    target: &mut dyn Target,
    op: &Op,
    mix: OpMix,
    stats: &mut Stats,
) -> Result<bool, String> {
    let p = paths();
    let handle = |model: &Model, h: usize| {
        let n = model.handle_count();
        if n == 0 { None } else { Some(h % n) }
    };
    match op {
        Op::Create { path } => {
            let path = &p[*path];
            let want = model.create(path);
            tally(stats, &want);
            same(&format!("create {}", show(path)), want, target.create(path))?;
        }
        Op::Open { path, trunc } => {
            let path = &p[*path];
            let want = model.open(path, *trunc);
            tally(stats, &want);
            same(
                &format!("open {} trunc={trunc}", show(path)),
                want,
                target.open(path, *trunc),
            )?;
        }
        Op::Write {
            h,
            offset,
            len,
            seed,
        } => {
            let Some(h) = handle(model, *h) else {
                return Ok(false);
            };
            let data = data_for(*seed, *len);
            model.write(h, *offset, &data);
            stats.bytes_written += data.len() as u64;
            tally(stats, &Ok::<(), ()>(()));
            same(
                &format!("write h{h} at {offset}, {len} bytes"),
                Ok(()),
                target.write(h, *offset, &data),
            )?;
        }
        Op::Read { h, offset, len } => {
            let Some(h) = handle(model, *h) else {
                return Ok(false);
            };
            let want = Ok(model.read(h, *offset, *len));
            tally(stats, &want);
            stats.bytes_read += want.as_ref().map_or(0, |v: &Vec<u8>| v.len() as u64);
            same_bytes(
                &format!("read h{h} at {offset}, {len} bytes"),
                &want,
                &target.read(h, *offset, *len),
            )?;
        }
        Op::Truncate { h, size } => {
            let Some(h) = handle(model, *h) else {
                return Ok(false);
            };
            model.truncate(h, *size);
            same(
                &format!("ftruncate h{h} to {size}"),
                Ok(()),
                target.truncate(h, *size),
            )?;
        }
        Op::TruncatePath { path, size } => {
            let path = &p[*path];
            let want = model.truncate_path(path, *size);
            tally(stats, &want);
            same(
                &format!("truncate {} to {size}", show(path)),
                want,
                target.truncate_path(path, *size),
            )?;
        }
        Op::Fsync { h } => {
            let Some(h) = handle(model, *h) else {
                return Ok(false);
            };
            same(&format!("fsync h{h}"), Ok(()), target.fsync(h))?;
        }
        Op::Close { h } => {
            let Some(h) = handle(model, *h) else {
                return Ok(false);
            };
            model.close(h);
            same(&format!("close h{h}"), Ok(()), target.close(h))?;
        }
        Op::Rename { from, to } => {
            let (from, to) = (&p[*from], &p[*to]);
            let want = model.rename(from, to);
            tally(stats, &want);
            same(
                &format!("rename {} -> {}", show(from), show(to)),
                want,
                target.rename(from, to),
            )?;
        }
        Op::Unlink { path } => {
            let path = &p[*path];
            let want = model.unlink(path);
            tally(stats, &want);
            same(&format!("unlink {}", show(path)), want, target.unlink(path))?;
        }
        Op::Link { from, to } => {
            let (from, to) = (&p[*from], &p[*to]);
            let want = model.link(from, to);
            tally(stats, &want);
            same(
                &format!("link {} -> {}", show(from), show(to)),
                want,
                target.link(from, to),
            )?;
        }
        Op::Mkdir { path } => {
            let path = &p[*path];
            let want = model.mkdir(path);
            tally(stats, &want);
            same(&format!("mkdir {}", show(path)), want, target.mkdir(path))?;
        }
        Op::Rmdir { path } => {
            let path = &p[*path];
            let want = model.rmdir(path);
            tally(stats, &want);
            same(&format!("rmdir {}", show(path)), want, target.rmdir(path))?;
        }
        Op::Stat { path } => {
            let path = &p[*path];
            same(
                &format!("stat {}", show(path)),
                model.stat(path),
                target.stat(path),
            )?;
            if let Some(sse) = model.sse(path) {
                same(
                    &format!("getxattr sse {}", show(path)),
                    Ok(sse.to_vec()),
                    target.get_sse(path),
                )?;
            }
        }
        Op::ReadDir { dir } => {
            let path: &[u8] = match dir {
                Some(i) => &p[*i],
                None => b"",
            };
            same(
                &format!("readdir {:?}", show(path)),
                model.read_dir(path),
                target.read_dir(path),
            )?;
        }
        Op::ReadFile { path } => {
            let path = &p[*path];
            same_bytes(
                &format!("read whole {}", show(path)),
                &model.read_file(path),
                &target.read_file(path),
            )?;
        }
        Op::SetSse { path, kms } => {
            let path = &p[*path];
            if !mix.set_sse || !model.is_file(path) {
                return Ok(false);
            }
            let value = SSE_VALUES[usize::from(*kms)];
            same(
                &format!("setxattr sse={} {}", show(value), show(path)),
                model.set_sse(path, value),
                target.set_sse(path, value),
            )?;
            same_bytes(
                &format!("read whole {} after re-encryption", show(path)),
                &model.read_file(path),
                &target.read_file(path),
            )?;
        }
        Op::Remount => {
            stats.remounts += 1;
            model.close_all();
            target.remount();
            check_tree(model, target)?;
        }
    }
    Ok(true)
}

/// Compares the whole tree: listings, kinds, sizes, link counts and every file's bytes.
pub fn check_tree(model: &Model, target: &mut dyn Target) -> Result<(), String> {
    same(
        "readdir of the run root",
        model.read_dir(b""),
        target.read_dir(b""),
    )?;
    for path in model.all_paths() {
        let stat = model.stat(&path);
        same(&format!("stat {}", show(&path)), stat, target.stat(&path))?;
        match stat {
            Ok(StatInfo {
                kind: Kind::Dir, ..
            }) => {
                same(
                    &format!("readdir {}", show(&path)),
                    model.read_dir(&path),
                    target.read_dir(&path),
                )?;
            }
            _ => {
                same_bytes(
                    &format!("contents of {}", show(&path)),
                    &model.read_file(&path),
                    &target.read_file(&path),
                )?;
            }
        }
    }
    Ok(())
}

/// Runs `ops` from an empty run directory; the model is returned for further checks.
pub fn run(
    target: &mut dyn Target,
    ops: &[Op],
    mix: OpMix,
    default_sse: &'static [u8],
    stats: &mut Stats,
) -> Result<Model, Mismatch> {
    let mut model = Model::new(default_sse);
    target.begin();
    let result = (|| {
        for (i, op) in ops.iter().enumerate() {
            step(&mut model, target, op, mix, stats)
                .map_err(|message| Mismatch { step: i, message })?;
        }
        check_tree(&model, target).map_err(|message| Mismatch {
            step: ops.len(),
            message: format!("final tree check: {message}"),
        })
    })();
    target.end();
    model.close_all();
    result.map(|()| model)
}

/// Removes operations while the sequence still fails (delta debugging), within a time budget.
pub fn shrink(
    target: &mut dyn Target,
    ops: Vec<Op>,
    mix: OpMix,
    default_sse: &'static [u8],
    budget: Duration,
) -> (Vec<Op>, Mismatch) {
    let deadline = Instant::now() + budget;
    let mut best = ops;
    let mut failure = match run(target, &best, mix, default_sse, &mut Stats::default()) {
        Err(m) => m,
        Ok(_) => {
            return (
                best,
                Mismatch {
                    step: 0,
                    message: "the failure did not reproduce on a second run (flaky)".into(),
                },
            );
        }
    };
    // Ops after the failing step cannot matter.
    best.truncate(failure.step + 1);
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && Instant::now() < deadline {
        let mut i = 0;
        let mut removed_any = false;
        while i < best.len() && Instant::now() < deadline {
            let mut candidate = best.clone();
            let end = (i + chunk).min(candidate.len());
            candidate.drain(i..end);
            match run(target, &candidate, mix, default_sse, &mut Stats::default()) {
                Err(m) => {
                    candidate.truncate(m.step + 1);
                    best = candidate;
                    failure = m;
                    removed_any = true;
                }
                Ok(_) => i += chunk,
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any {
            chunk /= 2;
        }
        chunk = chunk.min(best.len()).max(1);
    }
    (best, failure)
}

/// Settings of a model run, from the environment: `SSEFS_MODEL_SEED` (a case seed, as printed
/// on failure), `SSEFS_MODEL_CASES`, `SSEFS_MODEL_OPS`, `SSEFS_MODEL_SECS` (stop starting new
/// cases after this long).
#[derive(Clone, Copy, Debug)]
pub struct ModelSettings {
    pub seed: u64,
    pub cases: u64,
    pub ops: usize,
    pub time_limit: Option<Duration>,
}

fn env_num(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

impl ModelSettings {
    pub fn from_env(default_cases: u64, default_ops: usize) -> ModelSettings {
        let fixed = env_num("SSEFS_MODEL_SEED");
        let seed = fixed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
        ModelSettings {
            seed,
            cases: env_num("SSEFS_MODEL_CASES").unwrap_or(if fixed.is_some() {
                1
            } else {
                default_cases
            }),
            ops: env_num("SSEFS_MODEL_OPS").map_or(default_ops, |n| n as usize),
            time_limit: env_num("SSEFS_MODEL_SECS").map(Duration::from_secs),
        }
    }
}

/// Runs the configured number of random cases; on a mismatch, shrinks it and panics with the
/// seed, the shrunk sequence and the mismatch. Returns the models of the passing cases' ends
/// (the last one) for further checks, and the number of cases run.
pub fn run_cases(
    target: &mut dyn Target,
    settings: ModelSettings,
    mix: OpMix,
    default_sse: &'static [u8],
    name: &str,
) -> (u64, Option<Model>) {
    let started = Instant::now();
    let mut last = None;
    let mut done = 0;
    let mut stats = Stats::default();
    for case in 0..settings.cases {
        if settings.time_limit.is_some_and(|t| started.elapsed() > t) {
            break;
        }
        let case_seed = settings.seed.wrapping_add(case);
        let ops = generate(case_seed, settings.ops, mix);
        match run(target, &ops, mix, default_sse, &mut stats) {
            Ok(model) => last = Some(model),
            Err(first) => {
                eprintln!("{name}: case seed {case_seed} failed at {first}; shrinking...");
                let (shrunk, failure) =
                    shrink(target, ops, mix, default_sse, Duration::from_secs(90));
                let listing: Vec<String> = shrunk
                    .iter()
                    .enumerate()
                    .map(|(i, op)| format!("  {i:3}: {op:?}"))
                    .collect();
                panic!(
                    "{name}: model mismatch.\nfirst failure: {first}\nshrunk to {} ops, failing at {failure}\n{}\n\
                     paths: {:?}\nreplay: SSEFS_MODEL_SEED={case_seed} SSEFS_MODEL_OPS={} cargo test ...",
                    shrunk.len(),
                    listing.join("\n"),
                    paths().iter().map(|p| show(p)).collect::<Vec<_>>(),
                    settings.ops,
                );
            }
        }
        done += 1;
    }
    eprintln!(
        "{name}: {done} cases of {} ops passed in {:.1}s (first case seed {}): {stats:?}",
        settings.ops,
        started.elapsed().as_secs_f64(),
        settings.seed
    );
    assert!(
        done == 0 || stats.succeeded * 3 > stats.applied,
        "{name}: most operations failed ({stats:?}); the generator needs tuning"
    );
    (done, last)
}

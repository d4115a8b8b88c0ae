//! Whole-tree helpers: walking a tree, comparing two trees, and scanning files for a pattern.

use super::sys::read_full;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What `assert_trees_equal` compares besides names, types, bytes and symlink targets.
#[derive(Clone, Copy, Debug)]
pub struct TreeCompare {
    pub modes: bool,
    pub mtimes: bool,
    pub owners: bool,
    /// Hard-link groups (paths sharing an inode) must be the same on both sides.
    pub hard_links: bool,
}

impl TreeCompare {
    pub const ALL: TreeCompare = TreeCompare {
        modes: true,
        mtimes: true,
        owners: true,
        hard_links: true,
    };
}

/// Relative path -> metadata, for every entry under `root` (not following symlinks).
pub fn walk(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    walk_into(root, Path::new(""), &mut out);
    out
}

fn walk_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, fs::Metadata>) {
    let dir = root.join(rel);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir entry in {}: {e}", dir.display()));
        let rel_child = rel.join(entry.file_name());
        let path = root.join(&rel_child);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let is_dir = meta.is_dir();
        out.insert(rel_child.clone(), meta);
        if is_dir {
            walk_into(root, &rel_child, out);
        }
    }
}

fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    }
}

/// Asserts that two trees hold the same entries with the same types, bytes and symlink targets,
/// and, as asked, the same modes, mtimes (to the nanosecond; the roots' own mtimes are not
/// compared), owners and hard-link groups. Reports every difference at once.
pub fn assert_trees_equal(a: &Path, b: &Path, what: TreeCompare) {
    let left = walk(a);
    let right = walk(b);
    let mut diffs = Vec::new();
    for rel in left.keys().filter(|k| !right.contains_key(*k)) {
        diffs.push(format!("only in {}: {}", a.display(), rel.display()));
    }
    for rel in right.keys().filter(|k| !left.contains_key(*k)) {
        diffs.push(format!("only in {}: {}", b.display(), rel.display()));
    }
    for (rel, lm) in &left {
        let Some(rm) = right.get(rel) else { continue };
        let shown = rel.display();
        if kind(lm) != kind(rm) {
            diffs.push(format!("{shown}: {} vs {}", kind(lm), kind(rm)));
            continue;
        }
        if lm.is_file() {
            if lm.len() != rm.len() {
                diffs.push(format!("{shown}: size {} vs {}", lm.len(), rm.len()));
            } else if let Some(off) = first_difference(&a.join(rel), &b.join(rel)) {
                diffs.push(format!("{shown}: contents differ at byte {off}"));
            }
        }
        if lm.file_type().is_symlink() {
            let lt = fs::read_link(a.join(rel)).ok();
            let rt = fs::read_link(b.join(rel)).ok();
            if lt != rt {
                diffs.push(format!("{shown}: symlink target {lt:?} vs {rt:?}"));
            }
        }
        let is_link = lm.file_type().is_symlink();
        if what.modes && !is_link && lm.mode() & 0o7777 != rm.mode() & 0o7777 {
            diffs.push(format!(
                "{shown}: mode {:o} vs {:o}",
                lm.mode() & 0o7777,
                rm.mode() & 0o7777
            ));
        }
        if what.owners && (lm.uid(), lm.gid()) != (rm.uid(), rm.gid()) {
            diffs.push(format!(
                "{shown}: owner {}:{} vs {}:{}",
                lm.uid(),
                lm.gid(),
                rm.uid(),
                rm.gid()
            ));
        }
        if what.mtimes && !is_link && (lm.mtime(), lm.mtime_nsec()) != (rm.mtime(), rm.mtime_nsec())
        {
            diffs.push(format!(
                "{shown}: mtime {}.{:09} vs {}.{:09}",
                lm.mtime(),
                lm.mtime_nsec(),
                rm.mtime(),
                rm.mtime_nsec()
            ));
        }
    }
    if what.hard_links {
        let lg = hard_link_groups(&left);
        let rg = hard_link_groups(&right);
        if lg != rg {
            diffs.push(format!(
                "hard-link groups differ: {lg:?} in {} vs {rg:?} in {}",
                a.display(),
                b.display()
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "trees {} and {} differ:\n  {}",
        a.display(),
        b.display(),
        diffs.join("\n  ")
    );
}

/// Sets of relative paths (of regular files) sharing an inode, for inodes with more than one.
fn hard_link_groups(tree: &BTreeMap<PathBuf, fs::Metadata>) -> Vec<Vec<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for (rel, meta) in tree {
        if meta.is_file() && meta.nlink() > 1 {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel.clone());
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_inode.into_values().collect();
    groups.sort();
    groups
}

/// The offset of the first differing byte of two files (one longer than the other differs at the
/// shorter's length), or None if they are equal.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = fs::File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = fs::File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let na =
            read_full(&mut fa, &mut ba).unwrap_or_else(|e| panic!("read {}: {e}", a.display()));
        let nb =
            read_full(&mut fb, &mut bb).unwrap_or_else(|e| panic!("read {}: {e}", b.display()));
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Some(offset + i as u64);
        }
        if na != nb {
            return Some(offset + n as u64);
        }
        if na == 0 {
            return None;
        }
        offset += na as u64;
    }
}

/// A place where a pattern was found: the file and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternHit {
    pub file: PathBuf,
    pub offset: u64,
}

/// Scans the bytes of every regular file under `root` (symlinks not followed; their targets are
/// names, scanned too) for `needle`; returns every hit.
pub fn scan_tree_for(root: &Path, needle: &[u8]) -> Vec<PatternHit> {
    assert!(!needle.is_empty(), "empty needle");
    let mut hits = Vec::new();
    for (rel, meta) in walk(root) {
        let path = root.join(&rel);
        let bytes = if meta.is_file() {
            fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path)
                .map(|t| t.as_os_str().as_bytes().to_vec())
                .unwrap_or_default()
        } else {
            continue;
        };
        let mut start = 0;
        while let Some(i) = find(&bytes[start..], needle) {
            hits.push(PatternHit {
                file: path.clone(),
                offset: (start + i) as u64,
            });
            start += i + 1;
        }
    }
    hits
}

/// The first index of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    let first = needle[0];
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &haystack[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

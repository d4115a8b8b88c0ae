//! The namespace of a remote store: what an object store, which has only keys, cannot hold
//! by itself. Every directory `DIR` of the store has a marker object `DIR/.ssefs-dir`
//! that records the directory's own attributes (mode, owner, group, times, `user.*`
//! extended attributes) and those of the entries that are not directories: regular files,
//! symlinks (with their target) and special files. The marker is a JSON document followed
//! by an HMAC over the directory's key and the document, so a marker changed or moved by
//! whoever can write the object store is refused, never applied. A directory without a
//! marker (objects put there by other tools) shows with default attributes.
//!
//! Names and values are hex in the JSON, so any byte string survives.

use crate::store::backing::{Stat, Timestamp};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The name of the marker object in each directory.
pub const DIR_MARKER: &str = crate::store::layout::REMOTE_DIR_MARKER;
/// The MAC's domain.
const MARKER_DOMAIN: &[u8] = b"ssefs/remote-dir/v1";

/// The attributes the object store cannot keep for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAttrs {
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    /// `user.*` extended attributes (name, value), sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
    /// A device node's number.
    pub rdev: u64,
}

impl NodeAttrs {
    /// The attributes of a local node, as `stat` gave them.
    pub fn from_stat(st: &Stat, xattrs: Vec<(OsString, Vec<u8>)>, target: Option<Vec<u8>>) -> Self {
        NodeAttrs {
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            atime: st.atime,
            mtime: st.mtime,
            xattrs,
            target,
            rdev: st.rdev,
        }
    }

    fn to_json(&self) -> Value {
        let xattrs: Map<String, Value> = self
            .xattrs
            .iter()
            .map(|(n, v)| (hex(n.as_bytes()), Value::String(hex(v))))
            .collect();
        let mut node = json!({
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "atime": [self.atime.secs, self.atime.nanos],
            "mtime": [self.mtime.secs, self.mtime.nanos],
            "xattrs": xattrs,
        });
        if let Some(target) = &self.target {
            node["target"] = Value::String(hex(target));
        }
        if self.rdev != 0 {
            node["rdev"] = json!(self.rdev);
        }
        node
    }

    fn from_json(v: &Value) -> Option<NodeAttrs> {
        let num = |name: &str| v.get(name)?.as_u64();
        let time = |name: &str| -> Option<Timestamp> {
            let t = v.get(name)?.as_array()?;
            Some(Timestamp {
                secs: t.first()?.as_i64()?,
                nanos: u32::try_from(t.get(1)?.as_u64()?).ok()?.min(999_999_999),
            })
        };
        let mut xattrs = Vec::new();
        for (name, value) in v.get("xattrs")?.as_object()? {
            xattrs.push((OsString::from_vec(unhex(name)?), unhex(value.as_str()?)?));
        }
        xattrs.sort();
        let target = match v.get("target") {
            Some(t) => Some(unhex(t.as_str()?)?),
            None => None,
        };
        Some(NodeAttrs {
            mode: u32::try_from(num("mode")?).ok()?,
            uid: u32::try_from(num("uid")?).ok()?,
            gid: u32::try_from(num("gid")?).ok()?,
            atime: time("atime")?,
            mtime: time("mtime")?,
            xattrs,
            target,
            rdev: v.get("rdev").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// The contents of one directory's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The directory's own attributes.
    pub dir: NodeAttrs,
    /// The attributes of its entries that are not directories, by name.
    pub entries: BTreeMap<OsString, NodeAttrs>,
}

/// Why a marker was refused.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("the marker is not a JSON document followed by its MAC")]
    Malformed,
    #[error("the marker's MAC does not verify (changed, or moved from another directory)")]
    BadMac,
}

/// The key of the marker of directory `dir` (relative to the store; empty for its top).
pub fn marker_key(dir: &str) -> String {
    if dir.is_empty() {
        DIR_MARKER.to_string()
    } else {
        format!("{dir}/{DIR_MARKER}")
    }
}

/// The directory a marker key belongs to, if `key` is one.
pub fn marker_dir(key: &str) -> Option<&str> {
    if key == DIR_MARKER {
        return Some("");
    }
    key.strip_suffix(DIR_MARKER)?.strip_suffix('/')
}

fn mac(key: &[u8; 32], dir: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(MARKER_DOMAIN);
    mac.update(&(dir.len() as u64).to_be_bytes());
    mac.update(dir.as_bytes());
    mac.update(body);
    mac
}

impl Marker {
    /// The marker's object body: the JSON document, a newline, and the hex MAC binding it
    /// to `dir`.
    pub fn encode(&self, key: &[u8; 32], dir: &str) -> Vec<u8> {
        let entries: Map<String, Value> = self
            .entries
            .iter()
            .map(|(n, a)| (hex(n.as_bytes()), a.to_json()))
            .collect();
        let doc = json!({ "v": 1, "dir": self.dir.to_json(), "entries": entries });
        let mut body = doc.to_string().into_bytes();
        let tag = mac(key, dir, &body).finalize().into_bytes();
        body.push(b'\n');
        body.extend_from_slice(hex(&tag).as_bytes());
        body
    }

    /// Checks and reads a marker body written for `dir`.
    pub fn decode(key: &[u8; 32], dir: &str, body: &[u8]) -> Result<Marker, MarkerError> {
        let split = body
            .iter()
            .rposition(|&b| b == b'\n')
            .ok_or(MarkerError::Malformed)?;
        let (doc, tag) = (&body[..split], &body[split + 1..]);
        let tag = std::str::from_utf8(tag)
            .ok()
            .and_then(unhex)
            .ok_or(MarkerError::Malformed)?;
        mac(key, dir, doc)
            .verify_slice(&tag)
            .map_err(|_| MarkerError::BadMac)?;
        let doc: Value = serde_json::from_slice(doc).map_err(|_| MarkerError::Malformed)?;
        if doc.get("v").and_then(Value::as_u64) != Some(1) {
            return Err(MarkerError::Malformed);
        }
        let dir = doc
            .get("dir")
            .and_then(NodeAttrs::from_json)
            .ok_or(MarkerError::Malformed)?;
        let mut entries = BTreeMap::new();
        for (name, attrs) in doc
            .get("entries")
            .and_then(Value::as_object)
            .ok_or(MarkerError::Malformed)?
        {
            let name = unhex(name).ok_or(MarkerError::Malformed)?;
            if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
                return Err(MarkerError::Malformed);
            }
            let attrs = NodeAttrs::from_json(attrs).ok_or(MarkerError::Malformed)?;
            entries.insert(OsString::from_vec(name), attrs);
        }
        Ok(Marker { dir, entries })
    }
}

/// `name` joined under `dir` as a key (relative to the store).
pub fn child_key(dir: &str, name: &OsStr) -> Option<String> {
    let name = name.to_str()?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    Some(if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    })
}

/// The directory part of a key (empty at the top).
pub fn parent_key(key: &str) -> &str {
    key.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: u32) -> NodeAttrs {
        NodeAttrs {
            mode,
            uid: 1000,
            gid: 100,
            atime: Timestamp { secs: 10, nanos: 5 },
            mtime: Timestamp {
                secs: -3,
                nanos: 999_999_999,
            },
            xattrs: vec![(OsString::from("user.a"), b"\x00\xffv".to_vec())],
            target: None,
            rdev: 0,
        }
    }

    fn marker() -> Marker {
        let mut entries = BTreeMap::new();
        entries.insert(OsString::from("file"), attrs(0o100640));
        let mut link = attrs(0o120777);
        link.target = Some(b"../x y".to_vec());
        entries.insert(OsString::from_vec(b"l\xffink".to_vec()), link);
        Marker {
            dir: attrs(0o40750),
            entries,
        }
    }

    #[test]
    fn a_marker_round_trips_and_is_bound_to_its_directory_and_key() {
        let key = [7u8; 32];
        let body = marker().encode(&key, "bucket/dir");
        assert_eq!(Marker::decode(&key, "bucket/dir", &body).unwrap(), marker());
        assert!(matches!(
            Marker::decode(&key, "bucket/other", &body),
            Err(MarkerError::BadMac)
        ));
        assert!(matches!(
            Marker::decode(&[8u8; 32], "bucket/dir", &body),
            Err(MarkerError::BadMac)
        ));
        let mut changed = body.clone();
        let at = changed.iter().position(|&b| b == b'7').unwrap();
        changed[at] = b'6';
        assert!(Marker::decode(&key, "bucket/dir", &changed).is_err());
        assert!(matches!(
            Marker::decode(&key, "bucket/dir", b"{}"),
            Err(MarkerError::Malformed)
        ));
    }

    #[test]
    fn keys_of_markers_children_and_parents() {
        assert_eq!(marker_key(""), ".ssefs-dir");
        assert_eq!(marker_key("b/d"), "b/d/.ssefs-dir");
        assert_eq!(marker_dir("b/d/.ssefs-dir"), Some("b/d"));
        assert_eq!(marker_dir(".ssefs-dir"), Some(""));
        assert_eq!(marker_dir("b/x.ssefs-dir"), None);
        assert_eq!(child_key("b", OsStr::new("f")).as_deref(), Some("b/f"));
        assert_eq!(child_key("", OsStr::new("b")).as_deref(), Some("b"));
        assert_eq!(child_key("b", OsStr::new("..")), None);
        assert_eq!(child_key("b", OsStr::from_bytes(b"\xff")), None);
        assert_eq!(parent_key("b/d/f"), "b/d");
        assert_eq!(parent_key("b"), "");
    }
}

#[cfg(test)]
mod vector {
    use super::*;

    /// The vector of FORMAT.md "Directory markers".
    pub(super) fn vector_marker() -> Marker {
        let mut entries = BTreeMap::new();
        entries.insert(
            OsString::from("f"),
            NodeAttrs {
                mode: 0o100644,
                uid: 1000,
                gid: 1000,
                atime: Timestamp { secs: 3, nanos: 0 },
                mtime: Timestamp { secs: 4, nanos: 5 },
                xattrs: vec![(OsString::from("user.a"), b"v".to_vec())],
                target: None,
                rdev: 0,
            },
        );
        Marker {
            dir: NodeAttrs {
                mode: 0o40755,
                uid: 0,
                gid: 0,
                atime: Timestamp { secs: 1, nanos: 0 },
                mtime: Timestamp { secs: 2, nanos: 0 },
                xattrs: Vec::new(),
                target: None,
                rdev: 0,
            },
            entries,
        }
    }

    #[test]
    fn the_format_vector_holds() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let body = vector_marker().encode(&key, "bkt/d");
        let expected = concat!(
            r#"{"dir":{"atime":[1,0],"gid":0,"mode":16877,"mtime":[2,0],"uid":0,"xattrs":{}},"#,
            r#""entries":{"66":{"atime":[3,0],"gid":1000,"mode":33188,"mtime":[4,5],"#,
            r#""uid":1000,"xattrs":{"757365722e61":"76"}}},"v":1}"#,
            "\n7238fc6b4250f778bfe0b83be3d81e5064163d9d96506d7e612f4f066917c20a"
        );
        assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
        assert_eq!(
            Marker::decode(&key, "bkt/d", &body).unwrap(),
            vector_marker()
        );
    }
}

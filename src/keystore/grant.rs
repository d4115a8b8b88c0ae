//! Callers, key operations and grants: the plain types that name who asks for a CMK and what
//! they may do with it. Knows uids and gids only; the mount supplies them from the request, the
//! CLI from its own process. No database or key material here.

use super::KeystoreError;

/// The uid of the superuser, who administers and may use every CMK.
const ROOT_UID: u32 = 0;

/// Who asks: the ids of the process behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub pid: u32,
}

impl Caller {
    /// This process, by its *real* uid and gid (not the effective ones), its supplementary
    /// groups and its pid.
    pub fn this_process() -> Self {
        let (uid, gid, pid) = crate::sys::process_ids();
        Self {
            uid,
            gid,
            groups: crate::sys::supplementary_groups(),
            pid,
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == ROOT_UID
    }

    /// Whether `gid` is the caller's primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// What a caller wants to do with a CMK's material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyOp {
    /// Wrap a new object's data key (`GenerateDataKey`).
    Encrypt,
    /// Unwrap an existing object's data key (`Decrypt`).
    Decrypt,
}

impl KeyOp {
    /// The name in grants and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
        }
    }

    /// The operation an audit record names for a use of the key.
    pub fn audit_operation(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "GenerateDataKey",
            KeyOp::Decrypt => "Decrypt",
        }
    }

    /// Parses `encrypt` or `decrypt` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "encrypt" => Some(KeyOp::Encrypt),
            "decrypt" => Some(KeyOp::Decrypt),
            _ => None,
        }
    }

    /// Parses a comma-separated list (`encrypt,decrypt`), sorted and without repeats.
    pub fn parse_list(text: &str) -> Result<Vec<KeyOp>, KeystoreError> {
        let mut ops = text
            .split(',')
            .map(|part| {
                KeyOp::parse(part.trim()).ok_or_else(|| {
                    KeystoreError::InvalidGrant(format!(
                        "unknown operation {:?}: use encrypt, decrypt or both",
                        part.trim()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        ops.sort();
        ops.dedup();
        Ok(ops)
    }
}

/// Who a grant is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grantee {
    Uid(u32),
    Gid(u32),
}

impl Grantee {
    pub(super) fn kind(self) -> &'static str {
        match self {
            Grantee::Uid(_) => "uid",
            Grantee::Gid(_) => "gid",
        }
    }
    pub(super) fn id(self) -> u32 {
        match self {
            Grantee::Uid(id) | Grantee::Gid(id) => id,
        }
    }
    pub(super) fn from_row(kind: &str, id: u32) -> Option<Self> {
        match kind {
            "uid" => Some(Grantee::Uid(id)),
            "gid" => Some(Grantee::Gid(id)),
            _ => None,
        }
    }
    pub(super) fn covers(self, caller: &Caller) -> bool {
        match self {
            Grantee::Uid(uid) => caller.uid == uid,
            Grantee::Gid(gid) => caller.in_group(gid),
        }
    }
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// The right of a uid or of a group's members to some operations with one CMK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grantee: Grantee,
    /// Sorted, without repeats, never empty.
    pub operations: Vec<KeyOp>,
    /// Seconds since the Unix epoch (of the first grant to this grantee).
    pub created_at: i64,
}

impl Grant {
    /// The operations as stored: `decrypt`, `encrypt` or `encrypt,decrypt`.
    pub(super) fn operations_text(operations: &[KeyOp]) -> String {
        operations
            .iter()
            .map(|op| op.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

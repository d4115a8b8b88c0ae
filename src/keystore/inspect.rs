//! A read-only, keyless look at a keystore for `fsck`, `status` and restore: store id, schema
//! version, SQLite integrity, master key versions, CMKs and bucket rules, returned as plain
//! summaries (no SQLite type leaves the keystore). Opens the database read-only (safe while
//! the store is mounted) and never unwraps a secret.

use super::{
    BucketRule, CmkState, KEYSTORE_FILE, KeystoreError, SCHEMA_VERSION, StoreId,
    bucket_rule_from_row, read_store_id, schema,
};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// One master key version, as listed without the root key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterKeyVersion {
    pub version: u32,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// One CMK, as listed without the root key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmkSummary {
    pub key_id: String,
    pub state: CmkState,
    /// Material versions whose material is still present (not deleted).
    pub live_versions: Vec<u32>,
}

/// What a keystore holds, without any secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeystoreSummary {
    pub store_id: StoreId,
    pub schema_version: i64,
    pub master_keys: Vec<MasterKeyVersion>,
    pub cmks: Vec<CmkSummary>,
    pub bucket_rules: Vec<(String, BucketRule)>,
    /// Where the root key comes from, as the keystore records it.
    pub root_of_trust: RootOfTrust,
}

/// Where a store's root key comes from (no secret: the kind and the token's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootOfTrust {
    KeyFile,
    Passphrase,
    Token(super::TokenKeyName),
}

impl std::fmt::Display for RootOfTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootOfTrust::KeyFile => f.write_str("a key file"),
            RootOfTrust::Passphrase => f.write_str("a passphrase"),
            RootOfTrust::Token(name) => write!(
                f,
                "the key {:?} in PKCS#11 token {:?} ({})",
                name.key,
                name.token,
                name.module.display()
            ),
        }
    }
}

/// What the keystore on `conn` records of its root of trust.
fn root_of_trust(conn: &Connection) -> Result<RootOfTrust, KeystoreError> {
    if let Some(token) = super::pkcs11::read_from(conn)? {
        return Ok(RootOfTrust::Token(token.name));
    }
    let has_kdf: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('meta') WHERE name = 'root_kdf'",
        [],
        |r| r.get(0),
    )?;
    let kdf: Option<String> = if has_kdf {
        conn.query_row("SELECT root_kdf FROM meta WHERE id = 1", [], |r| r.get(0))?
    } else {
        None
    };
    Ok(match kdf {
        Some(_) => RootOfTrust::Passphrase,
        None => RootOfTrust::KeyFile,
    })
}

impl KeystoreSummary {
    /// Whether master key version `version` exists.
    pub fn has_master(&self, version: u32) -> bool {
        self.master_keys.iter().any(|m| m.version == version)
    }
}

/// What a check of a keystore found: its integrity problems (empty when sound) and its summary
/// (`None` when it could not be read; the reason is among the problems).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeystoreCheck {
    pub problems: Vec<String>,
    pub summary: Option<KeystoreSummary>,
}

/// Checks the keystore in `dir` without the root key: `PRAGMA integrity_check`, the schema
/// version and whether its summary reads. Fails only when it does not open as a keystore.
pub fn check_keystore(dir: &Path) -> Result<KeystoreCheck, KeystoreError> {
    let conn = open_read_only(dir)?;
    let mut problems = match integrity_problems(&conn) {
        Ok(problems) => problems,
        Err(e) => vec![e.to_string()],
    };
    let summary = match summarize_connection(&conn) {
        Ok(summary) => Some(summary),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    Ok(KeystoreCheck { problems, summary })
}

/// Opens `dir/keystore.db` read-only after the same file checks as a normal open: it must
/// exist, be private (mode 0600) and be an ssefs keystore of a schema this ssefs knows.
pub(super) fn open_read_only(dir: &Path) -> Result<Connection, KeystoreError> {
    open_file_read_only(&dir.join(KEYSTORE_FILE))
}

/// As [`open_read_only`], for a keystore file of any name (a backup).
pub(super) fn open_file_read_only(path: &Path) -> Result<Connection, KeystoreError> {
    let path = path.to_path_buf();
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeystoreError::Missing(path.clone()),
        _ => KeystoreError::file("open keystore", &path)(e),
    })?;
    if !meta.is_file() {
        return Err(KeystoreError::NotAKeystore(path));
    }
    use std::os::unix::fs::PermissionsExt;
    super::rootkey::check_private_mode(&path, meta.permissions().mode())?;
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| schema::not_a_database(e, &path))?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    schema::check_is_keystore(&conn, &path)?;
    Ok(conn)
}

/// Reads the summary of the keystore in `dir` without the root key.
pub fn summarize(dir: &Path) -> Result<KeystoreSummary, KeystoreError> {
    summarize_connection(&open_read_only(dir)?)
}

/// Reads the summary of the keystore file `path` of any name (a backup) without the root key.
pub fn summarize_file(path: &Path) -> Result<KeystoreSummary, KeystoreError> {
    summarize_connection(&open_file_read_only(path)?)
}

pub(super) fn summarize_connection(conn: &Connection) -> Result<KeystoreSummary, KeystoreError> {
    let schema_version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut masters =
        conn.prepare("SELECT version, created_at, retired_at FROM master_keys ORDER BY version")?;
    let master_keys = masters
        .query_map([], |r| {
            Ok(MasterKeyVersion {
                version: r.get(0)?,
                created_at: r.get(1)?,
                retired_at: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KeystoreSummary {
        store_id: read_store_id(conn)?,
        schema_version,
        master_keys,
        cmks: list_cmks(conn)?,
        bucket_rules: list_bucket_rules(conn)?,
        root_of_trust: root_of_trust(conn)?,
    })
}

fn list_cmks(conn: &Connection) -> Result<Vec<CmkSummary>, KeystoreError> {
    let mut keys = conn.prepare("SELECT key_id, state FROM cmks ORDER BY key_id")?;
    let rows = keys
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut versions = conn.prepare(
        "SELECT version FROM cmk_materials WHERE key_id = ?1 AND wrapped IS NOT NULL
         ORDER BY version",
    )?;
    rows.into_iter()
        .map(|(key_id, state)| {
            let state = CmkState::parse(&state).ok_or_else(|| {
                KeystoreError::Corrupt(format!("CMK {key_id} has an unknown state {state:?}"))
            })?;
            let live_versions = versions
                .query_map([&key_id], |r| r.get(0))?
                .collect::<Result<Vec<u32>, _>>()?;
            Ok(CmkSummary {
                key_id,
                state,
                live_versions,
            })
        })
        .collect()
}

fn list_bucket_rules(conn: &Connection) -> Result<Vec<(String, BucketRule)>, KeystoreError> {
    let mut stmt =
        conn.prepare("SELECT bucket, algorithm, kms_key_id FROM bucket_rules ORDER BY bucket")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(bucket, algorithm, key_id)| {
            let rule = bucket_rule_from_row(&bucket, &algorithm, key_id)?;
            Ok((bucket, rule))
        })
        .collect()
}

/// `PRAGMA integrity_check`: the damage SQLite finds in the file's pages (empty when sound).
/// Backups and restores check only this: a keystore of an older schema is sound, and its
/// first open by this ssefs migrates it.
pub(super) fn page_problems(conn: &Connection) -> Result<Vec<String>, KeystoreError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|line| line != "ok")
        .collect();
    Ok(problems)
}

/// `PRAGMA integrity_check` and the schema version check: the problems found (empty when the
/// keystore is sound).
pub(super) fn integrity_problems(conn: &Connection) -> Result<Vec<String>, KeystoreError> {
    let mut problems = page_problems(conn)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        problems.push(format!(
            "schema version {version}, this ssefs writes {SCHEMA_VERSION} (opening it with the \
             root key migrates it)"
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Algorithm, Key256};
    use crate::keystore::Keystore;

    #[test]
    fn a_summary_needs_no_key_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &key).unwrap();
        ks.new_master_key().unwrap();
        ks.put_bucket_rule(
            "photos",
            &BucketRule {
                algorithm: Algorithm::Aes256,
                kms_key_id: None,
            },
        )
        .unwrap();
        let id = *ks.store_id();
        drop(ks);
        let before = std::fs::read(dir.path().join(KEYSTORE_FILE)).unwrap();
        let summary = summarize(dir.path()).unwrap();
        assert_eq!(summary.store_id, id);
        assert_eq!(summary.schema_version, SCHEMA_VERSION);
        let versions: Vec<u32> = summary.master_keys.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2]);
        assert!(summary.has_master(2) && !summary.has_master(3));
        assert_eq!(summary.bucket_rules.len(), 1);
        assert_eq!(summary.bucket_rules[0].0, "photos");
        let check = check_keystore(dir.path()).unwrap();
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        assert_eq!(check.summary.as_ref(), Some(&summary));
        assert_eq!(
            summarize_file(&dir.path().join(KEYSTORE_FILE)).unwrap(),
            summary
        );
        assert_eq!(
            std::fs::read(dir.path().join(KEYSTORE_FILE)).unwrap(),
            before
        );
    }

    #[test]
    fn a_foreign_or_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = summarize(dir.path()).unwrap_err();
        assert!(matches!(err, KeystoreError::Missing(_)), "{err}");
        let path = dir.path().join(KEYSTORE_FILE);
        std::fs::write(&path, b"not a database at all, just some bytes....").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = summarize(dir.path()).unwrap_err();
        assert!(matches!(err, KeystoreError::NotAKeystore(_)), "{err}");
    }
}

//! The keystore's seal: every row that decides protection or access carries an HMAC under a
//! key derived from the root key and the store id, bound to its table and primary key, and
//! every sealed table an HMAC over its rows' MACs, so a row added, changed or removed outside
//! ssefs is found. Knows the sealed tables and columns, nothing of what they mean.

use super::{KeystoreError, StoreId};
use crate::crypto::{CryptoError, Key256};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Transaction};
use sha2::Sha256;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

const SEAL_KEY_INFO: &[u8] = b"ssefs/v1/keystore-seal";
const ROW_LABEL: &[u8] = b"ssefs/row/v1";
const TABLE_LABEL: &[u8] = b"ssefs/table/v1";

/// A sealed table: its name, its primary key columns and every other column the MAC covers.
/// Adding a column to a sealed table is one line here (and its migration step); a column
/// that does not exist yet in an older keystore, or is NULL, is left out of the MAC, so old
/// MACs stay valid until the migration is sealed again.
pub(super) struct SealedTable {
    pub name: &'static str,
    pub key: &'static [&'static str],
    pub columns: &'static [&'static str],
}

/// Every table whose rows decide protection or access. Not sealed: `audit` (hash-chained on
/// its own), `cmk_usage` (counters) and the seal tables themselves.
pub(super) const SEALED_TABLES: &[SealedTable] = &[
    SealedTable {
        name: "meta",
        key: &["id"],
        columns: &[
            "store_id",
            "created_at",
            "root_check",
            "audit_retention_days",
            "audit_max_rows",
            "root_kdf",
            "root_kdf_salt",
            "root_kdf_memory_kib",
            "root_kdf_iterations",
            "root_kdf_parallelism",
            "object_auth_pending",
            "min_object_version",
            "root_pkcs11_module",
            "root_pkcs11_token",
            "root_pkcs11_key",
            "root_pkcs11_mechanism",
            "root_pkcs11_wrapped",
        ],
    },
    SealedTable {
        name: "object_auth_key",
        key: &["id"],
        columns: &["wrapped", "created_at"],
    },
    SealedTable {
        name: "master_keys",
        key: &["version"],
        columns: &["wrapped", "created_at", "retired_at"],
    },
    SealedTable {
        name: "cmks",
        key: &["key_id"],
        columns: &[
            "description",
            "origin",
            "state",
            "owner_uid",
            "created_at",
            "deletion_date",
            "rotation_days",
        ],
    },
    SealedTable {
        name: "cmk_materials",
        key: &["key_id", "version"],
        columns: &["wrapped", "material_check", "created_at"],
    },
    SealedTable {
        name: "aliases",
        key: &["alias"],
        columns: &["key_id"],
    },
    SealedTable {
        name: "grants",
        key: &["id"],
        columns: &[
            "key_id",
            "grantee_kind",
            "grantee",
            "operations",
            "created_at",
        ],
    },
    SealedTable {
        name: "bucket_rules",
        key: &["bucket"],
        columns: &["algorithm", "kms_key_id", "updated_at"],
    },
    SealedTable {
        name: "import_params",
        key: &["key_id"],
        columns: &[
            "token",
            "wrapped_seed",
            "public_key",
            "created_at",
            "expires_at",
        ],
    },
    SealedTable {
        name: "tombstones",
        key: &["key_id", "version"],
        columns: &["destroyed_at"],
    },
];

/// The key every row MAC and table seal is made with:
/// `HKDF-SHA256(salt = store id, ikm = root key, info = "ssefs/v1/keystore-seal")`.
pub(super) fn seal_key(root_key: &Key256, store_id: &StoreId) -> Result<Key256, KeystoreError> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(store_id.as_bytes()), root_key.expose_secret())
        .expand(SEAL_KEY_INFO, okm.as_mut_slice())
        .map_err(|_| CryptoError::Malformed("HKDF output length".into()))?;
    Ok(Key256::from_bytes(okm.as_slice())?)
}

/// The key that authenticates the directory markers of a remote store (the attributes an
/// object store cannot keep): `HKDF-SHA256(salt = store id, ikm = root key, info =
/// "ssefs/v1/remote-marker")`.
pub fn remote_marker_key(
    root_key: &Key256,
    store_id: &StoreId,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(store_id.as_bytes()), root_key.expose_secret())
        .expand(b"ssefs/v1/remote-marker", okm.as_mut_slice())
        .map_err(|_| CryptoError::Malformed("HKDF output length".into()))?;
    Ok(okm)
}

/// Seals the transaction's changes and commits them.
pub(super) fn commit(tx: Transaction<'_>, key: &Key256) -> Result<(), KeystoreError> {
    reseal(&tx, key)?;
    tx.commit()?;
    Ok(())
}

/// Checks the seal in one read snapshot (a deferred transaction), for readers.
pub(super) fn check_snapshot(conn: &mut Connection, key: &Key256) -> Result<(), KeystoreError> {
    let tx = conn.transaction()?;
    require_intact(&tx, key)?;
    tx.commit()?;
    Ok(())
}

/// `Tampered`, naming every problem, unless the seal holds.
pub(super) fn require_intact(conn: &Connection, key: &Key256) -> Result<(), KeystoreError> {
    let problems = problems(conn, key)?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(KeystoreError::Tampered(problems))
    }
}

/// Every way the sealed rows differ from their seal, one sentence each (empty when intact).
pub(super) fn problems(conn: &Connection, key: &Key256) -> Result<Vec<String>, KeystoreError> {
    if !table_exists(conn, "row_seals")? || !table_exists(conn, "table_seals")? {
        return Ok(vec![
            "the seal tables row_seals and table_seals are missing".into(),
        ]);
    }
    let mut problems = Vec::new();
    for table in SEALED_TABLES {
        let seal: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT row_count, digest FROM table_seals WHERE tbl = ?1",
                [table.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if !table_exists(conn, table.name)? {
            if seal.is_some() {
                problems.push(format!("table {} was dropped", table.name));
            }
            continue;
        }
        let stored = stored_macs(conn, table.name)?;
        match seal {
            None => problems.push(format!("table {} has no seal", table.name)),
            Some((count, digest)) => {
                let intact = usize::try_from(count).is_ok_and(|c| c == stored.len())
                    && table_digest(key, table.name, &stored)?
                        .verify_slice(&digest)
                        .is_ok();
                if !intact {
                    problems.push(format!(
                        "rows were removed from or added to table {} (its seal does not match \
                         its {} row MAC(s))",
                        table.name,
                        stored.len()
                    ));
                }
            }
        }
        let current = current_macs(conn, key, table)?;
        for (row, mac) in &current {
            match stored.get(row) {
                None => problems.push(format!("table {}: row {row} was added", table.name)),
                Some(recorded) if recorded != mac => {
                    problems.push(format!("table {}: row {row} was changed", table.name));
                }
                Some(_) => {}
            }
        }
        for row in stored.keys().filter(|row| !current.contains_key(*row)) {
            problems.push(format!("table {}: row {row} was removed", table.name));
        }
    }
    Ok(problems)
}

/// Brings every row MAC and table seal up to date with the rows as they are now.
pub(super) fn reseal(conn: &Connection, key: &Key256) -> Result<(), KeystoreError> {
    for table in SEALED_TABLES {
        if !table_exists(conn, table.name)? {
            continue;
        }
        let current = current_macs(conn, key, table)?;
        let stored = stored_macs(conn, table.name)?;
        for row in stored.keys().filter(|row| !current.contains_key(*row)) {
            conn.prepare_cached("DELETE FROM row_seals WHERE tbl = ?1 AND row_key = ?2")?
                .execute((table.name, row))?;
        }
        for (row, mac) in &current {
            if stored.get(row) != Some(mac) {
                conn.prepare_cached(
                    "INSERT INTO row_seals (tbl, row_key, mac) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tbl, row_key) DO UPDATE SET mac = excluded.mac",
                )?
                .execute((table.name, row, mac))?;
            }
        }
        let digest = table_digest(key, table.name, &current)?
            .finalize()
            .into_bytes()
            .to_vec();
        let count = i64::try_from(current.len())
            .map_err(|_| KeystoreError::Corrupt(format!("table {} is too large", table.name)))?;
        let recorded: Option<(i64, Vec<u8>)> = conn
            .prepare_cached("SELECT row_count, digest FROM table_seals WHERE tbl = ?1")?
            .query_row([table.name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if recorded.as_ref() == Some(&(count, digest.clone())) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO table_seals (tbl, row_count, digest) VALUES (?1, ?2, ?3)
             ON CONFLICT (tbl) DO UPDATE SET row_count = excluded.row_count,
                 digest = excluded.digest",
        )?
        .execute((table.name, count, digest))?;
    }
    Ok(())
}

/// The MAC of every row of `table` as it is now, by row key.
fn current_macs(
    conn: &Connection,
    key: &Key256,
    table: &SealedTable,
) -> Result<BTreeMap<String, Vec<u8>>, KeystoreError> {
    let present = columns_of(conn, table.name)?;
    let columns: Vec<&str> = table
        .key
        .iter()
        .chain(table.columns)
        .copied()
        .filter(|c| present.iter().any(|p| p == c))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}",
        columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", "),
        table.name
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut macs = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(row.get_ref(i)?);
        }
        let row_key = row_key(&columns[..table.key.len()], &values[..table.key.len()]);
        let mut mac = hmac(key)?;
        mac.update(ROW_LABEL);
        put_lp(&mut mac, table.name.as_bytes());
        put_lp(&mut mac, row_key.as_bytes());
        for (column, value) in columns.iter().zip(&values) {
            put_value(&mut mac, column, *value);
        }
        macs.insert(row_key, mac.finalize().into_bytes().to_vec());
    }
    Ok(macs)
}

/// The row MACs recorded for `table`, by row key.
fn stored_macs(conn: &Connection, table: &str) -> Result<BTreeMap<String, Vec<u8>>, KeystoreError> {
    let mut stmt = conn.prepare_cached("SELECT row_key, mac FROM row_seals WHERE tbl = ?1")?;
    let rows = stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `HMAC(key, "ssefs/table/v1" ‖ lp(table) ‖ u64le(n) ‖ (lp(row key) ‖ mac)*)`, rows by key.
fn table_digest(
    key: &Key256,
    table: &str,
    macs: &BTreeMap<String, Vec<u8>>,
) -> Result<Hmac<Sha256>, KeystoreError> {
    let mut mac = hmac(key)?;
    mac.update(TABLE_LABEL);
    put_lp(&mut mac, table.as_bytes());
    mac.update(&(macs.len() as u64).to_le_bytes());
    for (row, row_mac) in macs {
        put_lp(&mut mac, row.as_bytes());
        mac.update(row_mac);
    }
    Ok(mac)
}

/// How a row is named in messages and in `row_seals`: `column=value`, text quoted.
fn row_key(columns: &[&str], values: &[ValueRef<'_>]) -> String {
    columns
        .iter()
        .zip(values)
        .map(|(column, value)| match value {
            ValueRef::Null => format!("{column}=NULL"),
            ValueRef::Integer(i) => format!("{column}={i}"),
            ValueRef::Real(f) => format!("{column}={f}"),
            ValueRef::Text(t) => format!("{column}={:?}", String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => format!("{column}=x'{}'", hex(b)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-NULL column as `lp(name) ‖ tag ‖ value`; NULL adds nothing (as a column that does
/// not exist yet).
fn put_value(mac: &mut Hmac<Sha256>, column: &str, value: ValueRef<'_>) {
    let (tag, bytes): (u8, Vec<u8>) = match value {
        ValueRef::Null => return,
        ValueRef::Integer(i) => (1, i.to_le_bytes().to_vec()),
        ValueRef::Real(f) => (2, f.to_bits().to_le_bytes().to_vec()),
        ValueRef::Text(t) => (3, t.to_vec()),
        ValueRef::Blob(b) => (4, b.to_vec()),
    };
    put_lp(mac, column.as_bytes());
    mac.update(&[tag]);
    put_lp(mac, &bytes);
}

fn put_lp(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_le_bytes());
    mac.update(bytes);
}

fn hmac(key: &Key256) -> Result<Hmac<Sha256>, KeystoreError> {
    Ok(
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret())
            .map_err(|_| CryptoError::Malformed("HMAC key length".into()))?,
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, KeystoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
        )?
        .query_row([name], |r| r.get(0))?)
}

fn columns_of(conn: &Connection, table: &str) -> Result<Vec<String>, KeystoreError> {
    let mut stmt = conn.prepare_cached("SELECT name FROM pragma_table_info(?1)")?;
    let rows = stmt.query_map([table], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod remote_marker_key_tests {
    use super::*;

    /// The vector of FORMAT.md "Directory markers".
    #[test]
    fn the_marker_key_follows_its_derivation() {
        let root: Vec<u8> = (0u8..32).collect();
        let root = Key256::from_bytes(&root).unwrap();
        let id = StoreId::from_bytes(std::array::from_fn(|i| 0xa0 + i as u8));
        let key = remote_marker_key(&root, &id).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b8a02ca8ab48158d1df7609ac103dcf835278c312c895a9983a497f6275c1425"
        );
    }
}

//! Bring your own key: one-time RSA-2048 import parameters, importing 32 bytes of CMK
//! material wrapped with RSAES-OAEP-SHA-256 (or given in plain), and deleting imported
//! material. The private half of the import key never leaves this file unwrapped.
//!
//! The import key is generated from a random 32-byte seed; only the seed is kept, wrapped under
//! the root key (`"ssefs/import/v1" ‖ key id ‖ token`), with the public key in clear. Import
//! rebuilds the key pair from the seed and checks it against the recorded public key.

use super::cmk::{CmkOrigin, CmkState, cmk_context};
use super::grant::Caller;
use super::lifecycle::{Change, CmkRow};
use super::{Keystore, KeystoreError, StoreId, ids, lp};
use crate::crypto::{Key256, WrappedKey, unwrap_key, wrap_key};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey};
use rusqlite::{OptionalExtension, Transaction};
use zeroize::Zeroizing;

/// How long import parameters stay valid, in seconds (24 hours).
pub const IMPORT_PARAMS_LIFETIME: i64 = 24 * 3600;
/// The import key's modulus size.
const IMPORT_KEY_BITS: usize = 2048;
const IMPORT_WRAP_LABEL: &[u8] = b"ssefs/import/v2";
const LEGACY_IMPORT_WRAP_LABEL: &[u8] = b"ssefs/import/v1";
/// Bytes of CMK material.
const MATERIAL_LEN: usize = 32;

/// What `get-import-params` hands the user: the public key to wrap material with, and the
/// token that names these parameters at import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportParams {
    pub key_id: String,
    /// 32 hex digits; one-time.
    pub token: String,
    /// SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
    /// The same, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
}

/// Material to import.
pub enum ImportedMaterial {
    /// 32 bytes wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256) under the import public key
    /// of `token`.
    Wrapped { token: String, ciphertext: Vec<u8> },
    /// 32 bytes in clear (they have been outside any protection: say so to the user).
    Plain(Key256),
}

impl Keystore {
    /// New one-time import parameters for an EXTERNAL CMK (replacing any earlier ones),
    /// valid for 24 hours.
    pub fn get_import_params(
        &self,
        key: &str,
        caller: &Caller,
    ) -> Result<ImportParams, KeystoreError> {
        // The RSA key is generated before the write lock is taken: it takes a while.
        let seed = ids::random_seed()?;
        let public_key = import_key_from_seed(&seed)?.to_public_key();
        let public_key_der = public_key
            .to_public_key_der()
            .map_err(|e| KeystoreError::Corrupt(format!("cannot encode the import key: {e}")))?
            .into_vec();
        let public_key_pem = public_key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeystoreError::Corrupt(format!("cannot encode the import key: {e}")))?;
        let token = ids::new_import_token()?;
        self.administer("GetParametersForImport", key, caller, |tx, row, now| {
            require_importable(row, "get import parameters for")?;
            let seed_key = Key256::from_bytes(seed.as_slice())?;
            let wrapped = wrap_key(
                &self.root_key,
                &import_context(&self.store_id, &row.key_id, &token),
                &seed_key,
            )?;
            let expires_at = now.saturating_add(IMPORT_PARAMS_LIFETIME);
            tx.execute(
                "INSERT INTO import_params
                     (key_id, token, wrapped_seed, public_key, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key_id) DO UPDATE SET token = excluded.token,
                     wrapped_seed = excluded.wrapped_seed, public_key = excluded.public_key,
                     created_at = excluded.created_at, expires_at = excluded.expires_at",
                (
                    &row.key_id,
                    &token,
                    wrapped.0,
                    &public_key_der,
                    now,
                    expires_at,
                ),
            )?;
            let params = ImportParams {
                key_id: row.key_id.clone(),
                token: token.clone(),
                public_key_der: public_key_der.clone(),
                public_key_pem: public_key_pem.clone(),
                expires_at,
            };
            Ok((params, "RSA_2048, RSAES_OAEP_SHA_256".into()))
        })
    }

    /// Imports material into an EXTERNAL CMK and returns its material version. A CMK takes
    /// only one material: into a CMK that had material, only the same material (recognised by
    /// its check) is taken back; different material is `MaterialMismatch`. A `PendingImport`
    /// CMK becomes Enabled. Wrapped material uses up its import parameters.
    pub fn import_material(
        &self,
        key: &str,
        material: ImportedMaterial,
        caller: &Caller,
    ) -> Result<u32, KeystoreError> {
        self.administer("ImportKeyMaterial", key, caller, |tx, row, now| {
            require_importable(row, "import material into")?;
            let (material, how) = match material {
                ImportedMaterial::Plain(material) => (material, "in plain"),
                ImportedMaterial::Wrapped { token, ciphertext } => {
                    let material = self.unwrap_import(tx, &row.key_id, &token, &ciphertext, now)?;
                    tx.execute("DELETE FROM import_params WHERE key_id = ?1", [&row.key_id])?;
                    (material, "wrapped with RSAES_OAEP_SHA_256")
                }
            };
            let version = self.install_material(tx, row, &material, now)?;
            Ok((version, format!("material version {version}, {how}")))
        })
    }

    /// Deletes the material of an EXTERNAL CMK: it becomes `PendingImport` and objects under
    /// it cannot be read until the same material is imported again.
    pub fn delete_material(&self, key: &str, caller: &Caller) -> Result<(), KeystoreError> {
        self.administer("DeleteImportedKeyMaterial", key, caller, |tx, row, now| {
            require_importable(row, "delete the material of")?;
            if row.state == CmkState::PendingImport {
                return Err(KeystoreError::InvalidKeyState {
                    key_id: row.key_id.clone(),
                    state: row.state,
                    action: "delete the material of",
                    hint: "; it has no material",
                });
            }
            tx.execute(
                "INSERT OR REPLACE INTO tombstones (key_id, version, destroyed_at)
                 SELECT key_id, version, ?2 FROM cmk_materials
                 WHERE key_id = ?1 AND wrapped IS NOT NULL",
                (&row.key_id, now),
            )?;
            tx.execute(
                "UPDATE cmk_materials SET wrapped = NULL WHERE key_id = ?1",
                [&row.key_id],
            )?;
            tx.execute(
                "UPDATE cmks SET state = 'PendingImport' WHERE key_id = ?1",
                [&row.key_id],
            )?;
            Ok(((), format!("{} -> PendingImport", row.state)))
        })?;
        // The deleted wrapping leaves the WAL too.
        super::checkpoint_truncate(&self.lock().conn, "deleting key material");
        Ok(())
    }

    /// The material in `ciphertext`, after checking `token` is the CMK's current, unexpired
    /// import token.
    fn unwrap_import(
        &self,
        tx: &Transaction<'_>,
        key_id: &str,
        token: &str,
        ciphertext: &[u8],
        now: i64,
    ) -> Result<Key256, KeystoreError> {
        let params: Option<(String, Vec<u8>, Vec<u8>, i64)> = tx
            .query_row(
                "SELECT token, wrapped_seed, public_key, expires_at FROM import_params
                 WHERE key_id = ?1",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((current, wrapped_seed, public_key_der, expires_at)) = params else {
            return Err(match token_owner(tx, token)? {
                Some(other) => token_mismatch(key_id, Some(&other)),
                None => KeystoreError::NoImportParams(key_id.to_string()),
            });
        };
        if current != token.trim() {
            let owner = token_owner(tx, token)?;
            return Err(token_mismatch(key_id, owner.as_deref()));
        }
        if now >= expires_at {
            return Err(KeystoreError::ImportParamsExpired {
                key_id: key_id.to_string(),
                expired_at: expires_at,
            });
        }
        let seed = unwrap_key(
            &self.root_key,
            &import_context(&self.store_id, key_id, &current),
            &WrappedKey(wrapped_seed),
        )
        .map_err(|_| {
            KeystoreError::Corrupt(format!(
                "the import parameters of CMK {key_id} do not unwrap under the root key"
            ))
        })?;
        let private_key = import_key_from_seed(seed.expose_secret())?;
        let rebuilt = private_key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeystoreError::Corrupt(format!("cannot encode the import key: {e}")))?;
        if rebuilt.as_bytes() != public_key_der.as_slice() {
            return Err(KeystoreError::Corrupt(format!(
                "the import key of CMK {key_id} cannot be rebuilt; run `ssefs kms \
                 get-import-params` again"
            )));
        }
        let invalid = |reason: String| KeystoreError::InvalidImportMaterial {
            key_id: key_id.to_string(),
            reason,
        };
        let modulus_len = IMPORT_KEY_BITS / 8;
        if ciphertext.len() != modulus_len {
            return Err(invalid(format!(
                "the wrapped material is {} bytes; RSA-2048 RSAES-OAEP output is {modulus_len} \
                 bytes (raw binary, not base64 or hex)",
                ciphertext.len()
            )));
        }
        let mut blinding = ChaCha20Rng::from_seed(*ids::random_seed()?);
        let plain = Zeroizing::new(
            private_key
                .decrypt_blinded(&mut blinding, Oaep::new::<rsa::sha2::Sha256>(), ciphertext)
                .map_err(|_| {
                    invalid(
                        "it does not decrypt with this CMK's import key (wrap it with \
                         RSAES-OAEP, SHA-256 for both the hash and MGF1, under the public key \
                         of the same import token)"
                            .into(),
                    )
                })?,
        );
        if plain.len() != MATERIAL_LEN {
            return Err(invalid(format!(
                "it is {} bytes; CMK material is {MATERIAL_LEN} bytes",
                plain.len()
            )));
        }
        Ok(Key256::from_bytes(&plain)?)
    }

    /// Stores `material` as the CMK's material version 1, or restores it when it is the same
    /// as the material the CMK had; enables a `PendingImport` CMK.
    fn install_material(
        &self,
        tx: &Transaction<'_>,
        row: &CmkRow,
        material: &Key256,
        now: i64,
    ) -> Result<u32, KeystoreError> {
        let key_id = &row.key_id;
        let existing: Option<(u32, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT version, material_check FROM cmk_materials
                 WHERE key_id = ?1 ORDER BY version DESC LIMIT 1",
                [key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let version = match existing {
            Some((version, Some(check))) => {
                if !ids::material_matches(material, key_id, &check)? {
                    return Err(KeystoreError::MaterialMismatch(key_id.clone()));
                }
                let wrapped = wrap_key(
                    &self.root_key,
                    &cmk_context(&self.store_id, key_id, version),
                    material,
                )?;
                tx.execute(
                    "UPDATE cmk_materials SET wrapped = ?3 WHERE key_id = ?1 AND version = ?2",
                    (key_id, version, wrapped.0),
                )?;
                // The owner brought the same material back: no longer deleted.
                tx.execute(
                    "DELETE FROM tombstones WHERE key_id = ?1 AND version = ?2",
                    (key_id, version),
                )?;
                version
            }
            Some((version, None)) => {
                return Err(KeystoreError::Corrupt(format!(
                    "CMK {key_id} material version {version} has no check"
                )));
            }
            None => {
                let wrapped = wrap_key(
                    &self.root_key,
                    &cmk_context(&self.store_id, key_id, 1),
                    material,
                )?;
                tx.execute(
                    "INSERT INTO cmk_materials (key_id, version, wrapped, material_check,
                                                created_at)
                     VALUES (?1, 1, ?2, ?3, ?4)",
                    (
                        key_id,
                        wrapped.0,
                        ids::material_check(material, key_id)?,
                        now,
                    ),
                )?;
                1
            }
        };
        if row.state == CmkState::PendingImport {
            tx.execute(
                "UPDATE cmks SET state = 'Enabled' WHERE key_id = ?1",
                [key_id],
            )?;
        }
        Ok(version)
    }
}

/// Import works only on EXTERNAL CMKs that are not being or already deleted.
fn require_importable(row: &CmkRow, action: &'static str) -> Change<()> {
    if row.origin != CmkOrigin::External {
        return Err(KeystoreError::NotExternal(row.key_id.clone()));
    }
    match row.state {
        CmkState::PendingDeletion | CmkState::Destroyed => Err(KeystoreError::InvalidKeyState {
            key_id: row.key_id.clone(),
            state: row.state,
            action,
            hint: "",
        }),
        CmkState::Enabled | CmkState::Disabled | CmkState::PendingImport => Ok(((), String::new())),
    }
}

/// The import key pair a seed stands for (ChaCha20 keyed by the seed drives the key
/// generation, so the same seed always gives the same pair with this RSA implementation).
fn import_key_from_seed(seed: &[u8; 32]) -> Result<RsaPrivateKey, KeystoreError> {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    RsaPrivateKey::new(&mut rng, IMPORT_KEY_BITS)
        .map_err(|e| KeystoreError::Corrupt(format!("cannot generate the import key: {e}")))
}

/// `"ssefs/import/v2" ‖ lp(store id) ‖ lp(key id, UTF-8) ‖ lp(token, UTF-8)`.
pub(super) fn import_context(store_id: &StoreId, key_id: &str, token: &str) -> Vec<u8> {
    [
        IMPORT_WRAP_LABEL,
        &lp(store_id.as_bytes()),
        &lp(key_id.as_bytes()),
        &lp(token.as_bytes()),
    ]
    .concat()
}

/// The context of a keystore from before the seal: `"ssefs/import/v1" ‖ key id ‖ token`.
pub(super) fn legacy_import_context(key_id: &str, token: &str) -> Vec<u8> {
    [
        LEGACY_IMPORT_WRAP_LABEL,
        key_id.as_bytes(),
        token.as_bytes(),
    ]
    .concat()
}

/// The CMK whose current import token `token` is, if any.
fn token_owner(tx: &Transaction<'_>, token: &str) -> Result<Option<String>, KeystoreError> {
    Ok(tx
        .query_row(
            "SELECT key_id FROM import_params WHERE token = ?1",
            [token.trim()],
            |r| r.get(0),
        )
        .optional()?)
}

fn token_mismatch(key_id: &str, owner: Option<&str>) -> KeystoreError {
    KeystoreError::ImportTokenMismatch {
        key_id: key_id.to_string(),
        other: owner.map_or_else(String::new, |o| format!(" (it belongs to CMK {o})")),
    }
}

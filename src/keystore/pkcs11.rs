//! A root of trust in a PKCS#11 token: a non-extractable, sensitive AES-256 key in the token
//! encrypts the store's random root secret (AES-GCM with the store id as AAD, or AES key wrap
//! with padding over the store id and the secret), and `meta` records the module, token and
//! key labels and that ciphertext. The one user of `cryptoki`: the token key's bytes never
//! leave the token, and no PIN or secret is ever printed.

use super::{KeystoreError, StoreId};
use crate::crypto::Key256;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rusqlite::{Connection, Transaction};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The AAD of the GCM encryption and the prefix of its key-wrap counterpart's label.
const AAD_LABEL: &[u8] = b"ssefs/pkcs11-root/v1";
const GCM_IV_LEN: usize = 12;
const GCM_TAG_BITS: u64 = 128;
/// Bytes in an AES-256 key.
const AES_256_LEN: u64 = 32;

/// Which token key holds the root of trust: the module to load and two labels. Not a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKeyName {
    /// The PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as `softhsm2-util --init-token --label`).
    pub token: String,
    /// The key's label (`CKA_LABEL` of the AES key in the token).
    pub key: String,
}

/// How the token encrypts the root secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMechanism {
    /// `CKM_AES_GCM`: a random 12-byte IV, a 16-byte tag, AAD = label ‖ store id.
    AesGcm,
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649) over store id ‖ secret, for tokens without GCM.
    AesKeyWrapPad,
}

impl TokenMechanism {
    /// The name recorded in the keystore.
    pub fn name(self) -> &'static str {
        match self {
            TokenMechanism::AesGcm => "aes-gcm",
            TokenMechanism::AesKeyWrapPad => "aes-key-wrap-pad",
        }
    }

    fn parse(name: &str) -> Option<TokenMechanism> {
        match name {
            "aes-gcm" => Some(TokenMechanism::AesGcm),
            "aes-key-wrap-pad" => Some(TokenMechanism::AesKeyWrapPad),
            _ => None,
        }
    }
}

/// What the keystore records of a store whose root of trust is a token: which key, how, and
/// the root secret encrypted by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRoot {
    pub name: TokenKeyName,
    pub mechanism: TokenMechanism,
    /// The root secret as the token encrypted it (never the secret itself).
    pub wrapped: Vec<u8>,
}

/// A token's user PIN, wiped when dropped; never printed.
pub struct TokenPin(AuthPin);

impl TokenPin {
    /// A PIN from the bytes read (UTF-8, as PKCS#11 PINs are; not empty).
    pub fn new(bytes: &[u8]) -> Result<TokenPin, TokenError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TokenError::PinNotUtf8)?;
        if text.is_empty() {
            return Err(TokenError::PinEmpty);
        }
        Ok(TokenPin(AuthPin::new(text.into())))
    }
}

impl std::fmt::Debug for TokenPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenPin(..)")
    }
}

/// Everything that can go wrong with a token, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot load the PKCS#11 module {}: {reason}", module.display())]
    Module { module: PathBuf, reason: String },
    #[error(
        "no token labelled {token:?} in the PKCS#11 module {} (tokens present: {present}); is \
         the token plugged in and initialised?",
        module.display()
    )]
    NoToken {
        module: PathBuf,
        token: String,
        present: String,
    },
    #[error("wrong PIN for token {token:?}")]
    WrongPin { token: String },
    #[error("the user PIN of token {token:?} is locked; unlock it with the token's own tools")]
    PinLocked { token: String },
    #[error("the PIN is not UTF-8")]
    PinNotUtf8,
    #[error("the PIN is empty")]
    PinEmpty,
    #[error(
        "no key labelled {key:?} in token {token:?}; give the label of the store's key \
         (--key-label) or, for a new store, let `ssefs init` create it"
    )]
    NoKey { token: String, key: String },
    #[error(
        "{count} keys are labelled {key:?} in token {token:?}; a root key's label must name one key"
    )]
    AmbiguousKey {
        token: String,
        key: String,
        count: usize,
    },
    #[error("the key {key:?} in token {token:?} cannot be a root of trust: {problem}")]
    UnsuitableKey {
        token: String,
        key: String,
        problem: String,
    },
    #[error(
        "token {token:?} offers neither CKM_AES_GCM nor CKM_AES_KEY_WRAP_PAD for encryption and \
         decryption; ssefs needs one of them"
    )]
    NoMechanism { token: String },
    #[error(
        "the key {key:?} in token {token:?} does not decrypt this store's root secret: another \
         key with the same label, or a keystore changed outside ssefs"
    )]
    WrongKey { token: String, key: String },
    #[error(
        "token {token:?} is no longer reachable ({reason}); keys already unwrapped stay usable, \
         new ones need the token back"
    )]
    Unreachable { token: String, reason: String },
    #[error("token {token:?}: {operation} failed: {reason}")]
    Call {
        token: String,
        operation: &'static str,
        reason: String,
    },
}

/// An open, logged-in session on the token that holds the key.
struct TokenSession {
    // Dropped before the context: the session closes, then the module is finalised.
    session: Session,
    context: Pkcs11,
    slot: Slot,
    name: TokenKeyName,
}

impl TokenSession {
    /// Loads the module, finds the token by label and logs in with `pin`.
    fn open(name: &TokenKeyName, pin: &TokenPin) -> Result<TokenSession, TokenError> {
        let module_error = |e: CkError| TokenError::Module {
            module: name.module.clone(),
            reason: e.to_string(),
        };
        let context = Pkcs11::new(&name.module).map_err(module_error)?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(module_error)?;
        let call = |operation| move |e: CkError| call_error(&name.token, operation, e);
        let slots = context
            .get_slots_with_initialized_token()
            .map_err(call("listing the slots"))?;
        let mut present = Vec::new();
        let mut found = None;
        for slot in slots {
            let Ok(info) = context.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim_end().to_string();
            if label == name.token && found.is_none() {
                found = Some(slot);
            }
            present.push(format!("{label:?}"));
        }
        let Some(slot) = found else {
            return Err(TokenError::NoToken {
                module: name.module.clone(),
                token: name.token.clone(),
                present: if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                },
            });
        };
        let session = context
            .open_rw_session(slot)
            .map_err(call("opening a session"))?;
        match session.login(UserType::User, Some(&pin.0)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                return Err(TokenError::WrongPin {
                    token: name.token.clone(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(TokenError::PinLocked {
                    token: name.token.clone(),
                });
            }
            Err(e) => return Err(call_error(&name.token, "logging in", e)),
        }
        Ok(TokenSession {
            session,
            context,
            slot,
            name: name.clone(),
        })
    }

    fn call(&self, operation: &'static str) -> impl FnOnce(CkError) -> TokenError + '_ {
        move |e| call_error(&self.name.token, operation, e)
    }

    fn unsuitable(&self, problem: impl Into<String>) -> TokenError {
        TokenError::UnsuitableKey {
            token: self.name.token.clone(),
            key: self.name.key.clone(),
            problem: problem.into(),
        }
    }

    /// The secret key labelled with the key label, if there is exactly one.
    fn find_key(&self) -> Result<Option<ObjectHandle>, TokenError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.name.key.as_bytes().to_vec()),
        ];
        let found = self
            .session
            .find_objects(&template)
            .map_err(self.call("searching for the key"))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(TokenError::AmbiguousKey {
                token: self.name.token.clone(),
                key: self.name.key.clone(),
                count: many.len(),
            }),
        }
    }

    /// The key by label, checked; `NoKey` when there is none.
    fn existing_key(&self) -> Result<ObjectHandle, TokenError> {
        let key = self.find_key()?.ok_or_else(|| TokenError::NoKey {
            token: self.name.token.clone(),
            key: self.name.key.clone(),
        })?;
        self.check_key(key)?;
        Ok(key)
    }

    /// Refuses a key that is not AES-256, is extractable or not sensitive, or cannot both
    /// encrypt and decrypt.
    fn check_key(&self, key: ObjectHandle) -> Result<(), TokenError> {
        let wanted = [
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Extractable,
            AttributeType::Sensitive,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
        ];
        let attributes = self
            .session
            .get_attributes(key, &wanted)
            .map_err(self.call("reading the key's attributes"))?;
        let (mut key_type, mut len) = (None, None);
        let (mut extractable, mut sensitive) = (None, None);
        let (mut encrypt, mut decrypt) = (false, false);
        for attribute in attributes {
            match attribute {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::ValueLen(n) => len = Some(u64::from(n)),
                Attribute::Extractable(b) => extractable = Some(b),
                Attribute::Sensitive(b) => sensitive = Some(b),
                Attribute::Encrypt(b) => encrypt = b,
                Attribute::Decrypt(b) => decrypt = b,
                _ => {}
            }
        }
        if key_type != Some(KeyType::AES) {
            let kind = key_type.map_or_else(|| "unknown".to_string(), |t| t.to_string());
            return Err(self.unsuitable(format!("it is a {kind} key, not an AES-256 key")));
        }
        if len != Some(AES_256_LEN) {
            let bits = len.map_or_else(|| "unknown".to_string(), |n| (n * 8).to_string());
            return Err(self.unsuitable(format!("it is an AES-{bits} key, not AES-256")));
        }
        if extractable != Some(false) {
            return Err(self.unsuitable(
                "it is extractable (CKA_EXTRACTABLE is not false): its bytes could leave the \
                 token",
            ));
        }
        if sensitive != Some(true) {
            return Err(self.unsuitable("it is not sensitive (CKA_SENSITIVE is not true)"));
        }
        if !(encrypt && decrypt) {
            return Err(
                self.unsuitable("it may not both encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT)")
            );
        }
        Ok(())
    }

    /// Makes a new AES-256 key in the token: persistent, private, sensitive, never
    /// extractable, for encryption and decryption only.
    fn generate_key(&self) -> Result<ObjectHandle, TokenError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(AES_256_LEN.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(self.name.key.as_bytes().to_vec()),
        ];
        self.session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(self.call("generating the key"))
    }

    /// The mechanism to use: GCM when the token encrypts and decrypts with it, else AES key
    /// wrap with padding.
    fn choose_mechanism(&self) -> Result<TokenMechanism, TokenError> {
        let offered = self
            .context
            .get_mechanism_list(self.slot)
            .map_err(self.call("listing the mechanisms"))?;
        for (kind, mechanism) in [
            (MechanismType::AES_GCM, TokenMechanism::AesGcm),
            (
                MechanismType::AES_KEY_WRAP_PAD,
                TokenMechanism::AesKeyWrapPad,
            ),
        ] {
            if !offered.contains(&kind) {
                continue;
            }
            if let Ok(info) = self.context.get_mechanism_info(self.slot, kind) {
                if info.encrypt() && info.decrypt() {
                    return Ok(mechanism);
                }
            }
        }
        Err(TokenError::NoMechanism {
            token: self.name.token.clone(),
        })
    }

    /// The root secret encrypted by `key` and bound to `store_id`.
    fn encrypt(
        &self,
        key: ObjectHandle,
        mechanism: TokenMechanism,
        store_id: &StoreId,
        secret: &Key256,
    ) -> Result<Vec<u8>, TokenError> {
        let aad = aad(store_id);
        match mechanism {
            TokenMechanism::AesGcm => {
                let mut iv = [0u8; GCM_IV_LEN];
                getrandom::fill(&mut iv).map_err(|e| TokenError::Call {
                    token: self.name.token.clone(),
                    operation: "choosing an IV",
                    reason: e.to_string(),
                })?;
                let mut iv_param = iv;
                let params = GcmParams::new(&mut iv_param, &aad, GCM_TAG_BITS.into())
                    .map_err(self.call("encrypting the root secret"))?;
                let sealed = self
                    .session
                    .encrypt(&Mechanism::AesGcm(params), key, secret.expose_secret())
                    .map_err(self.call("encrypting the root secret"))?;
                Ok([iv.as_slice(), &sealed].concat())
            }
            TokenMechanism::AesKeyWrapPad => {
                let plain = Zeroizing::new(
                    [store_id.as_bytes().as_slice(), secret.expose_secret()].concat(),
                );
                self.session
                    .encrypt(&Mechanism::AesKeyWrapPad, key, &plain)
                    .map_err(self.call("encrypting the root secret"))
            }
        }
    }

    /// The root secret that `encrypt` gave `wrapped`; `WrongKey` when it does not decrypt or
    /// belongs to another store.
    fn decrypt(
        &self,
        key: ObjectHandle,
        mechanism: TokenMechanism,
        store_id: &StoreId,
        wrapped: &[u8],
    ) -> Result<Key256, TokenError> {
        let wrong = || TokenError::WrongKey {
            token: self.name.token.clone(),
            key: self.name.key.clone(),
        };
        let refused = |e: CkError| match e {
            CkError::Pkcs11(rv, _) if unreachable(rv) => self.call("decrypting the root secret")(e),
            _ => wrong(),
        };
        let aad = aad(store_id);
        let plain = match mechanism {
            TokenMechanism::AesGcm => {
                if wrapped.len() <= GCM_IV_LEN {
                    return Err(wrong());
                }
                let (iv, sealed) = wrapped.split_at(GCM_IV_LEN);
                let mut iv = iv.to_vec();
                let params = GcmParams::new(&mut iv, &aad, GCM_TAG_BITS.into()).map_err(refused)?;
                Zeroizing::new(
                    self.session
                        .decrypt(&Mechanism::AesGcm(params), key, sealed)
                        .map_err(refused)?,
                )
            }
            TokenMechanism::AesKeyWrapPad => {
                let plain = Zeroizing::new(
                    self.session
                        .decrypt(&Mechanism::AesKeyWrapPad, key, wrapped)
                        .map_err(refused)?,
                );
                match plain.strip_prefix(store_id.as_bytes().as_slice()) {
                    Some(rest) => Zeroizing::new(rest.to_vec()),
                    None => return Err(wrong()),
                }
            }
        };
        if plain.len() != AES_256_LEN as usize {
            return Err(wrong());
        }
        Key256::from_bytes(&plain).map_err(|_| wrong())
    }
}

fn aad(store_id: &StoreId) -> Vec<u8> {
    [AAD_LABEL, store_id.as_bytes().as_slice()].concat()
}

/// Whether a return value says the token or device went away (rather than refusing data).
fn unreachable(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
    )
}

fn call_error(token: &str, operation: &'static str, e: CkError) -> TokenError {
    match e {
        CkError::Pkcs11(rv, _) if unreachable(rv) => TokenError::Unreachable {
            token: token.to_string(),
            reason: rv.to_string(),
        },
        e => TokenError::Call {
            token: token.to_string(),
            operation,
            reason: e.to_string(),
        },
    }
}

/// A new root secret for the store `store_id`, encrypted by the token key `name` (made in the
/// token when `create` and no key has that label). Returns the secret and what the keystore
/// records. The key is checked (AES-256, not extractable, sensitive, encrypt and decrypt)
/// whether found or made.
pub fn new_token_root(
    name: &TokenKeyName,
    pin: &TokenPin,
    store_id: &StoreId,
    create: bool,
) -> Result<(Key256, TokenRoot), KeystoreError> {
    let token = TokenSession::open(name, pin)?;
    let key = match token.find_key()? {
        Some(key) => key,
        None if create => token.generate_key()?,
        None => {
            return Err(TokenError::NoKey {
                token: name.token.clone(),
                key: name.key.clone(),
            }
            .into());
        }
    };
    token.check_key(key)?;
    let mechanism = token.choose_mechanism()?;
    let secret = Key256::generate()?;
    let wrapped = token.encrypt(key, mechanism, store_id, &secret)?;
    // Decrypted once at once, so a token that encrypts but cannot give it back is found now,
    // not when the store is next opened.
    let back = token.decrypt(key, mechanism, store_id, &wrapped)?;
    if back.expose_secret() != secret.expose_secret() {
        return Err(TokenError::WrongKey {
            token: name.token.clone(),
            key: name.key.clone(),
        }
        .into());
    }
    let root = TokenRoot {
        name: name.clone(),
        mechanism,
        wrapped,
    };
    Ok((secret, root))
}

/// The store's root secret, decrypted in the token that `root` names.
pub fn unwrap_token_root(
    root: &TokenRoot,
    pin: &TokenPin,
    store_id: &StoreId,
) -> Result<Key256, KeystoreError> {
    let token = TokenSession::open(&root.name, pin)?;
    let key = token.existing_key()?;
    Ok(token.decrypt(key, root.mechanism, store_id, &root.wrapped)?)
}

/// The token root recorded in the keystore in `dir`, or `None` when its root key is not in a
/// token. Needs no key and writes nothing.
pub fn read_token_root(dir: &Path) -> Result<Option<TokenRoot>, KeystoreError> {
    let conn = super::connect_existing(&dir.join(super::KEYSTORE_FILE))?;
    read_from(&conn)
}

/// The token root recorded in a keystore backup file (opened read-only), if any.
pub fn read_backup_token_root(file: &Path) -> Result<Option<TokenRoot>, KeystoreError> {
    let conn = Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    read_from(&conn)
}

/// The recorded token root of an open connection (`None` before the schema step that adds
/// the columns).
pub(super) fn read_from(conn: &Connection) -> Result<Option<TokenRoot>, KeystoreError> {
    let has_columns: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('meta') WHERE name = 'root_pkcs11_key'",
        [],
        |r| r.get(0),
    )?;
    if !has_columns {
        return Ok(None);
    }
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
    );
    let row: Row = conn.query_row(
        "SELECT root_pkcs11_module, root_pkcs11_token, root_pkcs11_key, root_pkcs11_mechanism,
                root_pkcs11_wrapped FROM meta WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    match row {
        (None, None, None, None, None) => Ok(None),
        (Some(module), Some(token), Some(key), Some(mechanism), Some(wrapped)) => {
            let mechanism = TokenMechanism::parse(&mechanism).ok_or_else(|| {
                KeystoreError::Corrupt(format!("unknown token mechanism {mechanism:?}"))
            })?;
            Ok(Some(TokenRoot {
                name: TokenKeyName {
                    module: PathBuf::from(module),
                    token,
                    key,
                },
                mechanism,
                wrapped,
            }))
        }
        _ => Err(KeystoreError::Corrupt(
            "the token root of trust recorded in the keystore is incomplete".into(),
        )),
    }
}

/// Records `root` (or clears the record: the root key is then a key file or passphrase).
pub(super) fn write_token_root(
    tx: &Transaction<'_>,
    root: Option<&TokenRoot>,
) -> Result<(), KeystoreError> {
    tx.execute(
        "UPDATE meta SET root_pkcs11_module = ?1, root_pkcs11_token = ?2, root_pkcs11_key = ?3,
             root_pkcs11_mechanism = ?4, root_pkcs11_wrapped = ?5 WHERE id = 1",
        (
            root.map(|r| r.name.module.to_string_lossy().into_owned()),
            root.map(|r| r.name.token.clone()),
            root.map(|r| r.name.key.clone()),
            root.map(|r| r.mechanism.name()),
            root.map(|r| r.wrapped.clone()),
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Keystore;
    use super::*;

    fn record(wrapped: u8) -> TokenRoot {
        TokenRoot {
            name: TokenKeyName {
                module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
                token: "ssefs".into(),
                key: "root".into(),
            },
            mechanism: TokenMechanism::AesGcm,
            wrapped: vec![wrapped; 60],
        }
    }

    #[test]
    fn the_token_record_is_sealed_read_without_a_key_and_cleared_by_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = Key256::generate().unwrap();
        let ks = Keystore::create(dir.path(), &root).unwrap();
        assert_eq!(read_token_root(dir.path()).unwrap(), None);
        ks.record_token_root(&record(7)).unwrap();
        drop(ks);
        assert_eq!(read_token_root(dir.path()).unwrap(), Some(record(7)));

        // A record changed outside ssefs breaks the seal of `meta`.
        let raw = Connection::open(dir.path().join(super::super::KEYSTORE_FILE)).unwrap();
        raw.execute("UPDATE meta SET root_pkcs11_token = 'other'", [])
            .unwrap();
        assert!(matches!(
            Keystore::open(dir.path(), &root),
            Err(KeystoreError::Tampered(_))
        ));
        raw.execute("UPDATE meta SET root_pkcs11_token = 'ssefs'", [])
            .unwrap();
        raw.execute("UPDATE meta SET root_pkcs11_mechanism = NULL", [])
            .unwrap();
        assert!(matches!(
            read_token_root(dir.path()),
            Err(KeystoreError::Corrupt(m)) if m.contains("incomplete")
        ));
        raw.execute("UPDATE meta SET root_pkcs11_mechanism = 'aes-gcm'", [])
            .unwrap();
        drop(raw);

        // Moving to a key file clears the record in the same transaction.
        let ks = Keystore::open(dir.path(), &root).unwrap();
        let file_key = Key256::generate().unwrap();
        ks.change_root_key(&file_key, None).unwrap();
        assert_eq!(read_token_root(dir.path()).unwrap(), None);
        let ks = Keystore::open(dir.path(), &file_key).unwrap();
        let token_secret = Key256::generate().unwrap();
        ks.change_root_key_to(&token_secret, super::super::RootRecord::Token(&record(9)))
            .unwrap();
        assert_eq!(read_token_root(dir.path()).unwrap(), Some(record(9)));
        assert_eq!(read_passphrase_kdf_of(dir.path()), None);
        Keystore::open(dir.path(), &token_secret).unwrap();
    }

    fn read_passphrase_kdf_of(dir: &Path) -> Option<super::super::PassphraseKdf> {
        super::super::read_passphrase_kdf(dir).unwrap()
    }

    #[test]
    fn a_pin_is_utf8_not_empty_and_never_printed() {
        assert!(matches!(TokenPin::new(b""), Err(TokenError::PinEmpty)));
        assert!(matches!(
            TokenPin::new(&[0xff, 0xfe]),
            Err(TokenError::PinNotUtf8)
        ));
        let pin = TokenPin::new(b"123456").unwrap();
        assert_eq!(format!("{pin:?}"), "TokenPin(..)");
    }
}

//! The SSE policy: bucket names, the mount's default encryption for new buckets, what the
//! filesystem needs from the keystore ([`KeySource`]), and the pure decisions behind the
//! encryption attributes (what a set or remove means for a bucket rule or an object).
//! No file I/O and no FUSE here.

use super::FsError;
use crate::crypto::{Algorithm, Key256, KeyRef, StoreKey};
use crate::keystore::{BucketRule, Caller, KeyOp, Keystore};
use std::ffi::OsStr;

/// The default encryption recorded for a bucket created through the mount
/// (mount option `default_sse=none|AES256|KMS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultSse {
    None,
    #[default]
    Aes256,
    Kms,
}

impl std::str::FromStr for DefaultSse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match (s, parse_sse_algorithm(s)) {
            ("none", _) => Ok(DefaultSse::None),
            (_, Ok(Algorithm::Aes256)) => Ok(DefaultSse::Aes256),
            (_, Ok(Algorithm::Kms)) => Ok(DefaultSse::Kms),
            (other, _) => Err(format!(
                "unknown default_sse value {other:?} (expected none, AES256 or KMS)"
            )),
        }
    }
}

/// A value of `x-oss-server-side-encryption` other than `AES256` or `KMS`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown server-side encryption algorithm {0:?}: use AES256 or KMS")]
pub struct UnknownAlgorithm(pub String);

/// The name of [`Algorithm::Aes256`] in `x-oss-server-side-encryption`.
pub const AES256: &str = "AES256";
/// The name of [`Algorithm::Kms`] in `x-oss-server-side-encryption`.
pub const KMS: &str = "KMS";

/// The one rule for an algorithm's name, as OSS's `x-oss-server-side-encryption` spells it:
/// exactly `AES256` or `KMS` (the attribute, the bucket rules and every command line use it).
pub fn parse_sse_algorithm(text: &str) -> Result<Algorithm, UnknownAlgorithm> {
    match text {
        AES256 => Ok(Algorithm::Aes256),
        KMS => Ok(Algorithm::Kms),
        other => Err(UnknownAlgorithm(other.to_string())),
    }
}

impl DefaultSse {
    /// The rule to record for a new bucket (`None`: no rule).
    pub fn bucket_rule(self) -> Option<BucketRule> {
        let algorithm = match self {
            DefaultSse::None => return None,
            DefaultSse::Aes256 => Algorithm::Aes256,
            DefaultSse::Kms => Algorithm::Kms,
        };
        Some(BucketRule {
            algorithm,
            kms_key_id: None,
        })
    }
}

/// The value of `x-oss-server-side-encryption` for an algorithm (`None` when unencrypted).
pub fn algorithm_name(algorithm: Algorithm) -> Option<&'static str> {
    match algorithm {
        Algorithm::None => None,
        Algorithm::Aes256 => Some(AES256),
        Algorithm::Kms => Some(KMS),
    }
}

/// The one rule for OSS bucket names: 3-63 characters of `a-z`, `0-9` and `-`, starting and
/// ending with a letter or digit.
pub fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && edge(bytes.first())
        && edge(bytes.last())
}

/// Checks a bucket name (see [`is_bucket_name`]) and returns it as text.
pub fn validate_bucket_name(name: &OsStr) -> Result<&str, FsError> {
    match name.to_str() {
        Some(text) if is_bucket_name(text) => Ok(text),
        _ => Err(FsError::InvalidBucketName(name.to_os_string())),
    }
}

/// What the filesystem needs from the keystore: bucket rules and key-encryption keys.
/// Implemented by [`Keystore`]; a later backend (a real KMS) implements it too. Every use of
/// a CMK names the caller and the object (its path relative to the mount) and is checked
/// and audited by the key source: there is no way to a CMK's material without a caller.
pub trait KeySource: Send + Sync {
    fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, FsError>;
    fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), FsError>;
    fn delete_bucket_rule(&self, bucket: &str) -> Result<(), FsError>;
    /// Checks a bucket rule `caller` wants to put (the CMK it names must exist, be Enabled
    /// and be usable by `caller`) and returns it as it is to be stored.
    fn validate_rule(&self, rule: &BucketRule, caller: &Caller) -> Result<BucketRule, FsError>;
    /// The newest master key version and its key.
    fn current_master_key(&self) -> Result<(u32, Key256), FsError>;
    /// The master key version an `AES256` object header names.
    fn master_key(&self, version: u32) -> Result<Option<Key256>, FsError>;
    /// The CMK for a new `KMS` object at `object_path`: `(key id, material version,
    /// material)` of the CMK named by id or alias, or of the default CMK (created on first
    /// use) when `None`, if `caller` may encrypt with it (`GenerateDataKey`).
    fn cmk_for_new_object(
        &self,
        id_or_alias: Option<&str>,
        caller: &Caller,
        object_path: &str,
    ) -> Result<(String, u32, Key256), FsError>;
    /// The material version `version` of CMK `key_id` that an existing object at
    /// `object_path` is wrapped under, if `caller` may decrypt with it (`Decrypt`).
    fn cmk_for_object(
        &self,
        key_id: &str,
        version: u32,
        caller: &Caller,
        object_path: &str,
    ) -> Result<Key256, FsError>;
    /// The store's id and object-authentication key.
    fn store_key(&self) -> Result<StoreKey, FsError>;
}

impl KeySource for Keystore {
    fn store_key(&self) -> Result<StoreKey, FsError> {
        Ok(Keystore::store_key(self)?)
    }
    fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, FsError> {
        Ok(Keystore::bucket_rule(self, bucket)?)
    }
    fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), FsError> {
        Ok(Keystore::put_bucket_rule(self, bucket, rule)?)
    }
    fn delete_bucket_rule(&self, bucket: &str) -> Result<(), FsError> {
        Ok(Keystore::delete_bucket_rule(self, bucket)?)
    }
    fn validate_rule(&self, rule: &BucketRule, caller: &Caller) -> Result<BucketRule, FsError> {
        Ok(Keystore::validate_rule(self, rule, caller)?)
    }
    fn current_master_key(&self) -> Result<(u32, Key256), FsError> {
        Ok(Keystore::current_master_key(self)?)
    }
    fn master_key(&self, version: u32) -> Result<Option<Key256>, FsError> {
        Ok(Keystore::resolve(self, &KeyRef::Master { version })?)
    }
    fn cmk_for_new_object(
        &self,
        id_or_alias: Option<&str>,
        caller: &Caller,
        object_path: &str,
    ) -> Result<(String, u32, Key256), FsError> {
        let key_id = match id_or_alias {
            Some(id) => id.to_string(),
            None => self.default_cmk()?,
        };
        Ok(self.authorize(&key_id, KeyOp::Encrypt, caller, object_path)?)
    }
    fn cmk_for_object(
        &self,
        key_id: &str,
        version: u32,
        caller: &Caller,
        object_path: &str,
    ) -> Result<Key256, FsError> {
        Ok(self.authorize_decrypt(key_id, version, caller, object_path)?)
    }
}

/// The reserved attributes of the encryption policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SseAttribute {
    /// `user.oss.server-side-encryption`: `AES256` or `KMS`.
    Algorithm,
    /// `user.oss.server-side-encryption-key-id`: a CMK id or alias.
    KeyId,
}

impl SseAttribute {
    pub fn from_name(name: &[u8]) -> Option<SseAttribute> {
        if name == super::SSE_ATTR.as_bytes() {
            Some(SseAttribute::Algorithm)
        } else if name == super::SSE_KEY_ID_ATTR.as_bytes() {
            Some(SseAttribute::KeyId)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SseAttribute::Algorithm => super::SSE_ATTR,
            SseAttribute::KeyId => super::SSE_KEY_ID_ATTR,
        }
    }
}

/// The longest key id or alias accepted in an attribute (as a CMK alias).
const MAX_KEY_ID_LEN: usize = 255;

/// Parses an attribute's algorithm value (see [`parse_sse_algorithm`]).
pub(crate) fn parse_algorithm(value: &[u8]) -> Result<Algorithm, FsError> {
    let text = String::from_utf8_lossy(value);
    parse_sse_algorithm(&text).map_err(|_| FsError::InvalidSseValue {
        attribute: super::SSE_ATTR,
        value: text.into_owned(),
        expected: "AES256 or KMS",
    })
}

/// Parses a key id value: a non-empty CMK id or alias of printable ASCII without spaces.
pub(crate) fn parse_key_id(value: &[u8]) -> Result<String, FsError> {
    let printable = value.iter().all(|b| b.is_ascii_graphic());
    if value.is_empty() || value.len() > MAX_KEY_ID_LEN || !printable {
        return Err(FsError::InvalidSseValue {
            attribute: super::SSE_KEY_ID_ATTR,
            value: String::from_utf8_lossy(value).into_owned(),
            expected: "a CMK id or alias",
        });
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// What a set or remove of an attribute does to a bucket's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RuleChange {
    Put(BucketRule),
    Delete,
}

/// The rule after setting `attribute` to `value` on a bucket whose rule is `current`.
/// A key id it names is not checked here (the caller asks the keystore).
pub(crate) fn bucket_rule_after_set(
    current: Option<&BucketRule>,
    attribute: SseAttribute,
    value: &[u8],
) -> Result<RuleChange, FsError> {
    match attribute {
        SseAttribute::Algorithm => {
            let algorithm = parse_algorithm(value)?;
            let kms_key_id = match (algorithm, current) {
                (Algorithm::Kms, Some(rule)) if rule.algorithm == Algorithm::Kms => {
                    rule.kms_key_id.clone()
                }
                _ => None,
            };
            Ok(RuleChange::Put(BucketRule {
                algorithm,
                kms_key_id,
            }))
        }
        SseAttribute::KeyId => {
            let key_id = parse_key_id(value)?;
            match current {
                Some(rule) if rule.algorithm == Algorithm::Kms => Ok(RuleChange::Put(BucketRule {
                    algorithm: Algorithm::Kms,
                    kms_key_id: Some(key_id),
                })),
                _ => Err(FsError::KeyIdWithoutKms),
            }
        }
    }
}

/// The rule after removing `attribute` from a bucket whose rule is `current`.
pub(crate) fn bucket_rule_after_remove(
    current: Option<&BucketRule>,
    attribute: SseAttribute,
) -> Result<RuleChange, FsError> {
    match (attribute, current) {
        (SseAttribute::Algorithm, Some(_)) => Ok(RuleChange::Delete),
        (SseAttribute::KeyId, Some(rule))
            if rule.algorithm == Algorithm::Kms && rule.kms_key_id.is_some() =>
        {
            Ok(RuleChange::Put(BucketRule {
                algorithm: Algorithm::Kms,
                kms_key_id: None,
            }))
        }
        _ => Err(FsError::NoAttribute),
    }
}

/// Whether a bucket's attribute has a value now (for `XATTR_CREATE`/`XATTR_REPLACE`).
pub(crate) fn bucket_attribute_exists(
    current: Option<&BucketRule>,
    attribute: SseAttribute,
) -> bool {
    match (attribute, current) {
        (SseAttribute::Algorithm, rule) => rule.is_some(),
        (SseAttribute::KeyId, Some(rule)) => rule.kms_key_id.is_some(),
        (SseAttribute::KeyId, None) => false,
    }
}

/// How an object is to be encrypted: the algorithm and, for `KMS`, the CMK by id or alias
/// (`None`: the default CMK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SseSetting {
    pub algorithm: Algorithm,
    pub kms_key_id: Option<String>,
}

impl SseSetting {
    /// The setting a bucket's rule gives new objects (no rule: unencrypted).
    pub fn from_rule(rule: Option<&BucketRule>) -> SseSetting {
        match rule {
            Some(rule) => SseSetting {
                algorithm: rule.algorithm,
                kms_key_id: rule.kms_key_id.clone(),
            },
            None => SseSetting {
                algorithm: Algorithm::None,
                kms_key_id: None,
            },
        }
    }
}

/// The setting asked for by setting `attribute` to `value` on an object now encrypted with
/// `current`: the algorithm (`KMS`: the default CMK), or a CMK for a `KMS` object.
pub(crate) fn object_setting_after_set(
    current: Algorithm,
    attribute: SseAttribute,
    value: &[u8],
) -> Result<SseSetting, FsError> {
    match attribute {
        SseAttribute::Algorithm => Ok(SseSetting {
            algorithm: parse_algorithm(value)?,
            kms_key_id: None,
        }),
        SseAttribute::KeyId => {
            let key_id = parse_key_id(value)?;
            if current != Algorithm::Kms {
                return Err(FsError::KeyIdWithoutKms);
            }
            Ok(SseSetting {
                algorithm: Algorithm::Kms,
                kms_key_id: Some(key_id),
            })
        }
    }
}

/// Whether an object's attribute has a value now (for `XATTR_CREATE`/`XATTR_REPLACE`).
pub(crate) fn object_attribute_exists(current: Algorithm, attribute: SseAttribute) -> bool {
    match attribute {
        SseAttribute::Algorithm => current != Algorithm::None,
        SseAttribute::KeyId => current == Algorithm::Kms,
    }
}

/// Whether an object wrapped under `current` already is as `wanted` would make it: the same
/// algorithm and, for `KMS`, the same CMK (any master key or material version will do).
pub(crate) fn already_matches(current: &KeyRef, wanted: &KeyRef) -> bool {
    match (current, wanted) {
        (KeyRef::None, KeyRef::None) | (KeyRef::Master { .. }, KeyRef::Master { .. }) => true,
        (KeyRef::Cmk { key_id: a, .. }, KeyRef::Cmk { key_id: b, .. }) => a == b,
        _ => false,
    }
}

/// How a new object in a bucket is encrypted: algorithm, the key reference for its header and
/// the key-encryption key (present exactly when the algorithm is not `None`).
pub struct NewObjectKey {
    pub algorithm: Algorithm,
    pub key_ref: KeyRef,
    pub kek: Option<Key256>,
}

/// Who asks for a key, and for which object (its path relative to the mount): what the
/// key source checks and audits a CMK use against. The caller's supplementary groups and the
/// path are worked out only when a CMK is used: they cost system calls (`/proc/PID/status`,
/// `readlink`) that an `AES256` or unencrypted object does not need.
pub(crate) struct KeyUse<'a> {
    caller: super::Caller,
    object_path: &'a dyn Fn() -> String,
}

impl<'a> KeyUse<'a> {
    pub fn new(caller: super::Caller, object_path: &'a dyn Fn() -> String) -> Self {
        KeyUse {
            caller,
            object_path,
        }
    }

    /// The caller with its supplementary groups, as the keystore checks it.
    fn key_caller(&self) -> Caller {
        self.caller.with_groups()
    }

    /// The object's path relative to the mount.
    pub fn object_path(&self) -> String {
        (self.object_path)()
    }
}

/// Chooses the encryption of a new object from the bucket's rule (read at every create).
pub(crate) fn new_object_key(
    keys: &dyn KeySource,
    bucket: &str,
    user: &KeyUse<'_>,
) -> Result<NewObjectKey, FsError> {
    let rule = keys.bucket_rule(bucket)?;
    key_for_setting(keys, &SseSetting::from_rule(rule.as_ref()), user)
}

/// The key reference and key-encryption key for an object encrypted per `setting`: the
/// current master key, or the newest material of the named (or default) CMK, which must be
/// `Enabled` and usable by the caller for encryption.
pub(crate) fn key_for_setting(
    keys: &dyn KeySource,
    setting: &SseSetting,
    user: &KeyUse<'_>,
) -> Result<NewObjectKey, FsError> {
    let algorithm = setting.algorithm;
    match algorithm {
        Algorithm::None => Ok(NewObjectKey {
            algorithm,
            key_ref: KeyRef::None,
            kek: None,
        }),
        Algorithm::Aes256 => {
            let (version, key) = keys.current_master_key()?;
            Ok(NewObjectKey {
                algorithm,
                key_ref: KeyRef::Master { version },
                kek: Some(key),
            })
        }
        Algorithm::Kms => {
            let named = setting.kms_key_id.as_deref();
            let (key_id, version, key) =
                keys.cmk_for_new_object(named, &user.key_caller(), &user.object_path())?;
            Ok(NewObjectKey {
                algorithm,
                key_ref: KeyRef::Cmk { key_id, version },
                kek: Some(key),
            })
        }
    }
}

/// The key-encryption key an existing object's header names; a CMK only if the caller may
/// decrypt with it (checked and audited at every call).
pub(crate) fn object_kek(
    keys: &dyn KeySource,
    key_ref: &KeyRef,
    user: &KeyUse<'_>,
) -> Result<Option<Key256>, FsError> {
    match key_ref {
        KeyRef::None => Ok(None),
        KeyRef::Master { version } => match keys.master_key(*version)? {
            Some(key) => Ok(Some(key)),
            None => Err(FsError::UnknownKey(format!("master key version {version}"))),
        },
        KeyRef::Cmk { key_id, version } => Ok(Some(keys.cmk_for_object(
            key_id,
            *version,
            &user.key_caller(),
            &user.object_path(),
        )?)),
    }
}

/// Checks that the caller may still decrypt with the CMK an object is wrapped under, for a
/// new handle of an object that is already open (its data key is cached, but each open is a
/// use of the key). Objects not under a CMK need no check.
pub(crate) fn check_object_key(
    keys: &dyn KeySource,
    key_ref: &KeyRef,
    user: &KeyUse<'_>,
) -> Result<(), FsError> {
    if let KeyRef::Cmk { key_id, version } = key_ref {
        keys.cmk_for_object(key_id, *version, &user.key_caller(), &user.object_path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_algorithm_and_bucket_name_rules() {
        assert_eq!(parse_sse_algorithm("AES256"), Ok(Algorithm::Aes256));
        assert_eq!(parse_sse_algorithm("KMS"), Ok(Algorithm::Kms));
        for bad in ["aes256", "kms", "none", "", "AES256 "] {
            let err = parse_sse_algorithm(bad).unwrap_err();
            assert!(err.to_string().contains("use AES256 or KMS"), "{err}");
        }
        for good in ["abc", "my-bucket-1", "9a9", &"a".repeat(63)] {
            assert!(is_bucket_name(good), "{good}");
        }
        for bad in [
            "ab",
            "-ab",
            "ab-",
            "A-b",
            "a_b",
            ".ssefs",
            "",
            &"a".repeat(64),
        ] {
            assert!(!is_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn bucket_names_follow_oss_rules() {
        for good in ["abc", "my-bucket-1", "0aa", &"a".repeat(63)] {
            assert!(validate_bucket_name(OsStr::new(good)).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Abc",
            "-abc",
            "abc-",
            "a_b_c",
            "a.bc",
            ".ssefs",
            "abc ",
            "ünï",
        ] {
            let err = validate_bucket_name(OsStr::new(bad)).unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL, "{bad}");
        }
    }

    #[test]
    fn default_sse_parses_exactly_the_oss_values() {
        assert_eq!("none".parse::<DefaultSse>().unwrap(), DefaultSse::None);
        assert_eq!("AES256".parse::<DefaultSse>().unwrap(), DefaultSse::Aes256);
        assert_eq!("KMS".parse::<DefaultSse>().unwrap(), DefaultSse::Kms);
        assert!("aes256".parse::<DefaultSse>().is_err());
        assert_eq!(DefaultSse::None.bucket_rule(), None);
        assert_eq!(
            DefaultSse::Aes256.bucket_rule().map(|r| r.algorithm),
            Some(Algorithm::Aes256)
        );
    }

    fn rule(algorithm: Algorithm, key: Option<&str>) -> BucketRule {
        BucketRule {
            algorithm,
            kms_key_id: key.map(str::to_string),
        }
    }

    use SseAttribute::{Algorithm as Alg, KeyId};

    #[test]
    fn setting_a_bucket_algorithm_keeps_a_key_id_only_from_kms_to_kms() {
        let kms_k = rule(Algorithm::Kms, Some("k1"));
        let cases = [
            (None, b"AES256".as_slice(), rule(Algorithm::Aes256, None)),
            (None, b"KMS", rule(Algorithm::Kms, None)),
            (Some(&kms_k), b"AES256", rule(Algorithm::Aes256, None)),
            (Some(&kms_k), b"KMS", rule(Algorithm::Kms, Some("k1"))),
        ];
        for (current, value, wanted) in cases {
            assert_eq!(
                bucket_rule_after_set(current, Alg, value).unwrap(),
                RuleChange::Put(wanted)
            );
        }
        for bad in [&b"aes256"[..], b"", b"AES256\0", b"none", b"SM4"] {
            let err = bucket_rule_after_set(Some(&kms_k), Alg, bad).unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL, "{bad:?}");
        }
    }

    #[test]
    fn a_bucket_key_id_needs_a_kms_rule() {
        let kms = rule(Algorithm::Kms, None);
        assert_eq!(
            bucket_rule_after_set(Some(&kms), KeyId, b"alias/mine").unwrap(),
            RuleChange::Put(rule(Algorithm::Kms, Some("alias/mine")))
        );
        let aes = rule(Algorithm::Aes256, None);
        for current in [None, Some(&aes)] {
            let err = bucket_rule_after_set(current, KeyId, b"k").unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL);
        }
        for bad in [&b""[..], b"with space", b"nul\0", &[b'k'; 256]] {
            let err = bucket_rule_after_set(Some(&kms), KeyId, bad).unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL);
        }
    }

    #[test]
    fn removing_from_a_bucket_deletes_the_rule_or_drops_the_key_id() {
        let kms_k = rule(Algorithm::Kms, Some("k"));
        let kms = rule(Algorithm::Kms, None);
        let aes = rule(Algorithm::Aes256, None);
        assert_eq!(
            bucket_rule_after_remove(Some(&aes), Alg).unwrap(),
            RuleChange::Delete
        );
        assert_eq!(
            bucket_rule_after_remove(Some(&kms_k), KeyId).unwrap(),
            RuleChange::Put(kms.clone())
        );
        for (current, attribute) in [
            (None, Alg),
            (None, KeyId),
            (Some(&kms), KeyId),
            (Some(&aes), KeyId),
        ] {
            let err = bucket_rule_after_remove(current, attribute).unwrap_err();
            assert_eq!(err.errno(), libc::ENODATA);
        }
        assert!(bucket_attribute_exists(Some(&kms_k), KeyId));
        assert!(!bucket_attribute_exists(Some(&kms), KeyId));
        assert!(!bucket_attribute_exists(None, Alg));
    }

    #[test]
    fn object_settings_follow_the_attribute() {
        for current in [Algorithm::None, Algorithm::Aes256, Algorithm::Kms] {
            assert_eq!(
                object_setting_after_set(current, Alg, b"KMS").unwrap(),
                SseSetting {
                    algorithm: Algorithm::Kms,
                    kms_key_id: None
                }
            );
            assert_eq!(
                object_setting_after_set(current, Alg, b"AES256")
                    .unwrap()
                    .algorithm,
                Algorithm::Aes256
            );
            let bad = object_setting_after_set(current, Alg, b"none").unwrap_err();
            assert_eq!(bad.errno(), libc::EINVAL);
        }
        assert_eq!(
            object_setting_after_set(Algorithm::Kms, KeyId, b"k9").unwrap(),
            SseSetting {
                algorithm: Algorithm::Kms,
                kms_key_id: Some("k9".into())
            }
        );
        for current in [Algorithm::None, Algorithm::Aes256] {
            let err = object_setting_after_set(current, KeyId, b"k9").unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL);
        }
        assert!(object_attribute_exists(Algorithm::Kms, KeyId));
        assert!(!object_attribute_exists(Algorithm::Aes256, KeyId));
        assert!(!object_attribute_exists(Algorithm::None, Alg));
        assert_eq!(SseSetting::from_rule(None).algorithm, Algorithm::None);
    }

    #[test]
    fn matching_compares_algorithm_and_cmk_but_not_versions() {
        let m1 = KeyRef::Master { version: 1 };
        let m2 = KeyRef::Master { version: 2 };
        let a1 = KeyRef::Cmk {
            key_id: "a".into(),
            version: 1,
        };
        let a2 = KeyRef::Cmk {
            key_id: "a".into(),
            version: 2,
        };
        let b1 = KeyRef::Cmk {
            key_id: "b".into(),
            version: 1,
        };
        assert!(already_matches(&KeyRef::None, &KeyRef::None));
        assert!(already_matches(&m1, &m2));
        assert!(already_matches(&a1, &a2));
        assert!(!already_matches(&a1, &b1));
        assert!(!already_matches(&m1, &a1));
        assert!(!already_matches(&KeyRef::None, &m1));
        assert!(!already_matches(&a1, &KeyRef::None));
    }

    #[test]
    fn the_object_path_is_worked_out_only_for_a_cmk() {
        use crate::keystore::CmkOrigin;
        use std::cell::Cell;
        let dir = tempfile::tempdir().unwrap();
        let root_key = Key256::generate().unwrap();
        let keystore = Keystore::create(dir.path(), &root_key).unwrap();
        let asked = Cell::new(0);
        let path = || {
            asked.set(asked.get() + 1);
            "bkt/o".to_string()
        };
        let root = super::super::Caller {
            uid: 0,
            gid: 0,
            pid: 0,
        };
        let user = KeyUse::new(root, &path);
        let none = SseSetting::from_rule(None);
        let aes = SseSetting::from_rule(Some(&rule(Algorithm::Aes256, None)));
        for setting in [&none, &aes] {
            let key = key_for_setting(&keystore, setting, &user).unwrap();
            object_kek(&keystore, &key.key_ref, &user).unwrap();
            check_object_key(&keystore, &key.key_ref, &user).unwrap();
        }
        assert_eq!(asked.get(), 0, "no CMK, no path");
        let root_caller = root.with_groups();
        let cmk = keystore
            .create_cmk_for("", None, CmkOrigin::Ssefs, &root_caller)
            .unwrap();
        let kms = SseSetting::from_rule(Some(&rule(Algorithm::Kms, Some(&cmk))));
        let key = key_for_setting(&keystore, &kms, &user).unwrap();
        check_object_key(&keystore, &key.key_ref, &user).unwrap();
        assert_eq!(asked.get(), 2, "one audited use each");
        let records = keystore
            .audit_records(&crate::keystore::AuditQuery::default())
            .unwrap();
        let uses: Vec<_> = records
            .iter()
            .filter(|r| r.object_path.as_deref() == Some("bkt/o"))
            .map(|r| r.operation.as_str())
            .collect();
        assert_eq!(uses, ["GenerateDataKey", "Decrypt"]);
    }
}

//! The SSE policy: bucket names, the mount's default encryption for new buckets, and what the
//! filesystem needs from the keystore ([`KeySource`]). No file I/O and no FUSE here.

use super::FsError;
use crate::crypto::{Algorithm, Key256, KeyRef};
use crate::keystore::{BucketRule, Keystore};
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
        match s {
            "none" => Ok(DefaultSse::None),
            "AES256" => Ok(DefaultSse::Aes256),
            "KMS" => Ok(DefaultSse::Kms),
            other => Err(format!(
                "unknown default_sse value {other:?} (expected none, AES256 or KMS)"
            )),
        }
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
        Algorithm::Aes256 => Some("AES256"),
        Algorithm::Kms => Some("KMS"),
    }
}

/// Checks an OSS bucket name: 3-63 characters of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit.
pub fn validate_bucket_name(name: &OsStr) -> Result<&str, FsError> {
    let invalid = || FsError::InvalidBucketName(name.to_os_string());
    let text = name.to_str().ok_or_else(invalid)?;
    let bytes = text.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&bytes.len())
        || !bytes.iter().all(allowed)
        || !edge(bytes.first())
        || !edge(bytes.last())
    {
        return Err(invalid());
    }
    Ok(text)
}

/// What the filesystem needs from the keystore: bucket rules and key-encryption keys.
/// Implemented by [`Keystore`]; a later backend (a real KMS) implements it too.
pub trait KeySource: Send + Sync {
    fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, FsError>;
    fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), FsError>;
    fn delete_bucket_rule(&self, bucket: &str) -> Result<(), FsError>;
    /// The newest master key version and its key.
    fn current_master_key(&self) -> Result<(u32, Key256), FsError>;
    /// The key-encryption key an object header names (`None` for `KeyRef::None`).
    fn resolve(&self, key_ref: &KeyRef) -> Result<Option<Key256>, FsError>;
    /// The CMK for a new `KMS` object: `(key id, material version, material)` of the CMK
    /// named by id or alias, or of the default CMK (created on first use) when `None`.
    fn cmk_for_new_object(
        &self,
        id_or_alias: Option<&str>,
    ) -> Result<(String, u32, Key256), FsError>;
}

impl KeySource for Keystore {
    fn bucket_rule(&self, bucket: &str) -> Result<Option<BucketRule>, FsError> {
        Ok(Keystore::bucket_rule(self, bucket)?)
    }
    fn put_bucket_rule(&self, bucket: &str, rule: &BucketRule) -> Result<(), FsError> {
        Ok(Keystore::put_bucket_rule(self, bucket, rule)?)
    }
    fn delete_bucket_rule(&self, bucket: &str) -> Result<(), FsError> {
        Ok(Keystore::delete_bucket_rule(self, bucket)?)
    }
    fn current_master_key(&self) -> Result<(u32, Key256), FsError> {
        Ok(Keystore::current_master_key(self)?)
    }
    fn resolve(&self, key_ref: &KeyRef) -> Result<Option<Key256>, FsError> {
        Ok(Keystore::resolve(self, key_ref)?)
    }
    fn cmk_for_new_object(
        &self,
        id_or_alias: Option<&str>,
    ) -> Result<(String, u32, Key256), FsError> {
        let key_id = match id_or_alias {
            Some(id) => id.to_string(),
            None => self.default_cmk()?,
        };
        Ok(self.resolve_cmk(&key_id)?)
    }
}

/// How a new object in a bucket is encrypted: algorithm, the key reference for its header and
/// the key-encryption key (present exactly when the algorithm is not `None`).
pub struct NewObjectKey {
    pub algorithm: Algorithm,
    pub key_ref: KeyRef,
    pub kek: Option<Key256>,
}

/// Chooses the encryption of a new object from the bucket's rule.
pub fn new_object_key(keys: &dyn KeySource, bucket: &str) -> Result<NewObjectKey, FsError> {
    let rule = keys.bucket_rule(bucket)?;
    let algorithm = rule.as_ref().map_or(Algorithm::None, |rule| rule.algorithm);
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
            let named = rule.as_ref().and_then(|rule| rule.kms_key_id.as_deref());
            let (key_id, version, key) = keys.cmk_for_new_object(named)?;
            Ok(NewObjectKey {
                algorithm,
                key_ref: KeyRef::Cmk { key_id, version },
                kek: Some(key),
            })
        }
    }
}

/// The key-encryption key an existing object's header names.
pub fn object_kek(keys: &dyn KeySource, key_ref: &KeyRef) -> Result<Option<Key256>, FsError> {
    let kek = keys.resolve(key_ref)?;
    match (key_ref, &kek) {
        (KeyRef::None, _) => Ok(None),
        (KeyRef::Master { version }, None) => {
            Err(FsError::UnknownKey(format!("master key version {version}")))
        }
        (KeyRef::Cmk { key_id, .. }, None) => Err(FsError::UnknownKey(format!("CMK {key_id}"))),
        (_, Some(_)) => Ok(kek),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Bucket default encryption rules as the mount's setxattr and `ssefs bucket-encryption` both
//! check them: whether the caller may name the CMK. (The algorithm and bucket-name rules are
//! `fs::policy`'s.)
//! Stores nothing; `put_bucket_rule` stores what this returns.

use super::access::may_use;
use super::cmk::{DEFAULT_CMK_ALIAS, cmk_entry, key_id_for, require_enabled};
use super::grant::{Caller, KeyOp};
use super::{BucketRule, Keystore, KeystoreError};
use crate::crypto::Algorithm;

impl Keystore {
    /// Checks a bucket rule for `caller` and returns it normalised, ready for
    /// `put_bucket_rule`:
    /// - `Algorithm::None`, or a key id with `AES256`: `InvalidBucketRule` (`EINVAL`);
    /// - `KMS` without a key id (or an empty one): the default CMK `alias/acs/oss`, created on
    ///   first use, and kept as `None` (OSS's "no KMSMasterKeyID");
    /// - `KMS` with a key id or alias: it must exist (`UnknownKey`, `ENOKEY`), be Enabled
    ///   (`KeyRevoked`, `EKEYREVOKED`) and `caller` must be allowed to encrypt with it
    ///   (`AccessDenied`, `EACCES`). The id or alias is kept as given.
    pub fn validate_rule(
        &self,
        rule: &BucketRule,
        caller: &Caller,
    ) -> Result<BucketRule, KeystoreError> {
        let key = rule
            .kms_key_id
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        match (rule.algorithm, key) {
            (Algorithm::None, _) => Err(KeystoreError::InvalidBucketRule(
                "no encryption is not a rule; delete the bucket's rule instead".into(),
            )),
            (Algorithm::Aes256, Some(_)) => Err(KeystoreError::InvalidBucketRule(
                "a KMS key id goes only with KMS, not AES256".into(),
            )),
            (Algorithm::Aes256, None) => Ok(BucketRule {
                algorithm: Algorithm::Aes256,
                kms_key_id: None,
            }),
            (Algorithm::Kms, None) => {
                self.default_cmk()?;
                Ok(BucketRule {
                    algorithm: Algorithm::Kms,
                    kms_key_id: None,
                })
            }
            (Algorithm::Kms, Some(key)) => {
                if key == DEFAULT_CMK_ALIAS {
                    self.default_cmk()?;
                }
                let mut inner = self.fresh()?;
                let key_id = key_id_for(&mut inner, key)?;
                let entry = cmk_entry(&mut inner, &key_id)?;
                if !may_use(&entry, KeyOp::Encrypt, caller) {
                    return Err(KeystoreError::AccessDenied {
                        key_id,
                        uid: caller.uid,
                        action: "encrypt".into(),
                    });
                }
                require_enabled(&key_id, &entry)?;
                Ok(BucketRule {
                    algorithm: Algorithm::Kms,
                    kms_key_id: Some(key.to_string()),
                })
            }
        }
    }
}

//! `ssefs bucket-encryption put|get|delete`: a bucket's default encryption rule, checked by
//! the same keystore code as the mount's setxattr. Works whether or not the store is
//! mounted; the mount reads the rule at each create.

use super::kms::{KmsCliError, KmsStoreArgs, open_keystore};
use super::outcome::Status;
use super::root_key::is_missing_key;
use crate::crypto::Algorithm;
use crate::fs::{algorithm_name, is_bucket_name};
use crate::keystore::inspect::summarize;
use crate::keystore::keystore_dir;
use crate::keystore::{BucketRule, Caller, DEFAULT_CMK_ALIAS, Keystore};
use crate::store::Store;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct BucketEncryptionArgs {
    #[command(flatten)]
    pub store: KmsStoreArgs,
    #[command(subcommand)]
    pub command: BucketEncryptionCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum BucketEncryptionCommand {
    /// Set the bucket's default encryption for new objects.
    Put {
        /// The bucket: a directory at the store's top level.
        bucket: String,
        /// AES256 or KMS.
        #[arg(long, value_name = "AES256|KMS", value_parser = crate::fs::parse_sse_algorithm)]
        algorithm: Algorithm,
        /// The CMK (id or alias) for KMS [default: alias/acs/oss].
        #[arg(long, value_name = "ID")]
        kms_key_id: Option<String>,
    },
    /// Print the bucket's rule; exits 3 when it has none. Works without the root key (then
    /// the keystore is not verified, and says so).
    Get {
        /// The bucket: a directory at the store's top level.
        bucket: String,
    },
    /// Remove the bucket's rule (new objects are then stored as the mount's default says).
    Delete {
        /// The bucket: a directory at the store's top level.
        bucket: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BucketEncryptionError {
    #[error(
        "invalid bucket name {0:?}: a bucket name is 3-63 characters of a-z, 0-9 and -, \
         starting and ending with a letter or digit"
    )]
    InvalidBucketName(String),
    #[error("no bucket {bucket:?} in the store {}: a bucket is a directory STORE/BUCKET", store.display())]
    NoSuchBucket { store: PathBuf, bucket: String },
    #[error(
        "access denied: only the bucket's owner (uid {owner}) or root may change the rule of \
         {bucket}, not uid {uid}"
    )]
    NotBucketOwner {
        bucket: String,
        uid: u32,
        owner: u32,
    },
    #[error("cannot examine {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kms(#[from] KmsCliError),
}

impl From<crate::keystore::KeystoreError> for BucketEncryptionError {
    fn from(e: crate::keystore::KeystoreError) -> Self {
        Self::Kms(KmsCliError::Keystore(e))
    }
}

/// Runs one `ssefs bucket-encryption` command as this process's real uid. `get` on a bucket
/// without a rule prints why on stderr and reports [`Status::NoRule`].
pub fn run(args: BucketEncryptionArgs) -> Result<Status, BucketEncryptionError> {
    let store = args
        .store
        .store
        .path()
        .map_err(KmsCliError::from)?
        .to_path_buf();
    let json = args.store.json;
    let me = Caller::this_process();
    match args.command {
        BucketEncryptionCommand::Put {
            bucket,
            algorithm,
            kms_key_id,
        } => {
            let owner = bucket_owner(&store, &bucket)?;
            require_owner(&bucket, owner, &me)?;
            let ks = open_keystore(&args.store)?;
            let rule = ks.validate_rule(
                &BucketRule {
                    algorithm,
                    kms_key_id,
                },
                &me,
            )?;
            ks.put_bucket_rule(&bucket, &rule)?;
            print_rule(Some(&ks), &bucket, &rule, json)?;
        }
        BucketEncryptionCommand::Get { bucket } => {
            bucket_owner(&store, &bucket)?;
            let (rule, ks) = match open_keystore(&args.store) {
                Ok(ks) => (ks.bucket_rule(&bucket)?, Some(ks)),
                // The rule can be read without the key, but not checked.
                Err(KmsCliError::RootKey(e)) if is_missing_key(&e) => {
                    eprintln!(
                        "ssefs: note: {e}\nssefs: note: the rule below was read without the \
                         root key, so the keystore was not verified"
                    );
                    (unverified_rule(&store, &bucket)?, None)
                }
                Err(e) => return Err(e.into()),
            };
            match rule {
                Some(rule) => print_rule(ks.as_ref(), &bucket, &rule, json)?,
                None => {
                    eprintln!("ssefs: bucket {bucket} has no default encryption rule");
                    return Ok(Status::NoRule);
                }
            }
        }
        BucketEncryptionCommand::Delete { bucket } => {
            validate_bucket_name(&bucket)?;
            // A rule left behind by a removed bucket may be deleted too.
            match bucket_owner(&store, &bucket) {
                Ok(owner) => require_owner(&bucket, owner, &me)?,
                Err(BucketEncryptionError::NoSuchBucket { .. }) if me.is_root() => {}
                Err(e) => return Err(e),
            }
            let ks = open_keystore(&args.store)?;
            ks.delete_bucket_rule(&bucket)?;
            if json {
                println!("{}", json!({ "Bucket": bucket, "Deleted": true }));
            } else {
                println!("bucket {bucket} has no default encryption rule now");
            }
        }
    }
    Ok(Status::Success)
}

fn validate_bucket_name(bucket: &str) -> Result<(), BucketEncryptionError> {
    if is_bucket_name(bucket) {
        Ok(())
    } else {
        Err(BucketEncryptionError::InvalidBucketName(bucket.to_string()))
    }
}

/// The uid owning `STORE/BUCKET`, after checking the name and that it is a directory.
fn bucket_owner(store: &Path, bucket: &str) -> Result<u32, BucketEncryptionError> {
    validate_bucket_name(bucket)?;
    let io = |source| BucketEncryptionError::Io {
        path: store.join(bucket),
        source,
    };
    let opened = Store::open(store).map_err(|e| io(std::io::Error::other(e)))?;
    match crate::ops::scan::bucket_owner(&opened, bucket).map_err(io)? {
        Some(owner) => Ok(owner),
        None => Err(no_such_bucket(store, bucket)),
    }
}

fn no_such_bucket(store: &Path, bucket: &str) -> BucketEncryptionError {
    BucketEncryptionError::NoSuchBucket {
        store: store.to_path_buf(),
        bucket: bucket.to_string(),
    }
}

fn require_owner(bucket: &str, owner: u32, me: &Caller) -> Result<(), BucketEncryptionError> {
    if me.is_root() || me.uid == owner {
        Ok(())
    } else {
        Err(BucketEncryptionError::NotBucketOwner {
            bucket: bucket.to_string(),
            uid: me.uid,
            owner,
        })
    }
}

/// A bucket's rule read from the keystore without the root key (nothing is verified).
fn unverified_rule(
    store: &Path,
    bucket: &str,
) -> Result<Option<BucketRule>, BucketEncryptionError> {
    let summary = summarize(&keystore_dir(store))?;
    Ok(summary
        .bucket_rules
        .into_iter()
        .find(|(name, _)| name == bucket)
        .map(|(_, rule)| rule))
}

fn print_rule(
    ks: Option<&Keystore>,
    bucket: &str,
    rule: &BucketRule,
    json: bool,
) -> Result<(), BucketEncryptionError> {
    let algorithm = algorithm_name(rule.algorithm).unwrap_or("none");
    if json {
        let text = serde_json::to_string_pretty(&json!({
            "SSEAlgorithm": algorithm,
            "KMSMasterKeyID": rule.kms_key_id,
        }))
        .unwrap_or_default();
        println!("{text}");
        return Ok(());
    }
    match (rule.algorithm, rule.kms_key_id.as_deref()) {
        (Algorithm::Kms, None) => match ks {
            Some(ks) => {
                let id = ks.default_cmk()?;
                println!("{bucket}: KMS with the default CMK {DEFAULT_CMK_ALIAS} ({id})");
            }
            None => println!("{bucket}: KMS with the default CMK {DEFAULT_CMK_ALIAS}"),
        },
        (Algorithm::Kms, Some(key)) => println!("{bucket}: KMS with CMK {key}"),
        _ => println!("{bucket}: {algorithm}"),
    }
    Ok(())
}

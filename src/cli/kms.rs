//! `ssefs kms …`: the CMK life cycle, aliases, BYOK import, grants and the audit log, as text
//! or as JSON with cloud KMS field names. Opens the keystore, acts as the caller's real uid,
//! and prints ids and dates, never key material.

use super::root_key::{KeyArgs, StoreArgs};
pub use super::time::{format_rfc3339, parse_time};
use crate::keystore::{
    AuditIntegrity, AuditQuery, AuditRecord, AuditSettings, Caller, Clock, CmkInfo, CmkOrigin,
    Grant, Grantee, ImportedMaterial, KeyOp, Keystore, KeystoreError,
};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The longest automatic rotation period of a CMK, in days (ten years).
pub const MAX_ROTATION_DAYS: u32 = 3650;

/// The options every `kms` and `bucket-encryption` command takes.
#[derive(Args, Debug, Clone)]
pub struct KmsStoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Print JSON with cloud KMS field names instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Act as if the time were T (RFC 3339 or Unix seconds): simulates expiry in tests.
    #[arg(long, global = true, hide = true, value_name = "T")]
    pub now: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct KmsArgs {
    #[command(flatten)]
    pub store: KmsStoreArgs,
    #[command(subcommand)]
    pub command: KmsCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum OriginArg {
    /// ssefs generates the material.
    Ssefs,
    /// You import the material (BYOK); the CMK waits in PendingImport until then.
    #[value(alias = "EXTERNAL")]
    External,
}

#[derive(Subcommand, Debug, Clone)]
pub enum KmsCommand {
    /// Create a CMK, owned by you, and print it.
    Create {
        /// What the CMK is for (at most 8192 bytes).
        #[arg(long, default_value = "")]
        description: String,
        /// An alias for it: alias/NAME.
        #[arg(long, value_name = "alias/NAME")]
        alias: Option<String>,
        /// Where the key material comes from.
        #[arg(long, value_enum, default_value_t = OriginArg::Ssefs)]
        origin: OriginArg,
    },
    /// List every CMK.
    List,
    /// Show a CMK (by id or alias) with its usage counts.
    Describe {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Enable a Disabled CMK.
    Enable {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Disable a CMK: objects under it can be neither read nor written.
    Disable {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Destroy a CMK after N (7-30) days; until then it is PendingDeletion and unusable.
    ScheduleDeletion {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
        /// Days until the CMK is destroyed: 7 to 30.
        #[arg(long, value_name = "N")]
        pending_days: i64,
    },
    /// Cancel a scheduled deletion; the CMK becomes Disabled.
    CancelDeletion {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Create, delete or list aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Make one-time import parameters (RSA-2048 public key and token, valid 24 h) for an
    /// EXTERNAL CMK and write them to DIR.
    GetImportParams {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
        /// The directory for the three files (created, mode 0700, if it does not exist).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
    /// Import 32 bytes of material into an EXTERNAL CMK.
    Import {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
        /// The material wrapped with RSAES-OAEP-SHA-256 under the import public key (raw
        /// 256 bytes).
        #[arg(
            long,
            value_name = "FILE",
            requires = "token",
            conflicts_with = "material"
        )]
        encrypted_material: Option<PathBuf>,
        /// The import token file written by get-import-params.
        #[arg(long, value_name = "FILE")]
        token: Option<PathBuf>,
        /// The material in plain (32 raw bytes); prefer --encrypted-material.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "encrypted_material"
        )]
        material: Option<PathBuf>,
    },
    /// Give a CMK new material (a new version for new objects); older versions stay for
    /// decrypting until the CMK is destroyed.
    Rotate {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Rotate a CMK automatically every N days (checked by the mount hourly), or --off.
    SetRotation {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
        /// Rotate every N days (1 to 3650).
        #[arg(
            long,
            value_name = "N",
            required_unless_present = "off",
            value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ROTATION_DAYS))
        )]
        days: Option<u32>,
        /// Stop rotating automatically.
        #[arg(long, conflicts_with = "days")]
        off: bool,
    },
    /// Delete the imported material of an EXTERNAL CMK (it becomes PendingImport).
    DeleteMaterial {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Let a uid or the members of a gid use a CMK.
    Grant {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
        #[command(flatten)]
        grantee: GranteeArgs,
        /// encrypt, decrypt or encrypt,decrypt.
        #[arg(long, value_name = "OPS")]
        operations: String,
    },
    /// Take operations (all when --operations is not given) away from a grantee.
    Revoke {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
        #[command(flatten)]
        grantee: GranteeArgs,
        /// The operations to take away: encrypt, decrypt or encrypt,decrypt [default: all].
        #[arg(long, value_name = "OPS")]
        operations: Option<String>,
    },
    /// List a CMK's grants.
    Grants {
        /// The CMK: its id or an alias (alias/NAME).
        key: String,
    },
    /// Show the audit log, oldest first.
    Audit {
        /// Only records of this CMK (id or alias).
        #[arg(long)]
        key: Option<String>,
        /// Only records at or after T (RFC 3339 or Unix seconds).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Check the log's hash chain against its authenticated head instead: fails, naming
        /// each break, if a record was changed or removed outside ssefs.
        #[arg(long, conflicts_with_all = ["key", "since"])]
        verify: bool,
    },
    /// Show or change how long the audit log keeps records.
    AuditRetention {
        /// Keep records for N days.
        #[arg(long, value_name = "N")]
        days: Option<u32>,
        /// Keep at most N records.
        #[arg(long, value_name = "N")]
        max_rows: Option<u64>,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AliasCommand {
    /// Point a new alias at a CMK.
    Create {
        /// The new alias: alias/NAME.
        alias: String,
        /// The CMK it points at: its id or another alias.
        key: String,
    },
    /// Remove an alias.
    Delete {
        /// The alias to remove: alias/NAME.
        alias: String,
    },
    /// List every alias.
    List,
}

#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct GranteeArgs {
    /// The user (uid) the grant is for.
    #[arg(long, value_name = "U")]
    uid: Option<u32>,
    /// The group (gid) whose members the grant is for.
    #[arg(long, value_name = "G")]
    gid: Option<u32>,
}

impl GranteeArgs {
    fn grantee(&self) -> Grantee {
        match (self.uid, self.gid) {
            (Some(uid), _) => Grantee::Uid(uid),
            (None, Some(gid)) => Grantee::Gid(gid),
            // clap's group makes exactly one of them present.
            (None, None) => Grantee::Uid(u32::MAX),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KmsCliError {
    #[error("invalid time {0:?}: give RFC 3339 (2024-05-01T12:00:00Z) or Unix seconds")]
    InvalidTime(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is {len} bytes; plain key material is exactly 32 bytes", path.display())]
    WrongMaterialSize { path: PathBuf, len: usize },
    #[error("give --encrypted-material FILE with --token FILE, or --material FILE")]
    MissingMaterial,
    #[error("CMK {key_id} has no grant to {grantee}; its grants: {grants}")]
    NoSuchGrant {
        key_id: String,
        grantee: String,
        grants: String,
    },
    #[error("the audit log was changed outside ssefs: {}", .0.join("; "))]
    AuditTampered(Vec<String>),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    RootKey(#[from] super::root_key::RootKeyError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KmsCliError {
    let path = path.to_path_buf();
    move |source| KmsCliError::Io {
        action,
        path,
        source,
    }
}

/// Opens the store's keystore with its root key, sets the clock from `--now`, and destroys
/// CMKs whose deletion date has passed (as the mount does at start).
pub fn open_keystore(args: &KmsStoreArgs) -> Result<Keystore, KmsCliError> {
    let mut keystore = super::root_key::open_keystore(args.store.path()?, &args.key)?;
    if let Some(now) = &args.now {
        let now = parse_time(now).ok_or_else(|| KmsCliError::InvalidTime(now.clone()))?;
        keystore.set_clock(Clock::Fixed(now));
    }
    keystore.process_pending_deletions(keystore.now())?;
    Ok(keystore)
}

/// Runs one `ssefs kms` command as this process's real uid.
pub fn run(args: KmsArgs) -> Result<(), KmsCliError> {
    let ks = open_keystore(&args.store)?;
    let json = args.store.json;
    let me = Caller::this_process();
    match args.command {
        KmsCommand::Create {
            description,
            alias,
            origin,
        } => {
            let origin = match origin {
                OriginArg::Ssefs => CmkOrigin::Ssefs,
                OriginArg::External => CmkOrigin::External,
            };
            let id = ks.create_cmk_for(&description, alias.as_deref(), origin, &me)?;
            print_key(&ks.cmk_info(&id)?, json);
        }
        KmsCommand::List => print_key_list(&ks.list_cmks()?, json),
        KmsCommand::Describe { key } => print_key(&ks.cmk_info(&key)?, json),
        KmsCommand::Enable { key } => {
            ks.enable_cmk(&key, &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::Disable { key } => {
            ks.disable_cmk(&key, &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::ScheduleDeletion { key, pending_days } => {
            ks.schedule_cmk_deletion(&key, pending_days, &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::CancelDeletion { key } => {
            ks.cancel_cmk_deletion(&key, &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::Alias(command) => run_alias(&ks, command, &me, json)?,
        KmsCommand::GetImportParams { key, out_dir } => {
            get_import_params(&ks, &key, &out_dir, &me, json)?;
        }
        KmsCommand::Import {
            key,
            encrypted_material,
            token,
            material,
        } => import(&ks, &key, encrypted_material, token, material, &me, json)?,
        KmsCommand::Rotate { key } => {
            ks.rotate_cmk(&key, &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::SetRotation { key, days, off: _ } => {
            // clap's range keeps 0 out.
            ks.set_cmk_rotation(&key, days.and_then(std::num::NonZeroU32::new), &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::DeleteMaterial { key } => {
            ks.delete_material(&key, &me)?;
            print_key(&ks.cmk_info(&key)?, json);
        }
        KmsCommand::Grant {
            key,
            grantee,
            operations,
        } => {
            let ops = KeyOp::parse_list(&operations)?;
            let grant = ks.grant(&key, grantee.grantee(), &ops, &me)?;
            print_grants(&ks.cmk_info(&key)?.key_id, &[grant], json);
        }
        KmsCommand::Revoke {
            key,
            grantee,
            operations,
        } => {
            let ops = operations.as_deref().map(KeyOp::parse_list).transpose()?;
            revoke(&ks, &key, grantee.grantee(), ops.as_deref(), &me, json)?;
        }
        KmsCommand::Grants { key } => {
            let key_id = ks.cmk_info(&key)?.key_id;
            print_grants(&key_id, &ks.grants(&key)?, json);
        }
        KmsCommand::Audit { verify: true, .. } => {
            let integrity = ks.verify_audit()?;
            print_audit_integrity(&integrity, json);
            if !integrity.problems.is_empty() {
                return Err(KmsCliError::AuditTampered(integrity.problems));
            }
        }
        KmsCommand::Audit { key, since, .. } => {
            let since = since
                .map(|t| parse_time(&t).ok_or(KmsCliError::InvalidTime(t)))
                .transpose()?;
            print_audit(&ks.audit_records(&AuditQuery { key, since })?, json);
            let integrity = ks.verify_audit()?;
            if integrity.evicted > 0 && !json {
                eprintln!(
                    "note: {} record(s) were removed because the log reached its cap \
                     (`ssefs kms audit-retention --max-rows N` keeps more)",
                    integrity.evicted
                );
            }
        }
        KmsCommand::AuditRetention { days, max_rows } => {
            let mut settings = ks.audit_settings()?;
            if days.is_some() || max_rows.is_some() {
                settings.retention_days = days.unwrap_or(settings.retention_days);
                settings.max_rows = max_rows.unwrap_or(settings.max_rows);
                ks.set_audit_settings(settings)?;
            }
            print_retention(settings, json);
        }
    }
    Ok(())
}

/// Revokes and says what the grantee keeps and what grants the CMK has left; revoking from a
/// grantee without a grant lists the grants there are.
fn revoke(
    ks: &Keystore,
    key: &str,
    grantee: Grantee,
    ops: Option<&[KeyOp]>,
    me: &Caller,
    json: bool,
) -> Result<(), KmsCliError> {
    let left = match ks.revoke(key, grantee, ops, me) {
        Ok(left) => left,
        Err(KeystoreError::UnknownGrant { key_id, grantee }) => {
            return Err(KmsCliError::NoSuchGrant {
                key_id,
                grantee,
                grants: describe_grants(&ks.grants(key)?),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let key_id = ks.cmk_info(key)?.key_id;
    if json {
        print_grants(&key_id, left.as_slice(), json);
        return Ok(());
    }
    match &left {
        Some(grant) => println!(
            "{grantee} keeps {} on CMK {key_id}",
            ops_text(&grant.operations)
        ),
        None => println!("{grantee} has no grant on CMK {key_id} now"),
    }
    let all = ks.grants(key)?;
    if all.is_empty() {
        println!("CMK {key_id} has no grants left");
    } else {
        println!("grants of CMK {key_id}: {}", describe_grants(&all));
    }
    Ok(())
}

/// `encrypt,decrypt`.
fn ops_text(ops: &[KeyOp]) -> String {
    ops.iter()
        .map(|op| op.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `uid 1000 (encrypt,decrypt), gid 5 (decrypt)`, or `none`.
fn describe_grants(grants: &[Grant]) -> String {
    if grants.is_empty() {
        return "none".to_string();
    }
    grants
        .iter()
        .map(|g| format!("{} ({})", g.grantee, ops_text(&g.operations)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_alias(
    ks: &Keystore,
    command: AliasCommand,
    me: &Caller,
    json: bool,
) -> Result<(), KmsCliError> {
    match command {
        AliasCommand::Create { alias, key } => {
            ks.create_alias(&alias, &key, me)?;
            let key_id = ks.cmk_info(&alias)?.key_id;
            print_aliases(&[(alias, key_id)], json);
        }
        AliasCommand::Delete { alias } => {
            ks.delete_alias(&alias, me)?;
            if json {
                println!("{}", json!({ "AliasName": alias, "Deleted": true }));
            } else {
                println!("deleted alias {alias}");
            }
        }
        AliasCommand::List => print_aliases(&ks.aliases()?, json),
    }
    Ok(())
}

fn get_import_params(
    ks: &Keystore,
    key: &str,
    out_dir: &Path,
    me: &Caller,
    json: bool,
) -> Result<(), KmsCliError> {
    if !out_dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out_dir)
            .map_err(io_error("create the directory", out_dir))?;
    }
    let params = ks.get_import_params(key, me)?;
    let base = |suffix: &str| out_dir.join(format!("{}.{suffix}", params.key_id));
    let (der, pem, token) = (
        base("public_key.der"),
        base("public_key.pem"),
        base("import_token"),
    );
    write_file(&der, &params.public_key_der)?;
    write_file(&pem, params.public_key_pem.as_bytes())?;
    write_file(&token, format!("{}\n", params.token).as_bytes())?;
    let expires = format_rfc3339(params.expires_at);
    if json {
        print_json(&json!({
            "KeyId": params.key_id,
            "ImportToken": params.token,
            "TokenExpireTime": expires,
            "WrappingAlgorithm": "RSAES_OAEP_SHA_256",
            "WrappingKeySpec": "RSA_2048",
            "PublicKeyDerFile": der,
            "PublicKeyPemFile": pem,
            "ImportTokenFile": token,
        }));
    } else {
        println!(
            "import parameters for CMK {} (valid until {expires}):",
            params.key_id
        );
        println!("  public key (RSA_2048, DER): {}", der.display());
        println!("  public key (PEM):           {}", pem.display());
        println!("  import token:               {}", token.display());
        println!(
            "wrap 32 bytes of material with RSAES_OAEP_SHA_256 (e.g. `openssl pkeyutl -encrypt \
             -pubin -inkey {} -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 \
             -pkeyopt rsa_mgf1_md:sha256`), then run `ssefs kms import`",
            pem.display()
        );
    }
    Ok(())
}

fn import(
    ks: &Keystore,
    key: &str,
    encrypted_material: Option<PathBuf>,
    token: Option<PathBuf>,
    material: Option<PathBuf>,
    me: &Caller,
    json: bool,
) -> Result<(), KmsCliError> {
    let imported = match (encrypted_material, token, material) {
        (Some(path), Some(token_path), _) => {
            let ciphertext = std::fs::read(&path).map_err(io_error("read", &path))?;
            let token = std::fs::read_to_string(&token_path)
                .map_err(io_error("read", &token_path))?
                .trim()
                .to_string();
            ImportedMaterial::Wrapped { token, ciphertext }
        }
        (_, _, Some(path)) => ImportedMaterial::Plain(read_plain_material(&path)?),
        _ => return Err(KmsCliError::MissingMaterial),
    };
    let plain = matches!(imported, ImportedMaterial::Plain(_));
    let version = ks.import_material(key, imported, me)?;
    if plain {
        eprintln!(
            "ssefs: warning: key material was imported in plain: anyone who has seen that file \
             can read objects under this CMK; prefer get-import-params and --encrypted-material"
        );
    }
    let info = ks.cmk_info(key)?;
    if json {
        print_json(&json!({ "KeyId": info.key_id, "MaterialVersion": version,
                            "KeyState": info.state.as_str() }));
    } else {
        println!(
            "imported material version {version} into CMK {}; it is {}",
            info.key_id, info.state
        );
    }
    Ok(())
}

/// Plain key material is as secret as a root key: its file gets the same owner and mode
/// checks.
fn read_plain_material(path: &Path) -> Result<crate::crypto::Key256, KmsCliError> {
    let file = super::root_key::open_secret_file(path, "the key material")?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(33));
    file.take(33)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    if bytes.len() != 32 {
        return Err(KmsCliError::WrongMaterialSize {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    Ok(crate::crypto::Key256::from_bytes(&bytes).map_err(KeystoreError::from)?)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), KmsCliError> {
    std::fs::write(path, bytes).map_err(io_error("write", path))
}

fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

fn origin_name(origin: CmkOrigin) -> &'static str {
    match origin {
        CmkOrigin::Ssefs => "ssefs",
        CmkOrigin::External => "EXTERNAL",
    }
}

/// A CMK as the cloud KMSs' `KeyMetadata`.
pub fn key_json(info: &CmkInfo) -> Value {
    json!({
        "KeyId": info.key_id,
        "KeyState": info.state.as_str(),
        "Description": info.description,
        "Origin": origin_name(info.origin),
        "KeySpec": "AES_256",
        "KeyUsage": "ENCRYPT/DECRYPT",
        "KeyManager": if info.service_managed { "Service" } else { "Customer" },
        "Owner": info.owner_uid,
        "CreationDate": format_rfc3339(info.created_at),
        "DeletionDate": info.deletion_date.map(format_rfc3339),
        "Aliases": info.aliases,
        "MaterialVersions": info.material_versions.iter().map(|m| json!({
            "Version": m.version,
            "CreationDate": format_rfc3339(m.created_at),
            "Available": m.available,
        })).collect::<Vec<_>>(),
        "UsageCounts": {
            "GenerateDataKey": info.usage.generate_data_key,
            "Decrypt": info.usage.decrypt,
            "Denied": info.usage.denied,
        },
        "LastUsedDate": info.usage.last_used_at.map(format_rfc3339),
        "RotationInterval": info.rotation_days.map(|d| format!("{}s", u64::from(d) * 86_400)),
    })
}

fn print_key(info: &CmkInfo, json: bool) {
    if json {
        print_json(&json!({ "KeyMetadata": key_json(info) }));
        return;
    }
    let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let versions = info
        .material_versions
        .iter()
        .map(|m| {
            let state = if m.available { "available" } else { "deleted" };
            format!("{} ({state})", m.version)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let lines = [
        ("KeyId", info.key_id.clone()),
        ("KeyState", info.state.to_string()),
        ("Description", or_dash(info.description.clone())),
        ("Origin", origin_name(info.origin).to_string()),
        ("Owner", format!("uid {}", info.owner_uid)),
        ("CreationDate", format_rfc3339(info.created_at)),
        (
            "DeletionDate",
            info.deletion_date.map_or("-".into(), format_rfc3339),
        ),
        ("Aliases", or_dash(info.aliases.join(", "))),
        ("MaterialVersions", or_dash(versions)),
        (
            "Rotation",
            info.rotation_days
                .map_or("-".into(), |d| format!("every {d} days")),
        ),
        (
            "Usage",
            format!(
                "{} GenerateDataKey, {} Decrypt, {} denied",
                info.usage.generate_data_key, info.usage.decrypt, info.usage.denied
            ),
        ),
        (
            "LastUsedDate",
            info.usage.last_used_at.map_or("-".into(), format_rfc3339),
        ),
    ];
    for (name, value) in lines {
        println!("{:<18}{value}", format!("{name}:"));
    }
}

fn print_key_list(keys: &[CmkInfo], json: bool) {
    if json {
        let keys: Vec<Value> = keys.iter().map(key_json).collect();
        print_json(&json!({ "Keys": keys }));
        return;
    }
    println!(
        "{:<36}  {:<15}  {:<8}  {:>6}  ALIASES",
        "KEY ID", "STATE", "ORIGIN", "OWNER"
    );
    for k in keys {
        let aliases = if k.aliases.is_empty() {
            "-".to_string()
        } else {
            k.aliases.join(",")
        };
        println!(
            "{:<36}  {:<15}  {:<8}  {:>6}  {aliases}",
            k.key_id,
            k.state.as_str(),
            origin_name(k.origin),
            k.owner_uid
        );
    }
}

fn print_aliases(aliases: &[(String, String)], json: bool) {
    if json {
        let list: Vec<Value> = aliases
            .iter()
            .map(|(alias, key_id)| json!({ "AliasName": alias, "KeyId": key_id }))
            .collect();
        print_json(&json!({ "Aliases": list }));
        return;
    }
    for (alias, key_id) in aliases {
        println!("{alias}  {key_id}");
    }
}

fn grant_json(grant: &Grant) -> Value {
    let ops: Vec<&str> = grant
        .operations
        .iter()
        .map(|op| match op {
            KeyOp::Encrypt => "Encrypt",
            KeyOp::Decrypt => "Decrypt",
        })
        .collect();
    let (field, id) = match grant.grantee {
        Grantee::Uid(uid) => ("GranteeUid", uid),
        Grantee::Gid(gid) => ("GranteeGid", gid),
    };
    json!({ field: id, "Operations": ops, "CreationDate": format_rfc3339(grant.created_at) })
}

fn print_grants(key_id: &str, grants: &[Grant], json: bool) {
    if json {
        let list: Vec<Value> = grants.iter().map(grant_json).collect();
        print_json(&json!({ "KeyId": key_id, "Grants": list }));
        return;
    }
    if grants.is_empty() {
        println!("CMK {key_id} has no grants");
    }
    for g in grants {
        let ops: Vec<&str> = g.operations.iter().map(|op| op.as_str()).collect();
        println!("{key_id}  {}  {}", g.grantee, ops.join(","));
    }
}

fn audit_json(r: &AuditRecord) -> Value {
    json!({
        "Id": r.id,
        "Time": format_rfc3339(r.time),
        "Uid": r.uid,
        "Pid": r.pid,
        "KeyId": r.key_id,
        "Operation": r.operation,
        "ObjectPath": r.object_path,
        "Result": r.result,
        "Detail": r.detail,
        "Repeats": r.repeats,
        "LastTime": r.last_time.map(format_rfc3339),
    })
}

fn print_audit_integrity(integrity: &AuditIntegrity, json: bool) {
    if json {
        print_json(&json!({
            "Intact": integrity.problems.is_empty(),
            "Problems": integrity.problems,
            "Evicted": integrity.evicted,
            "Expired": integrity.expired,
        }));
        return;
    }
    if integrity.problems.is_empty() {
        println!("the audit log's hash chain is intact");
    }
    println!(
        "{} record(s) removed at the row cap, {} by age",
        integrity.evicted, integrity.expired
    );
}

fn print_audit(records: &[AuditRecord], json: bool) {
    if json {
        let list: Vec<Value> = records.iter().map(audit_json).collect();
        print_json(&json!({ "Records": list }));
        return;
    }
    let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    for r in records {
        println!(
            "{}  uid={} pid={}  {}  {}  {}  {}{}",
            format_rfc3339(r.time),
            opt(r.uid),
            opt(r.pid),
            r.key_id.as_deref().unwrap_or("-"),
            r.operation,
            r.result,
            r.object_path.as_deref().unwrap_or("-"),
            r.detail
                .as_deref()
                .map_or(String::new(), |d| format!("  ({d})")),
        );
        if r.repeats > 1 {
            println!(
                "    repeated {} times, the last at {}",
                r.repeats,
                r.last_time.map_or("-".into(), format_rfc3339)
            );
        }
    }
}

fn print_retention(settings: AuditSettings, json: bool) {
    if json {
        print_json(&json!({
            "RetentionDays": settings.retention_days,
            "MaxRecords": settings.max_rows,
        }));
    } else {
        println!(
            "the audit log keeps records for {} days, at most {} records",
            settings.retention_days, settings.max_rows
        );
    }
}

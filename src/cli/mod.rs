//! Command-line interface: argument parsing and one module per command. Commands print one
//! clear line on error and exit non-zero; they never print key material.

pub mod bucket_encryption;
pub mod change_root_key;
pub mod docs;
pub mod exit;
pub mod fsck;
pub mod helper_mode;
pub mod init;
pub mod json;
pub mod keystore_cmd;
pub mod keystore_sync;
pub mod kms;
pub mod mount;
pub mod mount_remote;
pub mod notify;
pub mod outcome;
pub mod reencrypt;
pub mod remote;
pub mod rewrap;
pub mod root_key;
pub mod rotate;
pub mod stat;
pub mod status;
pub mod time;
pub mod upgrade;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ssefs",
    version,
    about = "Mount server-side-encrypted buckets as directories"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Create a new store: the directory, its keystore and master key version 1.
    Init {
        /// The backing directory to create, or s3://BUCKET[/PREFIX] for a store in an
        /// S3-compatible object store (with --endpoint).
        store: PathBuf,
        /// The object store's URL, for an s3:// store (http://HOST:PORT or https://HOST)
        /// [default: $AWS_ENDPOINT_URL].
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// The object store's region, for an s3:// store [default: $AWS_REGION, else
        /// us-east-1].
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// The root key file, created when it does not exist [default: $SSEFS_ROOT_KEY_FILE,
        /// else $CREDENTIALS_DIRECTORY/root-key, else ~/.config/ssefs/keys/STORE-ID.key].
        #[arg(long, value_name = "FILE", conflicts_with = "passphrase")]
        root_key: Option<PathBuf>,
        /// Derive the root key from a passphrase (Argon2id) instead of a key file: typed
        /// twice on the terminal, or read from --passphrase-fd.
        #[arg(long)]
        passphrase: bool,
        /// Read the passphrase from this file descriptor.
        #[arg(long, value_name = "N", requires = "passphrase")]
        passphrase_fd: Option<i32>,
        /// Keep the root of trust in a PKCS#11 token: this module (e.g.
        /// /usr/lib/softhsm/libsofthsm2.so) holds the token; its AES-256 key (--key-label,
        /// created non-extractable if absent) encrypts the store's random root secret.
        #[arg(
            long,
            value_name = "LIB",
            conflicts_with_all = ["root_key", "passphrase"],
            requires_all = ["token_label", "key_label"]
        )]
        pkcs11_module: Option<PathBuf>,
        /// The label of the token.
        #[arg(long, value_name = "T", requires = "pkcs11_module")]
        token_label: Option<String>,
        /// The label of the AES-256 key in the token: used if it exists, else created.
        #[arg(long, value_name = "K", requires = "pkcs11_module")]
        key_label: Option<String>,
        /// Read the token's user PIN from this file descriptor [default: $SSEFS_PKCS11_PIN_FD,
        /// else $CREDENTIALS_DIRECTORY/pkcs11-pin, else asked on the terminal].
        #[arg(long, value_name = "N", requires = "pkcs11_module")]
        pin_fd: Option<i32>,
    },
    /// Mount a store: each top-level directory is a bucket; or, with --bucket, one bucket as
    /// the whole mount. Stays in the foreground until unmounted (umount, fusermount3 -u,
    /// SIGTERM or SIGINT).
    Mount {
        /// The backing directory made by `ssefs init`, or a remote store s3://BUCKET[/PREFIX].
        store: PathBuf,
        /// An existing, empty directory outside the store to mount on (-o nonempty: one
        /// that holds files, hidden while mounted).
        mountpoint: PathBuf,
        #[command(flatten)]
        key: root_key::KeyArgs,
        /// Mount options, comma-separated: allow_other, allow_root, default_permissions, ro,
        /// rw, default_sse=none|AES256|KMS, fsname=NAME, auto_unmount, nonempty, bucket=NAME,
        /// create_bucket, noio_uring (never take requests through FUSE over io_uring, used
        /// where root enabled it in the fuse module); for an s3:// store also
        /// metadata_ttl=SECS (how soon another host's change shows, default 1) and
        /// keystore_refresh=SECS (how soon its key changes are enforced, default 10).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Rotate the master key when the current version is N days old, checked at mount and
        /// hourly (0: never) [default: 90; also -o master_rotation_days=N].
        #[arg(long, value_name = "N")]
        master_rotation_days: Option<u32>,
        /// Mount only this bucket, as the root of the mount [also -o bucket=NAME].
        #[arg(long, value_name = "NAME")]
        bucket: Option<String>,
        /// Make the bucket (with the store's default rule) if it does not exist [also -o
        /// create_bucket].
        #[arg(long, requires = "bucket")]
        create_bucket: bool,
        /// A remote store's object-store endpoint, http(s)://HOST[:PORT] [default:
        /// $AWS_ENDPOINT_URL; also -o endpoint=URL].
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// A remote store's signing region [default: $AWS_REGION, else us-east-1; also -o
        /// region=R].
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// A remote store's local cache [default: /var/cache/ssefs/STORE-ID for root; also
        /// -o cache_dir=DIR].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// The size the cache is kept within by evicting clean files, in bytes or with K,
        /// M, G, T [default: 10G; also -o cache_size=SIZE].
        #[arg(long, value_name = "SIZE")]
        cache_size: Option<String>,
    },
    /// Add a new master key version (new AES256 objects use it; older versions stay for
    /// reading), or retire versions no object uses any more.
    RotateMaster(rotate::RotateMasterArgs),
    /// Re-wrap objects' DEKs under the newest version of their master key or CMK, rewriting
    /// only headers (data untouched). Through the mount when mounted; resumable.
    Rewrap(rewrap::RewrapArgs),
    /// Re-wrap every master key and CMK material under a new root key (a key file, a
    /// passphrase, or a secret encrypted by a PKCS#11 token key) in one transaction; objects
    /// are not touched. Only while unmounted.
    ChangeRootKey(change_root_key::ChangeRootKeyArgs),
    /// Manage customer master keys (CMKs): life cycle, aliases, BYOK, grants, audit.
    Kms(kms::KmsArgs),
    /// Set, show or remove a bucket's default server-side encryption.
    BucketEncryption(bucket_encryption::BucketEncryptionArgs),
    /// Re-encrypt objects on a live mount, each atomically: under their bucket's current
    /// default rule, or under the algorithm (and CMK) given. Objects already matching are
    /// skipped; Ctrl-C stops after the current object, and a re-run continues.
    Reencrypt {
        /// Objects or directories (recursively) on an ssefs mount.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// AES256 or KMS [default: each bucket's rule; buckets without one are skipped].
        #[arg(long, value_name = "AES256|KMS", value_parser = crate::fs::parse_sse_algorithm)]
        algorithm: Option<crate::crypto::Algorithm>,
        /// The CMK id or alias for KMS (implies --algorithm KMS).
        #[arg(long, value_name = "ID")]
        kms_key_id: Option<String>,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show how objects on a live mount are encrypted: algorithm (none, AES256, KMS), key
    /// (master key or CMK id) and key version.
    Stat {
        /// Objects or directories (recursively) on an ssefs mount.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a store: keystore integrity, every object's header and blocks, missing keys,
    /// foreign files, leftover temporaries. Works while mounted. Exit 0 clean, 4 problems, 1
    /// error.
    Fsck(fsck::FsckArgs),
    /// Back up or restore a store's keystore.
    Keystore {
        #[command(subcommand)]
        action: keystore_cmd::KeystoreAction,
    },
    /// Show whether and where a store is mounted, its buckets, objects per algorithm and key,
    /// and its master key versions. Needs no root key.
    Status(status::StatusArgs),
    /// Move every object of an older object format to the current one (format 2: its header
    /// alone; format 1: re-encrypted under the same setting with a new data key), then make
    /// the store refuse older formats. Only while not mounted.
    Upgrade(upgrade::UpgradeArgs),
    /// Write the man pages (ssefs.1, ssefs-kms.1, ...) generated from these definitions.
    Man(docs::ManArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
}

impl Command {
    /// The command's name and `--store` options, for the commands that name a store with
    /// them, and whether it can run on a working copy of a remote store's keystore (it
    /// needs nothing else of the store).
    fn store_args_mut(&mut self) -> Option<(&'static str, &mut root_key::StoreArgs, bool)> {
        use keystore_cmd::KeystoreAction;
        match self {
            Command::RotateMaster(a) => {
                let keystore_only = a.retire.is_none() && !a.retire_unused;
                Some(("rotate-master", &mut a.store, keystore_only))
            }
            Command::Kms(a) => Some(("kms", &mut a.store.store, true)),
            Command::Keystore {
                action: KeystoreAction::Backup { store, .. },
            } => Some(("keystore backup", store, true)),
            Command::Keystore {
                action: KeystoreAction::Restore { store, .. },
            } => Some(("keystore restore", store, false)),
            Command::Keystore {
                action: KeystoreAction::Replaced { store, .. },
            } => Some(("keystore replaced", store, false)),
            Command::Rewrap(a) => Some(("rewrap", &mut a.store, false)),
            Command::ChangeRootKey(a) => Some(("change-root-key", &mut a.store, false)),
            Command::BucketEncryption(a) => Some(("bucket-encryption", &mut a.store.store, false)),
            Command::Fsck(a) => Some(("fsck", &mut a.store, false)),
            Command::Status(a) => Some(("status", &mut a.store, true)),
            Command::Upgrade(a) => Some(("upgrade", &mut a.store, false)),
            Command::Init { .. }
            | Command::Mount { .. }
            | Command::Reencrypt { .. }
            | Command::Stat { .. }
            | Command::Man(_)
            | Command::Completions(_) => None,
        }
    }

    /// Whether the command loads a root key and unwraps keys with it (then the process is
    /// made undumpable before anything else).
    pub fn unwraps_keys(&self) -> bool {
        match self {
            Command::Init { .. }
            | Command::Mount { .. }
            | Command::RotateMaster(_)
            | Command::Rewrap(_)
            | Command::ChangeRootKey(_)
            | Command::Kms(_)
            | Command::BucketEncryption(_)
            | Command::Fsck(_)
            | Command::Upgrade(_)
            | Command::Keystore { .. } => true,
            Command::Reencrypt { .. }
            | Command::Stat { .. }
            | Command::Status(_)
            | Command::Man(_)
            | Command::Completions(_) => false,
        }
    }
}

/// The command-line definition: `Cli`'s, with `--store` required (and not global) in the
/// commands without subcommands (a global option cannot be required; `kms` and
/// `bucket-encryption` check it when they run), and the exit statuses after the help.
pub fn command() -> clap::Command {
    fn require_store(cmd: clap::Command) -> clap::Command {
        let has_store = cmd
            .get_arguments()
            .any(|a| a.get_id() == "store" && a.get_long() == Some("store"));
        if cmd.has_subcommands() {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            names
                .iter()
                .fold(cmd, |cmd, name| cmd.mut_subcommand(name, require_store))
        } else if has_store {
            cmd.mut_arg("store", |a| a.global(false).required(true))
        } else {
            cmd
        }
    }
    require_store(<Cli as clap::CommandFactory>::command().after_help(exit::EXIT_STATUS_HELP))
}

/// Parses the command line (exits with clap's usage error or help on a bad one).
pub fn parse_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> Cli {
    let mut matches = command().get_matches_from(args);
    match <Cli as clap::FromArgMatches>::from_arg_matches_mut(&mut matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

/// Runs a parsed command: what it found, or its error for [`exit::finish`] to print. A
/// command given a remote store runs on a working copy of its keystore, put back
/// afterwards, if it needs nothing else of the store; otherwise it is refused.
pub fn run(mut cli: Cli) -> Result<outcome::Status, exit::CliError> {
    if cli.command.unwraps_keys() {
        root_key::make_undumpable();
    }
    if !matches!(cli.command, Command::Mount { .. }) {
        exit::die_quietly_on_closed_pipe();
    }
    let Some((name, store, keystore_only)) = cli.command.store_args_mut() else {
        return dispatch(cli.command);
    };
    let Some(path) = store.store.clone().filter(|p| remote::names_remote(p)) else {
        return dispatch(cli.command);
    };
    if !keystore_only {
        if !remote::runs_on_a_copy(name) {
            return Err(remote::unsupported(name, &path).into());
        }
        let endpoint = store.endpoint.clone();
        let region = store.region.clone();
        let exclusive = exclusive_on_a_copy(&cli.command);
        let copy =
            remote::RemoteCopy::begin(&path, endpoint.as_deref(), region.as_deref(), exclusive)?;
        let local = copy.local_store();
        set_store(&mut cli.command, &local, &path);
        let status = dispatch_on_copy(cli.command, &local, &path)?;
        copy.finish()?;
        return Ok(status);
    }
    let keystore =
        remote::RemoteKeystore::begin(&path, store.endpoint.as_deref(), store.region.as_deref())?;
    let hosts = if name == "status" {
        Some(keystore.hosts()?)
    } else {
        None
    };
    let (endpoint, region) = (store.endpoint.clone(), store.region.clone());
    let retried = matches!(name, "kms" | "rotate-master");
    give_hosts(&mut cli.command, hosts);
    if !retried {
        let local = keystore.local_store();
        set_store(&mut cli.command, &local, &path);
        let status = dispatch_on_copy(cli.command, &local, &path)?;
        keystore.finish()?;
        return Ok(status);
    }
    // kms and rotate-master change nothing but the keystore: one that lost the race for it
    // (another host changed it meanwhile) runs again on the new keystore, and only the
    // output of the run that landed is shown.
    let mut keystore = keystore;
    for attempt in 1..=KEYSTORE_ATTEMPTS {
        let mut command = cli.command.clone();
        let local = keystore.local_store();
        set_store(&mut command, &local, &path);
        let (status, output) = remote::capture_stdout(|| dispatch_on_copy(command, &local, &path))
            .map_err(|e| exit::CliError::OnRemoteStore(format!("cannot run the command: {e}")))?;
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                remote::print_captured(&output);
                return Err(e);
            }
        };
        match keystore.finish() {
            Ok(()) => {
                remote::print_captured(&output);
                return Ok(status);
            }
            Err(e) if e.is_conflict() && attempt < KEYSTORE_ATTEMPTS => {
                eprintln!(
                    "ssefs: the keystore of {} was changed by another host meanwhile; running \
                     the command again on the new keystore (attempt {} of {KEYSTORE_ATTEMPTS})",
                    path.display(),
                    attempt + 1
                );
                // Backoff with jitter, so racing hosts do not meet again in step.
                let mut jitter = [0u8; 2];
                let _ = getrandom::fill(&mut jitter);
                let base = 50u64 << attempt.min(5);
                let wait = base + u64::from(u16::from_le_bytes(jitter)) % base;
                std::thread::sleep(std::time::Duration::from_millis(wait));
                keystore =
                    remote::RemoteKeystore::begin(&path, endpoint.as_deref(), region.as_deref())?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// The commands on a full copy that must run on one host at a time (the store's rotation
/// lease): retiring master key versions and rewrapping.
fn exclusive_on_a_copy(command: &Command) -> Option<remote::Exclusive> {
    match command {
        Command::RotateMaster(a) => Some(remote::Exclusive {
            what: "rotate-master --retire",
            retires: a.retire.is_some() || a.retire_unused,
        }),
        Command::Rewrap(_) => Some(remote::Exclusive {
            what: "rewrap",
            retires: false,
        }),
        _ => None,
    }
}

/// How many times a keystore command that lost the race for a remote keystore is run.
const KEYSTORE_ATTEMPTS: u32 = 8;

/// Points a command's `--store` at the local copy `local` of the remote store `named`.
fn set_store(command: &mut Command, local: &std::path::Path, named: &std::path::Path) {
    if let Some((_, store, _)) = command.store_args_mut() {
        store.store = Some(local.to_path_buf());
        store.named = Some(named.to_path_buf());
    }
}

/// Runs a command on a local copy of a remote store; its messages name the store by the
/// URL it was given (`named`), not by the copy.
fn dispatch_on_copy(
    command: Command,
    copy: &std::path::Path,
    named: &std::path::Path,
) -> Result<outcome::Status, exit::CliError> {
    dispatch(command).map_err(|e| {
        let message = e.to_string();
        exit::CliError::OnRemoteStore(
            message.replace(&copy.display().to_string(), &named.display().to_string()),
        )
    })
}

/// Hands `ssefs status` the heartbeats of a remote store's mounts.
fn give_hosts(command: &mut Command, hosts: Option<Vec<crate::store::remote::HostBeat>>) {
    if let Command::Status(args) = command {
        args.hosts = hosts;
    }
}

/// Runs a command on the store it names.
fn dispatch(command: Command) -> Result<outcome::Status, exit::CliError> {
    use exit::CliError;
    use outcome::Status;
    let done = Status::Success;
    match command {
        Command::Init {
            store,
            endpoint,
            region,
            root_key,
            passphrase,
            passphrase_fd,
            pkcs11_module,
            token_label,
            key_label,
            pin_fd,
        } => {
            if remote::names_remote(&store) {
                if pkcs11_module.is_some() {
                    return Err(remote::unsupported("init with a PKCS#11 token", &store).into());
                }
                remote::run_init(&remote::InitArgs {
                    store: &store,
                    endpoint: endpoint.as_deref(),
                    region: region.as_deref(),
                    root_key: root_key.as_deref(),
                    passphrase,
                    passphrase_fd,
                })?;
            } else if endpoint.is_some() || region.is_some() {
                return Err(remote::not_remote(&store).into());
            } else if pkcs11_module.is_some() {
                let name = root_key::token_key_name(
                    pkcs11_module.as_deref(),
                    token_label.as_deref(),
                    key_label.as_deref(),
                )
                .map_err(init::InitError::from)?;
                init::run_with_token(&store, &name, pin_fd)?;
            } else if passphrase {
                init::run_with_passphrase(&store, passphrase_fd)?;
            } else {
                init::run(&store, root_key.as_deref())?;
            }
        }
        Command::Mount {
            store,
            mountpoint,
            key,
            mut options,
            master_rotation_days,
            bucket,
            create_bucket,
            endpoint,
            region,
            cache_dir,
            cache_size,
        } => {
            if let Some(days) = master_rotation_days {
                options.push(format!("master_rotation_days={days}"));
            }
            if let Some(bucket) = bucket {
                options.push(format!("bucket={bucket}"));
            }
            if create_bucket {
                options.push("create_bucket".to_string());
            }
            if let Some(dir) = cache_dir {
                options.push(format!("cache_dir={}", dir.display()));
            }
            if let Some(size) = cache_size {
                options.push(format!("cache_size={size}"));
            }
            if let Some(endpoint) = endpoint {
                options.push(format!("endpoint={endpoint}"));
            }
            if let Some(region) = region {
                options.push(format!("region={region}"));
            }
            mount_remote::run_any(&store, &mountpoint, &key, &options, Box::new(|_| {}))
                .map_err(CliError::Mount)?;
        }
        Command::RotateMaster(args) => rotate::run(&args)?,
        Command::Rewrap(args) => rewrap::run(&args)?,
        Command::ChangeRootKey(args) => change_root_key::run(&args)?,
        Command::Kms(args) => kms::run(args)?,
        Command::BucketEncryption(args) => return Ok(bucket_encryption::run(args)?),
        Command::Reencrypt {
            paths,
            algorithm,
            kms_key_id,
            json,
        } => reencrypt::run(&paths, algorithm, kms_key_id, json)?,
        Command::Stat { paths, json } => stat::run(&paths, json)?,
        Command::Fsck(args) => return Ok(fsck::run(&args)?),
        Command::Keystore { action } => keystore_cmd::run(action).map_err(CliError::Keystore)?,
        Command::Status(args) => status::run(&args)?,
        Command::Upgrade(args) => upgrade::run(&args)?,
        Command::Man(args) => docs::man(&args)?,
        Command::Completions(args) => docs::completions(&args),
    }
    Ok(done)
}

//! Command-line interface: argument parsing and one module per command. Commands print one
//! clear line on error and exit non-zero; they never print key material.

pub mod bucket_encryption;
pub mod fsck;
pub mod helper_mode;
pub mod init;
pub mod json;
pub mod keystore_cmd;
pub mod kms;
pub mod mount;
pub mod notify;
pub mod reencrypt;
pub mod rewrap;
pub mod root_key;
pub mod rootkey;
pub mod rotate;
pub mod stat;
pub mod status;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ssefs",
    version,
    about = "Mount server-side-encrypted buckets as directories"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new store: the directory, its keystore and master key version 1.
    Init {
        /// The backing directory to create.
        store: PathBuf,
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
    },
    /// Mount a store: each top-level directory is a bucket. Stays in the foreground until
    /// unmounted (umount, fusermount3 -u, SIGTERM or SIGINT).
    Mount {
        /// The backing directory made by `ssefs init`.
        store: PathBuf,
        /// An existing, empty directory outside the store to mount on (-o nonempty: one
        /// that holds files, hidden while mounted).
        mountpoint: PathBuf,
        /// The root key file [default: $SSEFS_ROOT_KEY_FILE, else
        /// $CREDENTIALS_DIRECTORY/root-key, else ~/.config/ssefs/keys/STORE-ID.key].
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
        /// Mount options, comma-separated: allow_other, allow_root, default_permissions, ro,
        /// rw, default_sse=none|AES256|KMS, fsname=NAME, auto_unmount, nonempty.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Rotate the master key when the current version is N days old, checked at mount and
        /// hourly (0: never) [default: 90; also -o master_rotation_days=N].
        #[arg(long, value_name = "N")]
        master_rotation_days: Option<u32>,
    },
    /// Add a new master key version (new AES256 objects use it; older versions stay for
    /// reading), or retire versions no object uses any more.
    RotateMaster(rotate::RotateMasterArgs),
    /// Re-wrap objects' DEKs under the newest version of their master key or CMK, rewriting
    /// only headers (data untouched). Through the mount when mounted; resumable.
    Rewrap(rewrap::RewrapArgs),
    /// Re-wrap every master key and CMK material under a new root key (a key file or a
    /// passphrase) in one transaction; objects are not touched. Only while unmounted.
    ChangeRootKey(root_key::ChangeRootKeyArgs),
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
        #[arg(long, value_parser = ["AES256", "KMS"])]
        algorithm: Option<String>,
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
    Fsck {
        #[arg(long, value_name = "STORE")]
        store: PathBuf,
        /// The root key file, to check blocks [default: as for `ssefs mount`; without one,
        /// headers only].
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
        /// For a store whose root key comes from a passphrase: read it from this descriptor.
        #[arg(long, value_name = "N", conflicts_with = "root_key")]
        passphrase_fd: Option<i32>,
        /// Remove leftover temporary files (only while the store is not mounted).
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up or restore a store's keystore.
    Keystore {
        #[command(subcommand)]
        action: keystore_cmd::KeystoreAction,
    },
    /// Show whether and where a store is mounted, its buckets, objects per algorithm and key,
    /// and its master key versions. Needs no root key.
    Status {
        #[arg(long, value_name = "STORE")]
        store: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command; the error is printed by `main` as one line.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Init {
            store,
            root_key,
            passphrase,
            passphrase_fd,
        } => {
            if passphrase {
                root_key::run_init(&store, passphrase_fd)
            } else {
                Ok(init::run(&store, root_key.as_deref())?)
            }
        }
        Command::Mount {
            store,
            mountpoint,
            root_key,
            mut options,
            master_rotation_days,
        } => {
            if let Some(days) = master_rotation_days {
                options.push(format!("master_rotation_days={days}"));
            }
            Ok(mount::run(
                &store,
                &mountpoint,
                root_key.as_deref(),
                &options,
            )?)
        }
        Command::RotateMaster(args) => rotate::run(&args),
        Command::Rewrap(args) => rewrap::run(&args),
        Command::ChangeRootKey(args) => root_key::run_change(&args),
        Command::Kms(args) => Ok(kms::run(args)?),
        Command::BucketEncryption(args) => Ok(bucket_encryption::run(args)?),
        Command::Reencrypt {
            paths,
            algorithm,
            kms_key_id,
            json,
        } => reencrypt::run(&paths, algorithm.as_deref(), kms_key_id, json),
        Command::Stat { paths, json } => stat::run(&paths, json),
        Command::Fsck {
            store,
            root_key,
            passphrase_fd,
            repair,
            json,
        } => match fsck::run(&store, root_key.as_deref(), passphrase_fd, repair, json)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Keystore { action } => Ok(keystore_cmd::run(action)?),
        Command::Status { store, json } => Ok(status::run(&store, json)?),
    }
}

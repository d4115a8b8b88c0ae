//! Command-line interface: argument parsing and one module per command. Commands print one
//! clear line on error and exit non-zero; they never print key material.

pub mod init;
pub mod mount;
pub mod rootkey;

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
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
    },
    /// Mount a store: each top-level directory is a bucket. Stays in the foreground until
    /// unmounted (umount, fusermount3 -u, SIGTERM or SIGINT).
    Mount {
        /// The backing directory made by `ssefs init`.
        store: PathBuf,
        /// An existing, empty directory to mount on.
        mountpoint: PathBuf,
        /// The root key file [default: $SSEFS_ROOT_KEY_FILE, else
        /// $CREDENTIALS_DIRECTORY/root-key, else ~/.config/ssefs/keys/STORE-ID.key].
        #[arg(long, value_name = "FILE")]
        root_key: Option<PathBuf>,
        /// Mount options, comma-separated: allow_other, allow_root, default_permissions, ro,
        /// rw, default_sse=none|AES256|KMS, fsname=NAME, auto_unmount.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
    },
}

/// Runs a parsed command; the error is printed by `main` as one line.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Init { store, root_key } => Ok(init::run(&store, root_key.as_deref())?),
        Command::Mount {
            store,
            mountpoint,
            root_key,
            options,
        } => Ok(mount::run(
            &store,
            &mountpoint,
            root_key.as_deref(),
            &options,
        )?),
    }
}

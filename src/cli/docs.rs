//! `ssefs man` and `ssefs completions`: the man pages (`ssefs.1`, `ssefs-kms.1`,
//! `ssefs-kms-create.1`, ...) and the shell completion scripts, generated from the same clap
//! definitions the command line is parsed with, so they cannot drift from it.

use clap::Args;
use clap_complete::Shell;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// The directory to write the pages into (created if it does not exist), e.g.
    /// /usr/local/share/man/man1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot write the man pages into {}: {source}", dir.display())]
    Man {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Writes one page per command and subcommand into `args.out_dir`.
pub fn man(args: &ManArgs) -> Result<(), DocsError> {
    let failed = |source| DocsError::Man {
        dir: args.out_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&args.out_dir).map_err(failed)?;
    clap_mangen::generate_to(super::command(), &args.out_dir).map_err(failed)?;
    Ok(())
}

/// Prints the completion script for `args.shell` on standard output.
pub fn completions(args: &CompletionsArgs) {
    let mut cmd = super::command();
    clap_complete::generate(args.shell, &mut cmd, "ssefs", &mut std::io::stdout());
}

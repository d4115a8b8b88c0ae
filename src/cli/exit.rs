//! How a command ends: its error (one enum per command module, gathered here), and the one
//! mapping from it and from what a successful run reports (`outcome`) to the exit status
//! `ssefs --help` documents. Knows no command's details.

use super::outcome::Status;
use std::process::ExitCode;

/// The exit statuses, as `ssefs --help` lists them.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    the command failed (the message on standard error says why)
  2    the command line is wrong (usage error)
  3    bucket-encryption get: the bucket has no default encryption rule
  4    fsck: problems remain in the store
  5    the command does not support remote (s3://) stores yet
  6    a remote store's keystore was changed by another host meanwhile, or another
       host holds its rotation lease; nothing was written: run the command again
  141  standard output was closed early (e.g. piped into `head`): killed by SIGPIPE";

/// Exit status: the command failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of `bucket-encryption get` for a bucket without a rule.
pub const EXIT_NO_RULE: u8 = 3;
/// Exit status of `fsck` when problems remain.
pub const EXIT_PROBLEMS: u8 = 4;
/// Exit status of a command given a remote store it does not support yet.
pub const EXIT_REMOTE_UNSUPPORTED: u8 = 5;
/// Exit status of a command whose change to a remote store's keystore lost to another host.
pub const EXIT_REMOTE_CONFLICT: u8 = 6;

/// Any command's error; each command module has its own enum.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Init(#[from] super::init::InitError),
    #[error("{0}")]
    Mount(String),
    #[error(transparent)]
    RotateMaster(#[from] super::rotate::RotateError),
    #[error(transparent)]
    Rewrap(#[from] super::rewrap::RewrapError),
    #[error(transparent)]
    ChangeRootKey(#[from] super::change_root_key::ChangeRootKeyError),
    #[error(transparent)]
    Kms(#[from] super::kms::KmsCliError),
    #[error(transparent)]
    BucketEncryption(#[from] super::bucket_encryption::BucketEncryptionError),
    #[error(transparent)]
    Reencrypt(#[from] super::reencrypt::ReencryptError),
    #[error(transparent)]
    Stat(#[from] super::stat::StatError),
    #[error(transparent)]
    Fsck(#[from] super::fsck::FsckCliError),
    #[error("{0}")]
    Keystore(String),
    #[error(transparent)]
    Status(#[from] super::status::StatusError),
    #[error(transparent)]
    Upgrade(#[from] super::upgrade::UpgradeCliError),
    #[error(transparent)]
    Docs(#[from] super::docs::DocsError),
    #[error(transparent)]
    Remote(#[from] super::remote::RemoteCliError),
    /// A command's error on a remote store, its working copy named by the store's URL.
    #[error("{0}")]
    OnRemoteStore(String),
}

/// The exit status of a finished command.
pub fn exit_code(result: &Result<Status, CliError>) -> u8 {
    match result {
        Ok(Status::Success) => 0,
        Ok(Status::NoRule) => EXIT_NO_RULE,
        Ok(Status::ProblemsLeft) => EXIT_PROBLEMS,
        Err(CliError::Remote(e)) if e.is_unsupported() => EXIT_REMOTE_UNSUPPORTED,
        Err(CliError::Remote(e)) if e.is_conflict() => EXIT_REMOTE_CONFLICT,
        Err(_) => EXIT_FAILURE,
    }
}

/// Prints the error (one line, `ssefs: ` first) and turns the result into the process's
/// exit status.
pub fn finish(result: Result<Status, CliError>) -> ExitCode {
    if let Err(e) = &result {
        eprintln!("ssefs: {e}");
    }
    ExitCode::from(exit_code(&result))
}

/// Lets a write to a closed pipe end the process as it ends `cat` or `ls` (killed by
/// SIGPIPE, no message), instead of a panic in `println!`. Not for the mount, whose daemon
/// must outlive whatever reads its standard error.
pub fn die_quietly_on_closed_pipe() {
    crate::sys::default_sigpipe();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_documented_status() {
        assert_eq!(exit_code(&Ok(Status::Success)), 0);
        assert_eq!(exit_code(&Ok(Status::NoRule)), 3);
        assert_eq!(exit_code(&Ok(Status::ProblemsLeft)), 4);
        assert_eq!(exit_code(&Err(CliError::Mount("x".into()))), 1);
        let unsupported = super::super::remote::unsupported("mount", "s3://b/p".as_ref());
        assert_eq!(exit_code(&Err(CliError::Remote(unsupported))), 5);
        let lost = crate::store::remote::WorkingCopyError::Conflict {
            store: "s3://b/p".into(),
        };
        let lost = super::super::remote::RemoteCliError::WorkingCopy(lost);
        assert_eq!(exit_code(&Err(CliError::Remote(lost))), 6);
        for code in [
            "  0 ", "  1 ", "  2 ", "  3 ", "  4 ", "  5 ", "  6 ", "  141 ",
        ] {
            assert!(EXIT_STATUS_HELP.contains(code), "{code}");
        }
    }
}

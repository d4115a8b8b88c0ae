//! What a command that did not fail reports, for `exit` to turn into an exit status. Commands
//! return it; it knows no command and no exit code.

/// What a command that did not fail found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    /// `bucket-encryption get`: the bucket has no rule.
    NoRule,
    /// `fsck`: problems remain.
    ProblemsLeft,
}

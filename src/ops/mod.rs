//! Offline operations on a store, below the CLI and beside the mount: the store scan, fsck,
//! the offline rewrap and the retire check of master key versions. They reach backing bytes
//! only through `store::Store`, objects through `fs` and `crypto`, keys through `keystore`
//! summaries; nothing here knows FUSE or SQLite, or prints.

pub mod fsck;
pub mod restore;
pub mod retire;
pub mod rewrap;
pub mod scan;
pub mod upgrade;

//! The FUSE layer, the only part of ssefs that imports `fuser`: `adapter` translates kernel
//! requests into calls on `fs::` and its answers into replies; `session` mounts, serves until
//! unmounted (by `umount`, or SIGTERM/SIGINT) and unmounts.

mod adapter;
mod session;

pub use adapter::FuseAdapter;
pub use session::{MountConfig, raise_open_file_limit, serve};

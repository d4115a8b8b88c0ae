//! ssefs: a FUSE filesystem that mounts server-side-encrypted buckets as directories.
//! Layering (see `docs/DESIGN.md`): `fuse` translates, `fs` decides, `ops` runs offline
//! operations beside the mount, `crypto` knows no paths, `keystore` holds keys in SQLite,
//! `store` owns the backing directory and its layout.

pub mod cli;
pub mod crypto;
pub mod fs;
pub mod fuse;
pub mod keystore;
pub mod ops;
pub mod store;
pub mod sys;

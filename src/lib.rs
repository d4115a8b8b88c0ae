//! ssefs: a FUSE filesystem that mounts server-side-encrypted buckets as directories.
//! Layering (see DESIGN): `fuse` translates, `fs` decides, `crypto` knows no paths,
//! `keystore` holds keys in SQLite, `store` owns the backing directory.

pub mod cli;
pub mod crypto;
pub mod fs;
pub mod fuse;
pub mod keystore;
pub mod store;
pub mod sys;

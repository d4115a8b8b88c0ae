//! Everything the integration tests share: the `ssefs` command line (`cli`), stores and kernel
//! mounts (`mount`), shell scripts (`shell`), system calls and errno (`sys`), extended
//! attributes (`xattr`), tree comparison (`tree`), seeded randomness (`rng`), a SoftHSM2 token
//! (`softhsm`), the crypto tests' fixed keys (`keys`), a real S3 server for remote stores
//! (`s3`) and mounts of them (`remote_mount`), and for the
//! reliability tests the fs core without a kernel (`core`) and the randomized model (`model`).
//! Each test crate compiles this whole tree, so helpers one crate does not use are expected.
#![allow(dead_code)]

pub mod cli;
pub mod core;
pub mod keys;
pub mod model;
pub mod mount;
pub mod remote_mount;
pub mod rng;
pub mod s3;
pub mod shell;
pub mod softhsm;
pub mod sys;
pub mod tree;
pub mod xattr;

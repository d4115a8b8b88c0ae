//! Helpers of the reliability tests: the randomized model (`model`) and the fs core driven
//! without a kernel (`core`). The mount harness itself is `tests/common`.
#![allow(dead_code)]

pub mod core;
pub mod model;
pub mod rng;

//! The tests' seeded random generator (splitmix64), one for every test so a seed means the
//! same thing everywhere, the seed a test runs with, and deterministic test content.

use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// A small seeded generator (splitmix64): reproducible test data without extra crates.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with a chance of `percent` in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// A seed from `SSEFS_TEST_SEED` or the clock. Keep the guard alive for the test: if the test
/// panics, the guard prints the seed and how to replay it.
pub fn test_seed() -> (u64, SeedGuard) {
    let seed = std::env::var("SSEFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
    (seed, SeedGuard(seed))
}

pub struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "test failed with seed {0}; replay with SSEFS_TEST_SEED={0}",
                self.0
            );
        }
    }
}

/// Deterministic test content for object `i`.
pub fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u64 * 31 + i as u64 * 7919 + (k >> 8) as u64) as u8)
        .collect()
}

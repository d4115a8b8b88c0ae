//! Fixed keys for the tests that drive the crypto layer directly, so objects made by one test
//! file are made under the same store key as another's.

use ssefs::crypto::{Key256, StoreKey};

/// The store key of the crypto tests: store id `70 70 …`, object-authentication key `71 71 …`.
pub fn store_key() -> StoreKey {
    StoreKey::new([0x70; 16], Key256::from_bytes(&[0x71; 32]).unwrap())
}

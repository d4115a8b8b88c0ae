//! The in-memory cache of unwrapped keys and of the CMK facts needed to hand them out, so
//! the filesystem does not query SQLite per open. Keys are zeroized when evicted or dropped.
//! The cache is dropped whole whenever another connection commits (`PRAGMA data_version`).

use super::{CmkState, Grant};
use crate::crypto::Key256;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct KeyCache {
    /// `PRAGMA data_version` when the cache was last known valid.
    pub data_version: Option<i64>,
    pub masters: HashMap<u32, Key256>,
    pub current_master: Option<u32>,
    /// CMK id -> its state and newest material version.
    pub cmks: HashMap<String, CachedCmk>,
    /// Alias -> CMK id.
    pub aliases: HashMap<String, String>,
    /// (CMK id, material version) -> material.
    pub materials: HashMap<(String, u32), Key256>,
}

#[derive(Clone, Debug)]
pub(super) struct CachedCmk {
    pub state: CmkState,
    pub newest: Option<u32>,
    pub owner_uid: u32,
    /// Has an alias under `alias/acs/`: managed by ssefs and usable by every caller.
    pub service_managed: bool,
    pub grants: Vec<Grant>,
}

impl KeyCache {
    /// Forgets everything (keys are zeroized by `Key256`'s drop).
    pub fn clear(&mut self) {
        let data_version = self.data_version;
        *self = Self::default();
        self.data_version = data_version;
    }

    /// Keeps the cache if `data_version` is unchanged since the last call, else clears it.
    /// Drops everything when the database changed; true if it did.
    pub fn revalidate(&mut self, data_version: i64) -> bool {
        if self.data_version == Some(data_version) {
            return false;
        }
        self.clear();
        self.data_version = Some(data_version);
        true
    }
}

//! Which hosts have a remote store mounted: each mount keeps a small heartbeat object
//! `.ssefs/hosts/HOST-PID-NONCE` (host name, pid, ssefs version, mountpoint, start and last
//! beat), rewritten every [`HEARTBEAT_INTERVAL`] and removed at unmount. One not rewritten
//! for [`HEARTBEAT_EXPIRY`] belongs to a mount that ended without removing it (a crash, a
//! host that went away) and is shown as expired.

use super::{RemoteError, RemoteStore, WriteMode};
use crate::store::layout;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How often a mount rewrites its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A heartbeat older than this (by the object store's clock) is expired.
pub const HEARTBEAT_EXPIRY: Duration = Duration::from_secs(60);

/// One mount's heartbeat, as the object store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBeat {
    /// The heartbeat object's key (one per mount).
    pub key: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub mountpoint: String,
    /// Seconds since the Unix epoch, by the mounting host's clock.
    pub started: i64,
    /// When the object store last stored it (seconds since the Unix epoch, its clock).
    pub seen: i64,
    /// The master key version the mount puts new objects under (since its last keystore
    /// sync); `None` from a mount of an ssefs that did not say.
    pub master_version: Option<u32>,
}

/// Overrides [`HEARTBEAT_EXPIRY`] (seconds) for `ssefs status`.
pub const EXPIRY_ENV: &str = "SSEFS_HEARTBEAT_EXPIRY";

impl HostBeat {
    /// Whether it was not rewritten for [`HEARTBEAT_EXPIRY`] (or `$SSEFS_HEARTBEAT_EXPIRY`
    /// seconds) at `now`.
    pub fn expired(&self, now: i64) -> bool {
        let expiry = std::env::var(EXPIRY_ENV)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(HEARTBEAT_EXPIRY.as_secs() as i64);
        now.saturating_sub(self.seen) > expiry
    }
}

fn hosts_prefix() -> String {
    format!("{}/{}", layout::META_DIR, layout::HOSTS_DIR)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// This host's name (`/proc/sys/kernel/hostname`).
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// A live mount's heartbeat; removed from the object store when dropped.
#[derive(Debug)]
pub struct Heartbeat {
    remote: Arc<RemoteStore>,
    key: String,
    fields: Value,
    master_version: std::sync::atomic::AtomicU32,
}

impl Heartbeat {
    /// Writes the first heartbeat of a mount on `mountpoint` that puts new objects under
    /// master key version `master_version`.
    pub fn start(
        remote: Arc<RemoteStore>,
        mountpoint: &str,
        master_version: u32,
    ) -> Result<Heartbeat, RemoteError> {
        let mut nonce = [0u8; 4];
        let _ = getrandom::fill(&mut nonce);
        let host = host_name();
        let pid = std::process::id();
        let safe: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let key = format!(
            "{}/{safe}-{pid}-{:08x}",
            hosts_prefix(),
            u32::from_be_bytes(nonce)
        );
        let fields = json!({
            "host": host,
            "pid": pid,
            "version": env!("CARGO_PKG_VERSION"),
            "mountpoint": mountpoint,
            "started": now(),
        });
        let beat = Heartbeat {
            remote,
            key,
            fields,
            master_version: std::sync::atomic::AtomicU32::new(master_version),
        };
        beat.beat()?;
        Ok(beat)
    }

    /// Records the master key version the mount now puts new objects under (written with
    /// the next beat).
    pub fn set_master_version(&self, version: u32) {
        self.master_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many other mounts of the store are live (their heartbeats not expired).
    pub fn others_live(&self) -> Result<usize, RemoteError> {
        let now = now();
        Ok(hosts(&self.remote)?
            .iter()
            .filter(|h| h.key != self.key && !h.expired(now))
            .count())
    }

    /// Rewrites the heartbeat (the object store dates it).
    pub fn beat(&self) -> Result<(), RemoteError> {
        let mut fields = self.fields.clone();
        let version = self
            .master_version
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Some(map) = fields.as_object_mut() {
            map.insert("master_version".to_string(), json!(version));
        }
        self.remote
            .put(
                &self.key,
                fields.to_string().into_bytes(),
                WriteMode::Overwrite,
            )
            .map(|_| ())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Err(e) = self.remote.delete(&self.key) {
            log::warn!("cannot remove this mount's heartbeat {}: {e}", self.key);
        }
    }
}

/// The heartbeats in the store, oldest mount first; unreadable ones are skipped.
pub fn hosts(remote: &RemoteStore) -> Result<Vec<HostBeat>, RemoteError> {
    let mut out = Vec::new();
    for info in remote.list_all(&hosts_prefix())? {
        let Ok((body, _)) = remote.get(&info.key) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        let text = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        out.push(HostBeat {
            key: info.key.clone(),
            host: text("host"),
            pid: doc
                .get("pid")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0),
            version: text("version"),
            mountpoint: text("mountpoint"),
            started: doc.get("started").and_then(Value::as_i64).unwrap_or(0),
            seen: info.modified,
            master_version: doc
                .get("master_version")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0),
        });
    }
    out.sort_by_key(|h| h.started);
    Ok(out)
}

/// Seconds since the Unix epoch now, by this host's clock.
pub fn unix_now() -> i64 {
    now()
}

//! `ssefs status --store STORE [--json]`: where the store is mounted (from mountinfo), the
//! buckets with their rule and object counts per algorithm, objects per key, and the master
//! key and CMK material versions with how many objects each wraps. Needs no root key: it
//! reads the keystore and object headers only.

use super::json::Json;
use super::root_key::{RootKeyError, StoreArgs};
use super::time::format_utc;
use crate::crypto::{Algorithm, KeyRef};
use crate::fs::algorithm_name;
use crate::keystore::KeystoreError;
use crate::keystore::backup::replaced_keystores;
use crate::keystore::inspect::{CmkSummary, KeystoreSummary, RootOfTrust, summarize};
use crate::keystore::keystore_dir;
use crate::ops::scan::{inventory, peek_object};
use crate::store::bucket_lock::{BucketMount, bucket_mounts};
use crate::store::lock_probe::{lock_holders, locked_mountpoint};
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many objects each master key version and each CMK material version wraps.
#[derive(Debug, Default)]
struct VersionUse {
    master: BTreeMap<u32, u64>,
    cmk: BTreeMap<(String, u32), u64>,
}

impl VersionUse {
    fn count(&mut self, key_ref: &KeyRef) {
        match key_ref {
            KeyRef::None => {}
            KeyRef::Master { version } => *self.master.entry(*version).or_default() += 1,
            KeyRef::Cmk { key_id, version } => {
                *self.cmk.entry((key_id.clone(), *version)).or_default() += 1;
            }
        }
    }

    fn master(&self, version: u32) -> u64 {
        self.master.get(&version).copied().unwrap_or_default()
    }

    /// A CMK's versions: the live ones and any that objects name, with their counts and
    /// whether the material is still there.
    fn cmk_versions(&self, cmk: &CmkSummary) -> Vec<(u32, u64, bool)> {
        let mut versions: BTreeMap<u32, (u64, bool)> =
            cmk.live_versions.iter().map(|v| (*v, (0, true))).collect();
        for ((key_id, version), n) in &self.cmk {
            if *key_id == cmk.key_id {
                versions.entry(*version).or_insert((0, false)).0 = *n;
            }
        }
        versions
            .into_iter()
            .map(|(v, (n, live))| (v, n, live))
            .collect()
    }
}

/// One bucket's figures.
#[derive(Debug, Default)]
struct BucketStatus {
    rule: Option<String>,
    objects: u64,
    by_algorithm: BTreeMap<&'static str, u64>,
    unreadable: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// A remote store's heartbeats (the mounts that have it mounted), read by the caller
    /// that reached the object store.
    #[arg(skip)]
    pub hosts: Option<Vec<crate::store::remote::HostBeat>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Args(#[from] RootKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

pub fn run(args: &StatusArgs) -> Result<(), StatusError> {
    let json = args.json;
    if let Some(url) = &args.store.named {
        let hosts = args.hosts.as_deref().unwrap_or_default();
        return remote_status(url, args.store.path()?, hosts, json);
    }
    let store = Store::open(args.store.path()?)?;
    let inv = inventory(&store);
    let summary = summarize(&keystore_dir(&inv.root))?;
    let StoreMounts {
        whole: mounts,
        buckets: bucket_mounts,
    } = store_mounts(&inv.root);
    let holders = lock_holders(&inv.root).unwrap_or_default();
    let mut buckets: BTreeMap<String, BucketStatus> = inv
        .buckets
        .iter()
        .map(|b| (b.clone(), BucketStatus::default()))
        .collect();
    for (bucket, rule) in &summary.bucket_rules {
        let text = match &rule.kms_key_id {
            Some(id) => format!("{} {id}", algorithm_label(rule.algorithm)),
            None => algorithm_label(rule.algorithm).to_string(),
        };
        if let Some(status) = buckets.get_mut(bucket) {
            status.rule = Some(text);
        }
    }
    let mut by_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut uses = VersionUse::default();
    for rel in &inv.objects {
        let bucket = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(status) = buckets.get_mut(&bucket) else {
            continue;
        };
        status.objects += 1;
        match peek_object(&store, rel) {
            Ok(info) => {
                *status
                    .by_algorithm
                    .entry(algorithm_label(info.algorithm))
                    .or_default() += 1;
                *by_key.entry(key_label(&info.key_ref)).or_default() += 1;
                uses.count(&info.key_ref);
            }
            Err(_) => status.unreadable += 1,
        }
    }
    let figures = Figures {
        buckets: &buckets,
        by_key: &by_key,
        uses: &uses,
        bucket_mounts: &bucket_mounts,
    };
    // Keystores a restore kept: key escrow lying in the store, worth a line.
    let replaced = replaced_keystores(&keystore_dir(&inv.root)).map_or(0, |kept| kept.len());
    if json {
        let mut out = to_json(&inv.root, &summary, &mounts, &holders, &figures);
        if let Json::Object(pairs) = &mut out {
            pairs.push(("replaced_keystores".into(), Json::uint(replaced)));
        }
        println!("{out}");
    } else {
        print_text(&inv.root, &summary, &mounts, &holders, &figures);
        if replaced > 0 {
            println!(
                "key escrow: {replaced} replaced keystore(s) kept in .ssefs/ (`ssefs keystore \
                 replaced` lists them, `--remove` removes them)"
            );
        }
    }
    Ok(())
}

fn algorithm_label(algorithm: Algorithm) -> &'static str {
    algorithm_name(algorithm).unwrap_or("none")
}

fn key_label(key_ref: &KeyRef) -> String {
    match key_ref {
        KeyRef::None => "none".to_string(),
        KeyRef::Master { version } => format!("master v{version}"),
        KeyRef::Cmk { key_id, version } => format!("cmk {key_id} v{version}"),
    }
}

/// The mounts of a store on this host: whole-store ones, and buckets mounted on their own.
pub(crate) struct StoreMounts {
    pub whole: Vec<PathBuf>,
    pub buckets: Vec<BucketMount>,
}

/// Every mount of `store`: the buckets mounted on their own (from their locks), and the
/// whole-store mounts (the other mountpoints [`mounts_of`] finds).
pub(crate) fn store_mounts(store: &Path) -> StoreMounts {
    let buckets = bucket_mounts(store).unwrap_or_default();
    let whole = mounts_of(store)
        .into_iter()
        .filter(|point| !buckets.iter().any(|b| b.mountpoint.as_ref() == Some(point)))
        .collect();
    StoreMounts { whole, buckets }
}

/// `bucket NAME mounted on MOUNTPOINT (daemon pid [PID])`.
pub(crate) fn bucket_mount_line(mount: &BucketMount) -> String {
    let point = mount
        .mountpoint
        .as_ref()
        .map_or_else(|| "(unknown)".to_string(), |p| p.display().to_string());
    format!(
        "bucket {} mounted on {point} (daemon pid {:?})",
        mount.bucket, mount.pids
    )
}

/// The bucket mounts as a JSON array of `{bucket, mount_point, pids}`.
pub(crate) fn bucket_mounts_json(mounts: &[BucketMount]) -> Json {
    let mounts = mounts
        .iter()
        .map(|m| {
            Json::object([
                ("bucket", Json::str(m.bucket.as_str())),
                (
                    "mount_point",
                    m.mountpoint
                        .as_ref()
                        .map_or(Json::Null, |p| Json::str(p.to_string_lossy())),
                ),
                (
                    "pids",
                    Json::Array(m.pids.iter().map(|&p| Json::uint(p)).collect()),
                ),
            ])
        })
        .collect();
    Json::Array(mounts)
}

/// The mountpoints of `store`: `fuse.ssefs` mounts whose source is the store's path, and the
/// mountpoint the daemon holding the store lock recorded (for a mount with another `fsname`).
pub(crate) fn mounts_of(store: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts = mounts_in(&text, store);
    if let Some(recorded) = locked_mountpoint(store) {
        if !mounts.contains(&recorded) && ssefs_mountpoints(&text).contains(&recorded) {
            mounts.push(recorded);
        }
    }
    mounts
}

/// Every `fuse.ssefs` mountpoint in `mountinfo`, whatever its source.
fn ssefs_mountpoints(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mount_point = mount.split(' ').nth(4)?;
            (fs.split(' ').next()? == "fuse.ssefs").then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

fn mounts_in(mountinfo: &str, store: &Path) -> Vec<PathBuf> {
    let wanted = store.to_string_lossy();
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mount_point = mount.split(' ').nth(4)?;
            let mut fs = fs.split(' ');
            let (fstype, source) = (fs.next()?, fs.next()?);
            (fstype == "fuse.ssefs" && unescape(source) == wanted)
                .then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    crate::sys::unescape(field).to_string_lossy().into_owned()
}

/// What the object headers showed, and the buckets mounted on their own.
struct Figures<'a> {
    buckets: &'a BTreeMap<String, BucketStatus>,
    by_key: &'a BTreeMap<String, u64>,
    uses: &'a VersionUse,
    bucket_mounts: &'a [BucketMount],
}

fn print_text(
    root: &Path,
    summary: &KeystoreSummary,
    mounts: &[PathBuf],
    holders: &[u32],
    figures: &Figures<'_>,
) {
    let Figures {
        buckets,
        by_key,
        uses,
        bucket_mounts,
    } = *figures;
    println!("store {} (id {})", root.display(), summary.store_id);
    println!("root of trust: {}", summary.root_of_trust);
    match (mounts, holders, bucket_mounts) {
        ([], [], _) => println!("not mounted"),
        ([], pids, []) => println!(
            "in use by pid {} (mounted in another namespace?)",
            pid_list(pids)
        ),
        ([], _, _) => {}
        (points, pids, _) => {
            for point in points {
                println!(
                    "mounted on {} (daemon pid {})",
                    point.display(),
                    pid_list(pids)
                );
            }
        }
    }
    for mount in bucket_mounts {
        println!("{}", bucket_mount_line(mount));
    }
    println!("master keys:");
    let newest = summary.master_keys.iter().map(|m| m.version).max();
    for m in &summary.master_keys {
        println!(
            "{}: {} object(s)",
            master_key_line(m, newest),
            uses.master(m.version)
        );
    }
    for (version, n) in &uses.master {
        if !summary.has_master(*version) {
            println!("  v{version} MISSING from the keystore: {n} object(s)");
        }
    }
    if !summary.cmks.is_empty() {
        println!("CMK material versions:");
    }
    for cmk in &summary.cmks {
        let versions: Vec<String> = uses
            .cmk_versions(cmk)
            .iter()
            .map(|(v, n, live)| {
                let gone = if *live { "" } else { " (no material)" };
                format!("v{v}{gone} {n} object(s)")
            })
            .collect();
        println!(
            "  {} ({}): {}",
            cmk.key_id,
            cmk.state.as_str(),
            if versions.is_empty() {
                "no material".to_string()
            } else {
                versions.join(", ")
            }
        );
    }
    println!("buckets:");
    for (name, b) in buckets {
        let algorithms: Vec<String> = b
            .by_algorithm
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        let unreadable = match b.unreadable {
            0 => String::new(),
            n => format!(", {n} without a readable header"),
        };
        println!(
            "  {name}: rule {}, {} object(s) ({}){unreadable}",
            b.rule.as_deref().unwrap_or("none"),
            b.objects,
            algorithms.join(", ")
        );
    }
    println!("objects by key:");
    for (key, n) in by_key {
        println!("  {key}: {n}");
    }
    println!("note: {UNVERIFIED}");
}

/// A master key version's line: `  vN created TIME[, retired TIME][, current]`.
fn master_key_line(m: &crate::keystore::inspect::MasterKeyVersion, newest: Option<u32>) -> String {
    let current = if Some(m.version) == newest {
        ", current"
    } else {
        ""
    };
    let retired = m
        .retired_at
        .map(|t| format!(", retired {}", format_utc(t)))
        .unwrap_or_default();
    format!(
        "  v{} created {}{retired}{current}",
        m.version,
        format_utc(m.created_at)
    )
}

/// The status of a store in an object store (`named` by its URL), from the working copy of
/// its keystore at `local`: its id, master key versions, CMKs and bucket rules. Its objects
/// are not listed or counted yet, and it is never mounted.
fn remote_status(
    named: &Path,
    local: &Path,
    hosts: &[crate::store::remote::HostBeat],
    json: bool,
) -> Result<(), StatusError> {
    let now = crate::store::remote::unix_now();
    let summary = summarize(&keystore_dir(local))?;
    let conflicts = crate::store::remote::conflicts_here(&summary.store_id.to_string());
    let rule_text = |rule: &crate::keystore::BucketRule| match &rule.kms_key_id {
        Some(id) => format!("{} {id}", algorithm_label(rule.algorithm)),
        None => algorithm_label(rule.algorithm).to_string(),
    };
    if json {
        let masters = summary.master_keys.iter().map(|m| {
            Json::object([
                ("version", Json::uint(m.version)),
                ("created_at", Json::Int(m.created_at)),
                ("retired_at", Json::opt_int(m.retired_at)),
            ])
        });
        let cmks = summary.cmks.iter().map(|cmk| {
            Json::object([
                ("key_id", Json::str(cmk.key_id.as_str())),
                ("state", Json::str(cmk.state.as_str())),
                (
                    "versions",
                    Json::Array(cmk.live_versions.iter().map(|v| Json::uint(*v)).collect()),
                ),
            ])
        });
        let rules = summary
            .bucket_rules
            .iter()
            .map(|(bucket, rule)| (bucket.clone(), Json::str(rule_text(rule))));
        let out = Json::object([
            ("store", Json::str(named.to_string_lossy())),
            ("store_id", Json::str(summary.store_id.to_string())),
            ("remote", Json::Bool(true)),
            (
                "hosts",
                Json::Array(
                    hosts
                        .iter()
                        .map(|h| {
                            Json::object([
                                ("host", Json::str(h.host.as_str())),
                                ("pid", Json::uint(h.pid)),
                                ("version", Json::str(h.version.as_str())),
                                ("mountpoint", Json::str(h.mountpoint.as_str())),
                                ("started", Json::Int(h.started)),
                                ("seen", Json::Int(h.seen)),
                                ("expired", Json::Bool(h.expired(now))),
                                (
                                    "master_version",
                                    h.master_version.map_or(Json::Null, Json::uint),
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "conflicts",
                Json::Array(
                    conflicts
                        .iter()
                        .map(|p| Json::str(p.to_string_lossy()))
                        .collect(),
                ),
            ),
            ("master_keys", Json::Array(masters.collect())),
            ("cmks", Json::Array(cmks.collect())),
            ("bucket_rules", Json::object(rules)),
        ]);
        println!("{out}");
        return Ok(());
    }
    println!("store {} (id {})", named.display(), summary.store_id);
    println!("in an object store: its buckets and objects are not listed by this version");
    if hosts.is_empty() {
        println!("not mounted on any host");
    } else {
        println!("mounted on:");
    }
    for h in hosts {
        let state = if h.expired(now) {
            format!(
                "no heartbeat for {}s: expired (the mount ended without removing it)",
                now.saturating_sub(h.seen)
            )
        } else {
            format!("last heartbeat {}s ago", now.saturating_sub(h.seen).max(0))
        };
        let master = h
            .master_version
            .map(|v| format!(", new objects under master key version {v}"))
            .unwrap_or_default();
        println!(
            "  {} pid {} (ssefs {}) on {}, since {}; {state}{master}",
            h.host,
            h.pid,
            h.version,
            h.mountpoint,
            format_utc(h.started)
        );
    }
    if !conflicts.is_empty() {
        println!(
            "conflicts: {} file(s) the mount on this host wrote after another host did; its \
             versions are kept here (encrypted as in the store):",
            conflicts.len()
        );
        for path in &conflicts {
            println!("  {}", path.display());
        }
    }
    println!("master keys:");
    let newest = summary.master_keys.iter().map(|m| m.version).max();
    for m in &summary.master_keys {
        println!("{}", master_key_line(m, newest));
    }
    if !summary.cmks.is_empty() {
        println!("CMK material versions:");
    }
    for cmk in &summary.cmks {
        let versions: Vec<String> = cmk.live_versions.iter().map(|v| format!("v{v}")).collect();
        println!(
            "  {} ({}): {}",
            cmk.key_id,
            cmk.state.as_str(),
            versions.join(", ")
        );
    }
    for (bucket, rule) in &summary.bucket_rules {
        println!("bucket rule {bucket}: {}", rule_text(rule));
    }
    println!("note: {UNVERIFIED}");
    Ok(())
}

/// Process ids as `9625` or `9625, 9630`.
pub(crate) fn pid_list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `{"kind": "key-file" | "passphrase" | "pkcs11", ...}`, the token's names for a token.
fn root_of_trust_json(root: &RootOfTrust) -> Json {
    match root {
        RootOfTrust::KeyFile => Json::object([("kind", Json::str("key-file"))]),
        RootOfTrust::Passphrase => Json::object([("kind", Json::str("passphrase"))]),
        RootOfTrust::Token(name) => Json::object([
            ("kind", Json::str("pkcs11")),
            ("module", Json::str(name.module.to_string_lossy())),
            ("token", Json::str(name.token.as_str())),
            ("key", Json::str(name.key.as_str())),
        ]),
    }
}

/// What `status` cannot tell without the root key, said with every report.
const UNVERIFIED: &str = "read without the root key: the keystore and the object headers were \
                          not authenticated; `ssefs fsck` with the root key verifies them";

fn to_json(
    root: &Path,
    summary: &KeystoreSummary,
    mounts: &[PathBuf],
    holders: &[u32],
    figures: &Figures<'_>,
) -> Json {
    let Figures {
        buckets,
        by_key,
        uses,
        bucket_mounts,
    } = *figures;
    let masters = summary
        .master_keys
        .iter()
        .map(|m| {
            Json::object([
                ("version", Json::uint(m.version)),
                ("created_at", Json::Int(m.created_at)),
                ("retired_at", Json::opt_int(m.retired_at)),
                ("objects", Json::uint(uses.master(m.version))),
            ])
        })
        .collect();
    let cmks = summary
        .cmks
        .iter()
        .map(|cmk| {
            let versions = uses
                .cmk_versions(cmk)
                .into_iter()
                .map(|(v, n, live)| {
                    Json::object([
                        ("version", Json::uint(v)),
                        ("objects", Json::uint(n)),
                        ("material", Json::Bool(live)),
                    ])
                })
                .collect();
            Json::object([
                ("key_id", Json::str(cmk.key_id.as_str())),
                ("state", Json::str(cmk.state.as_str())),
                ("versions", Json::Array(versions)),
            ])
        })
        .collect();
    let buckets = buckets
        .iter()
        .map(|(name, b)| {
            Json::object([
                ("name", Json::str(name.as_str())),
                ("rule", b.rule.as_deref().map_or(Json::Null, Json::str)),
                ("objects", Json::uint(b.objects)),
                (
                    "by_algorithm",
                    Json::object(b.by_algorithm.iter().map(|(a, n)| (*a, Json::uint(*n)))),
                ),
                ("unreadable_headers", Json::uint(b.unreadable)),
            ])
        })
        .collect();
    Json::object([
        ("store", Json::str(root.to_string_lossy())),
        ("store_id", Json::str(summary.store_id.to_string())),
        ("root_of_trust", root_of_trust_json(&summary.root_of_trust)),
        ("verified", Json::Bool(false)),
        ("note", Json::str(UNVERIFIED)),
        (
            "mounted",
            Json::Bool(!mounts.is_empty() || !holders.is_empty()),
        ),
        (
            "mount_points",
            Json::Array(
                mounts
                    .iter()
                    .map(|m| Json::str(m.to_string_lossy()))
                    .collect(),
            ),
        ),
        (
            "lock_holders",
            Json::Array(holders.iter().map(|&p| Json::uint(p)).collect()),
        ),
        ("bucket_mounts", bucket_mounts_json(bucket_mounts)),
        ("master_keys", Json::Array(masters)),
        ("cmks", Json::Array(cmks)),
        ("buckets", Json::Array(buckets)),
        (
            "objects_by_key",
            Json::object(by_key.iter().map(|(k, n)| (k.as_str(), Json::uint(*n)))),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_of_the_store_are_found_and_unescaped() {
        let info = "42 27 0:40 / /srv/my\\040data rw,nosuid - fuse.ssefs /srv/st\\040ore rw\n\
                    43 27 0:41 / /mnt/other rw - fuse.ssefs /srv/other rw\n\
                    44 27 0:42 / /mnt/x rw shared:5 - fuse.sshfs /srv/st\\040ore rw\n";
        assert_eq!(
            mounts_in(info, Path::new("/srv/st ore")),
            [PathBuf::from("/srv/my data")]
        );
        assert!(mounts_in(info, Path::new("/srv/none")).is_empty());
    }
}

//! A lease in the object store: one holder at a time, among all hosts of a store, for work
//! that must not run twice at once (retiring master key versions, a rewrap). The object
//! `.ssefs/leases/NAME` names the holder (host, pid, what it does) and its term; it is taken
//! with `If-None-Match`, taken over with `If-Match` once not renewed for its term (by the
//! object store's `Last-Modified` against this host's clock), renewed with `If-Match` every
//! third of its term while held, and removed when dropped. Not a local lock: a holder on
//! another host counts the same.

use super::heartbeat::unix_now;
use super::{RemoteError, RemoteStore, Version, WriteMode};
use crate::store::layout;
use serde_json::{Value, json};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a lease holds without being renewed.
pub const LEASE_TERM: Duration = Duration::from_secs(300);

/// Why a lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "{holder} holds the {name} lease of this store (renewed {age}s ago; it lapses if not \
         renewed for {term}s): run this again when it is done"
    )]
    Held {
        name: String,
        holder: String,
        age: i64,
        term: u64,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

fn lease_key(name: &str) -> String {
    format!("{}/{}/{name}", layout::META_DIR, layout::LEASES_DIR)
}

/// A held lease; renewed by a thread of its own, removed when dropped.
#[derive(Debug)]
pub struct Lease {
    remote: Arc<RemoteStore>,
    key: String,
    etag: Arc<Mutex<Option<String>>>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease `name` for `what` (shown to whoever finds it held), for `term`.
    pub fn acquire(
        remote: Arc<RemoteStore>,
        name: &str,
        what: &str,
        term: Duration,
    ) -> Result<Lease, LeaseError> {
        let key = lease_key(name);
        let body = json!({
            "host": super::heartbeat::host_name(),
            "pid": std::process::id(),
            "what": what,
            "term": term.as_secs(),
            "taken": unix_now(),
        })
        .to_string()
        .into_bytes();
        let mode = match remote.head(&key) {
            Err(e) if e.is_not_found() => WriteMode::Create,
            Err(e) => return Err(e.into()),
            Ok(info) => {
                let age = unix_now().saturating_sub(info.modified);
                let (holder, held_for) = describe(&remote, &key);
                let held_for = held_for.unwrap_or(term.as_secs());
                if age <= held_for as i64 {
                    return Err(LeaseError::Held {
                        name: name.to_string(),
                        holder,
                        age: age.max(0),
                        term: held_for,
                    });
                }
                log::warn!("taking over the {name} lease of {holder}: not renewed for {age}s");
                WriteMode::Replace(info.version)
            }
        };
        let version = remote.put(&key, body.clone(), mode).map_err(|e| {
            if e.is_conflict() {
                let (holder, _) = describe(&remote, &key);
                LeaseError::Held {
                    name: name.to_string(),
                    holder,
                    age: 0,
                    term: term.as_secs(),
                }
            } else {
                e.into()
            }
        })?;
        let etag = Arc::new(Mutex::new(match version.etag {
            Some(etag) => Some(etag),
            None => remote.head(&key)?.version.etag,
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let (remote, key, etag) = (Arc::clone(&remote), key.clone(), Arc::clone(&etag));
            std::thread::Builder::new()
                .name("ssefs-lease".to_string())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(term / 3) {
                        let mut held = etag.lock().unwrap_or_else(|e| e.into_inner());
                        let over = Version {
                            etag: held.clone(),
                            version: None,
                        };
                        match remote.put(&key, body.clone(), WriteMode::Replace(over)) {
                            Ok(v) => *held = v.etag.or_else(|| held.clone()),
                            Err(e) => log::error!("the lease {key} was not renewed: {e}"),
                        }
                    }
                })
                .ok()
        };
        Ok(Lease {
            remote,
            key,
            etag,
            stop: Some(stop),
            renewer,
        })
    }
}

/// Who holds the lease at `key`, and for how long its holder said it holds.
fn describe(remote: &RemoteStore, key: &str) -> (String, Option<u64>) {
    let Ok((body, _)) = remote.get(key) else {
        return ("another host".to_string(), None);
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return ("another host".to_string(), None);
    };
    let text = |name: &str| doc.get(name).and_then(Value::as_str).unwrap_or("?");
    let pid = doc.get("pid").and_then(Value::as_u64).unwrap_or(0);
    (
        format!("{} pid {pid} ({})", text("host"), text("what")),
        doc.get("term").and_then(Value::as_u64),
    )
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        let held = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Only our own lease is removed (not one another host took over meanwhile).
        match self.remote.head(&self.key) {
            Ok(info) if info.version.etag == held => {
                if let Err(e) = self.remote.delete(&self.key) {
                    log::warn!("the lease {} was not removed (it lapses): {e}", self.key);
                }
            }
            Ok(_) => log::warn!("the lease {} was taken over by another host", self.key),
            Err(_) => {}
        }
    }
}

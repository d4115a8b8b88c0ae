//! A store's objects in an S3-compatible object store: the store URL (`url.rs`), the
//! credentials (`credentials.rs`), the keystore's local working copy (`working_copy.rs`) and
//! `RemoteStore`, a blocking client over the
//! `object_store` crate's `AmazonS3` with its own tokio runtime. The only user of
//! `object_store` in the crate; knows nothing of keys, objects' format or FUSE. Every call is
//! bounded in time: retries with backoff end after `RemoteConfig::retry_timeout`, and each
//! call as a whole after a deadline beyond that, so a dead server gives an error, not a hang.

mod cache;
mod credentials;
mod heartbeat;
mod lease;
mod local_copy;
mod mirror;
mod namespace;
mod refresh;
mod url;
mod working_copy;

pub use cache::RemoteBacking;
pub use credentials::{
    ACCESS_KEY_CREDENTIAL, Credentials, CredentialsError, SECRET_KEY_CREDENTIAL,
    SESSION_TOKEN_CREDENTIAL, find_credentials,
};
pub use heartbeat::{HEARTBEAT_EXPIRY, HEARTBEAT_INTERVAL, Heartbeat, HostBeat, hosts, unix_now};
pub use lease::{LEASE_TERM, Lease, LeaseError};
pub use local_copy::CACHE_ATTR;
pub use mirror::{
    Mirror, MirrorError, MountRecord, PushReport, ReconcileReport, Snapshot, conflicts_here,
    mounted_copy, request_sync,
};
pub use namespace::DIR_MARKER;
pub use url::{Endpoint, S3_SCHEME, StoreUrl, UrlError, is_remote};
pub use working_copy::{WorkingCopy, WorkingCopyError, keystore_key};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};
use std::future::Future;
use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The region assumed when none is given (most S3-compatible servers ignore it).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The part size of multipart uploads (S3 needs at least 5 MiB for every part but the last).
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The smallest part size S3 accepts.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Ranged GETs of one [`RemoteStore::get_ranges`] in flight at once.
const RANGES_IN_FLIGHT: usize = 16;
/// The most keys S3 returns in one LIST page.
pub const MAX_LIST_PAGE: usize = 1000;

/// How to reach a remote store.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub url: StoreUrl,
    pub endpoint: Endpoint,
    pub region: String,
    /// How long a failing request is retried (with exponential backoff) before the error
    /// is returned.
    pub retry_timeout: Duration,
    /// How long one attempt may take (connect, send, receive) before it counts as failed.
    pub request_timeout: Duration,
    /// Bodies larger than this go up as multipart uploads of parts this large.
    pub part_size: usize,
}

impl RemoteConfig {
    /// The defaults for `url` at `endpoint`: region `us-east-1`, retries for 30 s, 30 s per
    /// attempt, 8 MiB parts.
    pub fn new(url: StoreUrl, endpoint: Endpoint) -> RemoteConfig {
        RemoteConfig {
            url,
            endpoint,
            region: DEFAULT_REGION.to_string(),
            retry_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// The longest one call may take: the retries, one more attempt, and a margin.
    fn deadline(&self) -> Duration {
        self.retry_timeout + 2 * self.request_timeout + Duration::from_secs(5)
    }
}

/// What a call to the object store failed with.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{target}: no such object")]
    NotFound { target: String },
    #[error(
        "{target}: {op} refused because the object changed or already exists (a conditional \
         write lost to another writer)"
    )]
    Conflict { op: &'static str, target: String },
    #[error("{op} {target}: the object store at {endpoint} cannot be reached: {detail}")]
    Unreachable {
        op: &'static str,
        target: String,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{op} {target}: the object store denied access ({detail}); check the credentials \
         and the bucket's policy"
    )]
    Denied {
        op: &'static str,
        target: String,
        detail: String,
    },
    #[error("{op} {target}: no answer within {0:?}", deadline)]
    TimedOut {
        op: &'static str,
        target: String,
        deadline: Duration,
    },
    #[error("{op} {target}: {detail}")]
    Other {
        op: &'static str,
        target: String,
        detail: String,
    },
    #[error("{0:?} is not a valid object key in a store")]
    BadKey(String),
    #[error("cannot reach the object store: {0}")]
    Setup(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl RemoteError {
    /// Whether the call was refused by a condition (`If-None-Match`/`If-Match`).
    pub fn is_conflict(&self) -> bool {
        matches!(self, RemoteError::Conflict { .. })
    }

    /// Whether the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RemoteError::NotFound { .. })
    }
}

/// An object's identity at one moment: what `If-Match` compares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    pub etag: Option<String>,
    pub version: Option<String>,
}

impl Version {
    fn from_update(e_tag: Option<String>, version: Option<String>) -> Version {
        Version {
            etag: e_tag,
            version,
        }
    }
}

/// What a HEAD or LIST tells of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key relative to the store.
    pub key: String,
    pub size: u64,
    pub version: Version,
    /// Seconds since the Unix epoch.
    pub modified: i64,
}

/// How a write treats an object already under the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace whatever is there.
    Overwrite,
    /// Only if nothing is there (`If-None-Match: *`), else [`RemoteError::Conflict`].
    Create,
    /// Only if the object is still at this version (`If-Match`), else
    /// [`RemoteError::Conflict`].
    Replace(Version),
}

/// One page of a listing: the objects directly under the listed prefix, the "directories"
/// (common prefixes, relative to the store, without their trailing `/`), and the token of
/// the next page.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub dirs: Vec<String>,
    pub next: Option<String>,
}

/// A blocking client of one remote store: every key it takes is relative to the store's
/// prefix.
pub struct RemoteStore {
    config: RemoteConfig,
    s3: AmazonS3,
    runtime: tokio::runtime::Runtime,
    traffic: Traffic,
}

/// What a client moved: object bytes fetched and uploaded, and the requests that did it.
#[derive(Debug, Default)]
struct Traffic {
    fetched_bytes: AtomicU64,
    fetches: AtomicU64,
    uploaded_bytes: AtomicU64,
    uploads: AtomicU64,
}

/// A snapshot of [`RemoteStore::traffic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrafficSummary {
    pub fetched_bytes: u64,
    pub fetches: u64,
    pub uploaded_bytes: u64,
    pub uploads: u64,
}

impl std::fmt::Display for TrafficSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fetched {} bytes in {} requests, uploaded {} bytes in {} requests",
            self.fetched_bytes, self.fetches, self.uploaded_bytes, self.uploads
        )
    }
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("url", &self.config.url.to_string())
            .field("endpoint", &self.config.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// A client of the store `config` names, signing with `credentials`. Sends nothing yet.
    pub fn connect(config: RemoteConfig, credentials: &Credentials) -> Result<Self, RemoteError> {
        if config.part_size < MIN_PART_SIZE {
            return Err(RemoteError::Setup(format!(
                "part size {} is below the {MIN_PART_SIZE} bytes S3 needs",
                config.part_size
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ssefs-s3")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Setup(format!("cannot start the I/O runtime: {e}")))?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 10,
            retry_timeout: config.retry_timeout,
        };
        let options = ClientOptions::new()
            .with_allow_http(!config.endpoint.is_https())
            .with_timeout(config.request_timeout)
            .with_connect_timeout(config.request_timeout.min(Duration::from_secs(10)));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(config.url.bucket())
            .with_endpoint(config.endpoint.as_str())
            .with_region(&config.region)
            .with_access_key_id(credentials.access_key_id.as_str())
            .with_secret_access_key(credentials.secret_access_key.as_str())
            .with_virtual_hosted_style_request(false)
            .with_allow_http(!config.endpoint.is_https())
            .with_retry(retry)
            .with_client_options(options);
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token.as_str());
        }
        let s3 = builder
            .build()
            .map_err(|e| RemoteError::Setup(e.to_string()))?;
        Ok(RemoteStore {
            config,
            s3,
            runtime,
            traffic: Traffic::default(),
        })
    }

    /// The store this client works on.
    pub fn url(&self) -> &StoreUrl {
        &self.config.url
    }

    /// How this client reaches the store.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The object bytes and requests this client has fetched and uploaded so far.
    pub fn traffic(&self) -> TrafficSummary {
        let t = &self.traffic;
        TrafficSummary {
            fetched_bytes: t.fetched_bytes.load(Ordering::Relaxed),
            fetches: t.fetches.load(Ordering::Relaxed),
            uploaded_bytes: t.uploaded_bytes.load(Ordering::Relaxed),
            uploads: t.uploads.load(Ordering::Relaxed),
        }
    }

    fn count_fetch(&self, bytes: usize) {
        self.traffic.fetches.fetch_add(1, Ordering::Relaxed);
        (self.traffic.fetched_bytes).fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn count_upload(&self, bytes: u64) {
        self.traffic.uploads.fetch_add(1, Ordering::Relaxed);
        (self.traffic.uploaded_bytes).fetch_add(bytes, Ordering::Relaxed);
    }

    /// The whole object under `key` and the version read.
    pub fn get(&self, key: &str) -> Result<(Vec<u8>, Version), RemoteError> {
        let path = self.path(key)?;
        let got = self.run("GET", key, async {
            let got = self.s3.get_opts(&path, GetOptions::default()).await?;
            let version = Version::from_update(got.meta.e_tag.clone(), got.meta.version.clone());
            let bytes = got.bytes().await?;
            Ok((bytes.to_vec(), version))
        })?;
        self.count_fetch(got.0.len());
        Ok(got)
    }

    /// Several ranges of the object under `key`, fetched with ranged GETs in parallel, in
    /// the order given; each range must lie within the object.
    pub fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Vec<u8>>, RemoteError> {
        let path = self.path(key)?;
        let got = self.run("GET (ranges)", key, async {
            let calls = ranges.iter().map(|range| {
                let (path, range) = (&path, range.clone());
                async move {
                    if range.is_empty() {
                        return Ok(Vec::new());
                    }
                    Ok::<_, object_store::Error>(self.s3.get_range(path, range).await?.to_vec())
                }
            });
            let bodies: Vec<Result<Vec<u8>, object_store::Error>> = futures::stream::iter(calls)
                .buffered(RANGES_IN_FLIGHT)
                .collect()
                .await;
            let mut out = Vec::with_capacity(bodies.len());
            for body in bodies {
                out.push(body?);
            }
            Ok(out)
        })?;
        for body in &got {
            self.count_fetch(body.len());
        }
        Ok(got)
    }

    /// `range` of the object under `key` (a ranged GET); the range must lie within the
    /// object.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, RemoteError> {
        let path = self.path(key)?;
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let got = self.run("GET (range)", key, async {
            Ok(self.s3.get_range(&path, range).await?.to_vec())
        })?;
        self.count_fetch(got.len());
        Ok(got)
    }

    /// Whole objects, each named with its size, fetched in parallel; each its own result
    /// (one that fails does not stop the others).
    pub fn get_many(&self, objects: &[(String, u64)]) -> Vec<Result<Vec<u8>, RemoteError>> {
        let calls = objects.iter().map(|(key, size)| {
            let path = self.path(key);
            async move {
                let path = path?;
                if *size == 0 {
                    return Ok(Vec::new());
                }
                let target = format!("{}/{key}", self.config.url);
                match tokio::time::timeout(
                    self.config.deadline(),
                    self.s3.get_range(&path, 0..*size),
                )
                .await
                {
                    Ok(Ok(bytes)) => Ok(bytes.to_vec()),
                    Ok(Err(e)) => Err(self.map_error("GET", target, e)),
                    Err(_) => Err(RemoteError::TimedOut {
                        op: "GET",
                        target,
                        deadline: self.config.deadline(),
                    }),
                }
            }
        });
        let results: Vec<Result<Vec<u8>, RemoteError>> = self.runtime.block_on(
            futures::stream::iter(calls)
                .buffered(RANGES_IN_FLIGHT)
                .collect(),
        );
        for body in results.iter().flatten() {
            self.count_fetch(body.len());
        }
        results
    }

    /// The size and version of the object under `key`.
    pub fn head(&self, key: &str) -> Result<ObjectInfo, RemoteError> {
        let path = self.path(key)?;
        let meta = self.run("HEAD", key, async { Ok(self.s3.head(&path).await?) })?;
        self.info(meta)
    }

    /// Writes `body` under `key` in one PUT, as `mode` says; the new version.
    pub fn put(&self, key: &str, body: Vec<u8>, mode: WriteMode) -> Result<Version, RemoteError> {
        let path = self.path(key)?;
        let mode = match mode {
            WriteMode::Overwrite => PutMode::Overwrite,
            WriteMode::Create => PutMode::Create,
            WriteMode::Replace(v) => PutMode::Update(UpdateVersion {
                e_tag: v.etag,
                version: v.version,
            }),
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let len = body.len() as u64;
        let done = self.run("PUT", key, async {
            let done = self
                .s3
                .put_opts(&path, PutPayload::from(body), options)
                .await?;
            Ok(Version::from_update(done.e_tag, done.version))
        })?;
        self.count_upload(len);
        Ok(done)
    }

    /// Writes everything `body` yields under `key` as a multipart upload of
    /// [`RemoteConfig::part_size`] parts (several in flight), replacing what is there. The
    /// object appears whole or not at all; a failed upload is aborted.
    pub fn put_multipart(&self, key: &str, body: &mut dyn Read) -> Result<Version, RemoteError> {
        let path = self.path(key)?;
        let part_size = self.config.part_size;
        let sent = AtomicU64::new(0);
        let done = self.run("multipart PUT", key, async {
            let upload = self
                .s3
                .put_multipart_opts(&path, PutMultipartOptions::default())
                .await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
            let mut buf = vec![0u8; part_size];
            loop {
                let n = match read_full(body, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(UploadFailure::Read(e));
                    }
                };
                if n == 0 {
                    break;
                }
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
                writer.write(&buf[..n]);
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            let done = writer.finish().await?;
            Ok(Version::from_update(done.e_tag, done.version))
        })?;
        self.count_upload(sent.load(Ordering::Relaxed));
        Ok(done)
    }

    /// Removes the object under `key`; removing a missing object succeeds.
    pub fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let path = self.path(key)?;
        self.run("DELETE", key, async { Ok(self.s3.delete(&path).await?) })
    }

    /// Copies the object `from` to `to` inside the object store (no bytes pass through
    /// here), replacing what is at `to`.
    pub fn copy(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        self.run("COPY", from, async { Ok(self.s3.copy(&src, &dst).await?) })
    }

    /// One page (at most `max_keys`, at most [`MAX_LIST_PAGE`]) of the listing of the
    /// "directory" `dir` (relative to the store; empty for the store's top): the objects
    /// and common prefixes directly under `dir/`. `token` is the previous page's
    /// [`ListPage::next`].
    pub fn list_page(
        &self,
        dir: &str,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, RemoteError> {
        let full = self.config.url.key(dir);
        if !full.is_empty() {
            ObjectPath::parse(&full).map_err(|_| RemoteError::BadKey(dir.to_string()))?;
        }
        let prefix = if full.is_empty() {
            None
        } else {
            Some(format!("{full}/"))
        };
        let options = PaginatedListOptions {
            delimiter: Some("/".into()),
            max_keys: Some(max_keys.clamp(1, MAX_LIST_PAGE)),
            page_token: token,
            ..PaginatedListOptions::default()
        };
        let page = self.run("LIST", dir, async {
            Ok(self.s3.list_paginated(prefix.as_deref(), options).await?)
        })?;
        let objects = page
            .result
            .objects
            .into_iter()
            .map(|meta| self.info(meta))
            .collect::<Result<Vec<_>, _>>()?;
        let dirs = page
            .result
            .common_prefixes
            .into_iter()
            .map(|p| self.relative(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListPage {
            objects,
            dirs,
            next: page.page_token.filter(|t| !t.is_empty()),
        })
    }

    /// The whole listing of `dir`, page after page.
    pub fn list_dir(&self, dir: &str) -> Result<ListPage, RemoteError> {
        let mut all = ListPage::default();
        let mut token = None;
        loop {
            let page = self.list_page(dir, token, MAX_LIST_PAGE)?;
            all.objects.extend(page.objects);
            all.dirs.extend(page.dirs);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Every object key under `dir` at any depth (no delimiter), relative to the store.
    pub fn list_all(&self, dir: &str) -> Result<Vec<ObjectInfo>, RemoteError> {
        let full = self.config.url.key(dir);
        let prefix = if full.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(&full).map_err(|_| RemoteError::BadKey(dir.to_string()))?)
        };
        let metas = self.run("LIST", dir, async {
            let mut stream = self.s3.list(prefix.as_ref());
            let mut metas = Vec::new();
            while let Some(meta) = stream.next().await {
                metas.push(meta?);
            }
            Ok(metas)
        })?;
        metas.into_iter().map(|meta| self.info(meta)).collect()
    }

    fn path(&self, key: &str) -> Result<ObjectPath, RemoteError> {
        if key.is_empty() {
            return Err(RemoteError::BadKey(key.to_string()));
        }
        ObjectPath::parse(self.config.url.key(key))
            .map_err(|_| RemoteError::BadKey(key.to_string()))
    }

    fn relative(&self, full: &str) -> Result<String, RemoteError> {
        self.config
            .url
            .relative(full)
            .map(str::to_string)
            .ok_or_else(|| RemoteError::Other {
                op: "LIST",
                target: self.target(full),
                detail: "the object store returned a key outside the store".to_string(),
            })
    }

    fn info(&self, meta: ObjectMeta) -> Result<ObjectInfo, RemoteError> {
        Ok(ObjectInfo {
            key: self.relative(meta.location.as_ref())?,
            size: meta.size,
            version: Version::from_update(meta.e_tag, meta.version),
            modified: meta.last_modified.timestamp(),
        })
    }

    /// `s3://BUCKET/PREFIX/key`, for messages.
    fn target(&self, key: &str) -> String {
        let url = &self.config.url;
        match url.relative(key) {
            Some(_) => format!("{S3_SCHEME}{}/{key}", url.bucket()),
            None => format!("{url}/{key}"),
        }
    }

    /// Runs `call` on the runtime, bounded by the config's deadline, and maps its error.
    fn run<T>(
        &self,
        op: &'static str,
        key: &str,
        call: impl Future<Output = Result<T, UploadFailure>>,
    ) -> Result<T, RemoteError> {
        let deadline = self.config.deadline();
        let target = format!("{}/{key}", self.config.url);
        match self
            .runtime
            .block_on(async { tokio::time::timeout(deadline, call).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(UploadFailure::Store(e))) => Err(self.map_error(op, target, e)),
            Ok(Err(UploadFailure::Read(e))) => Err(RemoteError::Other {
                op,
                target,
                detail: format!("reading the body to upload: {e}"),
            }),
            Err(_) => Err(RemoteError::TimedOut {
                op,
                target,
                deadline,
            }),
        }
    }

    fn map_error(&self, op: &'static str, target: String, e: object_store::Error) -> RemoteError {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => RemoteError::NotFound { target },
            E::AlreadyExists { .. } | E::Precondition { .. } => {
                RemoteError::Conflict { op, target }
            }
            E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
                RemoteError::Denied {
                    op,
                    target,
                    detail: first_line(&source.to_string()),
                }
            }
            E::Generic { source, .. } if unreachable(source.as_ref()) => RemoteError::Unreachable {
                op,
                target,
                endpoint: self.config.endpoint.to_string(),
                detail: first_line(&source.to_string()),
            },
            other => RemoteError::Other {
                op,
                target,
                detail: first_line(&other.to_string()),
            },
        }
    }
}

/// Why an async call failed: the object store, or reading the body to upload.
enum UploadFailure {
    Store(object_store::Error),
    Read(std::io::Error),
}

impl From<object_store::Error> for UploadFailure {
    fn from(e: object_store::Error) -> Self {
        UploadFailure::Store(e)
    }
}

/// Reads until `buf` is full or the end: how many bytes were read.
fn read_full(body: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match body.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether an error (or one it was caused by) is a failure to connect or a timeout, after
/// object_store's retries gave up.
fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<HttpError>()
            && matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Request
                    | HttpErrorKind::Interrupted
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The first line of a message (object_store's can carry a response body).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut line: String = line.chars().take(400).collect();
    if line.len() < text.len() {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> RemoteStore {
        let url = StoreUrl::parse("s3://bucket/some/prefix").unwrap();
        let endpoint = Endpoint::parse("http://127.0.0.1:9").unwrap();
        let mut config = RemoteConfig::new(url, endpoint);
        config.retry_timeout = Duration::from_millis(300);
        config.request_timeout = Duration::from_secs(1);
        RemoteStore::connect(config, &Credentials::new("id", "secret", "test")).unwrap()
    }

    #[test]
    fn keys_are_checked_and_placed_under_the_prefix() {
        let s = store();
        assert_eq!(s.path("a/b.txt").unwrap().as_ref(), "some/prefix/a/b.txt");
        for bad in ["", "a//b", "a/../b", "/a"] {
            assert!(matches!(s.path(bad), Err(RemoteError::BadKey(_))), "{bad}");
        }
    }

    #[test]
    fn a_closed_port_is_unreachable_within_the_retry_bound() {
        let s = store();
        let started = std::time::Instant::now();
        let err = s.head("x").unwrap_err();
        assert!(matches!(err, RemoteError::Unreachable { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    }

    #[test]
    fn a_part_size_below_the_s3_minimum_is_refused() {
        let url = StoreUrl::parse("s3://bucket").unwrap();
        let endpoint = Endpoint::parse("http://127.0.0.1:9").unwrap();
        let mut config = RemoteConfig::new(url, endpoint);
        config.part_size = 1 << 20;
        let err = RemoteStore::connect(config, &Credentials::new("a", "b", "t")).unwrap_err();
        assert!(err.to_string().contains("part size"), "{err}");
    }

    #[test]
    fn long_messages_keep_their_first_line() {
        assert_eq!(first_line("one\ntwo"), "one…");
        assert_eq!(first_line("one"), "one");
    }
}

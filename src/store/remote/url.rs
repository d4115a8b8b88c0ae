//! The name of a remote store: `s3://BUCKET[/PREFIX]`, parsed and checked once, and the
//! endpoint a store is reached at. Knows nothing of HTTP clients or credentials.

use std::fmt;

/// The scheme of a store in an S3-compatible object store.
pub const S3_SCHEME: &str = "s3://";

/// Whether a store argument names a remote store (starts with `s3://`) rather than a
/// backing directory.
pub fn is_remote(store: &str) -> bool {
    store.starts_with(S3_SCHEME)
}

/// Why a store URL or endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a remote store URL: it must start with s3:// (s3://BUCKET[/PREFIX])")]
    Scheme(String),
    #[error(
        "{url:?}: bad bucket name {bucket:?}: {why} (an S3 bucket name is 3-63 characters of \
         a-z 0-9 . -, starting and ending with a letter or digit)"
    )]
    Bucket {
        url: String,
        bucket: String,
        why: &'static str,
    },
    #[error("{url:?}: bad prefix: {why}")]
    Prefix { url: String, why: &'static str },
    #[error(
        "bad endpoint {0:?}: give the object store's URL, http://HOST[:PORT] or \
         https://HOST[:PORT], with no path, query or credentials"
    )]
    Endpoint(String),
}

/// A parsed `s3://BUCKET[/PREFIX]`: the store's objects are the keys under `PREFIX/` in
/// `BUCKET` (or the whole bucket without a prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreUrl {
    bucket: String,
    /// Without leading or trailing `/`; empty for the whole bucket.
    prefix: String,
}

impl StoreUrl {
    /// Parses `s3://BUCKET[/PREFIX]`; one trailing `/` is allowed.
    pub fn parse(text: &str) -> Result<StoreUrl, UrlError> {
        let rest = text
            .strip_prefix(S3_SCHEME)
            .ok_or_else(|| UrlError::Scheme(text.to_string()))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, prefix.strip_suffix('/').unwrap_or(prefix)),
            None => (rest, ""),
        };
        check_bucket(text, bucket)?;
        check_prefix(text, prefix)?;
        Ok(StoreUrl {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The bucket in the object store.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix of the store, without slashes at either end; empty for a whole bucket.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full object-store key of `key` (relative to the store): `PREFIX/key`.
    pub fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else if key.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `key` (a full object-store key) relative to the store, or `None` if it lies outside.
    pub fn relative<'a>(&self, key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(key);
        }
        key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{S3_SCHEME}{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

fn check_bucket(url: &str, bucket: &str) -> Result<(), UrlError> {
    let bad = |why| UrlError::Bucket {
        url: url.to_string(),
        bucket: bucket.to_string(),
        why,
    };
    if bucket.is_empty() {
        return Err(bad("it is empty"));
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(bad("it must be 3 to 63 characters long"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if !bucket.chars().all(allowed) {
        return Err(bad("it holds a character other than a-z 0-9 . -"));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge(bucket.chars().next()) || !edge(bucket.chars().last()) {
        return Err(bad("it must start and end with a letter or digit"));
    }
    if bucket.contains("..") {
        return Err(bad("it holds two dots in a row"));
    }
    Ok(())
}

fn check_prefix(url: &str, prefix: &str) -> Result<(), UrlError> {
    let bad = |why| UrlError::Prefix {
        url: url.to_string(),
        why,
    };
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > 512 {
        return Err(bad("it is longer than 512 bytes"));
    }
    for part in prefix.split('/') {
        match part {
            "" => return Err(bad("it holds an empty path segment (//)")),
            "." | ".." => return Err(bad("it holds a . or .. segment")),
            _ => {}
        }
        if part.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("it holds a control character or a backslash"));
        }
    }
    Ok(())
}

/// Where the object store answers: `http://HOST[:PORT]` or `https://HOST[:PORT]`. Plain
/// HTTP is allowed only when the endpoint says `http://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    https: bool,
}

impl Endpoint {
    /// Parses an endpoint URL: a scheme, a host and an optional port; no credentials, path
    /// (other than one `/`), query or fragment.
    pub fn parse(text: &str) -> Result<Endpoint, UrlError> {
        let bad = || UrlError::Endpoint(text.to_string());
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        if let Some((host, port)) = authority.rsplit_once(':') {
            let bracketed_v6 = host.starts_with('[') && !host.ends_with(']');
            if !bracketed_v6 && (host.is_empty() || port.parse::<u16>().is_err()) {
                return Err(bad());
            }
        }
        let scheme = if https { "https" } else { "http" };
        Ok(Endpoint {
            url: format!("{scheme}://{authority}"),
            https,
        })
    }

    /// The endpoint URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_into_bucket_and_prefix() {
        let url = StoreUrl::parse("s3://my-bucket/stores/team-a/").unwrap();
        assert_eq!(url.bucket(), "my-bucket");
        assert_eq!(url.prefix(), "stores/team-a");
        assert_eq!(url.to_string(), "s3://my-bucket/stores/team-a");
        assert_eq!(
            url.key(".ssefs/keystore.db"),
            "stores/team-a/.ssefs/keystore.db"
        );
        assert_eq!(url.relative("stores/team-a/x/y"), Some("x/y"));
        assert_eq!(url.relative("stores/team-ab/x"), None);

        let whole = StoreUrl::parse("s3://data.example").unwrap();
        assert_eq!(whole.prefix(), "");
        assert_eq!(whole.key("a/b"), "a/b");
        assert_eq!(whole.to_string(), "s3://data.example");
        assert_eq!(StoreUrl::parse("s3://abc/").unwrap().prefix(), "");
    }

    #[test]
    fn bad_store_urls_say_what_is_wrong() {
        for (text, needle) in [
            ("/srv/store", "must start with s3://"),
            ("S3://bucket", "must start with s3://"),
            ("s3://", "it is empty"),
            ("s3:///prefix", "it is empty"),
            ("s3://ab", "3 to 63"),
            ("s3://Bucket", "a-z 0-9"),
            ("s3://bucket_name", "a-z 0-9"),
            ("s3://-bucket", "start and end"),
            ("s3://bucket./x", "start and end"),
            ("s3://a..b", "two dots"),
            ("s3://bucket/a//b", "empty path segment"),
            ("s3://bucket/a/../b", ". or .."),
            ("s3://bucket/a\nb", "control character"),
        ] {
            let err = StoreUrl::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(is_remote("s3://bucket"));
        assert!(!is_remote("./s3:/bucket"));
    }

    #[test]
    fn endpoints_keep_their_scheme_and_refuse_paths_and_credentials() {
        let plain = Endpoint::parse("http://127.0.0.1:8333/").unwrap();
        assert_eq!(plain.as_str(), "http://127.0.0.1:8333");
        assert!(!plain.is_https());
        let tls = Endpoint::parse("https://oss-cn-hangzhou.aliyuncs.com").unwrap();
        assert!(tls.is_https());
        assert!(Endpoint::parse("http://[::1]:9000").is_ok());
        for bad in [
            "127.0.0.1:8333",
            "ftp://host",
            "http://",
            "http://host/path",
            "http://user:pw@host",
            "http://host:port",
            "http://host:99999",
            "http://host?x=1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}

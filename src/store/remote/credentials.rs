//! Where the object store's credentials come from, the standard ways and never the command
//! line: `$AWS_ACCESS_KEY_ID`/`$AWS_SECRET_ACCESS_KEY` (and `$AWS_SESSION_TOKEN`), the
//! systemd credentials `aws-access-key-id`/`aws-secret-access-key` (and `aws-session-token`)
//! in `$CREDENTIALS_DIRECTORY`, or a profile of the shared credentials file
//! (`$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`; `$AWS_PROFILE`, else
//! `default`). The secret is wiped when dropped and never printed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The systemd credential names (`LoadCredential=NAME:FILE`).
pub const ACCESS_KEY_CREDENTIAL: &str = "aws-access-key-id";
pub const SECRET_KEY_CREDENTIAL: &str = "aws-secret-access-key";
pub const SESSION_TOKEN_CREDENTIAL: &str = "aws-session-token";

/// An access key pair (and session token) for the object store.
pub struct Credentials {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: Zeroizing<String>,
    pub(super) session_token: Option<Zeroizing<String>>,
    /// Where they came from, for messages: never the secret.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A key pair given directly (tests, or a caller that found it elsewhere).
    pub fn new(access_key_id: &str, secret_access_key: &str, source: &str) -> Credentials {
        Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: Zeroizing::new(secret_access_key.to_string()),
            session_token: None,
            source: source.to_string(),
        }
    }

    /// The access key id (not secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no credentials for the object store: set $AWS_ACCESS_KEY_ID and \
         $AWS_SECRET_ACCESS_KEY, give the systemd credentials {ACCESS_KEY_CREDENTIAL} and \
         {SECRET_KEY_CREDENTIAL}, or a profile in ~/.aws/credentials ($AWS_PROFILE)"
    )]
    Missing,
    #[error("{0} is set but {1} is not: give both")]
    Half(String, String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Bad { path: PathBuf, why: String },
    #[error("profile {profile:?} (from $AWS_PROFILE) is not in {}", path.display())]
    NoProfile { profile: String, path: PathBuf },
}

/// The environment, as a lookup (tests pass their own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(name)
        .and_then(|v| v.into_string().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Finds the credentials in the standard places, in the order the module comment gives.
pub fn find_credentials(env: Env<'_>) -> Result<Credentials, CredentialsError> {
    if let Some(found) = from_env(env)? {
        return Ok(found);
    }
    if let Some(dir) = var(env, "CREDENTIALS_DIRECTORY")
        && let Some(found) = from_credentials_dir(Path::new(&dir))?
    {
        return Ok(found);
    }
    from_shared_file(env)?.ok_or(CredentialsError::Missing)
}

fn from_env(env: Env<'_>) -> Result<Option<Credentials>, CredentialsError> {
    let id = var(env, "AWS_ACCESS_KEY_ID");
    let secret = var(env, "AWS_SECRET_ACCESS_KEY").map(Zeroizing::new);
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: var(env, "AWS_SESSION_TOKEN").map(Zeroizing::new),
            source: "$AWS_ACCESS_KEY_ID".to_string(),
        })),
        (Some(_), None) => Err(CredentialsError::Half(
            "$AWS_ACCESS_KEY_ID".into(),
            "$AWS_SECRET_ACCESS_KEY".into(),
        )),
        (None, Some(_)) => Err(CredentialsError::Half(
            "$AWS_SECRET_ACCESS_KEY".into(),
            "$AWS_ACCESS_KEY_ID".into(),
        )),
        (None, None) => Ok(None),
    }
}

/// The contents of a credential file, trimmed; `None` when it does not exist.
fn read_credential(path: &Path) -> Result<Option<Zeroizing<String>>, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(Zeroizing::new(
            Zeroizing::new(text).trim().to_string(),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn from_credentials_dir(dir: &Path) -> Result<Option<Credentials>, CredentialsError> {
    let id = read_credential(&dir.join(ACCESS_KEY_CREDENTIAL))?;
    let secret = read_credential(&dir.join(SECRET_KEY_CREDENTIAL))?;
    match (id, secret) {
        (Some(id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id: id.to_string(),
            secret_access_key,
            session_token: read_credential(&dir.join(SESSION_TOKEN_CREDENTIAL))?,
            source: format!("the systemd credential {ACCESS_KEY_CREDENTIAL}"),
        })),
        (Some(_), None) => Err(CredentialsError::Half(
            format!("the systemd credential {ACCESS_KEY_CREDENTIAL}"),
            format!("the systemd credential {SECRET_KEY_CREDENTIAL}"),
        )),
        (None, Some(_)) => Err(CredentialsError::Half(
            format!("the systemd credential {SECRET_KEY_CREDENTIAL}"),
            format!("the systemd credential {ACCESS_KEY_CREDENTIAL}"),
        )),
        (None, None) => Ok(None),
    }
}

fn from_shared_file(env: Env<'_>) -> Result<Option<Credentials>, CredentialsError> {
    let path = match var(env, "AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => PathBuf::from(path),
        None => match var(env, "HOME") {
            Some(home) => Path::new(&home).join(".aws").join("credentials"),
            None => return Ok(None),
        },
    };
    let named = var(env, "AWS_PROFILE");
    let profile = named.clone().unwrap_or_else(|| "default".to_string());
    let Some(text) = read_credential(&path)? else {
        return match named {
            Some(profile) => Err(CredentialsError::NoProfile { profile, path }),
            None => Ok(None),
        };
    };
    match parse_profile(&text, &profile, &path)? {
        Some(found) => Ok(Some(found)),
        None if named.is_some() => Err(CredentialsError::NoProfile { profile, path }),
        None => Ok(None),
    }
}

/// The keys of `[profile]` in an INI-style shared credentials file.
fn parse_profile(
    text: &str,
    profile: &str,
    path: &Path,
) -> Result<Option<Credentials>, CredentialsError> {
    let mut in_profile = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(Zeroizing::new(value)),
            "aws_session_token" => token = Some(Zeroizing::new(value)),
            _ => {}
        }
    }
    if !found {
        return Ok(None);
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
            source: format!("profile {profile} of {}", path.display()),
        })),
        _ => Err(CredentialsError::Bad {
            path: path.to_path_buf(),
            why: format!(
                "profile {profile} lacks aws_access_key_id or aws_secret_access_key \
                 (ssefs reads only static keys from this file)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).map(OsString::from)
    }

    #[test]
    fn the_environment_comes_first_and_needs_both_halves() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]);
        let found = find_credentials(&env).unwrap();
        assert_eq!(found.access_key_id(), "AKID");
        assert_eq!(found.secret_access_key.as_str(), "secret");
        assert_eq!(
            found.session_token.as_deref().map(String::as_str),
            Some("token")
        );
        assert!(!format!("{found:?}").contains("secret\""), "{found:?}");

        let half = env_of(&[("AWS_ACCESS_KEY_ID", "AKID")]);
        let err = find_credentials(&half).unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
        let none = env_of(&[]);
        assert!(matches!(
            find_credentials(&none),
            Err(CredentialsError::Missing)
        ));
    }

    #[test]
    fn systemd_credentials_are_read_from_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ACCESS_KEY_CREDENTIAL), "AKSYS\n").unwrap();
        std::fs::write(dir.path().join(SECRET_KEY_CREDENTIAL), "s3cr3t\n").unwrap();
        let path = dir.path().to_string_lossy().into_owned();
        let env = env_of(&[("CREDENTIALS_DIRECTORY", &path)]);
        let found = find_credentials(&env).unwrap();
        assert_eq!(found.access_key_id(), "AKSYS");
        assert_eq!(found.secret_access_key.as_str(), "s3cr3t");
        assert!(found.session_token.is_none());
    }

    #[test]
    fn a_profile_of_the_shared_file_is_used_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = d\n\n\
             # a comment\n[work]\naws_access_key_id=AKWORK\naws_secret_access_key=w\n\
             aws_session_token = t\n[broken]\naws_access_key_id = x\n",
        )
        .unwrap();
        let path = file.to_string_lossy().into_owned();
        let default = env_of(&[("AWS_SHARED_CREDENTIALS_FILE", &path)]);
        assert_eq!(find_credentials(&default).unwrap().access_key_id(), "AKDEF");
        let work = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &path),
            ("AWS_PROFILE", "work"),
        ]);
        let found = find_credentials(&work).unwrap();
        assert_eq!(found.access_key_id(), "AKWORK");
        assert!(found.session_token.is_some());
        let missing = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &path),
            ("AWS_PROFILE", "nope"),
        ]);
        assert!(matches!(
            find_credentials(&missing),
            Err(CredentialsError::NoProfile { .. })
        ));
        let broken = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &path),
            ("AWS_PROFILE", "broken"),
        ]);
        assert!(matches!(
            find_credentials(&broken),
            Err(CredentialsError::Bad { .. })
        ));
    }
}

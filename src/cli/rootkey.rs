//! Where a store's root key file is, shared by the commands that need the key: `--root-key`,
//! `$SSEFS_ROOT_KEY_FILE`, a systemd credential, or the per-store file in the user's config
//! directory. Decides paths only; loading and mode checks live in the keystore.

use crate::keystore::{Keystore, KeystoreError, StoreId, keystore_dir};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable naming the root key file.
pub const ROOT_KEY_ENV: &str = "SSEFS_ROOT_KEY_FILE";
/// The credential name for systemd's `LoadCredential=root-key:...`.
pub const ROOT_KEY_CREDENTIAL: &str = "root-key";

/// How the root key path was chosen (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKeyOrigin {
    /// `--root-key FILE`.
    Option,
    /// `$SSEFS_ROOT_KEY_FILE`.
    Environment,
    /// `$CREDENTIALS_DIRECTORY/root-key` (systemd `LoadCredential=`).
    Credential,
    /// `$XDG_CONFIG_HOME/ssefs/keys/<store-id>.key` (or `~/.config/...`).
    ConfigDir,
}

/// A root key path and how it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootKeyLocation {
    pub path: PathBuf,
    pub origin: RootKeyOrigin,
}

/// The root key path of an existing store when `--root-key` is not given: the store id is
/// read from the store's keystore (no key needed) only if the per-store default applies.
pub fn default_root_key_path(store: &Path) -> Result<PathBuf, KeystoreError> {
    Ok(root_key_location(None, store)?.path)
}

/// The root key location of an existing store, `explicit` (`--root-key`) first.
pub fn root_key_location(
    explicit: Option<&Path>,
    store: &Path,
) -> Result<RootKeyLocation, KeystoreError> {
    locate_root_key(explicit, &process_env, || {
        Keystore::read_store_id(&keystore_dir(store))
    })
}

/// The root key location, in order: `explicit`, `$SSEFS_ROOT_KEY_FILE`,
/// `$CREDENTIALS_DIRECTORY/root-key` if that file exists, else
/// `$XDG_CONFIG_HOME/ssefs/keys/<store-id>.key` (`$HOME/.config/...` when `XDG_CONFIG_HOME`
/// is unset or not absolute). Empty variables count as unset. `store_id` is asked for only
/// when the last case applies.
pub fn locate_root_key(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
    store_id: impl FnOnce() -> Result<StoreId, KeystoreError>,
) -> Result<RootKeyLocation, KeystoreError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = explicit {
        return Ok(location(path.to_path_buf(), RootKeyOrigin::Option));
    }
    if let Some(path) = var(ROOT_KEY_ENV) {
        return Ok(location(path, RootKeyOrigin::Environment));
    }
    if let Some(dir) = var("CREDENTIALS_DIRECTORY") {
        let path = dir.join(ROOT_KEY_CREDENTIAL);
        if path.exists() {
            return Ok(location(path, RootKeyOrigin::Credential));
        }
    }
    let config = var("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|home| home.join(".config")))
        .ok_or(KeystoreError::NoRootKeyLocation)?;
    let file = format!("{}.key", store_id()?);
    Ok(location(
        config.join("ssefs").join("keys").join(file),
        RootKeyOrigin::ConfigDir,
    ))
}

fn location(path: PathBuf, origin: RootKeyOrigin) -> RootKeyLocation {
    RootKeyLocation { path, origin }
}

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn id() -> StoreId {
        StoreId::from_bytes([0x11; 16])
    }

    fn never() -> Result<StoreId, KeystoreError> {
        panic!("the store id is not needed here")
    }

    #[test]
    fn explicit_option_wins() {
        let env = env_of(&[(ROOT_KEY_ENV, "/env.key"), ("HOME", "/home/u")]);
        let got = locate_root_key(Some(Path::new("/opt.key")), &env, never).unwrap();
        assert_eq!(got.path, Path::new("/opt.key"));
        assert_eq!(got.origin, RootKeyOrigin::Option);
    }

    #[test]
    fn environment_comes_before_credentials_and_config() {
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("root-key"), [0u8; 32]).unwrap();
        let creds_dir = creds.path().to_str().unwrap();
        let env = env_of(&[
            (ROOT_KEY_ENV, "/env.key"),
            ("CREDENTIALS_DIRECTORY", creds_dir),
            ("HOME", "/home/u"),
        ]);
        let got = locate_root_key(None, &env, never).unwrap();
        assert_eq!(got.path, Path::new("/env.key"));
        assert_eq!(got.origin, RootKeyOrigin::Environment);

        let env = env_of(&[(ROOT_KEY_ENV, ""), ("CREDENTIALS_DIRECTORY", creds_dir)]);
        let got = locate_root_key(None, &env, never).unwrap();
        assert_eq!(got.path, creds.path().join("root-key"));
        assert_eq!(got.origin, RootKeyOrigin::Credential);
    }

    #[test]
    fn a_credentials_directory_without_the_key_falls_through() {
        let creds = tempfile::tempdir().unwrap();
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", "/cfg"),
        ]);
        let got = locate_root_key(None, &env, || Ok(id())).unwrap();
        assert_eq!(
            got.path,
            Path::new("/cfg/ssefs/keys/11111111111111111111111111111111.key")
        );
        assert_eq!(got.origin, RootKeyOrigin::ConfigDir);
    }

    #[test]
    fn home_config_is_used_when_xdg_is_unset_empty_or_relative() {
        for xdg in [None, Some(""), Some("relative/cfg")] {
            let mut pairs = vec![("HOME", "/home/u")];
            if let Some(x) = xdg {
                pairs.push(("XDG_CONFIG_HOME", x));
            }
            let got = locate_root_key(None, &env_of(&pairs), || Ok(id())).unwrap();
            assert_eq!(
                got.path,
                Path::new("/home/u/.config/ssefs/keys/11111111111111111111111111111111.key"),
                "{xdg:?}"
            );
        }
    }

    #[test]
    fn no_home_and_no_xdg_is_a_clear_error() {
        let err = locate_root_key(None, &env_of(&[]), || Ok(id())).unwrap_err();
        assert!(matches!(err, KeystoreError::NoRootKeyLocation), "{err}");
        assert!(err.to_string().contains("--root-key"));
    }
}

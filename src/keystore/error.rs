//! Errors of the keystore layer.

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("wrong root key for this keystore")]
    WrongRootKey,
    #[error("keystore database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

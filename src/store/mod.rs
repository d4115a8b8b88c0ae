//! The backing directory: where objects live as files, `.ssefs/` (keystore, lock, temporary
//! files), atomic create and replace, and the store lock. Knows nothing of FUSE or keys.

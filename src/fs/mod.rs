//! The filesystem core: buckets, inodes, open handles and the SSE policy. Decides every
//! operation; knows nothing of `fuser` (see `fuse.rs`) and is tested without a kernel mount.

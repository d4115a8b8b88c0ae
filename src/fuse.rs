//! The FUSE adapter: the only file that imports `fuser`. It translates kernel requests into
//! calls on `fs::` and `fs::` errors into errnos, and decides nothing itself.

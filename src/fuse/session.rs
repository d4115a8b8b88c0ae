//! The FUSE session: mounting (mount(2) as `fuse.ssefs`, or fusermount3), serving requests
//! on several threads, termination signals, the open-file limit, the readahead window, and
//! unmounting. Knows nothing of the requests themselves (see `adapter.rs`).

use super::adapter::{FuseAdapter, MAX_WRITE};
use crate::fs::BucketFs;
use crate::sys::SignalSet;
use fuser::{Config, MountOption, Session, SessionACL};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Request-serving threads (each with its own cloned `/dev/fuse` descriptor). Eight rather
/// than four: the kernel's asynchronous requests (`RELEASE`, `FORGET`, readahead) then less
/// often keep a synchronous one waiting (extracting a tree: about 12% faster; peak RSS
/// +1 MiB).
const THREADS: usize = 8;

/// Request-serving threads per CPU when the kernel hands requests over through io_uring
/// (one ring entry each: a request goes to a thread that is idle, on its caller's CPU).
/// `/dev/fuse`'s threads stay for `FORGET` and `INTERRUPT`.
const RING_THREADS_PER_CPU: usize = 4;

/// How to mount: the kernel-facing options of `ssefs mount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    /// Shown as the source in `/proc/mounts` (the store path by default).
    pub fsname: String,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    pub auto_unmount: bool,
    pub noexec: bool,
    pub noatime: bool,
    /// Take requests through FUSE over io_uring when the kernel offers it.
    pub io_uring: bool,
}

fn fuser_config(config: &MountConfig) -> Config {
    let mut options = vec![
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("ssefs".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    let flags = [
        (config.default_permissions, MountOption::DefaultPermissions),
        (config.read_only, MountOption::RO),
        (config.auto_unmount, MountOption::AutoUnmount),
        (config.noexec, MountOption::NoExec),
        (config.noatime, MountOption::NoAtime),
    ];
    options.extend(flags.into_iter().filter(|(on, _)| *on).map(|(_, o)| o));
    let mut fuser_config = Config::default();
    fuser_config.mount_options = options;
    fuser_config.acl = if config.allow_other {
        SessionACL::All
    } else if config.allow_root || config.auto_unmount {
        // fusermount's auto_unmount needs an ACL; the daemon runs as root, so
        // "root and owner" admits exactly who the default would.
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    fuser_config.n_threads = Some(THREADS);
    fuser_config.clone_fd = true;
    fuser_config.io_uring_threads = RING_THREADS_PER_CPU;
    fuser_config
}

/// Raises the soft open-file limit to the hard one: every open object holds a backing
/// descriptor. A failure is logged and the mount goes on under the old limit.
pub fn raise_open_file_limit() {
    match crate::sys::raise_open_file_limit() {
        Ok(limit) => log::debug!("open-file limit: {limit:?}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Lets the kernel read ahead as much as one request carries: FUSE mounts start with 128 KiB,
/// which cuts sequential reads into small requests. Needs root; otherwise nothing changes.
fn raise_readahead(mountpoint: &Path) {
    let Some(device) = mount_device(mountpoint) else {
        log::debug!("no mountinfo entry for {}", mountpoint.display());
        return;
    };
    let setting = format!("/sys/class/bdi/{device}/read_ahead_kb");
    if let Err(e) = std::fs::write(&setting, format!("{}", MAX_WRITE / 1024)) {
        log::debug!("cannot raise the readahead ({setting}): {e}");
    }
}

/// The `major:minor` device of the mount at `mountpoint` (the topmost one there).
fn mount_device(mountpoint: &Path) -> Option<String> {
    let mounts = crate::sys::mounts().ok()?;
    mounts
        .into_iter()
        .rev()
        .find(|m| m.mount_point == mountpoint)
        .map(|m| m.device)
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts), so one thread can
/// wait for them with `sigwait`.
fn block_termination_signals() -> io::Result<SignalSet> {
    let set = SignalSet::of(&[libc::SIGINT, libc::SIGTERM]);
    crate::sys::block_signals(&set)?;
    Ok(set)
}

/// Mounts with mount(2) as type `fuse.ssefs` (fuser's own mount says plain `fuse`); `None`
/// when not permitted (not root), so the caller falls back to fusermount3.
fn mount_direct(config: &MountConfig, acl: SessionACL) -> io::Result<Option<OwnedFd>> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    if config.default_permissions {
        data.push_str(",default_permissions");
    }
    if acl != SessionACL::Owner {
        data.push_str(",allow_other");
    }
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    for (on, flag) in [
        (config.read_only, MountFlags::RDONLY),
        (config.noexec, MountFlags::NOEXEC),
        (config.noatime, MountFlags::NOATIME),
    ] {
        if on {
            flags |= flag;
        }
    }
    let data = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    match rustix::mount::mount(
        config.fsname.as_str(),
        &config.mountpoint,
        "fuse.ssefs",
        flags,
        data.as_c_str(),
    ) {
        Ok(()) => Ok(Some(OwnedFd::from(dev))),
        Err(Errno::PERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Ends a mount: a plain unmount, or a lazy one if it is busy.
fn unmount(mountpoint: &Path) {
    if let Err(e) = rustix::mount::unmount(mountpoint, UnmountFlags::empty()) {
        let e = io::Error::from(e);
        log::warn!(
            "unmount failed ({e}); detaching {} lazily",
            mountpoint.display()
        );
        lazy_unmount(mountpoint);
    }
}

/// Mounts `fs` and serves requests until the filesystem is unmounted: by `umount`,
/// `fusermount3 -u`, or SIGTERM/SIGINT (which unmount it, lazily if it is busy).
/// `on_mounted` runs once the kernel has accepted the mount.
pub fn serve(fs: BucketFs, config: &MountConfig, on_mounted: impl FnOnce()) -> io::Result<()> {
    let adapter = FuseAdapter::new(Arc::new(fs)).with_io_uring(config.io_uring);
    let signals = block_termination_signals()?;
    let options = fuser_config(config);
    let direct = if config.auto_unmount {
        None // only fusermount3 can watch the daemon and unmount when it dies
    } else {
        mount_direct(config, options.acl)?
    };
    let mountpoint = config.mountpoint.clone();
    let (session, mut unmounter) = match direct {
        Some(fd) => {
            let acl = options.acl;
            let session = Session::from_fd(adapter, fd, acl, options).inspect_err(|_| {
                lazy_unmount(&config.mountpoint);
            })?;
            (session, None)
        }
        None => {
            let mut session = Session::new(adapter, &config.mountpoint, &options)?;
            let unmounter = session.unmount_callable();
            (session, Some(unmounter))
        }
    };
    raise_readahead(&config.mountpoint);
    on_mounted();
    std::thread::Builder::new()
        .name("ssefs-signals".to_string())
        .spawn(move || {
            let Ok(signal) = crate::sys::wait_for_signal(&signals) else {
                return;
            };
            log::info!(
                "signal {signal} received: unmounting {}",
                mountpoint.display()
            );
            match unmounter.as_mut().map(|u| u.unmount()) {
                None => unmount(&mountpoint),
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    log::warn!(
                        "unmount failed ({e}); detaching {} lazily",
                        mountpoint.display()
                    );
                    lazy_unmount(&mountpoint);
                }
            }
        })?;
    session.run()
}

fn lazy_unmount(mountpoint: &Path) {
    if let Err(e) = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH) {
        log::error!(
            "cannot detach {}: {}",
            mountpoint.display(),
            io::Error::from(e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_carry_the_store_name_and_safety_flags() {
        let config = MountConfig {
            mountpoint: PathBuf::from("/mnt"),
            fsname: "/srv/store".into(),
            allow_other: false,
            allow_root: false,
            default_permissions: true,
            read_only: true,
            auto_unmount: false,
            noexec: false,
            noatime: false,
            io_uring: true,
        };
        let c = fuser_config(&config);
        assert!(
            c.mount_options
                .contains(&MountOption::FSName("/srv/store".into()))
        );
        assert!(
            c.mount_options
                .contains(&MountOption::Subtype("ssefs".into()))
        );
        assert!(c.mount_options.contains(&MountOption::RO));
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(c.mount_options.contains(&MountOption::NoDev));
        assert_eq!(c.acl, SessionACL::Owner);
        assert_eq!(c.n_threads, Some(THREADS));
    }
}

//! mount(8) helper mode: `ssefs STORE MOUNTPOINT [-o OPTIONS]` as run by `mount -t fuse.ssefs`
//! (through `mount.fuse3`, or directly as `/sbin/mount.fuse.ssefs`) and by `/etc/fstab`.
//! Maps the options, then backgrounds: the parent exits 0 only once the mount answers.

use super::mount::MountOptions;
use super::mount_remote::run_any;
use crate::sys::{self, Forked};
use rustix::process::{self, Pid};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Options that only mount(8), `mount.fuse3` or systemd use: accepted and dropped. `dev` and
/// `suid` are added by `mount.fuse3` unless `nodev`/`nosuid` are given; an ssefs mount is
/// always `nodev,nosuid`.
const MOUNT_ONLY_OPTIONS: &[&str] = &[
    "dev", "suid", "user", "nouser", "users", "owner", "group", "nofail", "_netdev", "auto",
    "noauto", "defaults", "async", "silent", "loud",
];

/// The token options of a mount helper line (each `None` when not given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenOptions {
    pub module: Option<PathBuf>,
    pub token: Option<String>,
    pub key: Option<String>,
    pub pin_fd: Option<i32>,
}

/// What the helper was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperArgs {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub root_key: Option<PathBuf>,
    /// `pkcs11_module=`, `pkcs11_token=`, `pkcs11_key=`, `pin_fd=`: a token root of trust.
    pub token: TokenOptions,
    /// The options `ssefs mount -o` understands, mount(8)-only ones removed.
    pub options: Vec<String>,
    /// `-f`: check everything, mount nothing.
    pub fake: bool,
}

/// Whether `args` (with `args[0]` the program name) is a helper invocation: the program is
/// named `mount.*`, or its first argument is neither an option nor one of `subcommands`.
pub fn is_helper_invocation(args: &[OsString], subcommands: &[String]) -> bool {
    let program = args
        .first()
        .map(|p| Path::new(p).file_name().unwrap_or(p).to_string_lossy())
        .unwrap_or_default();
    if program.starts_with("mount.") {
        return true;
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some(first) => !first.starts_with('-') && !subcommands.iter().any(|s| s == first),
        None => args.get(1).is_some(),
    }
}

/// Parses `STORE MOUNTPOINT [-o OPTS]... [-t TYPE] [-n] [-s] [-v] [-f]` (after the program
/// name). `-s` (sloppy) drops unknown options instead of refusing them.
pub fn parse_helper_args(args: &[OsString]) -> Result<HelperArgs, String> {
    let mut positional = Vec::new();
    let mut raw_options = Vec::new();
    let (mut sloppy, mut fake) = (false, false);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-o" => raw_options.push(utf8(next_value(&mut iter, "-o")?)?),
            "-t" => check_type(&next_value(&mut iter, "-t")?.to_string_lossy())?,
            "-n" | "-v" | "-i" => {}
            "-s" => sloppy = true,
            "-f" => fake = true,
            "-N" => return Err("mount namespaces (-N) are not supported".to_string()),
            t if t.starts_with("-o") && t.len() > 2 => raw_options.push(t[2..].to_string()),
            t if t.starts_with('-') && t.len() > 1 => {
                return Err(format!("unknown mount helper argument {t:?}"));
            }
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [store, mountpoint] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| "usage: ssefs STORE MOUNTPOINT [-o OPTIONS]".to_string())?;
    if mountpoint.starts_with("/dev/fd") {
        return Err("a pre-opened /dev/fuse (drop_privileges) is not supported".to_string());
    }
    let (root_key, token, options) = map_options(&raw_options, sloppy)?;
    if root_key.is_some() && token != TokenOptions::default() {
        return Err("root_key= and the pkcs11_* options exclude each other".to_string());
    }
    Ok(HelperArgs {
        store,
        mountpoint,
        root_key,
        token,
        options,
        fake,
    })
}

fn next_value<'a>(
    iter: &mut impl Iterator<Item = &'a OsString>,
    flag: &str,
) -> Result<&'a OsString, String> {
    iter.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn utf8(value: &OsStr) -> Result<String, String> {
    value
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("mount options {value:?} are not UTF-8"))
}

fn check_type(fstype: &str) -> Result<(), String> {
    match fstype {
        "fuse.ssefs" | "ssefs" => Ok(()),
        other => Err(format!(
            "file system type {other:?} is not ssefs (use -t fuse.ssefs)"
        )),
    }
}

/// The value of `name=value`, refused when empty.
fn value_of<'a>(option: &'a str, name: &str, what: &str) -> Result<Option<&'a str>, String> {
    match option
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('='))
    {
        Some("") => Err(format!("{name}= needs {what}")),
        other => Ok(other),
    }
}

/// The options `map_options` found: root key, token options, and the rest for `ssefs mount`.
type MappedOptions = (Option<PathBuf>, TokenOptions, Vec<String>);

/// Splits the comma-separated options into the root key or token options, the options `ssefs
/// mount` takes, and the mount(8)-only options (dropped). Unknown options are errors unless
/// `sloppy`.
fn map_options(raw: &[String], sloppy: bool) -> Result<MappedOptions, String> {
    let mut root_key = None;
    let mut token = TokenOptions::default();
    let mut kept = Vec::new();
    for option in raw.iter().flat_map(|o| o.split(',')) {
        if let Some(path) = value_of(option, "root_key", "a file")? {
            root_key = Some(PathBuf::from(path));
        } else if let Some(module) = value_of(option, "pkcs11_module", "a library")? {
            token.module = Some(PathBuf::from(module));
        } else if let Some(label) = value_of(option, "pkcs11_token", "a token label")? {
            token.token = Some(label.to_string());
        } else if let Some(label) = value_of(option, "pkcs11_key", "a key label")? {
            token.key = Some(label.to_string());
        } else if let Some(fd) = value_of(option, "pin_fd", "a descriptor number")? {
            let fd = fd
                .parse()
                .map_err(|_| format!("pin_fd={fd:?} is not a descriptor number"))?;
            token.pin_fd = Some(fd);
        } else if option.is_empty()
            || MOUNT_ONLY_OPTIONS.contains(&option)
            || option.starts_with("x-")
            || option.starts_with("comment=")
            || option.starts_with("helper=")
        {
            continue;
        } else if MountOptions::parse(&[option]).is_ok() {
            kept.push(option.to_string());
        } else if !sloppy {
            MountOptions::parse(&[option])?;
        }
    }
    MountOptions::parse(&kept)?;
    Ok((root_key, token, kept))
}

/// Runs helper mode and returns the exit status for the caller to exit with.
pub fn run(args: &[OsString]) -> i32 {
    let logger = DaemonLog::install();
    let helper = match parse_helper_args(args).and_then(absolute_paths) {
        Ok(helper) => helper,
        Err(e) => {
            eprintln!("ssefs: {e}");
            return 1;
        }
    };
    if helper.fake {
        return 0;
    }
    let (reader, writer) = match status_pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            eprintln!("ssefs: cannot create a pipe: {e}");
            return 1;
        }
    };
    // The process is still single-threaded (nothing has spawned a thread yet), as fork needs.
    match sys::fork() {
        Err(e) => {
            eprintln!("ssefs: cannot fork: {e}");
            1
        }
        Ok(Forked::Child) => {
            drop(reader);
            serve_in_background(&helper, writer, logger)
        }
        Ok(Forked::Parent(child)) => {
            drop(writer);
            wait_for_child(child, reader)
        }
    }
}

/// The daemon side: new session, mount, and once the mount answers: stdio to /dev/null, logs
/// to syslog, one byte to the parent.
fn serve_in_background(helper: &HelperArgs, writer: File, logger: &'static DaemonLog) -> i32 {
    // The child is not a process group leader, so setsid works.
    let _ = rustix::process::setsid();
    if let Err(e) = std::env::set_current_dir("/") {
        eprintln!("ssefs: cannot change to /: {e}");
        return 1;
    }
    let on_ready = Box::new(move |answered: Result<(), String>| {
        let mut writer = writer;
        match answered {
            Ok(()) => {
                let keep_stderr = logger.detach();
                detach_stdio(keep_stderr);
                let _ = writer.write_all(b"R");
            }
            Err(e) => {
                let _ = writer.write_all(format!("E{e}").as_bytes());
                // The signal thread unmounts.
                let _ = process::kill_process(process::getpid(), process::Signal::TERM);
            }
        }
    });
    let key = super::root_key::KeyArgs {
        root_key: helper.root_key.clone(),
        passphrase_fd: None,
        pkcs11_module: helper.token.module.clone(),
        token_label: helper.token.token.clone(),
        key_label: helper.token.key.clone(),
        pin_fd: helper.token.pin_fd,
    };
    match run_any(
        &helper.store,
        &helper.mountpoint,
        &key,
        &helper.options,
        on_ready,
    ) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// The parent side: `R` means mounted and answering (exit 0); `E...` an error after the mount;
/// end of file means the child exited before mounting (its exit status is ours).
fn wait_for_child(child: Pid, mut reader: File) -> i32 {
    let mut message = Vec::new();
    let read = reader.read_to_end(&mut message);
    match (read, message.split_first()) {
        (_, Some((b'R', _))) => 0,
        (_, Some((b'E', text))) => {
            eprintln!("ssefs: {}", String::from_utf8_lossy(text));
            reap(child);
            1
        }
        _ => match reap(child) {
            0 => {
                eprintln!("ssefs: the daemon exited without mounting");
                1
            }
            code => code,
        },
    }
}

/// Waits for `child` and returns its exit code (1 if it was killed).
fn reap(child: Pid) -> i32 {
    match process::waitpid(Some(child), process::WaitOptions::empty()) {
        Ok(Some((waited, status))) if waited == child => status.exit_status().unwrap_or(1),
        _ => 1,
    }
}

fn absolute_paths(mut helper: HelperArgs) -> Result<HelperArgs, String> {
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|e| format!("cannot resolve {}: {e}", p.display()))
    };
    if !super::remote::names_remote(&helper.store) {
        helper.store = absolute(&helper.store)?;
    }
    helper.mountpoint = absolute(&helper.mountpoint)?;
    helper.root_key = helper.root_key.as_deref().map(absolute).transpose()?;
    helper.token.module = helper.token.module.as_deref().map(absolute).transpose()?;
    Ok(helper)
}

fn status_pipe() -> std::io::Result<(File, File)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((File::from(read), File::from(write)))
}

/// Points stdin and stdout (and stderr unless `keep_stderr`) at /dev/null, so nothing waits
/// on the caller's terminal or pipe once the parent has exited.
fn detach_stdio(keep_stderr: bool) {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let _ = rustix::stdio::dup2_stdin(&null);
    let _ = rustix::stdio::dup2_stdout(&null);
    if !keep_stderr {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// Whether syslog takes messages: something listens on `/dev/log`.
fn syslog_reachable() -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|socket| socket.connect("/dev/log"))
        .is_ok()
}

/// Whether standard error is a pipe: a caller reading it (`$(mount ...)`) would wait for
/// the daemon to exit if the daemon kept it.
fn stderr_is_pipe() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.file_type().is_fifo())
}

/// The daemon's logger: to stderr until the daemon detaches, then to syslog (facility daemon),
/// or, where syslog is unreachable (no `/dev/log`), still to stderr (the journal under
/// systemd) unless that is a pipe. The level comes from `RUST_LOG` (`error` .. `trace`); by
/// default warnings and errors go to stderr before detaching (a successful mount prints
/// nothing) and `info` and above after it.
pub struct DaemonLog {
    detached: AtomicBool,
    /// Detached without syslog: everything at `level` goes to stderr.
    to_stderr: AtomicBool,
    stderr_level: log::LevelFilter,
    level: log::LevelFilter,
}

impl DaemonLog {
    fn install() -> &'static DaemonLog {
        let chosen: Option<log::LevelFilter> =
            std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok());
        let level = chosen.unwrap_or(log::LevelFilter::Info);
        let logger: &'static DaemonLog = Box::leak(Box::new(DaemonLog {
            detached: AtomicBool::new(false),
            to_stderr: AtomicBool::new(false),
            stderr_level: chosen.unwrap_or(log::LevelFilter::Warn),
            level,
        }));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(level);
        }
        logger
    }

    /// Switches to the daemon's log; returns whether stderr stays its log (syslog is
    /// unreachable).
    fn detach(&self) -> bool {
        if syslog_reachable() {
            sys::open_syslog();
            self.detached.store(true, Ordering::SeqCst);
            return false;
        }
        if stderr_is_pipe() {
            log::info!(
                "syslog is unreachable (no /dev/log) and standard error is a pipe: the \
                 daemon's messages from now on are lost"
            );
            self.detached.store(true, Ordering::SeqCst);
            return false;
        }
        self.to_stderr.store(true, Ordering::SeqCst);
        self.detached.store(true, Ordering::SeqCst);
        true
    }
}

impl log::Log for DaemonLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if self.to_stderr.load(Ordering::SeqCst) {
            eprintln!(
                "ssefs[{}]: {}: {message}",
                std::process::id(),
                record.level()
            );
            return;
        }
        if !self.detached.load(Ordering::SeqCst) {
            if record.level() <= self.stderr_level {
                eprintln!("ssefs: {}: {message}", record.level());
            }
            return;
        }
        let priority = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
        };
        let Ok(text) = std::ffi::CString::new(message.replace('\0', " ")) else {
            return;
        };
        sys::syslog(priority, &text);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn subcommands() -> Vec<String> {
        ["init", "mount", "fsck", "help"].map(String::from).to_vec()
    }

    #[test]
    fn helper_invocations_are_told_from_subcommands() {
        let subs = subcommands();
        assert!(is_helper_invocation(
            &os(&["ssefs", "/srv/s", "/mnt"]),
            &subs
        ));
        assert!(is_helper_invocation(
            &os(&["/sbin/mount.fuse.ssefs", "mount", "/mnt"]),
            &subs
        ));
        assert!(!is_helper_invocation(
            &os(&["ssefs", "mount", "a", "b"]),
            &subs
        ));
        assert!(!is_helper_invocation(&os(&["ssefs", "--help"]), &subs));
        assert!(!is_helper_invocation(&os(&["ssefs"]), &subs));
    }

    #[test]
    fn mount_fuse3_arguments_map_to_mount_options() {
        let got = parse_helper_args(&os(&[
            "/srv/store",
            "/srv/data",
            "-o",
            "rw,root_key=/etc/ssefs/keys/data.key,default_sse=KMS,nofail,_netdev,dev,suid",
        ]))
        .unwrap();
        assert_eq!(got.store, Path::new("/srv/store"));
        assert_eq!(got.mountpoint, Path::new("/srv/data"));
        assert_eq!(
            got.root_key.as_deref(),
            Some(Path::new("/etc/ssefs/keys/data.key"))
        );
        assert_eq!(got.options, ["rw", "default_sse=KMS"]);
        assert!(!got.fake);
    }

    #[test]
    fn direct_helper_arguments_with_flags_and_type() {
        let got = parse_helper_args(&os(&[
            "-n",
            "/s",
            "-t",
            "fuse.ssefs",
            "/m",
            "-oro,allow_other,x-systemd.automount,comment=x",
            "-f",
        ]))
        .unwrap();
        assert_eq!(got.options, ["ro", "allow_other"]);
        assert!(got.fake && got.root_key.is_none());
    }

    #[test]
    fn bad_helper_arguments_are_refused() {
        for bad in [
            &["/s"][..],
            &["/s", "/m", "/extra"],
            &["/s", "/m", "-o"],
            &["/s", "/m", "-o", "bogus"],
            &["/s", "/m", "-o", "root_key="],
            &["/s", "/m", "-t", "fuse.sshfs"],
            &["/s", "/m", "-N", "/proc/1/ns/mnt"],
            &["/s", "/dev/fd/3"],
            &["/s", "/m", "-q"],
        ] {
            assert!(parse_helper_args(&os(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_options_name_the_root_of_trust() {
        let got = parse_helper_args(&os(&[
            "/s",
            "/m",
            "-o",
            "pkcs11_module=/usr/lib/softhsm/libsofthsm2.so,pkcs11_token=ssefs,pkcs11_key=root,\
             pin_fd=7,allow_other",
        ]))
        .unwrap();
        assert_eq!(
            got.token,
            TokenOptions {
                module: Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")),
                token: Some("ssefs".into()),
                key: Some("root".into()),
                pin_fd: Some(7),
            }
        );
        assert_eq!(got.options, ["allow_other"]);
        assert!(got.root_key.is_none());
        for bad in [
            "pkcs11_module=",
            "pkcs11_token=",
            "pkcs11_key=",
            "pin_fd=x",
            "root_key=/k,pkcs11_token=t",
        ] {
            assert!(
                parse_helper_args(&os(&["/s", "/m", "-o", bad])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn sloppy_drops_unknown_options() {
        let got = parse_helper_args(&os(&["/s", "/m", "-s", "-o", "bogus,noexec"])).unwrap();
        assert_eq!(got.options, ["noexec"]);
    }
}

//! FUSE over io_uring (Linux 6.14 and later, `CONFIG_FUSE_IO_URING`, and the `fuse` module
//! parameter `enable_uring` set by root).
//!
//! Once the INIT reply carries `FUSE_OVER_IO_URING`, the kernel keeps one request queue per
//! possible CPU and puts a process's request on the queue of the CPU the process runs on.
//! Each queue here is served by a few threads pinned to that CPU, each with a ring of its own
//! and one ring entry: a request is handed to a thread that is idle (an entry is available only
//! while its thread waits), on the CPU where the caller just went to sleep, so neither the
//! request nor its reply needs a wake-up across CPUs. `/dev/fuse` stays open and its threads
//! keep serving what the kernel still sends there: `FORGET`, `INTERRUPT`, and everything when
//! the ring cannot be set up.
//!
//! The protocol (`fs/fuse/dev_uring.c`): every entry registers two buffers with
//! `FUSE_IO_URING_CMD_REGISTER`, a header (`struct fuse_uring_req_header`) and a payload as
//! large as the largest request. A request arrives as a completion: `fuse_in_header` in the
//! header's `in_out`, the operation's own header (its first argument) in `op_in`, the other
//! arguments in the payload. The reply goes back the same way (`fuse_out_header` in `in_out`,
//! every reply argument in the payload) with `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also
//! waits for the next request.
//!
//! The payload buffer sits at a fixed offset in a larger allocation, so the in-header and the
//! operation header can be copied just in front of it and the request parsed in place as if it
//! had been read from `/dev/fuse` (a write's data is not copied).

use std::alloc::Layout;
use std::alloc::alloc_zeroed;
use std::alloc::dealloc;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::thread::JoinHandle;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::info;
use log::warn;
use nix::unistd::Uid;

use crate::Filesystem;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll;
use crate::ll::fuse_abi as abi;
use crate::reply::ReplyEmpty;
use crate::reply::ReplyTo;
use crate::request::RequestWithSender;
use crate::session::FilesystemHolder;
use crate::session::SessionACL;
use crate::session::SessionEventLoop;

/// `enum fuse_uring_cmd` in `include/uapi/linux/fuse.h`.
const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;

/// `FUSE_URING_IN_OUT_HEADER_SZ` and `FUSE_URING_OP_IN_OUT_SZ`.
const IN_OUT_SIZE: usize = 128;
const OP_IN_SIZE: usize = 128;

const IN_HEADER: usize = size_of::<abi::fuse_in_header>();
const OUT_HEADER: usize = size_of::<abi::fuse_out_header>();

/// Room in front of the payload for the in-header and the largest operation header.
const PREFIX: usize = IN_HEADER + OP_IN_SIZE;

/// `struct fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(Clone, Copy)]
struct EntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_req_header`.
#[repr(C)]
struct ReqHeader {
    in_out: [u8; IN_OUT_SIZE],
    op_in: [u8; OP_IN_SIZE],
    ent: EntInOut,
}

/// `struct fuse_uring_cmd_req`, the command area of the 128-byte submission entry.
#[repr(C)]
struct CmdReq {
    flags: u64,
    commit_id: u64,
    qid: u16,
    padding: [u8; 6],
}

/// What the session needs to start the rings, learnt during INIT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UringSetup {
    /// The payload buffer's size: at least the kernel's `max_payload_sz`.
    pub(crate) payload_size: usize,
}

impl UringSetup {
    /// The kernel's `max_payload_sz`, from what INIT negotiated: the largest of 8 KiB, the
    /// largest write and the largest request in pages.
    pub(crate) fn new(max_write: u32, max_pages: u16) -> Self {
        let page = page_size::get();
        let payload_size = 8192
            .max(max_write as usize)
            .max(usize::from(max_pages) * page);
        Self { payload_size }
    }
}

/// Whether this process can set up a ring of 128-byte entries (io_uring may be disabled by
/// `kernel.io_uring_disabled`, a seccomp filter or a container runtime). Asked before INIT
/// promises the kernel a ring: a connection that was promised one and never gets it would
/// hold every request back.
pub(crate) fn available() -> bool {
    match IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2) {
        Ok(_) => true,
        Err(e) => {
            warn!("io_uring is not available ({e}); FUSE requests go through /dev/fuse");
            false
        }
    }
}

/// The CPUs the kernel keeps a queue for: one per possible CPU.
pub(crate) fn queue_count() -> io::Result<usize> {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(possible.trim())
        .map(|highest| highest + 1)
        .ok_or_else(|| io::Error::other(format!("unexpected CPU list {possible:?}")))
}

/// The highest CPU number in a list such as `0-3,8-11`.
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut highest = None;
    for part in list.split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        highest = Some(highest.map_or(n, |h: usize| h.max(n)));
    }
    highest
}

/// One allocation, zeroed and aligned, freed on drop.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(size: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(size, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(Self { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A ring entry's two buffers. The kernel writes them between a submission and its
/// completion; this side touches them only in between, through raw pointers.
struct Buffers {
    header: Region,
    /// `PREFIX` bytes, then the payload buffer the kernel knows.
    area: Region,
    payload_size: usize,
}

// SAFETY: the regions are plain memory; who may touch them when is the entry's protocol
// (the kernel between submission and completion, the request's one reply in between).
unsafe impl Send for Buffers {}
unsafe impl Sync for Buffers {}

impl Buffers {
    fn new(payload_size: usize) -> io::Result<Self> {
        Ok(Self {
            header: Region::new(size_of::<ReqHeader>())?,
            area: Region::new(PREFIX + payload_size)?,
            payload_size,
        })
    }

    fn header(&self) -> *mut ReqHeader {
        self.header.ptr.cast()
    }

    fn payload(&self) -> *mut u8 {
        // SAFETY: the area is PREFIX + payload_size bytes long.
        unsafe { self.area.ptr.add(PREFIX) }
    }
}

/// The reply to the request an entry holds, as its replier left it.
#[derive(Default)]
struct ReplyState {
    replied: bool,
    /// The ring's thread waits for the reply: only then does the replier wake it (a
    /// reply from the ring's own thread, the usual case, costs no futex call).
    waiting: bool,
    /// The reply's arguments go straight to the payload buffer when the request had no
    /// payload of its own; otherwise they wait here until the request is done with its bytes.
    direct: bool,
    staged: Vec<u8>,
    payload_len: usize,
}

struct Entry {
    buffers: Buffers,
    reply: Mutex<ReplyState>,
    replied: Condvar,
}

/// Sends the reply to one ring request: into the entry's buffers, for the ring's thread to
/// commit. Replies may come from any thread; the ring's thread waits for it.
#[derive(Clone)]
pub(crate) struct UringSender {
    entry: Arc<Entry>,
    /// `/dev/fuse`, for what does not go through the ring (backing files for passthrough).
    pub(crate) channel: ChannelSender,
}

impl std::fmt::Debug for UringSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSender").finish_non_exhaustive()
    }
}

impl UringSender {
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = data.iter().map(|s| s.len()).sum();
        let mut state = self
            .entry
            .reply
            .lock()
            .map_err(|_| io::Error::other("ring entry lock poisoned"))?;
        if state.replied {
            return Err(io::Error::other("second reply to one ring request"));
        }
        let buffers = &self.entry.buffers;
        let result = if total < OUT_HEADER || total - OUT_HEADER > buffers.payload_size {
            // Cannot be carried: tell the kernel the request failed rather than leave the
            // caller waiting.
            let mut header = [0u8; OUT_HEADER];
            gather(data, 0, &mut header[..OUT_HEADER.min(total)]);
            let error = abi::fuse_out_header {
                len: OUT_HEADER as u32,
                error: -libc::EIO,
                unique: u64::from_ne_bytes(header[8..16].try_into().unwrap_or_default()),
            };
            // SAFETY: the entry is ours until committed; in_out holds 128 bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&raw const error).cast::<u8>(),
                    (*buffers.header()).in_out.as_mut_ptr(),
                    OUT_HEADER,
                );
            }
            state.payload_len = 0;
            Err(io::Error::other(format!(
                "reply of {total} bytes does not fit the ring's {} byte buffer",
                buffers.payload_size
            )))
        } else {
            let mut header = [0u8; OUT_HEADER];
            gather(data, 0, &mut header);
            // SAFETY: as above.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    header.as_ptr(),
                    (*buffers.header()).in_out.as_mut_ptr(),
                    OUT_HEADER,
                );
            }
            let len = total - OUT_HEADER;
            if state.direct {
                // SAFETY: len fits the payload buffer (checked above), which no request
                // bytes occupy.
                let out = unsafe { std::slice::from_raw_parts_mut(buffers.payload(), len) };
                gather(data, OUT_HEADER, out);
            } else {
                let mut staged = std::mem::take(&mut state.staged);
                staged.clear();
                staged.resize(len, 0);
                gather(data, OUT_HEADER, &mut staged);
                state.staged = staged;
            }
            state.payload_len = len;
            Ok(())
        };
        state.replied = true;
        if state.waiting {
            self.entry.replied.notify_one();
        }
        result
    }
}

impl UringSender {
    /// A reply of at most `len` bytes written in place by `fill` (`ReplyData::data_with`):
    /// straight into the entry's payload buffer when no request bytes live there.
    pub(crate) fn send_filled(
        &self,
        unique: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, ll::Errno>,
    ) -> io::Result<()> {
        let buffers = &self.entry.buffers;
        let mut state = self
            .entry
            .reply
            .lock()
            .map_err(|_| io::Error::other("ring entry lock poisoned"))?;
        if state.replied {
            return Err(io::Error::other("second reply to one ring request"));
        }
        if !state.direct || len > buffers.payload_size {
            drop(state);
            let mut buf = vec![0u8; len];
            return match fill(&mut buf) {
                Ok(n) => {
                    let n = n.min(len);
                    let header = out_header(unique, 0, n);
                    self.send(&[IoSlice::new(&header), IoSlice::new(&buf[..n])])
                }
                Err(errno) => {
                    let header = out_header(unique, -i32::from(errno), 0);
                    self.send(&[IoSlice::new(&header)])
                }
            };
        }
        // SAFETY: in direct mode the payload buffer holds no request bytes, and len fits it;
        // the entry is ours until committed.
        let out = unsafe { std::slice::from_raw_parts_mut(buffers.payload(), len) };
        let header = match fill(out) {
            Ok(n) => {
                let n = n.min(len);
                state.payload_len = n;
                out_header(unique, 0, n)
            }
            Err(errno) => {
                state.payload_len = 0;
                out_header(unique, -i32::from(errno), 0)
            }
        };
        // SAFETY: as above; in_out holds 128 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                header.as_ptr(),
                (*buffers.header()).in_out.as_mut_ptr(),
                OUT_HEADER,
            );
        }
        state.replied = true;
        if state.waiting {
            self.entry.replied.notify_one();
        }
        Ok(())
    }
}

/// A `fuse_out_header` as bytes.
fn out_header(unique: u64, error: i32, payload: usize) -> [u8; OUT_HEADER] {
    let mut bytes = [0u8; OUT_HEADER];
    bytes[0..4].copy_from_slice(&((OUT_HEADER + payload) as u32).to_ne_bytes());
    bytes[4..8].copy_from_slice(&error.to_ne_bytes());
    bytes[8..16].copy_from_slice(&unique.to_ne_bytes());
    bytes
}

/// Copies the bytes of `data` from offset `skip` on into `out` (as many as it holds).
fn gather(data: &[IoSlice<'_>], mut skip: usize, out: &mut [u8]) {
    let mut at = 0;
    for slice in data {
        if at == out.len() {
            break;
        }
        let bytes: &[u8] = slice;
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        let bytes = &bytes[skip..];
        skip = 0;
        let n = bytes.len().min(out.len() - at);
        out[at..at + n].copy_from_slice(&bytes[..n]);
        at += n;
    }
}

/// A ring thread's CPU affinity: pinned to its queue's CPU, and widened to every CPU the
/// process may use while it serves a large read or write, whose decryption or encryption would
/// otherwise share one CPU with the other requests of a single reader's readahead (a cold
/// sequential read lost a fifth of its speed pinned).
struct Affinity {
    own: Option<libc::cpu_set_t>,
    wide: Option<libc::cpu_set_t>,
    widened: bool,
}

/// Requests at least this large may run on any CPU.
const WIDE_REQUEST: usize = 64 * 1024;

impl Affinity {
    /// Pins the calling thread to `cpu`; a CPU that is offline (or not ours) leaves it free.
    fn pin(cpu: usize) -> Self {
        let mut this = Affinity {
            own: None,
            wide: None,
            widened: false,
        };
        if cpu >= libc::CPU_SETSIZE as usize {
            return this;
        }
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for
        // cpu < CPU_SETSIZE; the calls get the set's true size.
        unsafe {
            let mut wide: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut wide) != 0 {
                return this;
            }
            let mut own: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut own);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &own) != 0 {
                debug!(
                    "ring thread for CPU {cpu} left unpinned: {}",
                    io::Error::last_os_error()
                );
                return this;
            }
            this.own = Some(own);
            this.wide = Some(wide);
        }
        this
    }

    fn set(set: &libc::cpu_set_t) {
        // SAFETY: a valid set of its true size.
        unsafe {
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set);
        }
    }

    /// Lets the thread run anywhere while it serves a request of `size` bytes, if that is large.
    fn widen_for(&mut self, size: usize) {
        if size >= WIDE_REQUEST
            && let Some(wide) = &self.wide
        {
            Self::set(wide);
            self.widened = true;
        }
    }

    /// Back on the queue's CPU.
    fn narrow(&mut self) {
        if self.widened
            && let Some(own) = &self.own
        {
            Self::set(own);
            self.widened = false;
        }
    }
}

/// The bytes a request moves: a read's size or a write's payload; 0 for anything else.
fn request_size(in_header: &[u8; IN_HEADER], op_in: &[u8], payload_len: usize) -> usize {
    let opcode = u32::from_ne_bytes(in_header[4..8].try_into().unwrap_or_default());
    if opcode == abi::fuse_opcode::FUSE_WRITE as u32 {
        payload_len
    } else if opcode == abi::fuse_opcode::FUSE_READ as u32 && op_in.len() >= 20 {
        // fuse_read_in: fh (8 bytes), offset (8), size (4), ...
        u32::from_ne_bytes(op_in[16..20].try_into().unwrap_or_default()) as usize
    } else {
        0
    }
}

type Ring = IoUring<squeue::Entry128, cqueue::Entry>;

fn new_ring() -> io::Result<Ring> {
    // One issuer, and completions' task work run when this thread waits: the cheapest way for
    // the kernel to hand a request over (Linux 6.1 and later).
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4)
        .or_else(|_| IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(4))
}

/// A `FUSE_IO_URING_CMD_*` submission for queue `qid`.
fn command(
    fd: RawFd,
    op: u32,
    qid: u16,
    commit_id: u64,
    iov: &[libc::iovec; 2],
) -> squeue::Entry128 {
    let req = CmdReq {
        flags: 0,
        commit_id,
        qid,
        padding: [0; 6],
    };
    let mut cmd = [0u8; 80];
    // SAFETY: CmdReq is 24 bytes of plain data.
    let bytes =
        unsafe { std::slice::from_raw_parts((&raw const req).cast::<u8>(), size_of::<CmdReq>()) };
    cmd[..bytes.len()].copy_from_slice(bytes);
    let entry = opcode::UringCmd80::new(types::Fd(fd), op)
        .cmd(cmd)
        .addr(Some(iov.as_ptr() as u64))
        .build()
        .user_data(u64::from(qid));
    with_len(entry, 2)
}

/// Sets `sqe->len` (the number of iovecs), which the io-uring crate's `UringCmd80` leaves 0.
fn with_len(entry: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: Entry128 is repr(C): the 64-byte `io_uring_sqe` then 64 bytes of command;
    // `len` is the u32 at byte 24 of the sqe (after opcode, flags, ioprio, fd, off, addr).
    unsafe {
        let mut raw: [u8; 128] = std::mem::transmute(entry);
        raw[24..28].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
    }
}

fn push(ring: &mut Ring, entry: &squeue::Entry128) -> io::Result<()> {
    // SAFETY: the buffers the entry points at (the iovecs and the regions they name) live as
    // long as the thread's loop, past every completion.
    if unsafe { ring.submission().push(entry) }.is_err() {
        ring.submit()?;
        // SAFETY: as above.
        unsafe { ring.submission().push(entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    Ok(())
}

/// Starts `per_queue` threads (0: 2) for every CPU queue and waits until each has registered
/// its entry. If any cannot, the kernel is told to serve the connection through `/dev/fuse`
/// instead (a registration it refuses turns the ring off), since a queue without entries would
/// hold its CPU's requests back for ever.
pub(crate) fn start<FS: Filesystem>(
    threads: &mut Vec<JoinHandle<io::Result<()>>>,
    filesystem: &Arc<FilesystemHolder<FS>>,
    channel: &Channel,
    allowed: SessionACL,
    session_owner: Uid,
    setup: UringSetup,
    per_queue: usize,
) -> io::Result<()> {
    let per_queue = if per_queue == 0 { 2 } else { per_queue };
    let queues = match queue_count() {
        Ok(n) if n <= usize::from(u16::MAX) => n,
        Ok(n) => {
            warn!("{n} CPU queues are more than a ring can name; using /dev/fuse");
            return refuse(channel);
        }
        Err(e) => {
            warn!("cannot count the CPUs ({e}); using /dev/fuse");
            return refuse(channel);
        }
    };
    let (tx, rx) = mpsc::channel();
    let mut spawned = 0;
    let mut failure: Option<io::Error> = None;
    'queues: for qid in 0..queues {
        for t in 0..per_queue {
            let se = SessionEventLoop {
                thread_name: format!("fuser-ring-{qid}-{t}"),
                ch: channel.clone(),
                filesystem: filesystem.clone(),
                allowed,
                session_owner,
            };
            let tx = tx.clone();
            let qid = qid as u16;
            let spawn = thread::Builder::new()
                .name(se.thread_name.clone())
                .spawn(move || {
                    let fd = se.ch.as_fd().as_raw_fd();
                    serve(&se, fd, qid, setup, tx)
                });
            match spawn {
                Ok(handle) => {
                    threads.push(handle);
                    spawned += 1;
                }
                Err(e) => {
                    failure = Some(e);
                    break 'queues;
                }
            }
        }
    }
    drop(tx);
    for _ in 0..spawned {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => break,
        }
    }
    match failure {
        None => {
            info!("FUSE over io_uring: {queues} CPU queues, {per_queue} threads each");
            Ok(())
        }
        Some(e) => {
            warn!("FUSE over io_uring not started ({e}); using /dev/fuse");
            refuse(channel)
        }
    }
}

/// Sends a registration the kernel refuses (one iovec instead of two), which makes it serve
/// the connection through `/dev/fuse` (`fuse_uring_cmd()` clears `fc->io_uring`).
fn refuse(channel: &Channel) -> io::Result<()> {
    let mut ring = new_ring()?;
    let iov = [
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
    ];
    let fd = channel.as_fd().as_raw_fd();
    let entry = with_len(command(fd, FUSE_IO_URING_CMD_REGISTER, 0, 0, &iov), 1);
    push(&mut ring, &entry)?;
    ring.submit_and_wait(1)?;
    match ring.completion().next() {
        Some(cqe) if cqe.result() < 0 => Ok(()),
        _ => Err(io::Error::other(
            "the kernel took a malformed ring registration",
        )),
    }
}

/// How a ring thread ended.
enum Outcome {
    /// The connection ended (unmount or abort).
    Ended,
    /// The kernel refused the registration: it serves this connection through `/dev/fuse`.
    Refused(i32),
}

/// Serves one entry of queue `qid` until the connection ends. `started` hears once the
/// registration was submitted (or why it could not be).
pub(crate) fn serve<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    dev_fd: RawFd,
    qid: u16,
    setup: UringSetup,
    started: mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    let mut affinity = Affinity::pin(usize::from(qid));
    let prepared = new_ring().and_then(|ring| Ok((ring, Buffers::new(setup.payload_size)?)));
    let (mut ring, buffers) = match prepared {
        Ok(x) => x,
        Err(e) => {
            let _ = started.send(Err(io::Error::new(
                e.kind(),
                format!("cannot set up the ring of CPU {qid}: {e}"),
            )));
            return Ok(());
        }
    };
    let entry = Arc::new(Entry {
        buffers,
        reply: Mutex::new(ReplyState::default()),
        replied: Condvar::new(),
    });
    let iov = [
        libc::iovec {
            iov_base: entry.buffers.header().cast(),
            iov_len: size_of::<ReqHeader>(),
        },
        libc::iovec {
            iov_base: entry.buffers.payload().cast(),
            iov_len: entry.buffers.payload_size,
        },
    ];
    let register = command(dev_fd, FUSE_IO_URING_CMD_REGISTER, qid, 0, &iov);
    if let Err(e) = push(&mut ring, &register).and_then(|()| ring.submit().map(|_| ())) {
        let _ = started.send(Err(e));
        return Ok(());
    }
    let _ = started.send(Ok(()));
    match run_entry(se, &mut ring, &entry, dev_fd, qid, &iov, &mut affinity)? {
        Outcome::Ended => debug!("ring of CPU {qid}: connection ended"),
        Outcome::Refused(errno) => warn!(
            "ring of CPU {qid} refused by the kernel ({}); requests go through /dev/fuse",
            io::Error::from_raw_os_error(errno)
        ),
    }
    Ok(())
}

fn run_entry<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    ring: &mut Ring,
    entry: &Arc<Entry>,
    dev_fd: RawFd,
    qid: u16,
    iov: &[libc::iovec; 2],
    affinity: &mut Affinity,
) -> io::Result<Outcome> {
    let mut scratch: Vec<u64> = Vec::new();
    let mut registered = false;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let Some(cqe) = ring.completion().next() else {
            continue;
        };
        let res = cqe.result();
        if res < 0 {
            let errno = -res;
            return Ok(match errno {
                libc::ENOTCONN | libc::ECANCELED | libc::ENODEV | libc::ECONNABORTED => {
                    Outcome::Ended
                }
                _ if !registered => Outcome::Refused(errno),
                _ => {
                    error!(
                        "ring of CPU {qid}: {}; its entry is lost",
                        io::Error::from_raw_os_error(errno)
                    );
                    Outcome::Ended
                }
            });
        }
        registered = true;
        let commit_id = handle(se, entry, &mut scratch, affinity);
        affinity.narrow();
        let commit = command(
            dev_fd,
            FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
            qid,
            commit_id,
            iov,
        );
        push(ring, &commit)?;
    }
}

/// Parses and dispatches the request an entry holds, waits for its reply, and leaves the
/// reply in the entry's buffers. Returns the commit id.
fn handle<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    entry: &Arc<Entry>,
    scratch: &mut Vec<u64>,
    affinity: &mut Affinity,
) -> u64 {
    let buffers = &entry.buffers;
    let header = buffers.header();
    // SAFETY: the kernel is done with the entry until it is committed.
    let (in_header, ent) = unsafe {
        let mut in_header = [0u8; IN_HEADER];
        std::ptr::copy_nonoverlapping((*header).in_out.as_ptr(), in_header.as_mut_ptr(), IN_HEADER);
        (in_header, (*header).ent)
    };
    let commit_id = ent.commit_id;
    let payload_len = ent.payload_sz as usize;
    let len = u32::from_ne_bytes(in_header[0..4].try_into().unwrap_or_default()) as usize;
    let unique = u64::from_ne_bytes(in_header[8..16].try_into().unwrap_or_default());
    {
        let Ok(mut state) = entry.reply.lock() else {
            return commit_id;
        };
        state.replied = false;
        state.waiting = false;
        state.direct = payload_len == 0;
        state.payload_len = 0;
    }
    let sender = UringSender {
        entry: entry.clone(),
        channel: se.ch.sender(),
    };
    let op_len = len.checked_sub(IN_HEADER + payload_len);
    match op_len {
        Some(op_len) if op_len <= OP_IN_SIZE && payload_len <= buffers.payload_size => {
            let start = PREFIX - op_len - IN_HEADER;
            // SAFETY: start + IN_HEADER + op_len == PREFIX, inside the area; the op header
            // comes from the header region, a different allocation.
            let data: &[u8] = unsafe {
                let area = buffers.area.ptr;
                std::ptr::copy_nonoverlapping(in_header.as_ptr(), area.add(start), IN_HEADER);
                std::ptr::copy_nonoverlapping(
                    (*header).op_in.as_ptr(),
                    area.add(start + IN_HEADER),
                    op_len,
                );
                std::slice::from_raw_parts(area.add(start), len)
            };
            // SAFETY: op_len <= OP_IN_SIZE bytes of the header region, ours until committed.
            let op_in = unsafe { std::slice::from_raw_parts((*header).op_in.as_ptr(), op_len) };
            affinity.widen_for(request_size(&in_header, op_in, payload_len));
            let data = if start % align_of::<abi::fuse_in_header>() == 0 {
                data
            } else {
                // An operation header of odd size: parse an aligned copy.
                scratch.clear();
                scratch.resize(len.div_ceil(8), 0);
                // SAFETY: scratch holds at least len bytes.
                let copy = unsafe {
                    std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<u8>(), len)
                };
                copy.copy_from_slice(data);
                // The request no longer lives in the payload buffer: reply straight into it.
                if let Ok(mut state) = entry.reply.lock() {
                    state.direct = true;
                }
                copy
            };
            dispatch(se, ReplyTo::Uring(sender.clone()), data, unique, &sender);
        }
        _ => {
            error!("malformed ring request: length {len}, payload {payload_len}");
            reply_error(&sender, unique, ll::Errno::EIO);
        }
    }
    finish(entry);
    commit_id
}

fn dispatch<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    to: ReplyTo,
    data: &[u8],
    unique: u64,
    sender: &UringSender,
) {
    match RequestWithSender::new(to, data) {
        Some(req) => {
            if let Ok(ll::Operation::Destroy(_)) = req.request.operation() {
                req.reply::<ReplyEmpty>().ok();
            } else {
                req.dispatch(se);
            }
        }
        None => reply_error(sender, unique, ll::Errno::EIO),
    }
}

fn reply_error(sender: &UringSender, unique: u64, errno: ll::Errno) {
    let header = abi::fuse_out_header {
        len: OUT_HEADER as u32,
        error: -i32::from(errno),
        unique,
    };
    // SAFETY: fuse_out_header is 16 bytes of plain data.
    let bytes = unsafe { std::slice::from_raw_parts((&raw const header).cast::<u8>(), OUT_HEADER) };
    if let Err(e) = sender.send(&[IoSlice::new(bytes)]) {
        error!("cannot reply to ring request {unique}: {e}");
    }
}

/// Waits for the request's reply and puts its arguments where the kernel reads them.
fn finish(entry: &Entry) {
    let Ok(mut state) = entry.reply.lock() else {
        return;
    };
    while !state.replied {
        state.waiting = true;
        state = match entry.replied.wait(state) {
            Ok(s) => s,
            Err(_) => return,
        };
    }
    state.waiting = false;
    let buffers = &entry.buffers;
    if !state.direct && state.payload_len > 0 {
        // SAFETY: the request is done with its bytes; payload_len fits (checked by send).
        unsafe {
            std::ptr::copy_nonoverlapping(
                state.staged.as_ptr(),
                buffers.payload(),
                state.payload_len,
            );
        }
    }
    // SAFETY: the entry is ours until committed.
    unsafe {
        (*buffers.header()).ent.payload_sz = state.payload_len as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(0));
        assert_eq!(parse_cpu_list("0-1"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(11));
        assert_eq!(parse_cpu_list("0,2,5"), Some(5));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(size_of::<EntInOut>(), 32);
        assert_eq!(size_of::<ReqHeader>(), 288);
        assert_eq!(size_of::<CmdReq>(), 24);
        assert_eq!(IN_HEADER, 40);
        assert_eq!(OUT_HEADER, 16);
        assert_eq!(PREFIX % 8, 0);
    }

    #[test]
    fn gather_skips_and_fills() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5];
        let data = [IoSlice::new(&a), IoSlice::new(&b)];
        let mut out = [0u8; 3];
        gather(&data, 2, &mut out);
        assert_eq!(out, [3, 4, 5]);
        let mut out = [0u8; 2];
        gather(&data, 0, &mut out);
        assert_eq!(out, [1, 2]);
    }
}

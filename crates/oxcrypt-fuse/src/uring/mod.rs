//! The FUSE-over-io_uring transport (Linux ≥ 6.14, `enable_uring=Y`): the kernel hands
//! requests to one queue per possible CPU through `IORING_OP_URING_CMD` on `/dev/fuse`, and
//! one COMMIT_AND_FETCH sends a reply and takes the next request. See
//! `../shared/fuse-over-io-uring.md` and `kernel-notes/` for the ABI and what was measured.
//!
//! This module owns the connection from the start (no fuser): it mounts with `mount(2)`,
//! answers INIT itself, builds every queue **before** the INIT reply (a negotiated but
//! unregistered queue would block every request of its CPU), and advertises
//! `FUSE_OVER_IO_URING` only when all of them are ready. `/dev/fuse` stays read by one thread
//! for FORGET and INTERRUPT; when the kernel does not offer the flag, or refuses a REGISTER
//! (it then falls back by itself), that loop serves every request, with more threads. Both
//! paths decode with [`crate::wire`] and call the same transport-neutral operations.

mod buf;
mod queue;

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::ops::Fs;
use crate::wire::{self, init, op, Dispatcher, InitIn, OpCounts, Outcome, Request};
use queue::{BlockingPool, Queue, QueueEnd, QueueShared};

/// The module parameter that gates the transport.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// `max_write` (and each entry's payload buffer): 1 MiB, what `max_pages` allows by default.
pub const MAX_WRITE: u32 = 1 << 20;

/// Settings of the transport.
#[derive(Debug, Clone)]
pub struct UringOptions {
    /// Ring entries per queue (requests of one CPU served at once).
    pub depth: usize,
    /// Threads reading `/dev/fuse` when it serves every request (fallback).
    pub fallback_threads: usize,
    /// Mount read-only.
    pub read_only: bool,
    /// `allow_other`.
    pub allow_other: bool,
    /// INIT flags to ask for besides the transport's own (readdirplus, writeback cache).
    pub want: u64,
    /// Insist on the ring: fail the mount if the kernel does not offer it.
    pub required: bool,
}

/// Why the ring cannot be had on this machine, checked before mounting; `None`: it can.
pub fn unavailable_reason() -> Option<String> {
    match std::fs::read_to_string(ENABLE_URING) {
        Err(_) => return Some(
            "this kernel has no FUSE-over-io_uring (Linux 6.14 or later with CONFIG_FUSE_IO_URING)"
                .into(),
        ),
        Ok(v) if v.trim() != "Y" => {
            return Some(format!(
                "FUSE-over-io_uring is off ({ENABLE_URING} is N; as root: echo Y > {ENABLE_URING})"
            ))
        }
        Ok(_) => {}
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the io_uring transport mounts with mount(2), which needs root".into());
    }
    if let Err(e) =
        io_uring::IoUring::<io_uring::squeue::Entry128, io_uring::cqueue::Entry>::builder().build(2)
    {
        return Some(format!(
            "io_uring with 128-byte SQEs cannot be set up ({e}; kernel.io_uring_disabled or a seccomp filter?)"
        ));
    }
    None
}

/// The number of possible CPUs, which is the number of queues the kernel expects.
pub fn possible_cpus() -> usize {
    let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/possible") else {
        return std::thread::available_parallelism().map_or(1, |n| n.get());
    };
    s.trim()
        .split(',')
        .filter_map(|r| match r.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1),
            None => r.parse::<usize>().ok().map(|_| 1),
        })
        .sum::<usize>()
        .max(1)
}

/// Counters that prove which path served what.
#[derive(Default)]
pub struct Stats {
    /// Requests read from `/dev/fuse` after INIT, by opcode.
    pub dev_fuse: OpCounts,
    /// Requests served by each queue.
    queues: Vec<Arc<QueueShared>>,
    /// Whether the ring was negotiated.
    pub ring: AtomicBool,
}

impl Stats {
    /// Requests served by each queue.
    pub fn per_queue(&self) -> Vec<u64> {
        self.queues
            .iter()
            .map(|q| q.served.load(Ordering::Relaxed))
            .collect()
    }

    /// One line per counter, for `--stats`.
    pub fn report(&self) -> String {
        let mut s = format!(
            "transport: {}\n",
            if self.ring.load(Ordering::Relaxed) {
                "io_uring"
            } else {
                "/dev/fuse (own loop)"
            }
        );
        for (q, shared) in self.queues.iter().enumerate() {
            s += &format!(
                "queue {q}: {} requests ({} handed to the blocking pool)\n",
                shared.served.load(Ordering::Relaxed),
                shared.offloaded.load(Ordering::Relaxed)
            );
        }
        let seen = self.dev_fuse.seen();
        s += &format!("/dev/fuse after INIT: {} requests", self.dev_fuse.total());
        for (name, n) in seen {
            s += &format!(" {name}={n}");
        }
        s
    }
}

/// A mounted connection, INIT answered, ready to serve.
pub struct UringSession {
    fuse: Arc<File>,
    dispatcher: Arc<Dispatcher>,
    queues: Vec<Queue>,
    fallback_threads: usize,
    stats: Arc<Stats>,
}

fn mount_data(fd: i32, options: &UringOptions) -> String {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data =
        format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions");
    if options.allow_other {
        data += ",allow_other";
    }
    data
}

/// Mounts `fs` at `mountpoint` over a new `/dev/fuse` connection and answers INIT: with the
/// ring when the kernel offers it and every queue could be built, otherwise without.
pub fn mount(
    fs: Arc<Fs>,
    mountpoint: &Path,
    options: &UringOptions,
) -> std::io::Result<UringSession> {
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let data = CString::new(mount_data(fuse.as_raw_fd(), options))?;
    let target = CString::new(mountpoint.as_os_str().as_bytes())?;
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    if options.read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: NUL-terminated strings that live across the call.
    let r = unsafe {
        libc::mount(
            c"oxcrypt".as_ptr(),
            target.as_ptr(),
            c"fuse.oxcrypt".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fuse = Arc::new(fuse);
    let unmount_on_error = |e: std::io::Error| {
        let _ = unmount(mountpoint);
        e
    };
    let dispatcher = Arc::new(Dispatcher::new(fs));
    let (queues, stats) = answer_init(&fuse, options).map_err(unmount_on_error)?;
    Ok(UringSession {
        fuse,
        dispatcher,
        queues,
        fallback_threads: options.fallback_threads.max(1),
        stats,
    })
}

/// Unmounts `mountpoint` (lazily if it is busy).
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    let c = CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EBUSY) {
        return Err(e);
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn write_reply(fuse: &File, buf: &[u8]) {
    // SAFETY: writing an initialised buffer to our descriptor; /dev/fuse takes a reply in one
    // write.
    let r = unsafe { libc::write(fuse.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // ENOENT: the request was interrupted and is gone; not an error of ours.
        if e.raw_os_error() != Some(libc::ENOENT) {
            tracing::debug!(error = %e, "reply to /dev/fuse failed");
        }
    }
}

/// Writes notifications to the connection's `/dev/fuse` (the kernel refuses them on the ring).
pub struct DevFuseNotifier(Arc<File>);

impl DevFuseNotifier {
    fn write(&self, b: &[u8]) -> std::io::Result<()> {
        // SAFETY: writing an initialised buffer to our descriptor; one write is one message.
        let r = unsafe { libc::write(self.0.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl crate::notify::KernelNotifier for DevFuseNotifier {
    fn inval_entry(&self, parent: u64, name: &str) -> std::io::Result<()> {
        self.write(&wire::notify_inval_entry(parent, name.as_bytes()))
    }

    fn inval_inode(&self, ino: u64) -> std::io::Result<()> {
        self.write(&wire::notify_inval_inode(ino))
    }
}

/// Reads INIT, builds the queues if the kernel offers the ring, and replies.
fn answer_init(fuse: &File, options: &UringOptions) -> std::io::Result<(Vec<Queue>, Arc<Stats>)> {
    let mut buf = buf::PageBuf::new(MAX_WRITE as usize + 4096)?;
    let n = loop {
        match (&*fuse).read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let req = Request::from_dev(&buf[..n])
        .filter(|r| r.opcode == op::INIT)
        .ok_or_else(|| std::io::Error::other("the kernel's first request was not INIT"))?;
    let unique = req.unique;
    let init_in = InitIn::parse(req.arg);
    if init_in.major != 7 || init_in.minor < 31 {
        let mut out = [0u8; 16];
        wire::out_header(&mut out, unique, libc::EPROTO, 0);
        write_reply(fuse, &out);
        return Err(std::io::Error::other(format!(
            "FUSE protocol {}.{} is too old (7.31 or later needed)",
            init_in.major, init_in.minor
        )));
    }
    let offered = init_in.flags;
    let mut flags = init::ASYNC_READ
        | init::BIG_WRITES
        | init::PARALLEL_DIROPS
        | init::MAX_PAGES
        | init::INIT_EXT
        | options.want;
    let mut queues = Vec::new();
    let mut stats = Stats::default();
    if offered & init::OVER_IO_URING != 0 {
        let nr = possible_cpus();
        // Enough threads that every entry of every queue could wait on the disk at once
        // would be nr × depth; two per CPU keep the disk busy without a crowd of threads.
        let built: std::io::Result<Vec<Queue>> = BlockingPool::start(nr * 2).and_then(|pool| {
            (0..nr)
                .map(|q| {
                    Queue::new(
                        q as u16,
                        fuse.as_raw_fd(),
                        options.depth.max(1),
                        MAX_WRITE as usize,
                        pool.clone(),
                    )
                })
                .collect()
        });
        match built {
            Ok(q) => {
                stats.queues = q.iter().map(|q| q.shared()).collect();
                queues = q;
                flags |= init::OVER_IO_URING;
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring queues could not be built; serving over /dev/fuse")
            }
        }
    } else {
        tracing::info!(
            "the kernel does not offer FUSE-over-io_uring on this connection; serving over /dev/fuse"
        );
    }
    if queues.is_empty() && options.required {
        let mut out = [0u8; 16];
        wire::out_header(&mut out, unique, libc::EPROTO, 0);
        write_reply(fuse, &out);
        return Err(std::io::Error::other(
            "--transport uring: the kernel did not offer FUSE-over-io_uring on this connection",
        ));
    }
    let flags = flags & (offered | init::INIT_EXT);
    stats
        .ring
        .store(flags & init::OVER_IO_URING != 0, Ordering::Relaxed);
    let mut out = [0u8; 16 + 64];
    let len = wire::put_init_out(
        &mut out[16..],
        flags,
        init_in.max_readahead.min(1 << 20),
        MAX_WRITE,
    );
    wire::out_header(&mut out, unique, 0, len);
    write_reply(fuse, &out[..16 + len]);
    Ok((queues, Arc::new(stats)))
}

impl UringSession {
    /// A writer of notifications to this connection.
    pub fn notifier(&self) -> DevFuseNotifier {
        DevFuseNotifier(self.fuse.clone())
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until unmounted: the queue threads and the `/dev/fuse` reader(s).
    pub fn serve(self) -> std::io::Result<()> {
        let ring = !self.queues.is_empty();
        let readers = if ring { 1 } else { self.fallback_threads };
        let mut threads: Vec<_> = (0..readers)
            .map(|i| spawn_reader(i, &self.fuse, &self.dispatcher, &self.stats))
            .collect::<std::io::Result<_>>()?;
        let fallback_started = Arc::new(AtomicBool::new(false));
        for (qid, q) in self.queues.into_iter().enumerate() {
            let (fuse, d, stats) = (
                self.fuse.clone(),
                self.dispatcher.clone(),
                self.stats.clone(),
            );
            let extra = self.fallback_threads;
            let started = fallback_started.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("oxcrypt-ring-{qid}"))
                    .spawn(move || {
                        if let QueueEnd::Refused(errno) = q.run(&d) {
                            // The kernel went back to /dev/fuse for every request: read it
                            // with as many threads as the fallback has (the first queue to
                            // see the refusal says so and starts them).
                            stats.ring.store(false, Ordering::Relaxed);
                            if !started.swap(true, Ordering::Relaxed) {
                                tracing::warn!(
                                    errno,
                                    "a ring REGISTER was refused; serving over /dev/fuse"
                                );
                                let more: Vec<_> = (1..extra)
                                    .filter_map(|i| spawn_reader(i, &fuse, &d, &stats).ok())
                                    .collect();
                                for t in more {
                                    let _ = t.join();
                                }
                            }
                        }
                    })?,
            );
        }
        for t in threads {
            let _ = t.join();
        }
        self.dispatcher.fs().shutdown();
        Ok(())
    }
}

fn spawn_reader(
    i: usize,
    fuse: &Arc<File>,
    d: &Arc<Dispatcher>,
    stats: &Arc<Stats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (fuse, d, s) = (fuse.clone(), d.clone(), stats.clone());
    std::thread::Builder::new()
        .name(format!("oxcrypt-dev-{i}"))
        .spawn(move || read_loop(&fuse, &d, &s))
}

/// Reads and answers requests from `/dev/fuse` until the connection ends (ENODEV).
fn read_loop(fuse: &Arc<File>, d: &Dispatcher, stats: &Stats) {
    let (mut buf, mut out) = match (
        buf::PageBuf::new(MAX_WRITE as usize + 4096),
        buf::PageBuf::new(MAX_WRITE as usize + 16),
    ) {
        (Ok(b), Ok(o)) => (b, o),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "no buffer for a /dev/fuse reader");
            return;
        }
    };
    loop {
        let n = match (&**fuse).read(&mut buf) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                Some(libc::ENODEV) => return,
                _ => {
                    tracing::error!(error = %e, "reading /dev/fuse failed");
                    return;
                }
            },
        };
        let Some(req) = Request::from_dev(&buf[..n]) else {
            continue;
        };
        stats.dev_fuse.add(req.opcode);
        let forget = matches!(req.opcode, op::FORGET | op::BATCH_FORGET);
        let unique = req.unique;
        let mut defer = || -> crate::ops::Completion {
            let f = fuse.clone();
            Box::new(move |r: crate::ops::OpResult<()>| {
                let mut o = [0u8; 16];
                wire::out_header(&mut o, unique, r.err().map_or(0, |e| e.code()), 0);
                write_reply(&f, &o);
            })
        };
        match d.handle(&req, &mut out[16..], &mut defer) {
            Outcome::Reply { error, len } => {
                let len = if error == 0 { len } else { 0 };
                wire::out_header(&mut out[..16], unique, error, len);
                write_reply(fuse, &out[..16 + len]);
            }
            Outcome::None | Outcome::Deferred => {}
        }
        // While the ring serves requests, this thread sees little but FORGETs, one per
        // dropped inode (an unlink, an evicted dentry): each would wake it. Waiting a moment
        // after one lets the kernel gather the next ones into a BATCH_FORGET, one wake-up for
        // many. Nothing waits for a FORGET.
        if forget && stats.ring.load(Ordering::Relaxed) {
            std::thread::sleep(FORGET_GATHER);
        }
    }
}

/// How long the `/dev/fuse` reader lets FORGETs gather while the ring is up.
const FORGET_GATHER: std::time::Duration = std::time::Duration::from_millis(5);

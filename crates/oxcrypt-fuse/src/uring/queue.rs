//! One FUSE-over-io_uring queue: a thread with its own ring of 128-byte SQEs and `depth`
//! ring entries (a 288-byte header buffer and a payload buffer each) through which the
//! kernel hands it the requests issued on its CPU.
//!
//! The loop: wait for completions; a completed REGISTER or COMMIT_AND_FETCH means the entry
//! holds a request: decode it, call the operation, write the reply into the same entry and
//! submit COMMIT_AND_FETCH (the reply and the wait for the next request in one command).
//! READ, READDIR and READLINK write their reply straight into the payload buffer (READ
//! decrypts into it); requests that carry a payload (WRITE, names) reply through a small
//! scratch buffer, so that input and output never alias. FSYNC completes on a worker: the
//! worker queues `(entry, result)` here and writes the queue's eventfd, whose read is armed in
//! the same ring, so only this thread ever touches its submission queue.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::buf::PageBuf;
use crate::ops::{Completion, OpResult};
use crate::wire::{self, Dispatcher, Outcome, Request, IN_HEADER_LEN, OUT_HEADER_LEN};

/// `FUSE_IO_URING_CMD_REGISTER`.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Size of `struct fuse_uring_req_header`.
const REQ_HEADER_LEN: usize = 288;
/// Offset of `op_in` in the header buffer.
const OP_IN_AT: usize = 128;
/// Offset of `ring_ent_in_out.commit_id`.
const COMMIT_ID_AT: usize = 264;
/// Offset of `ring_ent_in_out.payload_sz`.
const PAYLOAD_SZ_AT: usize = 272;
/// user_data of the eventfd read.
const EVENT_TAG: u64 = u64::MAX;
/// READs from this size up are decrypted in the blocking pool (`OXCRYPT_RING_OFFLOAD_READ_KIB`
/// overrides it, for measurements).
const OFFLOAD_READ_MIN: u32 = 256 * 1024;
/// Replies of requests that carry a payload are at most an entry and an open reply.
const SCRATCH_LEN: usize = 4096;

/// In debug builds, `OXCRYPT_TEST_REFUSE_REGISTER=1` registers payload buffers smaller than
/// the kernel's minimum, so that it refuses every REGISTER and falls back to `/dev/fuse`: how
/// the tests reach that path.
fn refuse_register_for_tests() -> bool {
    cfg!(debug_assertions) && std::env::var_os("OXCRYPT_TEST_REFUSE_REGISTER").is_some()
}

/// Pins the calling thread to `cpu`, the CPU whose requests its queue serves (libfuse does
/// the same); a failure (a cpuset without that CPU) only costs speed.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get a valid set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(cpu, "could not pin the ring thread");
        }
    }
}

/// What other threads share with a queue: finished deferred requests and the eventfd that
/// wakes the queue for them.
pub struct QueueShared {
    finished: Mutex<Vec<(u16, i32, usize)>>,
    event: OwnedFd,
    /// Requests this queue served.
    pub served: AtomicU64,
    /// Of those, requests handed to the blocking pool.
    pub offloaded: AtomicU64,
}

impl QueueShared {
    fn push(&self, entry: u16, error: i32, len: usize) {
        self.finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((entry, error, len));
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                self.event.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// The completion of a deferred request; answers EIO if dropped without being called (a
/// panicking operation), so the entry is never lost.
struct Deferred {
    shared: Arc<QueueShared>,
    entry: u16,
    done: bool,
}

impl Deferred {
    fn finish(mut self, r: OpResult<()>) {
        self.done = true;
        self.shared
            .push(self.entry, r.err().map_or(0, |e| e.code()), 0);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.done {
            self.shared.push(self.entry, libc::EIO, 0);
        }
    }
}

/// The two iovecs a REGISTER hands the kernel: header and payload buffer of one entry.
struct Iovecs([libc::iovec; 2]);

// SAFETY: the pointers point into buffers owned by the same `RingEntry`, which moves between
// threads as a whole (a queue is built on the mounting thread, then run on its own).
unsafe impl Send for Iovecs {}

/// One ring entry's buffers. They stay put (boxed) for the life of the ring: the kernel
/// keeps their addresses.
struct RingEntry {
    header: PageBuf,
    payload: PageBuf,
    iov: Box<Iovecs>,
    /// Between a request's arrival and its reply's commit.
    busy: bool,
    /// Ended by the kernel (unmount, abort) or by a failure.
    ended: bool,
}

/// A queue, built before the INIT reply so that a failure can still keep io_uring off.
pub struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    entries: Vec<RingEntry>,
    shared: Arc<QueueShared>,
    scratch: Vec<u8>,
    event_buf: Box<u64>,
    /// Where requests that would block go.
    pool: Arc<BlockingPool>,
    /// READs of this many bytes or more are decrypted in the pool.
    offload_read_min: u32,
    /// Pin the thread to its CPU (`OXCRYPT_RING_NOPIN` turns it off, for measurements).
    pin: bool,
}

/// How a queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEnd {
    /// Unmounted or aborted: every entry ended with ENOTCONN.
    Unmounted,
    /// A REGISTER was refused: the kernel went back to `/dev/fuse` for every request.
    Refused(i32),
}

impl Queue {
    /// Sets up queue `qid` on the connection `fuse_fd`: the ring, `/dev/fuse` as its fixed
    /// file 0, the eventfd, and `depth` entries with `payload_len`-byte payload buffers.
    pub fn new(
        qid: u16,
        fuse_fd: RawFd,
        depth: usize,
        payload_len: usize,
        pool: Arc<BlockingPool>,
    ) -> std::io::Result<Queue> {
        let sqes = (depth as u32 + 1).next_power_of_two();
        let ring: IoUring<squeue::Entry128, cqueue::Entry> =
            IoUring::builder().setup_cqsize(sqes * 2).build(sqes)?;
        ring.submitter().register_files(&[fuse_fd])?;
        // SAFETY: plain syscall; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created and own.
        let event = unsafe { OwnedFd::from_raw_fd(efd) };
        let mut entries = Vec::with_capacity(depth);
        for _ in 0..depth {
            let mut header = PageBuf::new(4096)?;
            let mut payload = PageBuf::new(payload_len)?;
            let iov = Box::new(Iovecs([
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: REQ_HEADER_LEN,
                },
                libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: if refuse_register_for_tests() {
                        4096
                    } else {
                        payload_len
                    },
                },
            ]));
            entries.push(RingEntry {
                header,
                payload,
                iov,
                busy: false,
                ended: false,
            });
        }
        Ok(Queue {
            qid,
            ring,
            entries,
            shared: Arc::new(QueueShared {
                finished: Mutex::new(Vec::new()),
                event,
                served: AtomicU64::new(0),
                offloaded: AtomicU64::new(0),
            }),
            scratch: vec![0u8; SCRATCH_LEN],
            event_buf: Box::new(0),
            pool,
            offload_read_min: std::env::var("OXCRYPT_RING_OFFLOAD_READ_KIB")
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .map_or(OFFLOAD_READ_MIN, |k| k.saturating_mul(1024)),
            pin: std::env::var_os("OXCRYPT_RING_NOPIN").is_none(),
        })
    }

    /// What other threads see of this queue.
    pub fn shared(&self) -> Arc<QueueShared> {
        self.shared.clone()
    }

    fn cmd(&self, op: u32, commit_id: u64, entry: usize) -> squeue::Entry128 {
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        opcode::UringCmd80::new(types::Fixed(0), op)
            .cmd(cmd)
            .build()
            .user_data(entry as u64)
    }

    fn register_sqe(&self, entry: usize) -> squeue::Entry128 {
        let mut sqe = self.cmd(CMD_REGISTER, 0, entry);
        let iov = self.entries[entry].iov.0.as_ptr();
        // SAFETY: `sqe` is a 128-byte io_uring_sqe; `addr` (u64) sits at byte 16 and `len`
        // (u32) at byte 24, which the io-uring crate's UringCmd80 builder cannot set. The
        // iovec array is boxed and outlives the ring.
        unsafe {
            let b = (&mut sqe as *mut squeue::Entry128).cast::<u8>();
            std::ptr::write_unaligned(b.add(16).cast::<u64>(), iov as u64);
            std::ptr::write_unaligned(b.add(24).cast::<u32>(), 2);
        }
        sqe
    }

    fn push(&mut self, sqe: &squeue::Entry128) {
        loop {
            // SAFETY: every buffer an SQE points at (entry buffers, iovecs, the eventfd
            // counter) is owned by this queue and outlives the ring.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return;
            }
            // Full (cannot happen with one SQE per entry plus one, but never drop one).
            let _ = self.ring.submit();
        }
    }

    fn arm_event(&mut self) {
        let sqe = opcode::Read::new(
            types::Fd(self.shared.event.as_raw_fd()),
            (&mut *self.event_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(EVENT_TAG);
        self.push(&squeue::Entry128::from(sqe));
    }

    /// Registers every entry and serves until the connection ends.
    pub fn run(mut self, dispatcher: &Arc<Dispatcher>) -> QueueEnd {
        if self.pin {
            pin_to_cpu(self.qid as usize);
        }
        for i in 0..self.entries.len() {
            let sqe = self.register_sqe(i);
            self.push(&sqe);
        }
        self.arm_event();
        let mut refused = None;
        loop {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                tracing::error!(qid = self.qid, error = %e, "io_uring queue failed");
                // An entry still in the blocking pool must keep its buffers: leak them.
                if self.entries.iter().any(|e| e.busy) {
                    std::mem::forget(std::mem::take(&mut self.entries));
                }
                return QueueEnd::Unmounted;
            }
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (ud, res) in cqes {
                if ud == EVENT_TAG {
                    self.commit_finished();
                    self.arm_event();
                    continue;
                }
                let i = ud as usize;
                match res {
                    0 => self.serve_entry(i, dispatcher),
                    r if r == -libc::EAGAIN || r == -libc::EINTR => {
                        // INIT not processed yet (REGISTER), or interrupted: again.
                        let sqe = self.register_sqe(i);
                        self.push(&sqe);
                    }
                    r => {
                        if r == -libc::EINVAL || r == -libc::EOPNOTSUPP {
                            // A refused REGISTER: the caller says so once.
                            refused.get_or_insert(-r);
                        } else if r != -libc::ENOTCONN && r != -libc::ECONNABORTED {
                            tracing::warn!(
                                qid = self.qid,
                                entry = i,
                                error = -r,
                                "ring entry ended"
                            );
                        }
                        self.entries[i].ended = true;
                    }
                }
            }
            if self.entries.iter().all(|e| e.ended) {
                return refused.map_or(QueueEnd::Unmounted, QueueEnd::Refused);
            }
        }
    }

    /// Replies of deferred requests that finished on other threads.
    fn commit_finished(&mut self) {
        let done = std::mem::take(
            &mut *self
                .shared
                .finished
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for (i, error, len) in done {
            self.commit(i as usize, error, len);
        }
    }

    fn commit(&mut self, i: usize, error: i32, len: usize) {
        let e = &mut self.entries[i];
        let unique = wire::u64_at(&e.header[..], 8);
        let commit_id = wire::u64_at(&e.header[..], COMMIT_ID_AT);
        wire::out_header(&mut e.header[..OUT_HEADER_LEN], unique, error, len);
        let len = if error == 0 { len } else { 0 };
        e.header[PAYLOAD_SZ_AT..PAYLOAD_SZ_AT + 4].copy_from_slice(&(len as u32).to_ne_bytes());
        e.busy = false;
        let sqe = self.cmd(CMD_COMMIT_AND_FETCH, commit_id, i);
        self.push(&sqe);
    }

    fn serve_entry(&mut self, i: usize, dispatcher: &Arc<Dispatcher>) {
        self.shared.served.fetch_add(1, Ordering::Relaxed);
        let opcode = wire::u32_at(&self.entries[i].header[..], 4);
        // READ and WRITE must not wait here (a cold ciphertext read, a queued fsync): they
        // fail with EAGAIN instead and go to the pool.
        let may_block = matches!(opcode, wire::op::READ | wire::op::WRITE);
        let arg = &self.entries[i].header[OP_IN_AT..];
        // Truncates and fallocates wait for the worker that runs them: straight to the pool.
        let blocks = opcode == wire::op::FALLOCATE
            || (opcode == wire::op::SETATTR && wire::u32_at(arg, 0) & wire::FATTR_SIZE != 0);
        // Large READs are answered here only from bytes already decrypted ahead of the reader
        // (a copy); else they go to the pool: read-ahead sends several at once, and a queue
        // decrypting them one after another leaves the other cores idle; the pool spreads
        // them (1 GiB cold read 1.3-1.6 -> 1.6-1.9 GB/s, kernel-notes).
        let large_read = opcode == wire::op::READ && wire::u32_at(arg, 16) >= self.offload_read_min;
        let outcome = if blocks {
            Outcome::Reply {
                error: libc::EAGAIN,
                len: 0,
            }
        } else {
            let _no_wait = if large_read {
                Some(oxcrypt_io::no_wait_decrypted_only())
            } else {
                may_block.then(|| oxcrypt_io::no_wait(opcode == wire::op::READ))
            };
            let shared = self.shared.clone();
            let e = &mut self.entries[i];
            e.busy = true;
            // SAFETY: the entry is ours until its commit (the kernel does not touch it between
            // a completion and the next COMMIT_AND_FETCH).
            unsafe {
                handle_entry(
                    dispatcher,
                    &shared,
                    i,
                    e.header.as_mut_ptr(),
                    e.payload.as_mut_ptr(),
                    e.payload.len(),
                    &mut self.scratch,
                )
            }
        };
        match outcome {
            Outcome::Reply { error, .. } if (blocks || may_block) && error == libc::EAGAIN => {
                self.shared.offloaded.fetch_add(1, Ordering::Relaxed);
                let job = OffloadedEntry {
                    dispatcher: dispatcher.clone(),
                    shared: self.shared.clone(),
                    entry: i,
                    header: self.entries[i].header.as_mut_ptr(),
                    payload: self.entries[i].payload.as_mut_ptr(),
                    payload_len: self.entries[i].payload.len(),
                };
                self.pool.run(job);
            }
            Outcome::Reply { error, len } => self.commit(i, error, len),
            Outcome::Deferred => {}
            // Nothing on a ring goes unanswered (FORGET and INTERRUPT come on /dev/fuse).
            Outcome::None => self.commit(i, libc::ENOSYS, 0),
        }
    }
}

/// Decodes the request in an entry's buffers and answers it: the reply arguments end up at
/// the start of the payload buffer. Requests without input payload reply straight into it;
/// the others through `scratch`, copied over afterwards, so input and output never alias.
///
/// # Safety
/// `header` must point to the entry's 4096-byte header buffer and `payload` to its
/// `payload_len`-byte payload buffer, both valid and used by no one else during the call.
unsafe fn handle_entry(
    dispatcher: &Dispatcher,
    shared: &Arc<QueueShared>,
    entry: usize,
    header: *mut u8,
    payload: *mut u8,
    payload_len: usize,
    scratch: &mut [u8],
) -> Outcome {
    // SAFETY: the caller's contract.
    let head = unsafe { std::slice::from_raw_parts(header as *const u8, REQ_HEADER_LEN) };
    let payload_sz = (wire::u32_at(head, PAYLOAD_SZ_AT) as usize).min(payload_len);
    let mut defer = || -> Completion {
        let d = Deferred {
            shared: shared.clone(),
            entry: entry as u16,
            done: false,
        };
        Box::new(move |r| d.finish(r))
    };
    let op_in = &head[OP_IN_AT..OP_IN_AT + 128];
    if payload_sz == 0 {
        let Some(req) = Request::from_ring(&head[..IN_HEADER_LEN], op_in, &[], 0) else {
            return Outcome::Reply {
                error: libc::EIO,
                len: 0,
            };
        };
        // SAFETY: the caller's contract; the request borrows only the header.
        let out = unsafe { std::slice::from_raw_parts_mut(payload, payload_len) };
        return dispatcher.handle(&req, out, &mut defer);
    }
    let outcome = {
        // SAFETY: the caller's contract.
        let input = unsafe { std::slice::from_raw_parts(payload as *const u8, payload_sz) };
        let Some(req) = Request::from_ring(&head[..IN_HEADER_LEN], op_in, input, payload_sz) else {
            return Outcome::Reply {
                error: libc::EIO,
                len: 0,
            };
        };
        dispatcher.handle(&req, scratch, &mut defer)
    };
    if let Outcome::Reply { error: 0, len } = outcome {
        // SAFETY: the request (the only reader of the payload) is gone.
        let out = unsafe { std::slice::from_raw_parts_mut(payload, payload_len) };
        out[..len].copy_from_slice(&scratch[..len]);
    }
    outcome
}

/// A request handed from a queue to the pool, with its entry's buffers.
struct OffloadedEntry {
    dispatcher: Arc<Dispatcher>,
    shared: Arc<QueueShared>,
    entry: usize,
    header: *mut u8,
    payload: *mut u8,
    payload_len: usize,
}

// SAFETY: the pointers point into an entry's boxed buffers, which outlive the job (the queue
// ends only after every entry, this one included once committed, has ended) and which nobody
// else touches until the job pushes its completion.
unsafe impl Send for OffloadedEntry {}

impl OffloadedEntry {
    fn run(self, scratch: &mut [u8]) {
        // SAFETY: see the `Send` impl.
        let outcome = unsafe {
            handle_entry(
                &self.dispatcher,
                &self.shared,
                self.entry,
                self.header,
                self.payload,
                self.payload_len,
                scratch,
            )
        };
        match outcome {
            Outcome::Reply { error, len } => self.shared.push(self.entry as u16, error, len),
            Outcome::Deferred => {}
            Outcome::None => self.shared.push(self.entry as u16, libc::ENOSYS, 0),
        }
    }
}

/// Threads that may block: READs of ciphertext that is not in the page cache and READs or
/// WRITEs of files with changes still queued, handed over by the queues so that a queue
/// thread never waits on the disk. Several cold reads of one queue are then in flight at
/// once.
pub struct BlockingPool {
    jobs: Mutex<std::sync::mpsc::Sender<OffloadedEntry>>,
}

impl BlockingPool {
    /// Starts `threads` threads.
    pub fn start(threads: usize) -> std::io::Result<Arc<BlockingPool>> {
        let (tx, rx) = std::sync::mpsc::channel::<OffloadedEntry>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("oxcrypt-block-{n}"))
                .spawn(move || {
                    let mut scratch = vec![0u8; SCRATCH_LEN];
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job.run(&mut scratch),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Arc::new(BlockingPool {
            jobs: Mutex::new(tx),
        }))
    }

    fn run(&self, job: OffloadedEntry) {
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if let Err(std::sync::mpsc::SendError(job)) = sent {
            // No pool thread left (cannot happen while the mount lives): answer EIO.
            job.shared.push(job.entry as u16, libc::EIO, 0);
        }
    }
}

//! # oxcrypt-io
//!
//! The chunk I/O engine of the mount. Its interface is a handful of methods on [`Engine`]:
//! [`read`](Engine::read) (decrypting straight into the caller's buffer),
//! [`write`](Engine::write), [`set_len`](Engine::set_len), [`sync`](Engine::sync) and
//! [`drain`](Engine::drain). Every one of them runs the core's one chunk loop
//! (`oxcrypt_core::chunk_io`) under the file's one lock (`oxcrypt_core::file::FileHandle`);
//! the engine only decides *where* and *through which I/O*:
//!
//! - reads and writes are done in the calling thread (a FUSE session thread), through that
//!   thread's own small io_uring ring with a registered request buffer (`local.rs`,
//!   `ring.rs`): on a 2-vCPU machine the hand-off to another thread cost more than the I/O;
//! - a sequential reader is decrypted ahead of (`ahead.rs`): once a file has been read in a
//!   run, the workers read and decrypt its next windows into buffers of ours, each worker
//!   another window, and a READ that finds its bytes there copies them out;
//! - truncates and fsyncs go to a worker thread (`worker.rs`, one per core by default) and
//!   complete through a callback, so a long fsync never holds a FUSE thread. A file's changes
//!   all go to its home worker and run in order; a read or write that arrives while changes
//!   of its file are queued waits for them first ([`ChangeQueue`]).
//!
//! [`IoMode::Uring`] uses rings with registered buffers, [`IoMode::Sync`] `pread`/`pwrite`
//! (chosen with `--io sync`, or automatically, with one log line saying why, where io_uring
//! is unavailable). io-uring stays behind this crate; nothing else in the project names it.

pub mod ahead;
mod local;
mod nowait;
mod ring;
#[cfg(test)]
mod test_files;
mod tuning;
mod worker;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use oxcrypt_core::chunk_io::{CiphertextIo, PreadIo};
use oxcrypt_core::vault::{FileHandle, SetLen, WriteAt};
use oxcrypt_core::{Error, Result};

pub use nowait::{no_wait, no_wait_decrypted_only, NoWait};
pub use tuning::{Tuning, ABLATIONS};
use worker::Job;

/// Completion of a change handed to a worker.
pub type Done = Box<dyn FnOnce(Result<()>) + Send>;

/// Which I/O the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring with registered buffers.
    Uring,
    /// Blocking pread/pwrite.
    Sync,
}

impl std::fmt::Display for IoMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoMode::Uring => "uring",
            IoMode::Sync => "sync",
        })
    }
}

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// `None` picks io_uring when available, else sync.
    pub mode: Option<IoMode>,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// The ablations in force.
    pub tuning: Tuning,
}

/// Changes of one file handed to its worker, counted when submitted and when done, so that a
/// read or write arriving later can wait for every change submitted before it.
#[derive(Debug, Default)]
pub struct ChangeQueue {
    submitted: AtomicU64,
    completed: AtomicU64,
    /// Held to count a completion and to sleep on `done`, so no wake-up is missed.
    lock: Mutex<()>,
    done: Condvar,
}

/// Counts one change as completed when dropped (also when its job panicked).
pub(crate) struct Completion<'a>(&'a ChangeQueue);

impl Drop for Completion<'_> {
    fn drop(&mut self) {
        let _guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.0.completed.fetch_add(1, Ordering::AcqRel);
        self.0.done.notify_all();
    }
}

impl ChangeQueue {
    fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::AcqRel);
    }

    /// A guard that counts one change as completed when it is dropped.
    pub(crate) fn completion(&self) -> Completion<'_> {
        Completion(self)
    }

    /// Whether a change submitted so far is not done yet.
    fn has_earlier(&self) -> bool {
        self.completed.load(Ordering::Acquire) < self.submitted.load(Ordering::Acquire)
    }

    /// Waits until every change submitted so far is done.
    fn wait_for_earlier(&self) {
        let target = self.submitted.load(Ordering::Acquire);
        if self.completed.load(Ordering::Acquire) >= target {
            return;
        }
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while self.completed.load(Ordering::Acquire) < target {
            guard = self.done.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// An open file as the engine sees it: the core handle (which holds the file's one lock) and
/// the queue of its changes on the workers.
pub struct OpenFile {
    id: u64,
    handle: FileHandle,
    changes: ChangeQueue,
    /// Cleartext bytes written since the ciphertext's writeback was last started.
    unsent: std::sync::atomic::AtomicU64,
    /// A writeback start is queued and has not run yet (one at a time: a start can wait for
    /// the disk, and a backlog of them would hold up the file's fsync behind them).
    writeback_queued: std::sync::atomic::AtomicBool,
    /// The run of sequential READs and the windows decrypted ahead of it.
    ahead: Arc<ahead::ReadAhead>,
}

/// Bytes written to one file after which its ciphertext's writeback is started behind the
/// writer (see [`FileHandle::start_writeback`]).
pub const WRITEBACK_EVERY: u64 = 8 << 20;

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OpenFile {
    /// Wraps an open vault file; `id` picks its home worker (e.g. a counter).
    pub fn new(id: u64, handle: FileHandle) -> Arc<Self> {
        Arc::new(OpenFile {
            id,
            handle,
            changes: ChangeQueue::default(),
            unsent: std::sync::atomic::AtomicU64::new(0),
            writeback_queued: std::sync::atomic::AtomicBool::new(false),
            ahead: Arc::default(),
        })
    }

    /// The file's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The core file handle.
    pub fn handle(&self) -> &FileHandle {
        &self.handle
    }

    /// Cleartext bytes of this file decrypted ahead of its reader and not yet served.
    pub fn decrypted_ahead(&self) -> u64 {
        self.ahead.held()
    }

    /// Drops what was decrypted ahead of this file's reader and what is queued for it (the
    /// ciphertext was changed behind the mount: those bytes may be older than the change).
    pub fn drop_decrypted_ahead(&self) {
        self.ahead.reset();
    }
}

/// The running engine: its mode and its workers.
pub struct Engine {
    mode: IoMode,
    tuning: Tuning,
    workers: Vec<Sender<Job>>,
    /// Round-robin position of the `io-on-workers` ablation's reads.
    next_reader: AtomicUsize,
    /// Whether sequential readers are decrypted ahead of (see [`set_decrypt_ahead`]).
    ///
    /// [`set_decrypt_ahead`]: Self::set_decrypt_ahead
    decrypt_ahead: std::sync::atomic::AtomicBool,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.mode)
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Why io_uring cannot be used here, or `None` if it can.
pub fn uring_unavailable() -> Option<String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        match v.trim() {
            "0" => {}
            "1" if root => {}
            other => return Some(format!("/proc/sys/kernel/io_uring_disabled is {other}")),
        }
    }
    match io_uring::IoUring::new(8) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "io_uring_setup failed: {e} (old kernel or seccomp filter)"
        )),
    }
}

/// The error of a job whose worker is gone (only during shutdown).
fn engine_stopped(file: &OpenFile) -> Error {
    Error::io(
        file.handle.path(),
        std::io::Error::other("the I/O engine has stopped"),
    )
}

impl Engine {
    /// Starts the workers. With `mode: None`, io_uring is used when available; otherwise the
    /// sync engine, with one log line saying why.
    pub fn start(config: &EngineConfig) -> std::io::Result<Engine> {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            config.workers
        };
        let mode = match config.mode {
            Some(IoMode::Sync) => IoMode::Sync,
            Some(IoMode::Uring) => {
                if let Some(why) = uring_unavailable() {
                    return Err(std::io::Error::other(format!("--io uring: {why}")));
                }
                IoMode::Uring
            }
            None => match uring_unavailable() {
                None => IoMode::Uring,
                Some(why) => {
                    tracing::warn!("io_uring unavailable ({why}); using the pread/pwrite engine");
                    IoMode::Sync
                }
            },
        };
        match Self::spawn(mode, workers, config.tuning) {
            Ok(engine) => Ok(engine),
            Err(e) if config.mode.is_none() && mode == IoMode::Uring => {
                tracing::warn!(
                    "io_uring workers failed to start ({e}); using the pread/pwrite engine"
                );
                Self::spawn(IoMode::Sync, workers, config.tuning)
            }
            Err(e) => Err(e),
        }
    }

    fn spawn(mode: IoMode, workers: usize, tuning: Tuning) -> std::io::Result<Engine> {
        let mut engine = Engine {
            mode,
            tuning,
            workers: Vec::with_capacity(workers),
            next_reader: AtomicUsize::new(0),
            decrypt_ahead: std::sync::atomic::AtomicBool::new(!tuning.no_decrypt_ahead),
            threads: Vec::with_capacity(workers),
        };
        let (ready_tx, ready_rx) = channel::<std::io::Result<()>>();
        for i in 0..workers {
            let (tx, rx) = channel();
            let ready = ready_tx.clone();
            let registered = !tuning.unregistered_buffers;
            let thread = std::thread::Builder::new()
                .name(format!("oxcrypt-io-{i}"))
                .spawn(move || {
                    let io: Box<dyn CiphertextIo> = match mode {
                        IoMode::Uring => match ring::RingIo::new(8, registered) {
                            Ok(r) => Box::new(r),
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        },
                        IoMode::Sync => Box::new(PreadIo::new()),
                    };
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    worker::run(rx, io)
                })?;
            engine.workers.push(tx);
            engine.threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..workers {
            let started = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("an I/O worker died starting")));
            if let Err(e) = started {
                engine.stop();
                return Err(e);
            }
        }
        tracing::info!(mode = %mode, workers, "I/O engine started");
        Ok(engine)
    }

    /// The I/O in use.
    pub fn mode(&self) -> IoMode {
        self.mode
    }

    /// Turns decrypting ahead of sequential readers on or off (on from the start unless the
    /// `no-decrypt-ahead` ablation is in force, which this cannot override). The transport
    /// decides: it pays where READs of one reader arrive on one ring queue and would otherwise
    /// be decrypted one after another or handed to another thread, and costs where several
    /// `/dev/fuse` threads already decrypt a reader's READs side by side (kernel-notes).
    pub fn set_decrypt_ahead(&self, on: bool) {
        self.decrypt_ahead
            .store(on && !self.tuning.no_decrypt_ahead, Ordering::Relaxed);
    }

    /// Whether sequential readers are decrypted ahead of.
    pub fn decrypts_ahead(&self) -> bool {
        self.decrypt_ahead.load(Ordering::Relaxed)
    }

    fn home(&self, file: &OpenFile) -> &Sender<Job> {
        &self.workers[(file.id % self.workers.len() as u64) as usize]
    }

    fn send(&self, to: &Sender<Job>, job: Job, file: &OpenFile) {
        if let Err(failed) = to.send(job) {
            failed.0.fail(|| engine_stopped(file));
        }
    }

    /// Reads up to `out.len()` cleartext bytes at `offset` of `file` straight into `out`, in
    /// this thread, after the file's queued changes; returns the count (0 at end of file).
    pub fn read(&self, file: &Arc<OpenFile>, offset: u64, out: &mut [u8]) -> Result<usize> {
        if nowait::changes() && file.changes.has_earlier() {
            return Err(nowait::would_block());
        }
        file.changes.wait_for_earlier();
        if self.tuning.io_on_workers {
            return self.read_on_worker(file, offset, out);
        }
        let ahead = self.decrypts_ahead();
        if ahead {
            let generation = file.handle.generation();
            // Only a thread that may wait for the disk may wait for a window being decrypted.
            if let Some(n) = file.ahead.serve(offset, out, generation, !nowait::disk()) {
                self.read_ahead(file, offset, n, out.len());
                return Ok(n);
            }
        }
        if nowait::decrypt() {
            return Err(nowait::would_block());
        }
        let n = local::with_io(self.mode, !self.tuning.unregistered_buffers, |io| {
            file.handle.read_with(io, offset, out)
        })?;
        if ahead {
            self.read_ahead(file, offset, n, out.len());
        }
        Ok(n)
    }

    /// Records a READ of `file` (`len` bytes asked at `offset`, `n` read) in its run, and
    /// queues the windows to decrypt ahead of it on the workers in turn (see `ahead.rs`).
    fn read_ahead(&self, file: &Arc<OpenFile>, offset: u64, n: usize, len: usize) {
        let generation = file.handle.generation();
        for ask in file.ahead.after_read(offset, n, len, generation) {
            // Windows are independent: consecutive ones go to different workers, so a single
            // stream is decrypted on every core.
            let worker = (file.id + ask.start / ahead::WINDOW as u64) % self.workers.len() as u64;
            let job = Job::ReadAhead {
                file: file.clone(),
                ask,
                direct: self.tuning.direct_read_ahead,
            };
            self.send(&self.workers[worker as usize], job, file);
        }
    }

    /// Writes `data` at `at` of `file` in this thread, after the file's queued changes;
    /// returns the offset written at.
    pub fn write(&self, file: &Arc<OpenFile>, at: WriteAt, data: &[u8]) -> Result<u64> {
        if nowait::changes() && file.changes.has_earlier() {
            return Err(nowait::would_block());
        }
        file.changes.wait_for_earlier();
        let r = if self.tuning.io_on_workers {
            self.write_on_worker(file, at, data)
        } else {
            local::with_io(self.mode, !self.tuning.unregistered_buffers, |io| {
                file.handle.write_with(io, at, data)
            })
        };
        if r.is_ok() && !self.tuning.late_writeback {
            self.written(file, data.len() as u64);
        }
        r
    }

    /// Counts `n` bytes written to `file`; every [`WRITEBACK_EVERY`] bytes its home worker
    /// starts the ciphertext's writeback, so a large write keeps the disk busy while it is
    /// encrypted and its fsync finds little left to do (plain ext4 alone starts writeback only
    /// at its dirty thresholds, gigabytes here). The writer never waits for it.
    fn written(&self, file: &Arc<OpenFile>, n: u64) {
        let before = file.unsent.fetch_add(n, Ordering::Relaxed);
        if before + n >= WRITEBACK_EVERY && !file.writeback_queued.swap(true, Ordering::AcqRel) {
            file.unsent.store(0, Ordering::Relaxed);
            self.send(
                self.home(file),
                Job::StartWriteback { file: file.clone() },
                file,
            );
        }
    }

    /// Changes the size of `file` on its home worker; `done` runs there.
    pub fn set_len(&self, file: &Arc<OpenFile>, target: SetLen, done: Done) {
        file.changes.submitted();
        let job = Job::SetLen {
            file: file.clone(),
            target,
            done,
        };
        self.send(self.home(file), job, file);
    }

    /// Flushes `file` to disk on its home worker, after its queued changes; `done` runs there.
    pub fn sync(&self, file: &Arc<OpenFile>, datasync: bool, done: Done) {
        file.changes.submitted();
        let job = Job::Sync {
            file: file.clone(),
            datasync,
            done,
        };
        self.send(self.home(file), job, file);
    }

    /// Waits until every job queued so far on every worker is done.
    pub fn drain(&self) {
        let (tx, rx) = channel();
        let sent = self
            .workers
            .iter()
            .filter(|w| w.send(Job::Barrier(tx.clone())).is_ok())
            .count();
        drop(tx);
        for _ in 0..sent {
            let _ = rx.recv();
        }
    }

    /// The `io-on-workers` ablation of [`read`](Self::read): the next worker in turn reads.
    fn read_on_worker(&self, file: &Arc<OpenFile>, offset: u64, out: &mut [u8]) -> Result<usize> {
        let (reply, result) = channel();
        let n = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let job = Job::Read {
            file: file.clone(),
            offset,
            len: out.len(),
            reply,
        };
        self.send(&self.workers[n], job, file);
        let data = result.recv().map_err(|_| engine_stopped(file))??;
        out[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    /// The `io-on-workers` ablation of [`write`](Self::write): the home worker writes.
    fn write_on_worker(&self, file: &Arc<OpenFile>, at: WriteAt, data: &[u8]) -> Result<u64> {
        let (reply, result) = channel();
        let job = Job::Write {
            file: file.clone(),
            at,
            data: data.to_vec(),
            reply,
        };
        self.send(self.home(file), job, file);
        result.recv().map_err(|_| engine_stopped(file))?
    }

    /// Finishes every queued job, then stops the workers.
    pub fn stop(&mut self) {
        self.workers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

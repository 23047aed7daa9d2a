//! # oxcrypt-io
//!
//! The chunk I/O engine of the mount. Reads and writes are done in the thread that submits
//! them (a FUSE session thread) through that thread's own small io_uring ring with a
//! registered request buffer (`inline.rs`): on a 2-vCPU machine the hand-off to another
//! thread cost more than the I/O. Worker threads (one per core by default) take truncates, fsyncs and the reads and writes that arrive while one of those is
//! pending for the same file, and answer through a completion callback from the worker:
//!
//! - [`IoMode::Uring`]: each worker runs a tokio-uring runtime (one ring) with a registered pool
//!   of reusable buffers: request-sized ones (33 ciphertext chunks, one fixed read or write per
//!   FUSE request) and chunk-sized ones (the edge chunks of a read-modify-write). Ciphertext
//!   is decrypted straight from the registered buffer into the reply buffer.
//! - [`IoMode::Sync`]: the same split with blocking `pread`/`pwrite`, chosen with `--io sync`
//!   or automatically (one log line says why) where io_uring is unavailable.
//!
//! Changes (writes, truncates, fsyncs) of one file take the file's FIFO lock, so they keep
//! their order; a read queued behind a pending truncate or fsync sees it. tokio-uring and
//! io-uring stay behind this module's small interface ([`Engine::submit`]); nothing else in the
//! project names them.

mod inline;
mod sync_worker;
mod uring_worker;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use oxcrypt_core::vault::FileHandle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Completion of a read: the cleartext bytes (borrowed from the worker) or an errno.
pub type ReadDone = Box<dyn FnOnce(Result<&[u8], i32>) + Send>;
/// Completion of a write: bytes written or an errno.
pub type WriteDone = Box<dyn FnOnce(Result<u32, i32>) + Send>;
/// Completion of an operation without a result value.
pub type Done = Box<dyn FnOnce(Result<(), i32>) + Send>;

/// Which engine runs the jobs.
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
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `None` picks io_uring when available, else sync.
    pub mode: Option<IoMode>,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Request-sized registered buffers per worker (twice as many chunk-sized ones).
    pub buffers_per_worker: usize,
    /// Use unregistered (plain heap) buffers with io_uring: the ablation of buffer registration.
    pub unregistered_buffers: bool,
    /// Do reads and writes of files without a pending truncate or fsync in the submitting
    /// thread (see `inline.rs`) instead of on a worker.
    pub inline_io: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mode: None,
            workers: 0,
            // Workers see only truncates, fsyncs and the reads and writes queued behind them.
            buffers_per_worker: 2,
            unregistered_buffers: false,
            inline_io: true,
        }
    }
}

/// An open ciphertext file shared by the FUSE layer and the engine.
pub struct OpenFile {
    id: u64,
    handle: FileHandle,
    order: tokio::sync::RwLock<()>,
    /// Changes submitted and not yet completed.
    changes_pending: AtomicU32,
    /// Workers that were given a job of this file (bit per worker): only they get `Close`.
    workers_used: AtomicU64,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OpenFile {
    /// Wraps an open vault file; `id` must be unique among open files (e.g. the inode).
    pub fn new(id: u64, handle: FileHandle) -> Arc<Self> {
        Arc::new(OpenFile {
            id,
            handle,
            order: tokio::sync::RwLock::new(()),
            changes_pending: AtomicU32::new(0),
            workers_used: AtomicU64::new(0),
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

    /// Cleartext size, waiting for writes in flight.
    pub fn size_blocking(&self) -> Result<u64, i32> {
        let _g = self.order.blocking_read();
        self.handle.size().map_err(|e| e.errno())
    }
}

/// Offset of a [`Job::Write`] that appends at the current end of file (O_APPEND).
pub const APPEND: u64 = u64::MAX;

/// A job for a worker.
pub enum Job {
    /// Read up to `len` bytes at `offset`.
    Read {
        /// The file.
        file: Arc<OpenFile>,
        /// Cleartext offset.
        offset: u64,
        /// Bytes wanted.
        len: u32,
        /// Completion.
        done: ReadDone,
    },
    /// Write `data` at `offset`.
    Write {
        /// The file.
        file: Arc<OpenFile>,
        /// Cleartext offset, or [`APPEND`].
        offset: u64,
        /// The bytes (copied out of the FUSE buffer).
        data: Vec<u8>,
        /// Completion.
        done: WriteDone,
    },
    /// Set the cleartext size.
    SetLen {
        /// The file.
        file: Arc<OpenFile>,
        /// New size.
        size: u64,
        /// Completion.
        done: Done,
    },
    /// Flush data (and metadata unless `datasync`) to disk.
    Sync {
        /// The file.
        file: Arc<OpenFile>,
        /// Data only.
        datasync: bool,
        /// Completion.
        done: Done,
    },
    /// The file was released: drop the workers' per-file state.
    Close {
        /// The file.
        file: Arc<OpenFile>,
    },
}

impl Job {
    fn file_id(&self) -> u64 {
        match self {
            Job::Read { file, .. }
            | Job::Write { file, .. }
            | Job::SetLen { file, .. }
            | Job::Sync { file, .. }
            | Job::Close { file } => file.id,
        }
    }
}

/// The running engine: its workers and their queues.
pub struct Engine {
    mode: IoMode,
    senders: Vec<UnboundedSender<Job>>,
    /// Round-robin position for reads that may go to any worker.
    next_reader: AtomicUsize,
    inline_io: bool,
    registered: bool,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.mode)
            .field("workers", &self.senders.len())
            .finish()
    }
}

/// Why io_uring cannot be used here, or `None` if it can.
pub fn uring_unavailable() -> Option<String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        match v.trim() {
            "0" => {}
            "1" if unsafe { libc::geteuid() } == 0 => {}
            other => return Some(format!("/proc/sys/kernel/io_uring_disabled is {other}")),
        }
    }
    match tokio_uring::uring_builder().build(8) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "io_uring_setup failed: {e} (old kernel or seccomp filter)"
        )),
    }
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
        match Self::spawn(mode, workers, config) {
            Ok(engine) => Ok(engine),
            Err(e) if config.mode.is_none() && mode == IoMode::Uring => {
                tracing::warn!(
                    "io_uring workers failed to start ({e}); using the pread/pwrite engine"
                );
                Self::spawn(IoMode::Sync, workers, config)
            }
            Err(e) => Err(e),
        }
    }

    fn spawn(mode: IoMode, workers: usize, config: &EngineConfig) -> std::io::Result<Engine> {
        let mut senders = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        for i in 0..workers {
            let (tx, rx) = unbounded_channel();
            let ready = ready_tx.clone();
            let buffers = config.buffers_per_worker.max(1);
            let unregistered = config.unregistered_buffers;
            let thread = std::thread::Builder::new()
                .name(format!("oxcrypt-io-{i}"))
                .spawn(move || match mode {
                    IoMode::Uring => uring_worker::run(rx, buffers, unregistered, ready),
                    IoMode::Sync => {
                        let _ = ready.send(Ok(()));
                        sync_worker::run(rx)
                    }
                })?;
            senders.push(tx);
            threads.push(thread);
        }
        drop(ready_tx);
        let mut engine = Engine {
            mode,
            senders,
            next_reader: AtomicUsize::new(0),
            inline_io: config.inline_io,
            registered: !config.unregistered_buffers,
            threads,
        };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    engine.stop();
                    return Err(e);
                }
                Err(_) => {
                    engine.stop();
                    return Err(std::io::Error::other("an I/O worker died while starting"));
                }
            }
        }
        tracing::info!(mode = %mode, workers, "I/O engine started");
        Ok(engine)
    }

    /// The engine in use.
    pub fn mode(&self) -> IoMode {
        self.mode
    }

    /// Runs or queues a job. Reads and writes of a file without a pending truncate or fsync
    /// are done in the calling thread (`inline.rs`); with that off, reads go to the next worker
    /// in turn. Changes, and reads behind them, go to the file's home worker; `Close` goes to
    /// every worker that had a job of the file.
    pub fn submit(&self, job: Job) {
        let job = match job {
            Job::Read {
                file,
                offset,
                len,
                done,
            } if self.inline_io && file.changes_pending.load(Ordering::Acquire) == 0 => {
                match inline::read(self.mode, self.registered, &file, offset, len, done) {
                    None => return,
                    Some(done) => Job::Read {
                        file,
                        offset,
                        len,
                        done,
                    },
                }
            }
            Job::Write {
                file,
                offset,
                data,
                done,
            } if self.inline_io && file.changes_pending.load(Ordering::Acquire) == 0 => {
                match inline::write(self.mode, self.registered, &file, offset, &data) {
                    Some(r) => return done(r),
                    None => Job::Write {
                        file,
                        offset,
                        data,
                        done,
                    },
                }
            }
            other => other,
        };
        let n = self.senders.len();
        let home = (job.file_id() % n as u64) as usize;
        let worker = match &job {
            // The sync workers keep no per-file state.
            Job::Close { .. } if self.mode == IoMode::Sync => return,
            Job::Close { file } => {
                let used = file.workers_used.load(Ordering::Acquire);
                for (i, tx) in self.senders.iter().enumerate() {
                    if i != home && i < 64 && used & (1 << i) != 0 {
                        let _ = tx.send(Job::Close { file: file.clone() });
                    }
                }
                home
            }
            Job::Read { file, .. } if file.changes_pending.load(Ordering::Acquire) == 0 => {
                self.next_reader.fetch_add(1, Ordering::Relaxed) % n
            }
            _ => home,
        };
        if let Job::Read { file, .. } = &job {
            if worker != home && worker < 64 {
                file.workers_used.fetch_or(1 << worker, Ordering::AcqRel);
            }
        }
        let job = match job {
            Job::Write {
                file,
                offset,
                data,
                done,
            } => Job::Write {
                done: Self::track_change(&file, done),
                file,
                offset,
                data,
            },
            Job::SetLen { file, size, done } => Job::SetLen {
                done: Self::track_change(&file, done),
                file,
                size,
            },
            Job::Sync {
                file,
                datasync,
                done,
            } => Job::Sync {
                done: Self::track_change(&file, done),
                file,
                datasync,
            },
            other => other,
        };
        if let Err(failed) = self.senders[worker].send(job) {
            // The worker is gone (only during shutdown): fail the job instead of losing it.
            fail(failed.0, libc::EIO);
        }
    }

    /// Counts a change of `file` as pending until its completion runs: the count drops before
    /// the caller hears of it, so a read it triggers need not queue behind it.
    fn track_change<T: 'static>(
        file: &Arc<OpenFile>,
        done: Box<dyn FnOnce(Result<T, i32>) + Send>,
    ) -> Box<dyn FnOnce(Result<T, i32>) + Send> {
        file.changes_pending.fetch_add(1, Ordering::AcqRel);
        let file = file.clone();
        Box::new(move |r| {
            file.changes_pending.fetch_sub(1, Ordering::Release);
            done(r)
        })
    }

    /// Finishes every queued job, then stops the workers.
    pub fn stop(&mut self) {
        self.senders.clear();
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

/// Completes a job with an error.
pub(crate) fn fail(job: Job, errno: i32) {
    match job {
        Job::Read { done, .. } => done(Err(errno)),
        Job::Write { done, .. } => done(Err(errno)),
        Job::SetLen { done, .. } | Job::Sync { done, .. } => done(Err(errno)),
        Job::Close { .. } => {}
    }
}

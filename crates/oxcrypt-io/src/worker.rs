//! An I/O worker: a thread with its own ciphertext I/O (a [`RingIo`](crate::ring::RingIo) in
//! `IoMode::Uring`, `pread`/`pwrite` in `IoMode::Sync`) that runs the jobs of its queue one
//! after another. Workers take what must not block a FUSE thread: truncates and fsyncs (and,
//! in the `io-on-workers` ablation, every read and write). A file's changes all go to its home
//! worker, so they run in the order they were submitted.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use oxcrypt_core::chunk_io::CiphertextIo;
use oxcrypt_core::vault::{SetLen, WriteAt};

use crate::ahead::Ask;
use crate::{Done, OpenFile};

/// A job for a worker.
pub(crate) enum Job {
    /// Change the cleartext size.
    SetLen {
        file: Arc<OpenFile>,
        target: SetLen,
        done: Done,
    },
    /// Flush data (and metadata unless `datasync`) to disk.
    Sync {
        file: Arc<OpenFile>,
        datasync: bool,
        done: Done,
    },
    /// Read up to `len` bytes at `offset` (the `io-on-workers` ablation).
    Read {
        file: Arc<OpenFile>,
        offset: u64,
        len: usize,
        reply: Sender<oxcrypt_core::Result<Vec<u8>>>,
    },
    /// Write `data` (the `io-on-workers` ablation).
    Write {
        file: Arc<OpenFile>,
        at: WriteAt,
        data: Vec<u8>,
        reply: Sender<oxcrypt_core::Result<u64>>,
    },
    /// Start writing the file's dirty ciphertext to disk (a hint, not a change: not counted
    /// in the file's queued changes).
    StartWriteback { file: Arc<OpenFile> },
    /// Decrypt a window ahead of a sequential reader (a hint, not a change), its ciphertext
    /// read with `O_DIRECT` if `direct` (with `pread`: the window's buffer is read into and
    /// decrypted where it lies, not the worker's ring buffer).
    ReadAhead {
        file: Arc<OpenFile>,
        ask: Ask,
        direct: bool,
    },
    /// Answers once every job queued before it is done.
    Barrier(Sender<()>),
}

impl Job {
    /// Runs the job through `io` and completes it.
    fn run(self, io: &mut dyn CiphertextIo) {
        match self {
            Job::SetLen { file, target, done } => {
                let r = {
                    let _counted = file.changes.completion();
                    file.handle.set_len_with(io, target)
                };
                done(r);
            }
            Job::Sync {
                file,
                datasync,
                done,
            } => {
                let r = {
                    let _counted = file.changes.completion();
                    file.handle.sync(datasync)
                };
                done(r);
            }
            Job::Read {
                file,
                offset,
                len,
                reply,
            } => {
                let mut buf = vec![0u8; len];
                let r = file.handle.read_with(io, offset, &mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                let _ = reply.send(r);
            }
            Job::Write {
                file,
                at,
                data,
                reply,
            } => {
                let _ = reply.send(file.handle.write_with(io, at, &data));
            }
            Job::StartWriteback { file } => {
                file.writeback_queued
                    .store(false, std::sync::atomic::Ordering::Release);
                file.handle.start_writeback();
            }
            Job::ReadAhead { file, ask, direct } => {
                let first = ask.start / oxcrypt_core::content::CHUNK_SIZE as u64;
                file.ahead.fill(ask, |buf| {
                    file.handle
                        .read_ahead_in_place(first, crate::ahead::WINDOW_CHUNKS, buf, direct)
                });
            }
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Completes the job with `err` without running it (its worker is gone).
    pub(crate) fn fail(self, err: impl Fn() -> oxcrypt_core::Error) {
        match self {
            Job::SetLen { file, done, .. } | Job::Sync { file, done, .. } => {
                drop(file.changes.completion());
                done(Err(err()));
            }
            Job::Read { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::Write { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::StartWriteback { file } => {
                file.writeback_queued
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            Job::ReadAhead { file, ask, .. } => file.ahead.abandon(ask),
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// The worker's loop: runs jobs until its queue is closed. A panicking job is logged and
/// failed; the worker goes on.
pub(crate) fn run(jobs: Receiver<Job>, mut io: Box<dyn CiphertextIo>) {
    while let Ok(job) = jobs.recv() {
        let io = &mut *io;
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(io))) {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "an I/O job panicked; the worker goes on");
        }
    }
}

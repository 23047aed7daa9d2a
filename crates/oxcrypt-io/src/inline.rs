//! Reads answered in the calling thread (a FUSE session thread) instead of on a worker.
//!
//! Handing a read to a worker costs a thread wake-up and a context switch each way. On the
//! 2-vCPU development machine that was half the cost of a 4 KiB random read (fio, O_DIRECT,
//! 4 jobs: 34 k IOPS through the workers, 72–75 k answered in place; kernel-notes). So a read
//! of a file with no change pending is done right here:
//!
//! - `IoMode::Uring`: through this thread's own small ring, with one registered request-sized
//!   buffer, submitting one fixed read and waiting for it (a page-cache hit completes inside
//!   the submit call);
//! - `IoMode::Sync`: with `pread` through the core's `FileHandle`.
//!
//! Reads while a write, truncate or fsync of the file is pending still go to the file's home
//! worker, behind the change, so they see it.

use std::cell::RefCell;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};
use oxcrypt_core::chunks::ReadPlan;
use oxcrypt_core::content::CHUNK_SIZE;
use oxcrypt_core::vault::BATCH_CHUNKS;

use crate::uring_worker::REQUEST_BUF;
use crate::{IoMode, OpenFile, ReadDone};

/// A ring with one registered buffer, owned by one thread.
struct InlineRing {
    ring: IoUring,
    /// Ciphertext lands here; registered with the ring unless `registered` is false.
    buf: Vec<u8>,
    registered: bool,
    reply: Vec<u8>,
    scratch: Vec<u8>,
}

thread_local! {
    /// This thread's ring; `Some(None)` once setting it up failed (reads then go to workers).
    static RING: RefCell<Option<Option<InlineRing>>> = const { RefCell::new(None) };
    /// The reply buffer of the pread path.
    static SYNC_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl InlineRing {
    fn new(register: bool) -> std::io::Result<InlineRing> {
        let ring = IoUring::new(4)?;
        let mut buf = vec![0u8; REQUEST_BUF];
        if register {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: `buf` lives as long as the ring (both are fields of this struct, and the
            // ring is dropped first) and is never resized.
            unsafe { ring.submitter().register_buffers(&[iov])? };
        }
        Ok(InlineRing {
            ring,
            buf,
            registered: register,
            reply: vec![0u8; BATCH_CHUNKS as usize * CHUNK_SIZE],
            scratch: vec![0u8; CHUNK_SIZE],
        })
    }

    /// Reads `len` ciphertext bytes at `pos` into `buf`; stops early only at end of file.
    fn read_exact(&mut self, fd: i32, len: usize, pos: u64) -> Result<usize, i32> {
        let mut got = 0;
        while got < len {
            // SAFETY: `got < len <= buf.len()`.
            let ptr = unsafe { self.buf.as_mut_ptr().add(got) };
            let (want, at) = ((len - got) as u32, pos + got as u64);
            let entry = if self.registered {
                opcode::ReadFixed::new(types::Fd(fd), ptr, want, 0)
                    .offset(at)
                    .build()
            } else {
                // The unregistered-buffer ablation.
                opcode::Read::new(types::Fd(fd), ptr, want)
                    .offset(at)
                    .build()
            };
            // SAFETY: the buffer stays valid and untouched until the completion is reaped below.
            unsafe { self.ring.submission().push(&entry) }.map_err(|_| libc::EBUSY)?;
            let res = self.wait_one()?;
            if res == -libc::EINTR || res == -libc::EAGAIN {
                continue;
            }
            if res < 0 {
                return Err(-res);
            }
            if res == 0 {
                break;
            }
            got += res as usize;
        }
        Ok(got)
    }

    /// Submits what is queued and returns the result of the one completion.
    fn wait_one(&mut self) -> Result<i32, i32> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
        let cqe = self.ring.completion().next().ok_or(libc::EIO)?;
        Ok(cqe.result())
    }

    /// Reads and decrypts into `reply`; returns the cleartext length.
    fn read(&mut self, file: &OpenFile, offset: u64, len: u32) -> Result<usize, i32> {
        let h = &file.handle;
        let Some(header) = h.header() else {
            return Ok(0);
        };
        let size = h.size().map_err(|e| e.errno())?;
        let cryptor = h.cryptor();
        let max = (len as u64).min(BATCH_CHUNKS * CHUNK_SIZE as u64);
        let Some(plan) = ReadPlan::new(cryptor.combo(), offset, max, size) else {
            return Ok(0);
        };
        let got = self.read_exact(h.file().as_raw_fd(), plan.ct_len, plan.ct_offset)?;
        let n = plan.len();
        plan.decrypt(
            cryptor,
            &header,
            &self.buf[..got],
            &mut self.reply[..n],
            &mut self.scratch,
        )
        .map_err(|e| {
            tracing::error!(error = %h.content_err(e), "read refused");
            libc::EIO
        })?;
        Ok(n)
    }
}

/// Reads `len` bytes at `offset` of `file` in this thread and completes `done`. Gives `done`
/// back when this thread cannot (its ring could not be set up): the caller then queues it.
pub(crate) fn read(
    mode: IoMode,
    registered: bool,
    file: &OpenFile,
    offset: u64,
    len: u32,
    done: ReadDone,
) -> Option<ReadDone> {
    match mode {
        IoMode::Sync => {
            SYNC_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                buf.resize(len as usize, 0);
                let _order = file.order.blocking_read();
                match file.handle.read_at(offset, &mut buf) {
                    Ok(n) => done(Ok(&buf[..n])),
                    Err(e) => {
                        tracing::error!(error = %e, "read failed");
                        done(Err(e.errno()))
                    }
                }
            });
            None
        }
        IoMode::Uring => RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            let ring = slot.get_or_insert_with(|| match InlineRing::new(registered) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "no io_uring for this FUSE thread; its reads go to the workers");
                    None
                }
            });
            let Some(ring) = ring.as_mut() else {
                return Some(done);
            };
            let _order = file.order.blocking_read();
            match ring.read(file, offset, len) {
                Ok(n) => done(Ok(&ring.reply[..n])),
                Err(e) => done(Err(e)),
            }
            None
        }),
    }
}

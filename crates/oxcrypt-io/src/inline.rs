//! Reads and writes done in the calling thread (a FUSE session thread) instead of on a worker.
//!
//! Handing a request to a worker costs a thread wake-up and a context switch each way. On the
//! 2-vCPU development machine that was a third of a 4 KiB random read (fio, O_DIRECT, 4 jobs,
//! ext4: 49 k IOPS through the workers, 79–82 k done in place; kernel-notes). So reads and
//! writes of a file with no truncate or fsync pending are done right here:
//!
//! - `IoMode::Uring`: through this thread's own small ring, with one registered request-sized
//!   buffer, submitting one fixed read or write at a time and waiting for it (a page-cache hit
//!   completes inside the submit call);
//! - `IoMode::Sync`: with `pread`/`pwrite` through the core's `FileHandle`.
//!
//! Both take the file's FIFO lock like the workers do. While a truncate or fsync of the file
//! is pending on its home worker, reads and writes queue behind it there instead.

use std::cell::RefCell;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};
use oxcrypt_core::chunks::{EdgeContents, ReadPlan, WritePlan};
use oxcrypt_core::content::CHUNK_SIZE;
use oxcrypt_core::vault::BATCH_CHUNKS;

use crate::uring_worker::REQUEST_BUF;
use crate::{IoMode, OpenFile, ReadDone, APPEND};

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

    /// One read (`write` false) or write of `len` bytes between `buf[done..]` and file offset
    /// `at`; returns the kernel's result (bytes moved or -errno).
    fn transfer(
        &mut self,
        fd: i32,
        write: bool,
        done: usize,
        len: usize,
        at: u64,
    ) -> Result<i32, i32> {
        // SAFETY: callers keep `done + len <= buf.len()`.
        let ptr = unsafe { self.buf.as_mut_ptr().add(done) };
        let (fd, len) = (types::Fd(fd), len as u32);
        // The unregistered-buffer ablation uses plain Read/Write.
        let entry = match (write, self.registered) {
            (false, true) => opcode::ReadFixed::new(fd, ptr, len, 0).offset(at).build(),
            (false, false) => opcode::Read::new(fd, ptr, len).offset(at).build(),
            (true, true) => opcode::WriteFixed::new(fd, ptr, len, 0).offset(at).build(),
            (true, false) => opcode::Write::new(fd, ptr, len).offset(at).build(),
        };
        // SAFETY: the buffer stays valid and untouched until the completion is reaped.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| libc::EBUSY)?;
        self.wait_one()
    }

    /// Reads `len` ciphertext bytes at `pos` into `buf`; stops early only at end of file.
    fn read_exact(&mut self, fd: i32, len: usize, pos: u64) -> Result<usize, i32> {
        let mut got = 0;
        while got < len {
            match self.transfer(fd, false, got, len - got, pos + got as u64)? {
                r if r == -libc::EINTR || r == -libc::EAGAIN => continue,
                r if r < 0 => return Err(-r),
                0 => break,
                r => got += r as usize,
            }
        }
        Ok(got)
    }

    /// Writes `buf[..len]` at `pos`.
    fn write_all(&mut self, fd: i32, len: usize, pos: u64) -> Result<(), i32> {
        let mut put = 0;
        while put < len {
            match self.transfer(fd, true, put, len - put, pos + put as u64)? {
                r if r == -libc::EINTR || r == -libc::EAGAIN => continue,
                r if r < 0 => return Err(-r),
                0 => return Err(libc::EIO),
                r => put += r as usize,
            }
        }
        Ok(())
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

    /// Writes `data` at `offset` (or at the end for [`APPEND`]): the edge chunks are read and
    /// decrypted, then batches of chunks are encrypted into `buf` and written.
    fn write(&mut self, file: &OpenFile, offset: u64, data: &[u8]) -> Result<u32, i32> {
        let h = &file.handle;
        let header = h.ensure_header().map_err(|e| e.errno())?;
        let old_size = h.size().map_err(|e| e.errno())?;
        let offset = if offset == APPEND { old_size } else { offset };
        let Some(plan) = WritePlan::new(offset, data.len() as u64, old_size) else {
            return Ok(0);
        };
        let cryptor = h.cryptor();
        let combo = cryptor.combo();
        let fd = h.file().as_raw_fd();
        let mut edges = EdgeContents::default();
        for edge in plan.edges() {
            let c = CHUNK_SIZE as u64;
            let rp = ReadPlan::new(combo, edge.index * c, c, old_size).ok_or(libc::EIO)?;
            let got = self.read_exact(fd, rp.ct_len, rp.ct_offset)?;
            let mut clear = vec![0u8; rp.len()];
            rp.decrypt(
                cryptor,
                &header,
                &self.buf[..got],
                &mut clear,
                &mut self.scratch,
            )
            .map_err(|e| {
                tracing::error!(error = %h.content_err(e), "read-modify-write refused");
                libc::EIO
            })?;
            edges.push(edge.index, clear);
        }
        let old = |i: u64| edges.get(i);
        let mut from = plan.first;
        while from <= plan.last {
            let to = (from + BATCH_CHUNKS).min(plan.last);
            let n = plan.encrypt(
                cryptor,
                &header,
                from,
                to,
                Some(data),
                &old,
                &mut self.scratch,
                &mut self.buf,
            );
            self.write_all(fd, n, combo.chunk_offset(from))?;
            from = to + 1;
        }
        Ok(data.len() as u32)
    }
}

/// This thread's ring, set up on first use; `None` if that failed (the caller then queues
/// the job for a worker).
fn with_ring<R>(registered: bool, f: impl FnOnce(&mut InlineRing) -> R) -> Option<R> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ring = slot.get_or_insert_with(|| match InlineRing::new(registered) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no io_uring for this FUSE thread; its I/O goes to the workers");
                None
            }
        });
        ring.as_mut().map(f)
    })
}

/// Writes `data` at `offset` of `file` (or at its end for [`APPEND`]) in this thread; `None`
/// when this thread has no ring (the caller then queues the job).
pub(crate) fn write(
    mode: IoMode,
    registered: bool,
    file: &OpenFile,
    offset: u64,
    data: &[u8],
) -> Option<Result<u32, i32>> {
    match mode {
        IoMode::Sync => {
            let _order = file.order.blocking_write();
            let offset = match offset {
                APPEND => match file.handle.size() {
                    Ok(size) => size,
                    Err(e) => return Some(Err(e.errno())),
                },
                o => o,
            };
            Some(match file.handle.write_at(offset, data) {
                Ok(()) => Ok(data.len() as u32),
                Err(e) => {
                    tracing::error!(error = %e, "write failed");
                    Err(e.errno())
                }
            })
        }
        IoMode::Uring => with_ring(registered, |ring| {
            let _order = file.order.blocking_write();
            ring.write(file, offset, data)
        }),
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
        IoMode::Uring => {
            let mut done = Some(done);
            with_ring(registered, |ring| {
                let _order = file.order.blocking_read();
                let r = ring.read(file, offset, len);
                if let Some(done) = done.take() {
                    match r {
                        Ok(n) => done(Ok(&ring.reply[..n])),
                        Err(e) => done(Err(e)),
                    }
                }
            });
            done
        }
    }
}

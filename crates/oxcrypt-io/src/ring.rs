//! A small synchronous io_uring ring with one registered request buffer: the ciphertext I/O of
//! a FUSE thread and of a worker in `IoMode::Uring`. It implements the core's
//! [`CiphertextIo`], so the one chunk loop of `oxcrypt-core` runs over it.
//!
//! One fixed read or write is in flight at a time and is waited for in place (a page-cache hit
//! completes inside the submit call). If a wait fails, the request may still be in flight into
//! the buffer: the ring is then marked broken, never used again, and its buffer is leaked
//! rather than freed while the kernel may still write into it.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};
use oxcrypt_core::chunk_io::{CiphertextIo, REQUEST_BUF};
use oxcrypt_core::content::CHUNK_SIZE;

/// Logs, once per process, that buffer registration was refused and what that costs.
fn refused_registration(e: &io::Error) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0 {
        if lim.rlim_cur == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", lim.rlim_cur / 1024)
        }
    } else {
        "unknown".to_string()
    };
    tracing::warn!(
        "io_uring buffers cannot be registered ({e}; RLIMIT_MEMLOCK is {limit}, each ring \
         needs {} KiB): rings without registered buffers are used instead (slightly slower); \
         raise the limit with `ulimit -l` or LimitMEMLOCK= in a systemd unit",
        REQUEST_BUF / 1024
    );
}

/// A ring and its buffers, owned by one thread.
pub(crate) struct RingIo {
    ring: ManuallyDrop<IoUring>,
    /// Ciphertext lands here and is written from here; registered with the ring unless
    /// `registered` is false (the ablation).
    buf: ManuallyDrop<Vec<u8>>,
    scratch: Vec<u8>,
    registered: bool,
    /// A request may still be in flight into `buf`.
    broken: bool,
}

impl RingIo {
    /// A ring of `entries` entries with a registered request buffer (a heap one when
    /// `register` is false).
    ///
    /// Registered buffers count against `RLIMIT_MEMLOCK` (8 MiB by default for a user without
    /// `CAP_IPC_LOCK`): when the kernel refuses to register (ENOMEM, EPERM), the ring keeps an
    /// unregistered buffer, which is still io_uring and beats falling back to pread; one log
    /// line per process says so and how to lift the limit.
    pub(crate) fn new(entries: u32, register: bool) -> io::Result<RingIo> {
        let ring = IoUring::new(entries)?;
        let mut buf = vec![0u8; REQUEST_BUF];
        let mut registered = false;
        if register {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: `buf` is never resized and outlives its registration: it is freed only
            // after the ring is closed (see `Drop`), and leaked if a request may be in flight.
            match unsafe { ring.submitter().register_buffers(&[iov]) } {
                Ok(()) => registered = true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM)) => {
                    refused_registration(&e)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(RingIo {
            ring: ManuallyDrop::new(ring),
            buf: ManuallyDrop::new(buf),
            scratch: vec![0u8; CHUNK_SIZE],
            registered,
            broken: false,
        })
    }

    /// Whether a failed wait left a request possibly in flight (the ring must be replaced).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// One read (`write` false) or write of `len` bytes between `buf[done..]` and file offset
    /// `at`; returns the kernel's result (bytes moved or -errno).
    fn transfer(
        &mut self,
        file: &File,
        write: bool,
        done: usize,
        len: usize,
        at: u64,
    ) -> io::Result<i32> {
        if self.broken {
            return Err(io::Error::other("the I/O ring is broken"));
        }
        assert!(done + len <= self.buf.len(), "transfer beyond the buffer");
        // SAFETY: `done + len <= buf.len()` (asserted above).
        let ptr = unsafe { self.buf.as_mut_ptr().add(done) };
        let (fd, len) = (types::Fd(file.as_raw_fd()), len as u32);
        // In no-wait mode a read takes only what the page cache has (EAGAIN otherwise).
        let flags = if !write && crate::nowait::disk() {
            libc::RWF_NOWAIT
        } else {
            0
        };
        let entry = match (write, self.registered) {
            (false, true) => opcode::ReadFixed::new(fd, ptr, len, 0)
                .offset(at)
                .rw_flags(flags)
                .build(),
            (false, false) => opcode::Read::new(fd, ptr, len)
                .offset(at)
                .rw_flags(flags)
                .build(),
            (true, true) => opcode::WriteFixed::new(fd, ptr, len, 0).offset(at).build(),
            (true, false) => opcode::Write::new(fd, ptr, len).offset(at).build(),
        };
        // SAFETY: the buffer stays valid and untouched until the completion is reaped below,
        // or forever if it is not (`broken`).
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // The request may have reached the kernel: never touch this buffer again.
                    self.broken = true;
                    tracing::error!(error = %e, "io_uring wait failed; this ring is retired");
                    return Err(e);
                }
            }
            if let Some(cqe) = self.ring.completion().next() {
                return Ok(cqe.result());
            }
        }
    }
}

/// A scattered read as the ring's I/O does it (the doc of its `read_scattered`): a `preadv2`,
/// with `RWF_NOWAIT` in no-wait mode; needs no ring.
pub(crate) fn read_scattered(
    file: &File,
    at: u64,
    parts: &mut [io::IoSliceMut<'_>],
) -> io::Result<usize> {
    let no_wait = crate::nowait::disk();
    let flags = if no_wait { libc::RWF_NOWAIT } else { 0 };
    match oxcrypt_core::chunk_io::preadv_full(file, at, parts, flags) {
        Err(e) if no_wait && matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) => {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        }
        r => r,
    }
}

impl CiphertextIo for RingIo {
    fn buffers(&mut self) -> (&mut [u8], &mut [u8]) {
        (&mut self.buf, &mut self.scratch)
    }

    fn read(&mut self, file: &File, len: usize, at: u64) -> io::Result<usize> {
        let mut got = 0;
        while got < len {
            match self.transfer(file, false, got, len - got, at + got as u64)? {
                // EOPNOTSUPP: a file system without no-wait reads (tmpfs here): the read must
                // wait like one from disk.
                r if (r == -libc::EAGAIN || r == -libc::EOPNOTSUPP) && crate::nowait::disk() => {
                    return Err(io::Error::from_raw_os_error(libc::EAGAIN))
                }
                r if r == -libc::EINTR || r == -libc::EAGAIN => continue,
                r if r < 0 => return Err(io::Error::from_raw_os_error(-r)),
                0 => break,
                r => got += r as usize,
            }
        }
        Ok(got)
    }

    /// A scattered read is a `preadv2` (a page-cache hit completes inside it, as a ring read
    /// would); in no-wait mode with `RWF_NOWAIT`, failing with EAGAIN for ciphertext that is
    /// not in the page cache (or on a file system without no-wait reads). Not a ring READV:
    /// the parts are the caller's buffer, and a ring whose wait failed could still write into
    /// it after we return (our own buffer is leaked then; the caller's cannot be).
    fn read_scattered(
        &mut self,
        file: &File,
        at: u64,
        parts: &mut [io::IoSliceMut<'_>],
    ) -> io::Result<usize> {
        read_scattered(file, at, parts)
    }

    fn write(&mut self, file: &File, from: usize, len: usize, at: u64) -> io::Result<()> {
        let mut put = 0;
        while put < len {
            match self.transfer(file, true, from + put, len - put, at + put as u64)? {
                r if r == -libc::EINTR || r == -libc::EAGAIN => continue,
                r if r < 0 => return Err(io::Error::from_raw_os_error(-r)),
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                r => put += r as usize,
            }
        }
        Ok(())
    }
}

impl Drop for RingIo {
    fn drop(&mut self) {
        // SAFETY: each field is dropped once, here: the ring first, so nothing is registered
        // when the buffer goes; a buffer that may still be written to is leaked instead.
        unsafe {
            ManuallyDrop::drop(&mut self.ring);
            if !self.broken {
                ManuallyDrop::drop(&mut self.buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn reads_and_writes_through_the_registered_buffer() {
        let Ok(mut io) = RingIo::new(4, true) else {
            eprintln!("no io_uring here; skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let f = crate::test_files::read_write(dir.path(), "x");
        io.buffers().0[..5].copy_from_slice(b"hello");
        io.write(&f, 0, 5, 3).unwrap();
        let mut back = [0u8; 8];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"\0\0\0hello");
        // A read past the end stops at end of file.
        assert_eq!(io.read(&f, 100, 2).unwrap(), 6);
        assert_eq!(&io.buffers().0[..6], b"\0hello");
    }
}

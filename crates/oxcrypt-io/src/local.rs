//! The ciphertext I/O of the calling thread (a FUSE session thread): reads and writes are done
//! where the request arrived, not handed to a worker.
//!
//! Handing a request to a worker costs a thread wake-up and a context switch each way. On the
//! 2-vCPU development machine that was a third of a 4 KiB random read (fio, O_DIRECT, 4 jobs,
//! ext4: 49 k IOPS through the workers, 79–82 k done in place; kernel-notes). So each thread
//! keeps its own I/O:
//!
//! - `IoMode::Uring`: a small ring with one registered request buffer ([`RingIo`]), set up on
//!   first use and replaced if it broke; `pread` where no ring can be had;
//! - `IoMode::Sync`: `pread`/`pwrite`, with the core's per-thread `PreadIo`.

use std::cell::RefCell;

use oxcrypt_core::chunk_io::{with_thread_pread, CiphertextIo};

use crate::ring::RingIo;
use crate::IoMode;

thread_local! {
    /// This thread's ring: `None` until first use, `Some(None)` once setting it up failed.
    static RING: RefCell<Option<Option<RingIo>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's ciphertext I/O for `mode`.
pub(crate) fn with_io<R>(
    mode: IoMode,
    registered: bool,
    f: impl FnOnce(&mut dyn CiphertextIo) -> R,
) -> R {
    if mode == IoMode::Uring {
        let ring = RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            match slot.take() {
                Some(Some(r)) if !r.is_broken() => Some(r),
                Some(None) => {
                    *slot = Some(None);
                    None
                }
                _ => match RingIo::new(4, registered) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "no io_uring for this thread; it uses pread/pwrite");
                        *slot = Some(None);
                        None
                    }
                },
            }
        });
        if let Some(mut ring) = ring {
            // Taken out of the slot while in use, so `f` may itself use this thread's I/O.
            let r = f(&mut ring);
            RING.with(|cell| *cell.borrow_mut() = Some(Some(ring)));
            return r;
        }
    }
    with_thread_pread(f)
}

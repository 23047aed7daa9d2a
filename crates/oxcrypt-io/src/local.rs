//! The ciphertext I/O of the calling thread (a FUSE session thread): reads and writes are done
//! where the request arrived, not handed to a worker.
//!
//! Handing a request to a worker costs a thread wake-up and a context switch each way. On the
//! 2-vCPU development machine that was a third of a 4 KiB random read (fio, O_DIRECT, 4 jobs,
//! ext4: 49 k IOPS through the workers, 79–82 k done in place; kernel-notes). So each thread
//! keeps its own I/O:
//!
//! - `IoMode::Uring`: a small ring with one registered request buffer ([`RingIo`]), set up the
//!   first time the thread needs it and replaced if it broke; `pread` where no ring can be
//!   had. Reads of whole chunks need no ring (they are one `preadv2` straight into the
//!   caller's buffer), so a thread that only ever does those never sets one up: the buffer is
//!   pinned, so each ring is about 1 MiB resident, and the ring transport's queue and pool
//!   threads serving sequential readers would otherwise hold six of them;
//! - `IoMode::Sync`: `pread`/`pwrite`, with the core's per-thread `PreadIo`.

use std::cell::RefCell;
use std::fs::File;
use std::io;

use oxcrypt_core::chunk_io::{with_thread_pread, CiphertextIo, PreadIo};

use crate::ring::{self, RingIo};
use crate::IoMode;

/// A thread's ring, as far as it has got.
enum Slot {
    /// Not needed yet.
    Untried,
    /// Set up (and out of the slot while in use).
    Ready(Box<RingIo>),
    /// Setting it up failed: this thread uses `pread`/`pwrite`.
    Failed,
}

thread_local! {
    static RING: RefCell<Slot> = const { RefCell::new(Slot::Untried) };
}

/// Runs `f` with this thread's ciphertext I/O for `mode`.
pub(crate) fn with_io<R>(
    mode: IoMode,
    registered: bool,
    f: impl FnOnce(&mut dyn CiphertextIo) -> R,
) -> R {
    if mode != IoMode::Uring {
        return with_thread_pread(f);
    }
    // Taken out of the slot while in use, so `f` may itself use this thread's I/O.
    let slot = RING.with(|cell| std::mem::replace(&mut *cell.borrow_mut(), Slot::Untried));
    let slot = match slot {
        Slot::Failed => {
            RING.with(|cell| *cell.borrow_mut() = Slot::Failed);
            return with_thread_pread(f);
        }
        Slot::Ready(r) if r.is_broken() => Slot::Untried,
        other => other,
    };
    let mut io = ThreadIo {
        slot,
        registered,
        pread: None,
    };
    let r = f(&mut io);
    RING.with(|cell| *cell.borrow_mut() = io.slot);
    r
}

/// The ring of [`with_io`], set up on the first call that needs it.
struct ThreadIo {
    slot: Slot,
    registered: bool,
    /// The fallback for the rest of a call whose ring could not be set up (later calls of
    /// the thread use its `PreadIo`).
    pread: Option<PreadIo>,
}

impl ThreadIo {
    /// The ring, set up now if this is the first need of it; else the `pread` fallback.
    fn io(&mut self) -> &mut dyn CiphertextIo {
        if let Slot::Untried = self.slot {
            self.slot = match RingIo::new(4, self.registered) {
                Ok(r) => Slot::Ready(Box::new(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "no io_uring for this thread; it uses pread/pwrite");
                    Slot::Failed
                }
            };
        }
        match &mut self.slot {
            Slot::Ready(r) => &mut **r,
            _ => self.pread.get_or_insert_with(PreadIo::new),
        }
    }

    #[cfg(test)]
    fn has_ring(&self) -> bool {
        matches!(self.slot, Slot::Ready(_))
    }
}

impl CiphertextIo for ThreadIo {
    fn buffers(&mut self) -> (&mut [u8], &mut [u8]) {
        self.io().buffers()
    }

    fn read(&mut self, file: &File, len: usize, at: u64) -> io::Result<usize> {
        self.io().read(file, len, at)
    }

    fn write(&mut self, file: &File, from: usize, len: usize, at: u64) -> io::Result<()> {
        self.io().write(file, from, len, at)
    }

    fn read_scattered(
        &mut self,
        file: &File,
        at: u64,
        parts: &mut [io::IoSliceMut<'_>],
    ) -> io::Result<usize> {
        // The ring's own scattered read is this `preadv2` too.
        ring::read_scattered(file, at, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_ring_is_set_up_only_for_what_needs_one() {
        if crate::uring_unavailable().is_some() {
            eprintln!("no io_uring here; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = crate::test_files::read_write(dir.path(), "x");
        f.write_all_at(b"nonce.body.tag", 0).unwrap();
        std::thread::spawn(move || {
            // A scattered read: no ring.
            let (mut a, mut b) = ([0u8; 6], [0u8; 8]);
            let got = with_io(IoMode::Uring, true, |io| {
                let mut parts = [io::IoSliceMut::new(&mut a), io::IoSliceMut::new(&mut b)];
                io.read_scattered(&f, 0, &mut parts).unwrap()
            });
            assert_eq!((got, &a, &b), (14, b"nonce.", b"body.tag"));
            let slot = RING.with(|c| matches!(*c.borrow(), Slot::Untried));
            assert!(slot, "a whole-chunk read set up a ring");
            // A write through the buffer: the ring, kept for the next call.
            with_io(IoMode::Uring, true, |io| {
                io.buffers().0[..4].copy_from_slice(b"BODY");
                io.write(&f, 0, 4, 6).unwrap();
            });
            assert!(RING.with(|c| matches!(*c.borrow(), Slot::Ready(_))));
            let mut back = [0u8; 14];
            f.read_exact_at(&mut back, 0).unwrap();
            assert_eq!(&back, b"nonce.BODY.tag");
            // While in use it is out of the slot (a nested call would set up its own).
            with_io(IoMode::Uring, true, |_| {
                let nested = RING.with(|c| matches!(*c.borrow(), Slot::Untried));
                assert!(nested, "the ring in use is out of the slot");
            });
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_io_without_a_ring_reads_and_writes_through_pread() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("y")).unwrap();
        let mut io = ThreadIo {
            slot: Slot::Failed,
            registered: true,
            pread: None,
        };
        io.buffers().0[..3].copy_from_slice(b"abc");
        io.write(&f, 0, 3, 0).unwrap();
        assert!(!io.has_ring());
        let f = std::fs::File::open(dir.path().join("y")).unwrap();
        assert_eq!(io.read(&f, 10, 0).unwrap(), 3);
        assert_eq!(&io.buffers().0[..3], b"abc");
    }
}

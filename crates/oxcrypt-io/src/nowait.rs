//! "Do not block" mode for the calling thread, used by the io_uring transport's queue
//! threads: a queue thread is the only way in for its CPU's requests, so a READ whose
//! ciphertext is not in the page cache, or a READ or WRITE of a file with a truncate or fsync
//! still queued, must not wait there. In this mode such a call fails at once with EAGAIN
//! (nothing read, nothing written) and the transport hands the request to a thread that may
//! block.

use std::cell::Cell;

thread_local! {
    /// Do not wait for a file's queued changes.
    static CHANGES: Cell<bool> = const { Cell::new(false) };
    /// Read ciphertext with `RWF_NOWAIT` (only what is in the page cache).
    static DISK: Cell<bool> = const { Cell::new(false) };
    /// Answer a READ only from bytes already decrypted ahead of the reader (`ahead.rs`).
    static DECRYPT: Cell<bool> = const { Cell::new(false) };
}

/// Turns the mode on for this thread until dropped.
pub struct NoWait {
    prev: (bool, bool, bool),
}

/// Until the guard is dropped, this thread's engine calls fail with EAGAIN instead of
/// waiting for a file's queued changes, and (with `disk`) instead of reading ciphertext
/// that is not in the page cache.
pub fn no_wait(disk: bool) -> NoWait {
    enter(disk, false)
}

/// Like [`no_wait`]`(true)`, and a READ does not even decrypt here: it is answered only from
/// bytes already decrypted ahead of a sequential reader, EAGAIN otherwise (a large READ on a
/// ring queue thread, where decrypting a whole window would hold up the queue).
pub fn no_wait_decrypted_only() -> NoWait {
    enter(true, true)
}

fn enter(disk: bool, decrypt: bool) -> NoWait {
    let prev = (
        CHANGES.with(|c| c.replace(true)),
        DISK.with(|d| d.replace(disk)),
        DECRYPT.with(|d| d.replace(decrypt)),
    );
    NoWait { prev }
}

impl Drop for NoWait {
    fn drop(&mut self) {
        CHANGES.with(|c| c.set(self.prev.0));
        DISK.with(|d| d.set(self.prev.1));
        DECRYPT.with(|d| d.set(self.prev.2));
    }
}

pub(crate) fn changes() -> bool {
    CHANGES.with(|c| c.get())
}

pub(crate) fn disk() -> bool {
    DISK.with(|d| d.get())
}

pub(crate) fn decrypt() -> bool {
    DECRYPT.with(|d| d.get())
}

/// The error of a call that would have blocked.
pub(crate) fn would_block() -> oxcrypt_core::Error {
    oxcrypt_core::Error::io("", std::io::Error::from_raw_os_error(libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mode_is_scoped_and_nests() {
        assert!(!super::changes());
        {
            let _a = super::no_wait(true);
            assert!(super::changes() && super::disk());
            {
                let _b = super::no_wait(false);
                assert!(super::changes() && !super::disk());
            }
            assert!(super::disk() && !super::decrypt());
            {
                let _c = super::no_wait_decrypted_only();
                assert!(super::changes() && super::disk() && super::decrypt());
            }
            assert!(!super::decrypt());
        }
        assert!(!super::changes() && !super::disk());
    }
}

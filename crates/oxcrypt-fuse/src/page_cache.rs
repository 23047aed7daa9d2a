//! When an open may keep the kernel's page cache of a file (`FOPEN_KEEP_CACHE`).
//!
//! Keeping the cache is right only if every cached page still matches the ciphertext. Two
//! things can break that:
//! - a change behind the mount's back (a sync client): caught by comparing the ciphertext's
//!   (mtime, length) at open with the stamp taken when the file was last closed;
//! - the kernel itself, when a file is open more than once and written: in write-through mode
//!   a written page is unlocked before its WRITE reaches us, so another handle's open (which
//!   drops the clean pages) followed by a read can fetch and cache the old bytes while that
//!   WRITE is still queued. The page then stays stale until something invalidates it.
//!   The concurrent-writers mount test hit this about once in seven runs.
//!
//! So a file that was open with a writer alongside any other handle is marked suspect, and
//! the first open after its last close starts cold, which drops any such page.

use std::time::SystemTime;

use dashmap::DashMap;

/// The (mtime, length) of a ciphertext file.
pub type Stamp = (SystemTime, u64);

#[derive(Default)]
struct Use {
    handles: u32,
    writers: u32,
    suspect: bool,
}

/// Tracks open handles per inode and decides on `FOPEN_KEEP_CACHE`.
#[derive(Default)]
pub struct PageCachePolicy {
    open: DashMap<u64, Use>,
    stamps: DashMap<u64, Stamp>,
}

impl PageCachePolicy {
    /// Records an open of `ino` (`write`: with write access) and says whether the kernel may
    /// keep its cached pages. `now` is the ciphertext's current stamp, if it could be read.
    pub fn opened(&self, ino: u64, write: bool, now: Option<Stamp>) -> bool {
        let mut u = self.open.entry(ino).or_default();
        if u.handles > 0 && (u.writers > 0 || write) {
            u.suspect = true;
        }
        u.handles += 1;
        if write {
            u.writers += 1;
        }
        let suspect = u.suspect;
        drop(u);
        !suspect && now.is_some() && self.stamps.get(&ino).map(|s| *s) == now
    }

    /// Records the release of a handle opened with `opened`. On the last one, `stamp` is read
    /// and kept for the next open, unless the file became suspect.
    pub fn closed(&self, ino: u64, write: bool, stamp: impl FnOnce() -> Option<Stamp>) {
        let last = {
            let Some(mut u) = self.open.get_mut(&ino) else {
                return;
            };
            u.handles = u.handles.saturating_sub(1);
            if write {
                u.writers = u.writers.saturating_sub(1);
            }
            (u.handles == 0).then_some(u.suspect)
        };
        let Some(suspect) = last else { return };
        // Only drop the entry if no open slipped in meanwhile.
        if self.open.remove_if(&ino, |_, u| u.handles == 0).is_none() {
            return;
        }
        match stamp().filter(|_| !suspect) {
            Some(s) => {
                self.stamps.insert(ino, s);
            }
            None => {
                self.stamps.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn st(n: u64) -> Option<Stamp> {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(n), n))
    }

    #[test]
    fn keeps_only_after_a_clean_close_with_the_same_stamp() {
        let p = PageCachePolicy::default();
        assert!(!p.opened(5, false, st(1)), "nothing known yet");
        p.closed(5, false, || st(1));
        assert!(p.opened(5, false, st(1)));
        p.closed(5, false, || st(1));
        assert!(!p.opened(5, false, st(2)), "changed behind our back");
        p.closed(5, false, || st(2));
        assert!(p.opened(5, true, st(2)));
        p.closed(5, true, || st(3));
        assert!(
            p.opened(5, false, st(3)),
            "our own writes keep pages current"
        );
        p.closed(5, false, || st(3));
    }

    #[test]
    fn a_writer_beside_another_handle_makes_the_next_open_cold() {
        let p = PageCachePolicy::default();
        p.opened(7, false, st(1));
        p.closed(7, false, || st(1));
        assert!(p.opened(7, true, st(1)));
        assert!(
            !p.opened(7, false, st(1)),
            "second handle while a writer is open"
        );
        p.closed(7, true, || st(2));
        p.closed(7, false, || st(2));
        assert!(!p.opened(7, false, st(2)), "suspect: must start cold");
        p.closed(7, false, || st(2));
        assert!(
            p.opened(7, false, st(2)),
            "a clean close clears the suspicion"
        );
        p.closed(7, false, || st(2));
        // Two readers are harmless.
        assert!(p.opened(7, false, st(2)));
        assert!(p.opened(7, false, st(2)));
        p.closed(7, false, || st(2));
        p.closed(7, false, || st(2));
        assert!(p.opened(7, false, st(2)));
    }
}

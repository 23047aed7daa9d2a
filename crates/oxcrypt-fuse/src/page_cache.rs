//! When an open may keep the kernel's page cache of a file (`FOPEN_KEEP_CACHE`).
//!
//! Keeping the cache is right only if every cached page still matches the ciphertext. Two
//! things can break that:
//! - a change behind the mount's back (a sync client): caught by comparing the ciphertext's
//!   (mtime, length) at open with the stamp taken when the file was last closed;
//! - the kernel itself, when a file is read and written through two handles at once: in
//!   write-through mode a written page is unlocked before its WRITE reaches us, so if the page
//!   is dropped in that window (an open without KEEP_CACHE drops every clean page) a read can
//!   fetch and cache the old bytes while the WRITE is still queued. The page then stays stale
//!   until something invalidates it. The concurrent-writers mount test hit this about once in
//!   seven runs when every open compared stamps.
//!
//! So: an open while other handles are open always keeps the cache (writes through the mount
//! keep it current, and dropping it is what opens that window); a file written while another
//! handle was open is suspect, and the first open after its last close starts cold, which
//! washes out anything the kernel's own races (e.g. reclaim) may have left.

use std::time::SystemTime;

use dashmap::DashMap;

/// The (mtime, length) of a ciphertext file.
pub type Stamp = (SystemTime, u64);

#[derive(Default)]
struct Use {
    handles: u32,
    suspect: bool,
}

/// Tracks open handles per inode and decides on `FOPEN_KEEP_CACHE`.
#[derive(Default)]
pub struct PageCachePolicy {
    open: DashMap<u64, Use>,
    stamps: DashMap<u64, Stamp>,
}

impl PageCachePolicy {
    /// Records an open of `ino` and says whether the kernel may keep its cached pages. `now`
    /// is the ciphertext's current stamp, if it could be read.
    pub fn opened(&self, ino: u64, now: Option<Stamp>) -> bool {
        let mut u = self.open.entry(ino).or_default();
        u.handles += 1;
        if u.handles > 1 {
            return true;
        }
        drop(u);
        now.is_some() && self.stamps.get(&ino).map(|s| *s) == now
    }

    /// Records a write to `ino`: with another handle open, the file becomes suspect.
    pub fn wrote(&self, ino: u64) {
        if let Some(mut u) = self.open.get_mut(&ino) {
            if u.handles > 1 && !u.suspect {
                u.suspect = true;
            }
        }
    }

    /// The kernel forgot `ino` (its number is never used again): drops its stamp.
    pub fn forget(&self, ino: u64) {
        self.stamps.remove(&ino);
    }

    /// Records the release of a handle. On the last one, `stamp` is read and kept for the
    /// next open, unless the file became suspect.
    pub fn closed(&self, ino: u64, stamp: impl FnOnce() -> Option<Stamp>) {
        let last = {
            let Some(mut u) = self.open.get_mut(&ino) else {
                return;
            };
            u.handles = u.handles.saturating_sub(1);
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
        assert!(!p.opened(5, st(1)), "nothing known yet");
        p.closed(5, || st(1));
        assert!(p.opened(5, st(1)));
        p.closed(5, || st(1));
        assert!(!p.opened(5, st(2)), "changed behind our back");
        p.closed(5, || st(2));
        assert!(p.opened(5, st(2)));
        p.wrote(5);
        p.closed(5, || st(3));
        assert!(p.opened(5, st(3)), "our own writes keep pages current");
        p.closed(5, || st(3));
    }

    #[test]
    fn a_write_beside_another_handle_makes_the_next_first_open_cold() {
        let p = PageCachePolicy::default();
        p.opened(7, st(1));
        p.closed(7, || st(1));
        assert!(p.opened(7, st(1)));
        assert!(p.opened(7, None), "a second handle never drops the cache");
        p.wrote(7);
        p.closed(7, || st(2));
        p.closed(7, || st(2));
        assert!(!p.opened(7, st(2)), "suspect: must start cold");
        p.closed(7, || st(2));
        assert!(p.opened(7, st(2)), "a clean close clears the suspicion");
        // Two handles that only read are harmless.
        assert!(p.opened(7, st(2)));
        p.closed(7, || st(2));
        p.closed(7, || st(2));
        assert!(p.opened(7, st(2)));
        p.closed(7, || st(2));
    }
}

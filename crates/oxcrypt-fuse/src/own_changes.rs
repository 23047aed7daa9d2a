//! Our own changes to file contents, so the watcher can tell them from a sync client's.
//!
//! Every change the mount makes to a file's ciphertext (a WRITE, a truncate or grow, a mode,
//! owner or time change, the header of a new file) is bracketed: [`OwnChanges::begin`] before,
//! [`OwnChanges::end`] after, with the ciphertext's (mtime, length) as the change left it. The
//! watcher then asks [`OwnChanges::is_ours`]: a change is ours if one of ours is in flight, if
//! one of ours finished while it looked, or if the ciphertext still has the stamp our last
//! change left. A file the mount never changed has no record, so any change to it is someone
//! else's, also while a handle of ours only reads it (the case an "is it open here" test got
//! wrong: a sync client rewriting a file right after a program read it, before the kernel's
//! RELEASE reached us).
//!
//! Records are kept per ciphertext file (its backing inode number), so the numbers of a
//! retired inode and of its successor share one.

use dashmap::DashMap;

use crate::open_files::FileKey;
use crate::page_cache::Stamp;

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    /// Changes of ours started and not yet ended.
    in_flight: u32,
    /// Bumped at every begin and end: a check that sees it move raced one of ours.
    generation: u64,
    /// The ciphertext's stamp as our last finished change left it.
    stamp: Option<Stamp>,
}

/// The record of our own changes, per ciphertext file.
#[derive(Debug, Default)]
pub struct OwnChanges {
    files: DashMap<FileKey, Record>,
}

impl OwnChanges {
    /// A change of `key` starts.
    pub fn begin(&self, key: FileKey) {
        let mut r = self.files.entry(key).or_default();
        r.in_flight += 1;
        r.generation += 1;
    }

    /// The change of `key` begun last ended, leaving the ciphertext at `stamp`.
    pub fn end(&self, key: FileKey, stamp: Option<Stamp>) {
        let mut r = self.files.entry(key).or_default();
        r.in_flight = r.in_flight.saturating_sub(1);
        r.generation += 1;
        r.stamp = stamp;
    }

    /// Records a change of `key` that is already over (a file just created).
    pub fn settled(&self, key: FileKey, stamp: Option<Stamp>) {
        self.begin(key);
        self.end(key, stamp);
    }

    /// Forgets `key` (no inode of it is known to the kernel any more).
    pub fn forget(&self, key: FileKey) {
        self.files.remove(&key);
    }

    /// Whether the ciphertext of `key`, whose stamp `now` reads, is as our own changes left it.
    pub fn is_ours(&self, key: FileKey, now: impl FnOnce() -> Option<Stamp>) -> bool {
        let before = match self.files.get(&key) {
            None => return false,
            Some(r) if r.in_flight > 0 => return true,
            Some(r) => *r,
        };
        let current = now();
        match self.files.get(&key) {
            // One of ours started or ended while we looked: the stamp may be its.
            Some(r) if r.generation != before.generation => true,
            Some(_) => current.is_some() && current == before.stamp,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn st(n: u64) -> Option<Stamp> {
        Some((SystemTime::UNIX_EPOCH + Duration::from_secs(n), n))
    }

    #[test]
    fn ours_while_in_flight_or_unchanged_since_and_never_for_an_unknown_file() {
        let o = OwnChanges::default();
        assert!(!o.is_ours(1, || st(5)), "never changed by us");
        o.begin(1);
        assert!(o.is_ours(1, || st(6)), "in flight");
        o.end(1, st(6));
        assert!(o.is_ours(1, || st(6)));
        assert!(!o.is_ours(1, || st(7)), "changed since, by someone else");
        assert!(!o.is_ours(1, || None), "gone or unreadable");
        // A change of ours that ends while the check reads the stamp.
        assert!(o.is_ours(1, || {
            o.begin(1);
            o.end(1, st(8));
            st(8)
        }));
        o.settled(2, st(1));
        assert!(o.is_ours(2, || st(1)));
        o.forget(2);
        assert!(!o.is_ours(2, || st(1)));
    }
}

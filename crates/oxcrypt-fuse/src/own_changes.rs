//! Our own changes to file contents, so the watcher can tell them from a sync client's.
//!
//! Every change the mount makes to a file's ciphertext (a WRITE, a truncate or grow, a mode,
//! owner or time change, the header of a new file) is bracketed: [`OwnChanges::begin`] before,
//! [`OwnChanges::end`] after, with the ciphertext's (mtime, length) as the change left it. The
//! watcher then asks [`OwnChanges::verdict`]: ours if the ciphertext still has the stamp our
//! last change left, someone else's if not, and "ask again later" while one of ours is in
//! flight or ran while it looked (the report may mix a sync client's change with ours: the
//! kernel sends the times of a file late, at write-back of the inode, so a SETATTR of ours can
//! land right after a sync client's rewrite, and the two merge into one inotify report). A file the mount never changed has no record, so any change to it is someone
//! else's, also while a handle of ours only reads it (the case an "is it open here" test got
//! wrong: a sync client rewriting a file right after a program read it, before the kernel's
//! RELEASE reached us).
//!
//! Records are kept per ciphertext file (its backing inode number), so the numbers of a
//! retired inode and of its successor share one.

use dashmap::DashMap;

use crate::open_files::FileKey;
use crate::page_cache::Stamp;

/// What [`OwnChanges::verdict`] says of a reported change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The ciphertext is as our last change left it.
    Ours,
    /// Someone else changed it (or we never did).
    Theirs,
    /// A change of ours is running or ran while we looked: ask again later.
    Busy,
}

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

    /// Like [`end`](Self::end) for a change of mode, owner or times only, which found the
    /// ciphertext at `before`: the new stamp is taken only if `before` was ours. The kernel
    /// sends the times of a file it cached late (at write-back of the inode, after the last
    /// close), so such a change can land on a file a sync client has rewritten meanwhile; taking
    /// its stamp then would pass the sync client's change off as ours.
    pub fn end_attrs(&self, key: FileKey, before: Option<Stamp>, after: Option<Stamp>) {
        let mut r = self.files.entry(key).or_default();
        r.in_flight = r.in_flight.saturating_sub(1);
        r.generation += 1;
        if before.is_some() && r.stamp == before {
            r.stamp = after;
        }
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
    pub fn verdict(&self, key: FileKey, now: impl FnOnce() -> Option<Stamp>) -> Verdict {
        let before = match self.files.get(&key) {
            None => return Verdict::Theirs,
            Some(r) if r.in_flight > 0 => return Verdict::Busy,
            Some(r) => *r,
        };
        let current = now();
        match self.files.get(&key) {
            Some(r) if r.generation != before.generation => Verdict::Busy,
            Some(_) if current.is_some() && current == before.stamp => Verdict::Ours,
            _ => Verdict::Theirs,
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
        use Verdict::*;
        assert_eq!(o.verdict(1, || st(5)), Theirs, "never changed by us");
        o.begin(1);
        assert_eq!(o.verdict(1, || st(6)), Busy, "in flight");
        o.end(1, st(6));
        assert_eq!(o.verdict(1, || st(6)), Ours);
        assert_eq!(
            o.verdict(1, || st(7)),
            Theirs,
            "changed since, by someone else"
        );
        assert_eq!(o.verdict(1, || None), Theirs, "gone or unreadable");
        // A change of ours that ends while the check reads the stamp: decided later.
        let raced = o.verdict(1, || {
            o.begin(1);
            o.end(1, st(8));
            st(8)
        });
        assert_eq!(raced, Busy);
        assert_eq!(o.verdict(1, || st(8)), Ours);
        // Times set late on a file someone else rewrote: their change stays theirs.
        o.begin(1);
        o.end_attrs(1, st(20), st(21));
        assert_eq!(o.verdict(1, || st(21)), Theirs);
        o.settled(2, st(1));
        o.begin(2);
        o.end_attrs(2, st(1), st(2));
        assert_eq!(o.verdict(2, || st(2)), Ours, "times set on our own state");
        o.forget(2);
        assert_eq!(o.verdict(2, || st(2)), Theirs);
    }
}

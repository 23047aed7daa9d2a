//! Noticing changes made behind the mount's back (a sync client writing into the vault):
//! inotify on the content directory of every directory the kernel holds an inode of, and on the
//! `.c9s` entry of every shortened file it holds.
//!
//! Only what the kernel can have cached is watched: a name it never looked up is read fresh at
//! its first lookup anyway. The watch of a directory is added when its inode is handed to the
//! kernel and removed when the kernel forgets it.
//!
//! The watcher thread reads the events, lets identical ones of one batch count once, and hands
//! them to [`Fs`](crate::ops::Fs), which tells our own changes from others and posts the
//! invalidations (`ops/behind.rs`). Between batches it sleeps 20 ms: a stream of writes to one
//! file then costs one wake-up per 20 ms, not one per write (inotify merges an event into an
//! identical one still unread).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;

use crate::ops::Fs;

/// What one watch is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The content directory of directory inode `0`.
    Dir(u64),
    /// The `.c9s` entry of shortened file inode `0`.
    Shortened(u64),
}

impl Watched {
    fn ino(self) -> u64 {
        match self {
            Watched::Dir(i) | Watched::Shortened(i) => i,
        }
    }
}

/// What an event says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// An entry appeared, or appeared and went, under the name.
    Name,
    /// An entry went from under the name (deleted or renamed away), nothing appeared.
    Gone,
    /// A file's content or attributes changed.
    Content,
}

/// The events asked for: names coming and going, content and attribute changes. Children
/// already unlinked report nothing (`IN_EXCL_UNLINK`): writes to a deleted file still open
/// are nobody's concern.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// How long the thread lets events gather between batches.
const GATHER: Duration = Duration::from_millis(20);

/// The inotify instance and its watches.
///
/// What protects what: `watched` (wd → what) and `by_ino` (ino → wd) are DashMaps updated by
/// request threads (watch on lookup, unwatch on forget) and read by the watcher thread; a wd
/// the kernel reuses for a new watch simply maps to the new owner.
pub struct Watcher {
    fd: Option<OwnedFd>,
    watched: DashMap<i32, Watched>,
    by_ino: DashMap<u64, i32>,
    limit_warned: AtomicBool,
}

impl Default for Watcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Watcher {
    /// A watcher with its own inotify instance (none if inotify is not available: changes
    /// behind the mount then show after the cache time-to-live only).
    pub fn new() -> Self {
        // SAFETY: no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        let fd = if fd < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "no inotify: changes behind the mount show after the cache time-to-live");
            None
        } else {
            // SAFETY: a descriptor we just opened and own.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Watcher {
            fd,
            watched: DashMap::new(),
            by_ino: DashMap::new(),
            limit_warned: AtomicBool::new(false),
        }
    }

    /// Whether inode `ino` is watched.
    pub fn watches(&self, ino: u64) -> bool {
        self.by_ino.contains_key(&ino)
    }

    /// Watches `path` as `what`.
    pub fn watch(&self, path: &Path, what: Watched) {
        let Some(fd) = &self.fd else { return };
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a NUL-terminated path and our inotify descriptor.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSPC)
                && !self.limit_warned.swap(true, Ordering::Relaxed)
            {
                tracing::warn!("the inotify watch limit is reached (fs.inotify.max_user_watches): changes behind the mount in further directories show after the cache time-to-live");
            }
            return;
        }
        self.watched.insert(wd, what);
        self.by_ino.insert(what.ino(), wd);
    }

    /// Stops watching for inode `ino` (the kernel forgot it).
    pub fn unwatch(&self, ino: u64) {
        let Some(fd) = &self.fd else { return };
        let Some((_, wd)) = self.by_ino.remove(&ino) else {
            return;
        };
        // Another inode may share the directory (and so the wd): only its owner removes it.
        if self.watched.remove_if(&wd, |_, w| w.ino() == ino).is_some() {
            // SAFETY: our descriptor and a wd it returned.
            unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
        }
    }

    /// Starts the thread that reads events and hands them to `fs` (which it does not keep
    /// alive: it ends with the file system).
    pub fn start(fs: &Arc<Fs>) {
        let Some(fd) = fs.watcher().fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let weak = Arc::downgrade(fs);
        let spawned = std::thread::Builder::new()
            .name("oxcrypt-watch".into())
            .spawn(move || read_events(fd, &weak));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no watcher thread: changes behind the mount show after the cache time-to-live");
        }
    }
}

/// What one batch saw happen to one entry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Created or renamed in.
    came: bool,
    /// Deleted or renamed away.
    went: bool,
    /// Content or attributes changed.
    content: bool,
}

impl Seen {
    /// The changes to decide, in order: what happened to the name, then to the content.
    fn changes(self) -> Vec<Change> {
        let mut changes = Vec::with_capacity(2);
        if self.came {
            changes.push(Change::Name);
        } else if self.went {
            changes.push(Change::Gone);
        }
        if self.content {
            changes.push(Change::Content);
        }
        changes
    }
}

/// One batch's events, identical ones merged.
#[derive(Default)]
struct Batch {
    /// (watch, entry name) → what changed.
    entries: HashMap<(i32, OsString), Seen>,
    overflow: bool,
    gone: Vec<i32>,
}

fn parse(buf: &[u8], batch: &mut Batch) -> u64 {
    let header = std::mem::size_of::<libc::inotify_event>();
    let (mut at, mut n) = (0, 0);
    while at + header <= buf.len() {
        // SAFETY: the kernel wrote whole events; read_unaligned copes with any alignment.
        let ev: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
        let name_end = (at + header + ev.len as usize).min(buf.len());
        let raw = &buf[at + header..name_end];
        let name = OsStr::from_bytes(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())]);
        at = name_end;
        n += 1;
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            batch.overflow = true;
            continue;
        }
        if ev.mask & libc::IN_IGNORED != 0 {
            batch.gone.push(ev.wd);
            continue;
        }
        let came = ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
        let went = ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0;
        // A directory's own attributes (IN_ISDIR without a name change) are left to the TTL.
        let content = ev.mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB) != 0
            && ev.mask & libc::IN_ISDIR == 0;
        if !(came || went || content) {
            continue;
        }
        let e = batch
            .entries
            .entry((ev.wd, name.to_os_string()))
            .or_default();
        e.came |= came;
        e.went |= went;
        e.content |= content;
    }
    n
}

fn read_events(fd: i32, fs: &Weak<Fs>) {
    let mut buf = vec![0u8; 64 * 1024];
    // Reports left undecided while a change of ours ran, asked again with the next batch.
    let mut again: Vec<((i32, OsString), Seen)> = Vec::new();
    loop {
        if !again.is_empty() {
            // Do not wait for a new event to decide the old ones.
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 0) } == 0 {
                let Some(fs) = fs.upgrade() else { return };
                again = decide(&fs, std::mem::take(&mut again));
                drop(fs);
                std::thread::sleep(GATHER);
                continue;
            }
        }
        // SAFETY: our inotify descriptor (kept open by the Fs, or closed and then EBADF) and
        // a buffer of that length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        let Some(fs) = fs.upgrade() else { return };
        let mut batch = Batch::default();
        for (k, seen) in std::mem::take(&mut again) {
            batch.entries.insert(k, seen);
        }
        let count = parse(&buf[..n as usize], &mut batch);
        tracing::trace!(count, entries = batch.entries.len(), "inotify batch");
        for wd in batch.gone {
            if let Some((_, w)) = fs.watcher().watched.remove(&wd) {
                fs.watcher().by_ino.remove_if(&w.ino(), |_, v| *v == wd);
            }
        }
        if batch.overflow {
            tracing::warn!("inotify queue overflow: every cached file is invalidated");
            fs.all_changed_behind();
        }
        again = decide(&fs, batch.entries.into_iter().collect());
        drop(fs);
        std::thread::sleep(GATHER);
    }
}

/// Hands each report to `fs`; returns those it could not decide yet.
fn decide(fs: &Fs, reports: Vec<((i32, OsString), Seen)>) -> Vec<((i32, OsString), Seen)> {
    let mut again = Vec::new();
    for ((wd, name), seen) in reports {
        let Some(what) = fs.watcher().watched.get(&wd).map(|w| *w) else {
            continue;
        };
        let decided = match what {
            // Every change the report holds is decided, each even when one before it was not
            // (the report is asked again; deciding a name twice is harmless): a name that came
            // (our own create) and then had its content rewritten by a sync client, in one
            // batch, is a name change that is ours *and* a content change that is not.
            Watched::Dir(dir) => {
                let mut all = true;
                for change in seen.changes() {
                    all &= fs.changed_behind(dir, &name, change);
                }
                all
            }
            Watched::Shortened(ino) => {
                name != OsStr::new(oxcrypt_core::node::CONTENTS_FILE)
                    || fs.content_changed_behind(ino)
            }
        };
        if !decided {
            again.push(((wd, name), seen));
        }
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(wd: i32, mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        padded.resize((name.len() + 1).next_multiple_of(16), 0);
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
        v.extend_from_slice(&padded);
        v
    }

    #[test]
    fn a_batch_merges_events_per_entry_and_keeps_overflow_and_removed_watches() {
        let mut buf = event(3, libc::IN_MODIFY, "a.c9r");
        buf.extend(event(3, libc::IN_MODIFY, "a.c9r"));
        buf.extend(event(3, libc::IN_CLOSE_WRITE, "a.c9r"));
        buf.extend(event(3, libc::IN_CREATE, "b.c9r"));
        buf.extend(event(3, libc::IN_DELETE, "c.c9r"));
        buf.extend(event(3, libc::IN_ATTRIB | libc::IN_ISDIR, "d.c9r"));
        buf.extend(event(4, libc::IN_IGNORED, ""));
        buf.extend(event(-1, libc::IN_Q_OVERFLOW, ""));
        let mut b = Batch::default();
        assert_eq!(parse(&buf, &mut b), 8);
        assert_eq!(
            b.entries.len(),
            3,
            "{:?}",
            b.entries.keys().collect::<Vec<_>>()
        );
        let seen = |came, went, content| Seen {
            came,
            went,
            content,
        };
        assert_eq!(b.entries[&(3, "a.c9r".into())], seen(false, false, true));
        assert_eq!(b.entries[&(3, "b.c9r".into())], seen(true, false, false));
        assert_eq!(b.entries[&(3, "c.c9r".into())], seen(false, true, false));
        assert_eq!(b.gone, vec![4]);
        assert!(b.overflow);
    }

    #[test]
    fn a_name_that_came_and_had_its_content_changed_in_one_batch_reports_both() {
        // Our own create of a.txt, then a sync client rewriting its ciphertext in place,
        // read in one batch (the watcher was busy: seen under CPU load). Before, only the name
        // was decided (ours: the same file on disk and in the table), and the client's
        // rewrite was lost until the next event.
        let mut buf = event(3, libc::IN_CREATE, "a.c9r");
        buf.extend(event(3, libc::IN_CLOSE_WRITE, "a.c9r"));
        buf.extend(event(3, libc::IN_MODIFY, "a.c9r"));
        let mut b = Batch::default();
        parse(&buf, &mut b);
        let seen = b.entries[&(3, "a.c9r".into())];
        assert_eq!(seen.changes(), vec![Change::Name, Change::Content]);
        let gone = Seen {
            went: true,
            content: true,
            ..Seen::default()
        };
        assert_eq!(gone.changes(), vec![Change::Gone, Change::Content]);
        let content = Seen {
            content: true,
            ..Seen::default()
        };
        assert_eq!(content.changes(), vec![Change::Content]);
    }
}

//! The open-file table: every open file handle, and per ciphertext file the one [`OpenFile`]
//! that all its handles share (so a file has exactly one lock, whoever opened it, and under
//! whichever inode number: a name whose inode was retired after a change behind the mount
//! gets a new number for the same ciphertext, and both numbers' handles share one file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use oxcrypt_core::vault::FileHandle;
use oxcrypt_io::OpenFile;
use slab::Slab;

use crate::page_cache::{PageCachePolicy, Stamp};

/// The identity of a ciphertext file: its inode number on the backing file system (unique
/// while the file is open, since an open file's inode is not reused).
pub type FileKey = u64;

/// One open file handle (what FUSE calls `fh`).
struct Handle {
    file: Arc<OpenFile>,
    key: FileKey,
    /// Opened with O_APPEND (and the kernel leaves append offsets to us).
    append: bool,
}

/// The table of open files.
///
/// What protects what:
/// - `handles` (a mutex around a slab): the handle slots only. It is held to insert, look up
///   or remove one handle, never across I/O.
/// - `by_file` (a DashMap): which [`OpenFile`] the handles of one ciphertext file share. The
///   entry is held while a file is opened, so two concurrent opens of one file share it.
/// - The file's content, size and header: the file's own lock, inside
///   [`FileHandle`](oxcrypt_core::vault::FileHandle). Nothing here touches them.
/// - Whether the kernel may keep an inode's pages: `page_cache` ([`PageCachePolicy`]), by
///   FUSE inode number (the kernel caches pages per inode).
#[derive(Default)]
pub struct OpenFileTable {
    handles: Mutex<Slab<Handle>>,
    by_file: DashMap<FileKey, Weak<OpenFile>>,
    next_id: AtomicU64,
    page_cache: PageCachePolicy,
}

impl OpenFileTable {
    /// The open file `key`, if a handle has it open.
    pub fn shared(&self, key: FileKey) -> Option<Arc<OpenFile>> {
        self.by_file.get(&key).and_then(|w| w.upgrade())
    }

    /// The open file `key`, opened with `open` if no handle has it open.
    pub fn open_or_share<E>(
        &self,
        key: FileKey,
        open: impl FnOnce() -> Result<FileHandle, E>,
    ) -> Result<Arc<OpenFile>, E> {
        match self.by_file.entry(key) {
            Entry::Occupied(mut e) => {
                if let Some(f) = e.get().upgrade() {
                    return Ok(f);
                }
                let f = self.wrap(open()?);
                e.insert(Arc::downgrade(&f));
                Ok(f)
            }
            Entry::Vacant(e) => {
                let f = self.wrap(open()?);
                e.insert(Arc::downgrade(&f));
                Ok(f)
            }
        }
    }

    fn wrap(&self, handle: FileHandle) -> Arc<OpenFile> {
        OpenFile::new(self.next_id.fetch_add(1, Ordering::Relaxed), handle)
    }

    /// Makes `handle` (a file just created) the open file `key`.
    pub fn share_new(&self, key: FileKey, handle: FileHandle) -> Arc<OpenFile> {
        let f = self.wrap(handle);
        self.by_file.insert(key, Arc::downgrade(&f));
        f
    }

    /// A new handle of inode `ino` over `file` (the open file `key`), and whether the kernel
    /// may keep the inode's cached pages. `now` is the ciphertext's stamp (None for a file
    /// just created).
    pub fn insert(
        &self,
        ino: u64,
        key: FileKey,
        file: Arc<OpenFile>,
        append: bool,
        now: Option<Stamp>,
    ) -> (u64, bool) {
        let keep = self.page_cache.opened(ino, now);
        let fh = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Handle { file, key, append }) as u64;
        (fh, keep)
    }

    /// The open file of handle `fh` and whether it appends.
    pub fn get(&self, fh: u64) -> Option<(Arc<OpenFile>, bool)> {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        handles.get(fh as usize).map(|h| (h.file.clone(), h.append))
    }

    /// Records a write to `ino` (for the page-cache policy).
    pub fn wrote(&self, ino: u64) {
        self.page_cache.wrote(ino);
    }

    /// Closes handle `fh` of `ino`; `stamp` gives the ciphertext's stamp for the page-cache
    /// policy. Returns whether the handle existed.
    pub fn remove(&self, ino: u64, fh: u64, stamp: impl FnOnce() -> Option<Stamp>) -> bool {
        let handle = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_remove(fh as usize);
        let Some(h) = handle else {
            return false;
        };
        self.page_cache.closed(ino, stamp);
        if Arc::strong_count(&h.file) == 1 {
            // Only if the entry is still this file (a detached file's key may have a new one).
            self.by_file.remove_if(&h.key, |_, w| {
                std::ptr::eq(w.as_ptr(), Arc::as_ptr(&h.file)) && w.strong_count() <= 1
            });
        }
        true
    }

    /// The ciphertext `key` changed behind the mount's back: the open file (its header and
    /// size as read at open) is no longer shared with new opens, which read the file afresh.
    /// Handles already open keep it (a file changed under an open handle is a conflict; what
    /// they read is checked against the header they have, so they get EIO, never wrong
    /// bytes).
    ///
    /// What was decrypted ahead of its readers is dropped: those bytes may be older than the
    /// change, and a reader of an open handle must not get them after it was noticed.
    pub fn detach(&self, key: FileKey) {
        if let Some((_, file)) = self.by_file.remove(&key) {
            if let Some(file) = file.upgrade() {
                file.drop_decrypted_ahead();
            }
        }
    }

    /// The kernel forgot `ino`: drops what the page-cache policy kept of it.
    pub fn forget(&self, ino: u64) {
        self.page_cache.forget(ino);
    }

    /// Every file open now.
    pub fn all(&self) -> Vec<Arc<OpenFile>> {
        self.by_file.iter().filter_map(|e| e.upgrade()).collect()
    }
}

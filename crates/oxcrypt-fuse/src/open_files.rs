//! The open-file table: every open file handle, and per inode the one [`OpenFile`] that all
//! handles of that inode share (so a file has exactly one lock, whoever opened it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use oxcrypt_core::vault::FileHandle;
use oxcrypt_io::OpenFile;
use slab::Slab;

use crate::page_cache::{PageCachePolicy, Stamp};

/// One open file handle (what FUSE calls `fh`).
struct Handle {
    file: Arc<OpenFile>,
    /// Opened with O_APPEND (and the kernel leaves append offsets to us).
    append: bool,
}

/// The table of open files.
///
/// What protects what:
/// - `handles` (a mutex around a slab): the handle slots only. It is held to insert, look up
///   or remove one handle, never across I/O.
/// - `by_inode` (a DashMap): which [`OpenFile`] an inode's handles share. The entry is held
///   while a file is opened, so two concurrent opens of one inode share one file.
/// - The file's content, size and header: the file's own lock, inside
///   [`FileHandle`](oxcrypt_core::vault::FileHandle). Nothing here touches them.
/// - Whether the kernel may keep an inode's pages: `page_cache` ([`PageCachePolicy`]).
#[derive(Default)]
pub struct OpenFileTable {
    handles: Mutex<Slab<Handle>>,
    by_inode: DashMap<u64, Weak<OpenFile>>,
    next_id: AtomicU64,
    page_cache: PageCachePolicy,
}

impl OpenFileTable {
    /// The open file of `ino`, if a handle has it open.
    pub fn shared(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.by_inode.get(&ino).and_then(|w| w.upgrade())
    }

    /// The open file of `ino`, opened with `open` if no handle has it open.
    pub fn open_or_share<E>(
        &self,
        ino: u64,
        open: impl FnOnce() -> Result<FileHandle, E>,
    ) -> Result<Arc<OpenFile>, E> {
        match self.by_inode.entry(ino) {
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

    /// Makes `handle` (a file just created) the open file of `ino`.
    pub fn share_new(&self, ino: u64, handle: FileHandle) -> Arc<OpenFile> {
        let f = self.wrap(handle);
        self.by_inode.insert(ino, Arc::downgrade(&f));
        f
    }

    /// A new handle of `ino` over `file`, and whether the kernel may keep the inode's cached
    /// pages. `now` is the ciphertext's stamp (None for a file just created).
    pub fn insert(
        &self,
        ino: u64,
        file: Arc<OpenFile>,
        append: bool,
        now: Option<Stamp>,
    ) -> (u64, bool) {
        let keep = self.page_cache.opened(ino, now);
        let fh = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Handle { file, append }) as u64;
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
            self.by_inode.remove_if(&ino, |_, w| w.strong_count() <= 1);
        }
        true
    }

    /// The kernel forgot `ino`: drops what the page-cache policy kept of it.
    pub fn forget(&self, ino: u64) {
        self.page_cache.forget(ino);
    }

    /// Every file open now.
    pub fn all(&self) -> Vec<Arc<OpenFile>> {
        self.by_inode.iter().filter_map(|e| e.upgrade()).collect()
    }
}

//! Directory operations: opendir, readdir, readdirplus, releasedir, fsyncdir. An open
//! directory reads from the listing snapshot taken at opendir (cached per directory for the
//! metadata TTL), so offsets stay stable while it is read.

use std::sync::Arc;

use oxcrypt_core::vault::{FileType, NodeKind};
use oxcrypt_core::Node;

use super::{Entry, Errno, Fs, OpResult, Opened};
use crate::cache::Listed;
use crate::inodes::{unlooked_ino, ROOT_INO};

/// One entry of a directory page.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// Inode number shown.
    pub ino: u64,
    /// Offset of the entry after this one (what the next READDIR passes back).
    pub offset: u64,
    /// File type.
    pub kind: FileType,
    /// Cleartext name.
    pub name: &'a str,
}

/// Entries whose attributes a READDIRPLUS reads ahead at once.
const ATTR_PREFETCH: usize = 64;
/// ... when at least this many of them are unread.
const ATTR_PREFETCH_MIN: usize = 16;
/// ... on this many threads.
const ATTR_PREFETCH_THREADS: usize = 8;

/// The file type of a node, known without a `stat`.
fn kind_of(n: &Node) -> FileType {
    match n.kind {
        NodeKind::File => FileType::File,
        NodeKind::Directory(_) => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
    }
}

impl Fs {
    /// The listing of a directory (cached), sorted by name.
    fn listing(&self, ino: u64) -> OpResult<Arc<Vec<Listed>>> {
        if let Some(l) = self.cache.listing(ino) {
            return Ok(l);
        }
        let node = self.node(ino)?;
        let id = node.dir_id().ok_or(Errno::ENOTDIR)?;
        let mut out: Vec<Listed> = self
            .vault
            .list(id)?
            .into_iter()
            .map(|child| Listed::new(child.name.clone(), child))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let l = Arc::new(out);
        self.cache.put_listing(ino, l.clone());
        Ok(l)
    }

    /// The listing snapshot of an open directory handle.
    fn dir_listing(&self, fh: u64) -> OpResult<Arc<Vec<Listed>>> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fh as usize)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// The parent inode of directory `ino` (the root is its own parent).
    fn parent_of(&self, ino: u64) -> u64 {
        self.inodes
            .get(ino)
            .map(|i| i.place().0)
            .unwrap_or(ROOT_INO)
    }

    /// OPENDIR.
    pub fn opendir(&self, ino: u64) -> OpResult<Opened> {
        let l = self.listing(ino)?;
        let fh = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(l);
        Ok(Opened {
            fh: fh as u64,
            keep_cache: false,
        })
    }

    /// READDIR from `offset`: entries go to `add`, which returns true when the page is full.
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> OpResult<()> {
        let listing = self.dir_listing(fh)?;
        let parent = self.parent_of(ino);
        let dots = [(ino, "."), (parent, "..")];
        for (i, (dino, name)) in dots.iter().enumerate().skip(offset as usize) {
            let e = DirEntry {
                ino: *dino,
                offset: i as u64 + 1,
                kind: FileType::Directory,
                name,
            };
            if add(e) {
                return Ok(());
            }
        }
        for (k, e) in listing
            .iter()
            .enumerate()
            .skip(offset.saturating_sub(2) as usize)
        {
            let shown = self
                .inodes
                .peek(ino, &e.name)
                .unwrap_or_else(|| unlooked_ino(ino, &e.name));
            let entry = DirEntry {
                ino: shown,
                offset: k as u64 + 3,
                kind: kind_of(&e.node),
                name: &e.name,
            };
            if add(entry) {
                break;
            }
        }
        Ok(())
    }

    /// READDIRPLUS from `offset`: entries with their attributes go to `add`, which returns
    /// true when the page is full. Each entry added counts as a lookup (undone for the one
    /// that did not fit).
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(DirEntry<'_>, &Entry) -> bool,
    ) -> OpResult<()> {
        let listing = self.dir_listing(fh)?;
        let inode = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let parent = inode.place().0;
        let self_attr = self.attr(ino, &inode.node()).map_err(|_| Errno::ENOENT)?;
        if offset == 0 {
            let e = DirEntry {
                ino,
                offset: 1,
                kind: FileType::Directory,
                name: ".",
            };
            if add(e, &self.entry(ino, self_attr)) {
                return Ok(());
            }
        }
        if offset <= 1 {
            let pattr = self
                .node(parent)
                .and_then(|n| self.attr(parent, &n))
                .unwrap_or(self_attr);
            let e = DirEntry {
                ino: parent,
                offset: 2,
                kind: FileType::Directory,
                name: "..",
            };
            if add(e, &self.entry(parent, pattr)) {
                return Ok(());
            }
        }
        for (k, e) in listing
            .iter()
            .enumerate()
            .skip(offset.saturating_sub(2) as usize)
        {
            if !e.has_attr() {
                self.prefetch_attrs(&listing[k..]);
            }
            // An entry that vanished or cannot be read since the listing is left out.
            let Some(attr) = e.attr(&self.vault) else {
                continue;
            };
            if self.refuse_cycle(ino, &e.node).is_err() {
                continue;
            }
            let child = self.remember(ino, &e.name, e.node.clone(), attr.ino);
            let attr = self.cache.attr(child).unwrap_or(attr);
            let entry = DirEntry {
                ino: child,
                offset: k as u64 + 3,
                kind: kind_of(&e.node),
                name: &e.name,
            };
            if add(entry, &self.entry(child, attr)) {
                self.forget(child, 1);
                break;
            }
        }
        Ok(())
    }

    /// Reads the attributes of the next entries of a listing on several threads when many
    /// are unread: after `drop_caches` (or on a cold disk) each is a disk read of the
    /// ciphertext inode, ~80 µs here, and one after another they made a cold `ls` of a
    /// 10,000-entry directory take 20+ ms.
    fn prefetch_attrs(&self, next: &[Listed]) {
        let window = &next[..next.len().min(ATTR_PREFETCH)];
        if window.iter().filter(|e| !e.has_attr()).count() < ATTR_PREFETCH_MIN {
            return;
        }
        std::thread::scope(|s| {
            for part in window.chunks(window.len().div_ceil(ATTR_PREFETCH_THREADS)) {
                let vault = &self.vault;
                s.spawn(move || {
                    for e in part {
                        e.attr(vault);
                    }
                });
            }
        });
    }

    /// RELEASEDIR.
    pub fn releasedir(&self, fh: u64) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_remove(fh as usize);
    }

    /// FSYNCDIR: makes the directory's entries durable, long names and new directories
    /// included (see `Vault::sync_dir_entries`).
    pub fn fsyncdir(&self, ino: u64) -> OpResult<()> {
        let id = self.dir_id(ino)?;
        Ok(self.vault.sync_dir_entries(&id)?)
    }
}

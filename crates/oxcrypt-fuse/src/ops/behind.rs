//! Changes behind the mount's back: what the watcher (`watch.rs`) reports, told apart from
//! our own changes, and turned into invalidations of exactly what changed.
//!
//! Our own changes make the same inotify events as a sync client's, so each report is checked
//! against what we know before anything is invalidated:
//! - a name that came or went: the entry on disk is compared with the inode table (same
//!   backing file under the name, or neither has it: ours); a name that only went and that the
//!   table no longer has is ours without looking (our unlink or rename dropped it first);
//! - a file's content: ours if one of our changes to it is in flight, or the ciphertext still
//!   has the stamp our last change left (`own_changes.rs`); a file we never changed was
//!   changed by someone else.
//!
//! An invalidation **retires** the inode: the name is unlinked from its number in the table,
//! so the next lookup gets a new number and the kernel a new inode. That is what makes a new
//! size visible with the writeback cache, where the kernel keeps its own size of an inode it
//! holds and ignores ours. The kernel is told to drop the name (`INVAL_ENTRY`) and the old
//! inode's pages and attributes (`INVAL_INODE`). A wrong guess costs one extra lookup and a
//! cold read, never a stale byte.

use std::ffi::OsStr;

use bumpalo::Bump;
use oxcrypt_core::{Node, NodeKind};

use super::files::stamp;
use super::Fs;
use crate::notify::Notice;
use crate::own_changes::Verdict;
use crate::watch::{Change, Watched};

impl Fs {
    /// Registers a looked-up or created node with the kernel (one lookup counted) and watches
    /// it if it is a directory or a shortened file.
    pub(super) fn remember(&self, parent: u64, name: &str, node: Node, backing: u64) -> u64 {
        let dir_id = node.dir_id().cloned();
        let short =
            (node.shortened && matches!(node.kind, NodeKind::File)).then(|| node.entry.clone());
        let ino = self.inodes.lookup(parent, name, node, backing);
        if let Some(id) = dir_id {
            if !self.watcher.watches(ino) {
                self.watcher
                    .watch(&self.vault.content_dir(&id), Watched::Dir(ino));
            }
        } else if let Some(entry) = short {
            if !self.watcher.watches(ino) {
                self.watcher.watch(&entry, Watched::Shortened(ino));
            }
        }
        ino
    }

    /// The watcher reported `change` for the entry `file_name` of directory `dir`'s content
    /// directory. False: undecided while a change of ours to the file runs; report it again.
    pub fn changed_behind(&self, dir: u64, file_name: &OsStr, change: Change) -> bool {
        let Some(dir_id) = self
            .inodes
            .get(dir)
            .and_then(|d| d.node().dir_id().cloned())
        else {
            return true;
        };
        if change != Change::Content {
            // Our listing is dropped either way (our own changes dropped it already).
            self.cache.dir_changed(dir);
        }
        let name = file_name
            .to_str()
            .and_then(|f| self.vault.entry_name(&dir_id, f))
            .or_else(|| self.inodes.child_by_entry(dir, file_name).map(|(_, n)| n));
        let Some(name) = name else { return true };
        let known = self.inodes.peek(dir, &name);
        tracing::trace!(dir, ?change, ?known, "change reported");
        let ours = match change {
            // Gone, and the kernel holds no inode under the name (ours went with our own
            // unlink or rename): nothing to drop, no need to look at the disk.
            Change::Gone if known.is_none() => true,
            Change::Name | Change::Gone => {
                let on_disk = self
                    .vault
                    .lookup_attr_in(&dir_id, &name, &Bump::new())
                    .ok()
                    .flatten()
                    .map(|(_, attr)| attr.ino);
                let in_table = known.and_then(|i| self.inodes.get(i)).map(|i| i.backing());
                on_disk == in_table
            }
            Change::Content => match known.map(|ino| self.content_verdict(ino)) {
                Some(Verdict::Busy) => return false,
                Some(v) => v == Verdict::Ours,
                // The kernel holds no inode under that name: nothing of it is cached.
                None => true,
            },
        };
        if !ours {
            tracing::debug!(dir, ?change, "changed behind the mount: invalidated");
            if let Some(ino) = known {
                self.detach(ino);
            }
            self.retire(dir, &name, known);
        }
        true
    }

    /// The watcher reported a change of shortened file `ino`'s content file. False:
    /// undecided, report it again.
    pub fn content_changed_behind(&self, ino: u64) -> bool {
        match self.content_verdict(ino) {
            Verdict::Busy => return false,
            Verdict::Theirs => {
                self.detach(ino);
                self.retire_inode(ino);
            }
            Verdict::Ours => {}
        }
        true
    }

    /// The watcher lost events: every file the kernel holds and nobody has open here is
    /// retired, and every listing dropped.
    pub fn all_changed_behind(&self) {
        for (ino, inode) in self.inodes.all() {
            if inode.node().is_dir() {
                self.cache.dir_changed(ino);
            } else if self.files.shared(inode.backing()).is_none() {
                self.detach(ino);
                self.retire_inode(ino);
            }
        }
    }

    /// Whose is the reported content change of `ino` (see `own_changes.rs`); only files
    /// count (a directory's or symlink's attributes are left to the cache's lifetime).
    fn content_verdict(&self, ino: u64) -> Verdict {
        let Some(inode) = self.inodes.get(ino) else {
            return Verdict::Ours;
        };
        let node = inode.node();
        if !matches!(node.kind, NodeKind::File) {
            return Verdict::Ours;
        }
        self.own.verdict(inode.backing(), || stamp(&node))
    }

    /// New opens of `ino`'s ciphertext read it afresh (its header may have changed).
    fn detach(&self, ino: u64) {
        if let Some(inode) = self.inodes.get(ino) {
            self.files.detach(inode.backing());
        }
    }

    /// Retires inode `ino` under its current name (see the module doc).
    pub(super) fn retire_inode(&self, ino: u64) {
        if let Some(inode) = self.inodes.get(ino) {
            let (parent, name) = inode.place();
            self.retire(parent, &name, Some(ino));
        }
    }

    fn retire(&self, parent: u64, name: &str, ino: Option<u64>) {
        self.cache.dir_changed(parent);
        self.inodes.removed(parent, name);
        if let Some(ino) = ino {
            self.cache.forget_attr(ino);
            self.files.forget(ino);
            self.notices.post(Notice::Inode(ino));
        }
        self.notices.post(Notice::Entry {
            parent,
            name: name.to_string(),
        });
    }
}

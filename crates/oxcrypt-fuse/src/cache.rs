//! Metadata caches answered synchronously in the FUSE threads: attributes per inode and
//! directory listings per directory inode. Every change made through the mount invalidates the
//! entries it touches; a short time-to-live covers changes made behind the mount's back (vaults
//! often live in sync folders).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use oxcrypt_core::{Attr, Node, Vault};

/// One entry of a cached listing. Its attributes are read on first use: a plain `readdir`
/// (as in `ls` or `find -name`) needs only names and kinds, so a large directory is listed
/// without one `stat` per entry.
#[derive(Debug)]
pub struct Listed {
    /// Cleartext name (NFC).
    pub name: String,
    /// The vault node.
    pub node: Node,
    attr: OnceLock<Option<Attr>>,
}

impl Listed {
    /// An entry whose attributes are not read yet.
    pub fn new(name: String, node: Node) -> Self {
        Listed {
            name,
            node,
            attr: OnceLock::new(),
        }
    }

    /// Whether its attributes were read already.
    pub fn has_attr(&self) -> bool {
        self.attr.get().is_some()
    }

    /// Its attributes, read once from `vault`; `None` if the entry vanished or cannot be read.
    pub fn attr(&self, vault: &Vault) -> Option<Attr> {
        *self.attr.get_or_init(|| vault.stat(&self.node).ok())
    }
}

/// Attribute and listing caches.
#[derive(Debug)]
pub struct MetaCache {
    ttl: Duration,
    attrs: DashMap<u64, (Attr, Instant)>,
    /// Bumped by every [`forget_attr`](Self::forget_attr): attributes read before a change
    /// are not stored after it (see [`put_attr_read_at`](Self::put_attr_read_at)).
    epochs: DashMap<u64, u64>,
    listings: DashMap<u64, (Arc<Vec<Listed>>, Instant)>,
}

impl MetaCache {
    /// Caches whose entries expire after `ttl` (zero disables caching).
    pub fn new(ttl: Duration) -> Self {
        MetaCache {
            ttl,
            attrs: DashMap::new(),
            epochs: DashMap::new(),
            listings: DashMap::new(),
        }
    }

    /// The time-to-live of entries (also given to the kernel).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.ttl
    }

    /// Cached attributes of `ino`, if fresh.
    pub fn attr(&self, ino: u64) -> Option<Attr> {
        self.attrs
            .get(&ino)
            .filter(|e| self.fresh(e.1))
            .map(|e| e.0)
    }

    /// Stores attributes of `ino`.
    pub fn put_attr(&self, ino: u64, attr: Attr) {
        if !self.ttl.is_zero() {
            self.attrs.insert(ino, (attr, Instant::now()));
        }
    }

    /// Drops the attributes of `ino`; attributes read before this call are not stored after it.
    pub fn forget_attr(&self, ino: u64) {
        *self.epochs.entry(ino).or_insert(0) += 1;
        self.attrs.remove(&ino);
    }

    /// The mark to take before reading the attributes of `ino` from disk.
    pub fn epoch(&self, ino: u64) -> u64 {
        self.epochs.get(&ino).map(|e| *e).unwrap_or(0)
    }

    /// Stores attributes of `ino` read after [`epoch`](Self::epoch) returned `epoch`, unless
    /// they were forgotten since (a change finished while they were read: they may be old).
    pub fn put_attr_read_at(&self, ino: u64, attr: Attr, epoch: u64) {
        if self.ttl.is_zero() {
            return;
        }
        // The epoch entry is held while inserting, so a forget cannot slip in between.
        let current = self.epochs.entry(ino).or_insert(0);
        if *current == epoch {
            self.attrs.insert(ino, (attr, Instant::now()));
        }
    }

    /// Forgets everything about `ino` (the kernel forgot the inode).
    pub fn drop_inode(&self, ino: u64) {
        self.attrs.remove(&ino);
        self.epochs.remove(&ino);
        self.listings.remove(&ino);
    }

    /// Cached listing of directory `ino`, if fresh.
    pub fn listing(&self, ino: u64) -> Option<Arc<Vec<Listed>>> {
        self.listings
            .get(&ino)
            .filter(|e| self.fresh(e.1))
            .map(|e| e.0.clone())
    }

    /// Stores the listing of directory `ino` (sorted by name).
    pub fn put_listing(&self, ino: u64, listing: Arc<Vec<Listed>>) {
        if !self.ttl.is_zero() {
            self.listings.insert(ino, (listing, Instant::now()));
        }
    }

    /// A directory's entries changed: drop its listing and attributes.
    pub fn dir_changed(&self, ino: u64) {
        self.listings.remove(&ino);
        self.attrs.remove(&ino);
    }
}

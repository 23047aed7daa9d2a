//! The inode table: FUSE inode numbers ↔ vault nodes, with kernel lookup counts.
//!
//! Inode numbers are the backing file system's inode of the node's attribute file (the payload
//! of files and symlinks, the content directory of directories), so they are stable across
//! renames and remounts and need no allocation in `readdir`. The root is always 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use oxcrypt_core::{Attr, Node};

/// FUSE's root inode.
pub const ROOT_INO: u64 = 1;

/// What the table knows of one inode.
#[derive(Debug)]
pub struct Inode {
    /// Parent inode and name (changed by rename).
    pub place: RwLock<(u64, String)>,
    /// The vault node (its ciphertext entry changes on rename).
    pub node: RwLock<Node>,
    lookups: AtomicU64,
}

impl Inode {
    /// The current vault node.
    pub fn node(&self) -> Node {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current parent inode and name.
    pub fn place(&self) -> (u64, String) {
        self.place.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Maps inode numbers to nodes.
#[derive(Debug, Default)]
pub struct InodeTable {
    by_ino: DashMap<u64, Arc<Inode>>,
}

/// The FUSE inode number for a node's attributes.
pub fn ino_of(node: &Node, attr: &Attr) -> u64 {
    if node.dir_id().is_some_and(|id| id.is_empty()) {
        ROOT_INO
    } else if attr.ino == ROOT_INO {
        // Only on backing file systems that hand out inode 1 (never ext4/xfs/btrfs).
        u64::MAX - 1
    } else {
        attr.ino
    }
}

impl InodeTable {
    /// A table holding the root.
    pub fn new(root: Node) -> Self {
        let t = InodeTable::default();
        t.by_ino.insert(
            ROOT_INO,
            Arc::new(Inode {
                place: RwLock::new((ROOT_INO, String::new())),
                node: RwLock::new(root),
                lookups: AtomicU64::new(1),
            }),
        );
        t
    }

    /// The inode, if the kernel knows it.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.by_ino.get(&ino).map(|e| e.clone())
    }

    /// Records that the kernel got `ino` for `name` in `parent` (one more lookup).
    pub fn remember(&self, ino: u64, parent: u64, name: &str, node: Node) {
        let entry = self.by_ino.entry(ino).or_insert_with(|| {
            Arc::new(Inode {
                place: RwLock::new((parent, name.to_string())),
                node: RwLock::new(node.clone()),
                lookups: AtomicU64::new(0),
            })
        });
        *entry.place.write().unwrap_or_else(|p| p.into_inner()) = (parent, name.to_string());
        *entry.node.write().unwrap_or_else(|p| p.into_inner()) = node;
        entry.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// Updates the place and node of a known inode (after rename) without a lookup.
    pub fn moved(&self, ino: u64, parent: u64, name: &str, node: Node) {
        if let Some(entry) = self.by_ino.get(&ino) {
            *entry.place.write().unwrap_or_else(|p| p.into_inner()) = (parent, name.to_string());
            *entry.node.write().unwrap_or_else(|p| p.into_inner()) = node;
        }
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        self.by_ino.remove_if(&ino, |_, e| {
            let before = e
                .lookups
                .fetch_sub(n.min(e.lookups.load(Ordering::Relaxed)), Ordering::Relaxed);
            before <= n
        });
    }

    /// Number of inodes known (for tests and stats).
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// Whether only the root is known.
    pub fn is_empty(&self) -> bool {
        self.by_ino.len() <= 1
    }
}

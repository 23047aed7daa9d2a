//! The inode table: FUSE inode numbers ↔ vault nodes, with kernel lookup counts.
//!
//! Inode numbers are allocated here, one per (parent, name, backing file): a name whose file
//! was deleted and created again gets a new number, so the kernel never sees a cached inode
//! change type under the same number (backing inode numbers are reused by ext4 at once).
//! The root is always 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use oxcrypt_core::Node;

/// FUSE's root inode.
pub const ROOT_INO: u64 = 1;

/// What the table knows of one inode.
#[derive(Debug)]
pub struct Inode {
    /// Parent inode and name (changed by rename).
    pub place: RwLock<(u64, String)>,
    /// The vault node (its ciphertext entry changes on rename).
    pub node: RwLock<Node>,
    /// Inode number of the backing file (tells a recreated name from the old one).
    backing: u64,
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

    /// Inode number of the backing file: the identity of the ciphertext behind this inode.
    pub fn backing(&self) -> u64 {
        self.backing
    }

    /// The parent inode.
    pub fn parent(&self) -> u64 {
        self.place.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Whether this inode is the directory with id `id`.
    pub fn is_dir_id(&self, id: &str) -> bool {
        let node = self.node.read().unwrap_or_else(|p| p.into_inner());
        node.dir_id().is_some_and(|d| &**d == id)
    }

    fn set(&self, parent: u64, name: &str, node: Node) {
        *self.place.write().unwrap_or_else(|p| p.into_inner()) = (parent, name.to_string());
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = node;
    }
}

/// Maps inode numbers to nodes and (parent, name) to inode numbers.
#[derive(Debug)]
pub struct InodeTable {
    by_ino: DashMap<u64, Arc<Inode>>,
    by_name: DashMap<(u64, String), u64>,
    next: AtomicU64,
}

/// Inode number shown by plain `readdir` for an entry the kernel has not looked up yet: a hash
/// of (parent, name), so no `stat` is needed; the high bit keeps it apart from allocated
/// numbers.
pub fn unlooked_ino(parent: u64, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (parent, name).hash(&mut h);
    h.finish() | (1 << 63)
}

impl InodeTable {
    /// A table holding the root.
    pub fn new(root: Node) -> Self {
        let t = InodeTable {
            by_ino: DashMap::new(),
            by_name: DashMap::new(),
            next: AtomicU64::new(ROOT_INO + 1),
        };
        t.by_ino.insert(
            ROOT_INO,
            Arc::new(Inode {
                place: RwLock::new((ROOT_INO, String::new())),
                node: RwLock::new(root),
                backing: 0,
                lookups: AtomicU64::new(1),
            }),
        );
        t
    }

    /// The inode, if the kernel knows it.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.by_ino.get(&ino).map(|e| e.clone())
    }

    /// The inode number of `name` in `parent`, if one is allocated.
    pub fn peek(&self, parent: u64, name: &str) -> Option<u64> {
        self.by_name.get(&(parent, name.to_string())).map(|e| *e)
    }

    /// The inode of `name` (NFC) in `parent` whose backing file is `backing`, allocated if
    /// new; counts one kernel lookup.
    pub fn lookup(&self, parent: u64, name: &str, node: Node, backing: u64) -> u64 {
        // The name's entry is held from the check to the insert, so two concurrent lookups of
        // one name agree on one number.
        let mut by_name = self.by_name.entry((parent, name.to_string())).or_insert(0);
        if let Some(entry) = self.by_ino.get(&*by_name) {
            if entry.backing == backing {
                entry.set(parent, name, node);
                entry.lookups.fetch_add(1, Ordering::Relaxed);
                return *by_name;
            }
        }
        let ino = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_ino.insert(
            ino,
            Arc::new(Inode {
                place: RwLock::new((parent, name.to_string())),
                node: RwLock::new(node),
                backing,
                lookups: AtomicU64::new(1),
            }),
        );
        *by_name = ino;
        ino
    }

    /// The child of `parent` whose ciphertext entry is named `file_name` (for a change
    /// reported by ciphertext name when the cleartext name can no longer be read: a deleted
    /// `.c9s` entry). Scans the table: only for that rare case.
    pub fn child_by_entry(
        &self,
        parent: u64,
        file_name: &std::ffi::OsStr,
    ) -> Option<(u64, String)> {
        self.by_ino.iter().find_map(|e| {
            let (p, name) = e.place();
            (p == parent && e.node().entry.file_name() == Some(file_name)).then(|| (*e.key(), name))
        })
    }

    /// `name` left `parent` (unlink, rmdir): a new node there gets a new number.
    pub fn removed(&self, parent: u64, name: &str) {
        self.by_name.remove(&(parent, name.to_string()));
    }

    /// Puts a known inode at (`parent`, `name`) after a rename or exchange.
    pub fn relocate(&self, ino: u64, parent: u64, name: &str, node: Node) {
        // The inode is cloned out first: no guard of one map is held while locking the other.
        let Some(entry) = self.get(ino) else {
            return;
        };
        entry.set(parent, name, node);
        self.by_name.insert((parent, name.to_string()), ino);
    }

    /// The kernel dropped `n` lookups of `ino`; the inode when that was the last one (it is
    /// gone from the table).
    pub fn forget(&self, ino: u64, n: u64) -> Option<Arc<Inode>> {
        if ino == ROOT_INO {
            return None;
        }
        let removed = self.by_ino.remove_if(&ino, |_, e| {
            let before = e
                .lookups
                .fetch_sub(n.min(e.lookups.load(Ordering::Relaxed)), Ordering::Relaxed);
            before <= n
        });
        let (_, entry) = removed?;
        let key = entry.place();
        self.by_name.remove_if(&key, |_, v| *v == ino);
        Some(entry)
    }

    /// Every inode known, with its number.
    pub fn all(&self) -> Vec<(u64, Arc<Inode>)> {
        self.by_ino.iter().map(|e| (*e.key(), e.clone())).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use oxcrypt_core::NodeKind;
    use std::sync::Barrier;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            kind: NodeKind::File,
            entry: format!("/v/d/{name}.c9r").into(),
            shortened: false,
        }
    }

    #[test]
    fn concurrent_lookups_of_one_name_get_one_number() {
        for round in 0..300 {
            let table = Arc::new(InodeTable::new(node("")));
            let start = Arc::new(Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (t, start) = (table.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        t.lookup(ROOT_INO, "x", node("x"), 7)
                    })
                })
                .collect();
            let inos: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert!(
                inos.iter().all(|&i| i == inos[0]),
                "round {round}: {inos:?}"
            );
            assert_eq!(table.len(), 2, "round {round}: one inode besides the root");
        }
    }
}

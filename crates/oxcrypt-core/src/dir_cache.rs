//! Caches of directory ids: id → content directory, (parent, name) → child id, and
//! subdirectory counts. Bounded: past [`DirIdCache::DEFAULT_CAPACITY`] entries in a map, the
//! map is cleared (every entry can be recomputed from the ciphertext tree), so memory does not
//! grow with every directory ever visited.

use std::path::PathBuf;
use std::time::Instant;

use dashmap::DashMap;

use crate::node::DirId;

/// Caches of directory ids: id → content directory, (parent, name) → child id, and
/// subdirectory counts (for directory link counts) with the time they were counted.
#[derive(Debug)]
pub struct DirIdCache {
    capacity: usize,
    content_dirs: DashMap<DirId, PathBuf>,
    children: DashMap<(DirId, String), DirId>,
    subdirs: DashMap<DirId, (u32, Instant)>,
}

impl Default for DirIdCache {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

/// Inserts into `map`, clearing it first when it holds `capacity` entries already.
fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &DashMap<K, V>, capacity: usize, k: K, v: V) {
    if map.len() >= capacity {
        map.clear();
    }
    map.insert(k, v);
}

impl DirIdCache {
    /// Entries per map before it is cleared (about 10 MiB per map at the longest names).
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A cache whose maps hold at most `capacity` entries each.
    pub fn with_capacity(capacity: usize) -> Self {
        DirIdCache {
            capacity: capacity.max(1),
            content_dirs: DashMap::new(),
            children: DashMap::new(),
            subdirs: DashMap::new(),
        }
    }

    /// Entries held, over all maps.
    pub fn len(&self) -> usize {
        self.content_dirs.len() + self.children.len() + self.subdirs.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached content directory of `id`.
    pub(crate) fn content_dir(
        &self,
        id: &DirId,
    ) -> Option<dashmap::mapref::one::Ref<'_, DirId, PathBuf>> {
        self.content_dirs.get(id)
    }

    pub(crate) fn put_content_dir(&self, id: DirId, dir: PathBuf) {
        insert_bounded(&self.content_dirs, self.capacity, id, dir);
    }

    /// The cached id of directory `name` in `parent`.
    pub(crate) fn child(&self, parent: &DirId, name: &str) -> Option<DirId> {
        self.children
            .get(&(parent.clone(), name.to_string()))
            .map(|c| c.clone())
    }

    pub(crate) fn put_child(&self, parent: DirId, name: String, id: DirId) {
        insert_bounded(&self.children, self.capacity, (parent, name), id);
    }

    pub(crate) fn forget_child(&self, parent: &DirId, name: &str) {
        self.children.remove(&(parent.clone(), name.to_string()));
    }

    /// The cached subdirectory count of `dir` and when it was counted.
    pub(crate) fn subdirs(&self, dir: &DirId) -> Option<(u32, Instant)> {
        self.subdirs.get(dir).map(|e| *e)
    }

    pub(crate) fn put_subdirs(&self, dir: DirId, count: u32) {
        insert_bounded(&self.subdirs, self.capacity, dir, (count, Instant::now()));
    }

    /// Adjusts a cached subdirectory count after a change made through this vault.
    pub(crate) fn subdirs_changed(&self, dir: &DirId, delta: i32) {
        if let Some(mut e) = self.subdirs.get_mut(dir) {
            e.0 = e.0.saturating_add_signed(delta);
        }
    }

    pub(crate) fn forget_subdirs(&self, dir: &DirId) {
        self.subdirs.remove(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_map_stays_within_its_capacity() {
        let c = DirIdCache::with_capacity(10);
        for i in 0..1000 {
            let id: DirId = Arc::from(format!("id-{i}"));
            c.put_content_dir(id.clone(), PathBuf::from(format!("/d/{i}")));
            c.put_child(Arc::from(""), format!("n{i}"), id.clone());
            c.put_subdirs(id, 1);
        }
        assert!(c.len() <= 30, "{} entries", c.len());
        // What was just put is there.
        assert_eq!(c.child(&Arc::from(""), "n999").as_deref(), Some("id-999"));
    }
}

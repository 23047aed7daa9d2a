//! Operations that change the tree: mknod, mkdir, symlink, unlink, rmdir, rename, link; and
//! how a new node gets its owner (the caller, or a setgid parent's group).

use std::os::unix::fs::MetadataExt;

use oxcrypt_core::names::normalize_name_in;
use oxcrypt_core::{Attr, DirId, Node, Vault};

use super::{name_in, Caller, Entry, Errno, Fs, OpResult};

/// RENAME's flags that we act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// RENAME_NOREPLACE: fail if the target exists.
    pub noreplace: bool,
    /// RENAME_EXCHANGE: swap source and target.
    pub exchange: bool,
    /// RENAME_WHITEOUT (refused).
    pub whiteout: bool,
}

impl Fs {
    /// The owner a new node in `parent` gets: the caller's uid, and the caller's gid or the
    /// parent's when the parent is setgid. Also says whether the parent is setgid.
    pub(super) fn new_owner(&self, caller: Caller, parent: u64) -> OpResult<(u32, u32, bool)> {
        // Only the parent's mode and group matter here: take them from the attribute cache,
        // or straight from its content directory (a full stat would count its subdirectories).
        let (mode, pgid) = match self.cache.attr(parent) {
            Some(a) => (a.perm, a.gid),
            None => {
                let parent_path = self.vault.attr_path(&self.node(parent)?);
                let md = std::fs::metadata(&parent_path)
                    .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
                (md.mode(), md.gid())
            }
        };
        let setgid = mode & 0o2000 != 0;
        Ok((caller.uid, if setgid { pgid } else { caller.gid }, setgid))
    }

    /// Enters a node just made in `parent` into the inode table and the caches.
    pub(super) fn register_new(&self, parent: u64, node: Node, attr: Attr) -> u64 {
        self.cache.dir_changed(parent);
        // A new node: any number the old name had belongs to a deleted file.
        self.inodes.removed(parent, &node.name);
        let ino = self.remember(parent, &node.name.clone(), node, attr.ino);
        self.cache.put_attr(ino, attr);
        ino
    }

    /// Creates a node with `make` in directory `parent`, gives it its owner and registers it.
    fn make_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        make: impl FnOnce(&DirId, &str) -> oxcrypt_core::Result<Node>,
    ) -> OpResult<Entry> {
        self.with_arena(|bump| {
            self.writable()?;
            let name = name_in(bump, name)?;
            let dir = self.dir_id(parent)?;
            let node = make(&dir, name)?;
            let (uid, gid, setgid) = self.new_owner(caller, parent)?;
            if let Err(e) = self.vault.chown(&node, Some(uid), Some(gid)) {
                tracing::debug!(error = %e, "cannot set owner of new node");
            }
            if node.is_dir() && setgid {
                let a = self.vault.stat(&node)?;
                let _ = self.vault.set_perm(&node, a.perm | 0o2000);
            }
            let attr = self.vault.stat(&node)?;
            Ok(self.entry(self.register_new(parent, node, attr), attr))
        })
    }

    /// MKNOD: regular files only (FIFOs, sockets and devices do not exist in the format).
    pub fn mknod(&self, caller: Caller, parent: u64, name: &[u8], mode: u32) -> OpResult<Entry> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        self.make_node(caller, parent, name, |dir, name| {
            self.vault.create_file(dir, name, mode & 0o7777)
        })
    }

    /// MKDIR (`mode` with the umask applied).
    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], mode: u32) -> OpResult<Entry> {
        self.make_node(caller, parent, name, |dir, name| {
            self.vault.mkdir(dir, name, mode & 0o7777)
        })
    }

    /// SYMLINK `name` in `parent` pointing at `target`.
    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> OpResult<Entry> {
        let target = std::str::from_utf8(target).map_err(|_| Errno::EINVAL)?;
        self.make_node(caller, parent, name, |dir, name| {
            self.vault.symlink(dir, name, target)
        })
    }

    /// LINK: hard links do not exist in the vault format.
    pub fn link(&self) -> OpResult<Entry> {
        Err(Errno::EPERM)
    }

    /// UNLINK.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> OpResult<()> {
        self.remove_name(parent, name, Vault::unlink)
    }

    /// RMDIR.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> OpResult<()> {
        self.remove_name(parent, name, Vault::rmdir)
    }

    /// Removes `name` from `parent` with `remove`, then drops the name's inode number and
    /// cached attributes (an open descriptor of a removed file now sees nlink 0).
    fn remove_name(
        &self,
        parent: u64,
        name: &[u8],
        remove: fn(&Vault, &DirId, &str) -> oxcrypt_core::Result<()>,
    ) -> OpResult<()> {
        self.with_arena(|bump| {
            self.writable()?;
            let name = name_in(bump, name)?;
            let dir = self.dir_id(parent)?;
            let nfc = normalize_name_in(name, bump)?;
            remove(&self.vault, &dir, name)?;
            self.cache.dir_changed(parent);
            if let Some(ino) = self.inodes.peek(parent, nfc) {
                self.cache.forget_attr(ino);
            }
            self.inodes.removed(parent, nfc);
            Ok(())
        })
    }

    /// RENAME `name` in `parent` to `newname` in `newparent`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> OpResult<()> {
        self.with_arena(|bump| {
            self.writable()?;
            if flags.whiteout {
                return Err(Errno::EINVAL);
            }
            let name = name_in(bump, name)?;
            let newname = name_in(bump, newname)?;
            let a = normalize_name_in(name, bump)?;
            let b = normalize_name_in(newname, bump)?;
            let src = self.dir_id(parent)?;
            let dst = self.dir_id(newparent)?;
            let (ia, ib) = (self.inodes.peek(parent, a), self.inodes.peek(newparent, b));
            if flags.exchange {
                self.vault.exchange(&src, name, &dst, newname)?;
                self.inodes.removed(parent, a);
                self.inodes.removed(newparent, b);
                if let (Some(ino), Ok(Some(node))) = (ia, self.vault.lookup(&dst, newname)) {
                    self.inodes.relocate(ino, newparent, b, node);
                }
                if let (Some(ino), Ok(Some(node))) = (ib, self.vault.lookup(&src, name)) {
                    self.inodes.relocate(ino, parent, a, node);
                }
            } else {
                self.vault
                    .rename(&src, name, &dst, newname, !flags.noreplace)?;
                self.inodes.removed(newparent, b);
                self.inodes.removed(parent, a);
                if let (Some(ino), Ok(Some(node))) = (ia, self.vault.lookup(&dst, newname)) {
                    self.inodes.relocate(ino, newparent, b, node);
                }
            }
            for ino in [ia, ib].into_iter().flatten() {
                self.cache.forget_attr(ino);
            }
            self.cache.dir_changed(parent);
            self.cache.dir_changed(newparent);
            Ok(())
        })
    }
}

//! Operations on names and attributes: lookup, forget, getattr, setattr, readlink, access,
//! statfs.

use std::time::SystemTime;

use oxcrypt_core::names::normalize_name_in;
use oxcrypt_core::vault::SetLen;
use oxcrypt_core::Attr;

use super::{name_in, time_of, Entry, Errno, Fs, OpResult};

/// A time that SETATTR sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    /// The current time.
    Now,
    /// This time.
    At(SystemTime),
}

/// What SETATTR changes (`None`: leave as is).
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Cleartext size (truncate).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<TimeSet>,
    /// Modification time.
    pub mtime: Option<TimeSet>,
    /// The open handle the change came through, if any.
    pub fh: Option<u64>,
}

/// File system statistics (of the backing file system, with the vault's name limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks of `frsize`.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Preferred block size.
    pub bsize: u32,
    /// Longest cleartext name in bytes.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// Fault injection of debug builds: a LOOKUP of this name panics, so the tests can check
/// that a panicking handler costs one EIO and not the session thread.
#[cfg(debug_assertions)]
pub const PANIC_ON_LOOKUP: &str = ".oxcrypt-test-panic";

impl Fs {
    /// LOOKUP: `name` in directory `parent`, counted as one kernel lookup.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> OpResult<Entry> {
        #[cfg(debug_assertions)]
        if name == PANIC_ON_LOOKUP.as_bytes() {
            panic!("fault injection: lookup of {PANIC_ON_LOOKUP}");
        }
        self.with_arena(|bump| {
            let name = name_in(bump, name)?;
            // A fresh listing answers without touching the ciphertext tree.
            if let Some(l) = self.cache.listing(parent) {
                let nfc = normalize_name_in(name, bump)?;
                let i = l
                    .binary_search_by(|e| e.name.as_str().cmp(nfc))
                    .map_err(|_| Errno::ENOENT)?;
                let e = &l[i];
                let attr = e.attr(&self.vault).ok_or(Errno::ENOENT)?;
                self.refuse_cycle(parent, &e.node)?;
                let ino = self.remember(parent, &e.name, e.node.clone(), attr.ino);
                return Ok(self.entry(ino, self.cache.attr(ino).unwrap_or(attr)));
            }
            let dir = self.dir_id(parent)?;
            let (node, attr) = self
                .vault
                .lookup_attr_in(&dir, name, bump)?
                .ok_or(Errno::ENOENT)?;
            self.refuse_cycle(parent, &node)?;
            let ino = self.remember(parent, &node.name.clone(), node, attr.ino);
            self.cache.put_attr(ino, attr);
            Ok(self.entry(ino, attr))
        })
    }

    /// Refuses a directory `node` found in `parent` whose id is that of `parent` or of one of
    /// its ancestors: a `dir.c9r` pointing up the tree would make every walk of the mount
    /// endless (and the inode table grow without bound).
    pub(super) fn refuse_cycle(&self, parent: u64, node: &oxcrypt_core::Node) -> OpResult<()> {
        let Some(id) = node.dir_id() else {
            return Ok(());
        };
        let mut ino = parent;
        for _ in 0..oxcrypt_core::vault::Ancestors::MAX_DEPTH {
            let Some(inode) = self.inodes.get(ino) else {
                return Ok(());
            };
            if inode.is_dir_id(id) {
                tracing::error!(entry = %node.entry.display(), "directory cycle: its dir.c9r points at an ancestor; refused");
                return Err(Errno::ELOOP);
            }
            if ino == crate::inodes::ROOT_INO {
                return Ok(());
            }
            ino = inode.parent();
        }
        Err(Errno::ELOOP)
    }

    /// FORGET: the kernel dropped `nlookup` lookups of `ino`.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        if let Some(gone) = self.inodes.forget(ino, nlookup) {
            self.own.forget(gone.backing());
            self.cache.drop_inode(ino);
            self.files.forget(ino);
            self.watcher.unwatch(ino);
        }
    }

    /// GETATTR.
    pub fn getattr(&self, ino: u64) -> OpResult<Attr> {
        let node = self.node(ino)?;
        self.attr(ino, &node)
    }

    /// SETATTR: size first (through the engine, after the file's queued changes), then owner,
    /// mode and times; returns the new attributes.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> OpResult<Attr> {
        self.writable()?;
        let node = self.node(ino)?;
        let key = self.file_key(ino)?;
        // Our own change: the watcher must not take it for one behind the mount's back.
        let before = super::files::stamp(&node);
        self.own.begin(key);
        let r = self.setattr_in(ino, &node, set);
        let after = super::files::stamp(&node);
        if set.size.is_some() {
            self.own.end(key, after);
        } else {
            self.own.end_attrs(key, before, after);
        }
        r
    }

    fn setattr_in(&self, ino: u64, node: &oxcrypt_core::Node, set: SetAttr) -> OpResult<Attr> {
        if let Some(size) = set.size {
            if node.is_dir() {
                return Err(Errno::EISDIR);
            }
            let file = match set.fh {
                Some(fh) => self.files.get(fh).ok_or(Errno::EBADF)?.0,
                None => self.open_shared(ino, node)?,
            };
            self.set_len_and_wait(&file, SetLen::Exactly(size))?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            self.vault.chown(node, set.uid, set.gid)?;
        }
        if let Some(mode) = set.mode {
            self.vault.set_perm(node, mode)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            self.vault
                .set_times(node, set.atime.map(time_of), set.mtime.map(time_of))?;
        }
        self.cache.forget_attr(ino);
        self.attr(ino, node)
    }

    /// READLINK.
    pub fn readlink(&self, ino: u64) -> OpResult<String> {
        let node = self.node(ino)?;
        Ok(self.vault.readlink(&node)?)
    }

    /// ACCESS: permission checks are the kernel's (default_permissions); only existence is
    /// ours.
    pub fn access(&self, ino: u64) -> OpResult<()> {
        self.node(ino).map(|_| ())
    }

    /// STATFS: the backing file system's numbers.
    pub fn statfs(&self) -> OpResult<StatFs> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.vault.path().as_os_str().as_bytes())
            .map_err(|_| Errno::EIO)?;
        // SAFETY: statvfs is plain old data; all zeros is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(Errno::EIO);
        }
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: oxcrypt_core::names::MAX_NAME_BYTES as u32,
            frsize: st.f_frsize as u32,
        })
    }
}

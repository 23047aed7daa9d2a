//! Changes to the tree: create, mkdir, symlink, unlink, rmdir, rename, exchange, and the
//! node attributes (permissions, times, owner) that live on the ciphertext files.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, IoContext, Result};
use crate::file::FileHandle;
use crate::fsutil::{sync_dir, write_atomic};
use crate::names::normalize_name;
use crate::node::{
    attr_from, Attr, DirId, FileType, Node, NodeKind, CONTENTS_FILE, DIRID_FILE, DIR_FILE,
    MAX_SYMLINK_TARGET, NAME_FILE, SYMLINK_FILE,
};
use crate::store::{self, Expect};
use crate::vault::{is_not_found, Vault};

impl Vault {
    pub fn create_file(&self, parent: &DirId, name: &str, mode: u32) -> Result<Node> {
        self.create_open(parent, name, mode, None)
            .map(|(node, _, _)| node)
    }

    /// Creates an empty regular file like [`Vault::create_file`] and returns it already open
    /// for reading and writing, with its attributes: one `open`, one header write and one
    /// `fstat` (plus a best-effort `fchown` when `owner` differs from what the new file got).
    pub fn create_open(
        &self,
        parent: &DirId,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(Node, FileHandle, Attr)> {
        let name = normalize_name(name)?;
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        if shortened {
            // A plain entry is refused by O_EXCL below; a shortened one is a directory.
            self.ensure_absent(&entry, &name)?;
            self.make_shortened_entry(&entry, &c9r)?;
        }
        let node = Node {
            name,
            kind: NodeKind::File,
            entry,
            shortened,
        };
        let path = node.payload_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists(node.name.clone()),
                _ => Error::io(&path, e),
            })?;
        let header = self.content.new_header();
        let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
        let hl = self.content.combo().header_len();
        self.content.encrypt_header(&header, &mut buf);
        file.write_all_at(&buf[..hl], 0).at(&path)?;
        let mut md = file.metadata().at(&path)?;
        if let Some((uid, gid)) = owner {
            // Best effort, as for any node: an unprivileged daemon cannot give files away.
            if (md.uid(), md.gid()) != (uid, gid)
                && std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).is_ok()
            {
                md = file.metadata().at(&path)?;
            }
        }
        let attr = attr_from(FileType::File, 0, md.nlink() as u32, &md);
        let handle = FileHandle::created(file, path, self.content.clone(), header);
        Ok((node, handle, attr))
    }

    fn ensure_absent(&self, entry: &Path, name: &str) -> Result<()> {
        match fs::symlink_metadata(entry) {
            Ok(_) => Err(Error::AlreadyExists(name.to_string())),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::io(entry, e)),
        }
    }

    fn make_shortened_entry(&self, entry: &Path, c9r: &str) -> Result<()> {
        fs::create_dir(entry).at(entry)?;
        let name_file = entry.join(NAME_FILE);
        fs::write(&name_file, c9r.as_bytes()).at(&name_file)
    }

    /// Creates directory `name` in `parent` with permission `mode`.
    pub fn mkdir(&self, parent: &DirId, name: &str, mode: u32) -> Result<Node> {
        let name = normalize_name(name)?;
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        self.ensure_absent(&entry, &name)?;
        let id: DirId = Arc::from(
            uuid::Builder::from_random_bytes(crate::random::bytes())
                .into_uuid()
                .to_string(),
        );
        let content_dir = self.create_content_dir(&id)?;
        fs::set_permissions(
            &content_dir,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )
        .at(&content_dir)?;
        if shortened {
            self.make_shortened_entry(&entry, &c9r)?;
        } else {
            fs::create_dir(&entry).map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists(name.clone()),
                _ => Error::io(&entry, e),
            })?;
        }
        let dir_file = entry.join(DIR_FILE);
        fs::write(&dir_file, id.as_bytes()).at(&dir_file)?;
        self.cache
            .put_child(parent.clone(), name.clone(), id.clone());
        self.cache.subdirs_changed(parent, 1);
        Ok(Node {
            name,
            kind: NodeKind::Directory(id),
            entry,
            shortened,
        })
    }

    /// Creates symlink `name` in `parent` pointing to `target`.
    pub fn symlink(&self, parent: &DirId, name: &str, target: &str) -> Result<Node> {
        let name = normalize_name(name)?;
        if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains('\0') {
            return Err(Error::Invalid(format!(
                "symlink target must be 1 to {MAX_SYMLINK_TARGET} bytes without NUL"
            )));
        }
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        self.ensure_absent(&entry, &name)?;
        if shortened {
            self.make_shortened_entry(&entry, &c9r)?;
        } else {
            fs::create_dir(&entry).at(&entry)?;
        }
        let node = Node {
            name,
            kind: NodeKind::Symlink,
            entry,
            shortened,
        };
        let path = node.payload_path();
        fs::write(&path, self.content.encrypt_small(target.as_bytes())).at(&path)?;
        Ok(node)
    }

    fn remove_entry(&self, node: &Node) -> Result<()> {
        if node.kind == NodeKind::File && !node.shortened {
            fs::remove_file(&node.entry).at(&node.entry)
        } else {
            fs::remove_dir_all(&node.entry).at(&node.entry)
        }
    }

    /// Removes a file or symlink `name` from `parent`.
    pub fn unlink(&self, parent: &DirId, name: &str) -> Result<()> {
        let node = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if node.is_dir() {
            return Err(Error::IsADirectory(node.name));
        }
        self.remove_entry(&node)
    }

    /// Whether a directory has no entries (its `dirid.c9r` does not count).
    pub fn is_empty_dir(&self, dir: &DirId) -> Result<bool> {
        let content_dir = self.content_dir(dir);
        let mut rd = match fs::read_dir(&content_dir) {
            Ok(rd) => rd,
            Err(e) if is_not_found(&e) => return Ok(true),
            Err(e) => return Err(Error::io(&content_dir, e)),
        };
        Ok(!rd.any(|e| e.map(|e| e.file_name() != DIRID_FILE).unwrap_or(true)))
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: &DirId, name: &str) -> Result<()> {
        let node = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        let NodeKind::Directory(id) = &node.kind else {
            return Err(Error::NotADirectory(node.name));
        };
        if !self.is_empty_dir(id)? {
            return Err(Error::NotEmpty(node.name));
        }
        self.remove_dir_node(parent, &node, id)
    }

    fn remove_dir_node(&self, parent: &DirId, node: &Node, id: &DirId) -> Result<()> {
        // Unlink the entry first: a crash afterwards leaves an orphan content directory,
        // never a directory that lists entries it cannot show.
        self.remove_entry(node)?;
        self.cache.forget_child(parent, &node.name);
        self.cache.subdirs_changed(parent, -1);
        let content_dir = self.content_dir(id);
        match fs::remove_dir_all(&content_dir) {
            Err(e) if !is_not_found(&e) => Err(Error::io(&content_dir, e)),
            _ => Ok(()),
        }
    }

    /// Renames `src_name` in `src_parent` to `dst_name` in `dst_parent`. An existing target is
    /// replaced when `replace` is set (a file by a file, an empty directory by a directory),
    /// otherwise the rename fails with [`Error::AlreadyExists`]. A directory keeps its id.
    pub fn rename(
        &self,
        src_parent: &DirId,
        src_name: &str,
        dst_parent: &DirId,
        dst_name: &str,
        replace: bool,
    ) -> Result<()> {
        let src = self
            .lookup(src_parent, src_name)?
            .ok_or_else(|| Error::NotFound(src_name.to_string()))?;
        let dst_name = normalize_name(dst_name)?;
        if src_parent == dst_parent && src.name == dst_name {
            return Ok(());
        }
        if let Some(dst) = self.lookup(dst_parent, &dst_name)? {
            if !replace {
                return Err(Error::AlreadyExists(dst.name));
            }
            match (&src.kind, &dst.kind) {
                (NodeKind::Directory(_), NodeKind::Directory(dst_id)) => {
                    if !self.is_empty_dir(dst_id)? {
                        return Err(Error::NotEmpty(dst.name));
                    }
                    self.remove_dir_node(dst_parent, &dst, dst_id)?;
                }
                (NodeKind::Directory(_), _) => return Err(Error::NotADirectory(dst.name)),
                (_, NodeKind::Directory(_)) => return Err(Error::IsADirectory(dst.name)),
                _ => {
                    // A plain file over a plain file is replaced atomically by the rename below.
                    let atomic = src.kind == NodeKind::File
                        && dst.kind == NodeKind::File
                        && !src.shortened
                        && !dst.shortened;
                    if !atomic {
                        self.remove_entry(&dst)?;
                    }
                }
            }
        }
        let (dst_entry, dst_short, dst_c9r) = self.entry_for(dst_parent, &dst_name);
        match (src.shortened, dst_short) {
            (false, false) => fs::rename(&src.entry, &dst_entry).at(&dst_entry)?,
            (true, true) => {
                fs::rename(&src.entry, &dst_entry).at(&dst_entry)?;
                write_atomic(&dst_entry.join(NAME_FILE), dst_c9r.as_bytes(), 0o644)?;
            }
            (false, true) | (true, false) => {
                self.move_between_shapes(&src, &dst_entry, dst_short, &dst_c9r)?;
            }
        }
        self.cache.forget_child(src_parent, &src.name);
        if let NodeKind::Directory(id) = &src.kind {
            self.cache
                .put_child(dst_parent.clone(), dst_name, id.clone());
            self.cache.subdirs_changed(src_parent, -1);
            self.cache.subdirs_changed(dst_parent, 1);
        }
        Ok(())
    }

    /// Swaps two existing nodes (RENAME_EXCHANGE). Supported when both names are stored the
    /// same way (both shortened or both not); it is three renames, not one atomic step.
    pub fn exchange(
        &self,
        a_parent: &DirId,
        a_name: &str,
        b_parent: &DirId,
        b_name: &str,
    ) -> Result<()> {
        let a = self
            .lookup(a_parent, a_name)?
            .ok_or_else(|| Error::NotFound(a_name.to_string()))?;
        let b = self
            .lookup(b_parent, b_name)?
            .ok_or_else(|| Error::NotFound(b_name.to_string()))?;
        if a.entry == b.entry {
            return Ok(());
        }
        if a.shortened != b.shortened {
            return Err(Error::Invalid(
                "exchanging a shortened and an unshortened name is not supported".into(),
            ));
        }
        let parent_dir = a.entry.parent().unwrap_or(Path::new("."));
        let tmp = parent_dir.join(format!(
            ".oxcrypt-exchange-{:016x}",
            u64::from_le_bytes(crate::random::bytes())
        ));
        fs::rename(&a.entry, &tmp).at(&tmp)?;
        fs::rename(&b.entry, &a.entry).at(&a.entry)?;
        fs::rename(&tmp, &b.entry).at(&b.entry)?;
        if a.shortened {
            // Each .c9s node keeps the full name of its place, not of its former node.
            let (_, _, a_c9r) = self.entry_for(a_parent, &a.name);
            let (_, _, b_c9r) = self.entry_for(b_parent, &b.name);
            write_atomic(&a.entry.join(NAME_FILE), a_c9r.as_bytes(), 0o644)?;
            write_atomic(&b.entry.join(NAME_FILE), b_c9r.as_bytes(), 0o644)?;
        }
        self.cache.forget_child(a_parent, &a.name);
        self.cache.forget_child(b_parent, &b.name);
        self.cache.forget_subdirs(a_parent);
        self.cache.forget_subdirs(b_parent);
        Ok(())
    }

    /// Moves a node whose name becomes (or stops being) shortened.
    fn move_between_shapes(
        &self,
        src: &Node,
        dst_entry: &Path,
        dst_short: bool,
        dst_c9r: &str,
    ) -> Result<()> {
        let payload_name = match (&src.kind, dst_short) {
            (NodeKind::File, true) => CONTENTS_FILE,
            (NodeKind::File, false) => "",
            (NodeKind::Directory(_), _) => DIR_FILE,
            (NodeKind::Symlink, _) => SYMLINK_FILE,
        };
        if dst_short {
            self.make_shortened_entry(dst_entry, dst_c9r)?;
        } else if !payload_name.is_empty() {
            fs::create_dir(dst_entry).at(dst_entry)?;
        }
        let dst_payload = if payload_name.is_empty() {
            dst_entry.to_path_buf()
        } else {
            dst_entry.join(payload_name)
        };
        fs::rename(src.payload_path(), &dst_payload).at(&dst_payload)?;
        if src.shortened || src.kind != NodeKind::File {
            fs::remove_dir_all(&src.entry).at(&src.entry)?;
        }
        if let Some(parent) = dst_entry.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Sets the permission bits of a node.
    pub fn set_perm(&self, node: &Node, perm: u32) -> Result<()> {
        store::set_mode(&self.attr_path(node), Self::attr_kind(node), perm)
    }

    /// Sets access and modification times of a node (`None` leaves one unchanged).
    pub fn set_times(
        &self,
        node: &Node,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Result<()> {
        store::set_times(&self.attr_path(node), Self::attr_kind(node), atime, mtime)
    }

    /// Changes owner and/or group of a node.
    pub fn chown(&self, node: &Node, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        store::set_owner(&self.attr_path(node), Self::attr_kind(node), uid, gid)
    }

    /// What the file behind [`attr_path`](Vault::attr_path) must be.
    fn attr_kind(node: &Node) -> Expect {
        if node.is_dir() {
            Expect::Dir
        } else {
            Expect::File
        }
    }
}

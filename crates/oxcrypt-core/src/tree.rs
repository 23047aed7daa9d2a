//! Changes to the tree: create, mkdir, symlink, unlink, rmdir, rename, exchange, and the
//! node attributes (permissions, times, owner) that live on the ciphertext files.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, IoContext, Result};
use crate::file::FileHandle;
use crate::fsutil::{rename_noreplace, sync_dir, temp_sibling, write_atomic};
use crate::names::normalize_name;
use crate::node::{
    attr_from, Attr, DirId, FileType, Node, NodeKind, CONTENTS_FILE, DIRID_FILE, DIR_FILE,
    MAX_SYMLINK_TARGET, NAME_FILE, SYMLINK_FILE,
};
use crate::store::{self, Expect};
use crate::vault::{is_not_found, Vault};

impl Vault {
    /// Creates an empty regular file `name` in `parent` with permission `mode`; fails if
    /// the name exists.
    pub fn create_file(&self, parent: &DirId, name: &str, mode: u32) -> Result<Node> {
        self.create_open(parent, name, mode, None)
            .map(|(node, _, _)| node)
    }

    /// Creates an empty regular file like [`Vault::create_file`] and returns it already open
    /// for reading and writing, with its attributes: one `open`, one header write and one
    /// `fstat` (plus a best-effort `fchown` when `owner` differs from what the new file got).
    /// A failure at any step leaves no name behind.
    pub fn create_open(
        &self,
        parent: &DirId,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(Node, FileHandle, Attr)> {
        let name = normalize_name(name)?;
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        let node = Node {
            name,
            kind: NodeKind::File,
            entry,
            shortened,
        };
        let path = node.payload_path();
        let (file, header) = if shortened {
            // A shortened file is a directory: built under a hidden name, moved into place.
            self.ensure_absent(&node.entry, &node.name)?;
            let mut made = None;
            self.build_entry(&node.entry, Some(&c9r), &node.name, |tmp| {
                made = Some(self.new_content_file(&tmp.join(CONTENTS_FILE), mode, &node.name)?);
                Ok(())
            })?;
            made.expect("set by build_entry's fill")
        } else {
            self.new_content_file(&path, mode, &node.name)?
        };
        let result = (|| {
            let mut md = file.metadata().at(&path)?;
            if let Some((uid, gid)) = owner {
                // Best effort, as for any node: an unprivileged daemon cannot give files away.
                if (md.uid(), md.gid()) != (uid, gid)
                    && std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).is_ok()
                {
                    md = file.metadata().at(&path)?;
                }
            }
            Ok(attr_from(FileType::File, 0, md.nlink() as u32, &md))
        })();
        let attr = match result {
            Ok(a) => a,
            Err(e) => {
                let _ = self.remove_entry(&node);
                return Err(e);
            }
        };
        let handle = FileHandle::created(file, path, self.content.clone(), header);
        Ok((node, handle, attr))
    }

    /// Creates the ciphertext file `path` (which must not exist) with a fresh header; removed
    /// again if writing the header fails.
    fn new_content_file(
        &self,
        path: &Path,
        mode: u32,
        name: &str,
    ) -> Result<(File, crate::content::FileHeader)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists(name.to_string()),
                _ => Error::io(path, e),
            })?;
        let header = self.content.new_header();
        let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
        let hl = self.content.combo().header_len();
        self.content.encrypt_header(&header, &mut buf);
        if let Err(e) = file.write_all_at(&buf[..hl], 0) {
            drop(file);
            let _ = fs::remove_file(path);
            return Err(Error::io(path, e));
        }
        Ok((file, header))
    }

    fn ensure_absent(&self, entry: &Path, name: &str) -> Result<()> {
        match fs::symlink_metadata(entry) {
            Ok(_) => Err(Error::AlreadyExists(name.to_string())),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::io(entry, e)),
        }
    }

    /// Builds a node's entry directory under a hidden name beside `entry` and moves it into
    /// place with one rename that replaces nothing: a failure at any step (a full disk, say)
    /// leaves no entry, so the name can be created again. `c9r` is the full name for a
    /// shortened entry (its `name.c9s` is written first); `fill` writes the node's files.
    fn build_entry(
        &self,
        entry: &Path,
        c9r: Option<&str>,
        name: &str,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let tmp = temp_sibling(entry, "new");
        fs::create_dir(&tmp).at(&tmp)?;
        let result = (|| {
            if let Some(c9r) = c9r {
                let name_file = tmp.join(NAME_FILE);
                fs::write(&name_file, c9r.as_bytes()).at(&name_file)?;
            }
            fill(&tmp)?;
            rename_noreplace(&tmp, entry).map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Error::AlreadyExists(name.into()),
                _ => Error::io(entry, e),
            })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Creates directory `name` in `parent` with permission `mode`. A failure at any step
    /// leaves neither the name nor the new content directory.
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
        let result = fs::set_permissions(
            &content_dir,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )
        .at(&content_dir)
        .and_then(|()| {
            self.build_entry(&entry, shortened.then_some(c9r.as_str()), &name, |tmp| {
                let dir_file = tmp.join(DIR_FILE);
                fs::write(&dir_file, id.as_bytes()).at(&dir_file)
            })
        });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&content_dir);
            return Err(e);
        }
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

    /// Creates symlink `name` in `parent` pointing to `target`. A failure at any step leaves
    /// no name behind.
    pub fn symlink(&self, parent: &DirId, name: &str, target: &str) -> Result<Node> {
        let name = normalize_name(name)?;
        if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains('\0') {
            return Err(Error::Invalid(format!(
                "symlink target must be 1 to {MAX_SYMLINK_TARGET} bytes without NUL"
            )));
        }
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        self.ensure_absent(&entry, &name)?;
        self.build_entry(&entry, shortened.then_some(c9r.as_str()), &name, |tmp| {
            let path = tmp.join(SYMLINK_FILE);
            fs::write(&path, self.content.encrypt_small(target.as_bytes())).at(&path)
        })?;
        Ok(Node {
            name,
            kind: NodeKind::Symlink,
            entry,
            shortened,
        })
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
        // A target that is replaced is first hidden under a temporary name, and deleted only
        // once the source is in its place; if the move fails it is put back.
        let mut hidden: Option<(std::path::PathBuf, Node)> = None;
        if let Some(dst) = self.lookup(dst_parent, &dst_name)? {
            if !replace {
                return Err(Error::AlreadyExists(dst.name));
            }
            match (&src.kind, &dst.kind) {
                (NodeKind::Directory(_), NodeKind::Directory(dst_id)) => {
                    if !self.is_empty_dir(dst_id)? {
                        return Err(Error::NotEmpty(dst.name));
                    }
                    hidden = Some((self.hide_entry(&dst)?, dst));
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
                        hidden = Some((self.hide_entry(&dst)?, dst));
                    }
                }
            }
        }
        let (dst_entry, dst_short, dst_c9r) = self.entry_for(dst_parent, &dst_name);
        let moved = match (src.shortened, dst_short) {
            (false, false) => fs::rename(&src.entry, &dst_entry).at(&dst_entry),
            (true, true) => fs::rename(&src.entry, &dst_entry)
                .at(&dst_entry)
                .and_then(|()| write_atomic(&dst_entry.join(NAME_FILE), dst_c9r.as_bytes(), 0o644)),
            (false, true) | (true, false) => {
                self.move_between_shapes(&src, &dst_entry, dst_short, &dst_c9r)
            }
        };
        if let Err(e) = moved {
            if let Some((h, dst)) = &hidden {
                if let Err(back) = fs::rename(h, &dst.entry) {
                    tracing::error!(error = %back, hidden = %h.display(), "cannot put a replaced target back; `oxcrypt check` lists it");
                }
            }
            return Err(e);
        }
        if let Some((h, dst)) = hidden {
            let _ = if h.is_dir() {
                fs::remove_dir_all(&h)
            } else {
                fs::remove_file(&h)
            };
            if let NodeKind::Directory(dst_id) = &dst.kind {
                self.cache.forget_child(dst_parent, &dst.name);
                self.cache.subdirs_changed(dst_parent, -1);
                let _ = fs::remove_dir_all(self.content_dir(dst_id));
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

    /// Moves a node's entry to a hidden temporary name beside it; returns that name.
    fn hide_entry(&self, node: &Node) -> Result<std::path::PathBuf> {
        let hidden = temp_sibling(&node.entry, "old");
        fs::rename(&node.entry, &hidden).at(&node.entry)?;
        Ok(hidden)
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
        // Three renames through a hidden name; a failure undoes the ones done.
        let tmp = temp_sibling(&a.entry, "exchange");
        fs::rename(&a.entry, &tmp).at(&tmp)?;
        if let Err(e) = fs::rename(&b.entry, &a.entry) {
            let _ = fs::rename(&tmp, &a.entry);
            return Err(Error::io(&a.entry, e));
        }
        if let Err(e) = fs::rename(&tmp, &b.entry) {
            let _ = fs::rename(&a.entry, &b.entry);
            let _ = fs::rename(&tmp, &a.entry);
            return Err(Error::io(&b.entry, e));
        }
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

    /// Moves a node whose name becomes (or stops being) shortened. No step leaves a name
    /// that is neither the old nor the new one: on a failure the node is back at its source.
    fn move_between_shapes(
        &self,
        src: &Node,
        dst_entry: &Path,
        dst_short: bool,
        dst_c9r: &str,
    ) -> Result<()> {
        let noreplace = |from: &Path, to: &Path| {
            rename_noreplace(from, to).map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
                    Error::AlreadyExists(src.name.clone())
                }
                _ => Error::io(to, e),
            })
        };
        let src_dir_entry = src.shortened || src.kind != NodeKind::File;
        let dst_dir_entry = dst_short || src.kind != NodeKind::File;
        match (src_dir_entry, dst_dir_entry) {
            (true, true) => {
                // Directory and symlink nodes: the entry directory moves whole. Its name.c9s is
                // written first (an unshortened entry ignores a stray one).
                if dst_short {
                    write_atomic(&src.entry.join(NAME_FILE), dst_c9r.as_bytes(), 0o644)?;
                }
                noreplace(&src.entry, dst_entry)?;
                if !dst_short {
                    let _ = fs::remove_file(dst_entry.join(NAME_FILE));
                }
            }
            (false, true) => {
                // A plain file becomes shortened: its new entry is built around it.
                let tmp = temp_sibling(dst_entry, "new");
                fs::create_dir(&tmp).at(&tmp)?;
                let payload = tmp.join(CONTENTS_FILE);
                let r = (|| {
                    let name_file = tmp.join(NAME_FILE);
                    fs::write(&name_file, dst_c9r.as_bytes()).at(&name_file)?;
                    fs::rename(&src.entry, &payload).at(&payload)?;
                    noreplace(&tmp, dst_entry)
                })();
                if let Err(e) = r {
                    if payload.exists() {
                        let _ = fs::rename(&payload, &src.entry);
                    }
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e);
                }
            }
            (true, false) => {
                // A shortened file becomes plain: its entry is hidden first, then emptied.
                let hidden = self.hide_entry(src)?;
                if let Err(e) = noreplace(&hidden.join(CONTENTS_FILE), dst_entry) {
                    let _ = fs::rename(&hidden, &src.entry);
                    return Err(e);
                }
                let _ = fs::remove_dir_all(&hidden);
            }
            (false, false) => unreachable!("a plain file keeps its shape when its name does"),
        }
        if let Some(parent) = dst_entry.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Makes directory `dir`'s entries durable, for an application's `fsync` of the directory:
    /// the content directory itself, and for every node that is a directory on disk (long
    /// names, directories, symlinks) its `name.c9s`, `dir.c9r`, `symlink.c9r` and the entry
    /// directory; for a child directory also its content directory, its `dirid.c9r` and the
    /// `d/XX` directory that holds it. File contents are not flushed here: that is the
    /// file's own `fsync`.
    pub fn sync_dir_entries(&self, dir: &DirId) -> Result<()> {
        let content_dir = self.content_dir(dir);
        let sync_file = |p: &Path| -> Result<()> {
            match store::open_file(p, false) {
                Ok(f) => f.sync_all().at(p),
                Err(Error::Io { source, .. }) if is_not_found(&source) => Ok(()),
                Err(e) => Err(e),
            }
        };
        for e in fs::read_dir(&content_dir).at(&content_dir)?.flatten() {
            let entry = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in [NAME_FILE, DIR_FILE, SYMLINK_FILE] {
                sync_file(&entry.join(f))?;
            }
            sync_dir(&entry)?;
            if let Ok(id) = store::read_bounded(&entry.join(DIR_FILE), 1000) {
                if let Ok(id) = String::from_utf8(id) {
                    let child = self.content_dir(&Arc::from(id));
                    if store::metadata(&child, Expect::Dir).is_ok() {
                        sync_file(&child.join(DIRID_FILE))?;
                        sync_dir(&child)?;
                        if let Some(parent) = child.parent() {
                            sync_dir(parent)?;
                        }
                    }
                }
            }
        }
        sync_dir(&content_dir)
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

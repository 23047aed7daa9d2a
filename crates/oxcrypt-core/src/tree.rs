//! Changes to the tree: create, mkdir, symlink, unlink, rmdir, rename, exchange, and the
//! node attributes (permissions, times, owner) that live on the ciphertext files.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bumpalo::Bump;

use crate::error::{Error, IoContext, Result};
use crate::fault;
use crate::file::FileHandle;
use crate::fsutil::{sync_dir, temp_sibling, write_atomic};
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
        fault::point().at(path)?;
        let file = store::create_new(path, mode).map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => Error::AlreadyExists(name.to_string()),
            _ => Error::io(path, e),
        })?;
        let header = self.content.new_header();
        let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
        let hl = self.content.combo().header_len();
        self.content.encrypt_header(&header, &mut buf);
        if let Err(e) = fault::write_all_at(&file, &buf[..hl], 0) {
            drop(file);
            let _ = fault::remove_file(path);
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
        fault::create_dir(&tmp).at(&tmp)?;
        let result = (|| {
            if let Some(c9r) = c9r {
                let name_file = tmp.join(NAME_FILE);
                fault::write(&name_file, c9r.as_bytes()).at(&name_file)?;
            }
            fill(&tmp)?;
            fault::rename_noreplace(&tmp, entry).map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Error::AlreadyExists(name.into()),
                _ => Error::io(entry, e),
            })
        })();
        if result.is_err() {
            let _ = fault::remove_dir_all(&tmp);
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
        let result = fault::set_mode(&content_dir, mode & 0o7777)
            .at(&content_dir)
            .and_then(|()| {
                self.build_entry(&entry, shortened.then_some(c9r.as_str()), &name, |tmp| {
                    let dir_file = tmp.join(DIR_FILE);
                    fault::write(&dir_file, id.as_bytes()).at(&dir_file)
                })
            });
        if let Err(e) = result {
            let _ = fault::remove_dir_all(&content_dir);
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

    /// Creates directory node `name` in `parent` for the existing content directory of `id`
    /// (an orphan whose `dir.c9r` was lost): its entries, encrypted under `id`, show up below
    /// the new name without being moved. All-or-nothing like [`mkdir`](Self::mkdir).
    pub fn adopt_dir(&self, parent: &DirId, name: &str, id: &DirId) -> Result<Node> {
        let name = normalize_name(name)?;
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        self.ensure_absent(&entry, &name)?;
        self.build_entry(&entry, shortened.then_some(c9r.as_str()), &name, |tmp| {
            let dir_file = tmp.join(DIR_FILE);
            fault::write(&dir_file, id.as_bytes()).at(&dir_file)
        })?;
        self.cache
            .put_child(parent.clone(), name.clone(), id.clone());
        self.cache.subdirs_changed(parent, 1);
        Ok(Node {
            name,
            kind: NodeKind::Directory(id.clone()),
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
            fault::write(&path, &self.content.encrypt_small(target.as_bytes())).at(&path)
        })?;
        Ok(Node {
            name,
            kind: NodeKind::Symlink,
            entry,
            shortened,
        })
    }

    /// Removes a node's entry: a plain file with one unlink; an entry directory is first
    /// hidden with one rename (so the name goes at once, whole) and then deleted; if deleting
    /// fails, the hidden leftover is reported by `check`.
    fn remove_entry(&self, node: &Node) -> Result<()> {
        if node.kind == NodeKind::File && !node.shortened {
            return fault::remove_file(&node.entry).at(&node.entry);
        }
        let hidden = self.hide_entry(node)?;
        if let Err(e) = fault::remove_dir_all(&hidden) {
            tracing::warn!(path = %hidden.display(), error = %e, "cannot delete a removed entry; `oxcrypt check` lists it");
        }
        Ok(())
    }

    /// Removes a file or symlink `name` from `parent`.
    pub fn unlink(&self, parent: &DirId, name: &str) -> Result<()> {
        // A plain file is one `.c9r` file: unlink it straight away. Every other node is a
        // directory in the ciphertext (EISDIR), which the general path below handles.
        let bump = Bump::new();
        let (_, entry, shortened) = self.entry_path_in(parent, name, &bump)?;
        if !shortened {
            match fault::remove_file(entry) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::NotFound(name.to_string()))
                }
                Err(e) => return Err(Error::io(entry, e)),
            }
        }
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
        // The directory is gone from its parent: its content directory is only cleanup now
        // (an orphan one is reported by `check`).
        let content_dir = self.content_dir(id);
        match fault::remove_dir_all(&content_dir) {
            Err(e) if !is_not_found(&e) => {
                tracing::warn!(path = %content_dir.display(), error = %e, "cannot delete the content directory of a removed directory");
            }
            _ => {}
        }
        Ok(())
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
            (false, false) => fault::rename(&src.entry, &dst_entry).at(&dst_entry),
            (true, true) => fault::rename(&src.entry, &dst_entry)
                .at(&dst_entry)
                .and_then(|()| {
                    write_atomic(&dst_entry.join(NAME_FILE), dst_c9r.as_bytes(), 0o644).inspect_err(
                        |_| {
                            // The entry keeps its old name.c9s: move it back where that is right.
                            let _ = fault::rename(&dst_entry, &src.entry);
                        },
                    )
                }),
            (false, true) | (true, false) => {
                self.move_between_shapes(&src, &dst_entry, dst_short, &dst_c9r)
            }
        };
        if let Err(e) = moved {
            if let Some((h, dst)) = &hidden {
                if let Err(back) = fault::rename(h, &dst.entry) {
                    tracing::error!(error = %back, hidden = %h.display(), "cannot put a replaced target back; `oxcrypt check` lists it");
                }
            }
            return Err(e);
        }
        if let Some((h, dst)) = hidden {
            let _ = if h.is_dir() {
                fault::remove_dir_all(&h)
            } else {
                fault::remove_file(&h)
            };
            if let NodeKind::Directory(dst_id) = &dst.kind {
                self.cache.forget_child(dst_parent, &dst.name);
                self.cache.subdirs_changed(dst_parent, -1);
                let _ = fault::remove_dir_all(&self.content_dir(dst_id));
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
        fault::rename(&node.entry, &hidden).at(&node.entry)?;
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
        let swap = |x: &Path, y: &Path| -> Result<()> {
            let tmp = temp_sibling(x, "exchange");
            fault::rename(x, &tmp).at(&tmp)?;
            if let Err(e) = fault::rename(y, x) {
                let _ = fault::rename(&tmp, x);
                return Err(Error::io(x, e));
            }
            if let Err(e) = fault::rename(&tmp, y) {
                let _ = fault::rename(x, y);
                let _ = fault::rename(&tmp, x);
                return Err(Error::io(y, e));
            }
            Ok(())
        };
        if !a.shortened {
            swap(&a.entry, &b.entry)?;
        } else {
            // Each .c9s node must hold the full name of its new place. Those names are written
            // beside the nodes first and moved over their name.c9s after the swap; a failure
            // at any step undoes the steps before it.
            let (_, _, a_c9r) = self.entry_for(a_parent, &a.name);
            let (_, _, b_c9r) = self.entry_for(b_parent, &b.name);
            const NEXT: &str = ".oxcrypt-name-next";
            let (a_next, b_next) = (b.entry.join(NEXT), a.entry.join(NEXT));
            fault::write(&a_next, a_c9r.as_bytes()).at(&a_next)?;
            let undo_next = || {
                let _ = fault::remove_file(&a.entry.join(NEXT));
                let _ = fault::remove_file(&b.entry.join(NEXT));
                let _ = fault::remove_file(&a_next);
                let _ = fault::remove_file(&b_next);
            };
            if let Err(e) = fault::write(&b_next, b_c9r.as_bytes()) {
                undo_next();
                return Err(Error::io(&b_next, e));
            }
            if let Err(e) = swap(&a.entry, &b.entry) {
                undo_next();
                return Err(e);
            }
            // After the swap the node at a's place holds a's next name, and so on.
            let at_a = (a.entry.join(NEXT), a.entry.join(NAME_FILE));
            let at_b = (b.entry.join(NEXT), b.entry.join(NAME_FILE));
            if let Err(e) = fault::rename(&at_a.0, &at_a.1) {
                let _ = swap(&a.entry, &b.entry);
                undo_next();
                return Err(Error::io(&at_a.1, e));
            }
            if let Err(e) = fault::rename(&at_b.0, &at_b.1) {
                // The node at a's place had b's name before: give it back, then swap back.
                let _ = fault::write(&at_a.1, b_c9r.as_bytes());
                let _ = swap(&a.entry, &b.entry);
                undo_next();
                return Err(Error::io(&at_b.1, e));
            }
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
            fault::rename_noreplace(from, to).map_err(|e| match e.raw_os_error() {
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
                    let _ = fault::remove_file(&dst_entry.join(NAME_FILE));
                }
            }
            (false, true) => {
                // A plain file becomes shortened: its new entry is built around it.
                let tmp = temp_sibling(dst_entry, "new");
                fault::create_dir(&tmp).at(&tmp)?;
                let payload = tmp.join(CONTENTS_FILE);
                let r = (|| {
                    let name_file = tmp.join(NAME_FILE);
                    fault::write(&name_file, dst_c9r.as_bytes()).at(&name_file)?;
                    fault::rename(&src.entry, &payload).at(&payload)?;
                    noreplace(&tmp, dst_entry)
                })();
                if let Err(e) = r {
                    if payload.exists() {
                        let _ = fault::rename(&payload, &src.entry);
                    }
                    let _ = fault::remove_dir_all(&tmp);
                    return Err(e);
                }
            }
            (true, false) => {
                // A shortened file becomes plain: its entry is hidden first, then emptied.
                let hidden = self.hide_entry(src)?;
                if let Err(e) = noreplace(&hidden.join(CONTENTS_FILE), dst_entry) {
                    let _ = fault::rename(&hidden, &src.entry);
                    return Err(e);
                }
                let _ = fault::remove_dir_all(&hidden);
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

/// Every change to the tree under an injected failure at each of its steps (see `fault.rs`):
/// the change happens whole or not at all, every other node reads back unchanged, and
/// `check` finds no error.
#[cfg(test)]
mod fault_tests {
    use std::path::{Path, PathBuf};

    use crate::content::CipherCombo;
    use crate::vault::{CreateOptions, Vault};
    use crate::{fault, Result};

    const PW: &str = "pw";

    fn long(tag: &str) -> String {
        format!("{tag}-{}", "x".repeat(200))
    }

    fn template(dir: &Path) {
        let v = Vault::create(
            dir,
            PW,
            &CreateOptions {
                cipher_combo: CipherCombo::SivGcm,
                scrypt_cost: 2,
            },
        )
        .unwrap();
        let root = v.root_id().clone();
        let put = |parent: &crate::DirId, name: &str, data: &[u8]| {
            let n = v.create_file(parent, name, 0o644).unwrap();
            v.open_file(&n, true).unwrap().write_at(0, data).unwrap();
        };
        put(&root, "a.txt", &vec![1u8; 50_000]);
        put(&root, &long("file"), b"long file");
        let d = v.mkdir(&root, "d", 0o755).unwrap();
        put(d.dir_id().unwrap(), "inner", b"inner");
        v.mkdir(&root, "e", 0o755).unwrap();
        v.mkdir(&root, &long("dir"), 0o755).unwrap();
        v.symlink(&root, "ln", "target").unwrap();
        v.symlink(&root, &long("link"), "t2").unwrap();
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let dst = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &dst);
            } else {
                std::fs::copy(e.path(), dst).unwrap();
            }
        }
    }

    /// Every node with its kind and content, sorted.
    fn snapshot(v: &Vault) -> Vec<String> {
        let mut out = Vec::new();
        let root = v.root();
        v.walk("", &root, &mut |path, node| {
            let what = match &node.kind {
                crate::NodeKind::Directory(_) => "dir".to_string(),
                crate::NodeKind::Symlink => format!("link {}", v.readlink(node)?),
                crate::NodeKind::File => {
                    let read = || -> Result<String> {
                        let fh = v.open_file(node, false)?;
                        let mut buf = vec![0u8; fh.size()? as usize];
                        let n = fh.read_at(0, &mut buf)?;
                        let sum: u64 = buf[..n].iter().map(|&b| b as u64).sum();
                        Ok(format!("file {n} {sum}"))
                    };
                    read().unwrap_or_else(|e| format!("unreadable: {e}"))
                }
            };
            out.push(format!("{path} {what}"));
            Ok(())
        })
        .unwrap();
        out.sort();
        out
    }

    fn check_errors(v: &Vault) -> Vec<String> {
        let report = crate::check::check(v, &mut |_| {}).unwrap();
        report
            .problems
            .iter()
            .filter(|p| p.severity == crate::check::Severity::Error)
            .map(|p| p.message.clone())
            .collect()
    }

    type Op = Box<dyn Fn(&Vault) -> Result<()>>;

    fn ops() -> Vec<(&'static str, Op)> {
        fn file(v: &Vault, path: &str) -> Result<crate::vault::FileHandle> {
            let n = v.resolve(path)?;
            v.open_file(&n, true)
        }
        let r = |v: &Vault| v.root_id().clone();
        let d = |v: &Vault| v.resolve("/d").unwrap().dir_id().unwrap().clone();
        vec![
            (
                "create",
                Box::new(move |v: &Vault| v.create_file(&r(v), "new", 0o644).map(drop)),
            ),
            (
                "create long",
                Box::new(move |v: &Vault| v.create_file(&r(v), &long("new"), 0o644).map(drop)),
            ),
            (
                "overwrite",
                Box::new(|v: &Vault| file(v, "/a.txt")?.write_at(100, &[9u8; 100])),
            ),
            (
                "append",
                Box::new(|v: &Vault| file(v, "/a.txt")?.write_at(50_000, &[7u8; 40_000])),
            ),
            (
                "write far",
                Box::new(|v: &Vault| file(v, "/a.txt")?.write_at(200_000, b"far")),
            ),
            (
                "truncate down",
                Box::new(|v: &Vault| file(v, "/a.txt")?.set_len(10_000)),
            ),
            (
                "truncate up",
                Box::new(|v: &Vault| file(v, "/a.txt")?.set_len(120_000)),
            ),
            (
                "mkdir",
                Box::new(move |v: &Vault| v.mkdir(&r(v), "m", 0o755).map(drop)),
            ),
            (
                "mkdir long",
                Box::new(move |v: &Vault| v.mkdir(&r(v), &long("m"), 0o755).map(drop)),
            ),
            (
                "symlink",
                Box::new(move |v: &Vault| v.symlink(&r(v), "s", "t").map(drop)),
            ),
            (
                "symlink long",
                Box::new(move |v: &Vault| v.symlink(&r(v), &long("s"), "t").map(drop)),
            ),
            (
                "unlink",
                Box::new(move |v: &Vault| v.unlink(&r(v), "a.txt")),
            ),
            (
                "unlink long",
                Box::new(move |v: &Vault| v.unlink(&r(v), &long("file"))),
            ),
            (
                "unlink long link",
                Box::new(move |v: &Vault| v.unlink(&r(v), &long("link"))),
            ),
            ("rmdir", Box::new(move |v: &Vault| v.rmdir(&r(v), "e"))),
            (
                "rmdir long",
                Box::new(move |v: &Vault| v.rmdir(&r(v), &long("dir"))),
            ),
            (
                "rename",
                Box::new(move |v: &Vault| v.rename(&r(v), "a.txt", &r(v), "b.txt", true)),
            ),
            (
                "rename to long",
                Box::new(move |v: &Vault| v.rename(&r(v), "a.txt", &r(v), &long("b"), true)),
            ),
            (
                "rename long to short",
                Box::new(move |v: &Vault| v.rename(&r(v), &long("file"), &r(v), "short", true)),
            ),
            (
                "rename long to long",
                Box::new(move |v: &Vault| {
                    v.rename(&r(v), &long("file"), &r(v), &long("other"), true)
                }),
            ),
            (
                "replace long by short",
                Box::new(move |v: &Vault| v.rename(&r(v), "a.txt", &r(v), &long("file"), true)),
            ),
            (
                "replace short by long",
                Box::new(move |v: &Vault| v.rename(&r(v), &long("file"), &r(v), "a.txt", true)),
            ),
            (
                "replace link by file",
                Box::new(move |v: &Vault| v.rename(&r(v), "a.txt", &r(v), "ln", true)),
            ),
            (
                "rename dir",
                Box::new(move |v: &Vault| v.rename(&r(v), "d", &r(v), "d2", true)),
            ),
            (
                "rename dir to long",
                Box::new(move |v: &Vault| v.rename(&r(v), "d", &r(v), &long("d"), true)),
            ),
            (
                "replace empty dir",
                Box::new(move |v: &Vault| v.rename(&r(v), "d", &r(v), "e", true)),
            ),
            (
                "replace long empty dir",
                Box::new(move |v: &Vault| v.rename(&r(v), "e", &r(v), &long("dir"), true)),
            ),
            (
                "move across",
                Box::new(move |v: &Vault| v.rename(&r(v), "a.txt", &d(v), "a.txt", true)),
            ),
            (
                "move long across",
                Box::new(move |v: &Vault| {
                    v.rename(&r(v), &long("file"), &d(v), &long("file"), true)
                }),
            ),
            (
                "exchange",
                Box::new(move |v: &Vault| v.exchange(&r(v), "a.txt", &d(v), "inner")),
            ),
            (
                "exchange long",
                Box::new(move |v: &Vault| v.exchange(&r(v), &long("file"), &r(v), &long("link"))),
            ),
        ]
    }

    #[test]
    fn every_change_is_all_or_nothing_at_every_step() {
        let tmp = tempfile::tempdir().unwrap();
        let tpl = tmp.path().join("template");
        template(&tpl);
        let before = snapshot(&Vault::open(&tpl, PW).unwrap());
        let fresh = |name: &str| -> (PathBuf, Vault) {
            let dir = tmp.path().join(name);
            let _ = std::fs::remove_dir_all(&dir);
            copy_tree(&tpl, &dir);
            let v = Vault::open(&dir, PW).unwrap();
            (dir, v)
        };
        let mut steps = 0;
        let mut failures = Vec::new();
        for (name, op) in ops() {
            let (_, v) = fresh("expected");
            op(&v).unwrap_or_else(|e| panic!("{name} without faults: {e}"));
            let after = snapshot(&v);
            assert_ne!(after, before, "{name} changes nothing");
            for n in 1.. {
                let (_, v) = fresh("run");
                fault::fail_nth(n);
                let r = op(&v);
                let hit = fault::disarm();
                let v = Vault::open(&tmp.path().join("run"), PW).unwrap();
                let now = snapshot(&v);
                if !hit {
                    r.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(now, after, "{name}");
                    break;
                }
                steps += 1;
                match &r {
                    Ok(()) if now != after => {
                        failures.push(format!("{name}: step {n} failed, reported success"))
                    }
                    Err(e) if now != before => {
                        failures.push(format!("{name}: step {n} failed ({e}), half done: {now:?}"))
                    }
                    _ => {}
                }
                let errors = check_errors(&v);
                if !errors.is_empty() {
                    failures.push(format!("{name}: step {n}: check: {errors:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        eprintln!("{steps} failure points exercised");
        assert!(steps > 60, "only {steps} failure points were exercised");
    }
}

//! The fuser `Filesystem`: translates FUSE calls into vault operations. Metadata calls are
//! answered inline from the caches; file content goes to the I/O engine, which replies from its
//! worker.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use bumpalo::Bump;
use dashmap::DashMap;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle as Fh, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use oxcrypt_core::vault::FileType as VType;
use oxcrypt_core::vault::NodeKind;
use oxcrypt_core::{Attr, DirId, Error, Node, Vault};
use oxcrypt_io::{Engine, Job, OpenFile};
use slab::Slab;

use crate::cache::{Listed, MetaCache};
use crate::inodes::{unlooked_ino, InodeTable, ROOT_INO};
use crate::page_cache::{PageCachePolicy, Stamp};

thread_local! {
    /// The per-request arena: names and paths built while answering one request live here and
    /// are dropped (reset) when the reply has been sent.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::with_capacity(4096));
}

/// Runs `f` with this thread's request arena, reset afterwards.
fn with_arena<R>(f: impl FnOnce(&Bump) -> R) -> R {
    ARENA.with(|a| {
        let mut bump = a.borrow_mut();
        let r = f(&bump);
        bump.reset();
        r
    })
}

/// Copies a FUSE name into the arena as UTF-8; names that are not UTF-8 cannot exist in a vault.
fn name_in<'b>(bump: &'b Bump, name: &OsStr) -> Result<&'b str, Errno> {
    let s = std::str::from_utf8(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    Ok(bump.alloc_str(s))
}

/// Answers an operation without a result value.
fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn err(e: Error) -> Errno {
    match &e {
        Error::Content { .. } | Error::BadName { .. } | Error::BrokenNode { .. } => {
            tracing::error!(error = %e, "vault data refused");
        }
        _ => tracing::debug!(error = %e, "operation failed"),
    }
    errno(&e)
}

/// An open file handle.
struct Handle {
    file: Arc<OpenFile>,
    append: bool,
}

/// Settings of the file system.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Refuse every change.
    pub read_only: bool,
    /// Ask the kernel for readdirplus.
    pub readdirplus: bool,
    /// Answer metadata calls on a spawned thread instead of inline (the ablation of inline
    /// metadata).
    pub metadata_on_thread: bool,
    /// Ask for the kernel's writeback cache (the kernel then computes O_APPEND offsets).
    pub writeback_cache: bool,
    /// A fresh heap-allocated arena per request instead of the reused thread arena (the
    /// ablation of the arena).
    pub heap_scratch: bool,
}

/// The oxcrypt file system.
pub struct OxFs {
    vault: Arc<Vault>,
    engine: Arc<Engine>,
    inodes: InodeTable,
    cache: MetaCache,
    handles: Mutex<Slab<Handle>>,
    open_files: DashMap<u64, Weak<OpenFile>>,
    next_file_id: std::sync::atomic::AtomicU64,
    dir_handles: Mutex<Slab<Arc<Vec<Listed>>>>,
    page_cache: PageCachePolicy,
    options: FsOptions,
}

fn to_fuse_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: match a.kind {
            VType::File => FileType::RegularFile,
            VType::Directory => FileType::Directory,
            VType::Symlink => FileType::Symlink,
        },
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The FUSE file type of a node, known without a `stat`.
fn node_kind(n: &Node) -> FileType {
    match n.kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Directory(_) => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
    }
}

impl OxFs {
    /// A file system over `vault`, doing content I/O on `engine`.
    pub fn new(
        vault: Arc<Vault>,
        engine: Arc<Engine>,
        ttl: std::time::Duration,
        options: FsOptions,
    ) -> Self {
        let root = vault.root();
        OxFs {
            inodes: InodeTable::new(root),
            vault,
            engine,
            cache: MetaCache::new(ttl),
            handles: Mutex::new(Slab::new()),
            open_files: DashMap::new(),
            next_file_id: std::sync::atomic::AtomicU64::new(1),
            dir_handles: Mutex::new(Slab::new()),
            page_cache: PageCachePolicy::default(),
            options,
        }
    }

    /// Runs `f` with the request arena (or, in the ablation, a throw-away heap arena).
    fn with_arena<R>(&self, f: impl FnOnce(&Bump) -> R) -> R {
        if self.options.heap_scratch {
            f(&Bump::new())
        } else {
            with_arena(f)
        }
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.inodes
            .get(ino.0)
            .map(|i| i.node())
            .ok_or(Errno::ENOENT)
    }

    fn dir_id(&self, ino: INodeNo) -> Result<DirId, Errno> {
        let node = self.node(ino)?;
        node.dir_id().cloned().ok_or(Errno::ENOTDIR)
    }

    /// Attributes of a known inode: cache, then the open file's size, then the ciphertext.
    fn attr(&self, ino: u64, node: &Node) -> Result<Attr, Errno> {
        if let Some(a) = self.cache.attr(ino) {
            return Ok(a);
        }
        let open = self.open_files.get(&ino).and_then(|w| w.upgrade());
        let a = match open {
            // An open file answers from its descriptor: right even after unlink (nlink 0).
            Some(f) => f.handle().attr(),
            None => self.vault.stat(node),
        }
        .map_err(err)?;
        self.cache.put_attr(ino, a);
        Ok(a)
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.options.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The listing of a directory (cached), sorted by name.
    fn listing(&self, ino: u64) -> Result<Arc<Vec<Listed>>, Errno> {
        if let Some(l) = self.cache.listing(ino) {
            return Ok(l);
        }
        let node = self.node(INodeNo(ino))?;
        let id = node.dir_id().ok_or(Errno::ENOTDIR)?;
        let mut out: Vec<Listed> = (self.vault.list(id).map_err(err)?)
            .into_iter()
            .map(|child| Listed::new(child.name.clone(), child))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let l = Arc::new(out);
        self.cache.put_listing(ino, l.clone());
        Ok(l)
    }

    /// Looks `name` up in `parent` and registers the result with the kernel's lookup count.
    fn lookup_entry(&self, parent: INodeNo, name: &str, bump: &Bump) -> Result<(u64, Attr), Errno> {
        let dir = self.dir_id(parent)?;
        let node = self
            .vault
            .lookup_in(&dir, name, bump)
            .map_err(err)?
            .ok_or(Errno::ENOENT)?;
        let attr = self.vault.stat(&node).map_err(err)?;
        let ino = self
            .inodes
            .lookup(parent.0, &node.name.clone(), node, attr.ino);
        self.cache.put_attr(ino, attr);
        Ok((ino, attr))
    }

    /// A created node: owner from the request (group from a setgid parent), registered.
    /// The owner a new node in `parent` gets: the caller's uid, and the caller's gid or the
    /// parent's when the parent is setgid. Also says whether the parent is setgid.
    fn new_owner(&self, req: &Request, parent: INodeNo) -> Result<(u32, u32, bool), Errno> {
        // Only the parent's mode and group matter here: take them from the attribute cache,
        // or straight from its content directory (a full stat would count its subdirectories).
        let (mode, pgid) = match self.cache.attr(parent.0) {
            Some(a) => (a.perm, a.gid),
            None => {
                let parent_path = self.vault.attr_path(&self.node(parent)?);
                let pmd = std::fs::metadata(&parent_path)
                    .map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))?;
                use std::os::unix::fs::MetadataExt;
                (pmd.mode(), pmd.gid())
            }
        };
        let setgid = mode & 0o2000 != 0;
        Ok((req.uid(), if setgid { pgid } else { req.gid() }, setgid))
    }

    /// Gives a node just made in `parent` its owner, caches and inode number.
    fn adopt(&self, req: &Request, parent: INodeNo, node: Node) -> Result<(u64, Attr), Errno> {
        let (uid, gid, setgid) = self.new_owner(req, parent)?;
        if let Err(e) = self.vault.chown(&node, Some(uid), Some(gid)) {
            tracing::debug!(error = %e, "cannot set owner of new node");
        }
        if node.is_dir() && setgid {
            let a = self.vault.stat(&node).map_err(err)?;
            let _ = self.vault.set_perm(&node, a.perm | 0o2000);
        }
        let attr = self.vault.stat(&node).map_err(err)?;
        Ok((self.register_new(parent, node, attr), attr))
    }

    /// Enters a node just made in `parent` into the inode table and the caches.
    fn register_new(&self, parent: INodeNo, node: Node, attr: Attr) -> u64 {
        self.cache.dir_changed(parent.0);
        // A new node: any number the old name had belongs to a deleted file.
        self.inodes.removed(parent.0, &node.name);
        let ino = self
            .inodes
            .lookup(parent.0, &node.name.clone(), node, attr.ino);
        self.cache.put_attr(ino, attr);
        ino
    }

    /// Creates a node with `make` in directory `parent` and adopts it (owner, caches, inode).
    fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&DirId, &str) -> oxcrypt_core::Result<Node>,
    ) -> Result<(u64, Attr), Errno> {
        self.with_arena(|bump| {
            self.writable()?;
            let name = name_in(bump, name)?;
            let dir = self.dir_id(parent)?;
            let node = make(&dir, name).map_err(err)?;
            self.adopt(req, parent, node)
        })
    }

    fn reply_entry(&self, reply: ReplyEntry, r: Result<(u64, Attr), Errno>) {
        match r {
            Ok((ino, a)) => reply.entry(&self.cache.ttl(), &to_fuse_attr(ino, &a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// The shared open file of `ino`, opening it if no handle has it open.
    fn open_file(&self, ino: u64, node: &Node) -> Result<Arc<OpenFile>, Errno> {
        if let Some(f) = self.open_files.get(&ino).and_then(|w| w.upgrade()) {
            return Ok(f);
        }
        let handle = self
            .vault
            .open_file(node, !self.options.read_only)
            .map_err(err)?;
        Ok(self.share_file(ino, handle))
    }

    /// Makes `handle` the open file that every handle of `ino` shares.
    fn share_file(&self, ino: u64, handle: oxcrypt_core::vault::FileHandle) -> Arc<OpenFile> {
        let id = self
            .next_file_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = OpenFile::new(id, handle);
        self.open_files.insert(ino, Arc::downgrade(&f));
        f
    }

    /// The ciphertext file's (mtime, length), the mark of whether it changed between opens.
    fn stamp(node: &Node) -> Option<Stamp> {
        let md = std::fs::metadata(node.payload_path()).ok()?;
        Some((md.modified().ok()?, md.len()))
    }

    /// A new handle of inode `ino`, and whether the kernel may keep its cached pages
    /// (`FOPEN_KEEP_CACHE`, decided by [`PageCachePolicy`]).
    /// `now` is the ciphertext's stamp (None for a file just created: its cache is empty).
    fn new_handle(
        &self,
        ino: u64,
        now: Option<Stamp>,
        file: Arc<OpenFile>,
        flags: i32,
    ) -> (u64, bool) {
        // With the writeback cache the kernel computes append offsets itself.
        let append = flags & libc::O_APPEND != 0 && !self.options.writeback_cache;
        let keep = self.page_cache.opened(ino, now);
        let fh = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Handle { file, append }) as u64;
        (fh, keep)
    }

    fn handle(&self, fh: Fh) -> Result<(Arc<OpenFile>, bool), Errno> {
        let handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        handles
            .get(fh.0 as usize)
            .map(|h| (h.file.clone(), h.append))
            .ok_or(Errno::EBADF)
    }

    /// Unlinks or rmdirs `name` in `parent` with `remove`, then drops the name's inode number
    /// and cached attributes (an open descriptor of a removed file now sees nlink 0).
    fn remove_name(
        &self,
        parent: INodeNo,
        name: &OsStr,
        remove: fn(&Vault, &DirId, &str) -> oxcrypt_core::Result<()>,
    ) -> Result<(), Errno> {
        self.with_arena(|bump| {
            self.writable()?;
            let name = name_in(bump, name)?;
            let dir = self.dir_id(parent)?;
            let nfc = oxcrypt_core::names::normalize_name_in(name, bump).map_err(err)?;
            remove(&self.vault, &dir, name).map_err(err)?;
            self.cache.dir_changed(parent.0);
            if let Some(ino) = self.inodes.peek(parent.0, nfc) {
                self.cache.forget_attr(ino);
            }
            self.inodes.removed(parent.0, nfc);
            Ok(())
        })
    }

    /// The listing snapshot of an open directory handle.
    fn dir_listing(&self, fh: Fh) -> Option<Arc<Vec<Listed>>> {
        self.dir_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fh.0 as usize)
            .cloned()
    }

    /// Runs a metadata call inline, or on a spawned thread in the ablation.
    fn meta(&self, f: impl FnOnce(&OxFs) + Send) {
        if self.options.metadata_on_thread {
            std::thread::scope(|s| {
                s.spawn(|| f(self));
            });
        } else {
            f(self)
        }
    }

    fn set_size(&self, file: Arc<OpenFile>, size: u64) -> Result<(), Errno> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.engine.submit(Job::SetLen {
            file,
            size,
            done: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        rx.recv().map_err(|_| Errno::EIO)?.map_err(Errno::from_i32)
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for OxFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES;
        if self.options.readdirplus {
            // AUTO: the kernel asks for attributes with the first batch of a listing and then
            // only when the caller went on to look entries up (`ls -l`, not `ls`).
            wanted |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        }
        if self.options.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if let Err(missing) = config.add_capabilities(wanted) {
            tracing::info!(?missing, "kernel lacks some FUSE capabilities");
        }
        let _ = config.set_max_write(1 << 20);
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // Everything written went through the engine already; make it durable.
        for entry in self.open_files.iter() {
            if let Some(f) = entry.value().upgrade() {
                let _ = f.handle().sync();
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.meta(|fs| {
            let r = fs.with_arena(|bump| {
                let name = name_in(bump, name)?;
                // A fresh listing answers without touching the ciphertext tree.
                if let Some(l) = fs.cache.listing(parent.0) {
                    let nfc = oxcrypt_core::names::normalize_name_in(name, bump).map_err(err)?;
                    return match l.binary_search_by(|e| e.name.as_str().cmp(nfc)) {
                        Ok(i) => {
                            let e = &l[i];
                            let attr = e.attr(&fs.vault).ok_or(Errno::ENOENT)?;
                            let ino = fs
                                .inodes
                                .lookup(parent.0, &e.name, e.node.clone(), attr.ino);
                            Ok((ino, fs.cache.attr(ino).unwrap_or(attr)))
                        }
                        Err(_) => Err(Errno::ENOENT),
                    };
                }
                fs.lookup_entry(parent, name, bump)
            });
            match r {
                Ok((ino, attr)) => {
                    reply.entry(&fs.cache.ttl(), &to_fuse_attr(ino, &attr), Generation(0))
                }
                Err(e) => reply.error(e),
            }
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        self.meta(|fs| match fs.node(ino).and_then(|n| fs.attr(ino.0, &n)) {
            Ok(a) => reply.attr(&fs.cache.ttl(), &to_fuse_attr(ino.0, &a)),
            Err(e) => reply.error(e),
        })
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<Fh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| -> Result<Attr, Errno> {
            self.writable()?;
            let node = self.node(ino)?;
            if let Some(size) = size {
                if node.is_dir() {
                    return Err(Errno::EISDIR);
                }
                let file = match fh {
                    Some(fh) => self.handle(fh)?.0,
                    None => self.open_file(ino.0, &node)?,
                };
                self.set_size(file, size)?;
            }
            if uid.is_some() || gid.is_some() {
                self.vault.chown(&node, uid, gid).map_err(err)?;
            }
            if let Some(mode) = mode {
                self.vault.set_perm(&node, mode).map_err(err)?;
            }
            if atime.is_some() || mtime.is_some() {
                self.vault
                    .set_times(&node, atime.map(time_of), mtime.map(time_of))
                    .map_err(err)?;
            }
            self.cache.forget_attr(ino.0);
            self.attr(ino.0, &node)
        })();
        match r {
            Ok(a) => reply.attr(&self.cache.ttl(), &to_fuse_attr(ino.0, &a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .node(ino)
            .and_then(|n| self.vault.readlink(&n).map_err(err))
        {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            // FIFOs, sockets and devices do not exist in the vault format.
            return reply.error(Errno::EPERM);
        }
        let r = self.make_node(req, parent, name, |dir, name| {
            self.vault.create_file(dir, name, mode & !umask & 0o7777)
        });
        self.reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.make_node(req, parent, name, |dir, name| {
            self.vault.mkdir(dir, name, mode & !umask & 0o7777)
        });
        self.reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_name(parent, name, Vault::unlink));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_name(parent, name, Vault::rmdir));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Ok(target) = std::str::from_utf8(target.as_os_str().as_bytes()) else {
            return reply.error(Errno::EINVAL);
        };
        let r = self.make_node(req, parent, link_name, |dir, name| {
            self.vault.symlink(dir, name, target)
        });
        self.reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.with_arena(|bump| {
            self.writable()?;
            if flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            let name = name_in(bump, name)?;
            let newname = name_in(bump, newname)?;
            let a = oxcrypt_core::names::normalize_name_in(name, bump).map_err(err)?;
            let b = oxcrypt_core::names::normalize_name_in(newname, bump).map_err(err)?;
            let src = self.dir_id(parent)?;
            let dst = self.dir_id(newparent)?;
            let (ia, ib) = (
                self.inodes.peek(parent.0, a),
                self.inodes.peek(newparent.0, b),
            );
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                self.vault
                    .exchange(&src, name, &dst, newname)
                    .map_err(err)?;
                self.inodes.removed(parent.0, a);
                self.inodes.removed(newparent.0, b);
                if let (Some(ino), Ok(Some(node))) = (ia, self.vault.lookup(&dst, newname)) {
                    self.inodes.relocate(ino, newparent.0, b, node);
                }
                if let (Some(ino), Ok(Some(node))) = (ib, self.vault.lookup(&src, name)) {
                    self.inodes.relocate(ino, parent.0, a, node);
                }
            } else {
                let replace = !flags.contains(RenameFlags::RENAME_NOREPLACE);
                self.vault
                    .rename(&src, name, &dst, newname, replace)
                    .map_err(err)?;
                self.inodes.removed(newparent.0, b);
                self.inodes.removed(parent.0, a);
                if let (Some(ino), Ok(Some(node))) = (ia, self.vault.lookup(&dst, newname)) {
                    self.inodes.relocate(ino, newparent.0, b, node);
                }
            }
            for ino in [ia, ib].into_iter().flatten() {
                self.cache.forget_attr(ino);
            }
            self.cache.dir_changed(parent.0);
            self.cache.dir_changed(newparent.0);
            Ok(())
        });
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links do not exist in the vault format.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            if write {
                self.writable()?;
            }
            let node = self.node(ino)?;
            if node.is_dir() {
                return Err(Errno::EISDIR);
            }
            let file = self.open_file(ino.0, &node)?;
            Ok(self.new_handle(ino.0, Self::stamp(&node), file, flags.0))
        })();
        match r {
            Ok((fh, true)) => reply.opened(Fh(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Ok((fh, false)) => reply.opened(Fh(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.handle(fh) {
            Ok((file, _)) => self.engine.submit(Job::Read {
                file,
                offset,
                len: size,
                done: Box::new(move |r| match r {
                    Ok(data) => reply.data(data),
                    Err(e) => reply.error(Errno::from_i32(e)),
                }),
            }),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.writable() {
            return reply.error(e);
        }
        let (file, append) = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        self.cache.forget_attr(ino.0);
        self.page_cache.wrote(ino.0);
        let offset = if append { u64::MAX } else { offset };
        self.engine.submit(Job::Write {
            file,
            offset,
            data: data.to_vec(),
            done: Box::new(move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(Errno::from_i32(e)),
            }),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: Fh,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes are complete when acknowledged, so there is nothing to flush. ENOSYS makes the
        // kernel stop sending FLUSH: one round trip less per close(2).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let handle = {
            let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
            handles.try_remove(fh.0 as usize)
        };
        if let Some(h) = handle {
            self.page_cache.closed(ino.0, || {
                self.inodes.get(ino.0).and_then(|i| Self::stamp(&i.node()))
            });
            if Arc::strong_count(&h.file) == 1 {
                self.open_files
                    .remove_if(&ino.0, |_, w| w.strong_count() <= 1);
                self.engine.submit(Job::Close { file: h.file });
            }
        }
        self.cache.forget_attr(ino.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        match self.handle(fh) {
            Ok((file, _)) => self.engine.submit(Job::Sync {
                file,
                datasync,
                done: Box::new(move |r| match r {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(Errno::from_i32(e)),
                }),
            }),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.meta(|fs| match fs.listing(ino.0) {
            Ok(l) => {
                let fh = fs
                    .dir_handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(l);
                reply.opened(Fh(fh as u64), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.meta(|fs| {
            let Some(listing) = fs.dir_listing(fh) else {
                return reply.error(Errno::EBADF);
            };
            let parent = fs
                .inodes
                .get(ino.0)
                .map(|i| i.place().0)
                .unwrap_or(ROOT_INO);
            let mut i = offset;
            if i == 0 {
                if reply.add(ino, 1, FileType::Directory, ".") {
                    return reply.ok();
                }
                i = 1;
            }
            if i == 1 {
                if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                    return reply.ok();
                }
                i = 2;
            }
            for (k, e) in listing.iter().enumerate().skip((i - 2) as usize) {
                let shown = fs
                    .inodes
                    .peek(ino.0, &e.name)
                    .unwrap_or_else(|| unlooked_ino(ino.0, &e.name));
                if reply.add(INodeNo(shown), k as u64 + 3, node_kind(&e.node), &e.name) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.meta(|fs| {
            let Some(listing) = fs.dir_listing(fh) else {
                return reply.error(Errno::EBADF);
            };
            let ttl = fs.cache.ttl();
            let (parent, self_attr) = match fs.inodes.get(ino.0) {
                Some(i) => (i.place().0, fs.attr(ino.0, &i.node())),
                None => return reply.error(Errno::ENOENT),
            };
            let Ok(self_attr) = self_attr else {
                return reply.error(Errno::ENOENT);
            };
            let mut i = offset;
            if i == 0 {
                if reply.add(
                    ino,
                    1,
                    ".",
                    &ttl,
                    &to_fuse_attr(ino.0, &self_attr),
                    Generation(0),
                ) {
                    return reply.ok();
                }
                i = 1;
            }
            if i == 1 {
                let pattr = fs
                    .node(INodeNo(parent))
                    .and_then(|n| fs.attr(parent, &n))
                    .unwrap_or(self_attr);
                if reply.add(
                    INodeNo(parent),
                    2,
                    "..",
                    &ttl,
                    &to_fuse_attr(parent, &pattr),
                    Generation(0),
                ) {
                    return reply.ok();
                }
                i = 2;
            }
            for (k, e) in listing.iter().enumerate().skip((i - 2) as usize) {
                // An entry that vanished or cannot be read since the listing is left out.
                let Some(attr) = e.attr(&fs.vault) else {
                    continue;
                };
                // An entry in readdirplus counts as a lookup; undone if it did not fit.
                let child = fs.inodes.lookup(ino.0, &e.name, e.node.clone(), attr.ino);
                let attr = fs.cache.attr(child).unwrap_or(attr);
                if reply.add(
                    INodeNo(child),
                    k as u64 + 3,
                    &e.name,
                    &ttl,
                    &to_fuse_attr(child, &attr),
                    Generation(0),
                ) {
                    fs.inodes.forget(child, 1);
                    break;
                }
            }
            reply.ok()
        })
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dir_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_remove(fh.0 as usize);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: Fh, _datasync: bool, reply: ReplyEmpty) {
        let r = self.node(ino).and_then(|n| {
            let dir = self.vault.attr_path(&n);
            oxcrypt_core::fsutil::sync_dir(&dir).map_err(err)
        });
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let path =
            std::ffi::CString::new(self.vault.path().as_os_str().as_bytes()).unwrap_or_default();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return reply.error(Errno::EIO);
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            oxcrypt_core::names::MAX_NAME_BYTES as u32,
            st.f_frsize as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); only existence is ours.
        match self.node(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        // One open(2) creates, writes the header and stays open for the new handle.
        let r = self.with_arena(|bump| {
            self.writable()?;
            let name = name_in(bump, name)?;
            let dir = self.dir_id(parent)?;
            let (uid, gid, _) = self.new_owner(req, parent)?;
            let (node, handle, attr) = self
                .vault
                .create_open(&dir, name, mode & !umask & 0o7777, Some((uid, gid)))
                .map_err(err)?;
            let ino = self.register_new(parent, node, attr);
            let file = self.share_file(ino, handle);
            let (fh, _) = self.new_handle(ino, None, file, flags);
            Ok((ino, attr, fh))
        });
        match r {
            Ok((ino, a, fh)) => reply.created(
                &self.cache.ttl(),
                &to_fuse_attr(ino, &a),
                Generation(0),
                Fh(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    // Extended attributes are not part of the vault format. ENOSYS (not EOPNOTSUPP) makes the
    // kernel remember that and stop asking, e.g. for security.capability before every write.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let r = (|| {
            self.writable()?;
            let (file, _) = self.handle(fh)?;
            let size = file.size_blocking().map_err(Errno::from_i32)?;
            if offset + length > size {
                self.set_size(file, offset + length)?;
            }
            self.cache.forget_attr(ino.0);
            Ok(())
        })();
        reply_empty(reply, r);
    }
}

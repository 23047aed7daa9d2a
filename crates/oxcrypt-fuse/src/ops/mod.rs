//! The FUSE operations, written once and transport-neutral: each is a method of [`Fs`] (the
//! mount's state) that takes plain arguments (inode numbers, handles, offsets, names as bytes,
//! the caller's ids) and returns a plain result: an [`Entry`], attributes, bytes read or
//! written, a directory page through a callback, or an [`Errno`]. A transport decodes a
//! request, calls one of them and encodes the reply; `fuser_adapter.rs` does that for fuser's
//! `/dev/fuse` loop, and a ring transport calls the same methods.
//!
//! Metadata is answered synchronously from the DashMap caches, with the request's bumpalo
//! arena for temporary names and paths. Content goes through the I/O engine: READ decrypts
//! straight into the buffer the caller hands in.
//!
//! - `entries.rs`: lookup, forget, getattr, setattr, readlink, access, statfs
//! - `tree.rs`: mknod, mkdir, symlink, unlink, rmdir, rename, link
//! - `files.rs`: open, create, read, write, fsync, fallocate, release
//! - `dirs.rs`: opendir, readdir, readdirplus, releasedir, fsyncdir
//! - `behind.rs`: changes made behind the mount's back, as the watcher reports them

mod behind;
mod dirs;
mod entries;
mod files;
mod tree;

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bumpalo::Bump;
use oxcrypt_core::{Attr, DirId, Node, Vault};
use oxcrypt_io::{Engine, Tuning};
use slab::Slab;

use crate::cache::{Listed, MetaCache};
pub use crate::errno::{Errno, OpResult};
use crate::inodes::InodeTable;
use crate::open_files::OpenFileTable;
pub use dirs::DirEntry;
pub use entries::{SetAttr, StatFs, TimeSet};
pub use files::Completion;
pub use tree::RenameFlags;

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// A looked-up or created node: its inode number (counted as one kernel lookup), its
/// attributes and how long the kernel may cache both.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Inode number.
    pub ino: u64,
    /// Attributes (`attr.ino` is the backing file's number, not `ino`).
    pub attr: Attr,
    /// Cache lifetime of the entry and the attributes.
    pub ttl: Duration,
}

/// An opened file or directory handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The handle.
    pub fh: u64,
    /// Whether the kernel may keep the file's cached pages (`FOPEN_KEEP_CACHE`).
    pub keep_cache: bool,
}

/// Settings of the file system.
#[derive(Debug, Clone, Default)]
pub struct FsOptions {
    /// Refuse every change.
    pub read_only: bool,
    /// Ask the kernel for readdirplus.
    pub readdirplus: bool,
    /// Ask for the kernel's writeback cache (the kernel then computes O_APPEND offsets).
    pub writeback_cache: bool,
    /// Time-to-live of cached metadata, in the daemon and in the kernel.
    pub ttl: Duration,
    /// The ablations in force.
    pub tuning: Tuning,
}

thread_local! {
    /// The per-request arena: names and paths built while answering one request live here and
    /// are dropped (reset) when the operation returns.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::with_capacity(4096));
}

/// The mount's state, over which every operation runs.
pub struct Fs {
    vault: Arc<Vault>,
    engine: Arc<Engine>,
    inodes: InodeTable,
    cache: MetaCache,
    files: OpenFileTable,
    /// Open directory handles: the listing snapshot each one reads from.
    dirs: Mutex<Slab<Arc<Vec<Listed>>>>,
    options: FsOptions,
    /// When the last request came (every transport touches it).
    activity: crate::activity::Activity,
    /// inotify on what the kernel holds (changes behind the mount's back).
    watcher: crate::watch::Watcher,
    /// Invalidations for the kernel, written by their own thread.
    notices: Arc<crate::notify::Notices>,
    /// Our own changes to file contents (for the watcher).
    own: crate::own_changes::OwnChanges,
}

impl Fs {
    /// A file system over `vault`, doing content I/O on `engine`.
    pub fn new(vault: Arc<Vault>, engine: Arc<Engine>, options: FsOptions) -> Self {
        vault.set_read_only(options.read_only);
        let watcher = crate::watch::Watcher::new();
        watcher.watch(
            &vault.content_dir(vault.root_id()),
            crate::watch::Watched::Dir(crate::inodes::ROOT_INO),
        );
        Fs {
            watcher,
            notices: Arc::default(),
            own: Default::default(),
            inodes: InodeTable::new(vault.root()),
            vault,
            engine,
            cache: MetaCache::new(options.ttl),
            files: OpenFileTable::default(),
            dirs: Mutex::new(Slab::new()),
            options,
            activity: crate::activity::Activity::default(),
        }
    }

    /// The watcher of changes behind the mount's back.
    pub fn watcher(&self) -> &crate::watch::Watcher {
        &self.watcher
    }

    /// The queue of invalidations for the kernel (a transport starts its writer).
    pub fn notices(&self) -> &Arc<crate::notify::Notices> {
        &self.notices
    }

    /// The settings.
    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    /// A request arrived: the transports call this for each one.
    #[inline]
    pub fn touch(&self) {
        self.activity.touch();
    }

    /// How long ago the last request arrived.
    pub fn idle_for(&self) -> Duration {
        self.activity.idle_for()
    }

    /// Open file and directory handles.
    pub fn open_handles(&self) -> usize {
        self.files.all().len() + self.dirs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The lifetime of cached metadata.
    pub fn ttl(&self) -> Duration {
        self.cache.ttl()
    }

    /// Runs `f` with this thread's request arena, reset afterwards (or, in the `heap-arena`
    /// ablation, with a throw-away heap arena).
    fn with_arena<R>(&self, f: impl FnOnce(&Bump) -> R) -> R {
        if self.options.tuning.heap_arena {
            return f(&Bump::new());
        }
        ARENA.with(|a| match a.try_borrow_mut() {
            Ok(mut bump) => {
                let r = f(&bump);
                bump.reset();
                r
            }
            // Re-entered (an operation calling another): a fresh arena for the inner one.
            Err(_) => f(&Bump::new()),
        })
    }

    fn node(&self, ino: u64) -> OpResult<Node> {
        self.inodes.get(ino).map(|i| i.node()).ok_or(Errno::ENOENT)
    }

    /// The identity of `ino`'s ciphertext file, under which its open file is shared.
    fn file_key(&self, ino: u64) -> OpResult<crate::open_files::FileKey> {
        self.inodes
            .get(ino)
            .map(|i| i.backing())
            .ok_or(Errno::ENOENT)
    }

    fn dir_id(&self, ino: u64) -> OpResult<DirId> {
        self.node(ino)?.dir_id().cloned().ok_or(Errno::ENOTDIR)
    }

    fn writable(&self) -> OpResult<()> {
        if self.options.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn entry(&self, ino: u64, attr: Attr) -> Entry {
        Entry {
            ino,
            attr,
            ttl: self.cache.ttl(),
        }
    }

    /// Attributes of a known inode: cache, then the open file, then the ciphertext.
    fn attr(&self, ino: u64, node: &Node) -> OpResult<Attr> {
        if let Some(a) = self.cache.attr(ino) {
            return Ok(a);
        }
        let epoch = self.cache.epoch(ino);
        let open = self.file_key(ino).ok().and_then(|k| self.files.shared(k));
        let a = match open {
            // An open file answers from its descriptor: right even after unlink (nlink 0).
            Some(f) => f.handle().attr(),
            None => self.vault.stat(node),
        }?;
        // Not cached if a write finished meanwhile: `a` may predate it.
        self.cache.put_attr_read_at(ino, a, epoch);
        Ok(a)
    }

    /// Every queued I/O finished, then every open file synced: for unmounting.
    pub fn shutdown(&self) {
        self.engine.drain();
        for f in self.files.all() {
            if let Err(e) = f.handle().sync(false) {
                tracing::error!(error = %e, "sync at unmount failed");
            }
        }
    }
}

/// Copies a request's name into the arena as UTF-8; names that are not UTF-8 cannot exist in
/// a vault.
fn name_in<'b>(bump: &'b Bump, name: &[u8]) -> OpResult<&'b str> {
    let s = std::str::from_utf8(name).map_err(|_| Errno::EINVAL)?;
    Ok(bump.alloc_str(s))
}

/// `SystemTime` of a time a request sets.
fn time_of(t: TimeSet) -> SystemTime {
    match t {
        TimeSet::At(t) => t,
        TimeSet::Now => SystemTime::now(),
    }
}

//! Operations on file content: open, create, read, write, fsync, fallocate, release.
//!
//! Reads and writes run in the calling thread through the engine; truncates and fsyncs run
//! on the file's home worker. No reply is sent from inside a lock: every method returns (or
//! completes) after the engine has released the file.

use std::sync::Arc;

use oxcrypt_core::vault::{SetLen, WriteAt};
use oxcrypt_core::Node;
use oxcrypt_io::OpenFile;

use super::{name_in, Caller, Entry, Errno, Fs, OpResult, Opened};
use crate::page_cache::Stamp;

/// Completion of an operation that finishes on an I/O worker.
pub type Completion = Box<dyn FnOnce(OpResult<()>) + Send>;

/// The ciphertext file's (mtime, length): the mark of whether it changed between opens.
pub(crate) fn stamp(node: &Node) -> Option<Stamp> {
    let md = std::fs::metadata(node.payload_path()).ok()?;
    Some((md.modified().ok()?, md.len()))
}

impl Fs {
    /// The open file every handle of `ino`'s ciphertext shares, opening it if none has it
    /// open.
    pub(super) fn open_shared(&self, ino: u64, node: &Node) -> OpResult<Arc<OpenFile>> {
        self.files.open_or_share(self.file_key(ino)?, || {
            self.vault
                .open_file(node, !self.options.read_only)
                .map_err(Errno::from)
        })
    }

    /// Changes the size of `file` on its worker and waits for it.
    pub(super) fn set_len_and_wait(&self, file: &Arc<OpenFile>, target: SetLen) -> OpResult<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.engine.set_len(
            file,
            target,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().map_err(|_| Errno::EIO)??;
        Ok(())
    }

    /// Whether writes through a handle opened with `flags` append at our end of file (with
    /// the writeback cache the kernel computes append offsets itself).
    fn appends(&self, flags: i32) -> bool {
        flags & libc::O_APPEND != 0 && !self.options.writeback_cache
    }

    /// OPEN with open(2) `flags`.
    pub fn open(&self, ino: u64, flags: i32) -> OpResult<Opened> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.writable()?;
        }
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        let file = self.open_shared(ino, &node)?;
        let (fh, keep_cache) = self.files.insert(
            ino,
            self.file_key(ino)?,
            file,
            self.appends(flags),
            stamp(&node),
        );
        Ok(Opened { fh, keep_cache })
    }

    /// CREATE: one open(2) creates the file, writes its header and stays open for the new
    /// handle (`mode` with the umask applied).
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> OpResult<(Entry, Opened)> {
        self.with_arena(|bump| {
            self.writable()?;
            let name = name_in(bump, name)?;
            let dir = self.dir_id(parent)?;
            let (uid, gid, _) = self.new_owner(caller, parent)?;
            let (node, handle, attr) =
                self.vault
                    .create_open(&dir, name, mode & 0o7777, Some((uid, gid)))?;
            self.own.settled(attr.ino, handle.ciphertext_stamp());
            let ino = self.register_new(parent, node, attr);
            let file = self.files.share_new(attr.ino, handle);
            let (fh, _) = self
                .files
                .insert(ino, attr.ino, file, self.appends(flags), None);
            Ok((
                self.entry(ino, attr),
                Opened {
                    fh,
                    keep_cache: false,
                },
            ))
        })
    }

    /// READ up to `out.len()` bytes at `offset` through handle `fh`, decrypted straight into
    /// `out`; returns the count (short only at end of file).
    pub fn read(&self, fh: u64, offset: u64, out: &mut [u8]) -> OpResult<usize> {
        let (file, _) = self.files.get(fh).ok_or(Errno::EBADF)?;
        Ok(self.engine.read(&file, offset, out)?)
    }

    /// WRITE `data` at `offset` (or at the end for an O_APPEND handle); returns the bytes
    /// written.
    pub fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> OpResult<u32> {
        self.writable()?;
        let (file, append) = self.files.get(fh).ok_or(Errno::EBADF)?;
        self.files.wrote(ino);
        let at = if append {
            WriteAt::Append
        } else {
            WriteAt::Offset(offset)
        };
        let key = self.file_key(ino)?;
        self.own.begin(key);
        let r = self.engine.write(&file, at, data);
        self.own.end(key, file.handle().ciphertext_stamp());
        // Forgotten after the write: attributes read before or during it are dropped, and a
        // getattr that read them then does not store them (the cache's epochs).
        self.cache.forget_attr(ino);
        if r.is_err() && self.options.writeback_cache {
            // The kernel accepted these bytes into its cache and grew its size for them; it
            // keeps its own size with the writeback cache. Its inode is retired so that the
            // next lookup shows what the ciphertext holds, and its pages are dropped.
            self.retire_inode(ino);
        }
        r?;
        Ok(data.len() as u32)
    }

    /// FSYNC through handle `fh`; `done` runs on the file's worker once the data is on disk.
    pub fn fsync(&self, fh: u64, datasync: bool, done: Completion) {
        let Some((file, _)) = self.files.get(fh) else {
            return done(Err(Errno::EBADF));
        };
        self.engine.sync(
            &file,
            datasync,
            Box::new(move |r| done(r.map_err(Errno::from))),
        );
    }

    /// FALLOCATE: mode 0 grows the file to at least `offset + length` and never shrinks it
    /// (the size is read under the file's lock, so a concurrent writer is not cut off).
    pub fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> OpResult<()> {
        if mode != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        self.writable()?;
        let (file, _) = self.files.get(fh).ok_or(Errno::EBADF)?;
        let end = offset.checked_add(length).ok_or(Errno::EINVAL)?;
        let key = self.file_key(ino)?;
        self.own.begin(key);
        let r = self.set_len_and_wait(&file, SetLen::GrowTo(end));
        self.own.end(key, file.handle().ciphertext_stamp());
        self.cache.forget_attr(ino);
        r
    }

    /// RELEASE handle `fh` of `ino`.
    pub fn release(&self, ino: u64, fh: u64) {
        self.files.remove(ino, fh, || {
            self.inodes.get(ino).and_then(|i| stamp(&i.node()))
        });
        self.cache.forget_attr(ino);
    }
}

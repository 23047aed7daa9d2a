//! The FUSE wire protocol, for the transports that do not go through fuser (the io_uring
//! transport and its `/dev/fuse` side channel): the kernel ABI's constants and struct layouts
//! (`include/uapi/linux/fuse.h`, 7.45), a request split into header, per-opcode argument and
//! payload, and [`Dispatcher::handle`], which decodes one request, calls one transport-neutral
//! [`Fs`] operation and encodes its reply arguments straight into the caller's buffer (the
//! ring entry's payload buffer: READ decrypts into it, no copy).
//!
//! Layouts are read and written field by field at their ABI offsets (native endianness, as
//! the kernel does), so no `repr(C)` struct is ever cast from request bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxcrypt_core::vault::FileType as VType;
use oxcrypt_core::Attr;

use crate::ops::{
    Caller, Completion, Entry, Errno, Fs, OpResult, Opened, RenameFlags, SetAttr, TimeSet,
};

/// Size of `fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// Size of `fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;

/// Opcodes (`enum fuse_opcode`).
#[allow(missing_docs)]
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    /// One past the highest opcode counted by [`super::OpCounts`].
    pub const COUNT: usize = 64;
}

/// INIT flags (`flags`, and `flags2` shifted by 32).
#[allow(missing_docs)]
pub mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const WRITEBACK_CACHE: u64 = 1 << 16;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

/// `FOPEN_KEEP_CACHE`.
const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// `FUSE_FSYNC_FDATASYNC`.
const FSYNC_FDATASYNC: u32 = 1;

/// `FATTR_SIZE`: a SETATTR that changes the size.
pub const FATTR_SIZE: u32 = fattr::SIZE;

/// `fuse_setattr_in.valid` bits.
mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// The `u32` at byte `at` of `b` (0 past the end: a short argument reads as zeros).
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().unwrap_or_default()))
}

/// The `u64` at byte `at` of `b` (0 past the end).
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap_or_default()))
}

/// A writer of reply arguments into a fixed buffer.
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Out<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_ne_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_ne_bytes());
    }

    fn zeros(&mut self, n: usize) {
        self.buf[self.len..self.len + n].fill(0);
        self.len += n;
    }
}

/// One request: the in-header's fields, the per-opcode argument struct and the rest (names,
/// WRITE data, forget lists).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `fuse_in_header.opcode`.
    pub opcode: u32,
    /// `fuse_in_header.unique`.
    pub unique: u64,
    /// `fuse_in_header.nodeid`.
    pub nodeid: u64,
    /// Caller's user id.
    pub uid: u32,
    /// Caller's group id.
    pub gid: u32,
    /// The per-opcode argument (`in_args[0]`).
    pub arg: &'a [u8],
    /// What follows it.
    pub payload: &'a [u8],
}

/// Size of the per-opcode argument struct that starts a `/dev/fuse` request body (0 for ops
/// whose first argument is a name).
fn arg_len(opcode: u32) -> usize {
    match opcode {
        op::FORGET | op::MKDIR | op::RENAME | op::LINK | op::OPEN | op::OPENDIR => 8,
        op::GETXATTR | op::LISTXATTR | op::ACCESS | op::INTERRUPT | op::BATCH_FORGET => 8,
        op::GETATTR | op::MKNOD | op::FSYNC | op::FSYNCDIR | op::CREATE | op::RENAME2 => 16,
        op::RELEASE | op::RELEASEDIR | op::FLUSH => 24,
        op::FALLOCATE => 32,
        op::READ | op::WRITE | op::READDIR | op::READDIRPLUS => 40,
        op::INIT => 64,
        op::SETATTR => 88,
        _ => 0,
    }
}

impl<'a> Request<'a> {
    fn header(h: &[u8], arg: &'a [u8], payload: &'a [u8]) -> Request<'a> {
        Request {
            opcode: u32_at(h, 4),
            unique: u64_at(h, 8),
            nodeid: u64_at(h, 16),
            uid: u32_at(h, 24),
            gid: u32_at(h, 28),
            arg,
            payload,
        }
    }

    /// A request as read from `/dev/fuse`: header, argument and payload contiguous.
    pub fn from_dev(buf: &'a [u8]) -> Option<Request<'a>> {
        if buf.len() < IN_HEADER_LEN {
            return None;
        }
        let len = (u32_at(buf, 0) as usize).min(buf.len());
        let body = buf.get(IN_HEADER_LEN..len)?;
        let n = arg_len(u32_at(buf, 4)).min(body.len());
        Some(Self::header(buf, &body[..n], &body[n..]))
    }

    /// A request as a ring entry holds it: the in-header, the `op_in` area (its used length is
    /// what the header's `len` leaves after the payload) and the payload.
    pub fn from_ring(
        header: &'a [u8],
        op_in: &'a [u8],
        payload: &'a [u8],
        payload_sz: usize,
    ) -> Option<Request<'a>> {
        let len = u32_at(header, 0) as usize;
        let n = len.checked_sub(IN_HEADER_LEN + payload_sz)?;
        let arg = op_in.get(..n)?;
        let payload = payload.get(..payload_sz)?;
        Some(Self::header(header, arg, payload))
    }

    fn caller(&self) -> Caller {
        Caller {
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The NUL-terminated name at the start of the payload, and what follows it.
    fn name(&self) -> (&'a [u8], &'a [u8]) {
        split_name(self.payload)
    }
}

fn split_name(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reply now: `error` (0 or a positive errno) and `len` argument bytes in the buffer.
    Reply {
        /// 0, or a positive errno.
        error: i32,
        /// Bytes of reply arguments written.
        len: usize,
    },
    /// No reply is sent (FORGET, BATCH_FORGET, INTERRUPT).
    None,
    /// The reply comes later through the [`Completion`] handed to [`Dispatcher::handle`].
    Deferred,
}

impl Outcome {
    fn of(r: OpResult<usize>) -> Outcome {
        match r {
            Ok(len) => Outcome::Reply { error: 0, len },
            Err(e) => Outcome::Reply {
                error: e.code(),
                len: 0,
            },
        }
    }
}

/// Requests counted by opcode.
pub struct OpCounts([AtomicU64; op::COUNT]);

impl Default for OpCounts {
    fn default() -> Self {
        OpCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl OpCounts {
    /// Counts one request of `opcode`.
    pub fn add(&self, opcode: u32) {
        let i = (opcode as usize).min(op::COUNT - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// `(opcode name, count)` of every opcode seen.
    pub fn seen(&self) -> Vec<(String, u64)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (op_name(i as u32), n))
            })
            .collect()
    }
}

/// A readable name of an opcode.
pub fn op_name(opcode: u32) -> String {
    let s = match opcode {
        op::LOOKUP => "LOOKUP",
        op::FORGET => "FORGET",
        op::GETATTR => "GETATTR",
        op::SETATTR => "SETATTR",
        op::READLINK => "READLINK",
        op::SYMLINK => "SYMLINK",
        op::MKNOD => "MKNOD",
        op::MKDIR => "MKDIR",
        op::UNLINK => "UNLINK",
        op::RMDIR => "RMDIR",
        op::RENAME => "RENAME",
        op::LINK => "LINK",
        op::OPEN => "OPEN",
        op::READ => "READ",
        op::WRITE => "WRITE",
        op::STATFS => "STATFS",
        op::RELEASE => "RELEASE",
        op::FSYNC => "FSYNC",
        op::SETXATTR => "SETXATTR",
        op::GETXATTR => "GETXATTR",
        op::LISTXATTR => "LISTXATTR",
        op::REMOVEXATTR => "REMOVEXATTR",
        op::FLUSH => "FLUSH",
        op::INIT => "INIT",
        op::OPENDIR => "OPENDIR",
        op::READDIR => "READDIR",
        op::RELEASEDIR => "RELEASEDIR",
        op::FSYNCDIR => "FSYNCDIR",
        op::ACCESS => "ACCESS",
        op::CREATE => "CREATE",
        op::INTERRUPT => "INTERRUPT",
        op::DESTROY => "DESTROY",
        op::BATCH_FORGET => "BATCH_FORGET",
        op::FALLOCATE => "FALLOCATE",
        op::READDIRPLUS => "READDIRPLUS",
        op::RENAME2 => "RENAME2",
        other => return format!("op{other}"),
    };
    s.to_string()
}

fn split_time(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_nanos()),
        // Before 1970: the kernel's fields are signed seconds and unsigned nanoseconds.
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                ((-s) as u64, 0)
            } else {
                ((-s - 1) as u64, 1_000_000_000 - n)
            }
        }
    }
}

fn type_bits(k: VType) -> u32 {
    match k {
        VType::File => libc::S_IFREG,
        VType::Directory => libc::S_IFDIR,
        VType::Symlink => libc::S_IFLNK,
    }
}

/// `struct fuse_attr` (88 bytes).
fn put_attr(out: &mut Out, ino: u64, a: &Attr) {
    let (at, atn) = split_time(a.atime);
    let (mt, mtn) = split_time(a.mtime);
    let (ct, ctn) = split_time(a.ctime);
    out.u64(ino);
    out.u64(a.size);
    out.u64(a.size.div_ceil(512));
    out.u64(at);
    out.u64(mt);
    out.u64(ct);
    out.u32(atn);
    out.u32(mtn);
    out.u32(ctn);
    out.u32(type_bits(a.kind) | (a.perm & 0o7777));
    out.u32(a.nlink);
    out.u32(a.uid);
    out.u32(a.gid);
    out.u32(0); // rdev
    out.u32(4096); // blksize
    out.u32(0); // flags
}

fn split_ttl(d: Duration) -> (u64, u32) {
    (d.as_secs(), d.subsec_nanos())
}

/// `struct fuse_entry_out` (128 bytes).
fn put_entry(out: &mut Out, e: &Entry) {
    let (s, n) = split_ttl(e.ttl);
    out.u64(e.ino);
    out.u64(0); // generation
    out.u64(s);
    out.u64(s);
    out.u32(n);
    out.u32(n);
    put_attr(out, e.ino, &e.attr);
}

/// `struct fuse_open_out` (16 bytes).
fn put_open(out: &mut Out, o: &Opened) {
    out.u64(o.fh);
    out.u32(if o.keep_cache { FOPEN_KEEP_CACHE } else { 0 });
    out.u32(0);
}

/// `struct fuse_dirent` of one entry, padded to 8 bytes; false if it does not fit.
fn put_dirent(out: &mut Out, ino: u64, off: u64, kind: VType, name: &str) -> bool {
    let size = (24 + name.len()).next_multiple_of(8);
    if out.room() < size {
        return false;
    }
    out.u64(ino);
    out.u64(off);
    out.u32(name.len() as u32);
    out.u32(type_bits(kind) >> 12);
    out.bytes(name.as_bytes());
    out.zeros(size - 24 - name.len());
    true
}

fn time_set(
    arg: &[u8],
    valid: u32,
    set_bit: u32,
    now_bit: u32,
    at: usize,
    nsec_at: usize,
) -> Option<TimeSet> {
    if valid & now_bit != 0 {
        return Some(TimeSet::Now);
    }
    if valid & set_bit == 0 {
        return None;
    }
    let secs = u64_at(arg, at) as i64;
    let nsec = u32_at(arg, nsec_at);
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nsec))
    };
    Some(TimeSet::At(t))
}

/// Decodes requests and calls the file system; shared by every queue of a mount.
pub struct Dispatcher {
    fs: Arc<Fs>,
}

impl Dispatcher {
    /// A dispatcher over `fs`.
    pub fn new(fs: Arc<Fs>) -> Self {
        Dispatcher { fs }
    }

    /// The file system.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Answers `req`, writing reply arguments into `out`. `defer` is called only for a
    /// request answered later (FSYNC), and gives the completion that must receive its
    /// result. A panicking operation is answered EIO.
    pub fn handle(
        &self,
        req: &Request,
        out: &mut [u8],
        defer: &mut dyn FnMut() -> Completion,
    ) -> Outcome {
        self.fs.touch();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.handle_inner(req, out, defer)
        })) {
            Ok(o) => o,
            Err(p) => {
                let what = crate::errno::panic_message(&*p);
                tracing::error!(op = %op_name(req.opcode), panic = %what, "a request handler panicked; answered EIO");
                match req.opcode {
                    op::FORGET | op::BATCH_FORGET | op::INTERRUPT => Outcome::None,
                    _ => Outcome::Reply {
                        error: libc::EIO,
                        len: 0,
                    },
                }
            }
        }
    }

    fn handle_inner(
        &self,
        req: &Request,
        buf: &mut [u8],
        defer: &mut dyn FnMut() -> Completion,
    ) -> Outcome {
        let fs = &*self.fs;
        let a = req.arg;
        let ino = req.nodeid;
        let mut out = Out::new(buf);
        let entry = |out: &mut Out, r: OpResult<Entry>| -> OpResult<usize> {
            put_entry(out, &r?);
            Ok(out.len())
        };
        let attr = |out: &mut Out, r: OpResult<Attr>| -> OpResult<usize> {
            let (s, n) = split_ttl(fs.ttl());
            let a = r?;
            out.u64(s);
            out.u32(n);
            out.u32(0);
            put_attr(out, ino, &a);
            Ok(out.len())
        };
        let empty = |r: OpResult<()>| r.map(|()| 0);
        let r = match req.opcode {
            op::LOOKUP => entry(&mut out, fs.lookup(ino, req.name().0)),
            op::FORGET => {
                fs.forget(ino, u64_at(a, 0));
                return Outcome::None;
            }
            op::BATCH_FORGET => {
                let count = u32_at(a, 0) as usize;
                for one in req.payload.chunks_exact(16).take(count) {
                    fs.forget(u64_at(one, 0), u64_at(one, 8));
                }
                return Outcome::None;
            }
            op::INTERRUPT => return Outcome::None,
            op::GETATTR => attr(&mut out, fs.getattr(ino)),
            op::SETATTR => {
                let valid = u32_at(a, 0);
                let opt32 = |bit: u32, at: usize| (valid & bit != 0).then(|| u32_at(a, at));
                let set = SetAttr {
                    mode: opt32(fattr::MODE, 68),
                    uid: opt32(fattr::UID, 76),
                    gid: opt32(fattr::GID, 80),
                    size: (valid & fattr::SIZE != 0).then(|| u64_at(a, 16)),
                    atime: time_set(a, valid, fattr::ATIME, fattr::ATIME_NOW, 32, 56),
                    mtime: time_set(a, valid, fattr::MTIME, fattr::MTIME_NOW, 40, 60),
                    fh: (valid & fattr::FH != 0).then(|| u64_at(a, 8)),
                };
                attr(&mut out, fs.setattr(ino, set))
            }
            op::READLINK => fs.readlink(ino).map(|t| {
                let n = t.len().min(out.room());
                out.bytes(&t.as_bytes()[..n]);
                n
            }),
            op::SYMLINK => {
                let (name, rest) = req.name();
                let (target, _) = split_name(rest);
                entry(&mut out, fs.symlink(req.caller(), ino, name, target))
            }
            op::MKNOD => {
                let mode = u32_at(a, 0) & !u32_at(a, 8);
                entry(&mut out, fs.mknod(req.caller(), ino, req.name().0, mode))
            }
            op::MKDIR => {
                let mode = u32_at(a, 0) & !u32_at(a, 4);
                entry(&mut out, fs.mkdir(req.caller(), ino, req.name().0, mode))
            }
            op::UNLINK => empty(fs.unlink(ino, req.name().0)),
            op::RMDIR => empty(fs.rmdir(ino, req.name().0)),
            op::RENAME | op::RENAME2 => {
                let flags = if req.opcode == op::RENAME2 {
                    u32_at(a, 8)
                } else {
                    0
                };
                let (old, rest) = req.name();
                let (new, _) = split_name(rest);
                let flags = RenameFlags {
                    noreplace: flags & libc::RENAME_NOREPLACE != 0,
                    exchange: flags & libc::RENAME_EXCHANGE != 0,
                    whiteout: flags & libc::RENAME_WHITEOUT != 0,
                };
                empty(fs.rename(ino, old, u64_at(a, 0), new, flags))
            }
            op::LINK => entry(&mut out, fs.link()),
            op::OPEN => fs.open(ino, u32_at(a, 0) as i32).map(|o| {
                put_open(&mut out, &o);
                out.len()
            }),
            op::READ => {
                let size = (u32_at(a, 16) as usize).min(out.buf.len());
                fs.read(u64_at(a, 0), u64_at(a, 8), &mut out.buf[..size])
            }
            op::WRITE => {
                let size = (u32_at(a, 16) as usize).min(req.payload.len());
                fs.write(ino, u64_at(a, 0), u64_at(a, 8), &req.payload[..size])
                    .map(|n| {
                        out.u32(n);
                        out.u32(0);
                        out.len()
                    })
            }
            op::STATFS => fs.statfs().map(|s| {
                for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree] {
                    out.u64(v);
                }
                out.u32(s.bsize);
                out.u32(s.namelen);
                out.u32(s.frsize);
                out.zeros(4 + 24);
                out.len()
            }),
            op::RELEASE => {
                fs.release(ino, u64_at(a, 0));
                Ok(0)
            }
            op::FSYNC => {
                let datasync = u32_at(a, 8) & FSYNC_FDATASYNC != 0;
                fs.fsync(u64_at(a, 0), datasync, defer());
                return Outcome::Deferred;
            }
            // Writes are complete when acknowledged: nothing to flush, and ENOSYS makes the
            // kernel stop sending FLUSH. Extended attributes are not part of the format.
            op::FLUSH | op::SETXATTR | op::GETXATTR | op::LISTXATTR | op::REMOVEXATTR => {
                Err(Errno::ENOSYS)
            }
            op::OPENDIR => fs.opendir(ino).map(|o| {
                put_open(&mut out, &o);
                out.len()
            }),
            op::READDIR => {
                let size = (u32_at(a, 16) as usize).min(out.buf.len());
                let mut page = Out::new(&mut out.buf[..size]);
                fs.readdir(ino, u64_at(a, 0), u64_at(a, 8), &mut |e| {
                    !put_dirent(&mut page, e.ino, e.offset, e.kind, e.name)
                })
                .map(|()| page.len())
            }
            op::READDIRPLUS => {
                let size = (u32_at(a, 16) as usize).min(out.buf.len());
                let mut page = Out::new(&mut out.buf[..size]);
                fs.readdirplus(ino, u64_at(a, 0), u64_at(a, 8), &mut |e, entry| {
                    let size = 128 + (24 + e.name.len()).next_multiple_of(8);
                    if page.room() < size {
                        return true;
                    }
                    put_entry(&mut page, entry);
                    put_dirent(&mut page, e.ino, e.offset, e.kind, e.name);
                    false
                })
                .map(|()| page.len())
            }
            op::RELEASEDIR => {
                fs.releasedir(u64_at(a, 0));
                Ok(0)
            }
            op::FSYNCDIR => empty(fs.fsyncdir(ino)),
            op::ACCESS => empty(fs.access(ino)),
            op::CREATE => {
                let mode = u32_at(a, 4) & !u32_at(a, 8);
                let flags = u32_at(a, 0) as i32;
                fs.create(req.caller(), ino, req.name().0, mode, flags)
                    .map(|(e, o)| {
                        put_entry(&mut out, &e);
                        put_open(
                            &mut out,
                            &Opened {
                                keep_cache: false,
                                ..o
                            },
                        );
                        out.len()
                    })
            }
            op::FALLOCATE => empty(fs.fallocate(
                ino,
                u64_at(a, 0),
                u64_at(a, 8),
                u64_at(a, 16),
                u32_at(a, 24) as i32,
            )),
            op::DESTROY => {
                fs.shutdown();
                Ok(0)
            }
            _ => Err(Errno::ENOSYS),
        };
        Outcome::of(r)
    }
}

/// Writes `fuse_out_header` for a reply of `args_len` argument bytes.
pub fn out_header(buf: &mut [u8], unique: u64, error: i32, args_len: usize) {
    let len = (OUT_HEADER_LEN + if error == 0 { args_len } else { 0 }) as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..8].copy_from_slice(&(-error).to_ne_bytes());
    buf[8..16].copy_from_slice(&unique.to_ne_bytes());
}

/// A notification (`unique` 0, the code in the error field): `fuse_notify_inval_inode_out`
/// for every page and the attributes of `ino`.
pub fn notify_inval_inode(ino: u64) -> Vec<u8> {
    let mut b = vec![0u8; OUT_HEADER_LEN + 24];
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..8].copy_from_slice(&notify::INVAL_INODE.to_ne_bytes());
    b[16..24].copy_from_slice(&ino.to_ne_bytes());
    // off 0, len 0: from the start to the end.
    b
}

/// A notification `fuse_notify_inval_entry_out` for `name` in directory `parent`.
pub fn notify_inval_entry(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; OUT_HEADER_LEN + 16];
    b[16..24].copy_from_slice(&parent.to_ne_bytes());
    b[24..28].copy_from_slice(&(name.len() as u32).to_ne_bytes());
    b.extend_from_slice(name);
    b.push(0);
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..8].copy_from_slice(&notify::INVAL_ENTRY.to_ne_bytes());
    b
}

/// Notification codes (`enum fuse_notify_code`).
pub mod notify {
    /// `FUSE_NOTIFY_INVAL_INODE`.
    pub const INVAL_INODE: i32 = 2;
    /// `FUSE_NOTIFY_INVAL_ENTRY`.
    pub const INVAL_ENTRY: i32 = 3;
}

/// Parsed `fuse_init_in`.
#[derive(Debug, Clone, Copy)]
pub struct InitIn {
    /// Protocol major version.
    pub major: u32,
    /// Protocol minor version.
    pub minor: u32,
    /// Largest read-ahead the kernel allows.
    pub max_readahead: u32,
    /// `flags | flags2 << 32` (flags2 only with `INIT_EXT`).
    pub flags: u64,
}

impl InitIn {
    /// Reads the INIT argument.
    pub fn parse(arg: &[u8]) -> InitIn {
        let flags = u64::from(u32_at(arg, 12));
        let flags2 = if flags & init::INIT_EXT != 0 {
            u64::from(u32_at(arg, 16))
        } else {
            0
        };
        InitIn {
            major: u32_at(arg, 0),
            minor: u32_at(arg, 4),
            max_readahead: u32_at(arg, 8),
            flags: flags | flags2 << 32,
        }
    }
}

/// Encodes `fuse_init_out` (64 bytes) into `out`; returns its length.
pub fn put_init_out(out: &mut [u8], flags: u64, max_readahead: u32, max_write: u32) -> usize {
    let mut o = Out::new(out);
    o.u32(7);
    o.u32(45);
    o.u32(max_readahead);
    o.u32(flags as u32);
    let max_background: u16 = 16;
    o.bytes(&max_background.to_ne_bytes());
    o.bytes(&(max_background * 3 / 4).to_ne_bytes());
    o.u32(max_write);
    o.u32(1); // time_gran: nanoseconds
    o.bytes(&((max_write / 4096) as u16).to_ne_bytes());
    o.bytes(&0u16.to_ne_bytes()); // map_alignment
    o.u32((flags >> 32) as u32);
    o.u32(0); // max_stack_depth
    o.zeros(24);
    o.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_request_splits_into_argument_and_payload() {
        let mut b = vec![0u8; 40];
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // mkdir_in
        b.extend_from_slice(b"name\0");
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[4..8].copy_from_slice(&op::MKDIR.to_ne_bytes());
        b[8..16].copy_from_slice(&42u64.to_ne_bytes());
        let r = Request::from_dev(&b).unwrap();
        assert_eq!((r.opcode, r.unique), (op::MKDIR, 42));
        assert_eq!(r.arg, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.name().0, b"name");
    }

    #[test]
    fn a_ring_request_takes_its_argument_length_from_the_header() {
        let mut h = [0u8; 40];
        // READ: 40-byte argument, no payload.
        h[0..4].copy_from_slice(&80u32.to_ne_bytes());
        h[4..8].copy_from_slice(&op::READ.to_ne_bytes());
        let op_in = [9u8; 128];
        let r = Request::from_ring(&h, &op_in, &[], 0).unwrap();
        assert_eq!(r.arg.len(), 40);
        // LOOKUP: no argument, the name in the payload.
        h[0..4].copy_from_slice(&45u32.to_ne_bytes());
        let r = Request::from_ring(&h, &op_in, b"name\0xxx", 5).unwrap();
        assert_eq!((r.arg.len(), r.name().0), (0, &b"name"[..]));
        // A header whose length is shorter than its payload is refused.
        h[0..4].copy_from_slice(&41u32.to_ne_bytes());
        assert!(Request::from_ring(&h, &op_in, b"name\0", 5).is_none());
    }

    #[test]
    fn dirents_are_padded_and_refused_when_full() {
        let mut buf = [0xffu8; 40];
        let mut o = Out::new(&mut buf);
        assert!(put_dirent(&mut o, 5, 1, VType::File, "abc"));
        assert_eq!(o.len(), 32);
        assert!(!put_dirent(&mut o, 6, 2, VType::File, "abc"));
        assert_eq!(u32_at(&buf, 20), libc::DT_REG as u32);
        assert_eq!(&buf[27..32], &[0; 5]);
    }
}

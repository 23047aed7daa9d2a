//! fuser's `Filesystem` over the transport-neutral operations: every callback decodes its
//! arguments, calls one [`Fs`] operation and replies. Nothing else lives here.
//!
//! Each callback runs inside [`guarded`]: a panic while answering one request is logged and
//! answered with EIO, and the session thread goes on serving.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno as FuseErrno, FileAttr, FileHandle as Fh, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use oxcrypt_core::vault::FileType as VType;
use oxcrypt_core::Attr;

use crate::ops::{
    Caller, Entry, Errno, Fs, OpResult, Opened, RenameFlags as Rename, SetAttr, TimeSet,
};

/// fuser's view of the mount.
pub struct FuserFs {
    fs: Arc<Fs>,
}

impl FuserFs {
    /// The adapter over `fs`.
    pub fn new(fs: Arc<Fs>) -> Self {
        FuserFs { fs }
    }
}

thread_local! {
    /// The reply buffer of READ: the operation decrypts into it, fuser sends from it.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs one operation; a panic becomes EIO (logged) instead of taking the thread with it.
fn guarded<T>(op: &'static str, f: impl FnOnce() -> OpResult<T>) -> OpResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = crate::errno::panic_message(&*p);
            tracing::error!(op, panic = %what, "a request handler panicked; answered EIO");
            Err(Errno::EIO)
        }
    }
}

fn fe(e: Errno) -> FuseErrno {
    FuseErrno::from_i32(e.code())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
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
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(k: VType) -> FileType {
    match k {
        VType::File => FileType::RegularFile,
        VType::Directory => FileType::Directory,
        VType::Symlink => FileType::Symlink,
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
        TimeOrNow::Now => TimeSet::Now,
    }
}

fn reply_entry(reply: ReplyEntry, r: OpResult<Entry>) {
    match r {
        Ok(e) => reply.entry(&e.ttl, &to_fuse_attr(e.ino, &e.attr), Generation(0)),
        Err(e) => reply.error(fe(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: OpResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fe(e)),
    }
}

fn reply_open(reply: ReplyOpen, r: OpResult<Opened>) {
    match r {
        Ok(o) if o.keep_cache => reply.opened(Fh(o.fh), FopenFlags::FOPEN_KEEP_CACHE),
        Ok(o) => reply.opened(Fh(o.fh), FopenFlags::empty()),
        Err(e) => reply.error(fe(e)),
    }
}

impl FuserFs {
    /// [`guarded`], counting the request as activity.
    fn guarded<T>(&self, op: &'static str, f: impl FnOnce() -> OpResult<T>) -> OpResult<T> {
        self.fs.touch();
        guarded(op, f)
    }

    /// Runs a metadata call inline, or on a spawned thread in the `metadata-on-thread`
    /// ablation.
    fn meta(&self, f: impl FnOnce() + Send) {
        if self.fs.options().tuning.metadata_on_thread {
            std::thread::scope(|s| {
                s.spawn(f);
            });
        } else {
            f()
        }
    }

    fn reply_attr(&self, reply: ReplyAttr, ino: u64, r: OpResult<Attr>) {
        match r {
            Ok(a) => reply.attr(&self.fs.ttl(), &to_fuse_attr(ino, &a)),
            Err(e) => reply.error(fe(e)),
        }
    }
}

impl Filesystem for FuserFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let options = self.fs.options();
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES;
        if options.readdirplus {
            // AUTO: the kernel asks for attributes with the first batch of a listing and then
            // only when the caller went on to look entries up (`ls -l`, not `ls`).
            wanted |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        }
        if options.writeback_cache {
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
        self.fs.shutdown();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.meta(|| {
            let r = self.guarded("lookup", || self.fs.lookup(parent.0, name.as_bytes()));
            reply_entry(reply, r)
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = self.guarded("forget", || {
            self.fs.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        self.meta(|| {
            let r = self.guarded("getattr", || self.fs.getattr(ino.0));
            self.reply_attr(reply, ino.0, r)
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
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            fh: fh.map(|f| f.0),
        };
        let r = self.guarded("setattr", || self.fs.setattr(ino.0, set));
        self.reply_attr(reply, ino.0, r)
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.guarded("readlink", || self.fs.readlink(ino.0)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(fe(e)),
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
        let r = self.guarded("mknod", || {
            self.fs
                .mknod(caller(req), parent.0, name.as_bytes(), mode & !umask)
        });
        reply_entry(reply, r)
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
        let r = self.guarded("mkdir", || {
            self.fs
                .mkdir(caller(req), parent.0, name.as_bytes(), mode & !umask)
        });
        reply_entry(reply, r)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.guarded("unlink", || self.fs.unlink(parent.0, name.as_bytes()));
        reply_empty(reply, r)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.guarded("rmdir", || self.fs.rmdir(parent.0, name.as_bytes()));
        reply_empty(reply, r)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.guarded("symlink", || {
            self.fs.symlink(
                caller(req),
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            )
        });
        reply_entry(reply, r)
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
        let flags = Rename {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
            whiteout: flags.contains(RenameFlags::RENAME_WHITEOUT),
        };
        let r = self.guarded("rename", || {
            self.fs.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags,
            )
        });
        reply_empty(reply, r)
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.fs.link())
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply_open(reply, self.guarded("open", || self.fs.open(ino.0, flags.0)))
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
        READ_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            buf.resize(size as usize, 0);
            match self.guarded("read", || self.fs.read(fh.0, offset, &mut buf)) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(fe(e)),
            }
        })
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
        match self.guarded("write", || self.fs.write(ino.0, fh.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fe(e)),
        }
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
        reply.error(FuseErrno::ENOSYS);
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
        let r = self.guarded("release", || {
            self.fs.release(ino.0, fh.0);
            Ok(())
        });
        reply_empty(reply, r)
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        // The reply goes with the completion; if the handler panics before handing it on,
        // fuser answers the dropped reply with EIO.
        let _ = self.guarded("fsync", || {
            self.fs.fsync(
                fh.0,
                datasync,
                Box::new(move |r: OpResult<()>| reply_empty(reply, r)),
            );
            Ok(())
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.meta(|| reply_open(reply, self.guarded("opendir", || self.fs.opendir(ino.0))))
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.meta(|| {
            let r = self.guarded("readdir", || {
                self.fs.readdir(ino.0, fh.0, offset, &mut |e| {
                    reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), e.name)
                })
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fe(e)),
            }
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
        self.meta(|| {
            let r = self.guarded("readdirplus", || {
                self.fs.readdirplus(ino.0, fh.0, offset, &mut |e, entry| {
                    reply.add(
                        INodeNo(e.ino),
                        e.offset,
                        e.name,
                        &entry.ttl,
                        &to_fuse_attr(entry.ino, &entry.attr),
                        Generation(0),
                    )
                })
            });
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fe(e)),
            }
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
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: Fh, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.guarded("fsyncdir", || self.fs.fsyncdir(ino.0)))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.guarded("statfs", || self.fs.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.access(ino.0))
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
        let r = self.guarded("create", || {
            self.fs
                .create(caller(req), parent.0, name.as_bytes(), mode & !umask, flags)
        });
        match r {
            Ok((e, o)) => reply.created(
                &e.ttl,
                &to_fuse_attr(e.ino, &e.attr),
                Generation(0),
                Fh(o.fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(fe(e)),
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
        reply.error(FuseErrno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(FuseErrno::ENOSYS);
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
        reply.error(FuseErrno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FuseErrno::ENOSYS);
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
        let r = self.guarded("fallocate", || {
            self.fs.fallocate(ino.0, fh.0, offset, length, mode)
        });
        reply_empty(reply, r)
    }
}

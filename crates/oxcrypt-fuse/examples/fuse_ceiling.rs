//! What FUSE itself allows a sequential reader on this machine: a read-only file system with
//! one file, `data`, served over `/dev/fuse` through fuser with the settings oxcrypt's
//! `/dev/fuse` transport uses (asynchronous reads, 1 MiB read-ahead and READs, two threads
//! with a cloned fd each), but with nothing behind it but:
//!
//! - `--backing FILE`: each READ is one `pread` of FILE (a FUSE passthrough without
//!   encryption: what a file system that only had to read its disk would get);
//! - `--size BYTES`: each READ is answered with zeros (no disk, no work: FUSE's own ceiling).
//!
//! A measuring tool for `kernel-notes/probe-fuse-ceiling.sh`, not part of oxcrypt:
//! `cargo run --release -p oxcrypt-fuse --example fuse_ceiling -- MOUNTPOINT --size 2147483648`.
//! It runs until the mountpoint is unmounted.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, Request,
};

/// Kernel attribute and entry cache time: the file never changes.
const TTL: Duration = Duration::from_secs(3600);
/// Largest READ (the kernel's read-ahead and `max_pages` bound it at 1 MiB).
const MAX_READ: usize = 1 << 20;
/// Zeros to answer READs from without touching them.
static ZEROS: [u8; MAX_READ] = [0; MAX_READ];

thread_local! {
    /// Each thread's buffer for READs of the backing file.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_READ]);
}

/// What the READs of `data` are answered from.
enum Source {
    Backing(File),
    Zeros,
}

struct Ceiling {
    source: Source,
    size: u64,
}

impl Ceiling {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            1 => (FileType::Directory, 0o555, 0, 2),
            2 => (FileType::RegularFile, 0o444, self.size, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for Ceiling {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_READ | InitFlags::FUSE_BIG_WRITES);
        let _ = config.set_max_write(MAX_READ as u32);
        if let Err(max) = config.set_max_readahead(MAX_READ as u32) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent.0, name.to_str()) {
            (1, Some("data")) => reply.entry(&TTL, &self.attr(2).unwrap(), fuser::Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = (size as usize)
            .min(MAX_READ)
            .min(self.size.saturating_sub(offset) as usize);
        match &self.source {
            Source::Zeros => reply.data(&ZEROS[..len]),
            Source::Backing(file) => BUF.with(|b| {
                let mut buf = b.borrow_mut();
                match file.read_at(&mut buf[..len], offset) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
                }
            }),
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: fuse_ceiling MOUNTPOINT (--backing FILE | --size BYTES)");
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mountpoint, how, what] = args.as_slice() else {
        usage()
    };
    let fs = match how.as_str() {
        "--backing" => {
            let file = File::open(what)?;
            let size = file.metadata()?.len();
            Ceiling {
                source: Source::Backing(file),
                size,
            }
        }
        "--size" => Ceiling {
            source: Source::Zeros,
            size: what.parse().unwrap_or_else(|_| usage()),
        },
        _ => usage(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("fuse-ceiling".into()),
        MountOption::RO,
        MountOption::NoAtime,
    ];
    config.n_threads = Some(2);
    config.clone_fd = true;
    fuser::mount(fs, PathBuf::from(mountpoint), &config)
}

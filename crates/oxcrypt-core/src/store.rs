//! The ciphertext store: how the vault's files are opened, read and changed on disk, without
//! trusting the tree. A vault often lives in a folder that a sync client, or another user,
//! can write to, so every node is treated as possibly hostile:
//!
//! - nothing follows a symlink in the last component (`O_NOFOLLOW`, `lstat`);
//! - everything is checked with `fstat` on the descriptor that is then used: anything but a
//!   regular file or a directory where one is expected is a broken node (EIO, one log line),
//!   and a FIFO or device is never opened for reading (`O_NONBLOCK` before the check);
//! - control files are read from that same descriptor, bounded;
//! - permissions, owners and times are changed through the checked descriptor, never by path.
//!
//! Other ciphertext stores (object storage) would sit behind this module.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::SystemTime;

use crate::error::{Error, IoContext, Result};

/// What a node's file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

fn broken(path: &Path, why: impl Into<String>) -> Error {
    Error::BrokenNode {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Refuses `md` unless it is what `expect` says.
fn check_type(path: &Path, md: &Metadata, expect: Expect) -> Result<()> {
    let ft = md.file_type();
    let ok = match expect {
        Expect::File => ft.is_file(),
        Expect::Dir => ft.is_dir(),
    };
    if ok {
        return Ok(());
    }
    let what = if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "a regular file"
    };
    let want = match expect {
        Expect::File => "a regular file",
        Expect::Dir => "a directory",
    };
    Err(broken(path, format!("is {what}, not {want}")))
}

/// Maps the error of an `O_NOFOLLOW` open of a symlink (ELOOP) to a broken node.
fn open_err(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        broken(path, "is a symbolic link")
    } else {
        Error::io(path, e)
    }
}

/// Opens the regular file at `path` for reading (and writing if `write`), refusing symlinks,
/// FIFOs, devices and directories.
pub fn open_file(path: &Path, write: bool) -> Result<File> {
    let (file, _) = open_checked(path, write)?;
    // The descriptor is handed to io_uring, which answers EAGAIN for O_NONBLOCK files
    // instead of waiting: drop the flag again.
    clear_nonblock(&file);
    Ok(file)
}

/// Opens `path` with `O_NOFOLLOW | O_NONBLOCK` and checks with `fstat` that it is a regular
/// file; returns the descriptor (still `O_NONBLOCK`) and its metadata.
fn open_checked(path: &Path, write: bool) -> Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_err(path, e))?;
    let md = file.metadata().at(path)?;
    check_type(path, &md, Expect::File)?;
    Ok((file, md))
}

/// Drops `O_NONBLOCK` again.
fn clear_nonblock(file: &File) {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Reads the regular file at `path` whole, refusing anything longer than `limit` bytes; the
/// size check and the read use one descriptor.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    // Read with plain read(2) from a regular file, which ignores O_NONBLOCK: no need to clear.
    let (file, md) = open_checked(path, false)?;
    let len = md.len();
    if len > limit {
        return Err(broken(
            path,
            format!("{len} bytes, more than the {limit} allowed"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    // One byte more than allowed tells a file that grew since the fstat.
    (&file).take(limit + 1).read_to_end(&mut out).at(path)?;
    if out.len() as u64 > limit {
        return Err(broken(path, format!("more than the {limit} bytes allowed")));
    }
    Ok(out)
}

/// `lstat` of a node's file, refused unless it is what `expect` says.
pub fn metadata(path: &Path, expect: Expect) -> Result<Metadata> {
    let md = std::fs::symlink_metadata(path).at(path)?;
    check_type(path, &md, expect)?;
    Ok(md)
}

/// Whether `path` is a regular file (not following a symlink). Absent or anything else: false.
pub fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// A node's file opened as a path handle (`O_PATH`, no symlink followed), checked to be what
/// `expect` says: the handle through which its attributes are changed.
struct Checked {
    fd: File,
}

impl Checked {
    fn open(path: &Path, expect: Expect) -> Result<Checked> {
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| open_err(path, e))?;
        let md = fd.metadata().at(path)?;
        check_type(path, &md, expect)?;
        Ok(Checked { fd })
    }

    /// `/proc/self/fd/N`: resolves to exactly the checked inode, whatever the path now is.
    fn proc_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Sets the permission bits of the node file at `path`.
pub fn set_mode(path: &Path, expect: Expect, mode: u32) -> Result<()> {
    let c = Checked::open(path, expect)?;
    std::fs::set_permissions(
        c.proc_path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
    .at(path)
}

/// Changes owner and/or group of the node file at `path`.
pub fn set_owner(path: &Path, expect: Expect, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    let c = Checked::open(path, expect)?;
    std::os::unix::fs::chown(c.proc_path(), uid, gid).at(path)
}

/// Sets access and modification times of the node file at `path` (`None` leaves one as is).
pub fn set_times(
    path: &Path,
    expect: Expect,
    atime: Option<SystemTime>,
    mtime: Option<SystemTime>,
) -> Result<()> {
    let c = Checked::open(path, expect)?;
    let ts = |t: Option<SystemTime>| -> libc::timespec {
        match t {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            Some(t) => {
                let (sec, nsec) = match t.duration_since(SystemTime::UNIX_EPOCH) {
                    Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                    Err(e) => {
                        let d = e.duration();
                        let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                        if n == 0 {
                            (-s, 0)
                        } else {
                            (-s - 1, 1_000_000_000 - n)
                        }
                    }
                };
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        }
    };
    let times = [ts(atime), ts(mtime)];
    let empty = c"";
    // SAFETY: an O_PATH descriptor we own, an empty NUL-terminated path with AT_EMPTY_PATH
    // (acts on the descriptor itself), and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            c.fd.as_raw_fd(),
            empty.as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Error::io(path, std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn fifos_symlinks_and_oversized_files_are_broken_nodes_not_hangs() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        mkfifo(&fifo);
        assert!(matches!(
            read_bounded(&fifo, 100),
            Err(Error::BrokenNode { .. })
        ));
        let link = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read_bounded(&link, 100),
            Err(Error::BrokenNode { .. })
        ));
        let big = d.path().join("big");
        std::fs::write(&big, vec![1u8; 101]).unwrap();
        assert!(matches!(
            read_bounded(&big, 100),
            Err(Error::BrokenNode { .. })
        ));
        assert_eq!(read_bounded(&big, 101).unwrap().len(), 101);
        assert!(matches!(
            open_file(&fifo, true),
            Err(Error::BrokenNode { .. })
        ));
        assert!(matches!(
            metadata(&link, Expect::File),
            Err(Error::BrokenNode { .. })
        ));
    }

    #[test]
    fn attribute_changes_never_reach_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.path().join("node.c9r");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(set_mode(&link, Expect::File, 0o666).is_err());
        assert!(set_owner(&link, Expect::File, Some(65534), None).is_err());
        assert!(set_times(&link, Expect::File, None, Some(SystemTime::UNIX_EPOCH)).is_err());
        let md = std::fs::metadata(&victim).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        // The real thing works.
        set_mode(&victim, Expect::File, 0o640).unwrap();
        set_times(&victim, Expect::File, None, Some(SystemTime::UNIX_EPOCH)).unwrap();
        let md = std::fs::metadata(&victim).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o640);
        assert_eq!(md.modified().unwrap(), SystemTime::UNIX_EPOCH);
    }
}

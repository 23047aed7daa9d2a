//! The ciphertext store: how the vault's files are opened, read and changed on disk, without
//! trusting the tree. A vault often lives in a folder that a sync client, or another user,
//! can write to, so every node is treated as possibly hostile:
//!
//! - nothing follows a symlink in any component (`openat2` with `RESOLVE_NO_SYMLINKS`; the
//!   vault's own path is made canonical when it is opened, so only the tree below it can hold
//!   a symlink; on kernels before 5.6, `O_NOFOLLOW` guards the last component);
//! - everything is checked with `fstat` on the descriptor that is then used: anything but a
//!   regular file or a directory where one is expected is a broken node (EIO, one log line),
//!   and a FIFO or device is never opened for reading (`O_NONBLOCK` before the check);
//! - control files are read from that same descriptor, bounded;
//! - permissions, owners and times are changed through the checked descriptor, never by path.
//!
//! Other ciphertext stores (object storage) would sit behind this module.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Maps the error of an open that met a symlink (ELOOP) to a broken node.
fn open_err(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        broken(path, "is or lies under a symbolic link")
    } else {
        Error::io(path, e)
    }
}

/// Set once `openat2` answered ENOSYS (a kernel before 5.6): then plain `openat` with
/// `O_NOFOLLOW` is used, which guards the last component only.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` with `flags` (plus `O_CLOEXEC | O_NOFOLLOW`) without following a symlink in
/// any of its components.
fn open_no_symlinks(path: &Path, flags: libc::c_int) -> Result<File> {
    open_mode(path, flags, 0).map_err(|e| open_err(path, e))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// [`open_no_symlinks`] with the mode of a file it creates, and the plain OS error.
fn open_mode(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let cpath = c_path(path)?;
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // SAFETY: open_how is plain data; zeroed is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.mode = u64::from(mode);
        how.resolve = libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: a NUL-terminated path, a valid open_how and its size; the kernel returns a
        // new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                cpath.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
            return Ok(unsafe { File::from_raw_fd(fd as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        NO_OPENAT2.store(true, Ordering::Relaxed);
    }
    // SAFETY: a NUL-terminated path, integer flags and the mode (read only with O_CREAT).
    let fd = unsafe { libc::open(cpath.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { File::from_raw_fd(fd) })
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
    let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
    let file = open_no_symlinks(path, access | libc::O_NONBLOCK)?;
    let md = file.metadata().at(path)?;
    check_type(path, &md, Expect::File)?;
    Ok((file, md))
}

/// A second, read-only descriptor of the open `file` with `O_DIRECT` (reads bypass the page
/// cache), opened through `/proc/self/fd` so that it is the same file even if it was renamed
/// or unlinked; `None` where that cannot be had (no `/proc`, a file system without
/// `O_DIRECT` such as some FUSE or network ones).
pub fn reopen_direct(file: &File) -> Option<File> {
    let path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    // SAFETY: open with a valid C string and plain flags; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Some(unsafe { File::from_raw_fd(fd) })
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

/// The metadata of a node's file (no symlink followed in any component), refused unless it
/// is what `expect` says.
pub fn metadata(path: &Path, expect: Expect) -> Result<Metadata> {
    let md = entry_metadata(path)?;
    check_type(path, &md, expect)?;
    Ok(md)
}

/// `fstat` of an `O_PATH` handle opened without following symlinks: what `lstat` gives
/// (a symlink entry is reported as one, for classifying it), except that a symlink above it
/// is refused.
pub fn entry_metadata(path: &Path) -> Result<Metadata> {
    let fd = open_no_symlinks(path, libc::O_PATH)?;
    fd.metadata().at(path)
}

/// Refuses `md` (of `path`) unless it is a regular file.
pub fn check_file(path: &Path, md: &Metadata) -> Result<()> {
    check_type(path, md, Expect::File)
}

/// Whether `path` is a regular file (no symlink followed). Absent or anything else: false.
pub fn is_regular(path: &Path) -> bool {
    entry_metadata(path).is_ok_and(|m| m.is_file())
}

/// Creates the file `path`, which must not exist, for reading and writing with permission
/// `mode` (before the umask); no symlink is followed in any component.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    open_mode(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, mode)
}

/// Writes `data` as the whole content of `path` (created 0666 before the umask, or
/// truncated); no symlink is followed.
pub fn write_whole(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = open_mode(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o666)?;
    io::Write::write_all(&mut f, data)
}

/// The directory holding `path`, opened without following symlinks, and the last component
/// of `path`: what the `*at` calls below act on, so that a symlink planted above a node is
/// never followed by a change.
fn parent_and_name(path: &Path) -> io::Result<(File, CString)> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = open_mode(parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok((dir, c_path(Path::new(name))?))
}

fn check_rc(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mkdir` of `path` (mode 0777 before the umask) in its checked parent.
pub fn create_dir(path: &Path) -> io::Result<()> {
    let (dir, name) = parent_and_name(path)?;
    // SAFETY: a directory descriptor we own and a NUL-terminated single component.
    check_rc(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) })
}

/// Unlinks the file (or, with `dir`, the empty directory) `path` in its checked parent.
pub fn remove(path: &Path, dir: bool) -> io::Result<()> {
    let (parent, name) = parent_and_name(path)?;
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: as in create_dir.
    check_rc(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) })
}

/// `renameat2(from, to, flags)` between the checked parents of both paths (`flags`:
/// 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE`).
pub fn rename(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from_dir, from_name) = parent_and_name(from)?;
    let (to_dir, to_name) = parent_and_name(to)?;
    // SAFETY: two directory descriptors we own and two NUL-terminated single components.
    check_rc(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            from_name.as_ptr(),
            to_dir.as_raw_fd(),
            to_name.as_ptr(),
            flags,
        )
    })
}

/// A node's file opened as a path handle (`O_PATH`, no symlink followed), checked to be what
/// `expect` says: the handle through which its attributes are changed.
struct Checked {
    fd: File,
}

impl Checked {
    fn open(path: &Path, expect: Expect) -> Result<Checked> {
        let fd = open_no_symlinks(path, libc::O_PATH)?;
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
    fn a_symlink_above_the_node_is_refused_too() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("file.c9r"), b"secret").unwrap();
        let vault = d.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        // A hash directory that a hostile sync folder replaced by a link to elsewhere.
        std::os::unix::fs::symlink(&outside, vault.join("AB")).unwrap();
        let through = vault.join("AB").join("file.c9r");
        for r in [
            read_bounded(&through, 100).map(drop),
            open_file(&through, true).map(drop),
            metadata(&through, Expect::File).map(drop),
            set_mode(&through, Expect::File, 0o666),
        ] {
            assert!(matches!(r, Err(Error::BrokenNode { .. })), "{r:?}");
        }
        assert!(!is_regular(&through));
        assert_eq!(
            std::fs::metadata(outside.join("file.c9r"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
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

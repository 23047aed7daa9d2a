//! The error numbers the operations answer with: one table of named constants, and the one
//! mapping from a vault error (which also decides what is worth a log line).

use oxcrypt_core::Error;

/// A POSIX error number, as a FUSE reply carries it (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// I/O error (also: vault data that failed authentication or is malformed).
    pub const EIO: Errno = Errno(libc::EIO);
    /// Bad file handle.
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// Is a directory.
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    /// Not a directory.
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    /// Read-only file system.
    pub const EROFS: Errno = Errno(libc::EROFS);
    /// Operation not permitted (hard links, special files).
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// Not implemented: the kernel stops sending the request.
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    /// Too many levels of links: a directory cycle in a broken or hostile tree.
    pub const ELOOP: Errno = Errno(libc::ELOOP);
    /// Operation not supported (fallocate modes other than 0).
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);

    /// The number.
    pub fn code(self) -> i32 {
        self.0
    }
}

impl From<Error> for Errno {
    /// The errno of a vault error. Refused vault data (authentication, bad names, broken
    /// nodes) is logged as an error; anything else is an ordinary outcome, logged at debug.
    fn from(e: Error) -> Errno {
        match &e {
            Error::Content { .. } | Error::BadName { .. } | Error::BrokenNode { .. } => {
                tracing::error!(error = %e, "vault data refused");
            }
            _ => tracing::debug!(error = %e, "operation failed"),
        }
        Errno(e.errno())
    }
}

/// Result of an operation.
pub type OpResult<T> = Result<T, Errno>;

/// The message of a caught panic (`&str` or `String` payloads), for the one log line that
/// answers a panicking request with EIO.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

//! Fault injection, the way SQLite tests I/O errors: every call that changes the ciphertext
//! tree goes through the wrappers below, and a test can make the N-th of them fail with
//! ENOSPC ([`fail_nth`]). In builds other than the core's own tests the wrappers are plain
//! calls: [`point`] compiles to nothing.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[cfg(test)]
thread_local! {
    /// Calls left before the injected failure (`None`: none armed).
    static COUNTDOWN: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
    /// Whether the armed failure was injected.
    static HIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Arms the `n`-th (from 1) change of this thread to fail with ENOSPC.
#[cfg(test)]
pub(crate) fn fail_nth(n: u32) {
    COUNTDOWN.with(|c| c.set(Some(n)));
    HIT.with(|h| h.set(false));
}

/// Disarms; returns whether the failure was injected.
#[cfg(test)]
pub(crate) fn disarm() -> bool {
    COUNTDOWN.with(|c| c.set(None));
    HIT.with(|h| h.replace(false))
}

/// One change about to be made: fails it if it is the armed one.
#[inline]
pub(crate) fn point() -> io::Result<()> {
    #[cfg(test)]
    {
        let fail = COUNTDOWN.with(|c| match c.get() {
            Some(1) => {
                c.set(None);
                true
            }
            Some(n) => {
                c.set(Some(n - 1));
                false
            }
            None => false,
        });
        if fail {
            HIT.with(|h| h.set(true));
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
    }
    Ok(())
}

/// [`store::create_dir`](crate::store::create_dir).
pub(crate) fn create_dir(p: &Path) -> io::Result<()> {
    point()?;
    crate::store::create_dir(p)
}

/// `fs::create_dir_all`.
pub(crate) fn create_dir_all(p: &Path) -> io::Result<()> {
    point()?;
    fs::create_dir_all(p)
}

/// [`store::write_whole`](crate::store::write_whole).
pub(crate) fn write(p: &Path, data: &[u8]) -> io::Result<()> {
    point()?;
    crate::store::write_whole(p, data)
}

/// [`store::rename`](crate::store::rename).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    point()?;
    crate::store::rename(from, to, 0)
}

/// [`store::rename`](crate::store::rename) refusing to replace (`RENAME_NOREPLACE`).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    point()?;
    crate::store::rename(from, to, libc::RENAME_NOREPLACE)
}

/// [`store::remove`](crate::store::remove) of a file.
pub(crate) fn remove_file(p: &Path) -> io::Result<()> {
    point()?;
    crate::store::remove(p, false)
}

/// `fs::remove_dir_all`.
pub(crate) fn remove_dir_all(p: &Path) -> io::Result<()> {
    point()?;
    fs::remove_dir_all(p)
}

/// `fs::set_permissions` with a mode.
pub(crate) fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    point()?;
    fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// `File::set_len`.
pub(crate) fn set_len(f: &File, len: u64) -> io::Result<()> {
    point()?;
    f.set_len(len)
}

/// `FileExt::write_all_at`.
pub(crate) fn write_all_at(f: &File, data: &[u8], at: u64) -> io::Result<()> {
    point()?;
    f.write_all_at(data, at)
}

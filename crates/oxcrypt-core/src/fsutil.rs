//! Small file-system helpers: atomic replacement of small files, renames that refuse to
//! replace, hidden temporary names for changes in progress.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
/// directory. `mode` is the permission of the new file (0600 for key material).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{:08x}.tmp",
        u32::from_le_bytes(crate::random::bytes())
    ));
    let result = (|| {
        crate::fault::point().at(&tmp)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        crate::fault::rename(&tmp, path).at(path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so that a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Prefix of the hidden names that changes in progress use in content directories. Neither
/// oxcrypt nor Cryptomator lists them (no `.c9r`/`.c9s` suffix); one that outlives its change
/// is the leftover of an interrupted one (`check` reports it).
pub const TEMP_PREFIX: &str = ".oxcrypt-";

/// A fresh hidden name beside `path`: `.oxcrypt-<tag>-<random>`.
pub fn temp_sibling(path: &Path, tag: &str) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        "{TEMP_PREFIX}{tag}-{:016x}",
        u64::from_le_bytes(crate::random::bytes())
    ))
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing anything
/// (`renameat2` with `RENAME_NOREPLACE`).
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (cstr(from)?, cstr(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

//! Small file-system helpers: atomic replacement of small files, hidden temporary names for
//! changes in progress, directory fsync.

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

//! The mountpoint: checks before mounting (exists, a directory, empty, not mounted, not a
//! stale mount), and the mount's read-ahead through its bdi once mounted.

use std::path::Path;

use crate::mountinfo::mount_at;
use crate::MountError;

/// Whether `path` is a mountpoint of a FUSE file system that no longer answers (a killed
/// daemon).
pub fn is_stale_mount(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Whether something is mounted at `path`.
pub fn is_mountpoint(path: &Path) -> bool {
    std::fs::canonicalize(path)
        .ok()
        .and_then(|p| mount_at(&p))
        .is_some()
}

/// Refuses a mountpoint that cannot take the mount, saying why and what to do.
pub(crate) fn check(path: &Path) -> Result<(), MountError> {
    let bad = |why: String| MountError::Mountpoint {
        path: path.to_path_buf(),
        why,
    };
    if is_stale_mount(path) {
        return Err(bad("a stale mount from a daemon that died is still there; run `oxcrypt umount` on it (or `umount -l`) and retry".into()));
    }
    let md = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("does not exist; create it with mkdir first".into()),
        _ => bad(e.to_string()),
    })?;
    if !md.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if is_mountpoint(path) {
        return Err(bad(
            "something is already mounted here; unmount it first".into()
        ));
    }
    if std::fs::read_dir(path)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(bad(
            "directory is not empty; mount on an empty directory".into()
        ));
    }
    Ok(())
}

/// Raises the kernel read-ahead of the FUSE mount at `path` (absolute) through its bdi. The
/// device comes from mountinfo: a stat of the mountpoint would be a FUSE request nobody
/// answers yet.
pub(crate) fn set_read_ahead(path: &Path, kb: u32) {
    let Some(mount) = mount_at(path) else {
        return;
    };
    let bdi = format!("/sys/class/bdi/{}/read_ahead_kb", mount.device);
    match std::fs::write(&bdi, kb.to_string()) {
        Ok(()) => tracing::debug!(bdi, kb, "read-ahead raised"),
        Err(e) => tracing::info!(bdi, error = %e, "cannot raise read-ahead"),
    }
}

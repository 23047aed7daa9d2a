//! The one parser of `/proc/self/mountinfo` (proc(5)): which file systems are mounted where.

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted device.
    pub device: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// File system type (`fuse.oxcrypt`, `ext4`, …).
    pub fstype: String,
    /// Mount source (`oxcrypt`, `/dev/sda1`, …).
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one line; `None` if it is not a mountinfo line.
pub fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // 0 id, 1 parent, 2 major:minor, 3 root, 4 mountpoint, 5 options, optional fields, "-",
    // then fstype, source, super options.
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    Some(MountEntry {
        device: fields[2].to_string(),
        mountpoint: PathBuf::from(unescape(fields[4])),
        fstype: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
    })
}

/// Every mount of this process's mount namespace, in mount order.
pub fn mounts() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_line).collect())
}

/// The topmost mount at `path` (compared as given: pass an absolute, canonical path).
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts()
        .ok()?
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_escapes() {
        let l = "36 35 0:52 / /mnt/my\\040vault rw,nosuid - fuse.oxcrypt oxcrypt rw,user_id=0";
        let m = parse_line(l).unwrap();
        assert_eq!(m.device, "0:52");
        assert_eq!(m.mountpoint, Path::new("/mnt/my vault"));
        assert_eq!(m.fstype, "fuse.oxcrypt");
        assert_eq!(m.source, "oxcrypt");
        let with_optional = "25 1 8:1 / / rw shared:1 master:2 - ext4 /dev/sda1 rw";
        assert_eq!(parse_line(with_optional).unwrap().fstype, "ext4");
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn finds_the_root_mount() {
        assert!(mount_at(Path::new("/")).is_some());
    }
}

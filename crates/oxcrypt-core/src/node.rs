//! What the vault's tree is made of: nodes (a cleartext name, its kind and where it lives in
//! the ciphertext tree), the names of the files inside a node, and cleartext attributes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// A directory id: `""` for the root, a UUID string otherwise.
pub type DirId = Arc<str>;

/// File in a directory node holding the child's directory id.
pub const DIR_FILE: &str = "dir.c9r";
/// File in a symlink node holding the encrypted target.
pub const SYMLINK_FILE: &str = "symlink.c9r";
/// File in a shortened node holding the content of a regular file.
pub const CONTENTS_FILE: &str = "contents.c9r";
/// File in a shortened node holding the full ciphertext name.
pub const NAME_FILE: &str = "name.c9s";
/// Encrypted backup of a content directory's own id.
pub const DIRID_FILE: &str = "dirid.c9r";
/// Longest symlink target accepted (Cryptomator's limit).
pub const MAX_SYMLINK_TARGET: usize = 32767;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory with this id.
    Directory(DirId),
    /// A symbolic link.
    Symlink,
}

/// A cleartext entry of a directory and where it lives in the ciphertext tree.
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    /// Cleartext name (empty for the root).
    pub name: String,
    /// Kind, with the directory id for directories.
    pub kind: NodeKind,
    /// The `….c9r` or `….c9s` entry in the parent's content directory (the root's content
    /// directory for the root).
    pub entry: PathBuf,
    /// Whether the entry is a shortened `.c9s` node.
    pub shortened: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cleartext name stays out of Debug output (it ends up in logs).
        f.debug_struct("Node")
            .field("kind", &self.kind)
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// The ciphertext file holding this node's payload: file content, symlink target or the
    /// `dir.c9r` of a directory.
    pub fn payload_path(&self) -> PathBuf {
        match (&self.kind, self.shortened) {
            (NodeKind::File, false) => self.entry.clone(),
            (NodeKind::File, true) => self.entry.join(CONTENTS_FILE),
            (NodeKind::Directory(_), _) => self.entry.join(DIR_FILE),
            (NodeKind::Symlink, _) => self.entry.join(SYMLINK_FILE),
        }
    }

    /// The directory id if this node is a directory.
    pub fn dir_id(&self) -> Option<&DirId> {
        match &self.kind {
            NodeKind::Directory(id) => Some(id),
            _ => None,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Directory(_))
    }
}

/// File type reported by [`Attr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// Regular file.
    File,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
}

/// Cleartext attributes of a node: size is the cleartext size, the rest comes from the
/// ciphertext file (the content directory for directories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// File type.
    pub kind: FileType,
    /// Cleartext size in bytes (target length for symlinks).
    pub size: u64,
    /// Permission bits (without the file type).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
    /// Inode number of the ciphertext file (unique within the backing file system).
    pub ino: u64,
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, nsecs as u32)
    } else {
        SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn attr_from(kind: FileType, size: u64, nlink: u32, md: &fs::Metadata) -> Attr {
    Attr {
        kind,
        size,
        // Symlink permissions are meaningless on Linux and always shown as 0777.
        perm: if kind == FileType::Symlink {
            0o777
        } else {
            md.mode() & 0o7777
        },
        uid: md.uid(),
        gid: md.gid(),
        nlink,
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        ino: md.ino(),
    }
}

//! The vault API: open or create a vault, resolve cleartext paths, list, stat, read and write
//! files chunk by chunk, and change the tree (create, mkdir, symlink, rename, remove).
//!
//! Every method takes `&self` and is safe to call from many threads at once. Directory ids are
//! cached in a [`DirIdCache`] (DashMap); file content never passes through a whole-file buffer.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bumpalo::Bump;
use dashmap::DashMap;

use crate::chunks::{EdgeContents, ReadPlan, WritePlan};
use crate::config::{VaultConfig, CONFIG_FILE, MASTERKEY_FILE};
use crate::content::{CipherCombo, ContentCryptor, FileHeader, CHUNK_SIZE};
use crate::error::{ContentPart, CryptoError, Error, IoContext, Result};
use crate::fsutil::{sync_dir, write_atomic};
use crate::keys::MasterKeys;
use crate::masterkey_file::{MasterkeyFile, DEFAULT_SCRYPT_COST};
use crate::names::{normalize_name, normalize_name_in, NameCodec, C9R, C9S};

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
/// Chunks read or written per system call by [`FileHandle`] (1 MiB of cleartext).
pub const BATCH_CHUNKS: u64 = 32;

/// Options of [`Vault::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Content cipher of the new vault.
    pub cipher_combo: CipherCombo,
    /// scrypt N (a power of two > 1).
    pub scrypt_cost: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            cipher_combo: CipherCombo::SivGcm,
            scrypt_cost: DEFAULT_SCRYPT_COST,
        }
    }
}

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

fn attr_from(kind: FileType, size: u64, nlink: u32, md: &fs::Metadata) -> Attr {
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

/// Caches of directory ids: id → content directory, and (parent, name) → child id.
#[derive(Debug, Default)]
pub struct DirIdCache {
    content_dirs: DashMap<DirId, PathBuf>,
    children: DashMap<(DirId, String), DirId>,
    /// Subdirectory counts (for directory link counts), with the time they were counted.
    subdirs: DashMap<DirId, (u32, std::time::Instant)>,
}

impl DirIdCache {
    /// Adjusts a cached subdirectory count after a change made through this vault.
    fn subdirs_changed(&self, dir: &DirId, delta: i32) {
        if let Some(mut e) = self.subdirs.get_mut(dir) {
            e.0 = e.0.saturating_add_signed(delta);
        }
    }

    fn forget_child(&self, parent: &DirId, name: &str) {
        self.children.remove(&(parent.clone(), name.to_string()));
    }
}

/// An unlocked vault.
pub struct Vault {
    path: PathBuf,
    config: VaultConfig,
    keys: MasterKeys,
    names: NameCodec,
    content: Arc<ContentCryptor>,
    cache: DirIdCache,
    root: DirId,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    if len > limit {
        return Err(Error::BrokenNode {
            path: path.to_path_buf(),
            why: format!("{len} bytes, more than the {limit} allowed"),
        });
    }
    fs::read(path).at(path)
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

impl Vault {
    /// Unlocks the vault at `path` with `password`.
    pub fn open(path: &Path, password: &str) -> Result<Vault> {
        let config_path = path.join(CONFIG_FILE);
        let token = match fs::read(&config_path) {
            Ok(t) => t,
            Err(e) if is_not_found(&e) => return Err(Self::missing_config(path, e)),
            Err(e) => return Err(Error::io(&config_path, e)),
        };
        let token = String::from_utf8(token)
            .map_err(|_| Error::malformed(&config_path, "not ASCII text"))?;
        let mk_name = VaultConfig::peek_masterkey_file(&config_path, &token)?;
        let mk_path = path.join(&mk_name);
        let keys = MasterkeyFile::load(&mk_path)?.unlock(&mk_path, password)?;
        let config = VaultConfig::verify(&config_path, &token, &keys)?;
        let vault = Self::with_keys(path, config, keys);
        let root_dir = vault.content_dir(&vault.root);
        if !root_dir.is_dir() {
            return Err(Error::BrokenNode {
                path: root_dir,
                why: "the root content directory is missing".into(),
            });
        }
        tracing::debug!(vault = %path.display(), combo = vault.config.cipher_combo.name(), "vault unlocked");
        Ok(vault)
    }

    fn missing_config(path: &Path, e: std::io::Error) -> Error {
        let mk_path = path.join(MASTERKEY_FILE);
        match MasterkeyFile::load(&mk_path) {
            Ok(mk) if mk.version != crate::masterkey_file::FORMAT8_MASTERKEY_VERSION => {
                Error::UnsupportedFormat(mk.version)
            }
            Ok(_) => Error::io(path.join(CONFIG_FILE), e),
            Err(_) if !path.exists() => Error::NotFound(path.display().to_string()),
            Err(_) => Error::malformed(path, "not a Cryptomator vault (no vault.cryptomator)"),
        }
    }

    fn with_keys(path: &Path, config: VaultConfig, keys: MasterKeys) -> Vault {
        Vault {
            path: path.to_path_buf(),
            names: NameCodec::new(&keys, config.shortening_threshold),
            content: Arc::new(ContentCryptor::new(config.cipher_combo, &keys)),
            config,
            keys,
            cache: DirIdCache::default(),
            root: Arc::from(""),
        }
    }

    /// Creates a new vault at `path` (absent or an empty directory) protected by `password`.
    pub fn create(path: &Path, password: &str, options: &CreateOptions) -> Result<Vault> {
        match fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::Invalid(format!(
                        "{}: directory is not empty; a new vault needs an empty or absent directory",
                        path.display()
                    )));
                }
            }
            Err(e) if is_not_found(&e) => fs::create_dir_all(path).at(path)?,
            Err(e) => return Err(Error::io(path, e)),
        }
        let keys = MasterKeys::generate();
        let mk = MasterkeyFile::lock(&keys, password, options.scrypt_cost)
            .map_err(|why| Error::Invalid(format!("cannot create masterkey: {why}")))?;
        write_atomic(&path.join(MASTERKEY_FILE), &mk.to_json(), 0o600)?;
        let config = VaultConfig::new(options.cipher_combo);
        write_atomic(
            &path.join(CONFIG_FILE),
            config.sign(&keys).as_bytes(),
            0o644,
        )?;
        let vault = Self::with_keys(path, config, keys);
        let root = vault.root.clone();
        vault.create_content_dir(&root)?;
        Ok(vault)
    }

    /// Re-wraps the master keys under a new password, keeping the old masterkey file as
    /// `masterkey.cryptomator.<hash>.bkup` like Cryptomator. Returns the backup path.
    pub fn change_password(&self, new_password: &str) -> Result<PathBuf> {
        use sha2::Digest;
        let mk_path = self.path.join(&self.config.masterkey_file);
        let old = fs::read(&mk_path).at(&mk_path)?;
        let old_mk = MasterkeyFile::parse(&mk_path, &old)?;
        let digest = sha2::Sha256::digest(&old);
        let suffix: String = digest[..4].iter().map(|b| format!("{b:02X}")).collect();
        let backup = self
            .path
            .join(format!("{}.{suffix}.bkup", self.config.masterkey_file));
        write_atomic(&backup, &old, 0o600)?;
        let mut mk = MasterkeyFile::lock(&self.keys, new_password, old_mk.scrypt_cost_param)
            .map_err(|why| Error::Invalid(format!("cannot re-wrap keys: {why}")))?;
        mk.version = old_mk.version;
        write_atomic(&mk_path, &mk.to_json(), 0o600)?;
        Ok(backup)
    }

    /// The vault directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The verified configuration.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The name codec of this vault.
    pub fn names(&self) -> &NameCodec {
        &self.names
    }

    /// The content cryptor of this vault.
    pub fn content(&self) -> &Arc<ContentCryptor> {
        &self.content
    }

    /// The root directory id (`""`).
    pub fn root_id(&self) -> &DirId {
        &self.root
    }

    /// The root node.
    pub fn root(&self) -> Node {
        Node {
            name: String::new(),
            kind: NodeKind::Directory(self.root.clone()),
            entry: self.content_dir(&self.root),
            shortened: false,
        }
    }

    /// The cached content directory of `dir_id`, borrowed from the cache.
    fn content_dir_ref(&self, dir_id: &DirId) -> dashmap::mapref::one::Ref<'_, DirId, PathBuf> {
        if let Some(p) = self.cache.content_dirs.get(dir_id) {
            return p;
        }
        self.content_dir(dir_id);
        self.cache
            .content_dirs
            .get(dir_id)
            .expect("inserted by content_dir")
    }

    /// `<vault>/d/XX/YYYY…` for a directory id (cached).
    pub fn content_dir(&self, dir_id: &DirId) -> PathBuf {
        if let Some(p) = self.cache.content_dirs.get(dir_id) {
            return p.clone();
        }
        let hash = self.names.hash_dir_id(dir_id);
        let p = self.path.join("d").join(&hash[..2]).join(&hash[2..]);
        self.cache.content_dirs.insert(dir_id.clone(), p.clone());
        p
    }

    fn create_content_dir(&self, dir_id: &DirId) -> Result<PathBuf> {
        let dir = self.content_dir(dir_id);
        fs::create_dir_all(&dir).at(&dir)?;
        // Like cryptofs ≥ 2.4.2 / cryptolib ≥ 2.2.1: the backup always ends with a chunk, an
        // empty one for the root.
        let mut backup = self.content.encrypt_small(dir_id.as_bytes());
        if dir_id.is_empty() {
            let header = self
                .content
                .decrypt_header(&backup)
                .expect("just encrypted");
            let mut chunk = vec![0u8; self.content.combo().chunk_overhead()];
            self.content.encrypt_chunk(&header, 0, &[], &mut chunk);
            backup.extend_from_slice(&chunk);
        }
        let backup_path = dir.join(DIRID_FILE);
        fs::write(&backup_path, &backup).at(&backup_path)?;
        Ok(dir)
    }

    /// The entry path a name would have in `parent`, and whether it is shortened.
    fn entry_for(&self, parent: &DirId, name: &str) -> (PathBuf, bool, String) {
        let c9r = self.names.encrypt_name(parent, name);
        let dir = self.content_dir(parent);
        if self.names.must_shorten(&c9r) {
            (dir.join(NameCodec::shortened_name(&c9r)), true, c9r)
        } else {
            (dir.join(&c9r), false, c9r)
        }
    }

    fn classify(
        &self,
        name: String,
        entry: PathBuf,
        shortened: bool,
        is_dir: bool,
    ) -> Result<Node> {
        let node = |kind| Node {
            name: name.clone(),
            kind,
            entry: entry.clone(),
            shortened,
        };
        if !is_dir {
            if shortened {
                return Err(Error::BrokenNode {
                    path: entry.clone(),
                    why: "a .c9s node must be a directory".into(),
                });
            }
            return Ok(node(NodeKind::File));
        }
        let dir_file = entry.join(DIR_FILE);
        match read_limited(&dir_file, 1000) {
            Ok(id) => {
                let id = String::from_utf8(id)
                    .ok()
                    .filter(|id| !id.is_empty() && id.is_ascii())
                    .ok_or_else(|| Error::BrokenNode {
                        path: dir_file.clone(),
                        why: "dir.c9r does not hold a directory id".into(),
                    })?;
                return Ok(node(NodeKind::Directory(Arc::from(id))));
            }
            Err(Error::Io { source, .. }) if is_not_found(&source) => {}
            Err(e) => return Err(e),
        }
        if entry.join(SYMLINK_FILE).is_file() {
            return Ok(node(NodeKind::Symlink));
        }
        if shortened && entry.join(CONTENTS_FILE).is_file() {
            return Ok(node(NodeKind::File));
        }
        Err(Error::BrokenNode {
            path: entry,
            why: "directory node without dir.c9r, symlink.c9r or contents.c9r".into(),
        })
    }

    /// Looks `name` up in directory `parent`; `Ok(None)` if absent.
    pub fn lookup(&self, parent: &DirId, name: &str) -> Result<Option<Node>> {
        self.lookup_in(parent, name, &Bump::new())
    }

    /// [`lookup`](Self::lookup) with every temporary (NFC name, encrypted name, entry path)
    /// in `bump`: a miss allocates nothing on the heap. The mount passes its request arena.
    pub fn lookup_in(&self, parent: &DirId, name: &str, bump: &Bump) -> Result<Option<Node>> {
        let nfc = normalize_name_in(name, bump)?;
        let c9r = self.names.encrypt_name_in(parent, nfc, bump);
        let shortened = self.names.must_shorten(c9r);
        let mut entry = bumpalo::collections::String::new_in(bump);
        {
            let dir = self.content_dir_ref(parent);
            entry.push_str(&dir.to_string_lossy());
        }
        entry.push('/');
        entry.push_str(if shortened {
            NameCodec::shortened_name_in(c9r, bump)
        } else {
            c9r
        });
        let entry = Path::new(entry.into_bump_str());
        let md = match fs::symlink_metadata(entry) {
            Ok(md) => md,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(Error::io(entry, e)),
        };
        let node = self.classify(nfc.to_string(), entry.to_path_buf(), shortened, md.is_dir())?;
        if let NodeKind::Directory(id) = &node.kind {
            self.cache
                .children
                .insert((parent.clone(), node.name.clone()), id.clone());
        }
        Ok(Some(node))
    }

    /// Resolves a cleartext path (`/a/b`, `a/b`, `/` or empty for the root).
    pub fn resolve(&self, path: &str) -> Result<Node> {
        let mut components = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .peekable();
        let mut dir = self.root.clone();
        let mut node = self.root();
        let mut walked = String::new();
        while let Some(component) = components.next() {
            walked.push('/');
            walked.push_str(component);
            let last = components.peek().is_none();
            if !last {
                let key = (dir.clone(), component.to_string());
                if let Some(child) = self.cache.children.get(&key) {
                    dir = child.clone();
                    continue;
                }
            }
            node = self
                .lookup(&dir, component)?
                .ok_or_else(|| Error::NotFound(walked.clone()))?;
            if !last {
                dir = match &node.kind {
                    NodeKind::Directory(id) => id.clone(),
                    _ => return Err(Error::NotADirectory(walked)),
                };
            }
        }
        Ok(node)
    }

    /// Splits a path into its parent directory id and the final name.
    pub fn resolve_parent(&self, path: &str) -> Result<(DirId, String)> {
        let trimmed = path.trim_end_matches('/');
        let (parent, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        if name.is_empty() {
            return Err(Error::Invalid("the vault root has no parent".into()));
        }
        let parent_node = self.resolve(parent)?;
        match parent_node.kind {
            NodeKind::Directory(id) => Ok((id, normalize_name(name)?)),
            _ => Err(Error::NotADirectory(parent.to_string())),
        }
    }

    /// Lists a directory, each entry decrypted or the problem that prevented it. Skips
    /// `dirid.c9r`, hidden files and unknown files.
    pub fn list_checked(&self, dir: &DirId) -> Result<Vec<Result<Node>>> {
        let content_dir = self.content_dir(dir);
        let rd = match fs::read_dir(&content_dir) {
            Ok(rd) => rd,
            Err(e) if is_not_found(&e) => {
                return Err(Error::BrokenNode {
                    path: content_dir,
                    why: "content directory is missing".into(),
                })
            }
            Err(e) => return Err(Error::io(&content_dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.at(&content_dir)?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') || file_name == DIRID_FILE {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().at(&path)?.is_dir();
            let item = if file_name.ends_with(C9R) {
                match self.names.decrypt_name(dir, file_name) {
                    Some(name) => self.classify(name, path, false, is_dir),
                    None => Err(Error::BadName { path }),
                }
            } else if file_name.ends_with(C9S) {
                self.read_shortened(dir, path, is_dir)
            } else {
                continue;
            };
            out.push(item);
        }
        Ok(out)
    }

    fn read_shortened(&self, dir: &DirId, path: PathBuf, is_dir: bool) -> Result<Node> {
        if !is_dir {
            return Err(Error::BrokenNode {
                path,
                why: "a .c9s node must be a directory".into(),
            });
        }
        let name_file = path.join(NAME_FILE);
        let long = match read_limited(&name_file, 10 * 1024) {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if is_not_found(&source) => {
                return Err(Error::BrokenNode {
                    path,
                    why: "shortened node without name.c9s".into(),
                })
            }
            Err(e) => return Err(e),
        };
        let long = String::from_utf8(long).map_err(|_| Error::BadName {
            path: name_file.clone(),
        })?;
        match self.names.decrypt_name(dir, long.trim()) {
            Some(name) => self.classify(name, path, true, true),
            None => Err(Error::BadName { path: name_file }),
        }
    }

    /// Lists a directory, leaving out (and logging) entries that cannot be decrypted.
    pub fn list(&self, dir: &DirId) -> Result<Vec<Node>> {
        Ok(self
            .list_checked(dir)?
            .into_iter()
            .filter_map(|r| match r {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable directory entry");
                    None
                }
            })
            .collect())
    }

    /// Cleartext attributes of a node.
    pub fn stat(&self, node: &Node) -> Result<Attr> {
        let (path, kind) = match &node.kind {
            NodeKind::File => (node.payload_path(), FileType::File),
            NodeKind::Directory(id) => (self.content_dir(id), FileType::Directory),
            NodeKind::Symlink => (node.payload_path(), FileType::Symlink),
        };
        let md = fs::metadata(&path).at(&path)?;
        let size = match kind {
            FileType::Directory => md.len(),
            FileType::File => self.cleartext_size_of(&path, md.len())?,
            FileType::Symlink => self.readlink(node)?.len() as u64,
        };
        let nlink = match &node.kind {
            NodeKind::Directory(id) => 2 + self.subdir_count(id, &path),
            _ => md.nlink() as u32,
        };
        Ok(attr_from(kind, size, nlink, &md))
    }

    /// Subdirectories of `id`, counted at most once a second (changes made through this vault
    /// adjust the count; others show within a second).
    fn subdir_count(&self, id: &DirId, content_dir: &Path) -> u32 {
        if let Some(e) = self.cache.subdirs.get(id) {
            if e.1.elapsed() < std::time::Duration::from_secs(1) {
                return e.0;
            }
        }
        let n = self.count_subdirs(content_dir);
        self.cache
            .subdirs
            .insert(id.clone(), (n, std::time::Instant::now()));
        n
    }

    /// Number of child directories in a content directory (for a directory's link count).
    fn count_subdirs(&self, content_dir: &Path) -> u32 {
        let Ok(rd) = fs::read_dir(content_dir) else {
            return 0;
        };
        rd.flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter(|e| e.path().join(DIR_FILE).exists())
            .count() as u32
    }

    fn cleartext_size_of(&self, path: &Path, len: u64) -> Result<u64> {
        let combo = self.content.combo();
        combo.cleartext_size(len).ok_or_else(|| {
            let last =
                len.saturating_sub(combo.header_len() as u64) / combo.chunk_ciphertext_len() as u64;
            let part = if len < combo.header_len() as u64 {
                ContentPart::Header
            } else {
                ContentPart::Chunk(last)
            };
            Error::Content {
                path: path.to_path_buf(),
                source: CryptoError::Truncated(part),
            }
        })
    }

    /// Opens a regular file for reading (and writing if `writable`).
    pub fn open_file(&self, node: &Node, writable: bool) -> Result<FileHandle> {
        match node.kind {
            NodeKind::File => {}
            NodeKind::Directory(_) => return Err(Error::IsADirectory(node.name.clone())),
            NodeKind::Symlink => {
                return Err(Error::Invalid(format!("{}: is a symbolic link", node.name)))
            }
        }
        FileHandle::open(node.payload_path(), self.content.clone(), writable)
    }

    /// Creates an empty regular file `name` in `parent` with permission `mode`; fails if
    /// the name exists.
    pub fn create_file(&self, parent: &DirId, name: &str, mode: u32) -> Result<Node> {
        self.create_open(parent, name, mode, None)
            .map(|(node, _, _)| node)
    }

    /// Creates an empty regular file like [`Vault::create_file`] and returns it already open
    /// for reading and writing, with its attributes: one `open`, one header write and one
    /// `fstat` (plus a best-effort `fchown` when `owner` differs from what the new file got).
    pub fn create_open(
        &self,
        parent: &DirId,
        name: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(Node, FileHandle, Attr)> {
        let name = normalize_name(name)?;
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        if shortened {
            // A plain entry is refused by O_EXCL below; a shortened one is a directory.
            self.ensure_absent(&entry, &name)?;
            self.make_shortened_entry(&entry, &c9r)?;
        }
        let node = Node {
            name,
            kind: NodeKind::File,
            entry,
            shortened,
        };
        let path = node.payload_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists(node.name.clone()),
                _ => Error::io(&path, e),
            })?;
        let header = self.content.new_header();
        let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
        let hl = self.content.combo().header_len();
        self.content.encrypt_header(&header, &mut buf);
        file.write_all_at(&buf[..hl], 0).at(&path)?;
        let mut md = file.metadata().at(&path)?;
        if let Some((uid, gid)) = owner {
            // Best effort, as for any node: an unprivileged daemon cannot give files away.
            if (md.uid(), md.gid()) != (uid, gid)
                && std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).is_ok()
            {
                md = file.metadata().at(&path)?;
            }
        }
        let attr = attr_from(FileType::File, 0, md.nlink() as u32, &md);
        let handle = FileHandle {
            file,
            path,
            content: self.content.clone(),
            header: RwLock::new(Some(Arc::new(header))),
        };
        Ok((node, handle, attr))
    }

    fn ensure_absent(&self, entry: &Path, name: &str) -> Result<()> {
        match fs::symlink_metadata(entry) {
            Ok(_) => Err(Error::AlreadyExists(name.to_string())),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::io(entry, e)),
        }
    }

    fn make_shortened_entry(&self, entry: &Path, c9r: &str) -> Result<()> {
        fs::create_dir(entry).at(entry)?;
        let name_file = entry.join(NAME_FILE);
        fs::write(&name_file, c9r.as_bytes()).at(&name_file)
    }

    /// Creates directory `name` in `parent` with permission `mode`.
    pub fn mkdir(&self, parent: &DirId, name: &str, mode: u32) -> Result<Node> {
        let name = normalize_name(name)?;
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        self.ensure_absent(&entry, &name)?;
        let id: DirId = Arc::from(
            uuid::Builder::from_random_bytes(crate::random::bytes())
                .into_uuid()
                .to_string(),
        );
        let content_dir = self.create_content_dir(&id)?;
        fs::set_permissions(
            &content_dir,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )
        .at(&content_dir)?;
        if shortened {
            self.make_shortened_entry(&entry, &c9r)?;
        } else {
            fs::create_dir(&entry).map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists(name.clone()),
                _ => Error::io(&entry, e),
            })?;
        }
        let dir_file = entry.join(DIR_FILE);
        fs::write(&dir_file, id.as_bytes()).at(&dir_file)?;
        self.cache
            .children
            .insert((parent.clone(), name.clone()), id.clone());
        self.cache.subdirs_changed(parent, 1);
        Ok(Node {
            name,
            kind: NodeKind::Directory(id),
            entry,
            shortened,
        })
    }

    /// Creates symlink `name` in `parent` pointing to `target`.
    pub fn symlink(&self, parent: &DirId, name: &str, target: &str) -> Result<Node> {
        let name = normalize_name(name)?;
        if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains('\0') {
            return Err(Error::Invalid(format!(
                "symlink target must be 1 to {MAX_SYMLINK_TARGET} bytes without NUL"
            )));
        }
        let (entry, shortened, c9r) = self.entry_for(parent, &name);
        self.ensure_absent(&entry, &name)?;
        if shortened {
            self.make_shortened_entry(&entry, &c9r)?;
        } else {
            fs::create_dir(&entry).at(&entry)?;
        }
        let node = Node {
            name,
            kind: NodeKind::Symlink,
            entry,
            shortened,
        };
        let path = node.payload_path();
        fs::write(&path, self.content.encrypt_small(target.as_bytes())).at(&path)?;
        Ok(node)
    }

    /// The target of a symlink node.
    pub fn readlink(&self, node: &Node) -> Result<String> {
        if node.kind != NodeKind::Symlink {
            return Err(Error::NotASymlink(node.name.clone()));
        }
        let path = node.payload_path();
        let data = read_limited(
            &path,
            self.content
                .combo()
                .ciphertext_size(MAX_SYMLINK_TARGET as u64 * 4),
        )?;
        let clear = self
            .content
            .decrypt_small(&data, false)
            .map_err(|source| Error::Content {
                path: path.clone(),
                source,
            })?;
        String::from_utf8(clear).map_err(|_| Error::BrokenNode {
            path,
            why: "symlink target is not UTF-8".into(),
        })
    }

    /// Reads and verifies a directory's `dirid.c9r` backup; `Ok(None)` if there is none.
    pub fn read_dirid_backup(&self, dir: &DirId) -> Result<Option<String>> {
        let path = self.content_dir(dir).join(DIRID_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let clear = self
            .content
            .decrypt_small(&data, true)
            .map_err(|source| Error::Content {
                path: path.clone(),
                source,
            })?;
        String::from_utf8(clear)
            .map(Some)
            .map_err(|_| Error::BrokenNode {
                path,
                why: "dir id backup is not UTF-8".into(),
            })
    }

    fn remove_entry(&self, node: &Node) -> Result<()> {
        if node.kind == NodeKind::File && !node.shortened {
            fs::remove_file(&node.entry).at(&node.entry)
        } else {
            fs::remove_dir_all(&node.entry).at(&node.entry)
        }
    }

    /// Removes a file or symlink `name` from `parent`.
    pub fn unlink(&self, parent: &DirId, name: &str) -> Result<()> {
        let node = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if node.is_dir() {
            return Err(Error::IsADirectory(node.name));
        }
        self.remove_entry(&node)
    }

    /// Whether a directory has no entries (its `dirid.c9r` does not count).
    pub fn is_empty_dir(&self, dir: &DirId) -> Result<bool> {
        let content_dir = self.content_dir(dir);
        let mut rd = match fs::read_dir(&content_dir) {
            Ok(rd) => rd,
            Err(e) if is_not_found(&e) => return Ok(true),
            Err(e) => return Err(Error::io(&content_dir, e)),
        };
        Ok(!rd.any(|e| e.map(|e| e.file_name() != DIRID_FILE).unwrap_or(true)))
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: &DirId, name: &str) -> Result<()> {
        let node = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        let NodeKind::Directory(id) = &node.kind else {
            return Err(Error::NotADirectory(node.name));
        };
        if !self.is_empty_dir(id)? {
            return Err(Error::NotEmpty(node.name));
        }
        self.remove_dir_node(parent, &node, id)
    }

    fn remove_dir_node(&self, parent: &DirId, node: &Node, id: &DirId) -> Result<()> {
        // Unlink the entry first: a crash afterwards leaves an orphan content directory,
        // never a directory that lists entries it cannot show.
        self.remove_entry(node)?;
        self.cache.forget_child(parent, &node.name);
        self.cache.subdirs_changed(parent, -1);
        let content_dir = self.content_dir(id);
        match fs::remove_dir_all(&content_dir) {
            Err(e) if !is_not_found(&e) => Err(Error::io(&content_dir, e)),
            _ => Ok(()),
        }
    }

    /// Renames `src_name` in `src_parent` to `dst_name` in `dst_parent`. An existing target is
    /// replaced when `replace` is set (a file by a file, an empty directory by a directory),
    /// otherwise the rename fails with [`Error::AlreadyExists`]. A directory keeps its id.
    pub fn rename(
        &self,
        src_parent: &DirId,
        src_name: &str,
        dst_parent: &DirId,
        dst_name: &str,
        replace: bool,
    ) -> Result<()> {
        let src = self
            .lookup(src_parent, src_name)?
            .ok_or_else(|| Error::NotFound(src_name.to_string()))?;
        let dst_name = normalize_name(dst_name)?;
        if src_parent == dst_parent && src.name == dst_name {
            return Ok(());
        }
        if let Some(dst) = self.lookup(dst_parent, &dst_name)? {
            if !replace {
                return Err(Error::AlreadyExists(dst.name));
            }
            match (&src.kind, &dst.kind) {
                (NodeKind::Directory(_), NodeKind::Directory(dst_id)) => {
                    if !self.is_empty_dir(dst_id)? {
                        return Err(Error::NotEmpty(dst.name));
                    }
                    self.remove_dir_node(dst_parent, &dst, dst_id)?;
                }
                (NodeKind::Directory(_), _) => return Err(Error::NotADirectory(dst.name)),
                (_, NodeKind::Directory(_)) => return Err(Error::IsADirectory(dst.name)),
                _ => {
                    // A plain file over a plain file is replaced atomically by the rename below.
                    let atomic = src.kind == NodeKind::File
                        && dst.kind == NodeKind::File
                        && !src.shortened
                        && !dst.shortened;
                    if !atomic {
                        self.remove_entry(&dst)?;
                    }
                }
            }
        }
        let (dst_entry, dst_short, dst_c9r) = self.entry_for(dst_parent, &dst_name);
        match (src.shortened, dst_short) {
            (false, false) => fs::rename(&src.entry, &dst_entry).at(&dst_entry)?,
            (true, true) => {
                fs::rename(&src.entry, &dst_entry).at(&dst_entry)?;
                write_atomic(&dst_entry.join(NAME_FILE), dst_c9r.as_bytes(), 0o644)?;
            }
            (false, true) | (true, false) => {
                self.move_between_shapes(&src, &dst_entry, dst_short, &dst_c9r)?;
            }
        }
        self.cache.forget_child(src_parent, &src.name);
        if let NodeKind::Directory(id) = &src.kind {
            self.cache
                .children
                .insert((dst_parent.clone(), dst_name), id.clone());
            self.cache.subdirs_changed(src_parent, -1);
            self.cache.subdirs_changed(dst_parent, 1);
        }
        Ok(())
    }

    /// Swaps two existing nodes (RENAME_EXCHANGE). Supported when both names are stored the
    /// same way (both shortened or both not); it is three renames, not one atomic step.
    pub fn exchange(
        &self,
        a_parent: &DirId,
        a_name: &str,
        b_parent: &DirId,
        b_name: &str,
    ) -> Result<()> {
        let a = self
            .lookup(a_parent, a_name)?
            .ok_or_else(|| Error::NotFound(a_name.to_string()))?;
        let b = self
            .lookup(b_parent, b_name)?
            .ok_or_else(|| Error::NotFound(b_name.to_string()))?;
        if a.entry == b.entry {
            return Ok(());
        }
        if a.shortened != b.shortened {
            return Err(Error::Invalid(
                "exchanging a shortened and an unshortened name is not supported".into(),
            ));
        }
        let parent_dir = a.entry.parent().unwrap_or(Path::new("."));
        let tmp = parent_dir.join(format!(
            ".oxcrypt-exchange-{:016x}",
            u64::from_le_bytes(crate::random::bytes())
        ));
        fs::rename(&a.entry, &tmp).at(&tmp)?;
        fs::rename(&b.entry, &a.entry).at(&a.entry)?;
        fs::rename(&tmp, &b.entry).at(&b.entry)?;
        if a.shortened {
            // Each .c9s node keeps the full name of its place, not of its former node.
            let (_, _, a_c9r) = self.entry_for(a_parent, &a.name);
            let (_, _, b_c9r) = self.entry_for(b_parent, &b.name);
            write_atomic(&a.entry.join(NAME_FILE), a_c9r.as_bytes(), 0o644)?;
            write_atomic(&b.entry.join(NAME_FILE), b_c9r.as_bytes(), 0o644)?;
        }
        self.cache.forget_child(a_parent, &a.name);
        self.cache.forget_child(b_parent, &b.name);
        self.cache.subdirs.remove(a_parent);
        self.cache.subdirs.remove(b_parent);
        Ok(())
    }

    /// Moves a node whose name becomes (or stops being) shortened.
    fn move_between_shapes(
        &self,
        src: &Node,
        dst_entry: &Path,
        dst_short: bool,
        dst_c9r: &str,
    ) -> Result<()> {
        let payload_name = match (&src.kind, dst_short) {
            (NodeKind::File, true) => CONTENTS_FILE,
            (NodeKind::File, false) => "",
            (NodeKind::Directory(_), _) => DIR_FILE,
            (NodeKind::Symlink, _) => SYMLINK_FILE,
        };
        if dst_short {
            self.make_shortened_entry(dst_entry, dst_c9r)?;
        } else if !payload_name.is_empty() {
            fs::create_dir(dst_entry).at(dst_entry)?;
        }
        let dst_payload = if payload_name.is_empty() {
            dst_entry.to_path_buf()
        } else {
            dst_entry.join(payload_name)
        };
        fs::rename(src.payload_path(), &dst_payload).at(&dst_payload)?;
        if src.shortened || src.kind != NodeKind::File {
            fs::remove_dir_all(&src.entry).at(&src.entry)?;
        }
        if let Some(parent) = dst_entry.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Whether directory `ancestor` is `dir` or contains it (walks up through the cache of
    /// known parents by listing; used to refuse moving a directory into itself).
    pub fn path_is_within(path: &str, ancestor: &str) -> bool {
        let clean = |p: &str| -> Vec<String> {
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(String::from)
                .collect()
        };
        let (p, a) = (clean(path), clean(ancestor));
        p.len() >= a.len() && p[..a.len()] == a[..]
    }

    /// Visits `node` and everything below it depth-first, entries sorted by name. `path` is
    /// the cleartext path of `node` (`""` for the root); the visitor gets each path and node.
    pub fn walk(
        &self,
        path: &str,
        node: &Node,
        visit: &mut dyn FnMut(&str, &Node) -> Result<()>,
    ) -> Result<()> {
        visit(path, node)?;
        if let NodeKind::Directory(id) = &node.kind {
            let mut children = self.list(id)?;
            children.sort_by(|a, b| a.name.cmp(&b.name));
            for child in &children {
                let child_path = format!("{path}/{}", child.name);
                self.walk(&child_path, child, visit)?;
            }
        }
        Ok(())
    }

    /// Sets the permission bits of a node.
    pub fn set_perm(&self, node: &Node, perm: u32) -> Result<()> {
        let path = self.attr_path(node);
        fs::set_permissions(
            &path,
            std::os::unix::fs::PermissionsExt::from_mode(perm & 0o7777),
        )
        .at(&path)
    }

    /// Sets access and modification times of a node (`None` leaves one unchanged).
    pub fn set_times(
        &self,
        node: &Node,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Result<()> {
        let path = self.attr_path(node);
        let f = File::open(&path).at(&path)?;
        let mut times = fs::FileTimes::new();
        if let Some(a) = atime {
            times = times.set_accessed(a);
        }
        if let Some(m) = mtime {
            times = times.set_modified(m);
        }
        f.set_times(times).at(&path)
    }

    /// Changes owner and/or group of a node.
    pub fn chown(&self, node: &Node, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let path = self.attr_path(node);
        std::os::unix::fs::chown(&path, uid, gid).at(&path)
    }

    /// The ciphertext path whose metadata stands for the node's attributes.
    pub fn attr_path(&self, node: &Node) -> PathBuf {
        match &node.kind {
            NodeKind::Directory(id) => self.content_dir(id),
            _ => node.payload_path(),
        }
    }
}

/// An open regular file: reads and writes cleartext byte ranges chunk by chunk with blocking
/// `pread`/`pwrite`.
///
/// Reads share a lock, writes take it exclusively, so concurrent callers never see a chunk
/// half rewritten. Nothing is ever returned from a chunk that failed authentication.
pub struct FileHandle {
    file: File,
    path: PathBuf,
    content: Arc<ContentCryptor>,
    header: RwLock<Option<Arc<FileHeader>>>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileHandle {
    fn open(path: PathBuf, content: Arc<ContentCryptor>, writable: bool) -> Result<FileHandle> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .at(&path)?;
        let hl = content.combo().header_len();
        let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
        let len = file.metadata().at(&path)?.len();
        let header = if len == 0 {
            None
        } else {
            let n = read_full_at(&file, &mut buf[..hl], 0).at(&path)?;
            let h = content
                .decrypt_header(&buf[..n])
                .map_err(|source| Error::Content {
                    path: path.clone(),
                    source,
                })?;
            Some(Arc::new(h))
        };
        Ok(FileHandle {
            file,
            path,
            content,
            header: RwLock::new(header),
        })
    }

    /// The ciphertext path of this file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open ciphertext file (for I/O engines that do their own reads and writes).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The content cryptor.
    pub fn cryptor(&self) -> &Arc<ContentCryptor> {
        &self.content
    }

    /// The decrypted header, `None` while the ciphertext file is still 0 bytes long.
    pub fn header(&self) -> Option<Arc<FileHeader>> {
        self.header
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The header, writing a fresh one first if the ciphertext file is 0 bytes long.
    pub fn ensure_header(&self) -> Result<Arc<FileHeader>> {
        let mut guard = self.header.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = guard.as_ref() {
            return Ok(h.clone());
        }
        let header = Arc::new(self.content.new_header());
        let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
        self.content.encrypt_header(&header, &mut buf);
        let hl = self.content.combo().header_len();
        self.file.write_all_at(&buf[..hl], 0).at(&self.path)?;
        *guard = Some(header.clone());
        Ok(header)
    }

    /// Wraps a content failure with this file's path.
    pub fn content_err(&self, source: CryptoError) -> Error {
        Error::Content {
            path: self.path.clone(),
            source,
        }
    }

    /// Attributes of the open file from its descriptor (right even after it was unlinked:
    /// then `nlink` is 0).
    pub fn attr(&self) -> Result<Attr> {
        let md = self.file.metadata().at(&self.path)?;
        let size = self.size()?;
        Ok(attr_from(FileType::File, size, md.nlink() as u32, &md))
    }

    /// Current cleartext size.
    pub fn size(&self) -> Result<u64> {
        let len = self.file.metadata().at(&self.path)?.len();
        let combo = self.content.combo();
        combo.cleartext_size(len).ok_or_else(|| {
            let last =
                len.saturating_sub(combo.header_len() as u64) / combo.chunk_ciphertext_len() as u64;
            self.content_err(CryptoError::Truncated(ContentPart::Chunk(last)))
        })
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns the count (0 at end of file).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let guard = self.header.read().unwrap_or_else(|p| p.into_inner());
        let Some(header) = guard.as_ref() else {
            return Ok(0);
        };
        let size = self.size()?;
        let mut done = 0;
        let combo = self.content.combo();
        let mut ct = Vec::new();
        let mut scratch = vec![0u8; CHUNK_SIZE];
        // At most BATCH_CHUNKS chunks per pread, so memory stays bounded for any request.
        while done < buf.len() {
            let want = (buf.len() - done).min(BATCH_CHUNKS as usize * CHUNK_SIZE) as u64;
            let Some(plan) = ReadPlan::new(combo, offset + done as u64, want, size) else {
                break;
            };
            ct.resize(plan.ct_len, 0);
            let got = read_full_at(&self.file, &mut ct, plan.ct_offset).at(&self.path)?;
            if got < plan.ct_len {
                return Err(self.content_err(CryptoError::Truncated(ContentPart::Chunk(plan.last))));
            }
            plan.decrypt(
                &self.content,
                header,
                &ct,
                &mut buf[done..done + plan.len()],
                &mut scratch,
            )
            .map_err(|e| self.content_err(e))?;
            done += plan.len();
        }
        Ok(done)
    }

    /// Writes `data` at `offset`, growing the file (with zeros) as needed. Only the chunks the
    /// range touches are re-encrypted; partial chunks are read, patched and rewritten.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let header = self.ensure_header()?;
        let _guard = self.header.write().unwrap_or_else(|p| p.into_inner());
        self.write_locked(&header, offset, data.len() as u64, Some(data))
    }

    /// Sets the cleartext size: shrinking re-encrypts the new last chunk, growing appends
    /// zeros.
    pub fn set_len(&self, new_size: u64) -> Result<()> {
        let header = self.ensure_header()?;
        let _guard = self.header.write().unwrap_or_else(|p| p.into_inner());
        let old_size = self.size()?;
        if new_size > old_size {
            return self.write_locked(&header, old_size, new_size - old_size, None);
        }
        if new_size == old_size {
            return Ok(());
        }
        let combo = self.content.combo();
        let rem = (new_size % CHUNK_SIZE as u64) as usize;
        if rem != 0 {
            // Re-encrypt the new last chunk, shortened: a "write" of nothing over its kept part.
            let index = new_size / CHUNK_SIZE as u64;
            let old = self.read_chunk(&header, index, old_size)?;
            let mut ct = vec![0u8; combo.chunk_ciphertext_len()];
            let n = self
                .content
                .encrypt_chunk(&header, index, &old[..rem], &mut ct);
            self.file
                .write_all_at(&ct[..n], combo.chunk_offset(index))
                .at(&self.path)?;
        }
        self.file
            .set_len(combo.ciphertext_size(new_size))
            .at(&self.path)
    }

    /// Decrypts chunk `index` of a file of cleartext size `size`.
    fn read_chunk(&self, header: &FileHeader, index: u64, size: u64) -> Result<Vec<u8>> {
        let combo = self.content.combo();
        let start = index * CHUNK_SIZE as u64;
        let plan = ReadPlan::new(combo, start, CHUNK_SIZE as u64, size)
            .ok_or_else(|| self.content_err(CryptoError::Truncated(ContentPart::Chunk(index))))?;
        let mut ct = vec![0u8; plan.ct_len];
        let got = read_full_at(&self.file, &mut ct, plan.ct_offset).at(&self.path)?;
        if got < plan.ct_len {
            return Err(self.content_err(CryptoError::Truncated(ContentPart::Chunk(index))));
        }
        let mut out = vec![0u8; plan.len()];
        let mut scratch = vec![0u8; CHUNK_SIZE];
        plan.decrypt(&self.content, header, &ct, &mut out, &mut scratch)
            .map_err(|e| self.content_err(e))?;
        Ok(out)
    }

    fn write_locked(
        &self,
        header: &FileHeader,
        offset: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let combo = self.content.combo();
        let old_size = self.size()?;
        let Some(plan) = WritePlan::new(offset, len, old_size) else {
            return Ok(());
        };
        let mut edges = EdgeContents::default();
        for edge in plan.edges() {
            edges.push(edge.index, self.read_chunk(header, edge.index, old_size)?);
        }
        let old = |i: u64| edges.get(i);
        let mut clear = vec![0u8; CHUNK_SIZE];
        let mut out = vec![0u8; (BATCH_CHUNKS as usize) * combo.chunk_ciphertext_len()];
        let mut from = plan.first;
        while from <= plan.last {
            let to = (from + BATCH_CHUNKS - 1).min(plan.last);
            let n = plan.encrypt(
                &self.content,
                header,
                from,
                to,
                data,
                &old,
                &mut clear,
                &mut out,
            );
            self.file
                .write_all_at(&out[..n], combo.chunk_offset(from))
                .at(&self.path)?;
            from = to + 1;
        }
        Ok(())
    }

    /// Flushes file data and metadata to disk.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().at(&self.path)
    }
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

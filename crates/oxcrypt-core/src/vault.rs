//! The vault: open or create one, change its password, resolve cleartext paths, look names
//! up, list and stat directories, read symlinks, and open files. Changes to the tree are in
//! [`tree`](crate::tree); open files in [`file`](crate::file).
//!
//! Every method takes `&self` and is safe to call from many threads at once. Directory ids are
//! cached in a [`DirIdCache`] (DashMap); file content never passes through a whole-file buffer.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bumpalo::Bump;

use crate::config::{VaultConfig, CONFIG_FILE, MASTERKEY_FILE};
use crate::content::{CipherCombo, ContentCryptor};
use crate::error::{ContentPart, CryptoError, Error, IoContext, Result};
use crate::fault;
use crate::fsutil::write_atomic;
use crate::keys::MasterKeys;
use crate::masterkey_file::{MasterkeyFile, DEFAULT_SCRYPT_COST};
use crate::names::{normalize_name, normalize_name_in, NameCodec, C9R, C9S};
use crate::store::{self, Expect};

pub use crate::chunk_io::BATCH_CHUNKS;
pub use crate::dir_cache::DirIdCache;
pub use crate::file::{FileHandle, InPlace, SetLen, WriteAt, DIRECT_ALIGN};
use crate::node::attr_from;
pub use crate::node::{
    Attr, DirId, FileType, Node, NodeKind, CONTENTS_FILE, DIRID_FILE, DIR_FILE, MAX_SYMLINK_TARGET,
    NAME_FILE, SYMLINK_FILE,
};

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

/// An unlocked vault.
pub struct Vault {
    pub(crate) path: PathBuf,
    pub(crate) config: VaultConfig,
    pub(crate) keys: MasterKeys,
    pub(crate) names: NameCodec,
    pub(crate) content: Arc<ContentCryptor>,
    pub(crate) cache: DirIdCache,
    pub(crate) root: DirId,
    /// Leave the ciphertext tree as it is (no sync-conflict resolution when listing).
    read_only: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Longest `vault.cryptomator` or masterkey file read.
const CONFIG_LIMIT: u64 = 64 * 1024;
/// Longest `dirid.c9r` read (a header and one chunk of a 36-byte id, with room to spare).
const DIRID_LIMIT: u64 = 4096;

pub(crate) fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

impl Vault {
    /// Unlocks the vault at `path` with `password`.
    pub fn open(path: &Path, password: &str) -> Result<Vault> {
        // The store refuses a symlink anywhere in a path, so the vault's own location must
        // be free of them: resolve them here, once.
        let canonical = fs::canonicalize(path);
        let path = canonical.as_deref().unwrap_or(path);
        let config_path = path.join(CONFIG_FILE);
        let token = match store::read_bounded(&config_path, CONFIG_LIMIT) {
            Ok(t) => t,
            Err(Error::Io { source, .. }) if is_not_found(&source) => {
                return Err(Self::missing_config(path, source))
            }
            Err(e) => return Err(e),
        };
        let token = String::from_utf8(token)
            .map_err(|_| Error::malformed(&config_path, "not ASCII text"))?;
        let mk_name = VaultConfig::peek_masterkey_file(&config_path, &token)?;
        let mk_path = path.join(&mk_name);
        let keys = MasterkeyFile::load(&mk_path)?.unlock(&mk_path, password)?;
        let config = VaultConfig::verify(&config_path, &token, &keys)?;
        let vault = Self::with_keys(path, config, keys);
        let root_dir = vault.content_dir(&vault.root);
        if store::metadata(&root_dir, Expect::Dir).is_err() {
            return Err(Error::BrokenNode {
                path: root_dir,
                why: "the root content directory is missing".into(),
            });
        }
        tracing::debug!(vault = %path.display(), combo = vault.config.cipher_combo.name(), "vault unlocked");
        Ok(vault)
    }

    /// Checks, without a password, that `path` holds a vault (its `vault.cryptomator`), so a
    /// command can say "no vault here" before it asks for one.
    pub fn check_exists(path: &Path) -> Result<()> {
        let canonical = fs::canonicalize(path);
        let path = canonical.as_deref().unwrap_or(path);
        let config_path = path.join(CONFIG_FILE);
        match store::metadata(&config_path, Expect::File) {
            Ok(_) => Ok(()),
            Err(Error::Io { source, .. }) if is_not_found(&source) => {
                Err(Self::missing_config(path, source))
            }
            Err(e) => Err(e),
        }
    }

    /// Never change the ciphertext tree on its own accord (a read-only mount, a check):
    /// sync-conflict copies stay hidden instead of being renamed when listed. Returns the
    /// previous setting.
    pub fn set_read_only(&self, read_only: bool) -> bool {
        self.read_only
            .swap(read_only, std::sync::atomic::Ordering::Relaxed)
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
            read_only: std::sync::atomic::AtomicBool::new(false),
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
        let canonical = fs::canonicalize(path).at(path)?;
        let path = canonical.as_path();
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
        let old = store::read_bounded(&mk_path, CONFIG_LIMIT)?;
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

    /// `<vault>/d/XX/YYYY…` for a directory id (cached).
    pub fn content_dir(&self, dir_id: &DirId) -> PathBuf {
        if let Some(p) = self.cache.content_dir(dir_id) {
            return p.clone();
        }
        let hash = self.names.hash_dir_id(dir_id);
        let p = self.path.join("d").join(&hash[..2]).join(&hash[2..]);
        self.cache.put_content_dir(dir_id.clone(), p.clone());
        p
    }

    pub(crate) fn create_content_dir(&self, dir_id: &DirId) -> Result<PathBuf> {
        let dir = self.content_dir(dir_id);
        fault::create_dir_all(&dir).at(&dir)?;
        let backup = self.dirid_backup_bytes(dir_id);
        let backup_path = dir.join(DIRID_FILE);
        if let Err(e) = fault::write(&backup_path, &backup) {
            // No orphan content directory from a failed mkdir (a full disk, say).
            let _ = fault::remove_dir_all(&dir);
            return Err(Error::io(&backup_path, e));
        }
        Ok(dir)
    }

    /// The encrypted `dirid.c9r` of `dir_id`. Like cryptofs ≥ 2.4.2 / cryptolib ≥ 2.2.1, the
    /// backup always ends with a chunk, an empty one for the root.
    fn dirid_backup_bytes(&self, dir_id: &DirId) -> Vec<u8> {
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
        backup
    }

    /// Writes the missing `dirid.c9r` backup of `dir_id` (atomically: a temporary name, fsync,
    /// rename); `check --repair` uses it.
    pub fn write_dirid_backup(&self, dir_id: &DirId) -> Result<PathBuf> {
        let path = self.content_dir(dir_id).join(DIRID_FILE);
        crate::fsutil::write_atomic(&path, &self.dirid_backup_bytes(dir_id), 0o644)?;
        Ok(path)
    }

    /// The entry path a name would have in `parent`, and whether it is shortened.
    pub(crate) fn entry_for(&self, parent: &DirId, name: &str) -> (PathBuf, bool, String) {
        let c9r = self.names.encrypt_name(parent, name);
        let dir = self.content_dir(parent);
        if self.names.must_shorten(&c9r) {
            (dir.join(NameCodec::shortened_name(&c9r)), true, c9r)
        } else {
            (dir.join(&c9r), false, c9r)
        }
    }

    pub(crate) fn classify(
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
        match store::read_bounded(&dir_file, 1000) {
            Ok(id) => {
                let id = parse_dir_file(&id).ok_or_else(|| Error::BrokenNode {
                    path: dir_file.clone(),
                    why: "dir.c9r does not hold a directory id".into(),
                })?;
                return Ok(node(NodeKind::Directory(id)));
            }
            Err(Error::Io { source, .. }) if is_not_found(&source) => {}
            Err(e) => return Err(e),
        }
        if store::is_regular(&entry.join(SYMLINK_FILE)) {
            return Ok(node(NodeKind::Symlink));
        }
        if shortened && store::is_regular(&entry.join(CONTENTS_FILE)) {
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
        Ok(self.lookup_md_in(parent, name, bump)?.map(|(node, _)| node))
    }

    /// [`lookup_in`](Self::lookup_in) with the node's attributes. A plain file's come from
    /// the one check of its entry, so a lookup costs a single checked `stat` of the tree.
    pub fn lookup_attr_in(
        &self,
        parent: &DirId,
        name: &str,
        bump: &Bump,
    ) -> Result<Option<(Node, Attr)>> {
        let Some((node, md)) = self.lookup_md_in(parent, name, bump)? else {
            return Ok(None);
        };
        // A plain file's entry is its payload; a shortened one's payload is inside it.
        let attr = if matches!(node.kind, NodeKind::File) && !node.shortened {
            store::check_file(&node.entry, &md)?;
            let size = self.cleartext_size_of(&node.entry, md.len())?;
            attr_from(FileType::File, size, md.nlink() as u32, &md)
        } else {
            self.stat(&node)?
        };
        Ok(Some((node, attr)))
    }

    /// The NFC form of `name`, the path of its entry in `parent`'s content directory and
    /// whether the name is shortened (`.c9s`), all in `bump`.
    pub(crate) fn entry_path_in<'b>(
        &self,
        parent: &DirId,
        name: &'b str,
        bump: &'b Bump,
    ) -> Result<(&'b str, &'b Path, bool)> {
        let nfc = normalize_name_in(name, bump)?;
        let c9r = self.names.encrypt_name_in(parent, nfc, bump);
        let shortened = self.names.must_shorten(c9r);
        let mut entry = bumpalo::collections::String::new_in(bump);
        match self.cache.content_dir(parent) {
            Some(dir) => entry.push_str(&dir.to_string_lossy()),
            None => entry.push_str(&self.content_dir(parent).to_string_lossy()),
        }
        entry.push('/');
        entry.push_str(if shortened {
            NameCodec::shortened_name_in(c9r, bump)
        } else {
            c9r
        });
        Ok((nfc, Path::new(entry.into_bump_str()), shortened))
    }

    /// The node `name` in `parent` and the metadata of its entry (no symlink followed in
    /// any component).
    fn lookup_md_in(
        &self,
        parent: &DirId,
        name: &str,
        bump: &Bump,
    ) -> Result<Option<(Node, std::fs::Metadata)>> {
        let (nfc, entry, shortened) = self.entry_path_in(parent, name, bump)?;
        let md = match store::entry_metadata(entry) {
            Ok(md) => md,
            Err(Error::Io { source, .. }) if is_not_found(&source) => return Ok(None),
            Err(e) => return Err(e),
        };
        let node = self.classify(nfc.to_string(), entry.to_path_buf(), shortened, md.is_dir())?;
        if let NodeKind::Directory(id) = &node.kind {
            self.cache
                .put_child(parent.clone(), node.name.clone(), id.clone());
        }
        Ok(Some((node, md)))
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
                if let Some(child) = self.cache.child(&dir, component) {
                    dir = child;
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
        // First the names (one getdents stream), then the decryption, which is the cost of a
        // large directory: spread over the cores when there are many.
        let mut raw: Vec<(String, bool)> = Vec::new();
        for entry in rd {
            let entry = entry.at(&content_dir)?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue;
            };
            if file_name.starts_with('.')
                || file_name == DIRID_FILE
                || !(file_name.ends_with(C9R) || file_name.ends_with(C9S))
            {
                continue;
            }
            let is_dir = entry.file_type().at(&entry.path())?.is_dir();
            raw.push((file_name, is_dir));
        }
        let one = |(file_name, is_dir): &(String, bool)| -> Option<Result<Node>> {
            let path = content_dir.join(file_name);
            Some(if file_name.ends_with(C9R) {
                match self.names.decrypt_name(dir, file_name) {
                    Some(name) => self.classify(name, path, false, *is_dir),
                    None => return self.resolve_conflict(dir, &content_dir, file_name, *is_dir),
                }
            } else {
                self.read_shortened(dir, path, *is_dir)
            })
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if raw.len() < PARALLEL_LISTING_MIN || threads < 2 {
            return Ok(raw.iter().filter_map(one).collect());
        }
        let per = raw.len().div_ceil(threads);
        Ok(std::thread::scope(|s| {
            let parts: Vec<_> = raw
                .chunks(per)
                .map(|part| s.spawn(move || part.iter().filter_map(one).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        }))
    }

    /// The cleartext name of the entry `file_name` of `dir`'s content directory: decrypted
    /// from a `.c9r` name, read from inside a `.c9s` entry. `None` if it does not decrypt or
    /// a `.c9s` entry is gone (for reporting changes made behind the mount's back).
    pub fn entry_name(&self, dir: &DirId, file_name: &str) -> Option<String> {
        if file_name.ends_with(C9R) {
            return self.names.decrypt_name(dir, file_name);
        }
        if !file_name.ends_with(C9S) {
            return None;
        }
        let path = self.content_dir(dir).join(file_name);
        self.read_shortened(dir, path, true).ok().map(|n| n.name)
    }

    /// A `.c9r` entry whose name does not decrypt: a sync client's conflict copy is resolved
    /// (see `conflicts.rs`) and listed under its new name, or dropped if it was a duplicate;
    /// anything else is an undecryptable name.
    fn resolve_conflict(
        &self,
        dir: &DirId,
        content_dir: &Path,
        file_name: &str,
        is_dir: bool,
    ) -> Option<Result<Node>> {
        let path = content_dir.join(file_name);
        let Some((canonical, clear)) = crate::conflicts::extract(&self.names, dir, file_name)
        else {
            return Some(Err(Error::BadName { path }));
        };
        if self.read_only.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(Err(Error::ConflictCopy { path }));
        }
        let max_clear =
            (self.config.shortening_threshold.saturating_sub(4) / 4 * 3).saturating_sub(16);
        match crate::conflicts::resolve(
            &self.names,
            dir,
            content_dir,
            &path,
            canonical,
            &clear,
            max_clear,
        ) {
            Ok(crate::conflicts::Resolved::Renamed(new_path, name)) => {
                tracing::info!(from = %path.display(), to = %new_path.display(), "sync conflict resolved");
                Some(self.classify(name, new_path, false, is_dir))
            }
            Ok(crate::conflicts::Resolved::Removed) => {
                tracing::info!(entry = %path.display(), "duplicate sync-conflict copy removed");
                None
            }
            Err(e) => Some(Err(Error::io(&path, e))),
        }
    }

    fn read_shortened(&self, dir: &DirId, path: PathBuf, is_dir: bool) -> Result<Node> {
        if !is_dir {
            return Err(Error::BrokenNode {
                path,
                why: "a .c9s node must be a directory".into(),
            });
        }
        let name_file = path.join(NAME_FILE);
        let long = match store::read_bounded(&name_file, 10 * 1024) {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if is_not_found(&source) => {
                return Err(Error::BrokenNode {
                    path,
                    why: "shortened node without name.c9s".into(),
                })
            }
            Err(e) => return Err(e),
        };
        let long = parse_name_file(&long).ok_or_else(|| Error::BadName {
            path: name_file.clone(),
        })?;
        match self.names.decrypt_name(dir, long) {
            Some(name) => self.classify(name, path, true, true),
            None => Err(Error::BadName { path: name_file }),
        }
    }

    /// Lists a directory, leaving out entries that cannot be decrypted: one warning per
    /// listing says how many were left out and why the first one was.
    pub fn list(&self, dir: &DirId) -> Result<Vec<Node>> {
        let mut skipped = 0usize;
        let mut first = None;
        let nodes = self
            .list_checked(dir)?
            .into_iter()
            .filter_map(|r| match r {
                Ok(n) => Some(n),
                Err(e) => {
                    skipped += 1;
                    first.get_or_insert(e);
                    None
                }
            })
            .collect();
        if let Some(e) = first {
            tracing::warn!(
                skipped,
                first = %e,
                "left unreadable entries out of a directory listing"
            );
        }
        Ok(nodes)
    }

    /// Cleartext attributes of a node.
    pub fn stat(&self, node: &Node) -> Result<Attr> {
        let (path, kind) = match &node.kind {
            NodeKind::File => (node.payload_path(), FileType::File),
            NodeKind::Directory(id) => (self.content_dir(id), FileType::Directory),
            NodeKind::Symlink => (node.payload_path(), FileType::Symlink),
        };
        let expect = if kind == FileType::Directory {
            Expect::Dir
        } else {
            Expect::File
        };
        let md = store::metadata(&path, expect)?;
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
        if let Some(e) = self.cache.subdirs(id) {
            if e.1.elapsed() < std::time::Duration::from_secs(1) {
                return e.0;
            }
        }
        let n = self.count_subdirs(content_dir);
        self.cache.put_subdirs(id.clone(), n);
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

    pub(crate) fn cleartext_size_of(&self, path: &Path, len: u64) -> Result<u64> {
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
    /// The target of a symlink node.
    pub fn readlink(&self, node: &Node) -> Result<String> {
        if node.kind != NodeKind::Symlink {
            return Err(Error::NotASymlink(node.name.clone()));
        }
        let path = node.payload_path();
        let data = store::read_bounded(
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
        self.read_dirid_in(&self.content_dir(dir))
    }

    /// The directory id an (orphan) content directory's `dirid.c9r` names, if that id does
    /// hash to this very content directory; `Ok(None)` without a usable backup.
    pub fn dirid_of_content_dir(&self, content_dir: &Path) -> Result<Option<DirId>> {
        let Some(id) = self.read_dirid_in(content_dir)? else {
            return Ok(None);
        };
        let id: DirId = Arc::from(id);
        Ok((self.content_dir(&id) == content_dir).then_some(id))
    }

    fn read_dirid_in(&self, content_dir: &Path) -> Result<Option<String>> {
        let path = content_dir.join(DIRID_FILE);
        let data = match store::read_bounded(&path, DIRID_LIMIT) {
            Ok(d) => d,
            Err(Error::Io { source, .. }) if is_not_found(&source) => return Ok(None),
            Err(e) => return Err(e),
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

    /// Whether the cleartext `path` is `ancestor` or lies below it (used to refuse moving a
    /// directory into itself).
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
        self.walk_in(path, node, visit, &mut Ancestors::default())
    }

    fn walk_in(
        &self,
        path: &str,
        node: &Node,
        visit: &mut dyn FnMut(&str, &Node) -> Result<()>,
        ancestors: &mut Ancestors,
    ) -> Result<()> {
        visit(path, node)?;
        if let NodeKind::Directory(id) = &node.kind {
            ancestors.enter(self, id)?;
            let mut children = self.list(id)?;
            children.sort_by(|a, b| a.name.cmp(&b.name));
            for child in &children {
                let child_path = format!("{path}/{}", child.name);
                self.walk_in(&child_path, child, visit, ancestors)?;
            }
            ancestors.leave();
        }
        Ok(())
    }

    /// The ciphertext path whose metadata stands for the node's attributes.
    pub fn attr_path(&self, node: &Node) -> PathBuf {
        match &node.kind {
            NodeKind::Directory(id) => self.content_dir(id),
            _ => node.payload_path(),
        }
    }
}

/// Entries from which a listing decrypts its names on every core (below, one thread is
/// faster than starting others).
const PARALLEL_LISTING_MIN: usize = 512;

/// Parses the content of a `dir.c9r`: a directory id, non-empty ASCII (ids are UUIDs, but
/// any ASCII is accepted as Cryptomator does). `None`: not a directory id.
pub fn parse_dir_file(data: &[u8]) -> Option<DirId> {
    std::str::from_utf8(data)
        .ok()
        .filter(|id| !id.is_empty() && id.is_ascii())
        .map(Arc::from)
}

/// Parses the content of a `name.c9s`: the full encrypted name, UTF-8, surrounding white
/// space ignored. `None`: not text.
pub fn parse_name_file(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok().map(str::trim)
}

/// The directories a depth-first walk is inside. A `dir.c9r` pointing at an ancestor (a
/// broken or hostile tree) would make a walk endless; entering a directory the walk is already
/// inside, or going deeper than [`Ancestors::MAX_DEPTH`], is refused as a broken node.
#[derive(Debug, Default)]
pub struct Ancestors(Vec<DirId>);

impl Ancestors {
    /// Deepest directory nesting a walk follows.
    pub const MAX_DEPTH: usize = 4096;

    /// Enters directory `id` (call [`leave`](Self::leave) when done with it).
    pub fn enter(&mut self, vault: &Vault, id: &DirId) -> Result<()> {
        if self.0.contains(id) {
            return Err(Error::BrokenNode {
                path: vault.content_dir(id),
                why: "directory cycle: a dir.c9r points at a directory that contains it".into(),
            });
        }
        if self.0.len() >= Self::MAX_DEPTH {
            return Err(Error::BrokenNode {
                path: vault.content_dir(id),
                why: format!("nested deeper than {} directories", Self::MAX_DEPTH),
            });
        }
        self.0.push(id.clone());
        Ok(())
    }

    /// Leaves the directory entered last.
    pub fn leave(&mut self) {
        self.0.pop();
    }
}

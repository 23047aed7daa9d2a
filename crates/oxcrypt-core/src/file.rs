//! An open regular file of the vault: its ciphertext descriptor, its header, and the one lock
//! that every reader and writer of the file takes, whichever engine does the I/O.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::chunk_io::{read_full_at, with_thread_pread, ChunkFile, CiphertextIo};
use crate::chunks::ReadPlan;
use crate::content::{ContentCryptor, FileHeader, CHUNK_SIZE, MAX_HEADER_LEN};
use crate::error::{ContentPart, CryptoError, Error, IoContext, Result};
use crate::node::{attr_from, Attr, FileType};

/// Alignment of the buffer, offsets and lengths of an `O_DIRECT` read (the largest logical
/// block size in use).
pub const DIRECT_ALIGN: usize = 4096;

/// Where [`FileHandle::read_ahead_in_place`] left the cleartext in its buffer: `len` bytes,
/// in chunks of [`CHUNK_SIZE`] (the last may be shorter); chunk `i` starts at
/// `base + i * stride + body_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InPlace {
    /// Where the first chunk's ciphertext starts.
    pub base: usize,
    /// Ciphertext bytes per chunk.
    pub stride: usize,
    /// Where a chunk's cleartext starts within its ciphertext (after the nonce).
    pub body_at: usize,
    /// Cleartext bytes in all.
    pub len: usize,
}

impl InPlace {
    /// The buffer [`FileHandle::read_ahead_in_place`] needs for `chunks` chunks: their largest
    /// ciphertext, plus the slack of an `O_DIRECT` read of whole blocks.
    pub const fn buffer_len(chunks: usize) -> usize {
        chunks * crate::content::MAX_CHUNK_CIPHERTEXT + 2 * DIRECT_ALIGN
    }

    /// Copies cleartext bytes `[at, at + out.len())` (relative to the first chunk) out of
    /// `buf`; `out` must not reach past `len`.
    pub fn copy_out(&self, buf: &[u8], at: usize, out: &mut [u8]) {
        assert!(at + out.len() <= self.len, "copy past the decrypted bytes");
        let mut done = 0;
        while done < out.len() {
            let pos = at + done;
            let (chunk, within) = (pos / CHUNK_SIZE, pos % CHUNK_SIZE);
            let take = (CHUNK_SIZE - within).min(out.len() - done);
            let from = self.base + chunk * self.stride + self.body_at + within;
            out[done..done + take].copy_from_slice(&buf[from..from + take]);
            done += take;
        }
    }
}

/// Where a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAt {
    /// At this cleartext offset.
    Offset(u64),
    /// At the end of the file as it is when the write takes the lock (O_APPEND).
    Append,
}

/// What a size change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetLen {
    /// Make the file exactly this long (truncate(2)).
    Exactly(u64),
    /// Make the file at least this long, never shorter (fallocate(2) mode 0): the current size
    /// is read under the lock, so a writer that grew the file meanwhile is not cut off.
    GrowTo(u64),
}

/// An open regular file.
///
/// **The lock.** `header` is the file's only lock. It protects the header slot *and* the
/// ciphertext's bytes and length:
/// - reads ([`read_with`](Self::read_with), [`size`](Self::size)) hold it shared
///   ([`attr`](Self::attr) does not: it may see the size before a change in progress);
/// - changes ([`write_with`](Self::write_with), [`set_len_with`](Self::set_len_with),
///   [`sync`](Self::sync)) hold it exclusively, so no reader sees a chunk half rewritten and a
///   change plans with the size it then writes against.
///
/// Every engine (blocking, the FUSE threads' rings, the workers) goes through these methods;
/// none touches the descriptor around them.
pub struct FileHandle {
    file: File,
    path: PathBuf,
    content: Arc<ContentCryptor>,
    /// The decrypted header, `None` while the ciphertext file is 0 bytes long. See the lock
    /// rules above.
    header: RwLock<Option<Arc<FileHeader>>>,
    /// A read-only `O_DIRECT` descriptor of the same file for reading ahead of a sequential
    /// reader, opened on first use (`None` inside where it cannot be had).
    direct: OnceLock<Option<File>>,
    /// Counts the times the lock was taken exclusively, bumped as soon as it is taken (before
    /// anything changes): bytes read under the shared lock at generation `g` are still the
    /// file's bytes while [`generation`](Self::generation) returns `g`.
    generation: AtomicU64,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileHandle {
    /// Opens the ciphertext file at `path` and reads its header (none if it is 0 bytes long).
    pub(crate) fn open(
        path: PathBuf,
        content: Arc<ContentCryptor>,
        writable: bool,
    ) -> Result<FileHandle> {
        let file = crate::store::open_file(&path, writable)?;
        let hl = content.combo().header_len();
        let mut buf = [0u8; MAX_HEADER_LEN];
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
            direct: OnceLock::new(),
            generation: AtomicU64::new(0),
        })
    }

    /// A handle over a file just created with its `header` already written.
    pub(crate) fn created(
        file: File,
        path: PathBuf,
        content: Arc<ContentCryptor>,
        header: FileHeader,
    ) -> FileHandle {
        FileHandle {
            file,
            path,
            content,
            header: RwLock::new(Some(Arc::new(header))),
            direct: OnceLock::new(),
            generation: AtomicU64::new(0),
        }
    }

    fn shared(&self) -> RwLockReadGuard<'_, Option<Arc<FileHeader>>> {
        self.header.read().unwrap_or_else(|p| p.into_inner())
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, Option<Arc<FileHeader>>> {
        let guard = self.header.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        guard
    }

    /// How many times the file's lock was taken to change it: while this returns what
    /// [`read_ahead_in_place`](Self::read_ahead_in_place) returned, the bytes it read are
    /// still the file's (within this handle; a change behind the mount is not counted).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The ciphertext path of this file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content cryptor.
    pub fn cryptor(&self) -> &Arc<ContentCryptor> {
        &self.content
    }

    /// Wraps a content failure with this file's path.
    pub fn content_err(&self, source: CryptoError) -> Error {
        Error::Content {
            path: self.path.clone(),
            source,
        }
    }

    /// Attributes of the open file from its descriptor (right even after it was unlinked:
    /// then `nlink` is 0). Does not wait for a change in progress (a getattr must not hold a
    /// FUSE thread behind a long write): the size may be the one before it.
    pub fn attr(&self) -> Result<Attr> {
        let md = self.file.metadata().at(&self.path)?;
        let size = self.size_of(md.len())?;
        Ok(attr_from(FileType::File, size, md.nlink() as u32, &md))
    }

    /// The ciphertext's (modification time, length) from the descriptor: what a change left
    /// behind, for telling our changes from someone else's.
    pub fn ciphertext_stamp(&self) -> Option<(std::time::SystemTime, u64)> {
        let md = self.file.metadata().ok()?;
        Some((md.modified().ok()?, md.len()))
    }

    /// Current cleartext size. Waits for a change in progress.
    pub fn size(&self) -> Result<u64> {
        let _shared = self.shared();
        self.size_unlocked()
    }

    fn size_unlocked(&self) -> Result<u64> {
        let len = self.file.metadata().at(&self.path)?.len();
        self.size_of(len)
    }

    fn size_of(&self, len: u64) -> Result<u64> {
        let combo = self.content.combo();
        combo.cleartext_size(len).ok_or_else(|| {
            let last =
                len.saturating_sub(combo.header_len() as u64) / combo.chunk_ciphertext_len() as u64;
            self.content_err(CryptoError::Truncated(ContentPart::Chunk(last)))
        })
    }

    fn chunk_file<'a>(&'a self, header: &'a FileHeader) -> ChunkFile<'a> {
        ChunkFile {
            file: &self.file,
            path: &self.path,
            cryptor: &self.content,
            header,
        }
    }

    /// The header, writing a fresh one first if the ciphertext file is 0 bytes long. Called
    /// with the lock held exclusively.
    fn ensure_header(&self, slot: &mut Option<Arc<FileHeader>>) -> Result<Arc<FileHeader>> {
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let header = Arc::new(self.content.new_header());
        let mut buf = [0u8; MAX_HEADER_LEN];
        self.content.encrypt_header(&header, &mut buf);
        let hl = self.content.combo().header_len();
        crate::fault::write_all_at(&self.file, &buf[..hl], 0).at(&self.path)?;
        *slot = Some(header.clone());
        Ok(header)
    }

    /// Reads up to `out.len()` cleartext bytes at `offset` straight into `out` through `io`;
    /// returns the count (0 at end of file). Holds the lock shared.
    pub fn read_with(
        &self,
        io: &mut dyn CiphertextIo,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize> {
        let guard = self.shared();
        let Some(header) = guard.as_ref() else {
            return Ok(0);
        };
        let size = self.size_unlocked()?;
        self.chunk_file(header).read(io, size, offset, out)
    }

    /// Reads the ciphertext of up to `chunks` chunks from chunk `first` into `buf` and
    /// decrypts each where it lies (for decrypting ahead of a sequential reader: the buffer is
    /// served from as it is, with no copy between reading and decrypting). Returns where the
    /// cleartext is in `buf` and the [`generation`](Self::generation) it belongs to, read
    /// under the same shared lock. `buf` must hold [`InPlace::buffer_len`]`(chunks)` bytes and,
    /// for `direct`, start at a [`DIRECT_ALIGN`] boundary.
    ///
    /// With `direct`, the ciphertext is read through an `O_DIRECT` descriptor in whole aligned
    /// blocks where one can be had (bytes read ahead then need no second copy in the page
    /// cache). The kernel writes dirty pages of the range back before such a read, and no
    /// change runs under the shared lock, so it reads what a buffered read would.
    pub fn read_ahead_in_place(
        &self,
        first: u64,
        chunks: usize,
        buf: &mut [u8],
        direct: bool,
    ) -> Result<(InPlace, u64)> {
        let guard = self.shared();
        let generation = self.generation();
        let combo = self.content.combo();
        let stride = combo.chunk_ciphertext_len();
        let mut placed = InPlace {
            base: 0,
            stride,
            body_at: combo.nonce_len(),
            len: 0,
        };
        let Some(header) = guard.as_ref() else {
            return Ok((placed, generation));
        };
        let size = self.size_unlocked()?;
        let want = (chunks * CHUNK_SIZE) as u64;
        let Some(plan) = ReadPlan::new(combo, first * CHUNK_SIZE as u64, want, size) else {
            return Ok((placed, generation));
        };
        let (len, ct_at, ct_len) = (plan.len(), plan.ct_offset, plan.ct_len);
        let direct_file = if direct {
            self.direct
                .get_or_init(|| crate::store::reopen_direct(&self.file))
                .as_ref()
        } else {
            None
        };
        let (file, skip, span) = match direct_file {
            Some(d) => {
                let skip = (ct_at % DIRECT_ALIGN as u64) as usize;
                (d, skip, (skip + ct_len).next_multiple_of(DIRECT_ALIGN))
            }
            None => (&self.file, 0, ct_len),
        };
        assert!(span <= buf.len(), "read-ahead buffer too small");
        let got = read_full_at(file, &mut buf[..span], ct_at - skip as u64).at(&self.path)?;
        if got < skip + ct_len {
            let last = first + (got.saturating_sub(skip) / stride) as u64;
            return Err(self.content_err(CryptoError::Truncated(ContentPart::Chunk(last))));
        }
        for (i, chunk) in buf[skip..skip + ct_len].chunks_mut(stride).enumerate() {
            if let Err(e) = self
                .content
                .decrypt_chunk_in_place(header, first + i as u64, chunk)
            {
                return Err(self.content_err(e));
            }
        }
        placed.base = skip;
        placed.len = len;
        Ok((placed, generation))
    }

    /// Writes `data` at `at` through `io`, growing the file (with zeros) as needed; returns the
    /// cleartext offset it was written at. Holds the lock exclusively.
    ///
    /// A write at a chunk boundary that replaces whole chunks (a sequential stream, the
    /// kernel's writeback) is encrypted before the lock is taken (see [`ChunkFile::seal`]);
    /// only writing it out holds the lock.
    pub fn write_with(&self, io: &mut dyn CiphertextIo, at: WriteAt, data: &[u8]) -> Result<u64> {
        if let WriteAt::Offset(offset) = at {
            if let Some(r) = self.write_sealed_with(io, offset, data) {
                return r;
            }
        }
        let mut guard = self.exclusive();
        let header = self.ensure_header(&mut guard)?;
        let old_size = self.size_unlocked()?;
        let offset = match at {
            WriteAt::Offset(o) => o,
            WriteAt::Append => old_size,
        };
        self.chunk_file(&header)
            .write(io, old_size, offset, data.len() as u64, Some(data))?;
        Ok(offset)
    }

    /// The sealed path of [`write_with`](Self::write_with); `None` when it does not apply
    /// (no header yet, an unaligned or partial-chunk write, or the header replaced meanwhile)
    /// and the usual path must run.
    fn write_sealed_with(
        &self,
        io: &mut dyn CiphertextIo,
        offset: u64,
        data: &[u8],
    ) -> Option<Result<u64>> {
        let header = self.shared().clone()?;
        let sealed = self.chunk_file(&header).seal(io, offset, data)?;
        let guard = self.exclusive();
        // Sealed under another header than the file has now: worthless.
        if !guard.as_ref().is_some_and(|h| Arc::ptr_eq(h, &header)) {
            return None;
        }
        let old_size = match self.size_unlocked() {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        match self.chunk_file(&header).write_sealed(io, old_size, &sealed) {
            Ok(true) => Some(Ok(offset)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Changes the cleartext size through `io`: shrinking re-encrypts the new last chunk,
    /// growing writes encrypted zeros. Holds the lock exclusively.
    pub fn set_len_with(&self, io: &mut dyn CiphertextIo, target: SetLen) -> Result<()> {
        let mut guard = self.exclusive();
        let old_size = self.size_unlocked()?;
        let new_size = match target {
            SetLen::Exactly(n) => n,
            SetLen::GrowTo(n) => n.max(old_size),
        };
        if new_size == old_size {
            return Ok(());
        }
        let header = self.ensure_header(&mut guard)?;
        let cf = self.chunk_file(&header);
        if new_size > old_size {
            cf.write(io, old_size, old_size, new_size - old_size, None)
        } else {
            cf.shrink(io, old_size, new_size)
        }
    }

    /// Starts writing the file's dirty ciphertext pages to disk and returns without waiting
    /// for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a large write's disk time then
    /// overlaps its encryption instead of all coming at fsync. A hint: needs no lock, and an
    /// error is the next fsync's to report.
    pub fn start_writeback(&self) {
        // SAFETY: our open descriptor; no pointers.
        unsafe { libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }

    /// Flushes the file's data (and metadata unless `datasync`) to disk. Holds the lock
    /// exclusively, so it covers every change acknowledged before it.
    pub fn sync(&self, datasync: bool) -> Result<()> {
        let _exclusive = self.exclusive();
        if datasync {
            self.file.sync_data().at(&self.path)
        } else {
            self.file.sync_all().at(&self.path)
        }
    }

    /// [`read_with`](Self::read_with) through blocking `pread`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        with_thread_pread(|io| self.read_with(io, offset, buf))
    }

    /// [`write_with`](Self::write_with) at `offset` through blocking `pwrite`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        with_thread_pread(|io| {
            self.write_with(io, WriteAt::Offset(offset), data)
                .map(|_| ())
        })
    }

    /// [`set_len_with`](Self::set_len_with) to exactly `new_size` through blocking I/O.
    pub fn set_len(&self, new_size: u64) -> Result<()> {
        with_thread_pread(|io| self.set_len_with(io, SetLen::Exactly(new_size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::CipherCombo;
    use crate::keys::MasterKeys;

    fn handle() -> (tempfile::TempDir, FileHandle) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.c9r");
        std::fs::write(&path, b"").unwrap();
        let content = Arc::new(ContentCryptor::new(
            CipherCombo::SivGcm,
            &MasterKeys::generate(),
        ));
        let h = FileHandle::open(path, content, true).unwrap();
        (dir, h)
    }

    #[test]
    fn grow_to_never_shrinks() {
        let (_d, h) = handle();
        h.write_at(0, &[7u8; 50_000]).unwrap();
        // A grow planned for a smaller size (fallocate racing a writer) leaves the file alone.
        with_thread_pread(|io| h.set_len_with(io, SetLen::GrowTo(10))).unwrap();
        assert_eq!(h.size().unwrap(), 50_000);
        with_thread_pread(|io| h.set_len_with(io, SetLen::GrowTo(70_000))).unwrap();
        assert_eq!(h.size().unwrap(), 70_000);
        let mut buf = vec![1u8; 70_000];
        assert_eq!(h.read_at(0, &mut buf).unwrap(), 70_000);
        assert!(buf[..50_000].iter().all(|&b| b == 7));
        assert!(buf[50_000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn appends_from_many_threads_never_overlap() {
        let (_d, h) = handle();
        let h = Arc::new(h);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        with_thread_pread(|io| h.write_with(io, WriteAt::Append, &[t + 1; 1000]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut buf = vec![0u8; 100_000];
        assert_eq!(h.read_at(0, &mut buf).unwrap(), 100_000);
        // Every 1000-byte record is whole: one writer's byte throughout.
        for rec in buf.chunks(1000) {
            assert!(rec.iter().all(|&b| b == rec[0] && b != 0));
        }
    }
}

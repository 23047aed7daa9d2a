//! The one chunk loop: reading a cleartext range and the read-modify-write of a changed range,
//! written once over a small [`CiphertextIo`] trait ("give me a ciphertext buffer, read or
//! write these bytes at this offset").
//!
//! [`chunks`](crate::chunks) plans (pure arithmetic and crypto, no I/O); this module drives the
//! plans against a ciphertext file through whichever I/O the caller has: blocking
//! `pread`/`pwrite` ([`PreadIo`], used by the [`FileHandle`](crate::file::FileHandle)
//! convenience methods), the io_uring rings of `oxcrypt-io`, or a test double. Every engine goes
//! through the same loop, so batch sizes, edge handling and the refusal of unauthenticated bytes
//! cannot drift apart.
//!
//! A read of whole AES-GCM chunks (chunk-aligned, to a chunk boundary or the end of the file:
//! every READ of a sequential reader) is read apart, each chunk's body straight into its place
//! in the caller's buffer and its nonce and tag beside, and decrypted there: one pass over the
//! bytes less than reading the chunks into the I/O's buffer and decrypting out of it (+5 % on a
//! cached 1 GiB read over `/dev/fuse`, kernel-notes).
//!
//! Callers hold the file's lock (see [`FileHandle`](crate::file::FileHandle)); nothing here
//! locks.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::chunks::{EdgeContents, ReadPlan, WritePlan};
use crate::content::{CipherCombo, ContentCryptor, FileHeader, CHUNK_SIZE, MAX_CHUNK_CIPHERTEXT};
use crate::error::{ContentPart, CryptoError, Error, IoContext, Result};

/// Chunks encrypted by [`ChunkFile::seal`], waiting in the I/O's buffer for
/// [`ChunkFile::write_sealed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    offset: u64,
    len: u64,
    ct_len: usize,
}

/// Chunks read or written per I/O call (1 MiB of cleartext).
pub const BATCH_CHUNKS: u64 = 32;
/// Ciphertext buffer size every [`CiphertextIo`] must offer: [`BATCH_CHUNKS`] + 1 chunks, the
/// most an unaligned 1 MiB read touches.
pub const REQUEST_BUF: usize = (BATCH_CHUNKS as usize + 1) * MAX_CHUNK_CIPHERTEXT;

const C: u64 = CHUNK_SIZE as u64;

/// Ciphertext I/O with a buffer of its own, as the chunk loop needs it.
pub trait CiphertextIo {
    /// The ciphertext buffer (at least [`REQUEST_BUF`] bytes) and a cleartext scratch buffer of
    /// at least one chunk ([`CHUNK_SIZE`]).
    fn buffers(&mut self) -> (&mut [u8], &mut [u8]);

    /// Reads `len` bytes at ciphertext offset `at` of `file` into the start of the ciphertext
    /// buffer; returns the count, fewer than `len` only at end of file.
    fn read(&mut self, file: &File, len: usize, at: u64) -> io::Result<usize>;

    /// Writes `len` bytes of the ciphertext buffer, from position `from` in it, at offset `at`
    /// of `file`: all of them or an error.
    fn write(&mut self, file: &File, from: usize, len: usize, at: u64) -> io::Result<()>;

    /// Reads ciphertext at offset `at` of `file` into `parts` in order (a chunk's nonce, body
    /// and tag apart, so that bodies land where the reader wants the cleartext); returns the
    /// count, fewer than the parts hold only at end of file.
    fn read_scattered(
        &mut self,
        file: &File,
        at: u64,
        parts: &mut [io::IoSliceMut<'_>],
    ) -> io::Result<usize> {
        preadv_full(file, at, parts, 0)
    }
}

/// `preadv2` until `parts` are full or end of file, with `flags` (e.g. `RWF_NOWAIT`, whose
/// EAGAIN is returned as an error); returns the bytes read.
pub fn preadv_full(
    file: &File,
    at: u64,
    mut parts: &mut [io::IoSliceMut<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut done = 0usize;
    while !parts.is_empty() {
        let count = parts.len().min(1024) as libc::c_int;
        // SAFETY: `IoSliceMut` has the layout of `iovec` (std guarantees it on Unix), and each
        // points at a live, exclusively borrowed buffer of its length.
        let r = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                parts.as_ptr().cast::<libc::iovec>(),
                count,
                (at + done as u64) as libc::off_t,
                flags,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        done += r as usize;
        io::IoSliceMut::advance_slices(&mut parts, r as usize);
    }
    Ok(done)
}

/// Blocking `pread`/`pwrite` with heap buffers: the I/O of the offline tools and of the
/// `--io sync` engine.
#[derive(Debug, Default)]
pub struct PreadIo {
    ct: Vec<u8>,
    scratch: Vec<u8>,
}

impl PreadIo {
    /// A `PreadIo` whose buffers are allocated on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CiphertextIo for PreadIo {
    fn buffers(&mut self) -> (&mut [u8], &mut [u8]) {
        if self.ct.is_empty() {
            self.ct = vec![0u8; REQUEST_BUF];
            self.scratch = vec![0u8; CHUNK_SIZE];
        }
        (&mut self.ct, &mut self.scratch)
    }

    fn read(&mut self, file: &File, len: usize, at: u64) -> io::Result<usize> {
        let buf = &mut self.buffers().0[..len];
        read_full_at(file, buf, at)
    }

    fn write(&mut self, file: &File, from: usize, len: usize, at: u64) -> io::Result<()> {
        let buf = &self.buffers().0[from..from + len];
        crate::fault::write_all_at(file, buf, at)
    }
}

/// Growth of a write, in ciphertext bytes, above which its space is reserved first (a
/// reservation of a small growth costs more than the write: it forces ext4 to allocate at
/// once what delayed allocation would often never allocate, as for a file deleted soon).
pub const RESERVE_ABOVE: u64 = 1 << 20;

thread_local! {
    /// This thread's `pread` buffers, reused by every blocking caller.
    static THREAD_PREAD: std::cell::RefCell<PreadIo> = std::cell::RefCell::new(PreadIo::new());
}

/// Runs `f` with this thread's [`PreadIo`] (a fresh one if the thread's is in use already).
pub fn with_thread_pread<R>(f: impl FnOnce(&mut dyn CiphertextIo) -> R) -> R {
    THREAD_PREAD.with(|p| match p.try_borrow_mut() {
        Ok(mut io) => f(&mut *io),
        Err(_) => f(&mut PreadIo::new()),
    })
}

/// Reserves `len` bytes of disk at `offset` of `file` without changing its length
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`). File systems without fallocate reserve nothing.
pub fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

/// Reads until `buf` is full or end of file; returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One open ciphertext file as the loop sees it: descriptor, path (for errors), cryptor and
/// decrypted header.
#[derive(Clone, Copy)]
pub struct ChunkFile<'a> {
    /// The ciphertext file.
    pub file: &'a File,
    /// Its path, for error messages.
    pub path: &'a Path,
    /// The vault's content cryptor.
    pub cryptor: &'a ContentCryptor,
    /// The file's header.
    pub header: &'a FileHeader,
}

impl ChunkFile<'_> {
    fn content_err(&self, source: CryptoError) -> Error {
        Error::Content {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// Reads up to `out.len()` cleartext bytes at `offset` of a file of cleartext size `size`
    /// straight into `out`; returns the count (0 at end of file). On an error `out` holds no
    /// unauthenticated bytes.
    pub fn read(
        &self,
        io: &mut dyn CiphertextIo,
        size: u64,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize> {
        let combo = self.cryptor.combo();
        let mut done = 0;
        while done < out.len() {
            let want = (out.len() - done).min(BATCH_CHUNKS as usize * CHUNK_SIZE) as u64;
            let Some(plan) = ReadPlan::new(combo, offset + done as u64, want, size) else {
                break;
            };
            if combo == CipherCombo::SivGcm && plan.is_whole_chunks(size) {
                self.read_whole_chunks(io, &plan, &mut out[done..done + plan.len()])
                    .inspect_err(|_| out[..done].fill(0))?;
                done += plan.len();
                continue;
            }
            let got = io
                .read(self.file, plan.ct_len, plan.ct_offset)
                .at(self.path)?;
            if got < plan.ct_len {
                out[..done].fill(0);
                return Err(self.content_err(CryptoError::Truncated(ContentPart::Chunk(
                    plan.first + (got / combo.chunk_ciphertext_len()) as u64,
                ))));
            }
            let (ct, scratch) = io.buffers();
            let dst = &mut out[done..done + plan.len()];
            if let Err(e) = plan.decrypt(self.cryptor, self.header, &ct[..got], dst, scratch) {
                out[..done].fill(0);
                return Err(self.content_err(e));
            }
            done += plan.len();
        }
        Ok(done)
    }

    /// Reads the whole chunks of `plan` (chunk-aligned, ending at a chunk boundary or the end
    /// of the file) with each body landing in its place in `out` and decrypted there: no copy
    /// of the ciphertext between reading and decrypting. On failure `out` is zeroed.
    fn read_whole_chunks(
        &self,
        io: &mut dyn CiphertextIo,
        plan: &ReadPlan,
        out: &mut [u8],
    ) -> Result<()> {
        const NONCE: usize = 12;
        const TAG: usize = 16;
        let chunks = (plan.last - plan.first + 1) as usize;
        // Nonces and tags, (nonce, tag) per chunk.
        let mut meta = [0u8; (BATCH_CHUNKS as usize + 1) * (NONCE + TAG)];
        let got = {
            let mut parts = Vec::with_capacity(3 * chunks);
            let (mut bodies, mut pairs) = (&mut *out, &mut meta[..chunks * (NONCE + TAG)]);
            for _ in 0..chunks {
                let (body, b) = bodies.split_at_mut(bodies.len().min(CHUNK_SIZE));
                let (nonce, p) = pairs.split_at_mut(NONCE);
                let (tag, p) = p.split_at_mut(TAG);
                parts.extend([
                    io::IoSliceMut::new(nonce),
                    io::IoSliceMut::new(body),
                    io::IoSliceMut::new(tag),
                ]);
                (bodies, pairs) = (b, p);
            }
            io.read_scattered(self.file, plan.ct_offset, &mut parts)
        };
        let got = got.at(self.path).inspect_err(|_| out.fill(0))?;
        if got < plan.ct_len {
            out.fill(0);
            let stride = self.cryptor.combo().chunk_ciphertext_len();
            return Err(self.content_err(CryptoError::Truncated(ContentPart::Chunk(
                plan.first + (got / stride) as u64,
            ))));
        }
        for (k, body) in out.chunks_mut(CHUNK_SIZE).enumerate() {
            let pair = &meta[k * (NONCE + TAG)..(k + 1) * (NONCE + TAG)];
            let (nonce, tag) = pair.split_at(NONCE);
            let index = plan.first + k as u64;
            if let Err(e) = self
                .cryptor
                .decrypt_chunk_split(self.header, index, nonce, body, tag)
            {
                out.fill(0);
                return Err(self.content_err(e));
            }
        }
        Ok(())
    }

    /// Decrypts the whole chunk `index` of a file of cleartext size `size`.
    fn read_chunk(&self, io: &mut dyn CiphertextIo, index: u64, size: u64) -> Result<Vec<u8>> {
        let mut clear = vec![0u8; size.saturating_sub(index * C).min(C) as usize];
        let n = self.read(io, size, index * C, &mut clear)?;
        if n < clear.len() {
            return Err(self.content_err(CryptoError::Truncated(ContentPart::Chunk(index))));
        }
        Ok(clear)
    }

    /// Writes `len` bytes at `offset` (`data`, or zeros when `None`) into a file of cleartext
    /// size `old_size`: the (at most two) edge chunks whose old bytes survive are read and
    /// decrypted first, then the touched chunks are encrypted and written in batches of
    /// [`BATCH_CHUNKS`].
    ///
    /// A write that grows the file is all-or-nothing under a failure (a full disk, say): the
    /// part beyond the old end is written before the old last chunk is rewritten in place, and
    /// on an error the file is cut back to its old length and its old last chunk restored.
    /// Growth by more than [`RESERVE_ABOVE`] reserves its space first, so a large grow on a
    /// full disk fails at once.
    pub fn write(
        &self,
        io: &mut dyn CiphertextIo,
        old_size: u64,
        offset: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let Some(plan) = WritePlan::new(offset, len, old_size) else {
            return Ok(());
        };
        let combo = self.cryptor.combo();
        // `old_size` was derived from the ciphertext length, which is therefore this.
        let old_ct = combo.ciphertext_size(old_size);
        let new_ct = combo.ciphertext_size(plan.new_size);
        let grows = new_ct > old_ct;
        if grows && new_ct - old_ct > RESERVE_ABOVE {
            reserve(self.file, old_ct, new_ct - old_ct).at(self.path)?;
        }
        let mut edges = EdgeContents::default();
        for edge in plan.edges() {
            edges.push(edge.index, self.read_chunk(io, edge.index, old_size)?);
        }
        // The old partial last chunk, kept to restore it if a growing write fails.
        let old_last = old_size / C;
        let partial_last = !old_size.is_multiple_of(C) && plan.first <= old_last;
        if grows && partial_last && edges.get(old_last).is_none() {
            edges.push(old_last, self.read_chunk(io, old_last, old_size)?);
        }
        let r = self.write_batches(io, &plan, data, &edges, old_ct);
        if r.is_err() && grows {
            self.roll_back(io, old_ct, partial_last.then_some((old_last, &edges)));
        }
        r
    }

    /// Encrypts and writes the chunks of `plan`. A batch that straddles the old end of the
    /// ciphertext (`old_ct`) writes its part beyond it first: if that fails, no old byte was
    /// touched.
    fn write_batches(
        &self,
        io: &mut dyn CiphertextIo,
        plan: &WritePlan,
        data: Option<&[u8]>,
        edges: &EdgeContents,
        old_ct: u64,
    ) -> Result<()> {
        let old = |i: u64| edges.get(i);
        let combo = self.cryptor.combo();
        let mut from = plan.first;
        while from <= plan.last {
            let to = (from + BATCH_CHUNKS - 1).min(plan.last);
            let (ct, scratch) = io.buffers();
            let n = plan.encrypt(
                self.cryptor,
                self.header,
                from,
                to,
                data,
                &old,
                &mut scratch[..CHUNK_SIZE],
                ct,
            );
            self.write_out(io, n, combo.chunk_offset(from), old_ct)?;
            from = to + 1;
        }
        Ok(())
    }

    /// The first half of a write that keeps no old bytes in the chunks it touches, run
    /// **without** the file's lock: encrypts `data`, to be written at the chunk-aligned
    /// `offset`, into `io`'s buffer. A chunk's ciphertext depends only on the header, its index
    /// and its cleartext, so two such writes of one file (the kernel's writeback sends several
    /// at once) are encrypted on two cores and only their `pwrite`s take turns. `None` if
    /// `offset` is not chunk-aligned or `data` is empty or larger than one batch.
    pub fn seal(&self, io: &mut dyn CiphertextIo, offset: u64, data: &[u8]) -> Option<Sealed> {
        let len = data.len() as u64;
        if !offset.is_multiple_of(C) || len == 0 || len > BATCH_CHUNKS * C {
            return None;
        }
        // Planned as if the file ended at `offset`: no chunk then holds old bytes.
        let plan = WritePlan::new(offset, len, offset)?;
        let (ct, scratch) = io.buffers();
        let ct_len = plan.encrypt(
            self.cryptor,
            self.header,
            plan.first,
            plan.last,
            Some(data),
            &|_| None,
            &mut scratch[..CHUNK_SIZE],
            ct,
        );
        Some(Sealed {
            offset,
            len,
            ct_len,
        })
    }

    /// The second half of [`seal`](Self::seal), under the file's exclusive lock, with the
    /// file now `old_size` bytes long: writes the sealed chunks if they still replace whole
    /// chunks and need nothing of the old file. `Ok(false)` if they do not (the write starts
    /// past the end, keeps old bytes after its end, or grows a file whose old last chunk is
    /// partial and would have to be restored on a failure): the caller writes the usual way.
    /// Growing is all-or-nothing as in [`write`](Self::write).
    pub fn write_sealed(
        &self,
        io: &mut dyn CiphertextIo,
        old_size: u64,
        sealed: &Sealed,
    ) -> Result<bool> {
        let end = sealed.offset + sealed.len;
        let grows = end > old_size;
        if sealed.offset > old_size
            || (!grows && !sealed.len.is_multiple_of(C))
            || (grows && !old_size.is_multiple_of(C))
        {
            return Ok(false);
        }
        let combo = self.cryptor.combo();
        let old_ct = combo.ciphertext_size(old_size);
        let new_ct = combo.ciphertext_size(old_size.max(end));
        if grows && new_ct - old_ct > RESERVE_ABOVE {
            reserve(self.file, old_ct, new_ct - old_ct).at(self.path)?;
        }
        let at = combo.chunk_offset(sealed.offset / C);
        let r = self.write_out(io, sealed.ct_len, at, old_ct);
        if r.is_err() && grows {
            self.roll_back(io, old_ct, None);
        }
        r.map(|_| true)
    }

    /// Writes the first `n` bytes of `io`'s buffer at ciphertext offset `at` of a file whose
    /// ciphertext was `old_ct` bytes long. A run that straddles the old end writes its part
    /// beyond it first: if that fails, no old byte was touched.
    fn write_out(&self, io: &mut dyn CiphertextIo, n: usize, at: u64, old_ct: u64) -> Result<()> {
        if at < old_ct && at + n as u64 > old_ct {
            let head = (old_ct - at) as usize;
            io.write(self.file, head, n - head, old_ct).at(self.path)?;
            io.write(self.file, 0, head, at).at(self.path)
        } else {
            io.write(self.file, 0, n, at).at(self.path)
        }
    }

    /// Undoes a failed growing write: the ciphertext is cut back to `old_ct` bytes and the old
    /// partial last chunk (`(index, edges holding its old cleartext)`) is written again, in
    /// place, needing no new space.
    fn roll_back(
        &self,
        io: &mut dyn CiphertextIo,
        old_ct: u64,
        last: Option<(u64, &EdgeContents)>,
    ) {
        if let Err(e) = crate::fault::set_len(self.file, old_ct) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot cut a failed write back");
            return;
        }
        let Some((index, edges)) = last else {
            return;
        };
        let Some(old) = edges.get(index) else {
            return;
        };
        let (ct, _) = io.buffers();
        let n = self.cryptor.encrypt_chunk(self.header, index, old, ct);
        let at = self.cryptor.combo().chunk_offset(index);
        if let Err(e) = io.write(self.file, 0, n, at) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot restore the last chunk after a failed write");
        }
    }

    /// Shrinks a file of cleartext size `old_size` to `new_size`: the new last chunk is
    /// re-encrypted shortened, then the ciphertext is cut.
    pub fn shrink(&self, io: &mut dyn CiphertextIo, old_size: u64, new_size: u64) -> Result<()> {
        debug_assert!(new_size < old_size);
        let combo = self.cryptor.combo();
        let rem = (new_size % C) as usize;
        let index = new_size / C;
        let mut old = None;
        if rem != 0 {
            let chunk = self.read_chunk(io, index, old_size)?;
            let (ct, _) = io.buffers();
            let n = self
                .cryptor
                .encrypt_chunk(self.header, index, &chunk[..rem], ct);
            io.write(self.file, 0, n, combo.chunk_offset(index))
                .at(self.path)?;
            old = Some(chunk);
        }
        let cut = crate::fault::set_len(self.file, combo.ciphertext_size(new_size)).at(self.path);
        if let (Err(_), Some(chunk)) = (&cut, old) {
            // The shortened last chunk is in place but the file is not cut: put the whole old
            // chunk back (same length, no new space), so the file is as it was.
            let (ct, _) = io.buffers();
            let n = self.cryptor.encrypt_chunk(self.header, index, &chunk, ct);
            if let Err(e) = io.write(self.file, 0, n, combo.chunk_offset(index)) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot restore a chunk after a failed truncate");
            }
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::CipherCombo;
    use crate::keys::MasterKeys;

    /// `PreadIo` that can cut one read short (as a file truncated behind our back would) and
    /// counts the I/O calls.
    struct TestIo {
        inner: PreadIo,
        short_read_at: Option<u64>,
        /// The n-th write (from 1) fails with ENOSPC.
        fail_write_at: Option<usize>,
        reads: usize,
        writes: Vec<(u64, usize)>,
    }

    impl CiphertextIo for TestIo {
        fn buffers(&mut self) -> (&mut [u8], &mut [u8]) {
            self.inner.buffers()
        }
        fn read(&mut self, file: &File, len: usize, at: u64) -> io::Result<usize> {
            self.reads += 1;
            let n = self.inner.read(file, len, at)?;
            Ok(if self.short_read_at == Some(at) {
                n / 2
            } else {
                n
            })
        }
        /// Counted and shortened like `read`: the ciphertext is read whole, then dealt out.
        fn read_scattered(
            &mut self,
            file: &File,
            at: u64,
            parts: &mut [io::IoSliceMut<'_>],
        ) -> io::Result<usize> {
            let len = parts.iter().map(|p| p.len()).sum();
            let n = self.read(file, len, at)?;
            let mut from = &self.inner.buffers().0[..n];
            for p in parts.iter_mut() {
                let take = p.len().min(from.len());
                p[..take].copy_from_slice(&from[..take]);
                from = &from[take..];
            }
            Ok(n)
        }
        fn write(&mut self, file: &File, from: usize, len: usize, at: u64) -> io::Result<()> {
            self.writes.push((at, len));
            if self.fail_write_at == Some(self.writes.len()) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.inner.write(file, from, len, at)
        }
    }

    fn io() -> TestIo {
        TestIo {
            inner: PreadIo::new(),
            short_read_at: None,
            fail_write_at: None,
            reads: 0,
            writes: Vec::new(),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        file: File,
        cryptor: ContentCryptor,
        header: FileHeader,
    }

    impl Fixture {
        fn new(combo: CipherCombo) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.c9r");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            let cryptor = ContentCryptor::new(combo, &MasterKeys::generate());
            let header = cryptor.new_header();
            let mut buf = [0u8; crate::content::MAX_HEADER_LEN];
            cryptor.encrypt_header(&header, &mut buf);
            file.write_all_at(&buf[..combo.header_len()], 0).unwrap();
            Fixture {
                _dir: dir,
                path,
                file,
                cryptor,
                header,
            }
        }

        fn cf(&self) -> ChunkFile<'_> {
            ChunkFile {
                file: &self.file,
                path: &self.path,
                cryptor: &self.cryptor,
                header: &self.header,
            }
        }

        fn size(&self) -> u64 {
            let len = self.file.metadata().unwrap().len();
            self.cryptor.combo().cleartext_size(len).unwrap()
        }

        fn write(&self, offset: u64, data: &[u8]) {
            let size = self.size();
            self.cf()
                .write(&mut io(), size, offset, data.len() as u64, Some(data))
                .unwrap();
        }

        fn read_all(&self) -> Vec<u8> {
            let mut out = vec![0u8; self.size() as usize + 10];
            let n = self.cf().read(&mut io(), self.size(), 0, &mut out).unwrap();
            out.truncate(n);
            out
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// A write through seal + write_sealed when they apply, else the usual one (as
    /// `FileHandle::write_with` does); returns whether the sealed path took it.
    fn write_maybe_sealed(f: &Fixture, io: &mut TestIo, offset: u64, data: &[u8]) -> bool {
        let size = f.size();
        if let Some(s) = f.cf().seal(io, offset, data) {
            if f.cf().write_sealed(io, size, &s).unwrap() {
                return true;
            }
        }
        f.cf()
            .write(io, size, offset, data.len() as u64, Some(data))
            .unwrap();
        false
    }

    #[test]
    fn sealed_writes_match_the_model_and_decline_what_needs_old_bytes() {
        let c = CHUNK_SIZE;
        for combo in [CipherCombo::SivGcm, CipherCombo::SivCtrMac] {
            let f = Fixture::new(combo);
            let mut model: Vec<u8> = Vec::new();
            // (offset, length, whether the sealed path may take it)
            let steps: [(usize, usize, bool); 8] = [
                (0, 4 * c, true),           // aligned append of whole chunks
                (4 * c, 2 * c + 100, true), // aligned append ending in a partial chunk
                (6 * c, c, false),          // grows a file whose last chunk is partial
                (2 * c, c, true),           // whole chunks in the middle, in place
                (3 * c, 50, false),         // a partial chunk with old bytes after it
                (10 * c, c, false),         // starts past the end (a gap)
                (5 * c + 7, 10, false),     // unaligned
                (8 * c, 6 * c, true),       // straddles the old end, aligned
            ];
            for (k, (at, len, sealed)) in steps.into_iter().enumerate() {
                let d = pattern(len, k as u8 + 3);
                let mut io = io();
                let took = write_maybe_sealed(&f, &mut io, at as u64, &d);
                assert_eq!(took, sealed, "{combo:?} step {k}: sealed path taken?");
                if model.len() < at + len {
                    model.resize(at + len, 0);
                }
                model[at..at + len].copy_from_slice(&d);
                assert_eq!(f.read_all(), model, "{combo:?} step {k}");
            }
        }
    }

    #[test]
    fn a_sealed_growing_write_that_fails_leaves_the_file_as_it_was() {
        let f = Fixture::new(CipherCombo::SivGcm);
        let old = pattern(2 * CHUNK_SIZE, 1);
        f.write(0, &old);
        let mut io = io();
        io.fail_write_at = Some(1);
        let d = pattern(3 * CHUNK_SIZE, 2);
        let s = f.cf().seal(&mut io, CHUNK_SIZE as u64, &d).unwrap();
        let r = f.cf().write_sealed(&mut io, f.size(), &s);
        assert!(r.is_err());
        assert_eq!(f.read_all(), old);
    }

    #[test]
    fn writes_across_chunk_edges_keep_the_old_bytes_around_them() {
        for combo in [CipherCombo::SivGcm, CipherCombo::SivCtrMac] {
            let f = Fixture::new(combo);
            let mut model = pattern(3 * CHUNK_SIZE + 100, 1);
            f.write(0, &model);
            // A write straddling the edge of chunks 0 and 1, and one inside chunk 2.
            for (at, len, seed) in [(CHUNK_SIZE - 7, 20, 9), (2 * CHUNK_SIZE + 5, 3, 4)] {
                let d = pattern(len, seed);
                f.write(at as u64, &d);
                model[at..at + len].copy_from_slice(&d);
            }
            assert_eq!(f.read_all(), model);
        }
    }

    #[test]
    fn reads_stop_at_end_of_file_and_past_it_read_nothing() {
        let f = Fixture::new(CipherCombo::SivGcm);
        let data = pattern(CHUNK_SIZE + 10, 2);
        f.write(0, &data);
        let mut out = vec![0u8; 100];
        let n = f
            .cf()
            .read(&mut io(), f.size(), CHUNK_SIZE as u64, &mut out)
            .unwrap();
        assert_eq!(&out[..n], &data[CHUNK_SIZE..]);
        let n = f
            .cf()
            .read(&mut io(), f.size(), f.size(), &mut out)
            .unwrap();
        assert_eq!(n, 0);
        let n = f.cf().read(&mut io(), f.size(), 1 << 40, &mut out).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_write_past_the_end_fills_the_gap_with_zeros() {
        let f = Fixture::new(CipherCombo::SivGcm);
        f.write(0, b"head");
        let at = 2 * CHUNK_SIZE as u64 + 3;
        f.write(at, b"tail");
        let all = f.read_all();
        assert_eq!(all.len() as u64, at + 4);
        assert_eq!(&all[..4], b"head");
        assert!(all[4..at as usize].iter().all(|&b| b == 0));
        assert_eq!(&all[at as usize..], b"tail");
    }

    #[test]
    fn appends_grow_the_file_chunk_by_chunk() {
        let f = Fixture::new(CipherCombo::SivCtrMac);
        let mut model = Vec::new();
        for i in 0..40 {
            let d = pattern(1000 + i * 37, i as u8);
            f.write(f.size(), &d);
            model.extend_from_slice(&d);
        }
        assert_eq!(f.size(), model.len() as u64);
        assert_eq!(f.read_all(), model);
    }

    #[test]
    fn a_large_write_goes_out_in_batches_of_whole_chunks() {
        let f = Fixture::new(CipherCombo::SivGcm);
        let data = pattern(70 * CHUNK_SIZE + 1, 3);
        let mut t = io();
        f.cf()
            .write(&mut t, 0, 0, data.len() as u64, Some(&data))
            .unwrap();
        // 71 chunks: 32 + 32 + 7, each batch one write starting at a chunk boundary.
        let combo = f.cryptor.combo();
        let starts: Vec<u64> = t.writes.iter().map(|w| w.0).collect();
        assert_eq!(
            starts,
            vec![
                combo.chunk_offset(0),
                combo.chunk_offset(32),
                combo.chunk_offset(64)
            ]
        );
        assert!(t.writes.iter().all(|w| w.1 <= REQUEST_BUF));
        assert_eq!(f.read_all(), data);
    }

    #[test]
    fn an_unaligned_read_of_a_whole_batch_fits_the_request_buffer() {
        let f = Fixture::new(CipherCombo::SivGcm);
        let data = pattern(40 * CHUNK_SIZE, 5);
        f.write(0, &data);
        let mut out = vec![0u8; BATCH_CHUNKS as usize * CHUNK_SIZE];
        let mut t = io();
        let n = f.cf().read(&mut t, f.size(), 100, &mut out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(&out[..], &data[100..100 + n]);
        assert_eq!(t.reads, 1, "one batch, one read");
    }

    #[test]
    fn a_short_read_in_the_middle_is_an_error_with_no_bytes_returned() {
        let f = Fixture::new(CipherCombo::SivGcm);
        let data = pattern(80 * CHUNK_SIZE, 6);
        f.write(0, &data);
        let combo = f.cryptor.combo();
        let mut t = io();
        // The second batch comes back half read.
        t.short_read_at = Some(combo.chunk_offset(BATCH_CHUNKS));
        let mut out = vec![0xAAu8; 3 * BATCH_CHUNKS as usize * CHUNK_SIZE];
        let e = f.cf().read(&mut t, f.size(), 0, &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Content {
                    source: CryptoError::Truncated(_),
                    ..
                }
            ),
            "{e:?}"
        );
        // The first batch had been decrypted into `out`: it is wiped again.
        let first = BATCH_CHUNKS as usize * CHUNK_SIZE;
        assert!(
            out[..first].iter().all(|&b| b == 0),
            "no cleartext handed out"
        );
    }

    #[test]
    fn whole_chunks_read_apart_decrypt_in_place_and_any_tampered_byte_fails_with_nothing_out() {
        for combo in [CipherCombo::SivGcm, CipherCombo::SivCtrMac] {
            // 3 chunks and a partial fourth: aligned reads take the scattered path (GCM).
            let f = Fixture::new(combo);
            let data = pattern(3 * CHUNK_SIZE + 1234, 9);
            f.write(0, &data);
            let size = f.size();
            let mut out = vec![0u8; data.len() + 100];
            let mut real = PreadIo::new();
            let n = f.cf().read(&mut real, size, 0, &mut out).unwrap();
            assert_eq!(&out[..n], &data[..], "{combo:?}");
            let n = f
                .cf()
                .read(
                    &mut real,
                    size,
                    CHUNK_SIZE as u64,
                    &mut out[..2 * CHUNK_SIZE],
                )
                .unwrap();
            assert_eq!(&out[..n], &data[CHUNK_SIZE..3 * CHUNK_SIZE]);
            // A flipped byte in the second chunk's nonce, body or tag.
            let stride = combo.chunk_ciphertext_len() as u64;
            let chunk = combo.chunk_offset(1);
            for at in [chunk + 3, chunk + 5000, chunk + stride - 2] {
                let mut b = [0u8; 1];
                f.file.read_exact_at(&mut b, at).unwrap();
                f.file.write_all_at(&[b[0] ^ 0x40], at).unwrap();
                out.fill(0xAA);
                let e = f.cf().read(&mut real, size, 0, &mut out).unwrap_err();
                assert!(
                    matches!(
                        e,
                        Error::Content {
                            source: CryptoError::Auth(_),
                            ..
                        }
                    ),
                    "{combo:?} at {at}: {e:?}"
                );
                assert!(
                    out[..3 * CHUNK_SIZE].iter().all(|&b| b == 0),
                    "{combo:?}: nothing of the read is left in the buffer"
                );
                f.file.write_all_at(&b, at).unwrap();
            }
            // A truncated last chunk: an error, nothing out.
            let len = f.file.metadata().unwrap().len();
            f.file.set_len(len - 10).unwrap();
            out.fill(0xAA);
            assert!(f.cf().read(&mut real, size, 0, &mut out).is_err());
            assert!(
                out[..data.len()].iter().all(|&b| b == 0 || b == 0xAA),
                "{combo:?}: no cleartext out"
            );
        }
    }

    #[test]
    fn a_tampered_edge_chunk_refuses_the_read_modify_write() {
        let f = Fixture::new(CipherCombo::SivGcm);
        f.write(0, &pattern(2 * CHUNK_SIZE, 7));
        let at = f.cryptor.combo().chunk_offset(1) + 20;
        let mut b = [0u8; 1];
        f.file.read_exact_at(&mut b, at).unwrap();
        f.file.write_all_at(&[b[0] ^ 1], at).unwrap();
        let size = f.size();
        let e = f
            .cf()
            .write(&mut io(), size, CHUNK_SIZE as u64 + 5, 3, Some(b"xyz"))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Content {
                    source: CryptoError::Auth(_),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_growing_write_that_fails_leaves_the_file_as_it_was() {
        // Fail the first, the second, then the third write of a growing write that rewrites
        // the old partial last chunk and spans two batches.
        for fail in 1..=3 {
            let f = Fixture::new(CipherCombo::SivGcm);
            let old = pattern(50_000, 11);
            f.write(0, &old);
            let old_len = f.file.metadata().unwrap().len();
            let mut t = io();
            t.fail_write_at = Some(fail);
            let data = pattern(40 * CHUNK_SIZE, 12);
            let size = f.size();
            let r = f
                .cf()
                .write(&mut t, size, size, data.len() as u64, Some(&data));
            assert!(r.is_err(), "write {fail} failed, so must the whole write");
            assert_eq!(f.file.metadata().unwrap().len(), old_len, "fail at {fail}");
            assert_eq!(f.read_all(), old, "fail at {fail}: old bytes changed");
        }
    }

    #[test]
    fn the_part_beyond_the_old_end_is_written_before_the_old_last_chunk() {
        let f = Fixture::new(CipherCombo::SivGcm);
        f.write(0, &pattern(50_000, 13));
        let old_len = f.file.metadata().unwrap().len();
        let mut t = io();
        let size = f.size();
        f.cf()
            .write(&mut t, size, size, 10, Some(b"0123456789"))
            .unwrap();
        let combo = f.cryptor.combo();
        assert_eq!(t.writes[0].0, old_len, "the extension goes first");
        assert_eq!(
            t.writes[1].0,
            combo.chunk_offset(1),
            "then the chunk in place"
        );
    }

    #[test]
    fn shrinking_inside_a_chunk_keeps_its_head() {
        let f = Fixture::new(CipherCombo::SivCtrMac);
        let data = pattern(3 * CHUNK_SIZE, 8);
        f.write(0, &data);
        let new = CHUNK_SIZE as u64 + 123;
        f.cf().shrink(&mut io(), f.size(), new).unwrap();
        assert_eq!(f.read_all(), &data[..new as usize]);
        f.cf().shrink(&mut io(), f.size(), 2 * C - C).unwrap();
        assert_eq!(f.read_all(), &data[..CHUNK_SIZE]);
    }
}

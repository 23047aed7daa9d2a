//! I/O-free planning of chunk reads and writes: which ciphertext bytes a cleartext range
//! needs, which chunks a write must read first (at most two edge chunks), and the crypto that
//! turns one contiguous ciphertext buffer into cleartext and back.
//!
//! The same plans drive the blocking [`FileHandle`](crate::vault::FileHandle) and the io_uring
//! engine, so the read-modify-write rules live in one place.

use crate::content::{CipherCombo, ContentCryptor, FileHeader, CHUNK_SIZE};
use crate::error::{ContentPart, CryptoError};

const C: u64 = CHUNK_SIZE as u64;

/// The ciphertext needed to read cleartext `[start, end)` of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// First cleartext byte.
    pub start: u64,
    /// End of the cleartext range (exclusive, at most the file size).
    pub end: u64,
    /// First chunk index.
    pub first: u64,
    /// Last chunk index (inclusive).
    pub last: u64,
    /// Ciphertext offset of chunk `first`.
    pub ct_offset: u64,
    /// Ciphertext bytes from `ct_offset` through the end of chunk `last`.
    pub ct_len: usize,
}

impl ReadPlan {
    /// Plans a read of up to `len` bytes at `offset` in a file of cleartext size `size`;
    /// `None` when nothing is to be read.
    pub fn new(combo: CipherCombo, offset: u64, len: u64, size: u64) -> Option<Self> {
        if offset >= size || len == 0 {
            return None;
        }
        let end = size.min(offset + len);
        let first = offset / C;
        let last = (end - 1) / C;
        let ct_offset = combo.chunk_offset(first);
        let ct_end = combo
            .ciphertext_size(size)
            .min(combo.chunk_offset(last + 1));
        Some(ReadPlan {
            start: offset,
            end,
            first,
            last,
            ct_offset,
            ct_len: (ct_end - ct_offset) as usize,
        })
    }

    /// Cleartext bytes the plan yields.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the plan covers whole chunks only, from a chunk boundary to a chunk boundary
    /// or the end of a file of cleartext size `size` (each chunk's cleartext then goes to
    /// the reader as a whole, and can be decrypted where the reader wants it).
    pub fn is_whole_chunks(&self, size: u64) -> bool {
        self.start.is_multiple_of(C) && (self.end.is_multiple_of(C) || self.end == size)
    }

    /// Always false: a plan covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Authenticates and decrypts `ct` (exactly `ct_len` bytes read at `ct_offset`) into `out`
    /// (`len()` bytes). Whole chunks are decrypted straight into `out`; partial ones go
    /// through `scratch`. On error `out` holds no unauthenticated bytes.
    pub fn decrypt(
        &self,
        cryptor: &ContentCryptor,
        header: &FileHeader,
        ct: &[u8],
        out: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), CryptoError> {
        let combo = cryptor.combo();
        let ccl = combo.chunk_ciphertext_len();
        if ct.len() < self.ct_len {
            return Err(CryptoError::Truncated(ContentPart::Chunk(self.last)));
        }
        for i in self.first..=self.last {
            let rel = ((i - self.first) as usize) * ccl;
            let chunk_ct = &ct[rel..self.ct_len.min(rel + ccl)];
            let chunk_start = i * C;
            let from = self.start.max(chunk_start);
            let to = self.end.min(chunk_start + C);
            let dst = &mut out[(from - self.start) as usize..(to - self.start) as usize];
            let whole = from == chunk_start && chunk_ct.len() == dst.len() + combo.chunk_overhead();
            let result = if whole {
                cryptor.decrypt_chunk(header, i, chunk_ct, dst).map(|_| ())
            } else {
                cryptor
                    .decrypt_chunk(header, i, chunk_ct, scratch)
                    .map(|n| {
                        let a = (from - chunk_start) as usize;
                        let b = ((to - chunk_start) as usize).min(n);
                        dst[..b - a].copy_from_slice(&scratch[a..b]);
                    })
            };
            if let Err(e) = result {
                out.fill(0);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A chunk whose current content a write must read before re-encrypting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeChunk {
    /// Chunk index.
    pub index: u64,
    /// Cleartext bytes the chunk holds now.
    pub old_len: usize,
}

/// Decrypted old contents of the edge chunks of a write, by chunk index.
#[derive(Debug, Default)]
pub struct EdgeContents(Vec<(u64, Vec<u8>)>);

impl EdgeContents {
    /// Records the old cleartext of chunk `index`.
    pub fn push(&mut self, index: u64, clear: Vec<u8>) {
        self.0.push((index, clear));
    }

    /// The old cleartext of chunk `index`, if it is an edge.
    pub fn get(&self, index: u64) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, d)| d.as_slice())
    }
}

/// The chunks a write of `len` bytes at `offset` re-encrypts, given the old cleartext size.
/// `data == None` writes zeros (growing truncate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    /// First written byte.
    pub offset: u64,
    /// End of the written range (exclusive).
    pub end: u64,
    /// Cleartext size before the write.
    pub old_size: u64,
    /// Cleartext size after the write.
    pub new_size: u64,
    /// First chunk re-encrypted (the old last chunk if the write starts past the end).
    pub first: u64,
    /// Last chunk re-encrypted.
    pub last: u64,
}

impl WritePlan {
    /// Plans a write; `None` for an empty write.
    pub fn new(offset: u64, len: u64, old_size: u64) -> Option<Self> {
        if len == 0 {
            return None;
        }
        let end = offset + len;
        Some(WritePlan {
            offset,
            end,
            old_size,
            new_size: old_size.max(end),
            first: offset.min(old_size) / C,
            last: (end - 1) / C,
        })
    }

    /// Old cleartext bytes in chunk `i`.
    fn old_len(&self, i: u64) -> usize {
        self.old_size.saturating_sub(i * C).min(C) as usize
    }

    /// Whether chunk `i` must be read first: it holds old bytes the write does not replace.
    fn needs_old(&self, i: u64) -> bool {
        let chunk_start = i * C;
        let old_len = self.old_len(i) as u64;
        let w_from = self.offset.max(chunk_start);
        let w_to = self.end.min(chunk_start + C);
        old_len > 0 && !(w_from <= chunk_start && w_to >= chunk_start + old_len)
    }

    /// The (at most two) chunks whose old content must be read and decrypted first.
    pub fn edges(&self) -> impl Iterator<Item = EdgeChunk> + '_ {
        let last = if self.last != self.first {
            Some(self.last)
        } else {
            None
        };
        std::iter::once(self.first)
            .chain(last)
            .filter(|&i| self.needs_old(i))
            .map(|i| EdgeChunk {
                index: i,
                old_len: self.old_len(i),
            })
    }

    /// Encrypts chunks `from..=to` of the plan into `out`, which must hold
    /// `(to - from + 1)` ciphertext chunks; returns the ciphertext length. `old(i)` gives the
    /// decrypted old content of an edge chunk; `clear` is a one-chunk scratch buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn encrypt<'a>(
        &self,
        cryptor: &ContentCryptor,
        header: &FileHeader,
        from: u64,
        to: u64,
        data: Option<&[u8]>,
        old: &dyn Fn(u64) -> Option<&'a [u8]>,
        clear: &mut [u8],
        out: &mut [u8],
    ) -> usize {
        let mut pos = 0;
        for i in from..=to {
            let chunk_start = i * C;
            let chunk_len = (self.new_size.min(chunk_start + C) - chunk_start) as usize;
            // A chunk the data covers whole is encrypted straight from it (no copy).
            if let Some(d) = data {
                if self.offset <= chunk_start && chunk_start + chunk_len as u64 <= self.end {
                    let at = (chunk_start - self.offset) as usize;
                    pos +=
                        cryptor.encrypt_chunk(header, i, &d[at..at + chunk_len], &mut out[pos..]);
                    continue;
                }
            }
            let clear = &mut clear[..chunk_len];
            match old(i).filter(|_| self.needs_old(i)) {
                Some(prev) => {
                    let n = prev.len().min(chunk_len);
                    clear[..n].copy_from_slice(&prev[..n]);
                    clear[n..].fill(0);
                }
                None => clear.fill(0),
            }
            let w_from = self.offset.max(chunk_start);
            let w_to = self.end.min(chunk_start + C);
            if w_to > w_from {
                let dst =
                    &mut clear[(w_from - chunk_start) as usize..(w_to - chunk_start) as usize];
                match data {
                    Some(d) => dst.copy_from_slice(
                        &d[(w_from - self.offset) as usize..(w_to - self.offset) as usize],
                    ),
                    None => dst.fill(0),
                }
            }
            pos += cryptor.encrypt_chunk(header, i, clear, &mut out[pos..]);
        }
        pos
    }
}

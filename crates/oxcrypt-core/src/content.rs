//! File content encryption: the per-file header and 32 KiB chunks, for both cipher combos,
//! plus the size formulas that map cleartext to ciphertext offsets.
//!
//! Everything here works on caller-provided buffers so that an I/O engine can decrypt straight
//! from its read buffer into a reply buffer.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use sha2::Sha256;
use std::mem::MaybeUninit;
use zeroize::Zeroizing;

use crate::error::{ContentPart, CryptoError};
use crate::keys::MasterKeys;

/// Cleartext bytes per chunk.
pub const CHUNK_SIZE: usize = 32 * 1024;
/// Largest ciphertext chunk of any combo (CTRMAC: 16 + 32768 + 32).
pub const MAX_CHUNK_CIPHERTEXT: usize = CHUNK_SIZE + 48;
/// Largest header of any combo.
pub const MAX_HEADER_LEN: usize = 88;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// The content cipher of a vault, named as in `vault.cryptomator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherCombo {
    /// AES-SIV names, AES-GCM content (current Cryptomator default).
    SivGcm,
    /// AES-SIV names, AES-CTR + HMAC-SHA256 content (Cryptomator 1.6, format 7 scheme).
    SivCtrMac,
}

impl CipherCombo {
    /// Parses the `cipherCombo` claim.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SIV_GCM" => Some(CipherCombo::SivGcm),
            "SIV_CTRMAC" => Some(CipherCombo::SivCtrMac),
            _ => None,
        }
    }

    /// The `cipherCombo` claim value.
    pub fn name(self) -> &'static str {
        match self {
            CipherCombo::SivGcm => "SIV_GCM",
            CipherCombo::SivCtrMac => "SIV_CTRMAC",
        }
    }

    /// Bytes of the file header.
    pub const fn header_len(self) -> usize {
        match self {
            CipherCombo::SivGcm => 68,
            CipherCombo::SivCtrMac => 88,
        }
    }

    /// Bytes of nonce at the start of each chunk.
    pub const fn nonce_len(self) -> usize {
        match self {
            CipherCombo::SivGcm => 12,
            CipherCombo::SivCtrMac => 16,
        }
    }

    /// Bytes of tag/MAC at the end of each chunk.
    pub const fn tag_len(self) -> usize {
        match self {
            CipherCombo::SivGcm => 16,
            CipherCombo::SivCtrMac => 32,
        }
    }

    /// Ciphertext bytes added to each chunk.
    pub const fn chunk_overhead(self) -> usize {
        self.nonce_len() + self.tag_len()
    }

    /// Ciphertext bytes of one full chunk.
    pub const fn chunk_ciphertext_len(self) -> usize {
        CHUNK_SIZE + self.chunk_overhead()
    }

    /// Ciphertext file size for `n` cleartext bytes (no trailing empty chunk).
    pub const fn ciphertext_size(self, n: u64) -> u64 {
        let full = n / CHUNK_SIZE as u64;
        let rem = n % CHUNK_SIZE as u64;
        self.header_len() as u64
            + full * self.chunk_ciphertext_len() as u64
            + if rem > 0 {
                rem + self.chunk_overhead() as u64
            } else {
                0
            }
    }

    /// Cleartext size of a ciphertext file of `c` bytes, or `None` when no valid file has that
    /// size (a final piece of 1..=overhead bytes). A 0-byte file is an empty file.
    pub const fn cleartext_size(self, c: u64) -> Option<u64> {
        if c == 0 {
            return Some(0);
        }
        if c < self.header_len() as u64 {
            return None;
        }
        let p = c - self.header_len() as u64;
        let full = p / self.chunk_ciphertext_len() as u64;
        let rem = p % self.chunk_ciphertext_len() as u64;
        if rem > 0 && rem <= self.chunk_overhead() as u64 {
            return None;
        }
        let tail = if rem > 0 {
            rem - self.chunk_overhead() as u64
        } else {
            0
        };
        Some(full * CHUNK_SIZE as u64 + tail)
    }

    /// Offset of chunk `index` in the ciphertext file.
    pub const fn chunk_offset(self, index: u64) -> u64 {
        self.header_len() as u64 + index * self.chunk_ciphertext_len() as u64
    }
}

/// The key that encrypts one file's chunks.
enum ChunkKey {
    Gcm(Box<ChunkGcm>),
    Ctr(Zeroizing<[u8; 32]>),
}

/// AES-256-GCM for one file's chunks, on ring's assembly: 6–7 GB/s per core here against
/// about 2 GB/s for the `aes-gcm` crate (see benches/). ring does not wipe its key schedule,
/// so this wrapper does, on drop.
struct ChunkGcm(MaybeUninit<LessSafeKey>);

// Wiping in place is only sound if the key owns nothing that needs dropping.
const _: () = assert!(!std::mem::needs_drop::<LessSafeKey>());

impl ChunkGcm {
    fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key");
        ChunkGcm(MaybeUninit::new(LessSafeKey::new(unbound)))
    }

    fn key(&self) -> &LessSafeKey {
        // SAFETY: initialised in `new`, only wiped in `drop`.
        unsafe { self.0.assume_init_ref() }
    }
}

impl Drop for ChunkGcm {
    fn drop(&mut self) {
        // SAFETY: the storage is ours and `LessSafeKey` has no drop glue (asserted above), so
        // overwriting its bytes without running a destructor leaks nothing.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                self.0.as_mut_ptr().cast::<u8>(),
                std::mem::size_of::<LessSafeKey>(),
            )
        };
        zeroize::Zeroize::zeroize(bytes);
    }
}

/// A decrypted file header: nonce and content key, ready to encrypt or decrypt chunks.
pub struct FileHeader {
    nonce: [u8; 16],
    reserved: [u8; 8],
    content_key: Zeroizing<[u8; 32]>,
    chunk_key: ChunkKey,
}

impl std::fmt::Debug for FileHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileHeader([redacted])")
    }
}

impl FileHeader {
    fn new(combo: CipherCombo, nonce: [u8; 16], reserved: [u8; 8], content_key: [u8; 32]) -> Self {
        let content_key = Zeroizing::new(content_key);
        let chunk_key = match combo {
            CipherCombo::SivGcm => ChunkKey::Gcm(Box::new(ChunkGcm::new(&content_key))),
            CipherCombo::SivCtrMac => ChunkKey::Ctr(content_key.clone()),
        };
        FileHeader {
            nonce,
            reserved,
            content_key,
            chunk_key,
        }
    }

    /// The header nonce as it takes part in chunk AAD/MAC (12 bytes GCM, 16 CTRMAC).
    fn nonce(&self, combo: CipherCombo) -> &[u8] {
        &self.nonce[..combo.nonce_len()]
    }
}

/// Encrypts and decrypts headers and chunks of one vault. Cheap to share across threads.
pub struct ContentCryptor {
    combo: CipherCombo,
    header_gcm: Aes256Gcm,
    enc_key: Zeroizing<[u8; 32]>,
    mac: HmacSha256,
}

impl std::fmt::Debug for ContentCryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCryptor")
            .field("combo", &self.combo)
            .finish_non_exhaustive()
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

impl ContentCryptor {
    /// A cryptor for `combo` under the vault's master keys.
    pub fn new(combo: CipherCombo, keys: &MasterKeys) -> Self {
        ContentCryptor {
            combo,
            header_gcm: Aes256Gcm::new(keys.enc().into()),
            enc_key: Zeroizing::new(*keys.enc()),
            mac: <HmacSha256 as hmac::KeyInit>::new_from_slice(keys.mac()).expect("any key length"),
        }
    }

    /// The cipher combo.
    pub fn combo(&self) -> CipherCombo {
        self.combo
    }

    /// A header with a fresh random nonce and content key.
    pub fn new_header(&self) -> FileHeader {
        FileHeader::new(
            self.combo,
            crate::random::bytes(),
            [0xFF; 8],
            crate::random::bytes(),
        )
    }

    /// A header with the given nonce and content key (known-answer tests).
    pub fn header_from_parts(&self, nonce: &[u8], content_key: [u8; 32]) -> FileHeader {
        let mut n = [0u8; 16];
        n[..nonce.len().min(16)].copy_from_slice(&nonce[..nonce.len().min(16)]);
        FileHeader::new(self.combo, n, [0xFF; 8], content_key)
    }

    /// Encrypts `header` into `out` (`header_len()` bytes).
    pub fn encrypt_header(&self, header: &FileHeader, out: &mut [u8]) {
        let mut payload = Zeroizing::new([0u8; 40]);
        payload[..8].copy_from_slice(&header.reserved);
        payload[8..].copy_from_slice(header.content_key.as_ref());
        match self.combo {
            CipherCombo::SivGcm => {
                let out = &mut out[..68];
                out[..12].copy_from_slice(&header.nonce[..12]);
                let nonce = aes_gcm::Nonce::try_from(&header.nonce[..12]).expect("12 bytes");
                let tag = self
                    .header_gcm
                    .encrypt_inout_detached(
                        &nonce,
                        &[],
                        InOutBuf::new(payload.as_ref(), &mut out[12..52]).expect("equal lengths"),
                    )
                    .expect("40 bytes are within GCM limits");
                out[52..68].copy_from_slice(&tag);
            }
            CipherCombo::SivCtrMac => {
                let out = &mut out[..88];
                out[..16].copy_from_slice(&header.nonce);
                let mut ctr = Aes256Ctr::new((&*self.enc_key).into(), (&header.nonce).into());
                ctr.apply_keystream_b2b(payload.as_ref(), &mut out[16..56]);
                let mut mac = self.mac.clone();
                mac.update(&out[..56]);
                out[56..88].copy_from_slice(&mac.finalize().into_bytes());
            }
        }
    }

    /// Decrypts and authenticates a header.
    pub fn decrypt_header(&self, data: &[u8]) -> Result<FileHeader, CryptoError> {
        let hl = self.combo.header_len();
        if data.len() < hl {
            return Err(CryptoError::Truncated(ContentPart::Header));
        }
        let mut payload = Zeroizing::new([0u8; 40]);
        let mut nonce = [0u8; 16];
        match self.combo {
            CipherCombo::SivGcm => {
                nonce[..12].copy_from_slice(&data[..12]);
                let n = aes_gcm::Nonce::try_from(&data[..12]).expect("12 bytes");
                let tag = aes_gcm::Tag::try_from(&data[52..68]).expect("16 bytes");
                self.header_gcm
                    .decrypt_inout_detached(
                        &n,
                        &[],
                        InOutBuf::new(&data[12..52], payload.as_mut()).expect("equal lengths"),
                        &tag,
                    )
                    .map_err(|_| CryptoError::Auth(ContentPart::Header))?;
            }
            CipherCombo::SivCtrMac => {
                let mut mac = self.mac.clone();
                mac.update(&data[..56]);
                if !ct_eq(&mac.finalize().into_bytes(), &data[56..88]) {
                    return Err(CryptoError::Auth(ContentPart::Header));
                }
                nonce.copy_from_slice(&data[..16]);
                let mut ctr = Aes256Ctr::new((&*self.enc_key).into(), (&nonce).into());
                ctr.apply_keystream_b2b(&data[16..56], payload.as_mut());
            }
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&payload[..8]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&payload[8..]);
        let header = FileHeader::new(self.combo, nonce, reserved, key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(header)
    }

    /// Encrypts chunk `index` of `clear` (at most [`CHUNK_SIZE`] bytes) into `out` with a fresh
    /// random nonce; returns the ciphertext length (`clear.len() + chunk_overhead()`).
    pub fn encrypt_chunk(
        &self,
        header: &FileHeader,
        index: u64,
        clear: &[u8],
        out: &mut [u8],
    ) -> usize {
        let mut nonce = [0u8; 16];
        crate::random::fill(&mut nonce[..self.combo.nonce_len()]);
        self.encrypt_chunk_with_nonce(header, index, &nonce[..self.combo.nonce_len()], clear, out)
    }

    /// Like [`encrypt_chunk`](Self::encrypt_chunk) with a given nonce (known-answer tests).
    pub fn encrypt_chunk_with_nonce(
        &self,
        header: &FileHeader,
        index: u64,
        nonce: &[u8],
        clear: &[u8],
        out: &mut [u8],
    ) -> usize {
        assert!(clear.len() <= CHUNK_SIZE, "chunk larger than 32 KiB");
        let nl = self.combo.nonce_len();
        let n = clear.len();
        let total = n + self.combo.chunk_overhead();
        let out = &mut out[..total];
        out[..nl].copy_from_slice(&nonce[..nl]);
        match &header.chunk_key {
            ChunkKey::Gcm(gcm) => {
                let aad = gcm_chunk_aad(index, header.nonce(self.combo));
                let n12 = Nonce::try_assume_unique_for_key(&nonce[..12]).expect("12 bytes");
                let body = &mut out[nl..nl + n];
                body.copy_from_slice(clear);
                let tag = gcm
                    .key()
                    .seal_in_place_separate_tag(n12, Aad::from(aad), body)
                    .expect("a chunk is within GCM limits");
                out[nl + n..].copy_from_slice(tag.as_ref());
            }
            ChunkKey::Ctr(key) => {
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&nonce[..16]);
                let mut ctr = Aes256Ctr::new((&**key).into(), (&iv).into());
                ctr.apply_keystream_b2b(clear, &mut out[nl..nl + n]);
                let tag = self.ctr_chunk_mac(header, index, &out[..nl + n]);
                out[nl + n..].copy_from_slice(&tag);
            }
        }
        total
    }

    fn ctr_chunk_mac(&self, header: &FileHeader, index: u64, nonce_and_ct: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(&header.nonce);
        mac.update(&index.to_be_bytes());
        mac.update(nonce_and_ct);
        mac.finalize().into_bytes().into()
    }

    /// Authenticates and decrypts chunk `index` from `data` into `out`; returns the cleartext
    /// length. On a failure `out` holds no unauthenticated byte (what was written is wiped).
    pub fn decrypt_chunk(
        &self,
        header: &FileHeader,
        index: u64,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let nl = self.combo.nonce_len();
        let n = self.chunk_body_len(index, data.len())?;
        let ct = &data[nl..nl + n];
        let tag = &data[nl + n..];
        match &header.chunk_key {
            ChunkKey::Gcm(_) => {
                let body = &mut out[..n];
                body.copy_from_slice(ct);
                self.decrypt_chunk_split(header, index, &data[..nl], body, tag)?;
            }
            ChunkKey::Ctr(key) => {
                let expected = self.ctr_chunk_mac(header, index, &data[..nl + n]);
                if !ct_eq(&expected, tag) {
                    return Err(CryptoError::Auth(ContentPart::Chunk(index)));
                }
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&data[..16]);
                let mut ctr = Aes256Ctr::new((&**key).into(), (&iv).into());
                ctr.apply_keystream_b2b(ct, &mut out[..n]);
            }
        }
        Ok(n)
    }

    /// The body length of chunk `index` whose ciphertext is `len` bytes long (nonce, body,
    /// tag), or `Truncated` if no chunk is that long. An empty chunk (exactly the overhead)
    /// only occurs in dirid.c9r; callers that must not accept one check for it (see
    /// `decrypt_small`).
    fn chunk_body_len(&self, index: u64, len: usize) -> Result<usize, CryptoError> {
        if len < self.combo.chunk_overhead() || len > self.combo.chunk_ciphertext_len() {
            return Err(CryptoError::Truncated(ContentPart::Chunk(index)));
        }
        Ok(len - self.combo.chunk_overhead())
    }

    /// Decrypts chunk `index` of an AES-GCM file whose nonce, body and tag were read apart,
    /// the body straight into its place in the reader's buffer: `body` is decrypted where it
    /// is, with no copy (the one place a GCM chunk is opened; the whole-chunk forms call it).
    /// Errors (`Truncated`) for another cipher: those chunks are read whole. On failure the
    /// body is zeroed.
    pub fn decrypt_chunk_split(
        &self,
        header: &FileHeader,
        index: u64,
        nonce: &[u8],
        body: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        let ChunkKey::Gcm(gcm) = &header.chunk_key else {
            return Err(CryptoError::Truncated(ContentPart::Chunk(index)));
        };
        if nonce.len() != 12 || tag.len() != 16 || body.len() > CHUNK_SIZE {
            return Err(CryptoError::Truncated(ContentPart::Chunk(index)));
        }
        let aad = gcm_chunk_aad(index, header.nonce(self.combo));
        let n12 = Nonce::try_assume_unique_for_key(nonce).expect("12 bytes");
        let tag = Tag::try_from(tag).expect("16 bytes");
        if gcm
            .key()
            .open_in_place_separate_tag(n12, Aad::from(aad), tag, body, 0..)
            .is_err()
        {
            body.fill(0);
            return Err(CryptoError::Auth(ContentPart::Chunk(index)));
        }
        Ok(())
    }

    /// Decrypts chunk `index` where it lies: `chunk` is its ciphertext (nonce, body, tag), and
    /// on success its body, `chunk[nonce_len..nonce_len + n]`, is the cleartext; returns `n`.
    /// Nothing is copied, so a buffer of whole chunks read from the file can be served from
    /// as it is. On failure the body is zeroed (no unauthenticated byte stays readable).
    pub fn decrypt_chunk_in_place(
        &self,
        header: &FileHeader,
        index: u64,
        chunk: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let nl = self.combo.nonce_len();
        let n = self.chunk_body_len(index, chunk.len())?;
        match &header.chunk_key {
            ChunkKey::Gcm(_) => {
                let (head, rest) = chunk.split_at_mut(nl);
                let (body, tag) = rest.split_at_mut(n);
                self.decrypt_chunk_split(header, index, head, body, tag)?;
            }
            ChunkKey::Ctr(key) => {
                let expected = self.ctr_chunk_mac(header, index, &chunk[..nl + n]);
                if !ct_eq(&expected, &chunk[nl + n..]) {
                    return Err(CryptoError::Auth(ContentPart::Chunk(index)));
                }
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&chunk[..16]);
                let mut ctr = Aes256Ctr::new((&**key).into(), (&iv).into());
                ctr.apply_keystream(&mut chunk[nl..nl + n]);
            }
        }
        Ok(n)
    }

    /// Decrypts a whole small ciphertext (header + chunks) into memory. For dir-id backups and
    /// symlink targets only, never for file content.
    pub fn decrypt_small(
        &self,
        data: &[u8],
        allow_empty_chunk: bool,
    ) -> Result<Vec<u8>, CryptoError> {
        let header = self.decrypt_header(data)?;
        let body = &data[self.combo.header_len()..];
        let mut out = Vec::with_capacity(body.len());
        let mut buf = vec![0u8; CHUNK_SIZE];
        for (i, chunk) in body.chunks(self.combo.chunk_ciphertext_len()).enumerate() {
            if chunk.len() == self.combo.chunk_overhead() && !allow_empty_chunk {
                return Err(CryptoError::Truncated(ContentPart::Chunk(i as u64)));
            }
            let n = self.decrypt_chunk(&header, i as u64, chunk, &mut buf)?;
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// Encrypts a small cleartext (header + chunks, no trailing empty chunk) into memory.
    pub fn encrypt_small(&self, clear: &[u8]) -> Vec<u8> {
        let header = self.new_header();
        let mut out = vec![0u8; self.combo.ciphertext_size(clear.len() as u64) as usize];
        self.encrypt_header(&header, &mut out);
        let mut pos = self.combo.header_len();
        for (i, chunk) in clear.chunks(CHUNK_SIZE).enumerate() {
            pos += self.encrypt_chunk(&header, i as u64, chunk, &mut out[pos..]);
        }
        out
    }
}

fn gcm_chunk_aad(index: u64, header_nonce: &[u8]) -> [u8; 20] {
    let mut aad = [0u8; 20];
    aad[..8].copy_from_slice(&index.to_be_bytes());
    aad[8..].copy_from_slice(&header_nonce[..12]);
    aad
}

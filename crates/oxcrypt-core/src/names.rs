//! Name encryption: AES-SIV names bound to their parent directory id, dir-id hashing into
//! content directory paths, and `.c9s` shortening of long names.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::Engine as _;
use bumpalo::Bump;
use data_encoding::BASE32;
use sha1::{Digest, Sha1};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
use zeroize::Zeroizing;

use crate::error::{Error, Result, NAME_TOO_LONG};
use crate::keys::MasterKeys;

/// Suffix of an unshortened node.
pub const C9R: &str = ".c9r";
/// Suffix of a shortened node.
pub const C9S: &str = ".c9s";
/// Longest cleartext name accepted, in UTF-8 bytes (Linux NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;

/// Encrypts and decrypts names and hashes directory ids for one vault.
pub struct NameCodec {
    siv_key: Zeroizing<[u8; 64]>,
    threshold: usize,
    /// Tells this codec's cached AES-SIV instances from another vault's.
    id: u64,
}

static NEXT_CODEC_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// This thread's AES-SIV instance and the codec it belongs to: the two AES key schedules
    /// and the CMAC subkeys are derived once per thread, not once per name (that derivation
    /// was 7-8 % of the daemon's CPU while listing a large directory). Wiped when replaced or
    /// when the thread ends.
    static SIV: std::cell::RefCell<Option<(u64, Aes256Siv)>> = const { std::cell::RefCell::new(None) };
}

impl std::fmt::Debug for NameCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameCodec")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE
}

/// Checks `name` (already NFC) against the rules for cleartext names.
fn check_name(original: &str, nfc: &str) -> Result<()> {
    let invalid = |why| Error::InvalidName {
        name: original.to_string(),
        why,
    };
    if nfc.is_empty() {
        return Err(invalid("empty name"));
    }
    if nfc == "." || nfc == ".." {
        return Err(invalid("reserved name"));
    }
    if nfc.contains('/') || nfc.contains('\0') {
        return Err(invalid("contains '/' or NUL"));
    }
    if nfc.len() > MAX_NAME_BYTES {
        return Err(invalid(NAME_TOO_LONG));
    }
    Ok(())
}

/// The NFC form of a valid cleartext name, borrowed when it is NFC already, else built in
/// `bump`.
pub fn normalize_name_in<'a>(name: &'a str, bump: &'a Bump) -> Result<&'a str> {
    let nfc: &str = if is_nfc_quick(name.chars()) == IsNormalized::Yes {
        name
    } else {
        let mut s = bumpalo::collections::String::with_capacity_in(name.len(), bump);
        s.extend(name.nfc());
        s.into_bump_str()
    };
    check_name(name, nfc)?;
    Ok(nfc)
}

/// Checks that `name` may be a cleartext file name and returns its NFC form.
pub fn normalize_name(name: &str) -> Result<String> {
    let nfc: String = name.nfc().collect();
    check_name(name, &nfc)?;
    Ok(nfc)
}

impl NameCodec {
    /// A codec for the vault's keys and shortening threshold.
    pub fn new(keys: &MasterKeys, threshold: usize) -> Self {
        NameCodec {
            siv_key: keys.siv_key(),
            threshold,
            id: NEXT_CODEC_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new((&*self.siv_key).into())
    }

    /// Runs `f` with this thread's AES-SIV instance for this codec (made on first use).
    fn with_siv<R>(&self, f: impl FnOnce(&mut Aes256Siv) -> R) -> R {
        SIV.with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => {
                if !matches!(&*slot, Some((id, _)) if *id == self.id) {
                    *slot = Some((self.id, self.siv()));
                }
                let (_, siv) = slot.as_mut().expect("just set");
                f(siv)
            }
            Err(_) => f(&mut self.siv()),
        })
    }

    /// The shortening threshold in effect.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The 32-character BASE32 hash of a directory id; the content directory is
    /// `d/<hash[0..2]>/<hash[2..]>`.
    pub fn hash_dir_id(&self, dir_id: &str) -> String {
        let no_ad: [&[u8]; 0] = [];
        let ct = self
            .with_siv(|siv| siv.encrypt(no_ad, dir_id.as_bytes()))
            .expect("dir ids are short");
        BASE32.encode(&Sha1::digest(&ct))
    }

    /// Seals `buf[16..]` (the NFC name) in place and puts the SIV tag into `buf[..16]`.
    fn seal(&self, parent_dir_id: &str, buf: &mut [u8]) {
        let (tag, body) = buf.split_at_mut(16);
        let siv = self
            .with_siv(|siv| siv.encrypt_inout_detached([parent_dir_id.as_bytes()], body.into()))
            .expect("one AD item");
        tag.copy_from_slice(&siv);
    }

    /// `base64url(AES-SIV(NFC(name), [parent_dir_id])) + ".c9r"`. `name` must already be valid
    /// (see [`normalize_name`]).
    pub fn encrypt_name(&self, parent_dir_id: &str, name: &str) -> String {
        let nfc: String = name.nfc().collect();
        let mut buf = vec![0u8; 16 + nfc.len()];
        buf[16..].copy_from_slice(nfc.as_bytes());
        self.seal(parent_dir_id, &mut buf);
        let mut s = b64url().encode(buf);
        s.push_str(C9R);
        s
    }

    /// [`encrypt_name`](Self::encrypt_name) for an NFC `name`, built entirely in `bump` (no
    /// heap allocation; the request arena of the mount).
    pub fn encrypt_name_in<'b>(&self, parent_dir_id: &str, nfc: &str, bump: &'b Bump) -> &'b str {
        let buf = bump.alloc_slice_fill_copy(16 + nfc.len(), 0u8);
        buf[16..].copy_from_slice(nfc.as_bytes());
        self.seal(parent_dir_id, buf);
        let enc_len = base64::encoded_len(buf.len(), true).expect("short names");
        let out = bump.alloc_slice_fill_copy(enc_len + C9R.len(), 0u8);
        let n = b64url()
            .encode_slice(&*buf, &mut out[..enc_len])
            .expect("buffer sized by encoded_len");
        out[n..n + C9R.len()].copy_from_slice(C9R.as_bytes());
        std::str::from_utf8(&out[..n + C9R.len()]).expect("base64 is ASCII")
    }

    /// Decrypts a `….c9r` name (with or without the suffix). `None` if it does not authenticate.
    pub fn decrypt_name(&self, parent_dir_id: &str, c9r_name: &str) -> Option<String> {
        let b64 = c9r_name.strip_suffix(C9R).unwrap_or(c9r_name);
        let ct = b64url().decode(b64).ok()?;
        let clear = self
            .with_siv(|siv| siv.decrypt([parent_dir_id.as_bytes()], &ct))
            .ok()?;
        String::from_utf8(clear).ok()
    }

    /// Whether a ciphertext name (with `.c9r`) must be stored shortened.
    pub fn must_shorten(&self, c9r_name: &str) -> bool {
        c9r_name.len() > self.threshold
    }

    /// The `.c9s` directory name for a long `….c9r` name.
    pub fn shortened_name(c9r_name: &str) -> String {
        let mut s = b64url().encode(Sha1::digest(c9r_name.as_bytes()));
        s.push_str(C9S);
        s
    }

    /// [`shortened_name`](Self::shortened_name) built in `bump`.
    pub fn shortened_name_in<'b>(c9r_name: &str, bump: &'b Bump) -> &'b str {
        let out = bump.alloc_slice_fill_copy(32, 0u8);
        let n = b64url()
            .encode_slice(Sha1::digest(c9r_name.as_bytes()), &mut out[..28])
            .expect("28 characters");
        out[n..].copy_from_slice(C9S.as_bytes());
        std::str::from_utf8(out).expect("base64 is ASCII")
    }
}

//! Name encryption: AES-SIV names bound to their parent directory id, dir-id hashing into
//! content directory paths, and `.c9s` shortening of long names.

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use base64::Engine as _;
use data_encoding::BASE32;
use sha1::{Digest, Sha1};
use unicode_normalization::UnicodeNormalization;
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

/// Checks that `name` may be a cleartext file name and returns its NFC form.
pub fn normalize_name(name: &str) -> Result<String> {
    let invalid = |why| Error::InvalidName {
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(invalid("empty name"));
    }
    if name == "." || name == ".." {
        return Err(invalid("reserved name"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(invalid("contains '/' or NUL"));
    }
    let nfc: String = name.nfc().collect();
    if nfc.len() > MAX_NAME_BYTES {
        return Err(invalid(NAME_TOO_LONG));
    }
    Ok(nfc)
}

impl NameCodec {
    /// A codec for the vault's keys and shortening threshold.
    pub fn new(keys: &MasterKeys, threshold: usize) -> Self {
        NameCodec {
            siv_key: keys.siv_key(),
            threshold,
        }
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new((&*self.siv_key).into())
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
            .siv()
            .encrypt(no_ad, dir_id.as_bytes())
            .expect("dir ids are short");
        BASE32.encode(&Sha1::digest(&ct))
    }

    /// `base64url(AES-SIV(NFC(name), [parent_dir_id])) + ".c9r"`. `name` must already be valid
    /// (see [`normalize_name`]).
    pub fn encrypt_name(&self, parent_dir_id: &str, name: &str) -> String {
        let nfc: String = name.nfc().collect();
        let ct = self
            .siv()
            .encrypt([parent_dir_id.as_bytes()], nfc.as_bytes())
            .expect("one AD item");
        let mut s = b64url().encode(ct);
        s.push_str(C9R);
        s
    }

    /// Decrypts a `….c9r` name (with or without the suffix). `None` if it does not authenticate.
    pub fn decrypt_name(&self, parent_dir_id: &str, c9r_name: &str) -> Option<String> {
        let b64 = c9r_name.strip_suffix(C9R).unwrap_or(c9r_name);
        let ct = b64url().decode(b64).ok()?;
        let clear = self.siv().decrypt([parent_dir_id.as_bytes()], &ct).ok()?;
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
}

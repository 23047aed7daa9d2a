//! Fuzz entry points: one function per parser of untrusted input, taking raw bytes. The
//! cargo-fuzz targets in `fuzz/` call them, and `tests/fuzz_corpus.rs` replays the committed
//! corpus (`fuzz/corpus/<target>/`) through them on stable Rust in every test run. Each must
//! return, never panic or hang, and never hand out unauthenticated bytes: the functions
//! assert that themselves, so a fuzzer finds a violation as a crash.

use std::path::Path;

use crate::content::ContentCryptor;
use crate::masterkey_file::MasterkeyFile;
use crate::{CipherCombo, MasterKeys, NameCodec, VaultConfig};

/// One fuzz entry point.
pub type Target = fn(&[u8]);

/// The targets, by name: what `fuzz/fuzz_targets/<name>.rs` calls.
pub const TARGETS: &[(&str, Target)] = &[
    ("file_header", file_header),
    ("chunk", chunk),
    ("small_ciphertext", small_ciphertext),
    ("name", name),
    ("dir_file", dir_file),
    ("name_file", name_file),
    ("masterkey_file", masterkey_file),
    ("vault_config", vault_config),
];

/// The fixed keys every target decrypts with (the corpus seeds were made with them).
pub fn keys() -> MasterKeys {
    MasterKeys::from_parts([7; 32], [9; 32])
}

/// The first byte picks the cipher combination; the rest is the input.
fn split_combo(data: &[u8]) -> Option<(CipherCombo, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let combo = if first & 1 == 0 {
        CipherCombo::SivGcm
    } else {
        CipherCombo::SivCtrMac
    };
    Some((combo, rest))
}

/// A file header (`SIV_GCM` or `SIV_CTRMAC` by the first byte).
pub fn file_header(data: &[u8]) {
    let Some((combo, rest)) = split_combo(data) else {
        return;
    };
    let _ = ContentCryptor::new(combo, &keys()).decrypt_header(rest);
}

/// A header then one chunk: byte 0 the combination, byte 1 the chunk number, then the header
/// (its length for the combination), then the chunk. A refused chunk must leave the output
/// untouched or zeroed.
pub fn chunk(data: &[u8]) {
    let Some((combo, rest)) = split_combo(data) else {
        return;
    };
    let Some((&index, rest)) = rest.split_first() else {
        return;
    };
    let cryptor = ContentCryptor::new(combo, &keys());
    let hl = combo.header_len().min(rest.len());
    let Ok(header) = cryptor.decrypt_header(&rest[..hl]) else {
        return;
    };
    let mut out = vec![0xAAu8; crate::CHUNK_SIZE];
    if cryptor
        .decrypt_chunk(&header, u64::from(index), &rest[hl..], &mut out)
        .is_err()
    {
        assert!(
            out.iter().all(|&b| b == 0xAA || b == 0),
            "a refused chunk left bytes in the output"
        );
    }
}

/// A small whole-file ciphertext (`symlink.c9r`, `dirid.c9r`).
pub fn small_ciphertext(data: &[u8]) {
    let Some((combo, rest)) = split_combo(data) else {
        return;
    };
    let cryptor = ContentCryptor::new(combo, &keys());
    let _ = cryptor.decrypt_small(rest, true);
    let _ = cryptor.decrypt_small(rest, false);
}

/// An encrypted name: `parent-dir-id NUL name`.
pub fn name(data: &[u8]) {
    let mut parts = data.splitn(2, |&b| b == 0);
    let (Some(parent), Some(enc)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(parent), Ok(enc)) = (std::str::from_utf8(parent), std::str::from_utf8(enc)) else {
        return;
    };
    let _ = NameCodec::new(&keys(), 220).decrypt_name(parent, enc);
}

/// The content of a `dir.c9r`.
pub fn dir_file(data: &[u8]) {
    if let Some(id) = crate::vault::parse_dir_file(data) {
        assert!(!id.is_empty() && id.is_ascii());
        // A directory id is then hashed into a path: that must not fail either.
        let _ = NameCodec::new(&keys(), 220).hash_dir_id(&id);
    }
}

/// The content of a `name.c9s`, then decrypted as a name in the root.
pub fn name_file(data: &[u8]) {
    if let Some(long) = crate::vault::parse_name_file(data) {
        let _ = NameCodec::new(&keys(), 220).decrypt_name("", long);
    }
}

/// A masterkey file, parsed, then unlocked with the password `pw` when its scrypt cost is
/// cheap (a hostile file may ask for up to the 2 GiB the unlock code allows, which would only
/// slow the fuzzer down). Unlocked keys must be the corpus's keys: anything else would be a
/// forged key accepted.
pub fn masterkey_file(data: &[u8]) {
    let p = Path::new("masterkey.cryptomator");
    let Ok(mk) = MasterkeyFile::parse(p, data) else {
        return;
    };
    if mk.scrypt_cost_param <= 1024 && mk.scrypt_block_size <= 8 {
        if let Ok(k) = mk.unlock(p, "pw") {
            assert_eq!(
                k.enc(),
                keys().enc(),
                "a masterkey file unlocked to other keys"
            );
        }
    }
}

/// A vault configuration (a signed JWT), checked against the fixed keys.
pub fn vault_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = Path::new("vault.cryptomator");
    let _ = VaultConfig::peek_masterkey_file(p, text);
    let _ = VaultConfig::verify(p, text, &keys());
}

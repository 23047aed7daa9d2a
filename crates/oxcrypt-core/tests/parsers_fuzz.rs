//! Fuzzing of every parser of untrusted input, on stable Rust with proptest: file headers,
//! chunks, names, `dir.c9r`, `name.c9s`, `symlink.c9r`/`dirid.c9r` (small ciphertexts), the
//! masterkey file and the vault configuration. Each gets arbitrary bytes and mutations of a
//! valid input (flipped, cut, extended), and must answer with a value or an error: never a
//! panic, a hang or unauthenticated bytes. The seeds below are the corpus; proptest keeps
//! failing cases in `proptest-regressions/` so they are replayed on every run.

use std::path::Path;

use oxcrypt_core::content::ContentCryptor;
use oxcrypt_core::masterkey_file::MasterkeyFile;
use oxcrypt_core::{CipherCombo, CreateOptions, MasterKeys, NameCodec, Vault, VaultConfig};
use proptest::prelude::*;

/// A valid input with one of: a flipped byte, a cut, or appended bytes.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    prop_oneof![
        (0..len, any::<u8>()).prop_map({
            let seed = seed.clone();
            move |(i, x)| {
                let mut v = seed.clone();
                if let Some(b) = v.get_mut(i) {
                    *b ^= x | 1;
                }
                v
            }
        }),
        (0..len).prop_map({
            let seed = seed.clone();
            move |n| seed[..n.min(seed.len())].to_vec()
        }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(move |tail| {
            let mut v = seed.clone();
            v.extend(tail);
            v
        }),
    ]
}

fn cryptor(combo: CipherCombo) -> (ContentCryptor, MasterKeys) {
    let keys = MasterKeys::from_parts([7; 32], [9; 32]);
    (ContentCryptor::new(combo, &keys), keys)
}

fn combo() -> impl Strategy<Value = CipherCombo> {
    prop_oneof![Just(CipherCombo::SivGcm), Just(CipherCombo::SivCtrMac)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn file_headers(c in combo(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (cr, _) = cryptor(c);
        let _ = cr.decrypt_header(&data);
    }

    #[test]
    fn mutated_headers_never_pass(c in combo(), m in 0usize..1000) {
        let (cr, _) = cryptor(c);
        let h = cr.new_header();
        let mut buf = vec![0u8; c.header_len()];
        cr.encrypt_header(&h, &mut buf);
        let i = m % buf.len();
        buf[i] ^= 1 << (m % 8);
        prop_assert!(cr.decrypt_header(&buf).is_err());
    }

    #[test]
    fn chunks(c in combo(), index in 0u64..4, data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (cr, _) = cryptor(c);
        let h = cr.new_header();
        let mut out = vec![0xAAu8; 32 * 1024];
        if cr.decrypt_chunk(&h, index, &data, &mut out).is_err() {
            // Untouched, or wiped: never a byte of unauthenticated cleartext.
            prop_assert!(out.iter().all(|&b| b == 0xAA || b == 0), "bytes left by a refused chunk");
        }
    }

    #[test]
    fn mutated_chunks_never_pass(c in combo(), seed_len in 1usize..300, m in any::<u64>()) {
        let (cr, _) = cryptor(c);
        let h = cr.new_header();
        let clear = vec![5u8; seed_len];
        let mut ct = vec![0u8; seed_len + c.chunk_overhead()];
        let n = cr.encrypt_chunk(&h, 0, &clear, &mut ct);
        let i = (m as usize) % n;
        ct[i] ^= 1 << (m % 8);
        let mut out = vec![0u8; 32 * 1024];
        prop_assert!(cr.decrypt_chunk(&h, 0, &ct[..n], &mut out).is_err());
    }

    #[test]
    fn small_ciphertexts(c in combo(), data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (cr, _) = cryptor(c);
        let _ = cr.decrypt_small(&data, true);
        let _ = cr.decrypt_small(&data, false);
    }

    #[test]
    fn names(name in ".{0,300}", parent in "[a-z0-9-]{0,36}") {
        let keys = MasterKeys::from_parts([1; 32], [2; 32]);
        let codec = NameCodec::new(&keys, 220);
        let _ = codec.decrypt_name(&parent, &name);
    }

    #[test]
    fn mutated_names_never_pass(m in 0usize..10_000) {
        let keys = MasterKeys::from_parts([1; 32], [2; 32]);
        let codec = NameCodec::new(&keys, 220);
        let mut enc = codec.encrypt_name("parent", "a file.txt").into_bytes();
        let i = m % (enc.len() - 4);
        enc[i] = if enc[i] == b'A' { b'B' } else { b'A' };
        let enc = String::from_utf8(enc).unwrap();
        let back = codec.decrypt_name("parent", &enc);
        prop_assert_ne!(back.as_deref(), Some("a file.txt"));
    }

    #[test]
    fn masterkey_files(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = MasterkeyFile::parse(Path::new("masterkey.cryptomator"), &data);
    }

    #[test]
    fn mutated_masterkey_files(data in mutated(MasterkeyFile::lock(&MasterKeys::from_parts([3; 32], [4; 32]), "pw", 2).unwrap().to_json())) {
        let p = Path::new("masterkey.cryptomator");
        if let Ok(mk) = MasterkeyFile::parse(p, &data) {
            if let Ok(keys) = mk.unlock(p, "pw") {
                // Whatever changed, the keys are the right ones or refused.
                prop_assert_eq!(keys.enc(), &[3u8; 32]);
            }
        }
    }

    #[test]
    fn vault_configs(text in ".{0,400}") {
        let p = Path::new("vault.cryptomator");
        let keys = MasterKeys::from_parts([3; 32], [4; 32]);
        let _ = VaultConfig::peek_masterkey_file(p, &text);
        let _ = VaultConfig::verify(p, &text, &keys);
    }

    #[test]
    fn mutated_vault_configs(data in mutated(VaultConfig::new(CipherCombo::SivGcm).sign(&MasterKeys::from_parts([3; 32], [4; 32])).into_bytes())) {
        let p = Path::new("vault.cryptomator");
        let keys = MasterKeys::from_parts([3; 32], [4; 32]);
        if let Ok(text) = String::from_utf8(data) {
            let _ = VaultConfig::peek_masterkey_file(p, &text);
            let _ = VaultConfig::verify(p, &text, &keys);
        }
    }
}

/// `dir.c9r` and `name.c9s` as they are parsed: through a vault whose node files hold
/// arbitrary bytes.
#[test]
fn dir_c9r_and_name_c9s() {
    let tmp = tempfile::tempdir().unwrap();
    let v = Vault::create(
        &tmp.path().join("v"),
        "pw",
        &CreateOptions {
            cipher_combo: CipherCombo::SivGcm,
            scrypt_cost: 2,
        },
    )
    .unwrap();
    let root = v.root_id().clone();
    let d = v.mkdir(&root, "d", 0o755).unwrap();
    let long = v.mkdir(&root, &"l".repeat(200), 0o755).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..1200),
                any::<bool>(),
            ),
            |(data, which)| {
                let file = if which {
                    d.entry.join("dir.c9r")
                } else {
                    long.entry.join("name.c9s")
                };
                std::fs::write(&file, &data).unwrap();
                let _ = v.list(&root);
                let _ = v.lookup(&root, "d");
                Ok(())
            },
        )
        .unwrap();
}

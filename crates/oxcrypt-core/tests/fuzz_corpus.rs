//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`, the seeds plus every input a fuzzer
//! kept or found crashing) through the same entry points the cargo-fuzz targets call
//! (`oxcrypt_core::fuzzing`), on stable Rust, in every test run. `write_seed_corpus`
//! (ignored) regenerates the seeds: valid inputs made with the fuzzing keys.

use std::path::{Path, PathBuf};

use oxcrypt_core::content::ContentCryptor;
use oxcrypt_core::fuzzing::{keys, TARGETS};
use oxcrypt_core::masterkey_file::MasterkeyFile;
use oxcrypt_core::{CipherCombo, NameCodec, VaultConfig};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_corpus_input_replays_without_a_crash() {
    let root = corpus_root();
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} crashes", path.display());
            n += 1;
        }
        assert!(n > 0, "{target}: empty corpus");
    }
}

#[test]
fn the_fuzz_crate_has_one_target_per_entry_point() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        let src = std::fs::read_to_string(dir.join(format!("{target}.rs")))
            .unwrap_or_else(|e| panic!("fuzz target {target}: {e}"));
        assert!(
            src.contains(&format!("fuzzing::{target}(")),
            "{target}.rs calls another entry point"
        );
    }
}

/// `cargo test -p oxcrypt-core --test fuzz_corpus -- --ignored` writes the seeds.
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = corpus_root();
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let k = keys();
    for (tag, combo) in [(0u8, CipherCombo::SivGcm), (1u8, CipherCombo::SivCtrMac)] {
        let cr = ContentCryptor::new(combo, &k);
        let h = cr.new_header();
        let mut hb = vec![0u8; combo.header_len()];
        cr.encrypt_header(&h, &mut hb);
        put(
            "file_header",
            &format!("valid-{tag}"),
            &[&[tag][..], &hb].concat(),
        );
        let clear = b"hello, chunk";
        let mut ct = vec![0u8; clear.len() + combo.chunk_overhead()];
        let n = cr.encrypt_chunk(&h, 0, clear, &mut ct);
        put(
            "chunk",
            &format!("valid-{tag}"),
            &[&[tag, 0][..], &hb, &ct[..n]].concat(),
        );
        put(
            "chunk",
            &format!("empty-{tag}"),
            &[&[tag, 0][..], &hb].concat(),
        );
        let small = cr.encrypt_small(b"0123-dir-id");
        put(
            "small_ciphertext",
            &format!("valid-{tag}"),
            &[&[tag][..], &small].concat(),
        );
    }
    let codec = NameCodec::new(&k, 220);
    let enc = codec.encrypt_name("parent", "a file.txt");
    put("name", "valid", format!("parent\0{enc}").as_bytes());
    let root_name = codec.encrypt_name("", &"l".repeat(200));
    put("name_file", "valid", root_name.as_bytes());
    put("dir_file", "uuid", b"9d9f5e2c-5e0a-4b7e-8a3f-1b2c3d4e5f60");
    put("dir_file", "empty", b"");
    let mk = MasterkeyFile::lock(&k, "pw", 2).unwrap().to_json();
    put("masterkey_file", "valid", &mk);
    let cfg = VaultConfig::new(CipherCombo::SivGcm).sign(&k);
    put("vault_config", "valid", cfg.as_bytes());
}

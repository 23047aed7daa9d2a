//! criterion micro-benchmarks of the vault core: chunk encryption/decryption per cipher combo,
//! name encryption/decryption, and path resolution cold and cached.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxcrypt_core::{
    CipherCombo, ContentCryptor, CreateOptions, MasterKeys, NameCodec, Vault, CHUNK_SIZE,
};

fn chunks(c: &mut Criterion) {
    let keys = MasterKeys::generate();
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Bytes(CHUNK_SIZE as u64));
    for combo in [CipherCombo::SivGcm, CipherCombo::SivCtrMac] {
        let cryptor = ContentCryptor::new(combo, &keys);
        let header = cryptor.new_header();
        let clear = vec![0x5au8; CHUNK_SIZE];
        let mut ct = vec![0u8; combo.chunk_ciphertext_len()];
        let mut out = vec![0u8; CHUNK_SIZE];
        group.bench_function(BenchmarkId::new("encrypt", combo.name()), |b| {
            b.iter(|| cryptor.encrypt_chunk(&header, 7, &clear, &mut ct))
        });
        cryptor.encrypt_chunk(&header, 7, &clear, &mut ct);
        group.bench_function(BenchmarkId::new("decrypt", combo.name()), |b| {
            b.iter(|| {
                cryptor
                    .decrypt_chunk(&header, 7, &ct, &mut out)
                    .expect("authentic")
            })
        });
    }
    // The baseline the chunk cipher was chosen against: the RustCrypto `aes-gcm` crate (used
    // for headers), on the same 32 KiB.
    {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let gcm = aes_gcm::Aes256Gcm::new_from_slice(&[7u8; 32]).expect("32-byte key");
        let mut buf = vec![0x5au8; CHUNK_SIZE];
        let nonce = aes_gcm::Nonce::from([3u8; 12]);
        group.bench_function(
            BenchmarkId::new("encrypt", "aes-gcm crate (baseline)"),
            |b| {
                b.iter(|| {
                    gcm.encrypt_inout_detached(&nonce, &[1u8; 20], buf.as_mut_slice().into())
                        .expect("within limits")
                })
            },
        );
    }
    group.finish();
}

fn names(c: &mut Criterion) {
    let keys = MasterKeys::generate();
    let codec = NameCodec::new(&keys, 220);
    let parent = "918acfbd-a467-3f77-93f1-f4a44f9cfe9c";
    let mut group = c.benchmark_group("name");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encrypt", |b| {
        b.iter(|| codec.encrypt_name(parent, "holiday-video-2026.mkv"))
    });
    let ct = codec.encrypt_name(parent, "holiday-video-2026.mkv");
    group.bench_function("decrypt", |b| {
        b.iter(|| codec.decrypt_name(parent, &ct).expect("authentic"))
    });
    group.bench_function("hash_dir_id", |b| b.iter(|| codec.hash_dir_id(parent)));
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let opts = CreateOptions {
        cipher_combo: CipherCombo::SivGcm,
        scrypt_cost: 2,
    };
    let vault = Vault::create(tmp.path(), "pw", &opts).expect("create vault");
    let mut dir = vault.root_id().clone();
    for name in ["home", "user", "projects", "oxcrypt", "src"] {
        dir = vault
            .mkdir(&dir, name, 0o755)
            .expect("mkdir")
            .dir_id()
            .expect("dir")
            .clone();
    }
    vault.create_file(&dir, "main.rs", 0o644).expect("create");
    let path = "/home/user/projects/oxcrypt/src/main.rs";
    let mut group = c.benchmark_group("resolve_depth6");
    group.bench_function("cached", |b| {
        b.iter(|| vault.resolve(path).expect("resolves"))
    });
    group.bench_function("cold", |b| {
        b.iter_batched(
            || Vault::open(tmp.path(), "pw").expect("open"),
            |fresh| fresh.resolve(path).expect("resolves"),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, chunks, names, resolve);
criterion_main!(benches);

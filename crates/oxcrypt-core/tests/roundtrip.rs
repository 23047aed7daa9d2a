//! Round trips through the vault API: names (shortening boundary, multibyte, NFD), contents
//! (chunk boundaries, random writes against an in-memory model), and tree operations.

use std::path::Path;

use oxcrypt_core::vault::FileType;
use oxcrypt_core::{CipherCombo, CreateOptions, Error, Vault, CHUNK_SIZE};
use proptest::prelude::*;

fn new_vault(dir: &Path, combo: CipherCombo) -> Vault {
    Vault::create(
        dir,
        "pw",
        &CreateOptions {
            cipher_combo: combo,
            scrypt_cost: 2,
        },
    )
    .unwrap()
}

fn read_all(vault: &Vault, path: &str) -> Vec<u8> {
    let node = vault.resolve(path).unwrap();
    let fh = vault.open_file(&node, false).unwrap();
    let size = fh.size().unwrap() as usize;
    let mut buf = vec![0u8; size + 7];
    let n = fh.read_at(0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn names_in(vault: &Vault, path: &str) -> Vec<String> {
    let node = vault.resolve(path).unwrap();
    let mut names: Vec<String> = vault
        .list(node.dir_id().unwrap())
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    names
}

#[test]
fn reopen_with_password_and_both_combos() {
    for combo in [CipherCombo::SivGcm, CipherCombo::SivCtrMac] {
        let tmp = tempfile::tempdir().unwrap();
        let v = new_vault(tmp.path(), combo);
        let root = v.root_id().clone();
        let f = v.create_file(&root, "a.txt", 0o644).unwrap();
        v.open_file(&f, true)
            .unwrap()
            .write_at(0, b"hello")
            .unwrap();
        drop(v);
        let v = Vault::open(tmp.path(), "pw").unwrap();
        assert_eq!(v.config().cipher_combo, combo);
        assert_eq!(read_all(&v, "/a.txt"), b"hello");
        assert!(matches!(
            Vault::open(tmp.path(), "nope"),
            Err(Error::WrongPassword)
        ));
        // Root dirid.c9r is written like current Cryptomator: header + one empty chunk.
        let root_dir = v.content_dir(&root);
        let len = std::fs::metadata(root_dir.join("dirid.c9r")).unwrap().len() as usize;
        assert_eq!(len, combo.header_len() + combo.chunk_overhead());
        assert_eq!(v.read_dirid_backup(&root).unwrap().as_deref(), Some(""));
    }
}

#[test]
fn shortening_boundary_146_147_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivGcm);
    let root = v.root_id().clone();
    let n146 = "a".repeat(146);
    let n147 = "b".repeat(147);
    let f146 = v.create_file(&root, &n146, 0o644).unwrap();
    let f147 = v.create_file(&root, &n147, 0o644).unwrap();
    assert!(!f146.shortened);
    assert_eq!(f146.entry.file_name().unwrap().len(), 220);
    assert!(f147.shortened);
    assert!(f147.entry.join("name.c9s").is_file());
    assert!(f147.entry.join("contents.c9r").is_file());
    let d = v.mkdir(&root, &"é".repeat(100), 0o755).unwrap(); // 200 bytes, multibyte
    assert!(d.shortened);
    assert_eq!(names_in(&v, "/"), {
        let mut n = vec![n146.clone(), n147.clone(), "é".repeat(100)];
        n.sort();
        n
    });
    // Rename across the threshold both ways keeps content.
    v.open_file(&f147, true)
        .unwrap()
        .write_at(0, b"long")
        .unwrap();
    v.rename(&root, &n147, &root, "short", false).unwrap();
    assert_eq!(read_all(&v, "/short"), b"long");
    v.rename(&root, "short", &root, &"c".repeat(200), false)
        .unwrap();
    assert_eq!(read_all(&v, &format!("/{}", "c".repeat(200))), b"long");
    let too_long = "x".repeat(256);
    let err = v.create_file(&root, &too_long, 0o644).unwrap_err();
    assert_eq!(err.errno(), 36, "ENAMETOOLONG expected: {err}");
}

#[test]
fn nfd_input_finds_the_nfc_name() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivGcm);
    let root = v.root_id().clone();
    v.create_file(&root, "caf\u{e9}", 0o644).unwrap(); // NFC
    let found = v
        .lookup(&root, "cafe\u{301}")
        .unwrap()
        .expect("NFD lookup finds NFC entry");
    assert_eq!(found.name, "caf\u{e9}");
    assert!(matches!(
        v.create_file(&root, "cafe\u{301}", 0o644),
        Err(Error::AlreadyExists(_))
    ));
}

#[test]
fn chunk_boundary_sizes_round_trip_without_trailing_empty_chunk() {
    for combo in [CipherCombo::SivGcm, CipherCombo::SivCtrMac] {
        let tmp = tempfile::tempdir().unwrap();
        let v = new_vault(tmp.path(), combo);
        let root = v.root_id().clone();
        for size in [0usize, 1, 32767, 32768, 32769, 3 * 32768, 5 * 32768 + 17] {
            let name = format!("f{size}");
            let node = v.create_file(&root, &name, 0o644).unwrap();
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            v.open_file(&node, true)
                .unwrap()
                .write_at(0, &data)
                .unwrap();
            let ct_len = std::fs::metadata(node.payload_path()).unwrap().len();
            assert_eq!(
                ct_len,
                combo.ciphertext_size(size as u64),
                "{combo:?} size {size}"
            );
            assert_eq!(read_all(&v, &name), data, "{combo:?} size {size}");
            assert_eq!(v.stat(&node).unwrap().size, size as u64);
        }
    }
}

#[test]
fn one_byte_write_rewrites_one_chunk_only() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivGcm);
    let node = v.create_file(v.root_id(), "big", 0o644).unwrap();
    let fh = v.open_file(&node, true).unwrap();
    fh.write_at(0, &vec![1u8; 10 * CHUNK_SIZE]).unwrap();
    let before = std::fs::read(node.payload_path()).unwrap();
    fh.write_at(4 * CHUNK_SIZE as u64 + 100, &[9]).unwrap();
    let after = std::fs::read(node.payload_path()).unwrap();
    let combo = CipherCombo::SivGcm;
    let changed: Vec<usize> = (0..10)
        .filter(|&i| {
            let a = combo.chunk_offset(i as u64) as usize;
            let b = a + combo.chunk_ciphertext_len();
            before[a..b] != after[a..b]
        })
        .collect();
    assert_eq!(changed, vec![4]);
    assert_eq!(before[..68], after[..68], "header kept");
}

#[test]
fn truncate_grows_and_shrinks() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivCtrMac);
    let node = v.create_file(v.root_id(), "t", 0o644).unwrap();
    let fh = v.open_file(&node, true).unwrap();
    fh.write_at(0, &[5u8; 40000]).unwrap();
    fh.set_len(100_000).unwrap();
    let mut want = vec![5u8; 40000];
    want.resize(100_000, 0);
    assert_eq!(read_all(&v, "/t"), want);
    fh.set_len(32768 + 3).unwrap();
    want.truncate(32771);
    assert_eq!(read_all(&v, "/t"), want);
    fh.set_len(32768).unwrap();
    want.truncate(32768);
    assert_eq!(read_all(&v, "/t"), want);
    assert_eq!(
        std::fs::metadata(node.payload_path()).unwrap().len(),
        88 + 32816
    );
    fh.set_len(0).unwrap();
    assert_eq!(read_all(&v, "/t"), b"");
}

#[test]
fn tree_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivGcm);
    let root = v.root_id().clone();
    let a = v.mkdir(&root, "a", 0o755).unwrap();
    let a_id = a.dir_id().unwrap().clone();
    let b = v.mkdir(&a_id, "b", 0o755).unwrap();
    let b_id = b.dir_id().unwrap().clone();
    let f = v.create_file(&b_id, "f", 0o600).unwrap();
    v.open_file(&f, true).unwrap().write_at(0, b"data").unwrap();
    v.symlink(&root, "link", "a/b/f").unwrap();
    assert_eq!(v.readlink(&v.resolve("/link").unwrap()).unwrap(), "a/b/f");
    assert_eq!(
        v.stat(&v.resolve("/link").unwrap()).unwrap().kind,
        FileType::Symlink
    );
    assert_eq!(v.stat(&v.resolve("/a/b/f").unwrap()).unwrap().perm, 0o600);
    // rmdir of a non-empty directory fails; a directory moved keeps its content.
    assert!(matches!(v.rmdir(&root, "a"), Err(Error::NotEmpty(_))));
    v.rename(&a_id, "b", &root, "moved", false).unwrap();
    assert_eq!(read_all(&v, "/moved/f"), b"data");
    assert!(matches!(v.resolve("/a/b"), Err(Error::NotFound(_))));
    // Replace a file, refuse to replace without permission, replace an empty dir.
    let g = v.create_file(&root, "g", 0o644).unwrap();
    v.open_file(&g, true).unwrap().write_at(0, b"gg").unwrap();
    assert!(matches!(
        v.rename(
            &root,
            "g",
            &v.resolve("/moved").unwrap().dir_id().unwrap().clone(),
            "f",
            false
        ),
        Err(Error::AlreadyExists(_))
    ));
    let moved_id = v.resolve("/moved").unwrap().dir_id().unwrap().clone();
    v.rename(&root, "g", &moved_id, "f", true).unwrap();
    assert_eq!(read_all(&v, "/moved/f"), b"gg");
    // A directory cannot replace a non-empty one, nor a file.
    assert!(matches!(
        v.rename(&root, "a", &root, "moved", true),
        Err(Error::NotEmpty(_))
    ));
    assert!(matches!(
        v.rename(&root, "a", &moved_id, "f", true),
        Err(Error::NotADirectory(_))
    ));
    v.unlink(&moved_id, "f").unwrap();
    v.rename(&root, "moved", &root, "a", true).unwrap();
    assert_eq!(names_in(&v, "/"), vec!["a".to_string(), "link".to_string()]);
    v.rmdir(&root, "a").unwrap();
    v.unlink(&root, "link").unwrap();
    assert!(names_in(&v, "/").is_empty());
    // Only the root content dir is left (empty d/XX parents may stay, as with cryptofs).
    let content_dirs: usize = std::fs::read_dir(tmp.path().join("d"))
        .unwrap()
        .map(|e| std::fs::read_dir(e.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(content_dirs, 1);
    assert!(v.lookup(&root, "a").unwrap().is_none());
}

#[test]
fn concurrent_writers_on_disjoint_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivGcm);
    let node = v.create_file(v.root_id(), "c", 0o644).unwrap();
    let fh = v.open_file(&node, true).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let fh = &fh;
            s.spawn(move || {
                for k in 0..8u64 {
                    let off = (k * 4 + t as u64) * 10_000;
                    fh.write_at(off, &[t + 1; 10_000]).unwrap();
                }
            });
        }
    });
    let data = read_all(&v, "/c");
    assert_eq!(data.len(), 320_000);
    for (i, chunk) in data.chunks(10_000).enumerate() {
        assert!(chunk.iter().all(|&b| b == (i % 4) as u8 + 1), "range {i}");
    }
}

fn valid_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[^/\u{0}]{1,60}")
        .unwrap()
        .prop_filter("not . or ..", |s| s != "." && s != ".." && s.len() <= 255)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn names_round_trip(name in valid_name(), parent in "[a-f0-9-]{0,36}") {
        let keys = oxcrypt_core::MasterKeys::generate();
        let codec = oxcrypt_core::NameCodec::new(&keys, 220);
        use unicode_normalization::UnicodeNormalization;
        let nfc: String = name.nfc().collect();
        let c9r = codec.encrypt_name(&parent, &name);
        prop_assert!(c9r.ends_with(".c9r"));
        prop_assert_eq!(c9r.len(), 4 * (16 + nfc.len()).div_ceil(3) + 4);
        // The arena variants give the same bytes as the heap ones.
        let bump = bumpalo::Bump::new();
        let nfc_in = oxcrypt_core::names::normalize_name_in(&name, &bump).unwrap();
        prop_assert_eq!(nfc_in, nfc.as_str());
        prop_assert_eq!(codec.encrypt_name_in(&parent, nfc_in, &bump), c9r.as_str());
        prop_assert_eq!(
            oxcrypt_core::NameCodec::shortened_name_in(&c9r, &bump),
            oxcrypt_core::NameCodec::shortened_name(&c9r)
        );
        prop_assert_eq!(codec.decrypt_name(&parent, &c9r), Some(nfc));
        let other = format!("{parent}x");
        prop_assert_eq!(codec.decrypt_name(&other, &c9r), None);
    }

    #[test]
    fn random_writes_match_a_model(
        ops in proptest::collection::vec((0u64..200_000, 0usize..70_000, any::<u8>()), 1..12),
        combo in prop_oneof![Just(CipherCombo::SivGcm), Just(CipherCombo::SivCtrMac)],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let v = new_vault(tmp.path(), combo);
        let node = v.create_file(v.root_id(), "m", 0o644).unwrap();
        let fh = v.open_file(&node, true).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for (off, len, byte) in ops {
            if byte % 5 == 0 {
                // Truncate instead of writing.
                let new_len = (off as usize) / 2;
                fh.set_len(new_len as u64).unwrap();
                model.resize(new_len, 0);
                continue;
            }
            let data = vec![byte; len];
            fh.write_at(off, &data).unwrap();
            if len > 0 {
                let end = off as usize + len;
                if model.len() < end { model.resize(end, 0); }
                model[off as usize..end].copy_from_slice(&data);
            }
        }
        prop_assert_eq!(fh.size().unwrap(), model.len() as u64);
        let ct_len = std::fs::metadata(node.payload_path()).unwrap().len();
        prop_assert_eq!(ct_len, combo.ciphertext_size(model.len() as u64));
        // Random-offset reads agree with the model too.
        for start in [0usize, 1, 32767, 32768, 40000, model.len().saturating_sub(3)] {
            let mut buf = vec![0u8; 50_000];
            let n = fh.read_at(start as u64, &mut buf).unwrap();
            let want = &model[start.min(model.len())..(start + 50_000).min(model.len())];
            prop_assert_eq!(&buf[..n], want);
        }
    }
}

#[test]
fn exchange_swaps_nodes_including_shortened_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(tmp.path(), CipherCombo::SivGcm);
    let root = v.root_id().clone();
    let sub = v
        .mkdir(&root, "sub", 0o755)
        .unwrap()
        .dir_id()
        .unwrap()
        .clone();
    let (la, lb) = ("a".repeat(180), "b".repeat(180));
    let fa = v.create_file(&root, &la, 0o644).unwrap();
    v.open_file(&fa, true).unwrap().write_at(0, b"AAA").unwrap();
    let db = v.mkdir(&sub, &lb, 0o755).unwrap();
    v.exchange(&root, &la, &sub, &lb).unwrap();
    // The directory now lives in the root under the long name `la`, the file in `sub`.
    assert!(v.resolve(&format!("/{la}")).unwrap().is_dir());
    assert_eq!(read_all(&v, &format!("/sub/{lb}")), b"AAA");
    assert_eq!(v.resolve(&format!("/{la}")).unwrap().dir_id(), db.dir_id());
    // A fresh listing decrypts the rewritten name.c9s files.
    assert_eq!(names_in(&v, "/sub"), vec![lb.clone()]);
    let report = oxcrypt_core::check::check(&v, &mut |_| {}).unwrap();
    assert_eq!(report.errors(), 0, "{:?}", report.problems);
}

/// A directory large enough to be listed on several threads lists every entry once, with
/// its kind, and leaves out an undecryptable one, as a small one does.
#[test]
fn a_large_listing_is_complete_and_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(&tmp.path().join("v"), CipherCombo::SivGcm);
    let root = v.root_id().clone();
    let d = v.mkdir(&root, "big", 0o755).unwrap();
    let id = d.dir_id().unwrap().clone();
    let mut want = Vec::new();
    for i in 0..1500 {
        let name = format!("entry-{i:05}");
        if i % 100 == 0 {
            v.mkdir(&id, &name, 0o755).unwrap();
        } else {
            v.create_open(&id, &name, 0o644, None).unwrap();
        }
        want.push(name);
    }
    std::fs::write(v.content_dir(&id).join("junk.c9r"), b"x").unwrap();
    let mut got: Vec<(String, bool)> = v
        .list(&id)
        .unwrap()
        .into_iter()
        .map(|n| (n.name.clone(), n.is_dir()))
        .collect();
    got.sort();
    assert_eq!(got.len(), 1500);
    for (i, (name, is_dir)) in got.iter().enumerate() {
        assert_eq!(name, &want[i]);
        assert_eq!(*is_dir, i % 100 == 0, "{name}");
    }
}

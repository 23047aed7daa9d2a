//! Sync-conflict copies (issue 12 point 6): a copy a sync client made under a suffixed name is
//! listed under a readable name and given a proper encrypted name, as Cryptomator does.

use std::fs;
use std::path::{Path, PathBuf};

use oxcrypt_core::{CipherCombo, CreateOptions, DirId, Vault};

fn vault(dir: &Path) -> Vault {
    Vault::create(
        &dir.join("v"),
        "pw",
        &CreateOptions {
            cipher_combo: CipherCombo::SivGcm,
            scrypt_cost: 2,
        },
    )
    .unwrap()
}

fn write(v: &Vault, dir: &DirId, name: &str, data: &[u8]) -> PathBuf {
    let (_, f, _) = v.create_open(dir, name, 0o644, None).unwrap();
    f.write_at(0, data).unwrap();
    drop(f);
    v.lookup(dir, name).unwrap().unwrap().entry
}

fn names(v: &Vault, dir: &DirId) -> Vec<String> {
    let mut n: Vec<String> = v.list(dir).unwrap().into_iter().map(|n| n.name).collect();
    n.sort();
    n
}

fn read(v: &Vault, dir: &DirId, name: &str) -> Vec<u8> {
    let node = v.lookup(dir, name).unwrap().unwrap();
    let f = v.open_file(&node, false).unwrap();
    let mut buf = vec![0u8; 100];
    let n = f.read_at(0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// `ENC.c9r` → `ENC<suffix>.c9r`.
fn with_suffix(entry: &Path, suffix: &str) -> PathBuf {
    let name = entry.file_name().unwrap().to_str().unwrap();
    entry.with_file_name(format!(
        "{}{suffix}.c9r",
        name.strip_suffix(".c9r").unwrap()
    ))
}

#[test]
fn a_conflict_copy_gets_its_own_readable_name() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(tmp.path());
    let root = v.root_id().clone();
    let report = write(&v, &root, "report.txt", b"mine");
    let other = write(&v, &root, "other.txt", b"theirs");
    // The sync client's copy of report.txt, with the other side's content.
    let copy = with_suffix(&report, " (conflicted copy 2026-11-25)");
    fs::rename(&other, &copy).unwrap();
    assert_eq!(names(&v, &root), ["report (1).txt", "report.txt"]);
    assert!(!copy.exists(), "the copy keeps its suffixed name");
    assert_eq!(read(&v, &root, "report.txt"), b"mine");
    assert_eq!(read(&v, &root, "report (1).txt"), b"theirs");
    // A second copy takes the next number.
    let other = write(&v, &root, "x", b"third");
    fs::rename(&other, with_suffix(&report, " (2)")).unwrap();
    assert_eq!(
        names(&v, &root),
        ["report (1).txt", "report (2).txt", "report.txt"]
    );
}

#[test]
fn a_lone_copy_takes_the_canonical_name_and_a_duplicate_directory_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(tmp.path());
    let root = v.root_id().clone();
    let solo = write(&v, &root, "solo.txt", b"only");
    fs::rename(&solo, with_suffix(&solo, "-conflict-20261125")).unwrap();
    assert_eq!(names(&v, &root), ["solo.txt"]);
    assert!(solo.exists());
    assert_eq!(read(&v, &root, "solo.txt"), b"only");
    // A directory node duplicated by a sync client: same dir.c9r, so the copy is removed.
    let d = v.mkdir(&root, "docs", 0o755).unwrap();
    let dup = with_suffix(&d.entry, " (1)");
    fs::create_dir(&dup).unwrap();
    fs::copy(d.entry.join("dir.c9r"), dup.join("dir.c9r")).unwrap();
    assert_eq!(names(&v, &root), ["docs", "solo.txt"]);
    assert!(!dup.exists());
}

#[test]
fn a_read_only_vault_leaves_conflict_copies_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(tmp.path());
    let root = v.root_id().clone();
    let a = write(&v, &root, "a.txt", b"1");
    let b = write(&v, &root, "b.txt", b"2");
    let copy = with_suffix(&a, " (1)");
    fs::rename(&b, &copy).unwrap();
    v.set_read_only(true);
    assert_eq!(names(&v, &root), ["a.txt"]);
    assert!(copy.exists());
}

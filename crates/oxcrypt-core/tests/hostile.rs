//! A hostile ciphertext tree (a sync folder someone else can write to): FIFOs, devices and
//! symlinks where control files and ciphertext should be are broken nodes, answered at once,
//! and no change reaches through a symlink to a file outside the vault.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use oxcrypt_core::{CipherCombo, CreateOptions, Error, Vault};

fn new_vault(dir: &Path) -> Vault {
    Vault::create(
        dir,
        "pw",
        &CreateOptions {
            cipher_combo: CipherCombo::SivGcm,
            scrypt_cost: 2,
        },
    )
    .unwrap()
}

/// Runs `f` on another thread; fails if it takes more than 10 s (a hang fails the test).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no answer within 10 s: the vault hung on a hostile node")
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_or_a_symlink_as_dir_c9r_is_a_broken_node() {
    for hostile in ["fifo", "dev-zero"] {
        let tmp = tempfile::tempdir().unwrap();
        let v = new_vault(&tmp.path().join("v"));
        let root = v.root_id().clone();
        let d = v.mkdir(&root, "d", 0o755).unwrap();
        let dir_file = d.entry.join("dir.c9r");
        std::fs::remove_file(&dir_file).unwrap();
        match hostile {
            "fifo" => mkfifo(&dir_file),
            _ => std::os::unix::fs::symlink("/dev/zero", &dir_file).unwrap(),
        }
        let v = std::sync::Arc::new(Vault::open(&tmp.path().join("v"), "pw").unwrap());
        let v2 = v.clone();
        let r = within(move || v2.lookup(&v2.root_id().clone(), "d").map(|_| ()));
        assert!(
            matches!(r, Err(Error::BrokenNode { .. })),
            "{hostile}: {r:?}"
        );
        let v2 = v.clone();
        let listed = within(move || v2.list(&v2.root_id().clone()).unwrap().len());
        assert_eq!(
            listed, 0,
            "{hostile}: the broken node is left out of listings"
        );
        drop(tmp);
    }
}

#[test]
fn a_ciphertext_swapped_for_a_symlink_is_neither_opened_nor_chmodded() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(&tmp.path().join("v"));
    let root = v.root_id().clone();
    let node = v.create_file(&root, "mine", 0o644).unwrap();
    let victim = tmp.path().join("root-only");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&node.entry).unwrap();
    std::os::unix::fs::symlink(&victim, &node.entry).unwrap();
    let node = v.lookup(&root, "mine").unwrap().unwrap();
    assert!(v.set_perm(&node, 0o666).is_err());
    assert!(v.chown(&node, Some(65534), Some(65534)).is_err());
    assert!(v
        .set_times(&node, None, Some(std::time::UNIX_EPOCH))
        .is_err());
    assert!(v.open_file(&node, true).is_err());
    assert!(v.stat(&node).is_err());
    let md = std::fs::metadata(&victim).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_ne!(md.modified().unwrap(), std::time::UNIX_EPOCH);
}

#[test]
fn oversized_control_files_are_refused_without_reading_them_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let v = new_vault(&tmp.path().join("v"));
    let root = v.root_id().clone();
    let d = v.mkdir(&root, "d", 0o755).unwrap();
    // A 100 MiB dir.c9r (sparse): refused from its size.
    let f = std::fs::File::create(d.entry.join("dir.c9r")).unwrap();
    f.set_len(100 << 20).unwrap();
    let r = v.lookup(&root, "d");
    assert!(matches!(r, Err(Error::BrokenNode { .. })), "{r:?}");
}

/// `a/b` whose dir.c9r holds the id of `a`: a cycle.
fn vault_with_a_cycle(dir: &Path) -> Vault {
    let v = new_vault(dir);
    let root = v.root_id().clone();
    let a = v.mkdir(&root, "a", 0o755).unwrap();
    let a_id = a.dir_id().unwrap().clone();
    let b = v.mkdir(&a_id, "b", 0o755).unwrap();
    std::fs::write(b.entry.join("dir.c9r"), a_id.as_bytes()).unwrap();
    Vault::open(dir, "pw").unwrap()
}

#[test]
fn a_walk_refuses_a_directory_cycle_instead_of_overflowing_the_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let v = std::sync::Arc::new(vault_with_a_cycle(&tmp.path().join("v")));
    let r = within(move || {
        let mut visited = 0;
        let root = v.root();
        v.walk("", &root, &mut |_, _| {
            visited += 1;
            Ok(())
        })
        .map(|_| visited)
    });
    assert!(matches!(r, Err(Error::BrokenNode { .. })), "{r:?}");
}

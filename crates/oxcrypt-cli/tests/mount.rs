//! The mount through the real kernel FUSE: the same scripted operations on the mount and on a
//! plain directory must give the same results; concurrency, mmap, fixtures, cross-checks with
//! the offline CLI, signals and mountpoint errors.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "mount test password";
/// The binary under test: this build's, or `$OXCRYPT_TEST_BIN` (to show that a test fails on
/// an older build).
fn bin() -> String {
    std::env::var("OXCRYPT_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_oxcrypt").into())
}

fn is_mounted(p: &Path) -> bool {
    let canon = fs::canonicalize(p.parent().unwrap())
        .unwrap()
        .join(p.file_name().unwrap());
    oxcrypt_fuse::mountinfo::mount_at(&canon).is_some()
}

/// A mounted vault in a temp dir; always unmounted and reaped on drop, even after a failure.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
    vault: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Mount {
    fn fresh(extra: &[&str]) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        let vault = tmp.path().join("vault");
        init_vault(&vault);
        let mut m = Mount::at(&vault, &tmp.path().join("mnt"), PW, extra);
        m._tmp = Some(tmp);
        m
    }

    fn at(vault: &Path, mnt: &Path, pw: &str, extra: &[&str]) -> Mount {
        Mount::at_env(vault, mnt, pw, extra, &[])
    }

    /// [`Mount::at`] with extra environment variables for the daemon.
    fn at_env(vault: &Path, mnt: &Path, pw: &str, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        let _ = fs::create_dir_all(mnt); // fails on a stale mount, which the daemon cleans
        let child = Command::new(bin())
            .arg("mount")
            .arg(vault)
            .arg(mnt)
            .args(extra)
            .envs(env.iter().copied())
            .env("OXCRYPT_PASSWORD", pw)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let m = Mount {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            vault: vault.to_path_buf(),
            _tmp: None,
        };
        let start = Instant::now();
        while !(is_mounted(mnt) && fs::metadata(mnt).is_ok()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mount did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Unmounts with `oxcrypt umount` and returns the daemon's exit status.
    fn unmount(mut self) -> std::process::ExitStatus {
        let out = Command::new(bin())
            .arg("umount")
            .arg(&self.mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.child.take().unwrap().wait().unwrap()
    }
}

/// Runs an offline `oxcrypt` command with the test password.
fn cli(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("OXCRYPT_PASSWORD", PW)
        .output()
        .unwrap()
}

/// A temp dir with a fresh vault (`vault`) and an empty mountpoint directory (`mnt`).
fn vault_and_mountpoint() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    (tmp, vault, mnt)
}

fn init_vault(vault: &Path) {
    let out = cli(&["init", vault.to_str().unwrap(), "--scrypt-cost", "16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Detach every mount stacked here (a stale one may sit below ours).
        let c = std::ffi::CString::new(self.mnt.to_str().unwrap()).unwrap();
        for _ in 0..4 {
            if !is_mounted(&self.mnt) {
                break;
            }
            // SAFETY: valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn errno_of(e: &std::io::Error) -> String {
    format!("E{}", e.raw_os_error().unwrap_or(-1))
}

fn renameat2(a: &Path, b: &Path, flags: u32) -> std::io::Result<()> {
    let ca = std::ffi::CString::new(a.to_str().unwrap()).unwrap();
    let cb = std::ffi::CString::new(b.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs a script of file operations under `root`, recording every outcome as text.
fn script(root: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let p = |s: &str| root.join(s);
    macro_rules! rec {
        ($what:expr, $e:expr) => {
            log.push(match $e {
                Ok(v) => format!("{}: ok {:?}", $what, v),
                Err(e) => format!("{}: err {}", $what, errno_of(&e)),
            })
        };
    }
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    rec!("mkdir a", fs::create_dir(p("a")));
    rec!("mkdir a again", fs::create_dir(p("a")));
    rec!("mkdir a/b", fs::create_dir(p("a/b")));
    rec!("write f", fs::write(p("a/f"), &data));
    rec!("read f", fs::read(p("a/f")).map(|d| d == data));
    rec!("size f", fs::metadata(p("a/f")).map(|m| m.len()));
    // Overwrite in the middle, across a chunk boundary.
    rec!(
        "patch f",
        OpenOptions::new()
            .write(true)
            .open(p("a/f"))
            .and_then(|f| f.write_all_at(b"PATCHED", 32765))
    );
    rec!(
        "read patched",
        fs::read(p("a/f")).map(|d| (d.len(), d[32760..32775].to_vec()))
    );
    // Sparse extension by writing past the end.
    rec!(
        "write past end",
        OpenOptions::new()
            .write(true)
            .open(p("a/f"))
            .and_then(|f| f.write_all_at(b"END", 300_000))
    );
    rec!(
        "read hole",
        fs::read(p("a/f")).map(|d| (d.len(), d[200_000..200_010].to_vec(), d[300_000..].to_vec()))
    );
    // Truncate down and up, ftruncate.
    rec!(
        "truncate 40000",
        OpenOptions::new()
            .write(true)
            .open(p("a/f"))
            .and_then(|f| f.set_len(40_000))
    );
    rec!(
        "truncate 70000",
        OpenOptions::new()
            .write(true)
            .open(p("a/f"))
            .and_then(|f| f.set_len(70_000))
    );
    rec!(
        "read truncated",
        fs::read(p("a/f")).map(|d| (d.len(), d[39_990..40_010].to_vec()))
    );
    // O_TRUNC, O_APPEND, O_EXCL.
    rec!(
        "o_trunc",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p("a/f"))
            .and_then(|mut f| f.write_all(b"short"))
    );
    rec!(
        "o_append",
        OpenOptions::new()
            .append(true)
            .open(p("a/f"))
            .and_then(|mut f| f.write_all(b"+tail"))
    );
    rec!("read appended", fs::read_to_string(p("a/f")));
    rec!(
        "o_excl existing",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p("a/f"))
            .map(|_| ())
    );
    rec!(
        "o_excl new",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(p("a/g"))
            .map(|_| ())
    );
    rec!("mode g", fs::metadata(p("a/g")).map(|m| m.mode() & 0o777));
    rec!(
        "chmod g",
        fs::set_permissions(p("a/g"), fs::Permissions::from_mode(0o600))
    );
    rec!(
        "mode g after",
        fs::metadata(p("a/g")).map(|m| m.mode() & 0o7777)
    );
    // Seek + read at offsets.
    rec!(
        "seek read",
        File::open(p("a/f")).and_then(|mut f| {
            f.seek(SeekFrom::Start(2))?;
            let mut b = [0u8; 3];
            f.read_exact(&mut b)?;
            Ok(b)
        })
    );
    // Directories and rename.
    rec!("rmdir non-empty", fs::remove_dir(p("a")));
    rec!("rename f->b/f2", fs::rename(p("a/f"), p("a/b/f2")));
    rec!("rename g over f2", fs::rename(p("a/g"), p("a/b/f2")));
    rec!("rename dir", fs::rename(p("a/b"), p("c")));
    rec!("rename missing", fs::rename(p("nothing"), p("x")));
    rec!("rename dir over file", {
        fs::create_dir(p("d")).and_then(|_| fs::rename(p("d"), p("c/f2")))
    });
    rec!("rename file over dir", fs::rename(p("c/f2"), p("d")));
    rec!(
        "mkdir nonempty target",
        fs::create_dir(p("e")).and_then(|_| fs::write(p("e/x"), b"x"))
    );
    rec!("rename dir over non-empty dir", fs::rename(p("d"), p("e")));
    rec!("rename dir over empty dir", fs::rename(p("e"), p("d")));
    let long = "L".repeat(200);
    rec!(
        "long name create",
        fs::write(p(&format!("c/{long}")), b"long")
    );
    rec!("long name read", fs::read(p(&format!("c/{long}"))));
    rec!("too long name", fs::write(p(&"N".repeat(256)), b"x"));
    rec!(
        "long rename to short",
        fs::rename(p(&format!("c/{long}")), p("c/short"))
    );
    rec!("multibyte", fs::write(p("c/日本語 ü.txt"), "unicode"));
    // Symlinks.
    rec!("symlink", std::os::unix::fs::symlink("c/short", p("ln")));
    rec!("readlink", fs::read_link(p("ln")));
    rec!("read via link", fs::read(p("ln")));
    rec!(
        "lstat link",
        fs::symlink_metadata(p("ln")).map(|m| m.file_type().is_symlink())
    );
    // Unlink, rmdir.
    rec!("unlink", fs::remove_file(p("c/short")));
    rec!("unlink missing", fs::remove_file(p("c/short")));
    rec!("rmdir file", fs::remove_dir(p("ln")));
    rec!("unlink dir", fs::remove_file(p("c")));
    // Timestamps.
    rec!(
        "set mtime",
        File::options().write(true).open(p("c/f2")).and_then(|f| {
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        })
    );
    rec!("mtime", fs::metadata(p("c/f2")).map(|m| m.mtime()));
    // RENAME_EXCHANGE of a file and a directory, and RENAME_NOREPLACE.
    rec!(
        "exchange setup",
        fs::write(p("x1"), b"one").and_then(|_| fs::create_dir(p("x2")))
    );
    rec!(
        "exchange",
        renameat2(&p("x1"), &p("x2"), libc::RENAME_EXCHANGE)
    );
    rec!(
        "exchanged",
        fs::read(p("x2")).map(|d| (
            d,
            fs::metadata(p("x1")).map(|m| m.is_dir()).unwrap_or(false)
        ))
    );
    rec!(
        "noreplace",
        renameat2(&p("x2"), &p("x1"), libc::RENAME_NOREPLACE)
    );
    // Final tree, sorted, with sizes and kinds.
    let mut tree = Vec::new();
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().into_string().unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            let kind = if md.is_dir() {
                "d"
            } else if md.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            let size = if md.is_file() { md.len() } else { 0 };
            out.push(format!("{kind} {rel}/{name} {size}"));
            if md.is_dir() {
                walk(&e.path(), &format!("{rel}/{name}"), out);
            }
        }
    }
    walk(root, "", &mut tree);
    log.push(format!("tree {tree:#?}"));
    log
}

#[test]
fn mount_behaves_like_a_plain_directory() {
    for io in ["uring", "sync"] {
        let m = Mount::fresh(&["--io", io]);
        let plain = tempfile::tempdir().unwrap();
        let expected = script(plain.path());
        let got = script(&m.mnt);
        for (e, g) in expected.iter().zip(&got) {
            assert_eq!(g, e, "--io {io}: mount and plain directory differ");
        }
        assert_eq!(got.len(), expected.len());
        assert!(m.unmount().success());
    }
}

#[test]
fn things_the_format_lacks_fail_cleanly() {
    let m = Mount::fresh(&[]);
    fs::write(m.mnt.join("f"), b"x").unwrap();
    let e = fs::hard_link(m.mnt.join("f"), m.mnt.join("h")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let c = std::ffi::CString::new(m.mnt.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: valid path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(r, -1);
    let c = std::ffi::CString::new(m.mnt.join("f").to_str().unwrap()).unwrap();
    // SAFETY: valid path and value.
    let r = unsafe { libc::setxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    // The daemon survived all of it.
    assert_eq!(fs::read(m.mnt.join("f")).unwrap(), b"x");
    assert!(m.unmount().success());
}

#[test]
fn concurrent_writers_appenders_readers_and_renames() {
    let m = Mount::fresh(&[]);
    let root = m.mnt.clone();
    // Disjoint ranges of one file from 4 threads.
    let f = root.join("shared");
    File::create(&f).unwrap().set_len(4 * 256 * 1024).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let f = f.clone();
            s.spawn(move || {
                let file = OpenOptions::new().write(true).open(&f).unwrap();
                for k in 0..16u64 {
                    let off = (t as u64) * 256 * 1024 + k * 16 * 1024;
                    file.write_all_at(&[t + 1; 16 * 1024], off).unwrap();
                }
            });
        }
        // A reader running meanwhile must never see an error.
        let f = f.clone();
        s.spawn(move || {
            for _ in 0..20 {
                let d = fs::read(&f).unwrap();
                assert_eq!(d.len(), 4 * 256 * 1024);
            }
        });
    });
    let d = fs::read(&f).unwrap();
    for t in 0..4usize {
        assert!(
            d[t * 256 * 1024..(t + 1) * 256 * 1024]
                .iter()
                .all(|&b| b == t as u8 + 1),
            "range {t}"
        );
    }
    // Appenders: every record lands whole.
    let log = root.join("log");
    File::create(&log).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let log = log.clone();
            s.spawn(move || {
                let mut f = OpenOptions::new().append(true).open(&log).unwrap();
                for _ in 0..50 {
                    f.write_all(&[b'a' + t; 100]).unwrap();
                }
            });
        }
    });
    let d = fs::read(&log).unwrap();
    assert_eq!(d.len(), 4 * 50 * 100);
    for rec in d.chunks(100) {
        assert!(rec.iter().all(|&b| b == rec[0]), "torn append record");
    }
    // Rename storm: files keep moving between two directories; none is lost.
    fs::create_dir(root.join("x")).unwrap();
    fs::create_dir(root.join("y")).unwrap();
    for i in 0..20 {
        fs::write(root.join("x").join(format!("n{i}")), format!("{i}")).unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..4 {
            let root = root.clone();
            s.spawn(move || {
                for round in 0..10 {
                    for i in (t..20).step_by(4) {
                        let (a, b) = if round % 2 == 0 {
                            ("x", "y")
                        } else {
                            ("y", "x")
                        };
                        fs::rename(
                            root.join(a).join(format!("n{i}")),
                            root.join(b).join(format!("n{i}")),
                        )
                        .unwrap();
                    }
                }
            });
        }
    });
    let mut names: Vec<String> = fs::read_dir(root.join("x"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 20);
    for i in 0..20 {
        assert_eq!(
            fs::read_to_string(root.join("x").join(format!("n{i}"))).unwrap(),
            i.to_string()
        );
    }
    assert!(m.unmount().success());
}

#[test]
fn mmap_reads_and_writes() {
    let m = Mount::fresh(&[]);
    let p = m.mnt.join("mapped");
    fs::write(&p, vec![b'.'; 100_000]).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: mapping a file we own, length within the file, unmapped below.
    unsafe {
        let len = 100_000;
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let s = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
        assert_eq!(s[50_000], b'.');
        s[40_000..40_005].copy_from_slice(b"MMAP!");
        assert_eq!(libc::msync(ptr, len, libc::MS_SYNC), 0);
        libc::munmap(ptr, len);
    }
    drop(f);
    let d = fs::read(&p).unwrap();
    assert_eq!(&d[40_000..40_005], b"MMAP!");
    assert!(m.unmount().success());
}

#[test]
fn mount_and_offline_cli_agree_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.mnt.join("via-mount"), &data).unwrap();
    let cat = cli(&["cat", vault.to_str().unwrap(), "/via-mount"]);
    assert_eq!(cat.stdout, data);
    assert!(m.unmount().success());
    // Written offline, read through a new mount.
    let local = tempfile::NamedTempFile::new().unwrap();
    fs::write(local.path(), b"from the cli").unwrap();
    let put = cli(&[
        "put",
        vault.to_str().unwrap(),
        local.path().to_str().unwrap(),
        "/via-cli",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let mnt2 = vault.parent().unwrap().join("mnt2");
    let m2 = Mount::at(&vault, &mnt2, PW, &[]);
    assert_eq!(fs::read(mnt2.join("via-cli")).unwrap(), b"from the cli");
    assert_eq!(fs::read(mnt2.join("via-mount")).unwrap(), data);
    assert!(m2.unmount().success());
}

/// The fixture vaults: `$OXCRYPT_FIXTURES` if set, else `fixtures/` in this repository.
fn fixtures_dir() -> PathBuf {
    std::env::var("OXCRYPT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"))
}

fn sha256_hex(d: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_format8_fixture_mounts_with_its_manifest() {
    let dir = fixtures_dir();
    let index: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(dir.join("fixtures.json")).unwrap()).unwrap();
    let mut mounted = 0;
    for fx in index.iter().filter(|f| f["format"] == 8) {
        let name = fx["name"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let m = Mount::at(
            &dir.join(fx["vault"].as_str().unwrap()),
            &tmp.path().join("mnt"),
            fx["password"].as_str().unwrap(),
            &["--read-only"],
        );
        let mut lines = Vec::new();
        fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
            for e in fs::read_dir(root.join(rel.trim_start_matches('/'))).unwrap() {
                let e = e.unwrap();
                let n = e.file_name().into_string().unwrap();
                let r = if rel.is_empty() {
                    n.clone()
                } else {
                    format!("{rel}/{n}")
                };
                let md = fs::symlink_metadata(e.path()).unwrap();
                if md.file_type().is_symlink() {
                    let t = fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_string()
                        .unwrap();
                    out.push(format!(
                        "l {} {} {r} -> {t}",
                        sha256_hex(t.as_bytes()),
                        t.len()
                    ));
                } else if md.is_dir() {
                    out.push(format!("d - - {r}/"));
                    walk(root, &r, out);
                } else {
                    let d = fs::read(e.path()).unwrap();
                    assert_eq!(
                        d.len() as u64,
                        md.len(),
                        "{r}: size differs from bytes read"
                    );
                    out.push(format!("f {} {} {r}", sha256_hex(&d), d.len()));
                }
            }
        }
        walk(&m.mnt, "", &mut lines);
        lines.sort();
        let mut expected: Vec<String> =
            fs::read_to_string(dir.join(name).join("expected.manifest"))
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
        expected.sort();
        assert_eq!(lines, expected, "{name}");
        // Read-only: writes are refused.
        let e = fs::write(m.mnt.join("new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{name}");
        assert!(m.unmount().success());
        mounted += 1;
    }
    assert!(mounted >= 5);
}

/// The kernel read-ahead of the mount at `mnt` (its bdi's `read_ahead_kb`), found through
/// mountinfo (a stat of the mountpoint would be a FUSE request).
fn read_ahead_kb(mnt: &Path) -> u32 {
    let mnt = mnt.to_str().unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dev = info
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[4] == mnt)
        .map(|f| f[2].to_string())
        .expect("the mount is in mountinfo");
    fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Over `/dev/fuse` the kernel's read-ahead keeps a sequential reader's READs in flight, so
/// the mount raises it to 1 MiB; on the ring the daemon decrypts ahead itself and keeps the
/// kernel's 128 KiB, which lets the first reads after a seek through sooner. An explicit
/// `--read-ahead-kb` wins on either.
#[test]
fn the_kernel_read_ahead_suits_the_transport_unless_given() {
    let want = if ring_run() { 128 } else { 1024 };
    let m = Mount::fresh(&[]);
    eventually(10, "the read-ahead was not set", || {
        read_ahead_kb(&m.mnt) == want
    });
    assert!(m.unmount().success());
    let m = Mount::fresh(&["--read-ahead-kb", "512"]);
    eventually(10, "--read-ahead-kb was not applied", || {
        read_ahead_kb(&m.mnt) == 512
    });
    assert!(m.unmount().success());
}

#[test]
fn io_uring_ring_and_registered_buffers_are_in_use() {
    let m = Mount::fresh(&[]);
    fs::write(m.mnt.join("f"), vec![7u8; 300_000]).unwrap();
    assert_eq!(fs::read(m.mnt.join("f")).unwrap().len(), 300_000);
    let mut rings = 0;
    let mut bufs = 0;
    for fd in fs::read_dir(format!("/proc/{}/fd", m.pid())).unwrap() {
        let fd = fd.unwrap();
        let target = fs::read_link(fd.path()).unwrap_or_default();
        if target.to_string_lossy().contains("io_uring") {
            rings += 1;
            let info = fs::read_to_string(format!(
                "/proc/{}/fdinfo/{}",
                m.pid(),
                fd.file_name().to_str().unwrap()
            ))
            .unwrap();
            let user_bufs = info
                .lines()
                .find(|l| l.starts_with("UserBufs:"))
                .unwrap_or("UserBufs: 0");
            bufs += user_bufs
                .trim_start_matches("UserBufs:")
                .trim()
                .parse::<usize>()
                .unwrap_or(0);
        }
    }
    assert!(rings >= 1, "no io_uring descriptor in the daemon");
    assert!(bufs >= 3, "no registered buffers ({bufs})");
    assert!(m.unmount().success());
}

#[test]
fn sigterm_flushes_and_unmounts_with_status_0() {
    let mut m = Mount::fresh(&[]);
    let mut f = File::create(m.mnt.join("open-at-exit")).unwrap();
    f.write_all(b"written before SIGTERM").unwrap();
    drop(f);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    let status = m.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "daemon exit: {status:?}");
    assert!(!is_mounted(&m.mnt));
    let cat = cli(&["cat", m.vault.to_str().unwrap(), "/open-at-exit"]);
    assert_eq!(cat.stdout, b"written before SIGTERM");
}

#[test]
fn bad_mountpoints_get_clear_errors() {
    let m = Mount::fresh(&[]);
    let try_mount = |mnt: &Path| {
        Command::new(bin())
            .arg("mount")
            .arg(&m.vault)
            .arg(mnt)
            .env("OXCRYPT_PASSWORD", PW)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Busy: already mounted.
    let out = try_mount(&m.mnt);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Missing.
    let missing = m.vault.parent().unwrap().join("missing");
    let out = try_mount(&missing);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // Not empty.
    let full = m.vault.parent().unwrap().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let out = try_mount(&full);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    // Wrong password: exit 3, nothing mounted.
    let other = m.vault.parent().unwrap().join("other");
    fs::create_dir(&other).unwrap();
    let out = Command::new(bin())
        .arg("mount")
        .arg(&m.vault)
        .arg(&other)
        .env("OXCRYPT_PASSWORD", "nope")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!is_mounted(&other));
    assert!(m.unmount().success());
}

#[test]
fn stale_mount_of_a_killed_daemon_is_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let mut m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    fs::write(m.mnt.join("f"), b"kept").unwrap();
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(is_mounted(&m.mnt), "the kernel keeps the dead mount");
    let m2 = Mount::at(&m.vault.clone(), &m.mnt.clone(), PW, &[]);
    assert_eq!(fs::read(m2.mnt.join("f")).unwrap(), b"kept");
    assert!(m2.unmount().success());
}

#[test]
fn changes_behind_the_mounts_back_show_after_the_cache_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    let p = m.mnt.join("synced.txt");
    fs::write(&p, b"version one").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"version one");
    // A sync client (here: the offline CLI) replaces the file in the ciphertext directory.
    let local = tmp.path().join("v2");
    fs::write(&local, b"version two, longer").unwrap();
    let put = cli(&[
        "put",
        vault.to_str().unwrap(),
        local.to_str().unwrap(),
        "/synced.txt",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    // No stale page cache, no stale size.
    assert_eq!(fs::read(&p).unwrap(), b"version two, longer");
    assert!(m.unmount().success());
}

/// Every regular `.c9r` file of the vault's ciphertext tree.
fn ciphertext_files(vault: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![vault.join("d")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "c9r")
                && e.file_name() != "dir.c9r"
                && e.file_name() != "dirid.c9r"
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// Polls `check` until it returns true; fails with `what` after `secs`.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A sync client rewriting a file in place (same ciphertext inode, new length) and adding and
/// deleting names, while the kernel holds the file's inode, pages and a negative entry, and a
/// program holds the file open for reading. The
/// metadata cache lives a minute here, so only the watcher can make the changes show: with
/// the writeback cache the kernel never takes a new size for an inode it holds.
#[test]
fn changes_behind_the_mounts_back_show_at_once_in_place_and_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let m = Mount::at(
        &vault,
        &tmp.path().join("mnt"),
        PW,
        &["--cache-ms", "60000"],
    );
    let (a, b) = (m.mnt.join("a.txt"), m.mnt.join("b.txt"));
    let long: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(&a, b"short and old").unwrap();
    fs::write(&b, &long).unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"short and old");
    assert!(
        fs::metadata(m.mnt.join("new.txt")).is_err(),
        "a negative entry now"
    );
    // b's ciphertext written over a's, in place: a chunk's authentication does not involve
    // the file's name, so a now holds b's bytes.
    let mut files = ciphertext_files(&vault);
    files.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let (small, big) = (&files[0], &files[1]);
    let ino_before = fs::metadata(small).unwrap().ino();
    // A program still has the file open (only reading): the change is still someone else's.
    let held = File::open(&a).unwrap();
    let bytes = fs::read(big).unwrap();
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(small)
        .unwrap();
    f.write_all(&bytes).unwrap();
    drop(f);
    assert_eq!(
        fs::metadata(small).unwrap().ino(),
        ino_before,
        "changed in place"
    );
    // Until the watcher has seen the change (a few ms), a new open may still share the
    // reader's open file, whose header is the old one: its reads fail with EIO (never wrong
    // bytes); that is allowed in the meantime, not at the end.
    let start = Instant::now();
    loop {
        let len = fs::metadata(&a).unwrap().len();
        let bytes = match fs::read(&a) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Vec::new(),
            r => r.unwrap(),
        };
        if len == long.len() as u64 && bytes == long {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the in-place change did not show: size {len}, {} bytes read",
            bytes.len()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(held);
    // A name created and one deleted behind the mount.
    let local = tmp.path().join("new");
    fs::write(&local, b"from the sync client").unwrap();
    let put = cli(&[
        "put",
        vault.to_str().unwrap(),
        local.to_str().unwrap(),
        "/new.txt",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let rm = cli(&["rm", vault.to_str().unwrap(), "/b.txt"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    eventually(5, "the new name did not show", || {
        fs::read(m.mnt.join("new.txt")).is_ok_and(|d| d == b"from the sync client")
    });
    eventually(5, "the deleted name stayed", || fs::metadata(&b).is_err());
    let mut names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "new.txt"]);
    // Our own writes are not taken for a sync client's: a file written and read back keeps
    // its page cache (nothing here can see that directly; it must at least read right).
    fs::write(m.mnt.join("own.txt"), &long).unwrap();
    assert_eq!(fs::read(m.mnt.join("own.txt")).unwrap(), long);
    assert!(m.unmount().success());
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs` (a hung
/// mount must fail the test, not hang it).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: no answer within {secs} s"))
}

/// A panic while answering one request is answered with EIO and the daemon goes on serving,
/// even with a single FUSE thread (debug builds panic on a lookup of `.oxcrypt-test-panic`).
#[test]
fn a_panicking_request_gets_eio_and_the_mount_goes_on() {
    let m = Mount::fresh(&["--threads", "1"]);
    let root = m.mnt.clone();
    let r = within(20, "lookup that panics", {
        let p = root.join(".oxcrypt-test-panic");
        move || fs::metadata(p)
    });
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
    within(20, "requests after the panic", move || {
        fs::write(root.join("after"), b"still serving").unwrap();
        assert_eq!(fs::read(root.join("after")).unwrap(), b"still serving");
    });
    assert!(m.unmount().success());
}

/// fallocate racing an appender never cuts appended bytes off: the grow reads the size under
/// the file's lock (it used to read it first and set the length later).
#[test]
fn fallocate_racing_an_appender_never_shrinks_the_file() {
    let m = Mount::fresh(&[]);
    let f = m.mnt.join("log");
    File::create(&f).unwrap();
    const RECORDS: usize = 400;
    const REC: usize = 4096;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut a = OpenOptions::new().append(true).open(&f).unwrap();
            for i in 0..RECORDS {
                a.write_all(&[(i % 250) as u8 + 1; REC]).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        s.spawn(|| {
            let g = OpenOptions::new().write(true).open(&f).unwrap();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let len = g.metadata().unwrap().len();
                // SAFETY: a valid descriptor; mode 0 only grows.
                let r = unsafe { libc::fallocate(g.as_raw_fd(), 0, 0, len as i64 + 1) };
                assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            }
        });
    });
    // Every appended byte is still there, records whole and in order (a fallocate may have
    // put single zero bytes between them).
    let data = fs::read(&f).unwrap();
    let kept: Vec<u8> = data.iter().copied().filter(|&b| b != 0).collect();
    assert_eq!(kept.len(), RECORDS * REC, "appended bytes were lost");
    for (i, rec) in kept.chunks(REC).enumerate() {
        assert!(
            rec.iter().all(|&b| b == (i % 250) as u8 + 1),
            "record {i} torn"
        );
    }
    assert!(m.unmount().success());
}

/// No descriptor leaks however many I/O workers there are (a u64 bitmask used to miss
/// workers above 64, whose duplicated descriptors were never closed).
#[test]
fn no_descriptor_leak_with_more_than_64_workers() {
    let m = Mount::fresh(&["--threads", "70", "--ablate", "io-on-workers"]);
    let fds = || {
        fs::read_dir(format!("/proc/{}/fd", m.pid()))
            .unwrap()
            .count()
    };
    for i in 0..5 {
        fs::write(m.mnt.join(format!("warm{i}")), b"x").unwrap();
    }
    let before = fds();
    for i in 0..200 {
        let p = m.mnt.join(format!("f{i}"));
        fs::write(&p, vec![i as u8; 10_000]).unwrap();
        for _ in 0..2 {
            assert_eq!(fs::read(&p).unwrap().len(), 10_000);
        }
    }
    let after = fds();
    assert!(
        after <= before + 2,
        "descriptors: {before} before, {after} after"
    );
    assert!(m.unmount().success());
}

/// A small tmpfs, unmounted on drop.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn new(at: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        SmallFs {
            dir: at.to_path_buf(),
        }
    }

    /// Fills the file system with `filler` until it is full.
    fn fill(&self, filler: &Path) {
        let mut f = File::create(filler).unwrap();
        let block = vec![0x55u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// An append on a full disk fails with ENOSPC and the bytes stored before it stay readable
/// (the old partial last chunk used to be rewritten in place and torn: `cat` then failed). A truncate that grows
/// past the free space fails at once and leaves the file as it was.
#[test]
fn a_full_disk_fails_appends_and_grows_and_keeps_what_was_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let small = SmallFs::new(&tmp.path().join("small"), "3m");
    let vault = small.dir.join("vault");
    init_vault(&vault);
    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(m.mnt.join("f"), &data).unwrap();
    small.fill(&small.dir.join("filler"));
    // With the writeback cache write(2) lands in the page cache; the full disk is reported by
    // fsync (without it, by the write itself).
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.mnt.join("f"))
        .unwrap();
    let r = f.write_all(&[9u8; 100_000]).and_then(|_| f.sync_all());
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    drop(f);
    // From the next lookup on, the mount shows what the vault holds: not the size the kernel
    // had cached for the bytes it accepted, and none of those bytes beyond it.
    let start = Instant::now();
    let shown = loop {
        let len = fs::metadata(m.mnt.join("f")).unwrap().len();
        let bytes = fs::read(m.mnt.join("f")).unwrap();
        if len == bytes.len() as u64 && len < (data.len() + 100_000) as u64 {
            break bytes;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the mount keeps showing {len} bytes, reading gives {}",
            bytes.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let g = OpenOptions::new()
        .write(true)
        .open(m.mnt.join("f"))
        .unwrap();
    let r = g.set_len(50 << 20);
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    drop(g);
    fs::remove_file(small.dir.join("filler")).unwrap();
    assert!(m.unmount().success());
    let cat = cli(&["cat", vault.to_str().unwrap(), "/f"]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    // The kernel may split the append into several WRITEs; those that fit before the disk
    // filled stay, as a short write(2) would leave them. The stored bytes must be intact and
    // whatever follows them whole bytes of the append.
    assert!(
        cat.stdout.len() < data.len() + 100_000 && cat.stdout[..data.len()] == data[..],
        "stored bytes changed ({} bytes now)",
        cat.stdout.len()
    );
    assert!(
        cat.stdout[data.len()..].iter().all(|&b| b == 9),
        "the bytes after the stored ones are not the appended ones"
    );
    assert_eq!(
        shown, cat.stdout,
        "the mount showed other bytes than the vault holds"
    );
}

/// The daemon keeps no password in its environment (/proc/PID/environ shows the block it
/// started with, so the bytes must be overwritten, not just unset) and cannot dump core.
#[test]
fn the_daemon_keeps_no_password_in_its_environment_and_dumps_no_core() {
    let m = Mount::fresh(&[]);
    let environ = fs::read(format!("/proc/{}/environ", m.pid())).unwrap();
    assert!(
        !environ.windows(PW.len()).any(|w| w == PW.as_bytes()),
        "the password is in the daemon's environment"
    );
    assert!(!String::from_utf8_lossy(&environ).contains("OXCRYPT_PASSWORD"));
    let limits = fs::read_to_string(format!("/proc/{}/limits", m.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().nth(4) == Some("0"),
        "core dumps on: {core}"
    );
    assert!(m.unmount().success());
}

/// Junk entries in a directory give one warning per listing, not one per entry (100,000 of
/// them used to log 28 MB per listing).
#[test]
fn junk_entries_give_one_warning_per_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    // The root's content directory: d/XX/YYYY…, the only one in a new vault.
    let d = fs::read_dir(vault.join("d"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let root_dir = fs::read_dir(d).unwrap().next().unwrap().unwrap().path();
    for i in 0..500 {
        fs::write(
            root_dir.join(format!("junk{i:04}AAAAAAAAAAAAAAAA.c9r")),
            b"x",
        )
        .unwrap();
    }
    let mut m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &["--cache-ms", "0"]);
    // Read the daemon's log as it comes: a full pipe would stall it.
    let mut stderr = m.child.as_mut().unwrap().stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let mnt = m.mnt.clone();
    within(60, "listings", move || {
        for _ in 0..3 {
            assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
        }
    });
    assert!(m.unmount().success());
    let log = reader.join().unwrap();
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        (1..=6).contains(&warnings),
        "{warnings} warning lines for 3 listings of 500 junk entries"
    );
}

/// A dir.c9r pointing at an ancestor: `find` over the mount ends (ELOOP for the cycle) instead
/// of walking, and growing the daemon, without end; offline `tree` reports it instead of
/// dying of a stack overflow.
#[test]
fn a_directory_cycle_ends_walks_on_the_mount_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    fs::create_dir_all(m.mnt.join("a/b")).unwrap();
    assert!(m.unmount().success());
    // b's dir.c9r gets a's id: a/b is then a again.
    let v = oxcrypt_core::Vault::open(&vault, PW).unwrap();
    let a = v.resolve("/a").unwrap();
    let b = v.resolve("/a/b").unwrap();
    fs::write(b.entry.join("dir.c9r"), a.dir_id().unwrap().as_bytes()).unwrap();
    drop(v);

    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    let mnt = m.mnt.clone();
    // Counted as they come and cut off at 1,000: an endless walk must fail the test, not
    // fill this process's memory.
    let listed = within(60, "find over a cycle", move || {
        let mut find = Command::new("find")
            .arg(&mnt)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(find.stdout.take().unwrap());
        let mut n = 0;
        for _ in std::io::BufRead::lines(out) {
            n += 1;
            if n >= 1000 {
                let _ = find.kill();
                break;
            }
        }
        let _ = find.wait();
        n
    });
    assert!(listed < 10, "find listed {listed} paths");
    assert!(m.unmount().success());
    let tree = within(60, "oxcrypt tree over a cycle", move || {
        cli(&["tree", vault.to_str().unwrap()])
    });
    assert_eq!(tree.status.code(), Some(1), "{tree:?}");
    assert!(String::from_utf8_lossy(&tree.stderr).contains("cycle"));
}

/// On a full disk, creating a symlink, a directory or a long-named file fails cleanly and
/// leaves no half-made name: once space is back the same names can be created, and `check`
/// finds nothing (a name used to stay behind that could be neither created nor removed).
#[test]
fn a_full_disk_leaves_no_half_made_names() {
    let tmp = tempfile::tempdir().unwrap();
    let small = SmallFs::new(&tmp.path().join("small"), "2m");
    let vault = small.dir.join("vault");
    init_vault(&vault);
    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &[]);
    let long = "l".repeat(200);
    let names = [
        "link".to_string(),
        format!("{long}-link"),
        format!("{long}-dir"),
        format!("{long}-file"),
    ];
    let make = |i: usize| -> std::io::Result<()> {
        let p = m.mnt.join(&names[i]);
        match i {
            0 | 1 => std::os::unix::fs::symlink("target", p),
            2 => fs::create_dir(p),
            _ => File::create(p).map(drop),
        }
    };
    small.fill(&small.dir.join("filler"));
    for i in 0..names.len() {
        let e = make(i).expect_err("created on a full disk");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "{}: {e}",
            &names[i][..names[i].len().min(8)]
        );
    }
    fs::remove_file(small.dir.join("filler")).unwrap();
    for i in 0..names.len() {
        make(i).unwrap_or_else(|e| {
            panic!(
                "{}… after the disk had room again: {e}",
                &names[i][..names[i].len().min(8)]
            )
        });
    }
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), names.len());
    assert!(m.unmount().success());
    let check = cli(&["check", vault.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{out}");
    assert!(
        !out.contains("warning:") && !out.contains("error:"),
        "{out}"
    );
}

/// `put` over an existing file keeps the old file when the copy fails halfway: the new one is
/// made under a temporary name and renamed over (the old one used to be truncated first). The
/// source fails halfway by being a mounted vault file with a tampered middle chunk.
#[test]
fn put_over_an_existing_file_keeps_it_when_the_copy_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let src_vault = tmp.path().join("src-vault");
    init_vault(&src_vault);
    let m = Mount::at(&src_vault, &tmp.path().join("mnt"), PW, &[]);
    fs::write(m.mnt.join("big"), vec![7u8; 3 * 32768]).unwrap();
    assert!(m.unmount().success());
    let v = oxcrypt_core::Vault::open(&src_vault, PW).unwrap();
    let payload = v.resolve("/big").unwrap().payload_path();
    drop(v);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&payload)
        .unwrap();
    let at = f.metadata().unwrap().len() - 40_000;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);
    let m = Mount::at(&src_vault, &tmp.path().join("mnt"), PW, &["--read-only"]);

    let dst_vault = tmp.path().join("dst-vault");
    init_vault(&dst_vault);
    let old = tmp.path().join("old");
    fs::write(&old, b"the old content").unwrap();
    let d = dst_vault.to_str().unwrap();
    assert!(cli(&["put", d, old.to_str().unwrap(), "/f"])
        .status
        .success());
    let put = cli(&["put", d, m.mnt.join("big").to_str().unwrap(), "/f"]);
    assert!(
        !put.status.success(),
        "the copy of a tampered file succeeded"
    );
    assert_eq!(cli(&["cat", d, "/f"]).stdout, b"the old content");
    let ls = String::from_utf8(cli(&["ls", d, "/"]).stdout).unwrap();
    assert_eq!(ls.trim(), "f", "left behind: {ls}");
    assert!(m.unmount().success());
}

/// kill -9 of the daemon at a random point of a write-and-rename workload, eight times over:
/// every file that was written, fsynced and renamed into place before the kill reads back
/// whole, and `check` finds nothing wrong except, at worst, in a temporary file that was being
/// written when the daemon died.
#[test]
fn kill_9_during_writes_and_renames_loses_nothing_that_was_synced() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let mnt = tmp.path().join("mnt");
    let long = "x".repeat(180);
    let mut synced: Vec<(String, usize)> = Vec::new();
    for round in 0..8usize {
        let mut m = Mount::at(&vault, &mnt, PW, &[]);
        let done = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (done, stop, root, long) =
                (done.clone(), stop.clone(), m.mnt.clone(), long.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = if i % 2 == 0 {
                        format!("r{round}-f{i}-{long}")
                    } else {
                        format!("r{round}-f{i}")
                    };
                    let tmp_name = format!("r{round}-tmp{i}");
                    let data = vec![(i % 251) as u8 + 1; 40_000 + i * 997];
                    let ok = (|| -> std::io::Result<()> {
                        let mut f = File::create(root.join(&tmp_name))?;
                        f.write_all(&data)?;
                        f.sync_all()?;
                        drop(f);
                        fs::rename(root.join(&tmp_name), root.join(&name))?;
                        File::open(&root)?.sync_all()
                    })();
                    if ok.is_err() {
                        break;
                    }
                    done.lock().unwrap().push((name, i));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 + (round as u64 * 37) % 250));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
        let _ = m.child.as_mut().unwrap().wait();
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        drop(m);
        synced.extend(done.lock().unwrap().drain(..));
    }
    assert!(
        synced.len() >= 8,
        "the workload did too little ({})",
        synced.len()
    );
    let v = oxcrypt_core::Vault::open(&vault, PW).unwrap();
    for (name, i) in &synced {
        let node = v
            .resolve(&format!("/{name}"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let fh = v.open_file(&node, false).unwrap();
        let mut buf = vec![0u8; 40_000 + i * 997 + 10];
        let n = fh.read_at(0, &mut buf).unwrap();
        assert_eq!(n, 40_000 + i * 997, "{name}");
        assert!(buf[..n].iter().all(|&b| b == (i % 251) as u8 + 1), "{name}");
    }
    let check = cli(&["check", vault.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&check.stdout);
    for line in out.lines().filter(|l| l.starts_with("error")) {
        assert!(line.contains("-tmp"), "check: {line}");
    }
}

/// Whether this run goes through the io_uring transport (`ci/with-enable-uring.sh` sets
/// `OXCRYPT_TRANSPORT=uring` and `enable_uring=Y`, and puts the parameter back afterwards).
fn ring_run() -> bool {
    std::env::var("OXCRYPT_TRANSPORT").as_deref() == Ok("uring")
}

impl Mount {
    /// Unmounts and returns what the daemon wrote to stderr (`--stats` prints there at exit).
    fn unmount_stderr(mut self) -> String {
        let mut err = self.child.as_mut().unwrap().stderr.take().unwrap();
        let status = Mount {
            child: self.child.take(),
            mnt: self.mnt.clone(),
            vault: self.vault.clone(),
            _tmp: None,
        }
        .unmount();
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        assert!(status.success(), "daemon exit {status:?}: {s}");
        s
    }
}

/// The `--stats` report: requests per queue, and `/dev/fuse` requests by opcode.
fn parse_stats(report: &str) -> (String, Vec<u64>, Vec<(String, u64)>) {
    let transport = report
        .lines()
        .find_map(|l| l.strip_prefix("transport: "))
        .unwrap_or_else(|| panic!("no stats in: {report}"))
        .to_string();
    let queues = report
        .lines()
        .filter_map(|l| l.strip_prefix("queue "))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let dev = report
        .lines()
        .find_map(|l| l.strip_prefix("/dev/fuse after INIT: "))
        .map(|l| {
            l.split(' ')
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    (transport, queues, dev)
}

/// A metadata and data workload, every process pinned to `cpu`.
fn pinned_workload(mnt: &Path, cpu: usize, tag: &str) {
    let script = format!(
        "set -e; cd {m}; mkdir d-{tag}; for i in $(seq 40); do echo $i > d-{tag}/f$i; cat d-{tag}/f$i >/dev/null; \
         stat d-{tag}/missing$i >/dev/null 2>&1 || true; done; mv d-{tag}/f1 d-{tag}/g1; rm d-{tag}/f2; ls -l d-{tag} >/dev/null; \
         dd if=/dev/zero of=d-{tag}/big bs=256k count=8 status=none; sync d-{tag}/big; cat d-{tag}/big >/dev/null",
        m = mnt.display()
    );
    let out = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_ring_serves_each_cpus_requests_and_dev_fuse_only_forgets() {
    if !ring_run() {
        eprintln!("skipped: needs the io_uring transport (run under ci/with-enable-uring.sh)");
        return;
    }
    let cpus = oxcrypt_fuse::uring::possible_cpus();
    let online = std::thread::available_parallelism().unwrap().get();
    for cpu in 0..cpus.min(online) {
        let m = Mount::fresh(&["--stats"]);
        pinned_workload(&m.mnt, cpu, "w");
        let report = m.unmount_stderr();
        let (transport, queues, dev) = parse_stats(&report);
        assert_eq!(transport, "io_uring", "{report}");
        assert_eq!(queues.len(), cpus, "one queue per possible CPU: {report}");
        let total: u64 = queues.iter().sum();
        assert!(
            queues[cpu] >= 200 && queues[cpu] * 10 >= total * 9,
            "a client pinned to CPU {cpu} must be served by queue {cpu}: {report}"
        );
        for (op, _) in &dev {
            assert!(
                ["FORGET", "BATCH_FORGET", "INTERRUPT"].contains(&op.as_str()),
                "/dev/fuse served {op} while the ring was up: {report}"
            );
        }
    }
}

#[test]
fn without_the_ring_the_mount_falls_back_with_one_clear_line() {
    if ring_run() {
        // The kernel offers the ring but refuses every REGISTER (a debug-build knob registers
        // too small a payload buffer): it goes back to /dev/fuse by itself, and so do we.
        let tmp = tempfile::tempdir().unwrap();
        let vault = tmp.path().join("vault");
        init_vault(&vault);
        let m = Mount::at_env(
            &vault,
            &tmp.path().join("mnt"),
            PW,
            &["--stats"],
            &[("OXCRYPT_TEST_REFUSE_REGISTER", "1")],
        );
        let m = within(20, "serving after a refused REGISTER", move || {
            fs::write(m.mnt.join("f"), b"over /dev/fuse").unwrap();
            assert_eq!(fs::read(m.mnt.join("f")).unwrap(), b"over /dev/fuse");
            m
        });
        let report = m.unmount_stderr();
        let (transport, queues, dev) = parse_stats(&report);
        assert_eq!(transport, "/dev/fuse (own loop)", "{report}");
        assert_eq!(queues.iter().sum::<u64>(), 0, "{report}");
        assert!(dev.iter().any(|(op, _)| op == "LOOKUP"), "{report}");
        assert_eq!(
            report.matches("REGISTER was refused").count(),
            1,
            "{report}"
        );
        return;
    }
    let param = fs::read_to_string("/sys/module/fuse/parameters/enable_uring").unwrap_or_default();
    if param.trim() == "Y" {
        eprintln!("skipped: enable_uring is Y outside ci/with-enable-uring.sh");
        return;
    }
    // `uring` asked for: a clear refusal that says how to turn it on.
    let (_tmp, vault, mnt) = vault_and_mountpoint();
    let out = Command::new(bin())
        .args([
            "mount",
            vault.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--transport",
            "uring",
        ])
        .env("OXCRYPT_PASSWORD", PW)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("enable_uring"), "{err}");
    assert!(!is_mounted(&mnt));
    // `auto`: mounted over /dev/fuse, with one line saying why.
    let m = Mount::at(&vault, &mnt, PW, &["--transport", "auto", "--stats"]);
    fs::write(m.mnt.join("f"), b"x").unwrap();
    let report = m.unmount_stderr();
    assert_eq!(report.matches("not io_uring").count(), 1, "{report}");
    assert_eq!(
        report
            .matches("echo Y > /sys/module/fuse/parameters/enable_uring")
            .count(),
        1,
        "{report}"
    );
    assert!(report.contains("transport: /dev/fuse (fuser)"), "{report}");
}

/// Registered io_uring buffers count against RLIMIT_MEMLOCK for a daemon without
/// CAP_IPC_LOCK (any non-root user). Run as root with that capability dropped and the
/// default 8 MiB limit, 16 workers cannot all register: the rings must stay, with
/// unregistered buffers, and one line must say so; the old engine fell back to pread.
#[test]
fn io_uring_stays_in_use_under_the_default_memlock_limit() {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is missing");
        return;
    }
    let (_tmp, vault, mnt) = vault_and_mountpoint();
    let limit = 8 << 20;
    let mut child = Command::new("setpriv")
        .args(["--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--"])
        .arg("prlimit")
        .arg(format!("--memlock={limit}:{limit}"))
        .arg(bin())
        .args(["mount", vault.to_str().unwrap(), mnt.to_str().unwrap()])
        .args(["--threads", "16", "--transport", "dev-fuse"])
        .env("OXCRYPT_PASSWORD", PW)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !is_mounted(&mnt) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mount did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = Mount {
        child: None,
        mnt: mnt.clone(),
        vault: vault.clone(),
        _tmp: None,
    };
    // The daemon is prlimit's child (prlimit execs it: same pid).
    let pid = child.id();
    fs::write(mnt.join("f"), vec![3u8; 200_000]).unwrap();
    assert_eq!(fs::read(mnt.join("f")).unwrap(), vec![3u8; 200_000]);
    let rings = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter(|fd| {
            fs::read_link(fd.as_ref().unwrap().path())
                .unwrap_or_default()
                .to_string_lossy()
                .contains("io_uring")
        })
        .count();
    let _ = Command::new(bin()).arg("umount").arg(&mnt).status();
    let status = child.wait().unwrap();
    drop(m);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("io: uring"), "the engine left io_uring: {err}");
    assert!(
        rings >= 16,
        "only {rings} io_uring rings in the daemon: {err}"
    );
    assert_eq!(err.matches("cannot be registered").count(), 1, "{err}");
}

/// The fusectl file system (`/sys/fs/fuse/connections`), mounted for the test if it was not;
/// unmounted again afterwards in that case.
struct FuseCtl {
    mounted_here: bool,
}

impl FuseCtl {
    const DIR: &'static str = "/sys/fs/fuse/connections";

    fn get() -> FuseCtl {
        let mounted = oxcrypt_fuse::mountinfo::mount_at(Path::new(Self::DIR)).is_some();
        if !mounted {
            let st = Command::new("mount")
                .args(["-t", "fusectl", "none", Self::DIR])
                .status()
                .unwrap();
            assert!(st.success(), "cannot mount fusectl");
        }
        FuseCtl {
            mounted_here: !mounted,
        }
    }
}

impl Drop for FuseCtl {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(Self::DIR).status();
        }
    }
}

#[test]
fn aborting_the_connection_under_load_ends_clients_and_daemon_cleanly() {
    let mut m = Mount::fresh(&[]);
    fs::write(m.mnt.join("f"), vec![9u8; 4 << 20]).unwrap();
    let dev = fs::metadata(&m.mnt).unwrap().dev();
    let minor = libc::minor(dev);
    // Clients reading and writing in a loop until the connection goes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (mnt, stop) = (m.mnt.clone(), stop.clone());
            std::thread::spawn(move || -> std::io::Error {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let r = if i % 2 == 0 {
                        File::open(mnt.join("f")).and_then(|mut f| f.read(&mut buf).map(drop))
                    } else {
                        fs::write(mnt.join(format!("w{i}")), &buf)
                    };
                    if let Err(e) = r {
                        return e;
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return std::io::Error::other("stopped before the abort took effect");
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let ctl = FuseCtl::get();
    fs::write(format!("{}/{minor}/abort", FuseCtl::DIR), "1").unwrap();
    let t0 = Instant::now();
    let errors: Vec<std::io::Error> = within(10, "clients after the abort", move || {
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for e in &errors {
        assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
            ),
            "a client ended with {e}"
        );
    }
    // The daemon notices and exits by itself, leaving no thread behind.
    let mut child = m.child.take().unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the daemon outlived its connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(ctl);
    // The dead mount can be unmounted.
    let st = Command::new("umount").arg(&m.mnt).status().unwrap();
    assert!(st.success() || !is_mounted(&m.mnt));
}

/// `--extpass`: the daemon gets its password from a program, and keeps it neither in its
/// command line nor in its environment (the variable is scrubbed even when another source
/// won).
#[test]
fn a_mount_with_extpass_keeps_the_password_out_of_argv_and_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let pw_file = tmp.path().join("pw");
    fs::write(&pw_file, format!("{PW}\n")).unwrap();
    let cmd = format!("cat {}", pw_file.display());
    let m = Mount::at(&vault, &tmp.path().join("mnt"), PW, &["--extpass", &cmd]);
    fs::write(m.mnt.join("f"), b"x").unwrap();
    for what in ["environ", "cmdline"] {
        let bytes = fs::read(format!("/proc/{}/{what}", m.pid())).unwrap();
        assert!(
            !bytes.windows(PW.len()).any(|w| w == PW.as_bytes()),
            "the password is in the daemon's {what}"
        );
    }
    assert!(m.unmount().success());
}

/// Issue 12 point 3: `--idle` unmounts once nothing is open and nothing is asked for that
/// long, and never while a file is open.
#[test]
fn an_idle_mount_unmounts_itself_but_not_while_a_file_is_open() {
    let mut m = Mount::fresh(&["--idle", "1s"]);
    let mut held = File::create(m.mnt.join("held")).unwrap();
    held.write_all(b"kept").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(is_mounted(&m.mnt), "unmounted while a file was open");
    drop(held);
    let mut child = m.child.take().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "still mounted 15 s after the last close"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&m.mnt));
    let cat = cli(&["cat", m.vault.to_str().unwrap(), "/held"]);
    assert_eq!(cat.stdout, b"kept");
}

/// The helpers `oxcrypt install-helpers` puts in /sbin for the test, removed afterwards
/// (they are global: another oxcrypt's helpers already there make the test skip).
struct SbinHelpers {
    installed: bool,
}

impl SbinHelpers {
    fn install() -> Option<SbinHelpers> {
        let ours = fs::canonicalize(bin()).unwrap();
        for name in ["mount.oxcrypt", "mount.fuse.oxcrypt"] {
            if let Ok(target) = fs::read_link(Path::new("/sbin").join(name)) {
                if target != ours {
                    return None;
                }
            }
        }
        let out = Command::new(bin()).arg("install-helpers").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(SbinHelpers { installed: true })
    }
}

impl Drop for SbinHelpers {
    fn drop(&mut self) {
        if self.installed {
            for name in ["mount.oxcrypt", "mount.fuse.oxcrypt"] {
                let _ = fs::remove_file(Path::new("/sbin").join(name));
            }
        }
    }
}

/// Issue 12 point 1: an /etc/fstab line (here a temporary fstab, `mount -T FILE`) of type
/// `oxcrypt` or `fuse.oxcrypt` mounts through `mount(8)` and unmounts through `umount`.
#[test]
fn fstab_lines_mount_through_mount_8() {
    let Some(_helpers) = SbinHelpers::install() else {
        eprintln!("skipped: another oxcrypt's mount helpers are in /sbin");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    init_vault(&vault);
    let pw = tmp.path().join("pw");
    fs::write(&pw, format!("{PW}\n")).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    for (i, fstype) in ["oxcrypt", "fuse.oxcrypt"].iter().enumerate() {
        let mnt = tmp.path().join(format!("mnt{i}"));
        fs::create_dir(&mnt).unwrap();
        let fstab = tmp.path().join(format!("fstab{i}"));
        fs::write(
            &fstab,
            format!(
                "# test\n{} {} {fstype} passfile={},allow_other,noauto,nofail,idle=1h,x-systemd.automount 0 0\n",
                vault.display(),
                mnt.display(),
                pw.display()
            ),
        )
        .unwrap();
        let out = Command::new("mount")
            .arg("-T")
            .arg(&fstab)
            .arg(&mnt)
            .env_remove("OXCRYPT_PASSWORD")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(&mnt));
        fs::write(mnt.join(format!("via-fstab-{i}")), b"fstab").unwrap();
        let st = Command::new("umount").arg(&mnt).status().unwrap();
        assert!(st.success());
        assert!(!is_mounted(&mnt));
        let cat = cli(&["cat", vault.to_str().unwrap(), &format!("/via-fstab-{i}")]);
        assert_eq!(cat.stdout, b"fstab");
    }
}

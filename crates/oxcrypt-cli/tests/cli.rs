//! The `oxcrypt` binary end to end: a vault made with `init` + `put` round-trips through
//! `get`, every edit command behaves like its shell namesake, and tampered ciphertext is
//! reported by `check` and refused by reads.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oxcrypt_core::Vault;

const PW: &str = "correct horse";

fn oxcrypt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
        .args(args)
        .env("OXCRYPT_PASSWORD", PW)
        .env_remove("OXCRYPT_NEW_PASSWORD")
        .output()
        .expect("run oxcrypt")
}

fn ok(args: &[&str]) -> String {
    let out = oxcrypt(args);
    assert!(
        out.status.success(),
        "oxcrypt {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    vault: PathBuf,
    work: PathBuf,
}

fn new_vault(cipher: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    ok(&["init", s(&vault), "--cipher", cipher, "--scrypt-cost", "16"]);
    Fixture {
        _tmp: tmp,
        vault,
        work,
    }
}

/// A local tree with chunk-boundary sizes, a long name, a multibyte name, a symlink.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    for (name, size) in [
        ("empty", 0usize),
        ("one", 1),
        ("almost", 32767),
        ("exact", 32768),
        ("over", 32769),
        ("three", 3 * 32768),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        fs::write(root.join(name), data).unwrap();
    }
    fs::write(root.join("sub").join("n".repeat(200)), b"long name").unwrap();
    fs::write(root.join("sub/deeper/żółw.txt"), "turtle").unwrap();
    std::os::unix::fs::symlink("../one", root.join("sub/link")).unwrap();
}

fn diff(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference", s(a), s(b)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn put_get_round_trip_both_ciphers() {
    for cipher in ["SIV_GCM", "SIV_CTRMAC"] {
        let f = new_vault(cipher);
        let src = f.work.join("src");
        make_tree(&src);
        ok(&["put", s(&f.vault), s(&src), "/"]);
        let out = f.work.join("out");
        ok(&["get", s(&f.vault), "/src", s(&out)]);
        diff(&src, &out);
        let check = oxcrypt(&["check", s(&f.vault)]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        // The vault is a valid Cryptomator vault for the core library too.
        let v = Vault::open(&f.vault, PW).unwrap();
        assert_eq!(v.config().cipher_combo.name(), cipher);
    }
}

#[test]
fn ls_tree_cat_mkdir_mv_rm_ln() {
    let f = new_vault("SIV_GCM");
    let v = s(&f.vault);
    let local = f.work.join("hello.txt");
    fs::write(&local, "hello world\n").unwrap();
    ok(&["mkdir", v, "/docs"]);
    ok(&["mkdir", "-p", v, "/a/b/c"]);
    ok(&["put", v, s(&local), "/docs"]);
    assert_eq!(ok(&["cat", v, "/docs/hello.txt"]), "hello world\n");
    assert_eq!(ok(&["ls", v]), "a\ndocs\n");
    ok(&["mv", v, "/docs/hello.txt", "/a/b"]);
    assert_eq!(ok(&["ls", v, "/a/b"]), "c\nhello.txt\n");
    ok(&["ln", "-s", v, "b/hello.txt", "/a/link"]);
    let long = ok(&["ls", "-l", v, "/a"]);
    assert!(long.contains("link -> b/hello.txt"), "{long}");
    assert!(long.starts_with("drwx"), "{long}");
    let rec = ok(&["ls", "-R", v]);
    assert!(rec.contains("/a/b:\nc\nhello.txt\n"), "{rec}");
    let tree = ok(&["tree", v]);
    assert!(
        tree.contains("└── docs") && tree.contains("4 directories, 2 files"),
        "{tree}"
    );
    // rm of a directory needs -r; -f ignores missing paths.
    let out = oxcrypt(&["rm", v, "/a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
    ok(&["rm", "-r", v, "/a"]);
    ok(&["rm", "-f", v, "/nothing"]);
    assert_eq!(oxcrypt(&["rm", v, "/nothing"]).status.code(), Some(1));
    assert_eq!(ok(&["ls", v]), "docs\n");
    // Moving a directory into itself is refused.
    ok(&["mkdir", v, "/docs/inner"]);
    let out = oxcrypt(&["mv", v, "/docs", "/docs/inner"]);
    assert!(!out.status.success());
    // Hard links do not exist in the format.
    assert_eq!(oxcrypt(&["ln", v, "x", "/y"]).status.code(), Some(2));
}

#[test]
fn errors_and_exit_codes() {
    let f = new_vault("SIV_GCM");
    let v = s(&f.vault);
    let out = Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
        .args(["ls", v])
        .env("OXCRYPT_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "one clear line"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    // init refuses a non-empty directory; the existing files stay untouched.
    let busy = f.work.join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep"), "x").unwrap();
    let out = oxcrypt(&["init", s(&busy), "--scrypt-cost", "16"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read(busy.join("keep")).unwrap(), b"x");
    // A malformed config is one clear line naming the file.
    let bad = f.work.join("bad");
    fs::create_dir(&bad).unwrap();
    fs::write(bad.join("vault.cryptomator"), "garbage").unwrap();
    fs::copy(
        f.vault.join("masterkey.cryptomator"),
        bad.join("masterkey.cryptomator"),
    )
    .unwrap();
    let out = oxcrypt(&["ls", s(&bad)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("vault.cryptomator") && err.contains("malformed"),
        "{err}"
    );
    // No password source and no terminal: a clear message, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
        .args(["ls", v])
        .env_remove("OXCRYPT_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    // --help documents the exit codes and the password variable.
    let help = ok(&["--help"]);
    assert!(
        help.contains("EXIT STATUS") && help.contains("OXCRYPT_PASSWORD"),
        "{help}"
    );
    // Masterkey file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(f.vault.join("masterkey.cryptomator"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn passwd_keeps_a_backup_and_content() {
    let f = new_vault("SIV_CTRMAC");
    let v = s(&f.vault);
    let local = f.work.join("x");
    fs::write(&local, "kept").unwrap();
    ok(&["put", v, s(&local), "/x"]);
    let new_pw = f.work.join("newpw");
    fs::write(&new_pw, "new password\n").unwrap();
    ok(&["passwd", v, "--new-password-file", s(&new_pw)]);
    let backups: Vec<_> = fs::read_dir(&f.vault)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bkup"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        oxcrypt(&["cat", v, "/x"]).status.code(),
        Some(3),
        "old password refused"
    );
    let out = oxcrypt(&["--password-file", s(&new_pw), "cat", v, "/x"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept");
}

/// Which ciphertext file holds a cleartext path.
fn payload(vault: &Path, path: &str) -> PathBuf {
    let v = Vault::open(vault, PW).unwrap();
    v.resolve(path).unwrap().payload_path()
}

fn flip(path: &Path, offset: usize) {
    let mut data = fs::read(path).unwrap();
    data[offset] ^= 0x01;
    fs::write(path, data).unwrap();
}

/// Builds a vault with two 3-chunk files, applies `tamper`, then expects `check` to fail
/// naming `needle` and `cat`/`get` of `path` to fail without output of forged bytes.
fn tamper_case(cipher: &str, tamper: impl Fn(&Path), path: &str, needle: &str) {
    let f = new_vault(cipher);
    let v = s(&f.vault);
    let src = f.work.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), vec![b'a'; 3 * 32768]).unwrap();
    fs::write(src.join("b"), vec![b'b'; 3 * 32768]).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/inner"), b"inner").unwrap();
    ok(&["put", v, s(&src), "/"]);
    tamper(&f.vault);
    let check = oxcrypt(&["check", v]);
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert_eq!(check.status.code(), Some(4), "check must fail: {report}");
    assert!(
        report.contains(needle),
        "check output lacks {needle:?}: {report}"
    );
    let cat = oxcrypt(&["cat", v, path]);
    assert!(!cat.status.success(), "cat {path} must fail");
    assert!(!cat.stdout.iter().any(|&b| b != b'a' && b != b'b' && b != 0) || cat.stdout.is_empty());
    let dest = f.work.join("got");
    let get = oxcrypt(&["get", v, path, s(&dest)]);
    assert!(!get.status.success(), "get {path} must fail");
    assert!(!dest.exists(), "a failed get leaves no file");
}

#[test]
fn tampering_is_detected_and_refused() {
    for cipher in ["SIV_GCM", "SIV_CTRMAC"] {
        let combo = oxcrypt_core::CipherCombo::from_name(cipher).unwrap();
        let hl = combo.header_len();
        let cl = combo.chunk_ciphertext_len();
        // Bit flip inside chunk 1.
        tamper_case(
            cipher,
            |v| flip(&payload(v, "/src/a"), hl + cl + 100),
            "/src/a",
            "chunk 1 failed authentication",
        );
        // Chunks 0 and 1 swapped.
        tamper_case(
            cipher,
            |v| {
                let p = payload(v, "/src/a");
                let mut d = fs::read(&p).unwrap();
                let (c0, c1) = (d[hl..hl + cl].to_vec(), d[hl + cl..hl + 2 * cl].to_vec());
                d[hl..hl + cl].copy_from_slice(&c1);
                d[hl + cl..hl + 2 * cl].copy_from_slice(&c0);
                fs::write(&p, d).unwrap();
            },
            "/src/a",
            "chunk 0 failed authentication",
        );
        // Chunk 0 copied from another file.
        tamper_case(
            cipher,
            |v| {
                let (pa, pb) = (payload(v, "/src/a"), payload(v, "/src/b"));
                let mut a = fs::read(&pa).unwrap();
                let b = fs::read(&pb).unwrap();
                a[hl..hl + cl].copy_from_slice(&b[hl..hl + cl]);
                fs::write(&pa, a).unwrap();
            },
            "/src/a",
            "chunk 0 failed authentication",
        );
        // Last chunk truncated by 10 bytes.
        tamper_case(
            cipher,
            |v| {
                let p = payload(v, "/src/a");
                let len = fs::metadata(&p).unwrap().len();
                fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(len - 10)
                    .unwrap();
            },
            "/src/a",
            "chunk 2 failed authentication",
        );
        // Broken header.
        tamper_case(
            cipher,
            |v| flip(&payload(v, "/src/a"), 20),
            "/src/a",
            "header failed authentication",
        );
        // Broken name: the ciphertext name of a file altered.
        tamper_case(
            cipher,
            |v| {
                let p = payload(v, "/src/a");
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                let mut chars: Vec<char> = name.chars().collect();
                chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
                let renamed: String = chars.into_iter().collect();
                fs::rename(&p, p.with_file_name(renamed)).unwrap();
            },
            "/src/a",
            "encrypted name does not decrypt",
        );
        // Missing dir.c9r.
        tamper_case(
            cipher,
            |v| fs::remove_file(payload(v, "/src/d")).unwrap(),
            "/src/d/inner",
            "broken node",
        );
    }
}

/// A 255-byte name (the most Linux allows) round-trips through `put` and `get`, and `get`
/// leaves no temporary file behind. Its temporary name used to be the name plus a suffix,
/// which failed with "File name too long".
#[test]
fn get_of_a_255_byte_name() {
    let f = new_vault("SIV_GCM");
    let name = format!("{}.bin", "n".repeat(251));
    assert_eq!(name.len(), 255);
    let src = f.work.join(&name);
    fs::write(&src, b"longest name").unwrap();
    ok(&["put", s(&f.vault), s(&src), &format!("/{name}")]);
    let out_dir = f.work.join("out");
    fs::create_dir(&out_dir).unwrap();
    ok(&[
        "get",
        s(&f.vault),
        &format!("/{name}"),
        s(&out_dir.join(&name)),
    ]);
    assert_eq!(fs::read(out_dir.join(&name)).unwrap(), b"longest name");
    let left: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(left.len(), 1, "temporary files left behind");
}

/// Runs oxcrypt with no password anywhere (no variable, stdin not a terminal).
fn oxcrypt_without_password(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
        .args(args)
        .env_remove("OXCRYPT_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run oxcrypt")
}

/// Issue 12, first impressions: a missing vault or a bad mountpoint is reported before any
/// password is asked for, and `--help` leads with mounting.
#[test]
fn a_missing_vault_or_bad_mountpoint_is_reported_before_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let nowhere = tmp.path().join("nonexistent");
    for args in [
        vec!["mount", s(&nowhere), s(&mnt)],
        vec!["ls", s(&nowhere)],
        vec!["info", s(&nowhere)],
    ] {
        let out = oxcrypt_without_password(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{args:?}");
        assert!(
            !err.contains("password"),
            "{args:?} asked for a password first: {err}"
        );
        assert!(err.contains("nonexistent"), "{args:?}: {err}");
    }
    // A directory that is no vault.
    let out = oxcrypt_without_password(&["mount", s(tmp.path()), s(&mnt)]);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !err.contains("password") && err.contains("not a cryptomator vault"),
        "{err}"
    );
    // A real vault and a mountpoint that does not exist: the mountpoint is named.
    let f = new_vault("SIV_GCM");
    let out = oxcrypt_without_password(&["mount", s(&f.vault), s(&tmp.path().join("nomnt"))]);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !err.contains("password") && err.contains("does not exist"),
        "{err}"
    );
    let help = ok(&["--help"]);
    assert!(
        help.lines().next().unwrap().starts_with("oxcrypt mounts"),
        "{help}"
    );
    let short = ok(&["-h"]);
    assert!(
        short.lines().next().unwrap().starts_with("Mount "),
        "{short}"
    );
}

/// Issue 12 point 4: completions and man pages come from the clap definitions, so they know
/// every command and option.
#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ok(&["completions", shell]);
        assert!(
            out.contains("mount") && out.contains("transport"),
            "{shell}: {out}"
        );
    }
    let man = ok(&["man"]);
    assert!(man.contains(".TH oxcrypt 1"), "{man}");
    assert!(man.contains("umount") && man.contains("check"));
    let tmp = tempfile::tempdir().unwrap();
    ok(&["man", "--dir", s(tmp.path())]);
    let mount = fs::read_to_string(tmp.path().join("oxcrypt-mount.1")).unwrap();
    assert!(
        mount.contains("ring\\-depth") || mount.contains("ring-depth"),
        "{mount}"
    );
    assert!(tmp.path().join("oxcrypt-umount.1").exists());
}

/// Issue 12 point 2: `--extpass CMD` takes the password from a program, run without a shell.
#[test]
fn extpass_runs_a_program_for_the_password_without_a_shell() {
    let f = new_vault("SIV_GCM");
    let work = f.work.clone();
    let pw_file = work.join("pw");
    fs::write(&pw_file, format!("{PW}\nsecond line ignored\n")).unwrap();
    let cmd = format!("cat '{}'", pw_file.display());
    let out = oxcrypt_without_password(&["ls", s(&f.vault), "--extpass", &cmd]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A failing program is an error that names it; so is one that prints nothing.
    let out = oxcrypt_without_password(&["ls", s(&f.vault), "--extpass", "false"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--extpass: false failed"));
    let out = oxcrypt_without_password(&["ls", s(&f.vault), "--extpass", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("printed no password"));
    // No shell: `$PW_VAR` reaches echo as is, so the password is wrong (exit 3), not expanded.
    let out = Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
        .args(["ls", s(&f.vault), "--extpass", "echo $PW_VAR"])
        .env_remove("OXCRYPT_PASSWORD")
        .env("PW_VAR", PW)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 12 point 7: the format-7 fixture (made by Cryptomator) is refused with a pointer to
/// `oxcrypt migrate`, migrated, and then decrypts to its manifest through the format-8 code.
#[test]
fn a_format7_vault_is_migrated_and_reads_back_its_manifest() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cs_format7");
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault");
    let status = Command::new("cp")
        .arg("-r")
        .arg(fixture.join("vault"))
        .arg(&vault)
        .status()
        .unwrap();
    assert!(status.success());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
            .args(args)
            .env("OXCRYPT_PASSWORD", "testtest")
            .output()
            .unwrap()
    };
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    for args in [vec!["ls", s(&vault)], vec!["mount", s(&vault), s(&mnt)]] {
        let out = run(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("format 7") && err.contains("oxcrypt migrate"),
            "{args:?}: {err}"
        );
    }
    let old_mk = fs::read(vault.join("masterkey.cryptomator")).unwrap();
    let wrong = Command::new(env!("CARGO_BIN_EXE_oxcrypt"))
        .args(["migrate", s(&vault)])
        .env("OXCRYPT_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(3));
    assert!(
        !vault.join("vault.cryptomator").exists(),
        "a wrong password changed the vault"
    );
    let out = run(&["migrate", s(&vault)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backups: Vec<_> = fs::read_dir(&vault)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bkup"))
        .collect();
    assert!(
        backups.iter().any(|b| fs::read(b).unwrap() == old_mk),
        "no backup of the old masterkey file"
    );
    // Now format 8: the format-8 code decrypts every file to the manifest's hash and size.
    let v = Vault::open(&vault, "testtest").unwrap();
    assert_eq!(
        v.config().cipher_combo,
        oxcrypt_core::CipherCombo::SivCtrMac
    );
    let out_dir = tmp.path().join("out");
    let out = run(&["get", s(&vault), "/", s(&out_dir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = fs::read_to_string(fixture.join("expected.manifest")).unwrap();
    let mut files = 0;
    for line in manifest.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        if parts[0] != "f" {
            continue;
        }
        let data = fs::read(out_dir.join(parts[3])).unwrap();
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            (hex.as_str(), data.len().to_string()),
            (parts[1], parts[2].to_string()),
            "{}",
            parts[3]
        );
        files += 1;
    }
    assert!(files >= 5);
    let again = run(&["migrate", s(&vault)]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already a format-8 vault"));
}

/// Issue 12 point 5 (the output part): `info --json` and `check --json` print one JSON object
/// with the same facts as the text, and `check` keeps its exit status.
#[test]
fn info_and_check_speak_json() {
    let f = new_vault("SIV_CTRMAC");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--json", s(&f.vault)])).unwrap();
    assert_eq!(info["format"], 8);
    assert_eq!(info["cipherCombo"], "SIV_CTRMAC");
    assert_eq!(info["shorteningThreshold"], 220);
    let check: serde_json::Value =
        serde_json::from_str(&ok(&["check", "--json", s(&f.vault)])).unwrap();
    assert_eq!(check["errors"], 0);
    assert!(check["problems"].as_array().unwrap().is_empty());
    // A junk entry: one error, exit status 4, still one JSON object.
    let content = fs::read_dir(f.vault.join("d"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let content = fs::read_dir(content)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(content.join("junk.c9r"), b"x").unwrap();
    let out = oxcrypt(&["check", "--json", s(&f.vault)]);
    assert_eq!(out.status.code(), Some(4));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check["errors"], 1);
    assert_eq!(check["problems"][0]["severity"], "error");
}

/// Every file under `dir` with its size and modification time: a snapshot to show that
/// nothing changed.
fn tree_snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), md.len(), md.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// Issue 12 point 5: `check --repair` fixes what needs no guessing, says what it did, and
/// leaves a sound vault alone.
#[test]
fn check_repair_fixes_what_needs_no_guessing_and_leaves_a_sound_vault_alone() {
    let f = new_vault("SIV_GCM");
    ok(&["mkdir", s(&f.vault), "/sub"]);
    let src = f.work.join("a.txt");
    fs::write(&src, b"alpha").unwrap();
    ok(&["put", s(&f.vault), s(&src), "/sub/a.txt"]);
    fs::write(&src, b"beta").unwrap();
    ok(&["put", s(&f.vault), s(&src), "/sub/b.txt"]);
    // Sound: nothing to repair, nothing touched.
    let before = tree_snapshot(&f.vault);
    let out = ok(&["check", "--repair", s(&f.vault)]);
    assert!(out.contains("nothing to repair"), "{out}");
    assert_eq!(tree_snapshot(&f.vault), before);
    // Break it three ways: a lost dirid.c9r, a junk name, a sync-conflict copy.
    let v = Vault::open(&f.vault, PW).unwrap();
    let sub = v.resolve("/sub").unwrap();
    let sub_id = sub.dir_id().unwrap().clone();
    let content = v.content_dir(&sub_id);
    fs::remove_file(content.join("dirid.c9r")).unwrap();
    fs::write(content.join("junk.c9r"), b"junk").unwrap();
    let b = v.lookup(&sub_id, "b.txt").unwrap().unwrap().entry;
    let a = v.lookup(&sub_id, "a.txt").unwrap().unwrap().entry;
    let copy = a.with_file_name(format!(
        "{} (1).c9r",
        a.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_suffix(".c9r")
            .unwrap()
    ));
    fs::rename(&b, &copy).unwrap();
    drop(v);
    let out = oxcrypt(&["check", s(&f.vault)]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no dirid.c9r") && text.contains("conflict copy"),
        "{text}"
    );
    assert!(copy.exists(), "check alone renamed the conflict copy");
    let out = ok(&["check", "--repair", s(&f.vault)]);
    assert!(out.contains("repaired: wrote the missing"), "{out}");
    assert!(out.contains("repaired: set aside the unreadable"), "{out}");
    assert!(
        out.contains("repaired: resolved the sync conflicts"),
        "{out}"
    );
    assert!(content.join("dirid.c9r").exists());
    assert!(content.join(".unreadable.junk.c9r").exists());
    assert!(!copy.exists());
    // Clean now, and the conflict copy reads back under its new name.
    let again = oxcrypt(&["check", "--json", s(&f.vault)]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(ok(&["cat", s(&f.vault), "/sub/a (1).txt"]), "beta");
    assert_eq!(ok(&["cat", s(&f.vault), "/sub/a.txt"]), "alpha");
}

/// `check --repair` recovers the files of a directory whose `dir.c9r` was lost: its content
/// directory is an orphan whose `dirid.c9r` still names it, so it gets a new directory node
/// under `/oxcrypt-recovered/`; the broken node is set aside.
#[test]
fn check_repair_recovers_a_directory_that_lost_its_dir_c9r() {
    let f = new_vault("SIV_GCM");
    ok(&["mkdir", s(&f.vault), "/photos"]);
    let src = f.work.join("p.jpg");
    fs::write(&src, b"jpeg bytes").unwrap();
    ok(&["put", s(&f.vault), s(&src), "/photos/p.jpg"]);
    let v = Vault::open(&f.vault, PW).unwrap();
    let node = v.resolve("/photos").unwrap();
    let id = node.dir_id().unwrap().clone();
    fs::remove_file(node.entry.join("dir.c9r")).unwrap();
    drop(v);
    let out = oxcrypt(&["check", s(&f.vault)]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("orphan content directory") && text.contains("can be recovered"),
        "{text}"
    );
    let out = ok(&["check", "--repair", s(&f.vault)]);
    assert!(out.contains("recovered the orphan"), "{out}");
    let short: String = id.chars().take(8).collect();
    let recovered = format!("/oxcrypt-recovered/orphan-{short}/p.jpg");
    assert_eq!(ok(&["cat", s(&f.vault), &recovered]), "jpeg bytes");
    let again = oxcrypt(&["check", s(&f.vault)]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

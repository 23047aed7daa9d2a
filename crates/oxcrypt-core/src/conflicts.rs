//! Sync conflicts: a sync client that finds a file changed on two sides keeps both, the
//! second under a name with a suffix (`ABC…== (1).c9r`, `ABC…== (conflicted copy).c9r`,
//! `ABC…==-conflict-2026-11-25.c9r`). Such a name does not decrypt as a whole, so it would be
//! hidden. Resolved the way Cryptomator's file system does it, when the directory is listed:
//!
//! - the encrypted name is the longest base64url run in it (narrowed at `-`/`_` if the run
//!   swallowed part of the suffix) that authenticates in this directory;
//! - if the canonical entry (`that name.c9r`) is absent, the copy simply takes its place;
//! - if both are directories with the same `dir.c9r`, or symlinks with the same
//!   `symlink.c9r`, the copy is a duplicate and is removed;
//! - otherwise the copy is renamed to the encrypted form of `name (N).ext`, the first free N,
//!   and shows up under that name.
//!
//! Every step is one rename (refusing to replace anything) or one removal, so an interrupted
//! resolution leaves either the old name or the new one.

use std::path::{Path, PathBuf};

use crate::fault;
use crate::names::NameCodec;
use crate::node::{DIR_FILE, SYMLINK_FILE};
use crate::store;

const C9R: &str = ".c9r";

/// Whether `c` may appear in a base64url name.
fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Candidate encrypted names inside `stem` (a `.c9r` name without the suffix), longest first:
/// each maximal base64url run (with trailing `=` padding), and the parts of it between
/// `-`/`_` delimiters, at least 24 characters and a multiple of 4 long.
fn candidates(stem: &str) -> Vec<&str> {
    let b = stem.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_b64(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_b64(b[i]) {
            i += 1;
        }
        while i < b.len() && b[i] == b'=' {
            i += 1;
        }
        let run = &stem[start..i];
        // Cuts: the run's ends and every delimiter inside it.
        let cuts: Vec<usize> = std::iter::once(0)
            .chain(
                run.bytes()
                    .enumerate()
                    .filter(|(_, c)| *c == b'-' || *c == b'_')
                    .flat_map(|(k, _)| [k, k + 1]),
            )
            .chain(std::iter::once(run.len()))
            .collect();
        for &a in &cuts {
            for &z in &cuts {
                if z > a && z - a >= 24 && (z - a) % 4 == 0 {
                    out.push(&run[a..z]);
                }
            }
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.len()));
    out.dedup();
    out
}

/// The encrypted name (without `.c9r`) hidden in a conflict copy's name, and its cleartext.
pub fn extract<'a>(
    names: &NameCodec,
    dir_id: &str,
    file_name: &'a str,
) -> Option<(&'a str, String)> {
    let stem = file_name.strip_suffix(C9R)?;
    candidates(stem).into_iter().find_map(|c| {
        let clear = names.decrypt_name(dir_id, c)?;
        Some((c, clear))
    })
}

/// `name (n).ext`, with the base name shortened so the encrypted name stays unshortened
/// (Cryptomator's limit for a 220-character threshold: 146 characters of cleartext).
fn alternative(clear: &str, n: u32, max_clear: usize) -> String {
    let (base, ext) = match clear.rfind('.') {
        Some(i) if i > 0 => clear.split_at(i),
        _ => (clear, ""),
    };
    let suffix = format!(" ({n})");
    let room = max_clear.saturating_sub(ext.len() + suffix.len());
    let mut cut = base.len().min(room);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}{ext}", &base[..cut])
}

/// Whether two node directories hold the same first `limit` bytes of `file`.
fn same_control_file(a: &Path, b: &Path, file: &str, limit: u64) -> bool {
    match (
        store::read_bounded(&a.join(file), limit),
        store::read_bounded(&b.join(file), limit),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// What became of a conflict copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// It is now the entry at this path, with this cleartext name.
    Renamed(PathBuf, String),
    /// It duplicated the canonical entry and was removed.
    Removed,
}

/// Resolves the conflict copy `path` (in content directory `dir` of directory `dir_id`),
/// whose encrypted name is `canonical` (cleartext `clear`).
pub fn resolve(
    names: &NameCodec,
    dir_id: &str,
    dir: &Path,
    path: &Path,
    canonical: &str,
    clear: &str,
    max_clear: usize,
) -> std::io::Result<Resolved> {
    let canonical_path = dir.join(format!("{canonical}{C9R}"));
    match fault::rename_noreplace(path, &canonical_path) {
        Ok(()) => return Ok(Resolved::Renamed(canonical_path, clear.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if path.is_dir()
        && canonical_path.is_dir()
        && (same_control_file(path, &canonical_path, DIR_FILE, 1000)
            || same_control_file(path, &canonical_path, SYMLINK_FILE, 64 * 1024))
    {
        fault::remove_dir_all(path)?;
        return Ok(Resolved::Removed);
    }
    for n in 1..10_000 {
        let alt = alternative(clear, n, max_clear);
        let target = dir.join(names.encrypt_name(dir_id, &alt));
        match fault::rename_noreplace(path, &target) {
            Ok(()) => return Ok(Resolved::Renamed(target, alt)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free conflict name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encrypted_name_is_found_inside_the_suffixes_sync_clients_add() {
        let enc = "AAAABBBBCCCCDDDDEEEE-_FF";
        for name in [
            format!("{enc} (1).c9r"),
            format!("{enc} (conflicted copy 2026-11-25).c9r"),
            format!("{enc}-conflict-20261125.c9r"),
            format!("Copy of {enc}.c9r"),
        ] {
            let c = candidates(name.strip_suffix(".c9r").unwrap());
            assert!(c.contains(&enc), "{name}: {c:?}");
        }
        assert!(candidates("short (1)").is_empty());
    }

    #[test]
    fn alternative_names_keep_the_extension_and_the_length_limit() {
        assert_eq!(alternative("report.txt", 1, 146), "report (1).txt");
        assert_eq!(alternative("Makefile", 2, 146), "Makefile (2)");
        assert_eq!(alternative(".bashrc", 1, 146), ".bashrc (1)");
        let long = "é".repeat(100) + ".txt";
        let alt = alternative(&long, 3, 146);
        assert!(alt.len() <= 146 && alt.ends_with(" (3).txt"), "{alt}");
    }
}

//! Integrity check of a whole vault: every header, chunk, name and directory link is verified
//! and every problem is collected (nothing stops at the first one).

use std::collections::HashSet;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::names::NameCodec;
use crate::vault::{DirId, Node, NodeKind, Vault, NAME_FILE};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Data cannot be read or the tree is broken.
    Error,
    /// Harmless leftovers (e.g. orphan content directories).
    Warning,
}

/// One finding of [`check`].
#[derive(Debug)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Cleartext path, when known.
    pub cleartext: Option<String>,
    /// What is wrong, naming the ciphertext path.
    pub message: String,
    /// What `check --repair` does about it, if it can do something without guessing.
    pub fix: Option<Fix>,
}

/// A repair [`repair`] can make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Write the missing `dirid.c9r` backup of this directory.
    WriteDirIdBackup(DirId),
    /// Rename an entry whose name does not decrypt aside, to a hidden name beside it
    /// (`.unreadable.<name>`), which neither oxcrypt nor Cryptomator lists.
    SetAside(PathBuf),
    /// Resolve the sync-conflict copies of this directory (list it writable).
    ResolveConflicts(DirId),
    /// Give an orphan content directory (its `dirid.c9r` names it) a directory node under
    /// `/oxcrypt-recovered/`, so its files show again.
    RecoverOrphan(DirId),
}

/// The folder in the vault's root where [`Fix::RecoverOrphan`] puts orphans.
pub const RECOVERY_DIR: &str = "oxcrypt-recovered";

/// Prefix of entries [`Fix::SetAside`] renamed aside.
pub const ASIDE_PREFIX: &str = ".unreadable.";

/// The outcome of [`check`].
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Every finding, in walk order.
    pub problems: Vec<Problem>,
    /// Regular files verified.
    pub files: u64,
    /// Directories verified.
    pub dirs: u64,
    /// Symlinks verified.
    pub symlinks: u64,
    /// Cleartext bytes authenticated.
    pub bytes: u64,
}

impl CheckReport {
    /// Number of findings of severity [`Severity::Error`].
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    fn error(&mut self, cleartext: Option<&str>, e: impl std::fmt::Display) {
        self.problems.push(Problem {
            severity: Severity::Error,
            cleartext: cleartext.map(String::from),
            message: e.to_string(),
            fix: None,
        });
    }
}

/// Verifies the whole vault. `progress` is called with the number of cleartext bytes
/// authenticated so far.
pub fn check(vault: &Vault, progress: &mut dyn FnMut(u64)) -> Result<CheckReport> {
    // A check reads; conflict copies are reported (and resolved by `repair`), not renamed.
    let was_read_only = vault.set_read_only(true);
    let mut report = CheckReport::default();
    let mut visited: HashSet<PathBuf> = HashSet::new();
    let root = vault.root_id().clone();
    let walked = check_dir(vault, &root, "/", &mut report, &mut visited, progress)
        .and_then(|()| find_orphans(vault, &visited, &mut report));
    vault.set_read_only(was_read_only);
    walked.map(|()| report)
}

fn check_dir(
    vault: &Vault,
    id: &DirId,
    path: &str,
    report: &mut CheckReport,
    visited: &mut HashSet<PathBuf>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let content_dir = vault.content_dir(id);
    if !visited.insert(content_dir.clone()) {
        report.error(
            Some(path),
            format!(
                "{}: directory id is used twice (loop or copied dir.c9r)",
                content_dir.display()
            ),
        );
        return Ok(());
    }
    report.dirs += 1;
    match vault.read_dirid_backup(id) {
        Ok(None) => report.problems.push(Problem {
            severity: Severity::Warning,
            cleartext: Some(path.to_string()),
            message: format!(
                "{}: no dirid.c9r backup (made by Cryptomator before 1.7, or lost)",
                content_dir.display()
            ),
            fix: Some(Fix::WriteDirIdBackup(id.clone())),
        }),
        Ok(Some(backup)) if backup != **id => report.error(
            Some(path),
            format!(
                "{}: dirid.c9r names another directory",
                content_dir.display()
            ),
        ),
        Ok(_) => {}
        Err(e) => report.error(Some(path), e),
    }
    find_leftovers(&content_dir, path, report);
    let entries = match vault.list_checked(id) {
        Ok(entries) => entries,
        Err(e) => {
            report.error(Some(path), e);
            return Ok(());
        }
    };
    let mut nodes: Vec<Node> = Vec::new();
    for entry in entries {
        match entry {
            Ok(node) => nodes.push(node),
            Err(Error::ConflictCopy { path: copy }) => report.problems.push(Problem {
                severity: Severity::Warning,
                cleartext: Some(path.to_string()),
                message: format!(
                    "{}: a sync client's conflict copy, not yet given its own name",
                    copy.display()
                ),
                fix: Some(Fix::ResolveConflicts(id.clone())),
            }),
            Err(Error::BadName { path: bad }) => report.problems.push(Problem {
                severity: Severity::Error,
                cleartext: None,
                message: Error::BadName { path: bad.clone() }.to_string(),
                fix: Some(Fix::SetAside(bad)),
            }),
            // A directory node that lost its dir.c9r holds nothing readable (its files live
            // on in the content directory, now an orphan, recovered below): set aside.
            Err(Error::BrokenNode { path: node, why })
                if why.starts_with("directory node without") =>
            {
                report.problems.push(Problem {
                    severity: Severity::Error,
                    cleartext: None,
                    message: Error::BrokenNode {
                        path: node.clone(),
                        why,
                    }
                    .to_string(),
                    fix: Some(Fix::SetAside(node)),
                })
            }
            Err(e) => report.error(None, e),
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    for node in nodes {
        let child = if path == "/" {
            format!("/{}", node.name)
        } else {
            format!("{path}/{}", node.name)
        };
        if node.shortened {
            check_shortened_name(vault, id, &node, &child, report);
        }
        match &node.kind {
            NodeKind::File => {
                report.files += 1;
                if let Err(e) = check_file(vault, &node, report, progress) {
                    report.error(Some(&child), e);
                }
            }
            NodeKind::Symlink => {
                report.symlinks += 1;
                if let Err(e) = vault.readlink(&node) {
                    report.error(Some(&child), e);
                }
            }
            NodeKind::Directory(child_id) => {
                if !vault.content_dir(child_id).is_dir() {
                    report.error(
                        Some(&child),
                        Error::BrokenNode {
                            path: node.entry.clone(),
                            why: "dir.c9r points to a missing content directory".into(),
                        },
                    );
                    continue;
                }
                check_dir(vault, child_id, &child, report, visited, progress)?;
            }
        }
    }
    Ok(())
}

fn check_shortened_name(
    vault: &Vault,
    parent: &DirId,
    node: &Node,
    clear: &str,
    report: &mut CheckReport,
) {
    let long = vault.names().encrypt_name(parent, &node.name);
    let expected = NameCodec::shortened_name(&long);
    let actual = node
        .entry
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    if actual.as_deref() != Some(expected.as_str()) {
        report.error(
            Some(clear),
            format!(
                "{}: .c9s name does not match the hash of its {NAME_FILE}",
                node.entry.display()
            ),
        );
    }
}

fn check_file(
    vault: &Vault,
    node: &Node,
    report: &mut CheckReport,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let fh = vault.open_file(node, false)?;
    let size = fh.size()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = fh.read_at(off, &mut buf)?;
        if n == 0 {
            break;
        }
        off += n as u64;
        report.bytes += n as u64;
        progress(report.bytes);
    }
    Ok(())
}

/// Applies the fixes of `report` (its problems without a fix are left for a person), and
/// returns one line per change made. A sound report changes nothing.
pub fn repair(vault: &Vault, report: &CheckReport) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut conflict_dirs: Vec<&DirId> = Vec::new();
    for fix in report.problems.iter().filter_map(|p| p.fix.as_ref()) {
        match fix {
            Fix::WriteDirIdBackup(id) => {
                let p = vault.write_dirid_backup(id)?;
                done.push(format!("wrote the missing {}", p.display()));
            }
            Fix::SetAside(path) => {
                // A shortened node's unreadable name.c9s: the whole node goes aside.
                let path = match path.file_name() {
                    Some(n) if n == NAME_FILE => path.parent().unwrap_or(path),
                    _ => path.as_path(),
                };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let to = path.with_file_name(format!("{ASIDE_PREFIX}{name}"));
                crate::fault::rename_noreplace(path, &to).map_err(|e| Error::io(path, e))?;
                done.push(format!(
                    "set aside the unreadable {} as {}",
                    path.display(),
                    to.display()
                ));
            }
            Fix::ResolveConflicts(id) if !conflict_dirs.contains(&id) => {
                conflict_dirs.push(id);
                let was_read_only = vault.set_read_only(false);
                let listed = vault.list(id);
                vault.set_read_only(was_read_only);
                listed?;
                done.push(format!(
                    "resolved the sync conflicts in {}",
                    vault.content_dir(id).display()
                ));
            }
            Fix::ResolveConflicts(_) => {}
            Fix::RecoverOrphan(id) => {
                let root = vault.root_id().clone();
                let folder = match vault.lookup(&root, RECOVERY_DIR)? {
                    Some(n) => n,
                    None => vault.mkdir(&root, RECOVERY_DIR, 0o700)?,
                };
                let folder_id = folder.dir_id().cloned().ok_or_else(|| {
                    Error::Invalid(format!("/{RECOVERY_DIR} exists and is not a directory"))
                })?;
                let short: String = id.chars().take(8).collect();
                let mut name = format!("orphan-{short}");
                let mut n = 1;
                while vault.lookup(&folder_id, &name)?.is_some() {
                    n += 1;
                    name = format!("orphan-{short} ({n})");
                }
                vault.adopt_dir(&folder_id, &name, id)?;
                done.push(format!(
                    "recovered the orphan {} as /{RECOVERY_DIR}/{name}",
                    vault.content_dir(id).display()
                ));
            }
        }
    }
    Ok(done)
}

/// Hidden temporary entries (`.oxcrypt-…`) left in a content directory by a change that was
/// interrupted (a crash, a kill -9): reported, never listed.
fn find_leftovers(content_dir: &std::path::Path, path: &str, report: &mut CheckReport) {
    let Ok(rd) = std::fs::read_dir(content_dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(crate::fsutil::TEMP_PREFIX)
        {
            report.problems.push(Problem {
                severity: Severity::Warning,
                cleartext: Some(path.to_string()),
                message: format!(
                    "{}: leftover of an interrupted change (safe to delete)",
                    e.path().display()
                ),
                fix: None,
            });
        }
    }
}

fn find_orphans(vault: &Vault, visited: &HashSet<PathBuf>, report: &mut CheckReport) -> Result<()> {
    let d = vault.path().join("d");
    let Ok(level1) = std::fs::read_dir(&d) else {
        return Ok(());
    };
    for l1 in level1.flatten() {
        let Ok(level2) = std::fs::read_dir(l1.path()) else {
            continue;
        };
        for l2 in level2.flatten() {
            let p = l2.path();
            if p.is_dir() && !visited.contains(&p) {
                // Recoverable when its dirid.c9r names it and it holds something.
                let holds_entries = std::fs::read_dir(&p).is_ok_and(|rd| {
                    rd.flatten().any(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        !n.starts_with('.') && n != crate::node::DIRID_FILE
                    })
                });
                let fix = match vault.dirid_of_content_dir(&p) {
                    Ok(Some(id)) if holds_entries => Some(Fix::RecoverOrphan(id)),
                    _ => None,
                };
                report.problems.push(Problem {
                    severity: Severity::Warning,
                    cleartext: None,
                    message: format!(
                        "{}: orphan content directory (no dir.c9r points to it){}",
                        p.display(),
                        if fix.is_some() {
                            "; its dirid.c9r names it, so its files can be recovered"
                        } else {
                            ""
                        }
                    ),
                    fix,
                });
            }
        }
    }
    Ok(())
}

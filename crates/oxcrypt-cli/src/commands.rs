//! The commands that work on one vault: init, info, ls, tree, cat, mkdir, mv, rm, ln, passwd,
//! check. Each unlocks the vault, does one thing, and returns the exit status.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use oxcrypt_core::check::Severity;
use oxcrypt_core::vault::{Ancestors, Attr, FileType};
use oxcrypt_core::{CipherCombo, CreateOptions, Error, Node, NodeKind, Vault};

use crate::password::{self, unlock};
use crate::vault_path::join;
use crate::{CipherArg, Global, EXIT_OK};

pub fn init(g: &Global, vault: &Path, cipher: CipherArg, scrypt_cost: u64) -> Result<u8> {
    if scrypt_cost < 2 || !scrypt_cost.is_power_of_two() {
        bail!("--scrypt-cost must be a power of two greater than 1 (got {scrypt_cost})");
    }
    let combo = match cipher {
        CipherArg::SivGcm => CipherCombo::SivGcm,
        CipherArg::SivCtrMac => CipherCombo::SivCtrMac,
    };
    let pw = password::vault_password(g, true)?;
    let v = Vault::create(
        vault,
        &pw,
        &CreateOptions {
            cipher_combo: combo,
            scrypt_cost,
        },
    )
    .with_context(|| format!("cannot create vault {}", vault.display()))?;
    eprintln!("created vault {} ({})", v.path().display(), combo.name());
    Ok(EXIT_OK)
}

pub fn info(g: &Global, path: &Path, json: bool) -> Result<u8> {
    let v = unlock(g, path)?;
    let c = v.config();
    let mk = oxcrypt_core::masterkey_file::MasterkeyFile::load(&v.path().join(&c.masterkey_file))?;
    if json {
        let out = serde_json::json!({
            "vault": v.path(),
            "format": c.format,
            "cipherCombo": c.cipher_combo.name(),
            "shorteningThreshold": c.shortening_threshold,
            "jti": c.jti,
            "masterkeyFile": c.masterkey_file,
            "scrypt": { "N": mk.scrypt_cost_param, "r": mk.scrypt_block_size, "p": 1 },
            "signature": "valid",
        });
        println!("{out}");
        return Ok(EXIT_OK);
    }
    println!("vault:                {}", v.path().display());
    println!("format:               {}", c.format);
    println!("cipher combo:         {}", c.cipher_combo.name());
    println!("shortening threshold: {}", c.shortening_threshold);
    println!("vault id (jti):       {}", c.jti);
    println!("masterkey file:       {}", c.masterkey_file);
    println!(
        "scrypt:               N={} r={} p=1",
        mk.scrypt_cost_param, mk.scrypt_block_size
    );
    println!("signature:            valid (HMAC with the vault's master key)");
    Ok(EXIT_OK)
}

fn mode_string(attr: &Attr) -> String {
    let t = match attr.kind {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (attr.perm >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn print_entry(out: &mut impl Write, v: &Vault, node: &Node, long: bool) -> Result<()> {
    if !long {
        writeln!(out, "{}", node.name)?;
        return Ok(());
    }
    let attr = v.stat(node)?;
    let suffix = if node.kind == NodeKind::Symlink {
        format!(" -> {}", v.readlink(node)?)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} {:>12} {} {}{}",
        mode_string(&attr),
        attr.size,
        format_time(attr.mtime),
        node.name,
        suffix
    )?;
    Ok(())
}

pub fn ls(g: &Global, vault: &Path, path: &str, long: bool, recursive: bool) -> Result<u8> {
    let v = unlock(g, vault)?;
    let node = v.resolve(path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !node.is_dir() {
        print_entry(&mut out, &v, &node, long)?;
        return Ok(EXIT_OK);
    }
    let mut dirs = vec![(path.to_string(), node)];
    let mut first = true;
    while let Some((dir_path, dir)) = dirs.pop() {
        let id = dir.dir_id().expect("only directories are queued").clone();
        let mut children = v.list(&id)?;
        children.sort_by(|a, b| a.name.cmp(&b.name));
        if recursive {
            if !first {
                writeln!(out)?;
            }
            writeln!(out, "{dir_path}:")?;
        }
        first = false;
        for child in &children {
            print_entry(&mut out, &v, child, long)?;
        }
        if recursive {
            for child in children.into_iter().rev().filter(|c| c.is_dir()) {
                dirs.push((join(&dir_path, &child.name), child));
            }
        }
    }
    Ok(EXIT_OK)
}

pub fn tree(g: &Global, vault: &Path, path: &str) -> Result<u8> {
    let v = unlock(g, vault)?;
    let node = v.resolve(path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(out, "{path}")?;
    let (mut dirs, mut files) = (0u64, 0u64);
    fn walk(
        v: &Vault,
        node: &Node,
        prefix: &str,
        out: &mut impl Write,
        counts: (&mut u64, &mut u64),
        ancestors: &mut Ancestors,
    ) -> Result<()> {
        let Some(id) = node.dir_id() else {
            return Ok(());
        };
        ancestors.enter(v, id)?;
        let mut children = v.list(id)?;
        children.sort_by(|a, b| a.name.cmp(&b.name));
        let n = children.len();
        let (dirs, files) = counts;
        for (i, child) in children.iter().enumerate() {
            let last = i + 1 == n;
            let branch = if last { "└── " } else { "├── " };
            let link = if child.kind == NodeKind::Symlink {
                format!(" -> {}", v.readlink(child)?)
            } else {
                String::new()
            };
            writeln!(out, "{prefix}{branch}{}{link}", child.name)?;
            if child.is_dir() {
                *dirs += 1;
                let next = format!("{prefix}{}", if last { "    " } else { "│   " });
                walk(v, child, &next, out, (&mut *dirs, &mut *files), ancestors)?;
            } else {
                *files += 1;
            }
        }
        ancestors.leave();
        Ok(())
    }
    let mut ancestors = Ancestors::default();
    walk(
        &v,
        &node,
        "",
        &mut out,
        (&mut dirs, &mut files),
        &mut ancestors,
    )?;
    writeln!(out, "\n{dirs} directories, {files} files")?;
    Ok(EXIT_OK)
}

pub fn cat(g: &Global, vault: &Path, path: &str) -> Result<u8> {
    let v = unlock(g, vault)?;
    let node = v.resolve(path)?;
    let fh = v.open_file(&node, false)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = fh.read_at(off, &mut buf)?;
        if n == 0 {
            break;
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(EXIT_OK);
            }
            return Err(e.into());
        }
        off += n as u64;
    }
    out.flush()?;
    Ok(EXIT_OK)
}

/// Creates `path`, and with `parents` its missing ancestors; returns the directory id.
pub fn mkdir_path(v: &Vault, path: &str, parents: bool) -> Result<oxcrypt_core::DirId> {
    if parents {
        let mut dir = v.root_id().clone();
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            walked = join(&walked, comp);
            dir = match v.lookup(&dir, comp)? {
                Some(n) => n
                    .dir_id()
                    .cloned()
                    .ok_or_else(|| Error::NotADirectory(walked.clone()))?,
                None => v
                    .mkdir(&dir, comp, 0o755)?
                    .dir_id()
                    .cloned()
                    .expect("mkdir makes a directory"),
            };
        }
        return Ok(dir);
    }
    let (parent, name) = v.resolve_parent(path)?;
    let node = v.mkdir(&parent, &name, 0o755)?;
    Ok(node.dir_id().cloned().expect("mkdir makes a directory"))
}

pub fn mkdir(g: &Global, vault: &Path, path: &str, parents: bool) -> Result<u8> {
    let v = unlock(g, vault)?;
    mkdir_path(&v, path, parents)?;
    Ok(EXIT_OK)
}

pub fn mv(g: &Global, vault: &Path, src: &str, dest: &str) -> Result<u8> {
    let v = unlock(g, vault)?;
    let (src_parent, src_name) = v.resolve_parent(src)?;
    let src_node = v.resolve(src)?;
    let mut dest = dest.to_string();
    if let Ok(d) = v.resolve(&dest) {
        if d.is_dir() && !(src_node.is_dir() && d.dir_id() == src_node.dir_id()) {
            dest = join(&dest, &src_name);
        }
    }
    if src_node.is_dir() && Vault::path_is_within(&dest, src) {
        bail!("cannot move directory {src} into itself ({dest})");
    }
    let (dst_parent, dst_name) = v.resolve_parent(&dest)?;
    v.rename(&src_parent, &src_name, &dst_parent, &dst_name, true)?;
    Ok(EXIT_OK)
}

/// Removes a node and, for directories, everything below it.
pub fn remove_tree(
    v: &Vault,
    parent: &oxcrypt_core::DirId,
    node: &Node,
    ancestors: &mut Ancestors,
) -> Result<()> {
    if let Some(id) = node.dir_id() {
        ancestors.enter(v, id)?;
        for child in v.list_checked(id)? {
            let child =
                child.map_err(|e| anyhow!("cannot remove an entry that does not decrypt: {e}"))?;
            remove_tree(v, id, &child, ancestors)?;
        }
        ancestors.leave();
        v.rmdir(parent, &node.name)?;
    } else {
        v.unlink(parent, &node.name)?;
    }
    Ok(())
}

pub fn rm(g: &Global, vault: &Path, paths: &[String], recursive: bool, force: bool) -> Result<u8> {
    let v = unlock(g, vault)?;
    for path in paths {
        let (parent, name) = v.resolve_parent(path)?;
        let Some(node) = v.lookup(&parent, &name)? else {
            if force {
                continue;
            }
            return Err(Error::NotFound(path.clone()).into());
        };
        if node.is_dir() && !recursive {
            bail!("{path}: is a directory (use -r to remove it and its contents)");
        }
        remove_tree(&v, &parent, &node, &mut Ancestors::default())?;
    }
    Ok(EXIT_OK)
}

pub fn ln(g: &Global, vault: &Path, target: &str, link: &str) -> Result<u8> {
    let v = unlock(g, vault)?;
    let (parent, name) = v.resolve_parent(link)?;
    v.symlink(&parent, &name, target)?;
    Ok(EXIT_OK)
}

pub fn passwd(g: &Global, vault: &Path, new_password_file: Option<&Path>) -> Result<u8> {
    let v = unlock(g, vault)?;
    let new = password::new_password(new_password_file)?;
    let backup = v.change_password(&new)?;
    eprintln!(
        "password changed; previous masterkey kept as {}",
        backup.display()
    );
    Ok(EXIT_OK)
}

pub fn check(g: &Global, vault: &Path, json: bool, repair: bool) -> Result<u8> {
    let v = unlock(g, vault)?;
    let run_check = || -> Result<oxcrypt_core::check::CheckReport> {
        let bar = crate::progress::progress_bar(None, "checking");
        let report = oxcrypt_core::check::check(&v, &mut |bytes| {
            if let Some(b) = &bar {
                b.set_position(bytes);
            }
        })?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(report)
    };
    let mut report = run_check()?;
    let mut repaired = Vec::new();
    if repair {
        repaired = oxcrypt_core::check::repair(&v, &report)?;
        for line in &repaired {
            if !json {
                println!("repaired: {line}");
            }
        }
        if repaired.is_empty() {
            if !json {
                println!("nothing to repair");
            }
        } else {
            report = run_check()?;
        }
    }
    let errors = report.errors();
    let code = if errors > 0 {
        crate::check_failed_code()
    } else {
        EXIT_OK
    };
    if json {
        let problems: Vec<serde_json::Value> = report
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "severity": match p.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    },
                    "path": p.cleartext,
                    "message": p.message,
                    "repairable": p.fix.is_some(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "vault": vault,
            "directories": report.dirs,
            "files": report.files,
            "symlinks": report.symlinks,
            "bytes": report.bytes,
            "errors": errors,
            "warnings": report.problems.len() - errors,
            "problems": problems,
            "repaired": repaired,
        });
        println!("{out}");
        return Ok(code);
    }
    for p in &report.problems {
        let level = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &p.cleartext {
            Some(c) => println!("{level}: {c}: {}", p.message),
            None => println!("{level}: {}", p.message),
        }
    }
    let summary = format!(
        "checked {} directories, {} files, {} symlinks, {} bytes: {} error(s), {} warning(s)",
        report.dirs,
        report.files,
        report.symlinks,
        report.bytes,
        errors,
        report.problems.len() - errors
    );
    if std::io::stdout().is_terminal() {
        println!("{summary}");
    } else {
        eprintln!("{summary}");
    }
    Ok(code)
}

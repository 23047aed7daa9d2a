//! `get` and `put`: copy files and trees out of and into a vault like `cp -r`, streaming in
//! 1 MiB blocks, with a progress bar when stderr is a terminal.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use oxcrypt_core::vault::Ancestors;
use oxcrypt_core::{Error, Node, NodeKind, Vault};

use crate::password::unlock;
use crate::progress::progress_bar;
use crate::vault_path::{base_name, join};
use crate::{Global, EXIT_OK};

const BLOCK: usize = 1 << 20;

fn local_size(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| local_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(md) if md.is_file() => md.len(),
        _ => 0,
    }
}

fn vault_size(v: &Vault, node: &Node) -> u64 {
    let mut total = 0;
    let _ = v.walk("", node, &mut |_, n| {
        if n.kind == NodeKind::File {
            total += v.stat(n).map(|a| a.size).unwrap_or(0);
        }
        Ok(())
    });
    total
}

pub fn put(g: &Global, vault: &Path, src: &Path, dest: &str) -> Result<u8> {
    let v = unlock(g, vault)?;
    fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut dest = dest.to_string();
    if let Ok(d) = v.resolve(&dest) {
        if d.is_dir() {
            let name = src
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{}: source needs a UTF-8 file name", src.display()))?;
            dest = join(&dest, name);
        }
    }
    let bar = progress_bar(Some(local_size(src)), "encrypting");
    put_node(&v, src, &dest, bar.as_ref())?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(EXIT_OK)
}

fn put_node(v: &Vault, src: &Path, dest: &str, bar: Option<&ProgressBar>) -> Result<()> {
    let md = fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    let (parent, name) = v.resolve_parent(dest)?;
    let existing = v.lookup(&parent, &name)?;
    let perm = md.permissions().mode() & 0o7777;
    if md.is_dir() {
        match existing {
            Some(n) if !n.is_dir() => return Err(Error::NotADirectory(dest.to_string()).into()),
            Some(_) => {}
            None => {
                v.mkdir(&parent, &name, perm)?;
            }
        }
        let mut entries: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("cannot list {}", src.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let file_name = e.file_name();
            let child = file_name
                .to_str()
                .ok_or_else(|| anyhow!("{}: file name is not UTF-8", e.path().display()))?;
            put_node(v, &e.path(), &join(dest, child), bar)?;
        }
        return Ok(());
    }
    if existing.as_ref().is_some_and(|n| n.is_dir()) {
        return Err(Error::IsADirectory(dest.to_string()).into());
    }
    if !md.is_file() && !md.file_type().is_symlink() {
        tracing::warn!(path = %src.display(), "skipping special file (sockets, FIFOs and devices cannot be stored)");
        eprintln!("oxcrypt: skipping special file {}", src.display());
        return Ok(());
    }
    // The new node is made whole under a temporary name and renamed over the old one: a
    // failure halfway (a read error, a full disk, Ctrl-C) leaves the old file as it was.
    let tmp = format!(
        ".oxcrypt-put-{:016x}",
        u64::from_le_bytes(oxcrypt_core::random::bytes())
    );
    let made = (|| -> Result<()> {
        if md.file_type().is_symlink() {
            let target = fs::read_link(src)?;
            let target = target
                .to_str()
                .ok_or_else(|| anyhow!("{}: link target is not UTF-8", src.display()))?;
            v.symlink(&parent, &tmp, target)?;
            return Ok(());
        }
        let node = v.create_file(&parent, &tmp, perm)?;
        let fh = v.open_file(&node, true)?;
        let mut input =
            fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
        let mut buf = vec![0u8; BLOCK];
        let mut off = 0u64;
        loop {
            let n = read_block(&mut input, &mut buf)
                .with_context(|| format!("cannot read {}", src.display()))?;
            if n == 0 {
                break;
            }
            fh.write_at(off, &buf[..n])?;
            off += n as u64;
            if let Some(b) = bar {
                b.inc(n as u64);
            }
        }
        fh.sync(false)?;
        Ok(())
    })();
    let placed = made.and_then(|()| Ok(v.rename(&parent, &tmp, &parent, &name, true)?));
    if placed.is_err() {
        let _ = v.unlink(&parent, &tmp);
    }
    placed
}

/// Fills `buf` as far as the input allows; returns the count (0 at end).
fn read_block(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub fn get(g: &Global, vault: &Path, src: &str, dest: &Path) -> Result<u8> {
    let v = unlock(g, vault)?;
    let node = v.resolve(src)?;
    let mut dest = dest.to_path_buf();
    let name = base_name(src);
    if dest.is_dir() && !name.is_empty() {
        dest = dest.join(name);
    }
    let bar = progress_bar(Some(vault_size(&v, &node)), "decrypting");
    get_node(&v, &node, &dest, bar.as_ref(), &mut Ancestors::default())?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(EXIT_OK)
}

fn get_node(
    v: &Vault,
    node: &Node,
    dest: &Path,
    bar: Option<&ProgressBar>,
    ancestors: &mut Ancestors,
) -> Result<()> {
    let attr = v.stat(node)?;
    match &node.kind {
        NodeKind::Directory(id) => {
            match fs::symlink_metadata(dest) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => bail!("{}: exists and is not a directory", dest.display()),
                Err(_) => fs::create_dir(dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?,
            }
            ancestors.enter(v, id)?;
            let mut children = v.list(id)?;
            children.sort_by(|a, b| a.name.cmp(&b.name));
            for child in &children {
                get_node(v, child, &dest.join(&child.name), bar, ancestors)?;
            }
            ancestors.leave();
            // No setuid, setgid or sticky bit from the vault on the local copy.
            fs::set_permissions(dest, fs::Permissions::from_mode(attr.perm & 0o777))?;
        }
        NodeKind::Symlink => {
            let target = v.readlink(node)?;
            if fs::symlink_metadata(dest).is_ok() {
                fs::remove_file(dest)
                    .with_context(|| format!("cannot replace {}", dest.display()))?;
            }
            std::os::unix::fs::symlink(&target, dest)
                .with_context(|| format!("cannot create {}", dest.display()))?;
        }
        NodeKind::File => {
            let fh = v.open_file(node, false)?;
            // Write to a temp file first: an authentication failure halfway must not leave a
            // file that looks complete.
            // Its name is short whatever the file's (a 255-byte name has no room for a suffix),
            // new (O_EXCL) and not a symlink someone planted (O_NOFOLLOW).
            let tmp = dest.with_file_name(format!(
                ".oxcrypt-get-{:016x}.part",
                u64::from_le_bytes(oxcrypt_core::random::bytes())
            ));
            let result = (|| -> Result<()> {
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                let mut buf = vec![0u8; BLOCK];
                let mut off = 0u64;
                loop {
                    let n = fh.read_at(off, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                    off += n as u64;
                    if let Some(b) = bar {
                        b.inc(n as u64);
                    }
                }
                out.sync_all()?;
                // No setuid or setgid bit from the vault on the local copy.
                fs::set_permissions(&tmp, fs::Permissions::from_mode(attr.perm & 0o777))?;
                fs::rename(&tmp, dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                Ok(())
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
        }
    }
    Ok(())
}

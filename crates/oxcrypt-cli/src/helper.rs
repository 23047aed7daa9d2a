//! `mount(8)` integration: invoked as `mount.oxcrypt` (or `mount.fuse.oxcrypt`), the binary
//! is a mount helper. `mount` runs `/sbin/mount.TYPE SOURCE MOUNTPOINT [-sfnv] -o OPTIONS` for
//! an `/etc/fstab` line of type `oxcrypt` (or `fuse.oxcrypt`); this module turns that into
//! `oxcrypt mount SOURCE MOUNTPOINT --daemon …`, so the mount is up when `mount` returns.
//! `oxcrypt install-helpers` puts the two names in `/sbin` as links to this binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The names under which `mount(8)` runs us.
pub const HELPER_NAMES: [&str; 2] = ["mount.oxcrypt", "mount.fuse.oxcrypt"];

/// Whether the program was started as a mount helper (`argv[0]`).
pub fn invoked_as_helper(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| HELPER_NAMES.contains(&n))
}

/// Options that `mount(8)`, systemd or the kernel handle themselves: accepted and ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "rw",
    "nodev",
    "nosuid",
    "dev",
    "suid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "sync",
    "async",
];

/// Translates the helper's arguments into the `oxcrypt mount` command line.
pub fn translate(args: &[OsString]) -> Result<Vec<OsString>> {
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let o = it.next().context("mount helper: -o needs options")?;
                let o = o.to_str().context("mount helper: options are not UTF-8")?;
                options.extend(o.split(',').filter(|s| !s.is_empty()).map(String::from));
            }
            // sloppy, fake, no-mtab, verbose: nothing to do for us (fake would be: do not
            // mount; mount(8) does not call helpers with -f for fuse types).
            Some("-s" | "-n" | "-v") => {}
            Some("-f") => bail!("mount helper: -f (fake) is not supported"),
            Some(s) if s.starts_with('-') => bail!("mount helper: unknown flag {s}"),
            _ => positional.push(a.clone()),
        }
    }
    let [source, mountpoint] = <[OsString; 2]>::try_from(positional)
        .map_err(|_| anyhow::anyhow!("usage: mount.oxcrypt VAULT MOUNTPOINT [-o OPTIONS]"))?;
    let mut out: Vec<OsString> = vec!["oxcrypt".into(), "mount".into(), source, mountpoint];
    out.push("--daemon".into());
    for opt in options {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let flag = |name: &str| -> Result<Vec<OsString>> {
            match value {
                Some(v) if !v.is_empty() => Ok(vec![format!("--{name}").into(), v.into()]),
                _ => bail!("mount option {key} needs a value ({key}=…)"),
            }
        };
        let mut add = match key {
            "ro" => vec!["--read-only".into()],
            "allow_other" => vec!["--allow-other".into()],
            "passfile" => flag("password-file")?,
            "extpass" => flag("extpass")?,
            "transport" => flag("transport")?,
            "idle" => flag("idle")?,
            "threads" => flag("threads")?,
            "cache_ms" => flag("cache-ms")?,
            "ring_depth" => flag("ring-depth")?,
            "writeback" => flag("writeback-cache")?,
            k if IGNORED.contains(&k) || k.starts_with("x-") || k.starts_with("comment=") => {
                vec![]
            }
            _ => bail!("unknown mount option {opt} (see oxcrypt mount --help)"),
        };
        out.append(&mut add);
    }
    Ok(out)
}

/// `oxcrypt install-helpers`: links `DIR/mount.oxcrypt` and `DIR/mount.fuse.oxcrypt` to this
/// binary. An existing file of that name is replaced only if it already is such a link.
pub fn install(dir: &Path) -> Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let mut made = Vec::new();
    for name in HELPER_NAMES {
        let link = dir.join(name);
        match std::fs::read_link(&link) {
            Ok(target) if target == exe => {
                made.push(link);
                continue;
            }
            Ok(_) => std::fs::remove_file(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => bail!(
                "{} exists and is not a link; not touching it",
                link.display()
            ),
        }
        std::os::unix::fs::symlink(&exe, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        made.push(link);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Result<Vec<String>> {
        let a: Vec<OsString> = args.iter().map(OsString::from).collect();
        translate(&a).map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        let out = t(&[
            "/sbin/mount.oxcrypt",
            "/srv/v",
            "/mnt/v",
            "-o",
            "rw,noauto,x-systemd.automount,allow_other,passfile=/etc/pw,idle=15m,writeback=off,ro",
        ])
        .unwrap();
        assert_eq!(
            out,
            [
                "oxcrypt",
                "mount",
                "/srv/v",
                "/mnt/v",
                "--daemon",
                "--allow-other",
                "--password-file",
                "/etc/pw",
                "--idle",
                "15m",
                "--writeback-cache",
                "off",
                "--read-only"
            ]
        );
        assert!(t(&["mount.oxcrypt", "/srv/v", "/mnt/v", "-o", "bogus"]).is_err());
        assert!(t(&["mount.oxcrypt", "/srv/v", "/mnt/v", "-o", "passfile"]).is_err());
        assert!(t(&["mount.oxcrypt", "/srv/v"]).is_err());
        assert!(invoked_as_helper(std::ffi::OsStr::new(
            "/sbin/mount.fuse.oxcrypt"
        )));
        assert!(!invoked_as_helper(std::ffi::OsStr::new("/usr/bin/oxcrypt")));
    }
}

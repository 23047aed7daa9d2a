//! The file systems under test: how to create a fresh store, mount it with its daemon in the
//! foreground (so its CPU time and peak RSS can be read), and unmount it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const PASSWORD: &str = "oxbench password";

/// One file system to measure.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in tables (`oxcrypt`, `gocryptfs`, …, or an ablation label).
    pub name: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Oxcrypt {
        bin: PathBuf,
        args: Vec<String>,
        /// Environment variables set for the mount (`@env.NAME=value`).
        env: Vec<(String, String)>,
    },
    Gocryptfs,
    Securefs,
    Cryfs,
    RcloneCrypt,
    Plain,
    Passthrough,
    Mounted(PathBuf),
}

impl Kind {
    /// An oxcrypt target: `bin` mounted with `args` added, in the environment it was run in.
    fn oxcrypt(bin: PathBuf, args: Vec<String>) -> Kind {
        Kind::Oxcrypt {
            bin,
            args,
            env: vec![],
        }
    }
}

/// A mounted (or plain) target ready for a workload.
pub struct Mounted {
    /// Where the workload runs.
    pub dir: PathBuf,
    daemon: Option<Child>,
    mountpoint: Option<PathBuf>,
    _store: Option<tempfile::TempDir>,
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_mounted(p: &Path) -> bool {
    oxcrypt_fuse::mountinfo::mount_at(p).is_some()
}

impl Target {
    /// Every known target name.
    pub const ALL: [&'static str; 7] = [
        "oxcrypt",
        "gocryptfs",
        "securefs",
        "cryfs",
        "rclone-crypt",
        "plain",
        "passthrough",
    ];

    /// The target called `name`; `None` (with the reason) if it cannot run here.
    pub fn by_name(name: &str, oxcrypt_bin: &Path) -> Result<Target, String> {
        // `oxcrypt-…@opt=value+opt2+env.NAME=value`: that oxcrypt target with `--opt value --opt2`
        // added and NAME=value in its environment.
        if let Some((base, extra)) = name.split_once('@') {
            let mut target = Self::by_name(base, oxcrypt_bin)?;
            let Kind::Oxcrypt { args, env, .. } = &mut target.kind else {
                return Err(format!(
                    "{name}: options after `@` are for oxcrypt targets only"
                ));
            };
            for opt in extra.split('+').filter(|o| !o.is_empty()) {
                let (key, value) = opt
                    .split_once('=')
                    .map_or((opt, None), |(k, v)| (k, Some(v)));
                if let Some(var) = key.strip_prefix("env.") {
                    env.push((var.to_string(), value.unwrap_or("1").to_string()));
                    continue;
                }
                args.push(format!("--{key}"));
                args.extend(value.map(str::to_string));
            }
            target.name = name.to_string();
            return Ok(target);
        }
        let need = |bin: &str| {
            if which(bin) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: `{bin}` not installed (apt-get install {bin})"
                ))
            }
        };
        let kind = match name {
            "oxcrypt" => Kind::oxcrypt(oxcrypt_bin.to_path_buf(), vec![]),
            // The same binary with each transport forced (the ring needs enable_uring=Y).
            "oxcrypt-uring" => Kind::oxcrypt(
                oxcrypt_bin.to_path_buf(),
                vec!["--transport".into(), "uring".into()],
            ),
            "oxcrypt-devfuse" => Kind::oxcrypt(
                oxcrypt_bin.to_path_buf(),
                vec!["--transport".into(), "dev-fuse".into()],
            ),
            // Each transport without decrypting ahead of sequential readers (issue 11).
            "oxcrypt-uring-noahead" | "oxcrypt-devfuse-noahead" => Kind::oxcrypt(
                oxcrypt_bin.to_path_buf(),
                vec![
                    "--transport".into(),
                    if name.contains("uring") {
                        "uring"
                    } else {
                        "dev-fuse"
                    }
                    .into(),
                    "--ablate".into(),
                    "no-decrypt-ahead".into(),
                ],
            ),
            // The kernel's writeback cache off (it is on by default).
            "oxcrypt-nowriteback" => Kind::oxcrypt(
                oxcrypt_bin.to_path_buf(),
                vec!["--writeback-cache".into(), "off".into()],
            ),
            "gocryptfs" => {
                need("gocryptfs")?;
                Kind::Gocryptfs
            }
            "securefs" => {
                need("securefs")?;
                Kind::Securefs
            }
            "cryfs" => {
                need("cryfs")?;
                Kind::Cryfs
            }
            "rclone-crypt" => {
                need("rclone")?;
                Kind::RcloneCrypt
            }
            "passthrough" => {
                need("bindfs")?;
                Kind::Passthrough
            }
            "plain" => Kind::Plain,
            other => {
                return Err(format!(
                    "unknown target {other:?} (known: {})",
                    Self::ALL.join(", ")
                ))
            }
        };
        Ok(Target {
            name: name.to_string(),
            kind,
        })
    }

    /// oxcrypt with extra mount options (ablation variants).
    pub fn oxcrypt_variant(label: &str, bin: &Path, args: &[&str]) -> Target {
        Target {
            name: label.to_string(),
            kind: Kind::oxcrypt(
                bin.to_path_buf(),
                args.iter().map(|s| s.to_string()).collect(),
            ),
        }
    }

    /// An existing mountpoint measured as is.
    pub fn mounted(path: &Path) -> Target {
        Target {
            name: format!("mounted:{}", path.display()),
            kind: Kind::Mounted(path.to_path_buf()),
        }
    }

    /// Creates a fresh store in a temp dir and mounts it.
    pub fn mount(&self) -> Result<Mounted> {
        if let Kind::Mounted(p) = &self.kind {
            let dir = tempfile::Builder::new()
                .prefix("oxbench.")
                .tempdir_in(p)?
                .keep();
            return Ok(Mounted {
                dir,
                daemon: None,
                mountpoint: None,
                _store: None,
            });
        }
        let store = tempfile::Builder::new()
            .prefix("oxbench.")
            .tempdir_in("/var/tmp")?;
        let cipher = store.path().join("cipher");
        let mnt = store.path().join("mnt");
        std::fs::create_dir_all(&cipher)?;
        std::fs::create_dir_all(&mnt)?;
        let pwfile = store.path().join("pw");
        std::fs::write(&pwfile, PASSWORD)?;
        let quiet = |c: &mut Command| {
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .stdin(Stdio::null());
        };
        let run = |c: &mut Command| -> Result<()> {
            quiet(c);
            let st = c.status().with_context(|| format!("{:?}", c))?;
            if !st.success() {
                bail!("{c:?} failed: {st}");
            }
            Ok(())
        };
        let mut cmd = match &self.kind {
            Kind::Plain => {
                return Ok(Mounted {
                    dir: cipher,
                    daemon: None,
                    mountpoint: None,
                    _store: Some(store),
                });
            }
            Kind::Oxcrypt { bin, args, env } => {
                std::fs::remove_dir(&cipher)?;
                run(Command::new(bin)
                    .arg("init")
                    .arg(&cipher)
                    .arg("--scrypt-cost")
                    .arg("1024")
                    .arg("--password-file")
                    .arg(&pwfile))?;
                let mut c = Command::new(bin);
                c.arg("mount")
                    .arg(&cipher)
                    .arg(&mnt)
                    .arg("--password-file")
                    .arg(&pwfile)
                    .args(args)
                    .envs(env.iter().map(|(k, v)| (k, v)));
                c
            }
            Kind::Gocryptfs => {
                run(Command::new("gocryptfs")
                    .args(["-init", "-q", "-scryptn", "10", "-passfile"])
                    .arg(&pwfile)
                    .arg(&cipher))?;
                let mut c = Command::new("gocryptfs");
                c.args(["-f", "-q", "-passfile"])
                    .arg(&pwfile)
                    .arg(&cipher)
                    .arg(&mnt);
                c
            }
            Kind::Securefs => {
                run(Command::new("securefs")
                    .args([
                        "create",
                        "--format",
                        "4",
                        "-r",
                        "1",
                        "--pbkdf",
                        "pkcs5-pbkdf2-hmac-sha256",
                        "--pass",
                        PASSWORD,
                    ])
                    .arg(&cipher))?;
                let mut c = Command::new("securefs");
                c.args(["mount", "--pass", PASSWORD]).arg(&cipher).arg(&mnt);
                c
            }
            Kind::Cryfs => {
                let mut c = Command::new("cryfs");
                c.env("CRYFS_FRONTEND", "noninteractive")
                    .env("CRYFS_NO_UPDATE_CHECK", "true");
                c.arg("-f").arg(&cipher).arg(&mnt);
                c
            }
            Kind::RcloneCrypt => {
                let out = Command::new("rclone")
                    .args(["obscure", PASSWORD])
                    .output()?;
                let obscured = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let mut c = Command::new("rclone");
                c.env("RCLONE_CONFIG_OXB_TYPE", "crypt")
                    .env("RCLONE_CONFIG_OXB_REMOTE", &cipher)
                    .env("RCLONE_CONFIG_OXB_PASSWORD", obscured)
                    .env("RCLONE_CACHE_DIR", store.path().join("cache"))
                    .args(["mount", "OXB:", "--vfs-cache-mode", "writes"])
                    .arg(&mnt);
                c
            }
            Kind::Passthrough => {
                let mut c = Command::new("bindfs");
                c.arg("-f").arg(&cipher).arg(&mnt);
                c
            }
            Kind::Mounted(_) => unreachable!("handled above"),
        };
        quiet(&mut cmd);
        if let Kind::Cryfs = self.kind {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        if let Some(mut stdin) = child.stdin.take() {
            // cryfs (noninteractive) reads the password from stdin, twice when creating.
            use std::io::Write;
            let _ = writeln!(stdin, "{PASSWORD}\n{PASSWORD}");
        }
        let start = Instant::now();
        while !is_mounted(&mnt) {
            if let Ok(Some(st)) = child.try_wait() {
                bail!("{}: daemon exited before mounting ({st})", self.name);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("{}: mount did not appear within 30 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mounted {
            dir: mnt.clone(),
            daemon: Some(child),
            mountpoint: Some(mnt),
            _store: Some(store),
        })
    }
}

impl Mounted {
    /// The daemon's process id, if there is one.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// CPU seconds (user + system) the daemon has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(ticks / hz)
    }

    /// Peak resident set of the daemon in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Unmounts and reaps the daemon.
    pub fn unmount(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if let Some(m) = self.mountpoint.take() {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&m)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
        if let Some(mut c) = self.daemon.take() {
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_after_at_become_mount_arguments_and_environment() {
        let bin = Path::new("/bin/oxcrypt");
        let t = Target::by_name(
            "oxcrypt-uring@read-ahead-kb=4096+stats+env.OXCRYPT_RING_NOPIN=1+env.FLAG",
            bin,
        )
        .unwrap();
        assert_eq!(
            t.name,
            "oxcrypt-uring@read-ahead-kb=4096+stats+env.OXCRYPT_RING_NOPIN=1+env.FLAG"
        );
        let Kind::Oxcrypt { args, env, .. } = &t.kind else {
            panic!("not an oxcrypt target");
        };
        assert_eq!(
            args,
            &["--transport", "uring", "--read-ahead-kb", "4096", "--stats"]
        );
        assert_eq!(
            env,
            &[
                ("OXCRYPT_RING_NOPIN".to_string(), "1".to_string()),
                ("FLAG".to_string(), "1".to_string())
            ]
        );
        assert!(Target::by_name("plain@stats", bin)
            .err()
            .unwrap()
            .contains("oxcrypt targets only"));
    }
}

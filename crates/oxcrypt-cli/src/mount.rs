//! `mount` and `umount`: serve a vault through FUSE in the foreground or as a daemon, and
//! unmount it cleanly on SIGINT/SIGTERM or `oxcrypt umount`.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use oxcrypt_core::{CreateOptions, Vault};
use oxcrypt_fuse::{MountOptions, Unmounter};
use oxcrypt_io::{EngineConfig, IoMode};

use crate::{password, Global, EXIT_OK};

/// Options of `oxcrypt mount` after parsing.
pub struct MountArgs<'a> {
    pub vault: &'a Path,
    pub mountpoint: &'a Path,
    pub read_only: bool,
    pub allow_other: bool,
    pub threads: Option<usize>,
    pub io: Option<IoMode>,
    pub init: bool,
    pub daemon: bool,
    pub ttl_ms: u64,
    pub read_ahead_kb: Option<u32>,
    pub writeback_cache: bool,
    pub transport: oxcrypt_fuse::TransportChoice,
    pub ring_depth: usize,
    pub stats: bool,
    pub idle: Option<Duration>,
    pub tuning: oxcrypt_io::Tuning,
}

fn open_or_init(g: &Global, args: &MountArgs<'_>) -> Result<Vault> {
    let exists = args.vault.join(oxcrypt_core::config::CONFIG_FILE).exists();
    if args.init && !exists {
        let pw = password::vault_password(g, true)?;
        let v = Vault::create(args.vault, &pw, &CreateOptions::default())
            .with_context(|| format!("cannot create vault {}", args.vault.display()))?;
        eprintln!("created vault {}", args.vault.display());
        return Ok(v);
    }
    password::unlock(g, args.vault)
}

/// Lazily unmounts a mount whose daemon died, so a new mount can take its place.
fn clean_stale(mountpoint: &Path) {
    if oxcrypt_fuse::is_stale_mount(mountpoint) && lazy_unmount(mountpoint).is_ok() {
        eprintln!(
            "oxcrypt: removed a stale mount left by a daemon that died at {}",
            mountpoint.display()
        );
    }
}

fn cstr(p: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("path contains NUL"))
}

fn lazy_unmount(p: &Path) -> std::io::Result<()> {
    let c = cstr(p).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn mount(g: &Global, args: &MountArgs<'_>) -> Result<u8> {
    // The mountpoint first, then the vault: a typo in either is reported before the password
    // is asked for.
    clean_stale(args.mountpoint);
    oxcrypt_fuse::check_mountpoint(args.mountpoint)?;
    let vault = open_or_init(g, args)?;
    let mut options = MountOptions {
        read_only: args.read_only,
        allow_other: args.allow_other,
        engine: EngineConfig {
            mode: args.io,
            tuning: args.tuning,
            ..EngineConfig::default()
        },
        ttl: Duration::from_millis(args.ttl_ms),
        read_ahead_kb: args.read_ahead_kb,
        writeback_cache: args.writeback_cache,
        transport: args.transport,
        ring_depth: args.ring_depth,
        ..MountOptions::default()
    };
    if args.ring_depth == 0 {
        bail!("--ring-depth must be at least 1");
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        options.threads = t;
        options.engine.workers = t;
    }
    if args.daemon {
        return daemonize(vault, args.mountpoint, &options, args.idle);
    }
    serve(
        vault,
        args.mountpoint,
        &options,
        None,
        args.stats,
        args.idle,
    )
}

/// Mounts and serves until unmounted; reports readiness on `ready` (daemon mode).
fn serve(
    vault: Vault,
    mountpoint: &Path,
    options: &MountOptions,
    ready: Option<OwnedFd>,
    stats: bool,
    idle: Option<Duration>,
) -> Result<u8> {
    let mut mounted = match oxcrypt_fuse::mount(vault, mountpoint, options) {
        Ok(m) => m,
        Err(e) => {
            if let Some(fd) = ready {
                let mut f = std::fs::File::from(fd);
                let _ = write!(f, "{e}");
            }
            return Err(anyhow!(e));
        }
    };
    let transport = match (&mounted.stats, &mounted.fallback_reason) {
        (Some(s), _) if s.ring.load(std::sync::atomic::Ordering::Relaxed) => "io_uring".into(),
        (Some(_), _) => "/dev/fuse (the kernel did not take the ring)".into(),
        (None, Some(why)) => format!("/dev/fuse, not io_uring: {why}"),
        (None, None) => "/dev/fuse".to_string(),
    };
    eprintln!(
        "oxcrypt: mounted at {} (transport: {transport}, io: {}); stop with Ctrl-C or `oxcrypt umount {}`",
        mountpoint.display(),
        mounted.io_mode,
        mountpoint.display()
    );
    if let Some(u) = mounted.take_unmounter() {
        watch_signals(u, mounted.stats.clone())?;
    }
    if let Some(limit) = idle {
        watch_idle(mounted.fs.clone(), limit)?;
    }
    if let Some(fd) = ready {
        let mut f = std::fs::File::from(fd);
        let _ = f.write_all(b"OK");
    }
    let counters = mounted.stats.clone();
    mounted.serve().context("serving the mount")?;
    if stats {
        match counters {
            Some(c) => eprintln!("{}", c.report()),
            None => eprintln!("transport: /dev/fuse (fuser); no per-queue counters"),
        }
    }
    Ok(EXIT_OK)
}

/// On SIGINT/SIGTERM: unmount (the serve loop then returns, finishing queued I/O and syncing
/// open files).
fn watch_signals(
    mut unmounter: Unmounter,
    stats: Option<Arc<oxcrypt_fuse::uring::Stats>>,
) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGUSR1,
    ])
    .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("oxcrypt-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGUSR1 {
                    // The transport's counters, on demand.
                    match &stats {
                        Some(s) => eprintln!("{}", s.report()),
                        None => eprintln!("transport: /dev/fuse (fuser); no per-queue counters"),
                    }
                    continue;
                }
                tracing::info!(sig, "signal received: unmounting");
                if let Err(e) = unmounter.unmount() {
                    tracing::error!(error = %e, "unmount failed");
                }
                break;
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// `--idle`: once no handle has been open and no request has come for `limit`, unmount the
/// way SIGTERM does (the signal thread unmounts; queued I/O is finished and files synced).
fn watch_idle(fs: Arc<oxcrypt_fuse::Fs>, limit: Duration) -> Result<()> {
    let step = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    std::thread::Builder::new()
        .name("oxcrypt-idle".into())
        .spawn(move || loop {
            std::thread::sleep(step);
            if fs.open_handles() == 0 && fs.idle_for() >= limit {
                tracing::info!(idle = ?limit, "idle: unmounting");
                eprintln!("oxcrypt: unused for {limit:?}: unmounting");
                // SAFETY: signalling our own process.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                return;
            }
        })
        .context("starting the idle watcher")?;
    Ok(())
}

/// Forks: the child mounts and serves detached; the parent waits until the mount is up.
fn daemonize(
    vault: Vault,
    mountpoint: &Path,
    options: &MountOptions,
    idle: Option<Duration>,
) -> Result<u8> {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe() owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other threads exist yet (the vault is unlocked, nothing is mounted).
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: plain libc calls in the child.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                }
            }
            let code = serve(vault, mountpoint, options, Some(write_end), false, idle).unwrap_or(1);
            std::process::exit(code.into());
        }
        _child => {
            drop(write_end);
            let mut msg = String::new();
            let mut f = std::fs::File::from(read_end);
            let _ = f.read_to_string(&mut msg);
            if msg.starts_with("OK") {
                eprintln!(
                    "oxcrypt: mounted at {} in the background",
                    mountpoint.display()
                );
                Ok(EXIT_OK)
            } else if msg.is_empty() {
                bail!("the mount daemon exited before mounting")
            } else {
                bail!("{msg}")
            }
        }
    }
}

pub fn umount(mountpoint: &Path) -> Result<u8> {
    let c = cstr(mountpoint)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(EXIT_OK);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EBUSY) => bail!(
            "{}: busy (a process has files open there or is inside it); close them, or detach with `umount -l {}`",
            mountpoint.display(),
            mountpoint.display()
        ),
        Some(libc::ENOTCONN) => {
            lazy_unmount(mountpoint).with_context(|| format!("{}: stale mount", mountpoint.display()))?;
            Ok(EXIT_OK)
        }
        Some(libc::EPERM) => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(mountpoint)
                .status()
                .context("not root and fusermount3 is not available")?;
            if status.success() {
                Ok(EXIT_OK)
            } else {
                bail!("{}: fusermount3 -u failed", mountpoint.display())
            }
        }
        Some(libc::EINVAL) => bail!("{}: not a mountpoint", mountpoint.display()),
        _ => Err(anyhow!(e).context(format!("cannot unmount {}", mountpoint.display()))),
    }
}

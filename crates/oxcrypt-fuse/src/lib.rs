//! # oxcrypt-fuse
//!
//! Mounts an unlocked [`Vault`] through the kernel's FUSE. [`fs::OxFs`] is the thin
//! `Filesystem` adapter; this file wires it to a transport (today fuser's `/dev/fuse` loop,
//! behind the [`Transport`] trait so a FUSE-over-io_uring transport can sit beside it) and to
//! the chunk I/O engine.

pub mod cache;
pub mod fs;
pub mod inodes;
pub mod page_cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oxcrypt_core::Vault;
use oxcrypt_io::{Engine, EngineConfig, IoMode};

pub use fs::{FsOptions, OxFs};

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Refuse every change (also mounted `ro`).
    pub read_only: bool,
    /// Let other users access the mount (`allow_other`).
    pub allow_other: bool,
    /// FUSE session threads (each with its own cloned /dev/fuse descriptor).
    pub threads: usize,
    /// The I/O engine.
    pub engine: EngineConfig,
    /// Time-to-live of cached metadata, in the daemon and in the kernel.
    pub ttl: Duration,
    /// Kernel read-ahead for the mount in KiB (written to the mount's bdi after mounting).
    pub read_ahead_kb: u32,
    /// Ask for readdirplus.
    pub readdirplus: bool,
    /// Metadata calls on a spawned thread instead of inline (ablation).
    pub metadata_on_thread: bool,
    /// Let the kernel cache writes (FUSE writeback cache); measured in kernel-notes/.
    pub writeback_cache: bool,
    /// A heap arena per request instead of the reused per-thread arena (ablation).
    pub heap_scratch: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: false,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            engine: EngineConfig::default(),
            ttl: Duration::from_secs(1),
            read_ahead_kb: 1024,
            readdirplus: true,
            metadata_on_thread: false,
            writeback_cache: false,
            heap_scratch: false,
        }
    }
}

/// Errors of mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint is not usable.
    #[error("{path}: {why}")]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// The I/O engine could not start.
    #[error("I/O engine: {0}")]
    Engine(std::io::Error),
    /// The kernel refused the mount.
    #[error("mount failed: {0}")]
    Mount(std::io::Error),
}

/// A way of carrying FUSE requests between the kernel and [`OxFs`].
pub trait Transport {
    /// Serves requests until the file system is unmounted.
    fn serve(self: Box<Self>) -> std::io::Result<()>;
}

/// fuser's `/dev/fuse` read loop with several threads.
struct DevFuse {
    session: fuser::Session<OxFs>,
}

impl Transport for DevFuse {
    fn serve(self: Box<Self>) -> std::io::Result<()> {
        self.session.run()
    }
}

/// Unmounts a mounted session from another thread (signal handler, tests).
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    /// Unmounts; the serving thread then returns.
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

/// A mounted vault, ready to serve.
pub struct Mounted {
    transport: Box<dyn Transport>,
    unmounter: Option<Unmounter>,
    /// The engine actually in use.
    pub io_mode: IoMode,
    engine: Arc<Engine>,
}

impl Mounted {
    /// The handle that unmounts this file system (once).
    pub fn take_unmounter(&mut self) -> Option<Unmounter> {
        self.unmounter.take()
    }

    /// Serves requests until unmounted, then finishes queued I/O.
    pub fn serve(self) -> std::io::Result<()> {
        let r = self.transport.serve();
        drop(self.engine);
        r
    }
}

/// Whether `path` is a mountpoint of a FUSE file system that no longer answers (a killed daemon).
pub fn is_stale_mount(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let bad = |why: String| MountError::Mountpoint {
        path: path.to_path_buf(),
        why,
    };
    if is_stale_mount(path) {
        return Err(bad("a stale mount from a daemon that died is still there; run `oxcrypt umount` on it (or `umount -l`) and retry".into()));
    }
    let md = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("does not exist; create it with mkdir first".into()),
        _ => bad(e.to_string()),
    })?;
    if !md.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if is_mountpoint(path) {
        return Err(bad(
            "something is already mounted here; unmount it first".into()
        ));
    }
    if std::fs::read_dir(path)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(bad(
            "directory is not empty; mount on an empty directory".into()
        ));
    }
    Ok(())
}

/// Whether something is mounted at `path` (per /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ').nth(4).map(unescape_mountinfo).as_deref()
            == Some(canon.to_string_lossy().as_ref())
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The `major:minor` device of the mount at `path`, from /proc/self/mountinfo (a stat of
/// the mountpoint would be a FUSE request nobody answers yet).
fn mount_device(path: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(path.parent()?)
        .ok()?
        .join(path.file_name()?);
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .find(|l| {
            l.split(' ').nth(4).map(unescape_mountinfo).as_deref()
                == Some(canon.to_string_lossy().as_ref())
        })
        .and_then(|l| l.split(' ').nth(2).map(String::from))
}

/// Raises the kernel read-ahead of the FUSE mount at `path` through its bdi.
fn set_read_ahead(path: &Path, kb: u32) {
    let Some(dev) = mount_device(path) else {
        return;
    };
    let bdi = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&bdi, kb.to_string()) {
        Ok(()) => tracing::debug!(bdi, kb, "read-ahead raised"),
        Err(e) => tracing::info!(bdi, error = %e, "cannot raise read-ahead"),
    }
}

/// Mounts `vault` at `mountpoint`. The mount exists when this returns; call
/// [`Mounted::serve`] to answer requests.
pub fn mount(
    vault: Vault,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<Mounted, MountError> {
    check_mountpoint(mountpoint)?;
    // Absolute before mounting: afterwards resolving it would be a request to ourselves.
    let mountpoint = &std::fs::canonicalize(mountpoint).map_err(|e| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        why: e.to_string(),
    })?;
    let engine = Arc::new(Engine::start(&options.engine).map_err(MountError::Engine)?);
    let io_mode = engine.mode();
    let fs = OxFs::new(
        Arc::new(vault),
        engine.clone(),
        options.ttl,
        FsOptions {
            read_only: options.read_only,
            readdirplus: options.readdirplus,
            metadata_on_thread: options.metadata_on_thread,
            writeback_cache: options.writeback_cache,
            heap_scratch: options.heap_scratch,
        },
    );
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("oxcrypt".into()),
        fuser::MountOption::Subtype("oxcrypt".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoAtime,
    ];
    if options.read_only {
        config.mount_options.push(fuser::MountOption::RO);
    }
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = options.threads > 1;
    let mut session = fuser::Session::new(fs, mountpoint, &config).map_err(MountError::Mount)?;
    let unmounter = Unmounter(session.unmount_callable());
    set_read_ahead(mountpoint, options.read_ahead_kb);
    tracing::info!(mountpoint = %mountpoint.display(), io = %io_mode, "mounted");
    Ok(Mounted {
        transport: Box::new(DevFuse { session }),
        unmounter: Some(unmounter),
        io_mode,
        engine,
    })
}

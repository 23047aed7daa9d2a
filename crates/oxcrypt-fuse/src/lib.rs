//! # oxcrypt-fuse
//!
//! Mounts an unlocked [`Vault`] through the kernel's FUSE.
//!
//! - [`ops`]: the FUSE operations, transport-neutral, over the mount's state ([`ops::Fs`]);
//! - `fuser_adapter.rs`: fuser's `/dev/fuse` loop calling them (decode, call, reply), and
//!   [`uring`]: FUSE-over-io_uring with its own wire layer ([`wire`]), both behind the
//!   [`Transport`] trait;
//! - [`inodes`], [`cache`], [`open_files`], [`page_cache`]: the state the operations keep;
//! - [`mountpoint`], [`mountinfo`]: checks before mounting and the one mountinfo parser;
//! - this file wires a vault, the chunk I/O engine and a transport into a mount.

pub mod activity;
pub mod cache;
pub mod errno;
mod fuser_adapter;
pub mod inodes;
pub mod mountinfo;
pub mod mountpoint;
pub mod notify;
pub mod open_files;
pub mod ops;
pub mod own_changes;
pub mod page_cache;
pub mod uring;
pub mod watch;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oxcrypt_core::Vault;
use oxcrypt_io::{Engine, EngineConfig, IoMode};
pub use oxcrypt_io::{Tuning, ABLATIONS};

pub use mountpoint::{is_mountpoint, is_stale_mount};

/// Checks a mountpoint as `mount` will (exists, a directory, empty, nothing mounted there),
/// so a command can report a bad one before asking for a password.
pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    mountpoint::check(path)
}
pub use ops::{Fs, FsOptions};

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Refuse every change (also mounted `ro`).
    pub read_only: bool,
    /// Let other users access the mount (`allow_other`).
    pub allow_other: bool,
    /// FUSE session threads (each with its own cloned /dev/fuse descriptor).
    pub threads: usize,
    /// The I/O engine (its `tuning` holds the ablations, for the FUSE layer too).
    pub engine: EngineConfig,
    /// Time-to-live of cached metadata, in the daemon and in the kernel.
    pub ttl: Duration,
    /// Kernel read-ahead for the mount in KiB (written to the mount's bdi after mounting);
    /// `None`: the transport's own ([`READ_AHEAD_KB_DEV_FUSE`], [`READ_AHEAD_KB_RING`]).
    pub read_ahead_kb: Option<u32>,
    /// Ask for readdirplus.
    pub readdirplus: bool,
    /// Let the kernel cache writes (FUSE writeback cache); measured in kernel-notes/.
    pub writeback_cache: bool,
    /// Which transport carries the requests.
    pub transport: TransportChoice,
    /// Ring entries per queue of the io_uring transport.
    pub ring_depth: usize,
}

/// Which transport carries FUSE requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// io_uring when the kernel offers it, else `/dev/fuse` (one log line says why).
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// fuser's `/dev/fuse` loop.
    DevFuse,
}

/// The kernel read-ahead of a mount over `/dev/fuse`, in KiB: the kernel's read-ahead is what
/// keeps several READs of a sequential reader in flight there (kernel-notes, "Sequential
/// reads"; 4096 reads faster still but doubles the latency of the first reads after a seek).
pub const READ_AHEAD_KB_DEV_FUSE: u32 = 1024;

/// The kernel read-ahead of a mount on the ring, in KiB: the kernel's default. The daemon
/// decrypts ahead of sequential readers itself there, and larger READs from the kernel only
/// queue before the first reads after a seek: with 1 MiB, oxbench's video p99 was 1.2-1.7 ms
/// against 0.6-0.7 with 128 KiB, sequential reads the same (kernel-notes, "The ring's
/// read-ahead").
pub const READ_AHEAD_KB_RING: u32 = 128;

impl MountOptions {
    /// The kernel read-ahead to set, in KiB: the one asked for, else the transport's own.
    fn read_ahead_kb_for(&self, ring: bool) -> u32 {
        self.read_ahead_kb.unwrap_or(if ring {
            READ_AHEAD_KB_RING
        } else {
            READ_AHEAD_KB_DEV_FUSE
        })
    }
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
            read_ahead_kb: None,
            readdirplus: true,
            writeback_cache: true,
            transport: TransportChoice::Auto,
            ring_depth: 4,
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
    /// `--transport uring` was asked for and cannot be had.
    #[error("--transport uring: {0}")]
    Transport(String),
}

/// A way of carrying FUSE requests between the kernel and [`OxFs`].
pub trait Transport {
    /// Serves requests until the file system is unmounted.
    fn serve(self: Box<Self>) -> std::io::Result<()>;
}

/// fuser's `/dev/fuse` read loop with several threads.
struct DevFuse {
    session: fuser::Session<fuser_adapter::FuserFs>,
}

impl Transport for DevFuse {
    fn serve(self: Box<Self>) -> std::io::Result<()> {
        self.session.run()
    }
}

/// The io_uring transport (or its own `/dev/fuse` loop when the kernel did not take the ring).
struct Uring {
    session: uring::UringSession,
}

impl Transport for Uring {
    fn serve(self: Box<Self>) -> std::io::Result<()> {
        self.session.serve()
    }
}

/// Unmounts a mounted session from another thread (signal handler, tests).
pub enum Unmounter {
    /// fuser's session.
    Fuser(fuser::SessionUnmounter),
    /// A mount made with mount(2) by the io_uring transport.
    Path(PathBuf),
}

impl Unmounter {
    /// Unmounts; the serving thread then returns.
    pub fn unmount(&mut self) -> std::io::Result<()> {
        match self {
            Unmounter::Fuser(u) => u.unmount(),
            Unmounter::Path(p) => uring::unmount(p),
        }
    }
}

/// A mounted vault, ready to serve.
pub struct Mounted {
    transport: Box<dyn Transport>,
    unmounter: Option<Unmounter>,
    /// The engine actually in use.
    pub io_mode: IoMode,
    engine: Arc<Engine>,
    /// The io_uring transport's counters (`None` on fuser's loop).
    pub stats: Option<Arc<uring::Stats>>,
    /// Why the io_uring transport is not in use, when it was not asked away.
    pub fallback_reason: Option<String>,
    /// The file system (for `--idle`: its activity and open handles).
    pub fs: Arc<Fs>,
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

/// Mounts `vault` at `mountpoint`. The mount exists when this returns; call
/// [`Mounted::serve`] to answer requests.
pub fn mount(
    vault: Vault,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<Mounted, MountError> {
    mountpoint::check(mountpoint)?;
    // Absolute before mounting: afterwards resolving it would be a request to ourselves.
    let mountpoint = &std::fs::canonicalize(mountpoint).map_err(|e| MountError::Mountpoint {
        path: mountpoint.to_path_buf(),
        why: e.to_string(),
    })?;
    let engine = Arc::new(Engine::start(&options.engine).map_err(MountError::Engine)?);
    let io_mode = engine.mode();
    let fs = Arc::new(Fs::new(
        Arc::new(vault),
        engine.clone(),
        FsOptions {
            read_only: options.read_only,
            readdirplus: options.readdirplus,
            writeback_cache: options.writeback_cache,
            ttl: options.ttl,
            tuning: options.engine.tuning,
        },
    ));
    let fs_handle = fs.clone();
    let ring_refused = match options.transport {
        TransportChoice::DevFuse => Some("--transport dev-fuse".to_string()),
        TransportChoice::Auto | TransportChoice::Uring => uring::unavailable_reason(),
    };
    match (&ring_refused, options.transport) {
        (Some(why), TransportChoice::Uring) => return Err(MountError::Transport(why.clone())),
        (Some(why), TransportChoice::Auto) => {
            tracing::debug!("serving over /dev/fuse: {why}")
        }
        _ => {}
    }
    if ring_refused.is_none() {
        let mut want = 0;
        if options.readdirplus {
            want |= wire::init::DO_READDIRPLUS | wire::init::READDIRPLUS_AUTO;
        }
        if options.writeback_cache {
            want |= wire::init::WRITEBACK_CACHE;
        }
        let session = uring::mount(
            fs,
            mountpoint,
            &uring::UringOptions {
                depth: options.ring_depth,
                fallback_threads: options.threads.max(1),
                read_only: options.read_only,
                allow_other: options.allow_other,
                want,
                required: options.transport == TransportChoice::Uring,
            },
        )
        .map_err(|e| match options.transport {
            TransportChoice::Uring if e.kind() == std::io::ErrorKind::Other => {
                MountError::Transport(e.to_string())
            }
            _ => MountError::Mount(e),
        })?;
        let stats = session.stats();
        fs_handle.notices().start(Box::new(session.notifier()));
        watch::Watcher::start(&fs_handle);
        let ring = stats.ring.load(std::sync::atomic::Ordering::Relaxed);
        mountpoint::set_read_ahead(mountpoint, options.read_ahead_kb_for(ring));
        engine.set_decrypt_ahead(ring);
        tracing::info!(
            mountpoint = %mountpoint.display(),
            io = %io_mode,
            transport = if ring { "io_uring" } else { "/dev/fuse" },
            queues = stats.per_queue().len(),
            "mounted"
        );
        return Ok(Mounted {
            transport: Box::new(Uring { session }),
            unmounter: Some(Unmounter::Path(mountpoint.to_path_buf())),
            io_mode,
            engine,
            stats: Some(stats),
            fallback_reason: None,
            fs: fs_handle,
        });
    }
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
    // Several threads decrypt a reader's READs side by side already; decrypting ahead would
    // add a copy (kernel-notes, "Decrypting ahead").
    engine.set_decrypt_ahead(false);
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = options.threads > 1;
    let mut session = fuser::Session::new(fuser_adapter::FuserFs::new(fs), mountpoint, &config)
        .map_err(MountError::Mount)?;
    let unmounter = Unmounter::Fuser(session.unmount_callable());
    fs_handle.notices().start(Box::new(session.notifier()));
    watch::Watcher::start(&fs_handle);
    mountpoint::set_read_ahead(mountpoint, options.read_ahead_kb_for(false));
    tracing::info!(mountpoint = %mountpoint.display(), io = %io_mode, transport = "/dev/fuse (fuser)", "mounted");
    Ok(Mounted {
        transport: Box::new(DevFuse { session }),
        unmounter: Some(unmounter),
        io_mode,
        engine,
        stats: None,
        fallback_reason: ring_refused.filter(|_| options.transport == TransportChoice::Auto),
        fs: fs_handle,
    })
}

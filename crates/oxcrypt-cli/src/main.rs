//! `oxcrypt`: create, inspect, edit and verify Cryptomator vaults (format 8) from the shell.
//!
//! This file holds the command-line definition and the dispatch; each command lives in
//! `commands.rs`, file transfer in `transfer.rs`, password handling in `password.rs`.

#[cfg(feature = "mimalloc")]
mod alloc;
mod commands;
mod helper;
mod mount;
mod password;
mod progress;
mod transfer;
mod vault_path;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit status: success.
const EXIT_OK: u8 = 0;
/// Exit status: any error.
const EXIT_ERROR: u8 = 1;
/// Exit status: wrong password.
const EXIT_WRONG_PASSWORD: u8 = 3;
/// Exit status: `check` found problems.
const EXIT_CHECK_FAILED: u8 = 4;

const EXIT_CODES: &str = "\
EXIT STATUS:
  0  success
  1  error (message on stderr)
  2  invalid command line
  3  wrong password
  4  check found problems in the vault

PASSWORD:
  Every command that unlocks a vault reads the password from, in this order:
  --password-file FILE (first line), --extpass CMD (the first line CMD prints; CMD runs
  without a shell), the environment variable OXCRYPT_PASSWORD (meant for scripts and tests;
  it is removed from the process once read), or an echo-less prompt on the terminal.

COMPATIBILITY:
  Vaults are Cryptomator vault format 8 (SIV_GCM or SIV_CTRMAC), byte-compatible with
  Cryptomator 1.6 and later in both directions.";

#[derive(Parser)]
#[command(
    name = "oxcrypt",
    version,
    about = "Mount Cryptomator-compatible encrypted vaults on Linux, and work on them offline",
    long_about = "oxcrypt mounts Cryptomator vaults (vault format 8) through FUSE: `oxcrypt mount \
                  VAULT MOUNTPOINT` shows the decrypted files under MOUNTPOINT until `oxcrypt \
                  umount`. The same vaults can be used without mounting: create one, list and \
                  print its files, copy trees in and out, rename and delete, change the \
                  password, and verify every byte of it.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Args, Clone)]
pub struct Global {
    /// Read the vault password from the first line of FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run CMD and use the first line it prints as the vault password (e.g.
    /// `--extpass 'secret-tool lookup oxcrypt myvault'`). CMD is split into words (quotes
    /// group) and run directly, not through a shell; its exit status must be 0.
    #[arg(long, global = true, value_name = "CMD")]
    pub extpass: Option<String>,
    /// More log output on stderr (-v: info, -vv: debug). Debug output names files and
    /// directories in cleartext: do not share it, and do not leave -vv on in a service.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The content I/O engine of a mount.
/// Parses `90`, `90s`, `15m`, `2h` or `1d` into a duration of at least one second.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 90s, 15m, 2h)"))?;
    let secs = match unit {
        "s" | "sec" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, m, h or d)")),
    };
    if secs == 0 {
        return Err("the duration must be at least one second".into());
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TransportArg {
    /// io_uring when the kernel offers it, else /dev/fuse.
    Auto,
    /// FUSE-over-io_uring, or fail.
    Uring,
    /// read/write on /dev/fuse (through fuser).
    DevFuse,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum IoArg {
    /// io_uring with registered buffers.
    Uring,
    /// Blocking pread/pwrite.
    Sync,
}

/// Content cipher of a new vault.
#[derive(Clone, Copy, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
pub enum CipherArg {
    /// AES-GCM content (Cryptomator 1.7+ default).
    #[value(name = "SIV_GCM")]
    SivGcm,
    /// AES-CTR + HMAC content (what Cryptomator 1.6 created).
    #[value(name = "SIV_CTRMAC")]
    SivCtrMac,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new, empty vault.
    #[command(
        after_help = "VAULT must not exist or be an empty directory. The password is asked \
                            twice on a terminal. masterkey.cryptomator is written with mode 0600."
    )]
    Init {
        /// Directory of the new vault.
        vault: PathBuf,
        /// Content cipher.
        #[arg(long, value_enum, default_value = "SIV_GCM")]
        cipher: CipherArg,
        /// scrypt cost N (a power of two). Cryptomator uses 32768; small values are only for tests.
        #[arg(long, default_value_t = 32768, value_name = "N")]
        scrypt_cost: u64,
    },
    /// Show the vault's format, cipher and key parameters.
    Info {
        /// The vault directory.
        vault: PathBuf,
        /// One JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a directory of the vault.
    Ls {
        /// The vault directory.
        vault: PathBuf,
        /// Path inside the vault.
        #[arg(default_value = "/")]
        path: String,
        /// Long format: type, permissions, size, modification time (UTC), name.
        #[arg(short, long)]
        long: bool,
        /// List subdirectories recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Print the directory tree of the vault.
    Tree {
        /// The vault directory.
        vault: PathBuf,
        /// Path inside the vault.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Write a file's cleartext to stdout.
    Cat {
        /// The vault directory.
        vault: PathBuf,
        /// File inside the vault.
        path: String,
    },
    /// Decrypt a file or a whole tree from the vault to a local path (like `cp -r`).
    #[command(
        after_help = "If DEST is an existing directory, SRC is copied into it under its own \
                            name; otherwise DEST is the new name. Existing files are overwritten. \
                            Symlinks are copied as symlinks."
    )]
    Get {
        /// The vault directory.
        vault: PathBuf,
        /// Path inside the vault.
        src: String,
        /// Local destination.
        dest: PathBuf,
    },
    /// Encrypt a local file or tree into the vault (like `cp -r`).
    #[command(
        after_help = "If DEST is an existing directory in the vault, SRC is copied into it \
                            under its own name; otherwise DEST is the new name. Existing files are \
                            overwritten. Symlinks are stored as symlinks; sockets, FIFOs and devices \
                            are skipped with a warning."
    )]
    Put {
        /// The vault directory.
        vault: PathBuf,
        /// Local file or directory.
        src: PathBuf,
        /// Path inside the vault.
        dest: String,
    },
    /// Create a directory in the vault.
    Mkdir {
        /// The vault directory.
        vault: PathBuf,
        /// Directory to create.
        path: String,
        /// Create missing parents; no error if it exists.
        #[arg(short, long)]
        parents: bool,
    },
    /// Move or rename a file, symlink or directory inside the vault.
    #[command(
        after_help = "If DEST is an existing directory, SRC moves into it. An existing file \
                            DEST is replaced; an existing directory is replaced only when empty."
    )]
    Mv {
        /// The vault directory.
        vault: PathBuf,
        /// Path to move.
        src: String,
        /// New path.
        dest: String,
    },
    /// Remove files, symlinks or (with -r) directories from the vault.
    Rm {
        /// The vault directory.
        vault: PathBuf,
        /// Paths to remove.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Remove directories and their contents.
        #[arg(short, long)]
        recursive: bool,
        /// Ignore paths that do not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Create a symbolic link in the vault (hard links do not exist in the format).
    Ln {
        /// Make a symbolic link (required).
        #[arg(short = 's', long = "symbolic", required = true)]
        symbolic: bool,
        /// The vault directory.
        vault: PathBuf,
        /// What the link points to (stored as given, may dangle).
        target: String,
        /// Path of the new link.
        link: String,
    },
    /// Change the vault password; the old masterkey file is kept as a .bkup file.
    #[command(
        after_help = "The new password comes from --new-password-file, the environment \
                            variable OXCRYPT_NEW_PASSWORD, or a prompt (asked twice). The master \
                            keys do not change, so no file in the vault is re-encrypted. The old \
                            masterkey.cryptomator is kept as masterkey.cryptomator.<hash>.bkup, as \
                            Cryptomator does; delete it if the old password was compromised."
    )]
    Passwd {
        /// The vault directory.
        vault: PathBuf,
        /// Read the new password from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Mount the vault as a directory through FUSE (foreground unless --daemon).
    #[command(
        after_help = "The mount stays in the foreground until Ctrl-C, SIGTERM or `oxcrypt \
                            umount MOUNTPOINT`; every open file is flushed before it exits 0. \
                            MOUNTPOINT must be an empty directory; a stale mount left by a killed \
                            daemon is cleaned up automatically. Content I/O uses io_uring with \
                            registered buffers when the kernel allows it, else pread/pwrite (one \
                            log line says why). Hard links, special files and extended attributes \
                            do not exist in the vault format and fail with a clean error."
    )]
    Mount {
        /// The vault directory.
        vault: PathBuf,
        /// Empty directory to mount on.
        mountpoint: PathBuf,
        /// Mount read-only.
        #[arg(long)]
        read_only: bool,
        /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root).
        #[arg(long)]
        allow_other: bool,
        /// FUSE threads and I/O workers (default: one per core).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Content I/O engine (default: uring when available).
        #[arg(long, value_enum)]
        io: Option<IoArg>,
        /// Create the vault first if it does not exist (default cipher and scrypt cost).
        #[arg(long)]
        init: bool,
        /// Detach and run in the background once mounted.
        #[arg(long)]
        daemon: bool,
        /// Metadata cache lifetime in milliseconds (daemon and kernel).
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        cache_ms: u64,
        /// Kernel read-ahead of the mount in KiB [default: 1024 over /dev/fuse, 128 on the
        /// io_uring transport]. Over /dev/fuse larger values speed up one sequential reader
        /// (4096: about +20 % measured) and slow down the first reads after a seek (video p99
        /// about twice as long). On the ring the daemon decrypts ahead of sequential readers
        /// itself: more kernel read-ahead reads no faster there and delays reads after a seek.
        #[arg(long, value_name = "KIB", env = "OXCRYPT_READ_AHEAD_KB")]
        read_ahead_kb: Option<u32>,
        /// The kernel's writeback cache: `write(2)` returns once the bytes are in the page
        /// cache and the kernel sends them in large batches, several at once, so one writer's
        /// stream is encrypted on every core. A full disk is then reported by `fsync(2)` or
        /// `close(2)` (ENOSPC) instead of by the `write(2)` that did not fit, and the file
        /// shows the size the vault holds from its next lookup on. Changes made behind the
        /// mount's back (a sync client) are noticed with inotify and invalidated in the kernel.
        /// `off`: every write(2) waits for its encryption and reports its own error.
        #[arg(
            long,
            value_enum,
            default_value = "on",
            env = "OXCRYPT_WRITEBACK_CACHE",
            value_name = "on|off"
        )]
        writeback_cache: Switch,
        /// How FUSE requests travel: `uring` (FUSE-over-io_uring, Linux 6.14+, root, and
        /// /sys/module/fuse/parameters/enable_uring set to Y), `dev-fuse` (read/write on
        /// /dev/fuse), or `auto`: uring when it can be had, else dev-fuse with one log line
        /// saying why. `uring` fails with that reason instead.
        #[arg(long, value_enum, default_value = "auto", env = "OXCRYPT_TRANSPORT")]
        transport: TransportArg,
        /// Ring entries per CPU queue of the io_uring transport (1 MiB of buffer each).
        #[arg(long, default_value_t = 4, value_name = "N")]
        ring_depth: usize,
        /// At exit, print how many requests each io_uring queue served and which requests
        /// came over /dev/fuse, by opcode.
        #[arg(long)]
        stats: bool,
        /// Unmount by itself once no file or directory has been open and no request has come
        /// for DURATION (e.g. 90s, 15m, 2h; a bare number is seconds).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        idle: Option<std::time::Duration>,
        /// Benchmark ablations to turn on, comma-separated: unregistered-buffers,
        /// io-on-workers, metadata-on-thread, heap-arena, late-writeback, no-decrypt-ahead,
        /// and the experiment direct-read-ahead (see `oxbench ablation`).
        #[arg(long, hide = true, value_name = "LIST", default_value = "")]
        ablate: oxcrypt_io::Tuning,
    },
    /// Unmount a mounted vault.
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Upgrade a format-7 vault to format 8 as Cryptomator does (contents and names stay;
    /// the old masterkey file is kept as masterkey.cryptomator.<hash>.bkup).
    Migrate {
        /// The vault directory.
        vault: PathBuf,
    },
    /// Make `mount(8)` and /etc/fstab able to mount vaults: link mount.oxcrypt and
    /// mount.fuse.oxcrypt in DIR to this binary.
    #[command(after_help = "Then an /etc/fstab line such as\n  \
        /srv/vaults/photos  /mnt/photos  oxcrypt  passfile=/etc/oxcrypt/photos.pw,allow_other,noauto  0 0\n\
        mounts with `mount /mnt/photos`. Options: ro, allow_other, passfile=FILE, extpass=CMD \
        (no commas), transport=auto|uring|dev-fuse, idle=DURATION, threads=N, cache_ms=MS, \
        ring_depth=N; mount(8)'s own (noauto, nofail, user, x-systemd.*, …) are accepted.")]
    InstallHelpers {
        /// Where mount(8) looks for helpers.
        #[arg(long, value_name = "DIR", default_value = "/sbin")]
        dir: PathBuf,
    },
    /// Print a shell completion script to stdout.
    #[command(after_help = "Install, for example:\n  \
        oxcrypt completions bash > /etc/bash_completion.d/oxcrypt\n  \
        oxcrypt completions zsh > \"${fpath[1]}/_oxcrypt\"\n  \
        oxcrypt completions fish > ~/.config/fish/completions/oxcrypt.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page oxcrypt(1) to stdout, or write it and one page per command
    /// (oxcrypt-mount(1), …) into a directory.
    #[command(after_help = "Install, for example:\n  \
        oxcrypt man --dir /usr/local/share/man/man1 && mandb")]
    Man {
        /// Write oxcrypt.1 and oxcrypt-COMMAND.1 into DIR instead of printing oxcrypt.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Verify every header, chunk, name and directory link; list every problem.
    #[command(
        after_help = "Exits with status 4 if any error was found. Orphan content \
                            directories are reported as warnings and do not change the status."
    )]
    Check {
        /// The vault directory.
        vault: PathBuf,
        /// One JSON object on stdout instead of text: counts and every problem.
        #[arg(long)]
        json: bool,
        /// Fix what can be fixed without guessing: write missing dirid.c9r backups, give
        /// sync-conflict copies their own names, rename unreadable entries aside (to a hidden
        /// `.unreadable.` name beside them). Says what it did, then checks again. A vault
        /// the check finds sound is not touched.
        #[arg(long)]
        repair: bool,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn,fuser=error",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("OXCRYPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// No core dumps and no ptrace by other processes of the same user: the process holds keys.
fn harden_process() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
}

fn main() -> ExitCode {
    harden_process();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match args.first() {
        Some(argv0) if helper::invoked_as_helper(argv0) => {
            match helper::translate(&args).map(Cli::try_parse_from) {
                Ok(Ok(cli)) => cli,
                Ok(Err(e)) => e.exit(),
                Err(e) => {
                    eprintln!("oxcrypt: {e:#}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
        }
        _ => Cli::parse(),
    };
    init_logging(cli.global.verbose);
    let result = run(cli);
    match result {
        Ok(code) => ExitCode::from(code),
        // (EXIT_OK and EXIT_CHECK_FAILED come back as Ok codes from the commands.)
        Err(e) => {
            let wrong_password = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<oxcrypt_core::Error>(),
                    Some(oxcrypt_core::Error::WrongPassword)
                )
            });
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("oxcrypt: {}", msg.join(": "));
            ExitCode::from(if wrong_password {
                EXIT_WRONG_PASSWORD
            } else {
                EXIT_ERROR
            })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    use commands as c;
    match cli.command {
        Command::Init {
            vault,
            cipher,
            scrypt_cost,
        } => c::init(g, &vault, cipher, scrypt_cost),
        Command::Info { vault, json } => c::info(g, &vault, json),
        Command::Ls {
            vault,
            path,
            long,
            recursive,
        } => c::ls(g, &vault, &path, long, recursive),
        Command::Tree { vault, path } => c::tree(g, &vault, &path),
        Command::Cat { vault, path } => c::cat(g, &vault, &path),
        Command::Get { vault, src, dest } => transfer::get(g, &vault, &src, &dest),
        Command::Put { vault, src, dest } => transfer::put(g, &vault, &src, &dest),
        Command::Mkdir {
            vault,
            path,
            parents,
        } => c::mkdir(g, &vault, &path, parents),
        Command::Mv { vault, src, dest } => c::mv(g, &vault, &src, &dest),
        Command::Rm {
            vault,
            paths,
            recursive,
            force,
        } => c::rm(g, &vault, &paths, recursive, force),
        Command::Ln {
            vault,
            target,
            link,
            ..
        } => c::ln(g, &vault, &target, &link),
        Command::Passwd {
            vault,
            new_password_file,
        } => c::passwd(g, &vault, new_password_file.as_deref()),
        Command::Check {
            vault,
            json,
            repair,
        } => c::check(g, &vault, json, repair),
        Command::Mount {
            vault,
            mountpoint,
            read_only,
            allow_other,
            threads,
            io,
            init,
            daemon,
            cache_ms,
            read_ahead_kb,
            writeback_cache,
            transport,
            ring_depth,
            stats,
            idle,
            ablate,
        } => mount::mount(
            g,
            &mount::MountArgs {
                vault: &vault,
                mountpoint: &mountpoint,
                read_only,
                allow_other,
                threads,
                io: io.map(|i| match i {
                    IoArg::Uring => oxcrypt_io::IoMode::Uring,
                    IoArg::Sync => oxcrypt_io::IoMode::Sync,
                }),
                init,
                daemon,
                ttl_ms: cache_ms,
                read_ahead_kb,
                writeback_cache: writeback_cache == Switch::On,
                transport: match transport {
                    TransportArg::Auto => oxcrypt_fuse::TransportChoice::Auto,
                    TransportArg::Uring => oxcrypt_fuse::TransportChoice::Uring,
                    TransportArg::DevFuse => oxcrypt_fuse::TransportChoice::DevFuse,
                },
                ring_depth,
                stats,
                idle,
                tuning: ablate,
            },
        ),
        Command::Umount { mountpoint } => mount::umount(&mountpoint),
        Command::Migrate { vault } => {
            match oxcrypt_core::migrate::detect_format(&vault) {
                None => {
                    oxcrypt_core::Vault::check_exists(&vault)
                        .with_context(|| format!("cannot migrate {}", vault.display()))?;
                    anyhow::bail!("{}: no vault here", vault.display())
                }
                Some(8) => anyhow::bail!("{}: already a format-8 vault", vault.display()),
                Some(7) => {}
                Some(v) => anyhow::bail!(
                    "{}: vault format {v}; only format 7 is upgraded here (Cryptomator 1.6+ upgrades older ones)",
                    vault.display()
                ),
            }
            let pw = password::vault_password(g, false)?;
            let done = oxcrypt_core::migrate::migrate_format7(&vault, &pw)
                .with_context(|| format!("cannot migrate {}", vault.display()))?;
            println!(
                "{}: now vault format 8 (SIV_CTRMAC); the old masterkey file is kept as {}",
                vault.display(),
                done.backup.display()
            );
            Ok(EXIT_OK)
        }
        Command::InstallHelpers { dir } => {
            for link in helper::install(&dir)? {
                println!("{} -> this oxcrypt", link.display());
            }
            Ok(EXIT_OK)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "oxcrypt", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir).with_context(|| {
                        format!("cannot write man pages into {}", dir.display())
                    })?;
                    eprintln!("man pages written to {}", dir.display());
                }
                None => match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                    // `oxcrypt man | head` is no error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    r => r.context("writing the man page")?,
                },
            }
            Ok(EXIT_OK)
        }
    }
}

/// Exit code for a failed check (used by `commands::check`).
pub const fn check_failed_code() -> u8 {
    EXIT_CHECK_FAILED
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn idle_durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
    }
}

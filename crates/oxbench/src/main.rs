//! `oxbench`: realistic workloads against oxcrypt and the file systems users would pick
//! instead, each mounted fresh by oxbench, measured, and unmounted, with targets interleaved
//! across iterations. `oxbench ablation` runs oxcrypt with one design choice turned off at a
//! time.
//!
//! `targets.rs` knows how to create and mount each file system, `workloads.rs` holds the
//! workloads, `report.rs` the tables, JSON and charts.

mod report;
mod soak;
mod targets;
mod workloads;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use report::Results;
use targets::Target;

#[derive(Parser)]
#[command(
    name = "oxbench",
    version,
    about = "Benchmark oxcrypt against its peers on realistic workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Suite {
    /// Every workload at full size (sized for a 2-core, 24 GiB machine).
    Workloads,
    /// A small version of everything, for development (well under a minute per target).
    Quick,
    /// 16 clients of mixed operations, each checked against its own model, for 10 minutes
    /// (scale 1), with the daemon's memory sampled every second.
    Soak,
}

#[derive(clap::Args)]
struct Common {
    /// Workload set.
    #[arg(long, value_enum, default_value = "workloads")]
    suite: Suite,
    /// Iterations per target (medians and spread are over these).
    #[arg(long)]
    iterations: Option<usize>,
    /// Multiply every workload size by this.
    #[arg(long)]
    scale: Option<f64>,
    /// Only these workloads (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The oxcrypt binary (default: target/release/oxcrypt next to this binary).
    #[arg(long, value_name = "PATH")]
    oxcrypt: Option<PathBuf>,
    /// Write all raw results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one SVG chart per workload into DIR.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Also write the Markdown tables to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the suite on the targets, side by side.
    Run {
        #[command(flatten)]
        common: Common,
        /// Targets, comma-separated; the first is the ratio baseline. Besides the defaults:
        /// `oxcrypt-uring` and `oxcrypt-devfuse` force one transport (the ring needs
        /// enable_uring=Y; run under ci/with-enable-uring.sh); `oxcrypt-nowriteback` turns the
        /// kernel's writeback cache off; `oxcrypt-uring-noahead` and `oxcrypt-devfuse-noahead`
        /// are those transports without decrypting ahead of sequential readers;
        /// `NAME@opt=value+opt2` is the oxcrypt target NAME mounted with `--opt value --opt2`
        /// as well (e.g. `oxcrypt-devfuse@read-ahead-kb=4096`), and `+env.VAR=value` sets VAR
        /// in its environment (e.g. `oxcrypt-uring@env.OXCRYPT_RING_NOPIN=1`).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "oxcrypt,gocryptfs,securefs,cryfs,rclone-crypt,passthrough,plain"
        )]
        targets: Vec<String>,
        /// Measure an existing mountpoint too.
        #[arg(long, value_name = "PATH")]
        mounted: Vec<PathBuf>,
        /// Also run this other oxcrypt binary (e.g. a build of the previous commit), as the
        /// target `oxcrypt-before`, so a change is measured against its baseline in one run.
        #[arg(long, value_name = "PATH")]
        compare_oxcrypt: Option<PathBuf>,
    },
    /// Run oxcrypt with one design choice turned off at a time.
    Ablation {
        #[command(flatten)]
        common: Common,
        /// An oxcrypt binary built with the system allocator
        /// (`cargo build --release -p oxcrypt-cli --no-default-features --target-dir target/sysalloc`).
        #[arg(long, value_name = "PATH")]
        system_alloc_oxcrypt: Option<PathBuf>,
    },
}

fn default_oxcrypt() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("oxcrypt")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("target/release/oxcrypt"))
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Run {
            common,
            targets,
            mounted,
            compare_oxcrypt,
        } => {
            let bin = common.oxcrypt.clone().unwrap_or_else(default_oxcrypt);
            let mut list = Vec::new();
            for name in &targets {
                match Target::by_name(name, &bin) {
                    Ok(t) => list.push(t),
                    Err(why) => eprintln!("oxbench: skipping {why}"),
                }
            }
            if let Some(before) = &compare_oxcrypt {
                list.push(Target::oxcrypt_variant("oxcrypt-before", before, &[]));
            }
            list.extend(mounted.iter().map(|p| Target::mounted(p)));
            bench(&common, list)
        }
        Cmd::Ablation {
            common,
            system_alloc_oxcrypt,
        } => {
            let bin = common.oxcrypt.clone().unwrap_or_else(default_oxcrypt);
            let mut list = vec![
                Target::oxcrypt_variant("oxcrypt", &bin, &[]),
                Target::oxcrypt_variant("io-sync", &bin, &["--io", "sync"]),
                Target::oxcrypt_variant(
                    "unregistered-bufs",
                    &bin,
                    &["--ablate", "unregistered-buffers"],
                ),
                Target::oxcrypt_variant(
                    "metadata-on-thread",
                    &bin,
                    &["--ablate", "metadata-on-thread"],
                ),
                Target::oxcrypt_variant("heap-not-arena", &bin, &["--ablate", "heap-arena"]),
                Target::oxcrypt_variant("io-on-workers", &bin, &["--ablate", "io-on-workers"]),
            ];
            match system_alloc_oxcrypt {
                Some(p) => list.push(Target::oxcrypt_variant("system-alloc", &p, &[])),
                None => {
                    eprintln!("oxbench: skipping system-alloc (give --system-alloc-oxcrypt PATH)")
                }
            }
            bench(&common, list)
        }
    }
}

fn bench(common: &Common, targets: Vec<Target>) -> Result<()> {
    if targets.is_empty() {
        bail!("no target can run here");
    }
    let (iterations, scale) = match common.suite {
        Suite::Workloads => (common.iterations.unwrap_or(3), common.scale.unwrap_or(1.0)),
        Suite::Quick => (common.iterations.unwrap_or(1), common.scale.unwrap_or(0.03)),
        Suite::Soak => (common.iterations.unwrap_or(1), common.scale.unwrap_or(1.0)),
    };
    let all = match common.suite {
        Suite::Soak => vec![workloads::soak()],
        _ => workloads::all(),
    };
    let workloads: Vec<_> = all
        .into_iter()
        .filter(|w| common.only.is_empty() || common.only.iter().any(|o| o == w.name))
        .collect();
    if workloads.iter().any(|w| w.name == "archive") {
        workloads::source_tarball(scale).context("building the source tarball")?;
    }
    let mut results = Results {
        targets: targets.iter().map(|t| t.name.clone()).collect(),
        ..Results::default()
    };
    let total = (iterations * targets.len() * workloads.len()) as u64;
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
    {
        bar.set_style(style);
    }
    for iter in 0..iterations {
        // Interleave: each iteration starts with a different target.
        for k in 0..targets.len() {
            let target = &targets[(k + iter) % targets.len()];
            for w in &workloads {
                bar.set_message(format!("{} / {}", target.name, w.name));
                match measure(target, w, scale) {
                    Ok(metrics) => results.add(w.name, &target.name, &metrics),
                    Err(e) => {
                        let msg = format!("{} on {}: {e:#}", w.name, target.name);
                        bar.println(format!("oxbench: {msg}"));
                        results.failures.push(msg);
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let md = report::markdown(&results);
    println!("{md}");
    if let Some(p) = &common.markdown {
        std::fs::write(p, &md)?;
    }
    if let Some(p) = &common.json {
        std::fs::write(p, serde_json::to_vec_pretty(&results)?)?;
    }
    if let Some(dir) = &common.plot {
        let mains: Vec<(&str, &str)> = workloads.iter().map(|w| (w.name, w.main)).collect();
        report::plots(&results, &mains, dir)?;
    }
    Ok(())
}

/// Mounts a fresh store, runs one workload, adds daemon CPU seconds and peak RSS, unmounts.
fn measure(target: &Target, w: &workloads::Workload, scale: f64) -> Result<Vec<workloads::Metric>> {
    let mounted = target.mount()?;
    let cpu0 = mounted.cpu_seconds();
    let result = (w.run)(&mounted.dir, scale, mounted.pid());
    let cpu = mounted.cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
    let rss = mounted.peak_rss_mib();
    mounted.unmount();
    let mut metrics = result?;
    if let Some(c) = cpu {
        metrics.push(workloads::Metric {
            name: "daemon CPU s".into(),
            unit: "s",
            value: c,
            higher_is_better: false,
        });
    }
    if let Some(r) = rss {
        metrics.push(workloads::Metric {
            name: "daemon peak RSS MiB".into(),
            unit: "MiB",
            value: r,
            higher_is_better: false,
        });
    }
    Ok(metrics)
}

//! The `soak` workload: 16 clients of mixed creates, writes, reads, renames, truncates and
//! deletes at once, for ten minutes at scale 1. Each client keeps its own model of its files
//! and checks every read against it; the daemon's resident memory is sampled every second.
//! Any error or wrong byte fails the run; memory growth after the warm-up is reported.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::workloads::Metric;

const CLIENTS: usize = 16;

/// A small deterministic PRNG (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let seed = self.next() as u8;
        (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect()
    }
}

/// One client's files and what they must hold.
struct Client {
    dir: PathBuf,
    files: HashMap<String, Vec<u8>>,
    rng: Rng,
    next_name: u64,
}

impl Client {
    fn pick(&mut self) -> Option<String> {
        if self.files.is_empty() {
            return None;
        }
        let i = self.rng.below(self.files.len() as u64) as usize;
        self.files.keys().nth(i).cloned()
    }

    fn fresh_name(&mut self) -> String {
        self.next_name += 1;
        if self.rng.below(4) == 0 {
            // A long name: stored shortened (.c9s) in the vault.
            format!("f{}-{}", self.next_name, "l".repeat(180))
        } else {
            format!("f{}", self.next_name)
        }
    }

    fn verify(&self, name: &str) -> Result<()> {
        let data = fs::read(self.dir.join(name))?;
        let want = &self.files[name];
        if data != *want {
            bail!(
                "{}: read {} bytes that differ from the {} written",
                self.dir.join(name).display(),
                data.len(),
                want.len()
            );
        }
        Ok(())
    }

    /// One random operation, checked against the model.
    fn step(&mut self) -> Result<()> {
        let op = if self.files.len() < 4 {
            0
        } else {
            self.rng.below(10)
        };
        match op {
            0 | 1 => {
                let name = self.fresh_name();
                let len = self.rng.below(200_000) as usize;
                let data = self.rng.bytes(len);
                fs::write(self.dir.join(&name), &data)?;
                self.files.insert(name, data);
            }
            2 | 3 => {
                let Some(name) = self.pick() else {
                    return Ok(());
                };
                let len = self.files[&name].len() as u64;
                let at = self.rng.below(len + 1000);
                let len = 1 + self.rng.below(70_000) as usize;
                let data = self.rng.bytes(len);
                let f = OpenOptions::new().write(true).open(self.dir.join(&name))?;
                f.write_all_at(&data, at)?;
                let model = self.files.get_mut(&name).expect("picked");
                let end = at as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[at as usize..end].copy_from_slice(&data);
            }
            4 | 5 => {
                let Some(name) = self.pick() else {
                    return Ok(());
                };
                self.verify(&name)?;
            }
            6 => {
                let Some(name) = self.pick() else {
                    return Ok(());
                };
                let to = self.fresh_name();
                fs::rename(self.dir.join(&name), self.dir.join(&to))?;
                let data = self.files.remove(&name).expect("picked");
                self.files.insert(to, data);
            }
            7 => {
                let Some(name) = self.pick() else {
                    return Ok(());
                };
                let len = self.files[&name].len() as u64;
                let new = self.rng.below(len * 2 + 1);
                OpenOptions::new()
                    .write(true)
                    .open(self.dir.join(&name))?
                    .set_len(new)?;
                self.files
                    .get_mut(&name)
                    .expect("picked")
                    .resize(new as usize, 0);
            }
            _ => {
                let Some(name) = self.pick() else {
                    return Ok(());
                };
                if self.files.len() > 40 || self.rng.below(2) == 0 {
                    fs::remove_file(self.dir.join(&name))?;
                    self.files.remove(&name);
                }
            }
        }
        Ok(())
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Runs the soak for 600 s × `scale` (at least 10 s) on `dir`; `pid` is the daemon's.
pub fn soak(dir: &Path, scale: f64, pid: Option<u32>) -> Result<Vec<Metric>> {
    let secs = (600.0 * scale).max(10.0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let samples: Mutex<Vec<(f64, f64)>> = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        if let Some(pid) = pid {
            let (stop, samples) = (&stop, &samples);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(r) = rss_mib(pid) {
                        samples
                            .lock()
                            .unwrap()
                            .push((start.elapsed().as_secs_f64(), r));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
        let mut workers = Vec::new();
        for c in 0..CLIENTS {
            let cdir = dir.join(format!("client{c}"));
            fs::create_dir_all(&cdir)?;
            let (stop, ops, failures) = (&stop, &ops, &failures);
            workers.push(s.spawn(move || {
                let mut client = Client {
                    dir: cdir,
                    files: HashMap::new(),
                    rng: Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) * 0x1000_0001)),
                    next_name: 0,
                };
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    if let Err(e) = client.step() {
                        failures.lock().unwrap().push(format!("client {c}: {e:#}"));
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                let names: Vec<String> = client.files.keys().cloned().collect();
                for name in names {
                    if let Err(e) = client.verify(&name) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("client {c}, final check: {e:#}"));
                    }
                }
            }));
        }
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    let failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        bail!("soak failed:\n{}", failures.join("\n"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut out = vec![Metric {
        name: "ops/s".into(),
        unit: "ops/s",
        value: ops.load(Ordering::Relaxed) as f64 / elapsed,
        higher_is_better: true,
    }];
    let samples = samples.into_inner().unwrap();
    if !samples.is_empty() {
        // Warm-up: the first fifth of the run. Growth: the highest sample after it, less the
        // highest during it.
        let warm = elapsed / 5.0;
        let peak = |f: &dyn Fn(f64) -> bool| {
            samples
                .iter()
                .filter(|(t, _)| f(*t))
                .map(|s| s.1)
                .fold(0.0, f64::max)
        };
        let during = peak(&|t| t <= warm);
        let after = peak(&|t| t > warm);
        out.push(Metric {
            name: "RSS growth after warm-up MiB".into(),
            unit: "MiB",
            value: (after - during).max(0.0),
            higher_is_better: false,
        });
        // A plateau or a leak: growth over the second half alone.
        let half = elapsed / 2.0;
        let first_half = peak(&|t| t <= half);
        let second_half = peak(&|t| t > half);
        out.push(Metric {
            name: "RSS growth in the second half MiB".into(),
            unit: "MiB",
            value: (second_half - first_half).max(0.0),
            higher_is_better: false,
        });
        if std::env::var_os("OXBENCH_SOAK_SAMPLES").is_some() {
            for (t, r) in &samples {
                eprintln!("rss {t:.0} s {r:.1} MiB");
            }
        }
    }
    Ok(out)
}

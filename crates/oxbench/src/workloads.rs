//! The workloads. Each runs in a fresh directory of the target and returns its metrics; sizes
//! scale with `--scale` (1.0 is sized for a 2-core, 24 GiB machine).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// One measured number.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Metric {
    /// Name within the workload.
    pub name: String,
    /// Unit shown in tables.
    pub unit: &'static str,
    /// The value.
    pub value: f64,
    /// Whether more is better.
    pub higher_is_better: bool,
}

fn m(name: impl Into<String>, unit: &'static str, value: f64, higher_is_better: bool) -> Metric {
    Metric {
        name: name.into(),
        unit,
        value,
        higher_is_better,
    }
}

/// A workload: name, its main metric, and the function that runs it.
pub struct Workload {
    /// Table name.
    pub name: &'static str,
    /// The metric charted and summarised.
    pub main: &'static str,
    /// Runs in `dir` with `scale`; the last argument is the daemon's pid, if there is one.
    pub run: fn(&Path, f64, Option<u32>) -> Result<Vec<Metric>>,
}

/// Wraps a workload that does not look at the daemon.
macro_rules! plain {
    ($f:ident) => {{
        fn run(dir: &Path, scale: f64, _pid: Option<u32>) -> Result<Vec<Metric>> {
            $f(dir, scale)
        }
        run
    }};
}

/// Every workload, in report order.
pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "large-media",
            main: "seq write MB/s",
            run: plain!(large_media),
        },
        Workload {
            name: "video",
            main: "MB/s",
            run: plain!(video),
        },
        Workload {
            name: "media",
            main: "seq read MB/s",
            run: plain!(media),
        },
        Workload {
            name: "concurrent",
            main: "randread 4k x4 IOPS",
            run: plain!(concurrent),
        },
        Workload {
            name: "fio-direct",
            main: "randread 4k x4 IOPS",
            run: plain!(fio_direct),
        },
        Workload {
            name: "ide",
            main: "total s",
            run: plain!(ide),
        },
        Workload {
            name: "working-set",
            main: "ops/s",
            run: plain!(working_set),
        },
        Workload {
            name: "small-files",
            main: "create s",
            run: plain!(small_files),
        },
        Workload {
            name: "big-dirs",
            main: "create in 10k dir us/op",
            run: plain!(big_dirs),
        },
        Workload {
            name: "archive",
            main: "extract s",
            run: plain!(archive),
        },
    ]
}

/// The soak workload (`--suite soak`), apart from the others: it runs for minutes.
pub fn soak() -> Workload {
    Workload {
        name: "soak",
        main: "ops/s",
        run: crate::soak::soak,
    }
}

/// Drops the page cache so reads come from the backing store (root only; ignored otherwise).
pub fn drop_caches() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

fn scaled(base: u64, scale: f64, min: u64) -> u64 {
    ((base as f64 * scale) as u64).max(min)
}

fn p99(lat: &mut [Duration]) -> f64 {
    percentile(lat, 99)
}

/// The `pct`-th percentile of `lat`, in milliseconds (0 for none).
fn percentile(lat: &mut [Duration], pct: usize) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort();
    lat[(lat.len() * pct / 100).min(lat.len() - 1)].as_secs_f64() * 1000.0
}

/// Large media as a player uses it: a 4 GiB file (scale 1) written in 1 MiB blocks and
/// fsynced, then played back cold twice: straight through, and with a seek to another place
/// after every 8 reads (a viewer scrubbing). Throughput and the p50/p99 of single 1 MiB reads;
/// the harness adds the daemon's peak memory over all of it.
fn media(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let size = scaled(4 << 30, scale, 256 << 20);
    let p = dir.join("film.mkv");
    let t = Instant::now();
    write_file(&p, size, true)?;
    let write = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let mut buf = vec![0u8; 1 << 20];
    let mut play = |seek: bool| -> Result<(f64, f64, f64)> {
        drop_caches();
        let f = File::open(&p)?;
        let mut rng = Rng(0x51ed_270b_2f1c_a3d5);
        let (mut off, mut read, mut lat) = (0u64, 0u64, Vec::new());
        let t = Instant::now();
        while read < size {
            if seek && lat.len() % 8 == 7 {
                off = rng.below(size >> 20) << 20;
            }
            if off >= size {
                off = 0;
            }
            let s = Instant::now();
            let n = f.read_at(&mut buf, off)?;
            lat.push(s.elapsed());
            if n == 0 {
                bail!("unexpected end of file at {off}");
            }
            read += n as u64;
            off += n as u64;
        }
        let mbps = read as f64 / t.elapsed().as_secs_f64() / 1e6;
        Ok((mbps, percentile(&mut lat, 50), percentile(&mut lat, 99)))
    };
    let (seq, seq50, seq99) = play(false)?;
    let (sk, sk50, sk99) = play(true)?;
    fs::remove_file(&p)?;
    Ok(vec![
        m("write+fsync MB/s", "MB/s", write, true),
        m("seq read MB/s", "MB/s", seq, true),
        m("seq read p50 ms", "ms", seq50, false),
        m("seq read p99 ms", "ms", seq99, false),
        m("seek read MB/s", "MB/s", sk, true),
        m("seek read p50 ms", "ms", sk50, false),
        m("seek read p99 ms", "ms", sk99, false),
    ])
}

/// A small deterministic generator (xorshift) so every target sees the same operations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn write_file(path: &Path, size: u64, fsync: bool) -> Result<()> {
    let mut f = File::create(path)?;
    let block = vec![0x5au8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    if fsync {
        f.sync_all()?;
    }
    Ok(())
}

fn large_media(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let size = scaled(2 << 30, scale, 64 << 20);
    let p = dir.join("movie.mkv");
    let t = Instant::now();
    write_file(&p, size, true)?;
    let w = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop_caches();
    let t = Instant::now();
    let mut f = File::open(&p)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if total != size {
        bail!("read {total} of {size} bytes");
    }
    let r = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    Ok(vec![
        m("seq write MB/s", "MB/s", w, true),
        m("seq read MB/s", "MB/s", r, true),
    ])
}

fn video(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let size = scaled(512 << 20, scale, 32 << 20);
    let p = dir.join("video.mp4");
    write_file(&p, size, true)?;
    drop_caches();
    let f = File::open(&p)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut lat = Vec::new();
    let (mut off, mut read, mut k) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    while off < size {
        let s = Instant::now();
        let n = f.read_at(&mut buf, off)?;
        lat.push(s.elapsed());
        if n == 0 {
            break;
        }
        read += n as u64;
        off += n as u64;
        k += 1;
        if k % 32 == 0 {
            off += 4 << 20; // the viewer skips ahead
        }
    }
    let mbps = read as f64 / t.elapsed().as_secs_f64() / 1e6;
    Ok(vec![
        m("MB/s", "MB/s", mbps, true),
        m("p99 read ms", "ms", p99(&mut lat), false),
    ])
}

fn random_io(
    path: &Path,
    size: u64,
    bs: usize,
    threads: usize,
    write: bool,
    secs: f64,
) -> Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let results: Vec<Result<(u64, Vec<Duration>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<(u64, Vec<Duration>)> {
                    let f = OpenOptions::new().read(true).write(true).open(path)?;
                    let mut rng = Rng(0x9e3779b97f4a7c15 ^ (t as u64 + 1));
                    let mut buf = vec![0x33u8; bs];
                    let (mut ops, mut lat) = (0u64, Vec::new());
                    while Instant::now() < deadline {
                        let off = rng.below(size / bs as u64) * bs as u64;
                        let s = Instant::now();
                        if write {
                            f.write_all_at(&buf, off)?;
                        } else {
                            f.read_exact_at(&mut buf, off)?;
                        }
                        lat.push(s.elapsed());
                        ops += 1;
                    }
                    Ok((ops, lat))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect()
    });
    let (mut ops, mut lat) = (0u64, Vec::new());
    for r in results {
        let (o, l) = r?;
        ops += o;
        lat.extend(l);
    }
    Ok((ops as f64 / secs, p99(&mut lat)))
}

fn concurrent(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let size = scaled(256 << 20, scale, 16 << 20);
    let p = dir.join("shared.db");
    write_file(&p, size, true)?;
    let secs = (1.0 * scale).clamp(0.3, 2.0);
    let mut out = Vec::new();
    for threads in [1usize, 2, 4, 8, 16] {
        for (bs, label) in [(4096usize, "4k"), (128 << 10, "128k")] {
            for write in [false, true] {
                let (iops, p) = random_io(&p, size, bs, threads, write, secs)?;
                let op = if write { "randwrite" } else { "randread" };
                out.push(m(
                    format!("{op} {label} x{threads} IOPS"),
                    "IOPS",
                    iops,
                    true,
                ));
                out.push(m(format!("{op} {label} x{threads} p99 ms"), "ms", p, false));
            }
        }
    }
    Ok(out)
}

/// The issue's database-style reference: fio 4 KiB random reads, 4 jobs, O_DIRECT (every read
/// reaches the file system, no page cache), on a 512 MiB file.
fn fio_direct(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let size = scaled(512 << 20, scale, 32 << 20);
    let p = dir.join("fio.dat");
    write_file(&p, size, true)?;
    let secs = (5.0 * scale).clamp(2.0, 5.0);
    let out = Command::new("fio")
        .args([
            "--name=randread",
            "--rw=randread",
            "--bs=4k",
            "--numjobs=4",
            "--direct=1",
            "--ioengine=psync",
            "--group_reporting",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--filename={}", p.display()))
        .arg(format!("--size={size}"))
        .arg(format!("--runtime={secs}"))
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run fio ({e}); install it with `apt-get install fio`")
        })?;
    if !out.status.success() {
        bail!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let read = &v["jobs"][0]["read"];
    let iops = read["iops"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("fio printed no IOPS"))?;
    let p99 = read["clat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6;
    Ok(vec![
        m("randread 4k x4 IOPS", "IOPS", iops, true),
        m("randread 4k x4 p99 ms", "ms", p99, false),
    ])
}

fn make_tree(root: &Path, files: u64, rng: &mut Rng) -> Result<Vec<std::path::PathBuf>> {
    let mut paths = Vec::new();
    for i in 0..files {
        let d = root.join(format!("src/mod{}/sub{}", i % 40, (i / 40) % 5));
        fs::create_dir_all(&d)?;
        let p = d.join(format!("file{i}.rs"));
        let size = 1024 + rng.below(20 * 1024) as usize;
        fs::write(
            &p,
            "fn main() { println!(\"hello\"); }\n".repeat(size / 36 + 1),
        )?;
        paths.push(p);
    }
    Ok(paths)
}

fn walk(dir: &Path, stat_only: bool) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = fs::symlink_metadata(e.path())?;
        if md.is_dir() {
            n += walk(&e.path(), stat_only)?;
        } else {
            n += 1;
            if !stat_only {
                fs::read(e.path())?;
            }
        }
    }
    Ok(n)
}

fn ide(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let files = scaled(4000, scale, 200);
    let mut rng = Rng(42);
    let paths = make_tree(dir, files, &mut rng)?;
    let t = Instant::now();
    let found = walk(dir, true)?;
    let scan = t.elapsed().as_secs_f64();
    let t1 = Instant::now();
    walk(dir, false)?;
    let read = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    for k in 0..20 {
        // Save like an editor: write a temp file, then rename it over the original.
        let p = &paths[rng.below(paths.len() as u64) as usize];
        let tmp = p.with_extension(format!("rs.tmp{k}"));
        let mut content = fs::read(p)?;
        content.extend_from_slice(b"// edited\n");
        fs::write(&tmp, &content)?;
        fs::rename(&tmp, p)?;
    }
    let edit = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let again = walk(dir, true)?;
    let rescan = t3.elapsed().as_secs_f64();
    if found != files || again != files {
        bail!("scan found {found}/{again} of {files} files");
    }
    let total = t.elapsed().as_secs_f64();
    Ok(vec![
        m("total s", "s", total, false),
        m("scan s", "s", scan, false),
        m("read all s", "s", read, false),
        m("edit 20 s", "s", edit, false),
        m("rescan s", "s", rescan, false),
    ])
}

fn working_set(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let files = scaled(500, scale, 50) as usize;
    let size = 64 << 10;
    for i in 0..files {
        fs::write(dir.join(format!("w{i}")), vec![i as u8; size])?;
    }
    // Zipf(1.1) over the files: a few are hot, most are cold.
    let weights: Vec<f64> = (1..=files).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total_w: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(files);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total_w;
        cdf.push(acc);
    }
    let mut rng = Rng(7);
    let ops = scaled(5000, scale, 500);
    let mut buf = vec![0u8; size];
    let t = Instant::now();
    for _ in 0..ops {
        let u = rng.below(1 << 30) as f64 / (1u64 << 30) as f64;
        let i = cdf.partition_point(|&c| c < u).min(files - 1);
        let p = dir.join(format!("w{i}"));
        match rng.below(10) {
            0..=5 => {
                fs::read(&p)?;
            }
            6..=8 => {
                File::open(&p)?.read_exact_at(&mut buf[..4096], rng.below((size - 4096) as u64))?;
            }
            _ => OpenOptions::new()
                .write(true)
                .open(&p)?
                .write_all_at(&buf[..4096], rng.below((size - 4096) as u64))?,
        }
    }
    Ok(vec![m(
        "ops/s",
        "ops/s",
        ops as f64 / t.elapsed().as_secs_f64(),
        true,
    )])
}

fn small_files(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let n = scaled(10_000, scale, 500);
    let data = vec![0x42u8; 4096];
    let path = |i: u64| dir.join(format!("d{}/f{i}", i % 100));
    for d in 0..100 {
        fs::create_dir(dir.join(format!("d{d}")))?;
    }
    let t = Instant::now();
    for i in 0..n {
        fs::write(path(i), &data)?;
    }
    let create = t.elapsed().as_secs_f64();
    drop_caches();
    let t = Instant::now();
    for i in 0..n {
        fs::metadata(path(i))?;
    }
    let stat = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        if fs::read(path(i))?.len() != 4096 {
            bail!("short read");
        }
    }
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        fs::remove_file(path(i))?;
    }
    let delete = t.elapsed().as_secs_f64();
    Ok(vec![
        m("create s", "s", create, false),
        m("stat s", "s", stat, false),
        m("read s", "s", read, false),
        m("delete s", "s", delete, false),
    ])
}

fn big_dirs(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let mut out = Vec::new();
    let big = scaled(10_000, scale, 2000);
    for n in [10u64, 1000, big] {
        let d = dir.join(format!("dir{n}"));
        fs::create_dir(&d)?;
        for i in 0..n {
            File::create(d.join(format!("entry-{i:06}")))?;
        }
        drop_caches();
        let t = Instant::now();
        let count = fs::read_dir(&d)?.count() as u64;
        if count != n {
            bail!("readdir saw {count} of {n}");
        }
        out.push(m(
            format!("readdir {n} ms"),
            "ms",
            t.elapsed().as_secs_f64() * 1000.0,
            false,
        ));
    }
    let d = dir.join(format!("dir{big}"));
    let k = 1000u64;
    let t = Instant::now();
    for i in 0..k {
        File::create(d.join(format!("new-{i}")))?;
    }
    out.push(m(
        "create in 10k dir us/op",
        "us",
        t.elapsed().as_secs_f64() * 1e6 / k as f64,
        false,
    ));
    let t = Instant::now();
    for i in 0..k {
        fs::metadata(d.join(format!("new-{i}")))?;
    }
    out.push(m(
        "stat in 10k dir us/op",
        "us",
        t.elapsed().as_secs_f64() * 1e6 / k as f64,
        false,
    ));
    let t = Instant::now();
    for i in 0..k {
        fs::remove_file(d.join(format!("new-{i}")))?;
    }
    out.push(m(
        "delete in 10k dir us/op",
        "us",
        t.elapsed().as_secs_f64() * 1e6 / k as f64,
        false,
    ));
    Ok(out)
}

/// A real source tarball: sources of the crates in the local cargo registry, up to
/// `47 MB × scale`, built once per run and cached in /var/tmp.
pub fn source_tarball(scale: f64) -> Result<std::path::PathBuf> {
    let want = scaled(47_000_000, scale, 2_000_000);
    let tar = std::path::PathBuf::from(format!("/var/tmp/oxbench-src-{want}.tar"));
    if tar.is_file() {
        return Ok(tar);
    }
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let mut srcs: Vec<_> = fs::read_dir(format!("{home}/registry/src"))?
        .flatten()
        .flat_map(|index| fs::read_dir(index.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    srcs.sort();
    let (mut picked, mut total) = (Vec::new(), 0u64);
    for s in srcs {
        if total >= want {
            break;
        }
        let size = du_bytes(&s);
        total += size;
        picked.push(s);
    }
    if picked.is_empty() {
        bail!("no crate sources in {home}/registry/src to build a tarball from");
    }
    let mut cmd = Command::new("tar");
    cmd.arg("-cf").arg(&tar);
    for p in &picked {
        cmd.arg("-C")
            .arg(p.parent().expect("crate dirs have a parent"))
            .arg(p.file_name().expect("named"));
    }
    if !cmd.status()?.success() {
        bail!("tar -c failed");
    }
    Ok(tar)
}

fn du_bytes(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| du_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(md) => md.len(),
        Err(_) => 0,
    }
}

fn archive(dir: &Path, scale: f64) -> Result<Vec<Metric>> {
    let tar = source_tarball(scale)?;
    let timed = |cmd: &mut Command| -> Result<f64> {
        let t = Instant::now();
        let st = cmd.stdout(std::process::Stdio::null()).status()?;
        if !st.success() && st.code() != Some(1) {
            bail!("{cmd:?}: {st}");
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let extract = timed(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(dir))?;
    let du = timed(Command::new("du").arg("-s").arg(dir))?;
    let grep = timed(Command::new("grep").args(["-r", "-c", "unsafe"]).arg(dir))?;
    let t = Instant::now();
    for e in fs::read_dir(dir)? {
        fs::remove_dir_all(e?.path())?;
    }
    let delete = t.elapsed().as_secs_f64();
    Ok(vec![
        m("extract s", "s", extract, false),
        m("du s", "s", du, false),
        m("grep s", "s", grep, false),
        m("delete s", "s", delete, false),
    ])
}

//! What the benchmark reads from the machine: the fsync floor of the disk, the resident
//! memory of a process, and the file system a directory lives on.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Times of one 4 KiB write followed by `fdatasync` (µs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsyncFigures {
    /// Median when overwriting a block of a preallocated file: the floor of a durable
    /// commit.
    pub(crate) median_us: f64,
    /// 10th and 90th percentiles of the same, to show how steady the disk is.
    pub(crate) p10_us: f64,
    pub(crate) p90_us: f64,
    /// Median when appending, which also makes the file system journal the new size
    /// (what a growing WAL pays).
    pub(crate) append_median_us: f64,
    /// Samples of each kind.
    pub(crate) samples: usize,
}

/// Measures the fsync floor of the disk holding `dir`.
pub(crate) fn fsync_floor(dir: &Path, samples: usize) -> anyhow::Result<FsyncFigures> {
    let path = dir.join("fsync-probe.bin");
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let block = vec![0xA5u8; 4096];
    const BLOCKS: u64 = 256;
    for i in 0..BLOCKS {
        file.write_all_at(&block, i * 4096)?;
    }
    file.sync_all()?;
    let mut overwrite = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        let t = Instant::now();
        file.write_all_at(&block, (i % BLOCKS) * 4096)?;
        file.sync_data()?;
        overwrite.push(t.elapsed());
    }
    let mut append = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        let t = Instant::now();
        file.write_all_at(&block, (BLOCKS + i) * 4096)?;
        file.sync_data()?;
        append.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    overwrite.sort_unstable();
    append.sort_unstable();
    Ok(FsyncFigures {
        median_us: quantile_us(&overwrite, 0.5),
        p10_us: quantile_us(&overwrite, 0.1),
        p90_us: quantile_us(&overwrite, 0.9),
        append_median_us: quantile_us(&append, 0.5),
        samples,
    })
}

/// The sample at fraction `q` of sorted durations, in µs.
fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    // q is in 0..=1, so the index is in range and exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(i).map(|d| d.as_secs_f64() * 1e6).unwrap_or(0.0)
}

/// Resident memory of process `pid` (`VmRSS` of `/proc/<pid>/status`), in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no VmRSS line"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("unexpected VmRSS line {line:?}"))?
        .parse()?;
    Ok(kib)
}

/// The file system type of the mount holding `dir` (e.g. `ext4`), from
/// `/proc/self/mountinfo`; `None` when it cannot be told.
pub(crate) fn fs_type(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        // <id> <parent> <major:minor> <root> <mount point> <options> ... - <type> <source> ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(mount), Some(dash)) = (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        let Some(kind) = fields.get(dash + 1) else {
            continue;
        };
        if dir.starts_with(mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((mount.len(), (*kind).to_owned()));
        }
    }
    best.map(|(_, kind)| kind)
}

/// CPU time the calling thread has used (from `/proc/thread-self/schedstat`), or `None`
/// where that file is missing.
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

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

/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`, which Linux fixes at 100
/// for what it shows user space).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) a process has used so far, from
/// `/proc/<pid>/stat`; `None` when the process is gone.
pub(crate) fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_time(&stat).map(|(_, cpu)| cpu)
}

/// The command name and CPU time (user + system) of one `/proc/<pid>/stat` line.
fn stat_cpu_time(stat: &str) -> Option<(&str, Duration)> {
    // "<pid> (<comm>) <state> <ppid> ...": the name may hold spaces and parentheses, so
    // split at the last ')'. After it, utime and stime are the 12th and 13th fields.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, ticks((utime + stime) as f64)))
}

fn ticks(n: f64) -> Duration {
    Duration::from_secs_f64(n / USER_HZ)
}

/// CPU time used so far by every process named `postgres` on this machine (the server's
/// backends and helpers), and how many there are; `None` when there are none, as when
/// the server runs elsewhere. A process that exits between two readings takes its time
/// with it, so compare readings taken while the same connections stay open.
pub(crate) fn postgres_cpu_time() -> Option<(Duration, usize)> {
    let mut total = Duration::ZERO;
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", cpu)) = stat_cpu_time(&stat) {
            total += cpu;
            count += 1;
        }
    }
    (count > 0).then_some((total, count))
}

/// CPU time of the whole machine so far, from the first line of `/proc/stat`: (busy,
/// all), summed over every CPU. Busy is everything but idle and I/O wait.
pub(crate) fn machine_cpu_time() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let all: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((ticks((all - idle) as f64), ticks(all as f64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_time_reads_a_name_with_spaces_and_parentheses() {
        let line = "4242 (post gres) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1000 1000 100";
        let (comm, cpu) = stat_cpu_time(line).expect("a valid stat line");
        assert_eq!(comm, "post gres) (x)");
        assert_eq!(cpu, Duration::from_secs(3));
    }
}

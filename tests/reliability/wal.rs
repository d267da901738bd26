//! Tearing a SQLite write-ahead log the way lost writes would: truncating the `-wal`
//! file of a database nobody has open, at a frame boundary or in the middle of a frame,
//! but never before the last checkpoint (frames already copied into the database file
//! must stay, or the file would mix pages from before and after the cut).
//!
//! The checkpoint position comes from the `-shm` file (the WAL index), which a killed
//! process leaves behind: `nBackfill` frames of the WAL whose salts the index header
//! carries have been copied into the database file.

use crate::support::Rng;
use std::path::{Path, PathBuf};

/// What a tear did.
#[derive(Debug)]
pub(crate) enum Tear {
    /// Cut the WAL from `from` bytes to `to` bytes (`mid_frame` when not on a boundary),
    /// dropping `frames` committed frames.
    Cut {
        /// The WAL's size before.
        from: u64,
        /// Its size after.
        to: u64,
        /// Whether the cut is inside a frame.
        mid_frame: bool,
        /// Frames the index knew that are gone.
        frames: u64,
    },
    /// Nothing to cut past the checkpoint (or no WAL): why.
    Skipped(String),
}

fn companion(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn u32_be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Truncates the WAL of `db` (which no process may have open) at a random offset past
/// the last checkpoint.
pub(crate) fn tear(db: &Path, rng: &mut Rng) -> Tear {
    let wal_path = companion(db, "-wal");
    let shm_path = companion(db, "-shm");
    let Ok(wal) = std::fs::read(&wal_path) else {
        return Tear::Skipped("no WAL file".into());
    };
    if wal.len() < 32 {
        return Tear::Skipped(format!("the WAL holds {} bytes, no header", wal.len()));
    }
    let Ok(shm) = std::fs::read(&shm_path) else {
        return Tear::Skipped("no WAL index (-shm) to find the checkpoint in".into());
    };
    if shm.len() < 136 {
        return Tear::Skipped("the WAL index is too short".into());
    }
    // WAL header: magic, version, page size, checkpoint sequence, salts (big endian).
    let page_size = u64::from(u32_be(&wal, 8));
    if !(512..=65536).contains(&page_size) {
        return Tear::Skipped(format!("odd page size {page_size}"));
    }
    // Index header (native endian): mxFrame at 16, salts at 32 (copied raw from the WAL
    // header's bytes 16..24); nBackfill opens the checkpoint info at 96.
    if shm[12] == 0 || shm[..48] != shm[48..96] {
        return Tear::Skipped("the WAL index header is not initialised or torn".into());
    }
    if shm[32..40] != wal[16..24] {
        return Tear::Skipped("the WAL index describes another WAL generation".into());
    }
    let max_frame = u64::from(u32_ne(&shm, 16));
    // A checkpoint copies pages before it advances nBackfill; nBackfillAttempted (at
    // 128) says how far a checkpoint cut short by the kill may have copied.
    let backfilled = u64::from(u32_ne(&shm, 96)).max(u64::from(u32_ne(&shm, 128)));
    let frame = 24 + page_size;
    let floor = 32 + backfilled * frame;
    let end = (32 + max_frame * frame).min(wal.len() as u64);
    if end <= floor + 1 {
        return Tear::Skipped(format!(
            "nothing past the checkpoint ({backfilled} of {max_frame} frames copied)"
        ));
    }
    let (to, mid_frame) = if rng.chance(50) {
        // A frame boundary: whole transactions (or whole frames of one) are lost.
        let frames = (end - floor) / frame;
        let keep = rng.range(0, frames.max(1));
        (floor + keep * frame, false)
    } else {
        let to = rng.range(floor, end);
        (to, !(to - 32).is_multiple_of(frame))
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&wal_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", wal_path.display()));
    file.set_len(to)
        .unwrap_or_else(|e| panic!("cannot truncate {}: {e}", wal_path.display()));
    file.sync_all().ok();
    Tear::Cut {
        from: wal.len() as u64,
        to,
        mid_frame,
        frames: (end - to).div_ceil(frame),
    }
}

//! The benchmark ablations: each turns off one design choice of oxcrypt, so `oxbench ablation`
//! can measure what that choice is worth. Parsed once, from `--ablate NAME[,NAME…]`, and handed
//! down to the engine and the FUSE layer as one [`Tuning`] value.

use std::str::FromStr;

/// Which design choices are turned off. The default turns none off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuning {
    /// `unregistered-buffers`: io_uring with plain heap buffers instead of registered ones.
    pub unregistered_buffers: bool,
    /// `io-on-workers`: every read and write handed to an I/O worker (two thread switches per
    /// request) instead of done in the FUSE thread.
    pub io_on_workers: bool,
    /// `metadata-on-thread`: metadata calls answered on a spawned thread instead of inline.
    pub metadata_on_thread: bool,
    /// `heap-arena`: a fresh heap arena per request instead of the reused per-thread arena.
    pub heap_arena: bool,
    /// `late-writeback`: no early start of the ciphertext's writeback behind a writer; the
    /// backing file system writes it when its own thresholds say so, or at fsync.
    pub late_writeback: bool,
    /// `no-decrypt-ahead`: a READ decrypts its own bytes when it arrives; nothing is decrypted
    /// ahead of a sequential reader.
    pub no_decrypt_ahead: bool,
    /// `direct-read-ahead` (an experiment, not an ablation): the ciphertext of windows
    /// decrypted ahead is read with `O_DIRECT` instead of through the page cache.
    pub direct_read_ahead: bool,
}

/// The ablation names [`Tuning`] understands, with what each turns off.
pub const ABLATIONS: &[(&str, &str)] = &[
    (
        "unregistered-buffers",
        "io_uring with unregistered heap buffers",
    ),
    (
        "io-on-workers",
        "reads and writes on I/O workers, not in the FUSE thread",
    ),
    (
        "metadata-on-thread",
        "metadata calls on a spawned thread, not inline",
    ),
    ("heap-arena", "a heap arena per request, not the reused one"),
    (
        "late-writeback",
        "ciphertext written to disk at fsync, not started behind the writer",
    ),
    (
        "no-decrypt-ahead",
        "each READ decrypted when it arrives, nothing ahead of a sequential reader",
    ),
    (
        "direct-read-ahead",
        "(experiment) ciphertext read ahead with O_DIRECT, not through the page cache",
    ),
];

impl FromStr for Tuning {
    type Err = String;

    /// Parses a comma-separated list of ablation names (empty: none).
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut t = Tuning::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "unregistered-buffers" => &mut t.unregistered_buffers,
                "io-on-workers" => &mut t.io_on_workers,
                "metadata-on-thread" => &mut t.metadata_on_thread,
                "heap-arena" => &mut t.heap_arena,
                "late-writeback" => &mut t.late_writeback,
                "no-decrypt-ahead" => &mut t.no_decrypt_ahead,
                "direct-read-ahead" => &mut t.direct_read_ahead,
                other => {
                    let known: Vec<&str> = ABLATIONS.iter().map(|a| a.0).collect();
                    return Err(format!(
                        "unknown ablation `{other}`; known: {}",
                        known.join(", ")
                    ));
                }
            };
            *flag = true;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_unknown_names() {
        assert_eq!("".parse::<Tuning>().unwrap(), Tuning::default());
        let t: Tuning = "io-on-workers, heap-arena".parse().unwrap();
        assert!(t.io_on_workers && t.heap_arena && !t.metadata_on_thread);
        for (name, _) in ABLATIONS {
            assert_ne!(name.parse::<Tuning>().unwrap(), Tuning::default());
        }
        assert!("fast"
            .parse::<Tuning>()
            .unwrap_err()
            .contains("unknown ablation"));
    }
}

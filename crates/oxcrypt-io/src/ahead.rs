//! Decrypting ahead of a sequential reader.
//!
//! The kernel's read-ahead sends a sequential reader's READs one window (1 MiB) at a time, and
//! without this each READ read its ciphertext and decrypted it in the thread that served it,
//! while the reader waited: on two cores one stream kept about one busy. Once a file's READs
//! have covered [`RUN_BYTES`] without a gap, the workers
//! read and decrypt the next [`DEPTH`] windows ahead of the reader into buffers of ours, one
//! window per worker in turn (buffered `pread` into the window, so ext4's own read-ahead of
//! the ciphertext keeps the disk busy behind it; each chunk is decrypted where it was read);
//! a READ that finds its bytes there copies them out, which a ring queue thread may do
//! inline. A READ that arrives while its window is still being decrypted waits for it
//! (briefly, and only in a thread that may block) instead of decrypting the same chunks twice.
//!
//! **Never a stale byte.** A window is decrypted under the file's lock held shared, and tagged
//! with the file's [`generation`](oxcrypt_core::vault::FileHandle::generation), which every
//! change bumps as soon as it takes the lock exclusively, before it changes anything. A window
//! is served only while the generation is still the one it was decrypted at: then no change
//! has begun since, and the READ is ordered before any change that begins after it. Anything
//! else (another generation, a failed decryption, a run that broke off) falls back to the
//! ordinary read, which reports the error itself.
//!
//! **Bounded memory.** At most [`BUDGET`] windows exist in the whole daemon. A stream that
//! finds none free takes those of a reader that has not read for [`IDLE`] (a player paused
//! mid-file keeps its file open), and otherwise reads as it would without this. A seek (a READ
//! away from the run) drops the file's windows and the jobs still queued for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use oxcrypt_core::content::CHUNK_SIZE;
use oxcrypt_core::vault::{InPlace, DIRECT_ALIGN};

/// Cleartext bytes per window: the kernel's READ size for a sequential reader.
pub const WINDOW: usize = 1 << 20;
/// Chunks per window.
pub const WINDOW_CHUNKS: usize = WINDOW / CHUNK_SIZE;
/// Windows kept decrypted ahead of the furthest READ of a run.
pub const DEPTH: u64 = 2;
/// Bytes a run must cover without a gap before decrypting ahead starts (two READs of a
/// sequential reader): random readers never get there (a 4 KiB read that lands just behind
/// the last one is not a stream; counting READs instead, 4 threads of random reads had
/// windows decrypted for nothing and lost 43 % of their IOPS).
pub const RUN_BYTES: u64 = 2 * WINDOW as u64;
/// Windows in the whole daemon (each [`WINDOW`] bytes).
pub const BUDGET: usize = 6;
/// Longest wait for a window being decrypted before a READ decrypts for itself.
const WAIT: Duration = Duration::from_millis(50);
/// Spare buffers kept for the next window instead of being freed.
const SPARE: usize = 2;
/// A reader that has not read for this long gives up its windows to a stream that needs them.
pub const IDLE: Duration = Duration::from_secs(1);

/// Windows in existence (held by a file, being filled, or spare).
static WINDOWS: AtomicUsize = AtomicUsize::new(0);
/// Buffers of windows that were dropped, for reuse without zeroing a new one.
static SPARES: Mutex<Vec<Aligned>> = Mutex::new(Vec::new());
/// Every file whose windows were ever asked for, while it is open: where a stream short of
/// buffers looks for an idle reader's (see [`ReadAhead::reclaim_idle`]).
static HOLDERS: Mutex<Vec<Weak<ReadAhead>>> = Mutex::new(Vec::new());

/// Whether a window could be had now: the budget has room, or a spare buffer is there.
fn room() -> bool {
    WINDOWS.load(Ordering::Relaxed) < BUDGET
        || !SPARES.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
}

/// A zeroed heap buffer of [`InPlace::buffer_len`]`(WINDOW_CHUNKS)` bytes aligned to
/// [`DIRECT_ALIGN`], as `O_DIRECT` reads need.
struct Aligned(std::ptr::NonNull<u8>);

impl Aligned {
    const LEN: usize = InPlace::buffer_len(WINDOW_CHUNKS);

    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(Self::LEN, DIRECT_ALIGN).expect("a valid layout")
    }

    fn new() -> Aligned {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout()) };
        Aligned(
            std::ptr::NonNull::new(ptr)
                .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout())),
        )
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `new` allocated `LEN` initialised bytes, owned by this value.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), Self::LEN) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), Self::LEN) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), Self::layout()) }
    }
}

// SAFETY: plain owned memory, like a `Box<[u8]>`.
unsafe impl Send for Aligned {}

/// One window's buffer, counted against [`BUDGET`] while it lives.
struct Buffer(Option<Aligned>);

impl Buffer {
    /// A buffer, if the budget allows one more.
    fn take() -> Option<Buffer> {
        let spare = SPARES.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(b) = spare {
            return Some(Buffer(Some(b)));
        }
        let mut n = WINDOWS.load(Ordering::Relaxed);
        loop {
            if n >= BUDGET {
                return None;
            }
            match WINDOWS.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Buffer(Some(Aligned::new()))),
                Err(now) => n = now,
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_ref().map(Aligned::bytes).unwrap_or_default()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_mut().map(Aligned::bytes_mut).unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let Some(b) = self.0.take() else { return };
        let mut spares = SPARES.lock().unwrap_or_else(|p| p.into_inner());
        if spares.len() < SPARE {
            spares.push(b);
        } else {
            WINDOWS.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Bytes `[start, start + placed.len)` of a file (`start` at a chunk boundary), decrypted at
/// `generation` where their ciphertext was read into `buf`.
struct Window {
    start: u64,
    placed: InPlace,
    generation: u64,
    buf: Buffer,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.placed.len as u64
    }

    /// Whether the file ended inside this window (when it was decrypted).
    fn at_eof(&self) -> bool {
        self.placed.len < WINDOW
    }
}

/// A file's run of sequential READs and its windows.
#[derive(Default)]
struct Run {
    /// Where the run's first byte is.
    start: u64,
    /// Where the furthest READ of the run ended.
    next: u64,
    /// A run is being followed (false before the file's first READ).
    open: bool,
    /// Windows were asked for up to here.
    ahead_to: u64,
    /// Bumped when the run breaks off: jobs of an older run are dropped.
    epoch: u64,
    /// The file's generation at the run's READs: a change breaks the run.
    generation: u64,
    /// Decrypted windows, in order of `start`.
    windows: VecDeque<Window>,
    /// Starts of the windows being decrypted.
    pending: Vec<u64>,
    /// When the file was last read (the last READ recorded in the run).
    last_read: Option<Instant>,
}

impl Run {
    /// Whether the run holds windows (or is decrypting some) although its reader has not read
    /// for [`IDLE`] at `now`.
    fn idle(&self, now: Instant) -> bool {
        (!self.windows.is_empty() || !self.pending.is_empty())
            && self
                .last_read
                .is_some_and(|t| now.saturating_duration_since(t) >= IDLE)
    }
}

/// One file's decrypt-ahead state. The mutex protects the run and its windows; it is held to
/// look up and copy out a window, never while decrypting.
///
/// Random and multi-threaded readers pay almost nothing: while no window was asked for
/// (`armed` false) a READ does not lock to look for one, and records itself only if the lock
/// is free (a READ racing another one is not a sequential run's anyway). Without that, 4 to 16
/// threads of 4 KiB random reads lost 43 % of their IOPS to this lock on the ring.
#[derive(Default)]
pub struct ReadAhead {
    run: Mutex<Run>,
    /// Signalled when a pending window is done (filled or abandoned).
    filled: Condvar,
    /// Windows were asked for in the current run (set under the lock when asking, cleared
    /// under it when the run ends and its windows go).
    armed: AtomicBool,
    /// This file is in [`HOLDERS`].
    registered: AtomicBool,
}

/// A window to decrypt: its start, and the run it belongs to.
pub(crate) struct Ask {
    pub start: u64,
    pub epoch: u64,
}

impl ReadAhead {
    fn run(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies `out.len()` bytes at `offset` from the windows decrypted at `generation` (fewer
    /// only at the end of the file); `None` when they do not hold all of them. With `wait`, a
    /// READ whose first byte is in a window being decrypted waits for it.
    pub(crate) fn serve(
        &self,
        offset: u64,
        out: &mut [u8],
        generation: u64,
        wait: bool,
    ) -> Option<usize> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let deadline = Instant::now() + WAIT;
        let mut run = self.run();
        loop {
            // Windows of another generation are stale, whatever else happens.
            run.windows.retain(|w| w.generation == generation);
            if let Some(n) = copy_out(&mut run, offset, out) {
                return Some(n);
            }
            let pending = run
                .pending
                .iter()
                .any(|&s| s <= offset && offset < s + WINDOW as u64);
            let now = Instant::now();
            if !wait || !pending || now >= deadline {
                return None;
            }
            run = self
                .filled
                .wait_timeout(run, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Records a READ of `len` bytes at `offset` that returned `n`, the file being at
    /// `generation`, and returns the windows to decrypt next (none unless the run is long
    /// enough and the budget allows).
    ///
    /// A change of the file between two READs breaks the run like a seek: a file being written
    /// while it is read would throw away every window (served only at the generation they
    /// were decrypted at), so windows are asked for again only once the READs since the last
    /// change cover [`RUN_BYTES`].
    pub(crate) fn after_read(
        self: &Arc<Self>,
        offset: u64,
        n: usize,
        len: usize,
        generation: u64,
    ) -> Vec<Ask> {
        let mut run = if self.armed.load(Ordering::Acquire) {
            self.run()
        } else {
            match self.run.try_lock() {
                Ok(run) => run,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Vec::new(),
            }
        };
        let end = offset + n as u64;
        // A READ continues the run if it starts where the run has got to, or a little behind
        // (the kernel's read-ahead sends several READs at once, and two threads may take them
        // out of order); a gap breaks it.
        let in_run = run.open
            && run.generation == generation
            && offset <= run.next
            && offset + WINDOW as u64 >= run.next;
        run.last_read = Some(Instant::now());
        if in_run {
            run.start = run.start.min(offset);
            run.next = run.next.max(end);
        } else {
            // A new run: what was decrypted for the old one is of no use.
            let waited_for = !run.pending.is_empty();
            *run = Run {
                epoch: run.epoch + 1,
                open: true,
                start: offset,
                next: end,
                generation,
                last_read: run.last_read,
                ..Run::default()
            };
            self.armed.store(false, Ordering::Release);
            if waited_for {
                self.filled.notify_all();
            }
        }
        // Windows the run has passed are dropped.
        let behind = run.next.saturating_sub(2 * WINDOW as u64);
        while run.windows.front().is_some_and(|w| w.end() <= behind) {
            run.windows.pop_front();
        }
        let mut asks = Vec::new();
        if n < len
            || run.next - run.start < RUN_BYTES
            || run.windows.back().is_some_and(Window::at_eof)
        {
            return asks;
        }
        // Windows start at chunk boundaries.
        run.ahead_to = run.ahead_to.max(run.next - run.next % CHUNK_SIZE as u64);
        let target = run.next + DEPTH * WINDOW as u64;
        if run.ahead_to < target && !room() {
            Self::reclaim_idle(self);
        }
        if run.ahead_to < target && !self.registered.swap(true, Ordering::AcqRel) {
            let mut holders = HOLDERS.lock().unwrap_or_else(|p| p.into_inner());
            holders.retain(|h| h.strong_count() > 0);
            holders.push(Arc::downgrade(self));
        }
        while run.ahead_to < target && room() {
            let start = run.ahead_to;
            self.armed.store(true, Ordering::Release);
            run.pending.push(start);
            asks.push(Ask {
                start,
                epoch: run.epoch,
            });
            run.ahead_to += WINDOW as u64;
        }
        asks
    }

    /// Decrypts the window `ask` with `read` (which reads and decrypts [`WINDOW_CHUNKS`] chunks
    /// into the buffer it is given, and returns where the cleartext is and the generation it
    /// belongs to), unless its run has broken off meanwhile or no buffer is left.
    pub(crate) fn fill(
        &self,
        ask: Ask,
        read: impl FnOnce(&mut [u8]) -> oxcrypt_core::Result<(InPlace, u64)>,
    ) {
        if !self.still_wanted(&ask) {
            return;
        }
        let Some(mut buf) = Buffer::take().or_else(|| {
            Self::reclaim_idle(self);
            Buffer::take()
        }) else {
            self.abandon(ask);
            return;
        };
        let decrypted = read(buf.bytes_mut());
        let mut run = self.run();
        let Some(at) = run.pending.iter().position(|&s| s == ask.start) else {
            return;
        };
        run.pending.swap_remove(at);
        if let (Ok((placed, generation)), true) = (decrypted, run.epoch == ask.epoch) {
            if placed.len > 0 {
                let place = run.windows.partition_point(|w| w.start < ask.start);
                let window = Window {
                    start: ask.start,
                    placed,
                    generation,
                    buf,
                };
                run.windows.insert(place, window);
            }
        }
        self.filled.notify_all();
    }

    /// Gives up the window `ask` without decrypting it.
    pub(crate) fn abandon(&self, ask: Ask) {
        let mut run = self.run();
        if let Some(at) = run.pending.iter().position(|&s| s == ask.start) {
            if run.epoch == ask.epoch {
                run.pending.swap_remove(at);
            }
        }
        self.filled.notify_all();
    }

    /// Ends the run: its windows are dropped, and so are the jobs still queued for it.
    pub(crate) fn reset(&self) {
        self.end_run(&mut self.run());
    }

    /// Ends `run` (this file's, locked): see [`reset`](Self::reset).
    fn end_run(&self, run: &mut Run) {
        *run = Run {
            epoch: run.epoch + 1,
            ..Run::default()
        };
        self.armed.store(false, Ordering::Release);
        self.filled.notify_all();
    }

    /// Drops the windows of every other file whose reader has been idle for [`IDLE`], so that
    /// `me`, short of buffers, can have them. Files whose lock is busy are being read and are
    /// skipped (only `try_lock`: the caller may hold its own run's lock).
    fn reclaim_idle(me: &ReadAhead) {
        let now = Instant::now();
        let mut holders = HOLDERS.lock().unwrap_or_else(|p| p.into_inner());
        holders.retain(|h| h.strong_count() > 0);
        for other in holders.iter().filter_map(Weak::upgrade) {
            if std::ptr::eq(&*other, me) {
                continue;
            }
            let Ok(mut run) = other.run.try_lock() else {
                continue;
            };
            if run.idle(now) {
                tracing::debug!("windows of an idle reader reclaimed");
                other.end_run(&mut run);
            }
        }
    }

    /// Cleartext bytes held in windows.
    pub(crate) fn held(&self) -> u64 {
        self.run().windows.iter().map(|w| w.placed.len as u64).sum()
    }

    fn still_wanted(&self, ask: &Ask) -> bool {
        let run = self.run();
        run.epoch == ask.epoch && run.pending.contains(&ask.start)
    }
}

/// Copies `out.len()` bytes at `offset` from consecutive windows of `run`; `None` unless they
/// hold all of them (or all up to the end of the file). Windows wholly copied are dropped.
fn copy_out(run: &mut Run, offset: u64, out: &mut [u8]) -> Option<usize> {
    let first = run
        .windows
        .iter()
        .position(|w| w.start <= offset && offset < w.end())?;
    let mut done = 0usize;
    let mut at = offset;
    let mut i = first;
    while done < out.len() {
        let w = run.windows.get_mut(i)?;
        if w.start != at && i != first {
            return None;
        }
        let from = (at - w.start) as usize;
        let take = (w.placed.len - from).min(out.len() - done);
        w.placed
            .copy_out(w.buf.bytes(), from, &mut out[done..done + take]);
        done += take;
        at += take as u64;
        if done < out.len() && w.at_eof() {
            break;
        }
        i += 1;
    }
    // Windows this READ read to their end are of no more use.
    while run.windows.front().is_some_and(|w| w.end() <= at) {
        run.windows.pop_front();
    }
    Some(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a window of a fake file of `size` bytes at `generation`, laid out as decrypted
    /// chunks are (a 28-byte gap between chunks, base 100): byte `i` is `i % 251`.
    fn reader(size: u64, generation: u64) -> impl Fn(u64, &mut [u8]) -> (InPlace, u64) {
        move |start, buf| {
            let len = (size.saturating_sub(start) as usize).min(WINDOW);
            let placed = InPlace {
                base: 100,
                stride: CHUNK_SIZE + 28,
                body_at: 12,
                len,
            };
            buf.fill(0xee);
            for i in 0..len {
                let (chunk, within) = (i / CHUNK_SIZE, i % CHUNK_SIZE);
                buf[100 + chunk * (CHUNK_SIZE + 28) + 12 + within] =
                    ((start + i as u64) % 251) as u8;
            }
            (placed, generation)
        }
    }

    fn expect(offset: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            assert_eq!(
                *b,
                ((offset + i as u64) % 251) as u8,
                "byte {}",
                offset + i as u64
            );
        }
    }

    const W: u64 = WINDOW as u64;

    /// Decrypts the windows `asks` of `ra` with `read`, as the workers would.
    fn fill_all(ra: &ReadAhead, asks: Vec<Ask>, read: &impl Fn(u64, &mut [u8]) -> (InPlace, u64)) {
        for ask in asks {
            let s = ask.start;
            ra.fill(ask, |buf| Ok(read(s, buf)));
        }
    }

    /// The window budget is the process's: these tests take turns.
    fn one_at_a_time() -> MutexGuard<'static, ()> {
        static TURN: Mutex<()> = Mutex::new(());
        TURN.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn a_sequential_run_is_served_from_windows_and_a_change_stops_that() {
        let _turn = one_at_a_time();
        let ra = Arc::new(ReadAhead::default());
        let size = 10 * W + 1000;
        let read = reader(size, 7);
        let mut out = vec![0u8; WINDOW];
        // The first READs are not served; once they cover RUN_BYTES, windows are asked for.
        assert!(ra.serve(0, &mut out, 7, false).is_none());
        assert!(ra.after_read(0, WINDOW, WINDOW, 0).is_empty());
        let asks = ra.after_read(W, WINDOW, WINDOW, 0);
        assert_eq!(
            asks.iter().map(|a| a.start).collect::<Vec<_>>(),
            vec![2 * W, 3 * W]
        );
        fill_all(&ra, asks, &read);
        // A READ across the two windows, not aligned to them.
        let n = ra.serve(2 * W + 5, &mut out, 7, false).unwrap();
        assert_eq!(n, WINDOW);
        expect(2 * W + 5, &out);
        // Another generation: nothing is served.
        assert!(ra.serve(3 * W + 10, &mut out[..100], 8, false).is_none());
    }

    #[test]
    fn the_end_of_the_file_is_served_short_and_a_seek_drops_the_windows() {
        let _turn = one_at_a_time();
        let ra = Arc::new(ReadAhead::default());
        let size = 3 * W + 1000;
        let read = reader(size, 1);
        let mut out = vec![0u8; WINDOW];
        ra.after_read(0, WINDOW, WINDOW, 0);
        fill_all(&ra, ra.after_read(W, WINDOW, WINDOW, 0), &read);
        assert_eq!(ra.serve(2 * W, &mut out, 1, false), Some(WINDOW));
        ra.after_read(2 * W, WINDOW, WINDOW, 0);
        assert_eq!(ra.serve(3 * W, &mut out, 1, false), Some(1000));
        expect(3 * W, &out[..1000]);
        // A seek back to the start breaks the run: the windows go.
        ra.after_read(3 * W, 1000, WINDOW, 0);
        ra.after_read(0, WINDOW, WINDOW, 0);
        assert!(ra.serve(3 * W, &mut out, 1, false).is_none());
        assert!(ra.run().windows.is_empty() && ra.run().pending.is_empty());
    }

    #[test]
    fn small_reads_near_each_other_are_not_a_run_until_they_cover_two_windows() {
        let _turn = one_at_a_time();
        let ra = Arc::new(ReadAhead::default());
        // Random 4 KiB reads that happen to land just behind one another: no windows.
        assert!(ra.after_read(10 * W, 4096, 4096, 0).is_empty());
        assert!(ra.after_read(10 * W - 8192, 4096, 4096, 0).is_empty());
        assert!(ra.after_read(10 * W + 4096, 4096, 4096, 0).is_empty());
        // A gap breaks a run; a stream of 256 KiB READs asks once it covers two windows.
        assert!(ra.after_read(20 * W, 4096, 4096, 0).is_empty());
        let mut asked = 0;
        for k in 0..8u64 {
            asked += ra
                .after_read(30 * W + k * 256 * 1024, 256 * 1024, 256 * 1024, 0)
                .len();
            if k < 7 {
                assert_eq!(asked, 0, "after {} KiB", (k + 1) * 256);
            }
        }
        assert_eq!(asked, 2);
    }

    #[test]
    fn a_change_between_two_reads_breaks_the_run() {
        let _turn = one_at_a_time();
        let ra = Arc::new(ReadAhead::default());
        assert!(ra.after_read(0, WINDOW, WINDOW, 4).is_empty());
        // Written between the READs: no windows, they would be stale at once.
        assert!(ra.after_read(W, WINDOW, WINDOW, 5).is_empty());
        // Two READs at one generation again: windows.
        assert_eq!(ra.after_read(2 * W, WINDOW, WINDOW, 5).len(), 2);
        // And a change drops the run's pending windows (their jobs are not run).
        ra.after_read(3 * W, WINDOW, WINDOW, 6);
        assert!(ra.run().pending.is_empty());
    }

    #[test]
    fn a_window_of_a_broken_run_or_a_failed_decryption_is_not_kept() {
        let _turn = one_at_a_time();
        let ra = Arc::new(ReadAhead::default());
        let read = reader(100 * W, 0);
        ra.after_read(0, WINDOW, WINDOW, 0);
        let asks = ra.after_read(W, WINDOW, WINDOW, 0);
        assert_eq!(asks.len(), 2);
        let mut asks = asks.into_iter();
        let (a, b) = (asks.next().unwrap(), asks.next().unwrap());
        // The decryption fails: no window, and the pending mark is gone.
        ra.fill(a, |_| {
            Err(oxcrypt_core::Error::io(
                "",
                std::io::Error::from_raw_os_error(libc::EIO),
            ))
        });
        let mut out = vec![0u8; 10];
        assert!(ra.serve(2 * W, &mut out, 0, false).is_none());
        // A seek before `b` is filled: it is dropped unread.
        ra.after_read(50 * W, WINDOW, WINDOW, 0);
        let mut called = false;
        ra.fill(b, |buf| {
            called = true;
            Ok(read(3 * W, buf))
        });
        assert!(!called);
        assert!(ra.serve(3 * W, &mut out, 0, false).is_none());
    }

    #[test]
    fn an_idle_reader_gives_its_windows_to_a_stream_short_of_them() {
        let _turn = one_at_a_time();
        let read = reader(100 * W, 0);
        let stream = |ra: &Arc<ReadAhead>, from: u64| {
            for k in 0..2 {
                fill_all(ra, ra.after_read(from + k * W, WINDOW, WINDOW, 0), &read);
            }
        };
        // Readers that stopped mid-file, their files open, hold the whole budget.
        let mut readers: Vec<Arc<ReadAhead>> = Vec::new();
        while room() {
            assert!(readers.len() < BUDGET, "every reader got windows");
            let ra = Arc::new(ReadAhead::default());
            stream(&ra, 0);
            assert!(ra.held() > 0);
            readers.push(ra);
        }
        // A new stream gets none while they have read within IDLE.
        let late = Arc::new(ReadAhead::default());
        stream(&late, 0);
        assert_eq!(late.held(), 0);
        // The first one has been idle for longer: its windows go to the new stream.
        readers[0].run().last_read = Instant::now().checked_sub(2 * IDLE);
        stream(&late, 2 * W);
        assert!(
            late.held() > 0,
            "the idle reader's windows were not reclaimed"
        );
        let mut out = vec![0u8; 4096];
        assert_eq!(late.serve(4 * W, &mut out, 0, false), Some(4096));
        expect(4 * W, &out);
        assert_eq!(readers[0].held(), 0);
        assert!(readers[0].serve(2 * W, &mut out, 0, false).is_none());
        // The others were reading: they keep theirs.
        for ra in &readers[1..] {
            assert!(ra.held() > 0);
            assert_eq!(ra.serve(2 * W, &mut out, 0, false), Some(4096));
            expect(2 * W, &out);
        }
    }

    #[test]
    fn a_read_waits_for_its_window_while_it_is_decrypted() {
        let _turn = one_at_a_time();
        let ra = Arc::new(ReadAhead::default());
        ra.after_read(0, WINDOW, WINDOW, 0);
        let asks = ra.after_read(W, WINDOW, WINDOW, 0);
        let filler = {
            let ra = ra.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                let read = reader(10 * W, 3);
                fill_all(&ra, asks, &read);
            })
        };
        let mut out = vec![0u8; 4096];
        assert_eq!(ra.serve(2 * W, &mut out, 3, true), Some(4096));
        expect(2 * W, &out);
        filler.join().unwrap();
    }
}

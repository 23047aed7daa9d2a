//! When the mount was last used: every request touches it, and `oxcrypt mount --idle`
//! unmounts once nothing has been open and nothing has been asked for long enough.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The time of the last request.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last request.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// A request arrived now.
    #[inline]
    pub fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        // Relaxed: a clock reading, not a synchronisation point.
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// How long ago the last request arrived.
    pub fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn touching_resets_the_idle_time() {
        let a = super::Activity::default();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(a.idle_for() >= std::time::Duration::from_millis(25));
        a.touch();
        assert!(a.idle_for() < std::time::Duration::from_millis(25));
    }
}

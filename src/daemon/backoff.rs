//! Jittered exponential backoff, and the jitter of poll intervals.

use std::time::Duration;

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    #[must_use]
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            failures: 0,
            base,
            max,
        }
    }

    /// The next delay: `base * 2^failures`, capped at `max`, then a uniform
    /// jitter in `[d/2, d]` so many failing sources do not retry in step.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1 << self.failures.min(20));
        let d = exp.min(self.max);
        self.failures = self.failures.saturating_add(1);
        jitter(d, 0.5)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `d` scaled by a uniform factor in `[1 - spread, 1]`.
#[must_use]
pub fn jitter(d: Duration, spread: f64) -> Duration {
    d.mul_f64(1.0 - spread * fastrand::f64())
}

/// A poll interval with downward jitter (`d × U(0.9, 1.0)`): sources do not
/// poll in step, and a change never waits longer than one interval.
pub(super) fn jittered_interval(d: Duration) -> Duration {
    jitter(d, 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_mins(1));
        let mut waited = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            let before = Instant::now();
            tokio::time::sleep(d).await;
            waited.push(before.elapsed());
        }
        for (i, w) in waited.iter().enumerate() {
            let nominal = Duration::from_secs(1 << i.min(6)).min(Duration::from_mins(1));
            assert!(
                *w >= nominal / 2 && *w <= nominal,
                "attempt {i}: waited {w:?}, nominal {nominal:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_intervals_jitter_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered_interval(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(10),
                "downward only, so a change waits at most one interval: {d:?}"
            );
        }
    }
}

//! The restart policy: exponential backoff with jitter, and a restart
//! intensity limit.
//!
//! The n-th restart inside the window waits `backoff_min * 2^(n-1)`, capped
//! at `backoff_max`, with "equal jitter" (a random point in the upper half of
//! that delay) so that sidecars sharing a failed backend do not reconnect in
//! lock-step. Restarts older than the window are forgotten, so a component
//! that has been healthy for a while starts again from `backoff_min`. More
//! than `max_restarts` inside the window is "intensity exceeded": the
//! supervisor escalates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::SupervisorConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub max_restarts: u32,
    pub window: Duration,
}

impl From<&SupervisorConfig> for RestartPolicy {
    fn from(c: &SupervisorConfig) -> Self {
        RestartPolicy {
            backoff_min: c.backoff_min,
            backoff_max: c.backoff_max,
            max_restarts: c.max_restarts,
            window: c.restart_window,
        }
    }
}

/// What to do about a stopped child.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Restart {
    /// Wait this long, then restart.
    pub delay: Duration,
    /// More restarts than the policy allows inside its window.
    pub intensity_exceeded: bool,
}

/// The restarts of one child.
#[derive(Debug, Default)]
pub struct RestartHistory {
    recent: VecDeque<Instant>,
}

impl RestartHistory {
    /// Records a restart at `now` and says when to carry it out.
    pub fn next(&mut self, policy: &RestartPolicy, now: Instant, rng: &mut impl Rng) -> Restart {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let n = self.recent.len() as u32;
        let intensity_exceeded = n > policy.max_restarts;
        let full = if intensity_exceeded {
            policy.backoff_max
        } else {
            // 2^(n-1) saturates long before u32 overflows matter.
            let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
            policy
                .backoff_min
                .checked_mul(factor)
                .unwrap_or(policy.backoff_max)
                .min(policy.backoff_max)
        };
        Restart {
            delay: jittered(full, rng),
            intensity_exceeded,
        }
    }

    /// Restarts counted inside the window, as of the last call to `next`.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

/// Equal jitter: a random point in the upper half of `full`.
fn jittered(full: Duration, rng: &mut impl Rng) -> Duration {
    let half = full / 2;
    half + rng.random_range(Duration::ZERO..=full - half)
}

/// The one retry delay for every loop that retries on its own (resubscribing,
/// redelivering, polling an app that is not up yet): doubling from `min` to
/// `max`, with equal jitter so that many retriers do not move in lock-step.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The delay before the next attempt; each call doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let full = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        jittered(full, rng)
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut history = RestartHistory::default();
        let start = Instant::now();
        let expected_full = [100, 200, 400, 800, 1600];
        for (i, full) in expected_full.iter().enumerate() {
            let r = history.next(&policy(), start + Duration::from_millis(i as u64), &mut rng);
            let full = Duration::from_millis(*full);
            assert!(
                r.delay >= full / 2 && r.delay <= full,
                "restart {i}: {:?} not in [{:?}, {:?}]",
                r.delay,
                full / 2,
                full
            );
            assert!(!r.intensity_exceeded);
        }
    }

    #[test]
    fn exceeding_intensity_waits_the_maximum_and_says_so() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut history = RestartHistory::default();
        let now = Instant::now();
        for _ in 0..5 {
            history.next(&policy(), now, &mut rng);
        }
        let r = history.next(&policy(), now, &mut rng);
        assert!(r.intensity_exceeded);
        assert!(r.delay >= Duration::from_secs(1) && r.delay <= Duration::from_secs(2));
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut history = RestartHistory::default();
        let start = Instant::now();
        for _ in 0..5 {
            history.next(&policy(), start, &mut rng);
        }
        let later = start + Duration::from_secs(61);
        let r = history.next(&policy(), later, &mut rng);
        assert_eq!(history.recent(), 1);
        assert!(!r.intensity_exceeded);
        assert!(r.delay <= Duration::from_millis(100));
    }

    #[test]
    fn a_huge_exponent_saturates_at_the_cap() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut history = RestartHistory::default();
        let p = RestartPolicy {
            max_restarts: 1000,
            ..policy()
        };
        let now = Instant::now();
        let mut last = Restart {
            delay: Duration::ZERO,
            intensity_exceeded: false,
        };
        for _ in 0..200 {
            last = history.next(&p, now, &mut rng);
        }
        assert!(last.delay <= p.backoff_max && last.delay >= p.backoff_max / 2);
    }

    #[test]
    fn retry_backoff_doubles_with_jitter_to_its_cap_and_resets() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        for full in [100u64, 200, 400, 800, 800] {
            let full = Duration::from_millis(full);
            let delay = backoff.next_delay_with(&mut rng);
            assert!(delay >= full / 2 && delay <= full, "{delay:?} for {full:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay_with(&mut rng) <= Duration::from_millis(100));
    }
}

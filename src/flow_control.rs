//! Sentinel-style flow rules as rate limiters, shared by the two places
//! that apply them: the gRPC API listener, per method (Layotto's
//! `flowControlFilter`, `src/api/grpc/flow_control.rs`), and each
//! component's handle, per component (`flow_control` in its config
//! section, `src/actors/handle.rs`).
//!
//! Per rule, `threshold` calls per `stat_interval`:
//! - `reject` (Sentinel's 0): a token bucket (governor's GCRA) holding
//!   `threshold` calls, refilled over `stat_interval`; a call finding it
//!   empty is rejected at once.
//! - `throttle` (Sentinel's 1): calls pass evenly spaced, one per
//!   `stat_interval / threshold`; a call waits its turn when that is at
//!   most `max_queueing_time` away, else it is rejected.
//! - `warm_up` (Sentinel's token strategy 1), with `reject`: the rate
//!   starts at `threshold / warm_up_cold_factor` and rises evenly to
//!   `threshold` over `warm_up_period` from the sidecar's start.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{ControlBehavior, FlowRule, TokenStrategy};

/// One rule's limiter.
pub enum Limiter {
    Reject(DefaultDirectRateLimiter),
    Throttle {
        spacing: Duration,
        max_wait: Duration,
        next: Mutex<Instant>,
    },
    WarmUp {
        rule: FlowRule,
        started: Instant,
        /// The rate in force and its limiter.
        current: Mutex<(u32, Arc<DefaultDirectRateLimiter>)>,
    },
}

fn bucket(per_interval: u32, interval: Duration) -> DefaultDirectRateLimiter {
    let calls = NonZeroU32::new(per_interval.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(interval / calls.get())
        .unwrap_or_else(|| Quota::per_second(calls))
        .allow_burst(calls);
    RateLimiter::direct(quota)
}

/// What a call gets from its rule.
pub enum Verdict {
    Pass,
    Wait(Duration),
    Reject,
}

impl Limiter {
    pub fn of(rule: &FlowRule) -> Limiter {
        let threshold = rule.threshold.max(1);
        match (rule.strategy, rule.behavior) {
            (_, ControlBehavior::Throttle) => Limiter::Throttle {
                spacing: rule.stat_interval / threshold,
                max_wait: rule.max_queueing_time,
                next: Mutex::new(Instant::now()),
            },
            (TokenStrategy::WarmUp, ControlBehavior::Reject) => {
                let cold = cold_rate(rule);
                Limiter::WarmUp {
                    rule: rule.clone(),
                    started: Instant::now(),
                    current: Mutex::new((cold, Arc::new(bucket(cold, rule.stat_interval)))),
                }
            }
            (TokenStrategy::Direct, ControlBehavior::Reject) => Limiter::Reject(bucket(threshold, rule.stat_interval)),
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            Limiter::Reject(bucket) => {
                if bucket.check().is_ok() {
                    Verdict::Pass
                } else {
                    Verdict::Reject
                }
            }
            Limiter::Throttle {
                spacing,
                max_wait,
                next,
            } => {
                let now = Instant::now();
                let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                let slot = (*next).max(now);
                let wait = slot - now;
                if wait > *max_wait {
                    return Verdict::Reject;
                }
                *next = slot + *spacing;
                if wait.is_zero() {
                    Verdict::Pass
                } else {
                    Verdict::Wait(wait)
                }
            }
            Limiter::WarmUp { rule, started, current } => {
                let rate = warm_rate(rule, started.elapsed());
                let limiter = {
                    let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                    if current.0 != rate {
                        *current = (rate, Arc::new(bucket(rate, rule.stat_interval)));
                    }
                    current.1.clone()
                };
                if limiter.check().is_ok() {
                    Verdict::Pass
                } else {
                    Verdict::Reject
                }
            }
        }
    }
}

fn cold_rate(rule: &FlowRule) -> u32 {
    (rule.threshold / rule.warm_up_cold_factor.max(1)).max(1)
}

/// The warm-up rate `elapsed` after the start: from the cold rate up to
/// the threshold, evenly over the warm-up period.
fn warm_rate(rule: &FlowRule, elapsed: Duration) -> u32 {
    let cold = cold_rate(rule);
    if rule.warm_up_period.is_zero() || elapsed >= rule.warm_up_period {
        return rule.threshold.max(1);
    }
    let share = elapsed.as_secs_f64() / rule.warm_up_period.as_secs_f64();
    let rate = f64::from(cold) + f64::from(rule.threshold.saturating_sub(cold)) * share;
    (rate as u32).clamp(cold, rule.threshold.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(threshold: u32, behavior: ControlBehavior) -> FlowRule {
        FlowRule {
            resource: "/m".into(),
            threshold,
            stat_interval: Duration::from_secs(1),
            behavior,
            max_queueing_time: Duration::from_millis(500),
            strategy: TokenStrategy::Direct,
            warm_up_period: Duration::ZERO,
            warm_up_cold_factor: 3,
        }
    }

    #[test]
    fn reject_lets_the_threshold_through_at_once() {
        let limiter = Limiter::of(&rule(5, ControlBehavior::Reject));
        let passed = (0..20).filter(|_| matches!(limiter.verdict(), Verdict::Pass)).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn throttle_spaces_calls_and_rejects_beyond_the_queue() {
        let limiter = Limiter::of(&rule(10, ControlBehavior::Throttle));
        let verdicts: Vec<Verdict> = (0..10).map(|_| limiter.verdict()).collect();
        assert!(matches!(verdicts[0], Verdict::Pass));
        assert!(matches!(verdicts[1], Verdict::Wait(w) if w > Duration::from_millis(50)));
        // 100 ms apart: the sixth waits 500 ms, the seventh would wait 600.
        assert!(matches!(verdicts[5], Verdict::Wait(_)));
        assert!(matches!(verdicts[6], Verdict::Reject));
    }

    #[test]
    fn warm_up_rises_from_the_cold_rate() {
        let mut r = rule(30, ControlBehavior::Reject);
        r.strategy = TokenStrategy::WarmUp;
        r.warm_up_period = Duration::from_secs(10);
        assert_eq!(warm_rate(&r, Duration::ZERO), 10);
        assert_eq!(warm_rate(&r, Duration::from_secs(5)), 20);
        assert_eq!(warm_rate(&r, Duration::from_secs(11)), 30);
    }
}

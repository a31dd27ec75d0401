//! Why a component actor stopped: a type, so that the supervisor, the
//! status registry and the `reason` label of
//! `layotto_component_restarts_total` agree, and the label stays bounded.

use std::fmt;

use crate::components::tasks::TaskEnded;

/// Why a component actor stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The build returned an error, panicked or timed out.
    BuildFailed(String),
    /// `health_failure_threshold` health checks in a row failed.
    HealthCheckFailed(String),
    /// A call returned an error the component marks fatal.
    Fatal(String),
    /// A call, or the synchronous part of one, panicked.
    Panicked(String),
    /// A background task linked to the component ended or panicked.
    TaskEnded(TaskEnded),
    /// The runtime is shutting down.
    Shutdown,
}

impl StopReason {
    /// Every label value, for exporting series up front.
    pub const LABELS: [&'static str; 6] = [
        "build_failed",
        "health_check_failed",
        "fatal_error",
        "panic",
        "task_ended",
        "shutdown",
    ];

    /// Whether the stop says the backend is unreachable (its client could
    /// not be built, its health check failed, a call found the connection
    /// broken) rather than that the component itself misbehaved (a panic, an
    /// ended background task). Such a component is probed again at
    /// `probe_interval` however long the outage, and the calls it still
    /// holds are answered UNAVAILABLE at once instead of waiting out the
    /// client's timeouts.
    pub fn backend_unreachable(&self) -> bool {
        matches!(
            self,
            StopReason::BuildFailed(_) | StopReason::HealthCheckFailed(_) | StopReason::Fatal(_)
        )
    }

    /// The bounded `reason` label of the restart counter.
    pub fn label(&self) -> &'static str {
        match self {
            StopReason::BuildFailed(_) => "build_failed",
            StopReason::HealthCheckFailed(_) => "health_check_failed",
            StopReason::Fatal(_) => "fatal_error",
            StopReason::Panicked(_) => "panic",
            StopReason::TaskEnded(_) => "task_ended",
            StopReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::BuildFailed(detail) => write!(f, "build failed: {detail}"),
            StopReason::HealthCheckFailed(detail) => write!(f, "health check failed: {detail}"),
            StopReason::Fatal(detail) => write!(f, "fatal error: {detail}"),
            StopReason::Panicked(detail) => write!(f, "panicked while handling a request: {detail}"),
            StopReason::TaskEnded(ended) => write!(f, "background task '{}' {}", ended.task, ended.end),
            StopReason::Shutdown => f.write_str("shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::tasks::TaskEnd;

    #[test]
    fn labels_are_bounded_and_texts_name_the_cause() {
        let reasons = [
            StopReason::BuildFailed("x".into()),
            StopReason::HealthCheckFailed("x".into()),
            StopReason::Fatal("x".into()),
            StopReason::Panicked("x".into()),
            StopReason::TaskEnded(TaskEnded {
                task: "change feed",
                end: TaskEnd::Panicked("boom".into()),
            }),
            StopReason::Shutdown,
        ];
        for reason in &reasons {
            assert!(StopReason::LABELS.contains(&reason.label()));
        }
        assert_eq!(reasons[4].to_string(), "background task 'change feed' panicked: boom");
    }
}

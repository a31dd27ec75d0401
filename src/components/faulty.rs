//! `faulty`: a test-only component that fails on demand, to drive the
//! supervision tests. Compiled only with the `test-components` feature, and
//! registered through the same tables as the real types.
//!
//! Metadata:
//! - `token`: names the shared fault state, so that it survives rebuilds
//!   and tests running in one process do not see each other's faults;
//! - `failBuilds`: the first N builds fail;
//! - `hello`: the greeting.
//!
//! `SayHello` names are commands: `panic` panics inside the call, `fatal`
//! returns an error marked fatal, `sleep:<ms>` answers after a delay,
//! `unhealthy:<n>` makes the next n health checks fail, `task:panic`,
//! `task:fail` and `task:end` make the component's linked background task
//! panic, return an error or return. Anything else is greeted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;

use crate::components::hello::HelloService;
use crate::components::{BuildError, Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};

pub const HELLO: TypeEntry<dyn HelloService> = TypeEntry {
    name: "faulty",
    validate,
    build: |crate::components::BuildContext { spec, tasks }| {
        async move { Faulty::build(&spec, &tasks).map(|f| Arc::new(f) as Arc<dyn HelloService>) }.boxed()
    },
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    if let Some(n) = spec.meta("failBuilds")
        && n.parse::<u32>().is_err()
    {
        errors.push(MetadataError::new("failBuilds", format!("'{n}' is not a count")));
    }
    errors
}

/// Fault state shared by every build of one `token`.
#[derive(Debug, Default)]
pub struct Faults {
    /// Builds attempted so far.
    pub builds: u32,
    /// Health checks still to fail.
    pub unhealthy_checks: u32,
    /// What the background task does when woken.
    pub task_command: Option<TaskCommand>,
    /// Wakes the background task of the current build.
    pub task_wake: Arc<tokio::sync::Notify>,
}

/// What the background task is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskCommand {
    Panic,
    Fail,
    End,
}

/// The fault state of `token`, created on first use.
pub fn faults(token: &str) -> Arc<Mutex<Faults>> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Mutex<Faults>>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    all.entry(token.to_owned()).or_default().clone()
}

fn lock(faults: &Mutex<Faults>) -> std::sync::MutexGuard<'_, Faults> {
    faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Faulty {
    greeting: String,
    faults: Arc<Mutex<Faults>>,
}

impl Faulty {
    fn build(spec: &ComponentSpec, tasks: &crate::components::Tasks) -> Result<Faulty, BuildError> {
        let faults = faults(spec.meta("token").unwrap_or(&spec.name));
        let fail_builds: u32 = spec.meta("failBuilds").and_then(|n| n.parse().ok()).unwrap_or(0);
        let attempt = {
            let mut f = lock(&faults);
            f.builds += 1;
            f.builds
        };
        if attempt <= fail_builds {
            return Err(BuildError(format!(
                "faulty build {attempt} of {fail_builds} failing builds"
            )));
        }
        let wake = lock(&faults).task_wake.clone();
        let task_faults = faults.clone();
        tasks.spawn("faulty worker", async move {
            loop {
                wake.notified().await;
                let command = lock(&task_faults).task_command.take();
                match command {
                    Some(TaskCommand::Panic) => panic!("faulty background task panicked on demand"),
                    Some(TaskCommand::Fail) => return Err("faulty background task failed on demand".to_owned()),
                    Some(TaskCommand::End) => return Ok(()),
                    None => {}
                }
            }
        });
        Ok(Faulty {
            greeting: spec.meta("hello").unwrap_or("faulty").to_owned(),
            faults,
        })
    }
}

#[async_trait::async_trait]
impl Component for Faulty {
    async fn health_check(&self) -> Result<(), ComponentError> {
        let mut f = lock(&self.faults);
        if f.unhealthy_checks > 0 {
            f.unhealthy_checks -= 1;
            return Err(ComponentError::Unavailable(
                "faulty health check failed on demand".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl HelloService for Faulty {
    async fn hello(&self, name: &str) -> Result<String, ComponentError> {
        if name == "panic" {
            panic!("faulty component panicked on demand");
        }
        if name == "fatal" {
            return Err(ComponentError::Fatal(
                "faulty component failed fatally on demand".into(),
            ));
        }
        if let Some(ms) = name.strip_prefix("sleep:").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let command = match name {
            "task:panic" => Some(TaskCommand::Panic),
            "task:fail" => Some(TaskCommand::Fail),
            "task:end" => Some(TaskCommand::End),
            _ => None,
        };
        if let Some(command) = command {
            let wake = {
                let mut f = lock(&self.faults);
                f.task_command = Some(command);
                f.task_wake.clone()
            };
            wake.notify_waiters();
        }
        if let Some(n) = name.strip_prefix("unhealthy:").and_then(|n| n.parse().ok()) {
            lock(&self.faults).unhealthy_checks = n;
        }
        Ok(format!("{}, {name}", self.greeting))
    }
}

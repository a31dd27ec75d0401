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
use futures::future::BoxFuture;

use crate::components::hello::HelloService;
use crate::components::meta::Section;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const HELLO: TypeEntry<dyn HelloService> = TypeEntry::of::<FaultyType>();

pub struct FaultyType;

impl ComponentType<dyn HelloService> for FaultyType {
    const NAME: &'static str = "faulty";
    type Metadata = FaultyMetadata;

    fn build(
        ctx: BuildContext,
        metadata: FaultyMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn HelloService>, BuildError>> {
        async move { Faulty::build(&ctx.spec.name, metadata, &ctx.tasks).map(|f| Arc::new(f) as Arc<dyn HelloService>) }
            .boxed()
    }
}

/// What `faulty` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultyMetadata {
    /// Names the shared fault state; default: the component's name.
    #[serde(default)]
    pub token: Option<String>,
    /// The first N builds fail.
    #[serde(default)]
    pub fail_builds: u32,
    /// The greeting.
    #[serde(default = "default_greeting")]
    pub hello: String,
}

impl Section for FaultyMetadata {}

fn default_greeting() -> String {
    "faulty".to_owned()
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
    fn build(name: &str, metadata: FaultyMetadata, tasks: &crate::components::Tasks) -> Result<Faulty, BuildError> {
        let faults = faults(metadata.token.as_deref().unwrap_or(name));
        let fail_builds = metadata.fail_builds;
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
            greeting: metadata.hello,
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

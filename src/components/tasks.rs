//! Background work a component runs outside requests (broker consumers,
//! change feeds, reconnect loops, cleanup sweeps), linked to the actor that
//! hosts the component.
//!
//! A component never calls `tokio::spawn` for such work: its build gets a
//! [`Tasks`] handle from the host and spawns through it. A linked task is
//! meant to run until the component stops, so its end is news: a panic, an
//! error it returns, or an unexpected `Ok(())` is reported to the host,
//! which stops the component (DOWN, with the task's name and why) for its
//! supervisor to restart with a fresh build. When the actor stops, every
//! task it linked is aborted.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// How a linked task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskEnd {
    /// It returned `Ok(())`, though it should have run until stopped.
    Returned,
    /// It returned an error.
    Failed(String),
    /// It panicked.
    Panicked(String),
}

impl std::fmt::Display for TaskEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskEnd::Returned => f.write_str("ended"),
            TaskEnd::Failed(error) => write!(f, "failed: {error}"),
            TaskEnd::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// A linked task's end, as its host hears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEnded {
    /// The name the component gave the task, e.g. `"change feed"`.
    pub task: &'static str,
    pub end: TaskEnd,
}

/// Spawns background work linked to one component instance.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    ended: mpsc::UnboundedSender<TaskEnded>,
    /// Running tasks; `None` once aborted: later spawns are aborted at once.
    handles: Mutex<Option<Vec<AbortHandle>>>,
}

impl Tasks {
    /// A handle for one component instance, and the channel on which its
    /// host hears of tasks that end.
    pub fn new() -> (Tasks, mpsc::UnboundedReceiver<TaskEnded>) {
        let (ended, ended_rx) = mpsc::unbounded_channel();
        let tasks = Tasks {
            inner: Arc::new(Inner {
                ended,
                handles: Mutex::new(Some(Vec::new())),
            }),
        };
        (tasks, ended_rx)
    }

    /// Runs `work` until the component stops. Its end (an error, a panic,
    /// or returning at all) stops the component. The handle lets the
    /// component stop the task itself, e.g. when it closes; an aborted task
    /// is not reported.
    pub fn spawn<F>(&self, task: &'static str, work: F) -> AbortHandle
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.link(task, work, false)
    }

    /// Runs `work` for as long as something wants it, e.g. the consumer of
    /// one subscription: returning `Ok(())` (its subscriber went away) is a
    /// normal end; an error or a panic stops the component, as for
    /// [`Tasks::spawn`].
    pub fn spawn_scoped<F>(&self, task: &'static str, work: F) -> AbortHandle
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.link(task, work, true)
    }

    fn link<F>(&self, task: &'static str, work: F, may_return: bool) -> AbortHandle
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let ended = self.inner.ended.clone();
        let handle = tokio::spawn(async move {
            let end = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(Ok(())) if may_return => return,
                Ok(Ok(())) => TaskEnd::Returned,
                Ok(Err(error)) => TaskEnd::Failed(error),
                Err(panic) => TaskEnd::Panicked(panic_message(&*panic)),
            };
            let _ = ended.send(TaskEnded { task, end });
        })
        .abort_handle();
        let mut handles = self.inner.handles.lock().unwrap_or_else(|p| p.into_inner());
        match handles.as_mut() {
            Some(handles) => {
                handles.retain(|h| !h.is_finished());
                handles.push(handle.clone());
            }
            None => handle.abort(),
        }
        handle
    }

    /// Aborts every task, and any spawned from now on. Called by the host
    /// when the component stops.
    pub fn abort_all(&self) {
        let handles = self.inner.handles.lock().unwrap_or_else(|p| p.into_inner()).take();
        for handle in handles.into_iter().flatten() {
            handle.abort();
        }
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |handles| handles.iter().filter(|h| !h.is_finished()).count())
    }
}

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_panics_or_fails_is_reported() {
        let (tasks, mut ended) = Tasks::new();
        tasks.spawn("returns", async { Ok(()) });
        tasks.spawn("fails", async { Err("boom".to_owned()) });
        tasks.spawn("panics", async { panic!("on purpose") });
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(ended.recv().await.expect("a report"));
        }
        seen.sort_by_key(|e| e.task);
        assert_eq!(
            seen,
            vec![
                TaskEnded {
                    task: "fails",
                    end: TaskEnd::Failed("boom".into())
                },
                TaskEnded {
                    task: "panics",
                    end: TaskEnd::Panicked("on purpose".into())
                },
                TaskEnded {
                    task: "returns",
                    end: TaskEnd::Returned
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_scoped_task_may_return_but_not_fail() {
        let (tasks, mut ended) = Tasks::new();
        tasks.spawn_scoped("done", async { Ok(()) });
        tasks.spawn_scoped("lost", async { Err("connection lost".to_owned()) });
        assert_eq!(
            ended.recv().await,
            Some(TaskEnded {
                task: "lost",
                end: TaskEnd::Failed("connection lost".into())
            })
        );
        drop(tasks);
        assert_eq!(ended.recv().await, None, "a scoped task that returned was reported");
    }

    #[tokio::test]
    async fn aborted_tasks_are_not_reported_and_later_spawns_never_run() {
        let (tasks, mut ended) = Tasks::new();
        tasks.spawn("forever", std::future::pending());
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), 1);
        tasks.abort_all();
        let (ran, ran_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("late", async move {
            let _ = ran.send(());
            Ok(())
        });
        assert!(ran_rx.await.is_err(), "a task spawned after abort_all ran");
        drop(tasks);
        assert_eq!(ended.recv().await, None);
    }
}

//! Input bindings: their events delivered to the app.
//!
//! One task per binding component that reads input (its type does, and
//! its `direction`, when set, includes `input`). Unless `direction` names
//! `input`, the app is asked first whether it takes the binding (daprd's
//! `OPTIONS /<route>` probe over HTTP, `ListInputBindings` over gRPC);
//! then the task reads the component's events through its actor and
//! delivers them one at a time, retrying while the app fails (backing off
//! from 100 ms to 5 s), and acknowledges each to the component only once
//! the app accepted it. When the component restarts its event stream
//! ends, and the task reads again from the new incarnation. At shutdown an
//! event not yet accepted is given back (a queue redelivers it).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::ApiContext;
use super::callback::AppCallback;
use crate::actors::CallError;
use crate::actors::bindings::{IsInput, Read};
use crate::components::ComponentError;

/// Between attempts to reach the app or the component.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The running input binding deliveries.
pub struct InputBindings {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl InputBindings {
    pub fn start(ctx: Arc<ApiContext>, app: AppCallback) -> InputBindings {
        let (stop, stop_rx) = watch::channel(false);
        let tasks = ctx
            .router
            .bindings
            .handles()
            .into_iter()
            .filter_map(|handle| {
                let spec = handle.spec();
                let direction = spec.meta("direction").map(str::to_ascii_lowercase);
                if direction.as_deref().is_some_and(|d| !d.contains("input")) {
                    return None;
                }
                let name = spec.name.clone();
                let route = spec.meta("route").filter(|r| !r.is_empty()).unwrap_or(&name).to_owned();
                let declared = direction.is_some();
                Some(tokio::spawn(deliver(
                    ctx.clone(),
                    app.clone(),
                    name,
                    route,
                    declared,
                    stop_rx.clone(),
                )))
            })
            .collect();
        InputBindings { stop, tasks }
    }

    /// Stops reading; an event the app has not accepted by `deadline` is
    /// given back.
    pub async fn stop(self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

async fn deliver(
    ctx: Arc<ApiContext>,
    app: AppCallback,
    name: String,
    route: String,
    declared: bool,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(binding) = ctx.router.bindings.get("name", &name) else {
        return;
    };
    let mut wait = RETRY_MIN;
    // Only bindings that read input are asked about.
    loop {
        match binding.call(IsInput).await {
            Ok(true) => break,
            Ok(false) => return,
            Err(e) => {
                debug!(binding = %name, error = %e, "Input binding not ready yet");
                if pause(&mut stop, wait).await {
                    return;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
    // Unless its direction says input, the app is asked whether it takes it.
    let mut subscribed = declared;
    while !subscribed {
        match app.takes_binding(&name, &route).await {
            Ok(true) => subscribed = true,
            Ok(false) => {
                info!(binding = %name, route = %route, "The app has not subscribed to input binding; not reading it");
                return;
            }
            Err(e) => {
                debug!(binding = %name, error = %e, "Cannot ask the app about input binding yet");
                if pause(&mut stop, wait).await {
                    return;
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
    wait = RETRY_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let events = match binding.call(Read).await {
            Ok(events) => events,
            Err(CallError::Component {
                error: ComponentError::Unsupported(_),
                ..
            }) => return,
            Err(e) => {
                debug!(binding = %name, error = %e, "Input binding not readable yet");
                if pause(&mut stop, wait).await {
                    return;
                }
                wait = (wait * 2).min(RETRY_MAX);
                continue;
            }
        };
        info!(binding = %name, route = %route, "Delivering input binding events to the app");
        wait = RETRY_MIN;
        let mut events = events;
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = stop.wait_for(|s| *s) => return,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => {
                    warn!(binding = %name, error = %e, "Input binding stopped reading; reading again");
                    break;
                }
                None => break,
            };
            let mut attempt_wait = RETRY_MIN;
            let accepted = loop {
                let message = &delivery.message;
                match app.binding_event(&name, &route, &message.data, &message.metadata).await {
                    Ok(()) => break true,
                    Err(e) => {
                        debug!(binding = %name, error = %e, "The app did not take an input binding event; retrying");
                        if pause(&mut stop, attempt_wait).await {
                            break false;
                        }
                        attempt_wait = (attempt_wait * 2).min(RETRY_MAX);
                    }
                }
            };
            if accepted {
                if let Err(e) = delivery.acker.ack().await {
                    warn!(binding = %name, error = %e, "Acknowledging an input binding event failed");
                }
            } else {
                delivery.acker.nack().await;
                return;
            }
        }
        if pause(&mut stop, RETRY_MIN).await {
            return;
        }
    }
}

//! The sending side of a component actor: what an API handler holds.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix::{Addr, dev::SendError};
use tokio::sync::oneshot;

use super::Operation;
use super::host::{Call, ComponentActor};
use crate::components::{BuildingBlock, ComponentError, ComponentSpec, Retained};
use crate::flow_control::{Limiter, Verdict};
use crate::supervisor::StatusCell;

/// Why a call to a component did not return the component's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The component is not UP (starting, or DOWN and being restarted).
    #[error("component {component} is unavailable: {reason}")]
    Unavailable { component: Arc<str>, reason: String },
    /// The component's queue is full.
    #[error("component {component} is at its capacity of {capacity} requests in flight; retry later")]
    Busy { component: Arc<str>, capacity: usize },
    /// The component panicked while handling this request; it is being
    /// restarted.
    #[error("component {component} failed while handling the request and is restarting")]
    Panicked { component: Arc<str> },
    /// The call is over the component's `flow_control` rate.
    #[error("component {component} is over its flow control limit of {threshold} calls per {interval:?}; retry later")]
    Limited {
        component: Arc<str>,
        threshold: u32,
        interval: std::time::Duration,
    },
    /// The component answered with an error.
    #[error("component {component}: {error}")]
    Component { component: Arc<str>, error: ComponentError },
}

/// Everything about one configured component that both its supervisor and
/// the API side need: the supervisor swaps in a new actor on each restart,
/// the handles read the current one.
pub struct Slot<B: BuildingBlock> {
    /// The spec the component is (re)built from; a reload replaces it.
    spec: RwLock<Arc<ComponentSpec>>,
    pub status: Arc<StatusCell>,
    /// `"<kind>/<name>"`, for error messages.
    key: Arc<str>,
    addr: RwLock<Option<Addr<ComponentActor<B>>>>,
    capacity: usize,
    /// Calls admitted and not yet finished, queued or running: the one
    /// number `capacity` bounds.
    in_flight: Arc<AtomicUsize>,
    /// What the component keeps across restarts.
    pub retained: Retained,
    /// The component's `flow_control` rate, when it has one.
    limiter: RwLock<Option<Arc<Limiter>>>,
}

impl<B: BuildingBlock> Slot<B> {
    pub fn new(spec: ComponentSpec, status: Arc<StatusCell>, capacity: usize) -> Arc<Self> {
        Arc::new(Slot {
            key: status.id().key().into(),
            status,
            addr: RwLock::new(None),
            capacity,
            in_flight: Arc::new(AtomicUsize::new(0)),
            retained: Retained::default(),
            limiter: RwLock::new(spec.flow_control.as_ref().map(|rule| Arc::new(Limiter::of(rule)))),
            spec: RwLock::new(Arc::new(spec)),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The spec the component is built from now.
    pub fn spec(&self) -> Arc<ComponentSpec> {
        self.spec
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the spec (a reload): later builds use it, and its flow
    /// control rate applies to the next call.
    pub fn set_spec(&self, spec: Arc<ComponentSpec>) {
        let limiter = spec.flow_control.as_ref().map(|rule| Arc::new(Limiter::of(rule)));
        *self.limiter.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = limiter;
        *self.spec.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = spec;
    }

    fn limiter(&self) -> Option<Arc<Limiter>> {
        self.limiter
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Calls admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A place among the `capacity` calls the component may hold, queued
    /// or running; `None` when all are taken.
    fn admit(&self) -> Option<Permit> {
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(self.in_flight.clone());
        (previous < self.capacity).then_some(permit)
    }

    /// `"<kind>/<name>"`.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Installs the actor that now hosts the component.
    pub fn set_actor(&self, addr: Option<Addr<ComponentActor<B>>>) {
        *self.addr.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = addr;
    }

    pub fn actor(&self) -> Option<Addr<ComponentActor<B>>> {
        self.addr
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Sends operations to one component.
pub struct ComponentHandle<B: BuildingBlock> {
    slot: Arc<Slot<B>>,
}

impl<B: BuildingBlock> Clone for ComponentHandle<B> {
    fn clone(&self) -> Self {
        ComponentHandle {
            slot: self.slot.clone(),
        }
    }
}

impl<B: BuildingBlock> ComponentHandle<B> {
    pub fn new(slot: Arc<Slot<B>>) -> Self {
        ComponentHandle { slot }
    }

    pub fn spec(&self) -> Arc<ComponentSpec> {
        self.slot.spec()
    }

    pub fn slot(&self) -> &Arc<Slot<B>> {
        &self.slot
    }

    /// What the component keeps across restarts (a function's announced
    /// id, say).
    pub fn retained(&self) -> &Retained {
        &self.slot.retained
    }

    /// Runs `op` on the component and returns its answer.
    pub async fn call<O: Operation<B>>(&self, op: O) -> Result<O::Output, CallError> {
        let slot = &self.slot;
        if let Err(reason) = slot.status.check() {
            return Err(CallError::Unavailable {
                component: slot.key.clone(),
                reason,
            });
        }
        if let Some(limiter) = slot.limiter() {
            match limiter.verdict() {
                Verdict::Pass => {}
                Verdict::Wait(wait) => tokio::time::sleep(wait).await,
                Verdict::Reject => {
                    let spec = slot.spec();
                    let rule = spec.flow_control.as_ref();
                    return Err(CallError::Limited {
                        component: slot.key.clone(),
                        threshold: rule.map_or(0, |r| r.threshold),
                        interval: rule.map_or_else(Default::default, |r| r.stat_interval),
                    });
                }
            }
        }
        let restarting = || CallError::Unavailable {
            component: slot.key.clone(),
            reason: "restarting".into(),
        };
        let permit = slot.admit().ok_or_else(|| CallError::Busy {
            component: slot.key.clone(),
            capacity: slot.capacity,
        })?;
        let (reply, answer) = oneshot::channel();
        let call = Call {
            op,
            reply,
            permit,
            _block: PhantomData,
        };
        {
            let actor = slot.addr.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let actor = actor.as_ref().ok_or_else(restarting)?;
            actor.try_send(call).map_err(|e| match e {
                SendError::Full(_) => CallError::Busy {
                    component: slot.key.clone(),
                    capacity: slot.capacity,
                },
                SendError::Closed(_) => restarting(),
            })?;
        }
        answer.await.unwrap_or_else(|_| {
            Err(CallError::Unavailable {
                component: slot.key.clone(),
                reason: "stopped while handling the request".into(),
            })
        })
    }
}

/// One admitted call; gives its place back when dropped.
pub(super) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

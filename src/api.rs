//! Where requests enter: the gRPC APIs, the actuator, and Dapr's HTTP health
//! endpoints. Handlers decode and validate, find the component through the
//! [`Router`], and send it a message; they never talk to a backend.

pub mod actuator;
pub mod dapr_http;
pub mod grpc;

use std::sync::Arc;

use crate::actors::Router;
use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::supervisor::{StatusRegistry, SupervisorProbe};

/// What every handler may use.
pub struct ApiContext {
    pub router: Router,
    pub app: AppConfig,
    pub status: Arc<StatusRegistry>,
    pub metrics: Arc<Metrics>,
    pub supervisor: SupervisorProbe,
}

//! `grpc.health.v1.Health`, fed by the status registry.
//!
//! Service names: `""` (the whole sidecar: ready), the Runtime service
//! (same), and `"<kind>/<name>"` for each component.

use std::sync::Arc;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::supervisor::{Health, StatusRegistry};

const RUNTIME_SERVICE: &str = "spec.proto.runtime.v1.Runtime";

/// Mirrors every status change into the health service, until the registry
/// is dropped.
pub async fn feed(status: Arc<StatusRegistry>, reporter: HealthReporter) {
    let mut changes = status.subscribe();
    loop {
        let overall = serving(status.ready());
        reporter.set_service_status("", overall).await;
        reporter.set_service_status(RUNTIME_SERVICE, overall).await;
        for (id, snapshot) in status.components() {
            reporter
                .set_service_status(id.key(), serving(snapshot.health == Health::Up))
                .await;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn serving(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

//! Graceful shutdown: readiness drops first, calls in flight finish, new
//! calls are refused, and a call that outlives the grace period is cut off.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{self, eventually, say_hello};

fn config(token: &str, grace: &str) -> String {
    format!(
        r#"
        [server]
        shutdown_grace_period = "{grace}"
        [hellos.f]
        type = "faulty"
        metadata = {{ token = "{token}" }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_and_readiness_goes_down_first() {
    let token = support::unique("drain");
    let rt = support::start(&config(&token, "5s")).await;
    let actuator = rt.actuator_addr();
    let status = rt.status().clone();
    let mut client = support::client(&rt).await;
    let in_flight = tokio::spawn(async move { say_hello(&mut client, "f", "sleep:800").await });
    // Let the call reach the component before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(rt.shutdown());
    eventually("readiness to report the shutdown", Duration::from_secs(5), || async {
        (status.runtime().reason == "shutdown").then_some(())
    })
    .await;
    let readiness = format!("http://{actuator}/actuator/health/readiness");
    if let Ok(response) = reqwest::get(&readiness).await {
        assert_eq!(response.status(), 503);
    }

    let reply = in_flight.await.expect("task").expect("the call in flight completes");
    assert_eq!(reply, "faulty, sleep:800");
    shutdown.await.expect("shutdown completes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain waited for the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_grace_period_is_cut_off() {
    let token = support::unique("cutoff");
    let rt = support::start(&config(&token, "300ms")).await;
    let mut client = support::client(&rt).await;
    let in_flight = tokio::spawn(async move { say_hello(&mut client, "f", "sleep:30000").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown ends soon after the grace period");
    let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the call ends");
    assert!(outcome.expect("task").is_err(), "a cut-off call cannot succeed");
}

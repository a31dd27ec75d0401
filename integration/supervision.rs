//! Supervision, one test per failure point, driven by the test-only
//! `faulty` component type.

use std::time::{Duration, Instant};

use layotto::RuntimeError;
use layotto::supervisor::Health;
use tonic::Code;

use crate::support::{self, eventually, metric, say_hello};

const WAIT: Duration = Duration::from_secs(10);

/// A sidecar with one `faulty` hello component named `f`, plus `extra`
/// config.
fn faulty_config(token: &str, metadata: &str, supervisor: &str, extra: &str) -> String {
    format!(
        r#"
        [supervisor]
        {supervisor}
        [hellos.f]
        type = "faulty"
        metadata = {{ token = "{token}" {metadata} }}
        {extra}
        "#
    )
}

fn component<'a>(body: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    &body["components"][key]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_is_retried_with_backoff_until_up() {
    let token = support::unique("build");
    let started = Instant::now();
    let rt = support::start(&faulty_config(
        &token,
        r#", failBuilds = "3""#,
        r#"backoff_min = "200ms"
           backoff_max = "2s""#,
        "",
    ))
    .await;

    // The first build failed: the runtime serves anyway, reporting why.
    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 503, "{body}");
    let f = component(&body, "hellos/f");
    assert_eq!(f["status"], "DOWN", "{body}");
    let reason = f["details"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("faulty build 1 of 3"), "{reason}");
    let mut client = support::client(&rt).await;
    let err = say_hello(&mut client, "f", "x").await.expect_err("down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("hellos/f"), "{}", err.message());

    let body = eventually("the component to come up", WAIT, || async {
        let (code, body) = support::readiness(&rt).await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(component(&body, "hellos/f")["details"]["restarts"], 3);
    // Three restarts with equal jitter wait at least 100 + 200 + 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "no backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(say_hello(&mut client, "f", "x").await.expect("served"), "faulty, x");

    let text = support::metrics(&rt).await;
    assert_eq!(
        metric(
            &text,
            "layotto_component_restarts_total",
            &support::component_labels("f", "faulty")
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "layotto_component_up", &support::component_labels("f", "faulty")),
        Some(1.0)
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_handler_is_caught_counted_and_the_next_request_served() {
    let token = support::unique("panic");
    let rt = support::start(&faulty_config(&token, "", r#"backoff_min = "20ms""#, "")).await;
    let mut client = support::client(&rt).await;

    let err = say_hello(&mut client, "f", "panic").await.expect_err("panics");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("restarting"), "{}", err.message());

    let hello = eventually("the restarted component to serve", WAIT, || {
        let mut client = client.clone();
        async move { say_hello(&mut client, "f", "after").await.ok() }
    })
    .await;
    assert_eq!(hello, "faulty, after");
    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(component(&body, "hellos/f")["details"]["restarts"], 1);
    let text = support::metrics(&rt).await;
    assert_eq!(
        metric(
            &text,
            "layotto_component_restarts_total",
            &support::component_labels("f", "faulty")
        ),
        Some(1.0)
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_restarts_the_component() {
    let token = support::unique("fatal");
    let rt = support::start(&faulty_config(&token, "", r#"backoff_min = "20ms""#, "")).await;
    let mut client = support::client(&rt).await;

    let err = say_hello(&mut client, "f", "fatal").await.expect_err("fatal");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    eventually("a restart to be counted", WAIT, || async {
        let (_, body) = support::readiness(&rt).await;
        (component(&body, "hellos/f")["details"]["restarts"] == 1 && component(&body, "hellos/f")["status"] == "UP")
            .then_some(())
    })
    .await;
    assert_eq!(say_hello(&mut client, "f", "y").await.expect("served"), "faulty, y");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_turns_it_down_fails_fast_then_recovers() {
    let token = support::unique("health");
    let rt = support::start(&faulty_config(
        &token,
        "",
        r#"backoff_min = "600ms"
           backoff_max = "1s"
           health_interval = "30ms""#,
        "",
    ))
    .await;
    let mut client = support::client(&rt).await;
    say_hello(&mut client, "f", "unhealthy:1").await.expect("served");

    let cell = rt
        .status()
        .components()
        .into_iter()
        .find(|(id, _)| id.key() == "hellos/f")
        .map(|(id, _)| id)
        .expect("registered");
    eventually("the component to go DOWN", WAIT, || async {
        let down = rt
            .status()
            .components()
            .into_iter()
            .any(|(id, s)| id == cell && s.health == Health::Down);
        down.then_some(())
    })
    .await;
    // DOWN for at least 300ms (half the minimum backoff): calls fail fast,
    // naming the component and the reason.
    let err = say_hello(&mut client, "f", "x").await.expect_err("down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("hellos/f"), "{}", err.message());
    assert!(err.message().contains("health check failed"), "{}", err.message());
    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 503);
    assert_eq!(component(&body, "hellos/f")["status"], "DOWN");
    let text = support::metrics(&rt).await;
    assert_eq!(
        metric(&text, "layotto_component_up", &support::component_labels("f", "faulty")),
        Some(0.0)
    );

    let hello = eventually("recovery", WAIT, || {
        let mut client = client.clone();
        async move { say_hello(&mut client, "f", "back").await.ok() }
    })
    .await;
    assert_eq!(hello, "faulty, back");
    let (code, _) = support::readiness(&rt).await;
    assert_eq!(code, 200);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_down_component_leaves_the_others_serving() {
    let token = support::unique("isolation");
    let rt = support::start(&faulty_config(
        &token,
        r#", failBuilds = "100000""#,
        r#"backoff_min = "10ms"
           backoff_max = "50ms"
           max_restarts = 1000000"#,
        r#"[hellos.good]
           type = "helloworld"
           hello = "hi""#,
    ))
    .await;
    let client = support::client(&rt).await;

    let calls = (0..200).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move { say_hello(&mut client, "good", &format!("n{i}")).await })
    });
    for (i, call) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(call.expect("task").expect("good serves"), format!("hi, n{i}"));
    }

    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 503);
    assert_eq!(component(&body, "hellos/good")["status"], "UP");
    assert_eq!(component(&body, "hellos/f")["status"], "DOWN");
    let text = support::metrics(&rt).await;
    assert_eq!(
        metric(
            &text,
            "layotto_grpc_requests_total",
            &support::rpc_labels("SayHello", "OK")
        ),
        Some(200.0)
    );
    assert_eq!(
        metric(
            &text,
            "layotto_component_up",
            &support::component_labels("good", "helloworld")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "layotto_component_up", &support::component_labels("f", "faulty")),
        Some(0.0)
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted() {
    let token = support::unique("queue");
    let rt = support::start(&faulty_config(&token, "", "", "queue_capacity = 2")).await;
    let client = support::client(&rt).await;

    // Five calls that each hold their place for 3 s, against a queue of
    // two: the first two in are served, the rest are refused at once.
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { say_hello(&mut client, "f", "sleep:3000").await })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for call in futures::future::join_all(calls).await {
        match call.expect("task") {
            Ok(_) => served += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("capacity of 2"), "{}", e.message());
                refused += 1;
            }
        }
    }
    assert_eq!(served, 2);
    assert_eq!(refused, 3);
    // The queue drains: the next call is served.
    say_hello(&mut client.clone(), "f", "quick")
        .await
        .expect("served after the queue drained");

    let text = support::metrics(&rt).await;
    let exhausted = metric(
        &text,
        "layotto_grpc_requests_total",
        &support::rpc_labels("SayHello", "RESOURCE_EXHAUSTED"),
    );
    assert_eq!(exhausted, Some(3.0), "{text}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_refuses_to_start_with_a_broken_component() {
    let token = support::unique("failfast");
    let config = support::config(&faulty_config(
        &token,
        r#", failBuilds = "1000""#,
        r#"fail_fast = true
           init_timeout = "1s""#,
        "",
    ));
    match layotto::Runtime::start(config).await {
        Err(RuntimeError::StartupFailed(failed)) => {
            assert_eq!(failed.len(), 1);
            assert!(failed[0].starts_with("hellos/f: build failed"), "{failed:?}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started despite fail_fast"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_restart_intensity_escalates_under_fail_fast() {
    let token = support::unique("intensity");
    let mut rt = support::start(&faulty_config(
        &token,
        "",
        r#"fail_fast = true
           backoff_min = "10ms"
           backoff_max = "20ms"
           max_restarts = 2
           restart_window = "30s"
           health_interval = "20ms""#,
        "",
    ))
    .await;
    let mut client = support::client(&rt).await;
    say_hello(&mut client, "f", "unhealthy:1000").await.expect("served");
    let failure = tokio::time::timeout(WAIT, rt.failed())
        .await
        .expect("escalates in time");
    match failure {
        RuntimeError::Escalated { component, reason } => {
            assert_eq!(component, "hellos/f");
            assert!(reason.contains("health check failed"), "{reason}");
        }
        other => panic!("unexpected failure: {other}"),
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fail_fast_a_component_that_keeps_failing_is_retried_at_the_longest_backoff() {
    let token = support::unique("nofailfast");
    let rt = support::start(&faulty_config(
        &token,
        r#", failBuilds = "1000""#,
        r#"backoff_min = "5ms"
           backoff_max = "40ms"
           max_restarts = 2"#,
        "",
    ))
    .await;
    let body = eventually("the intensity to be exceeded", WAIT, || async {
        let (_, body) = support::readiness(&rt).await;
        let reason = component(&body, "hellos/f")["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        reason.contains("more than 2 restarts").then_some(body)
    })
    .await;
    assert_eq!(component(&body, "hellos/f")["status"], "DOWN");
    // Still serving the API: the supervisor keeps retrying.
    let mut client = support::client(&rt).await;
    let err = say_hello(&mut client, "f", "x").await.expect_err("down");
    assert_eq!(err.code(), Code::Unavailable);
    rt.shutdown().await;
}

/// A linked background task that panics, fails or ends is a component
/// failure: DOWN with the task named in readiness, a restart counted under
/// `reason="task_ended"`, and the rebuilt component serves (with a new
/// task, which the next command reaches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_that_ends_restarts_its_component() {
    let token = support::unique("task");
    let rt = support::start(&faulty_config(
        &token,
        "",
        r#"backoff_min = "300ms"
        backoff_max = "600ms""#,
        "",
    ))
    .await;
    let mut client = support::client(&rt).await;
    for (round, command, detail) in [
        (1, "task:panic", "panicked: faulty background task panicked on demand"),
        (2, "task:fail", "failed: faulty background task failed on demand"),
        (3, "task:end", "ended"),
    ] {
        say_hello(&mut client, "f", command).await.expect("command taken");
        let body = eventually("the component to show the task's end", WAIT, || async {
            let (_, body) = support::readiness(&rt).await;
            let f = component(&body, "hellos/f").clone();
            (f["status"] == "DOWN").then_some(f)
        })
        .await;
        let reason = body["details"]["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason.contains(&format!("background task 'faulty worker' {detail}")),
            "{reason}"
        );
        eventually("the component to be rebuilt", WAIT, || async {
            let (_, body) = support::readiness(&rt).await;
            let f = component(&body, "hellos/f");
            (f["status"] == "UP" && f["details"]["restarts"] == round).then_some(())
        })
        .await;
        assert_eq!(
            say_hello(&mut client, "f", "after").await.expect("served"),
            "faulty, after"
        );
    }
    let text = support::metrics(&rt).await;
    let mut labels = support::component_labels("f", "faulty").to_vec();
    labels.push(("reason", "task_ended"));
    assert_eq!(
        metric(&text, "layotto_component_restarts_total", &labels),
        Some(3.0),
        "{text}"
    );
    rt.shutdown().await;
}

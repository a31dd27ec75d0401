//! The supervision tree on a real actix system with paused tokio time: the
//! component host's fault boundary, restart backoff and its bounds,
//! restart intensity and escalation, stale events, linked tasks.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::block::BlockSupervisor;
use super::{Escalation, Health, Slots, StatusRegistry, StopReason, SupervisorHandle};
use crate::actors::hello::SayHello;
use crate::actors::{CallError, ChildEvent, ComponentHandle, Operation, Slot};
use crate::components::hello::HelloService;
use crate::components::{ComponentError, ComponentSpec, Hellos, Kind};
use crate::config::{Config, Format, SupervisorConfig};
use crate::metrics::Metrics;
use crate::supervisor::ComponentId;

fn supervisor_config(extra: &str) -> SupervisorConfig {
    let text = format!("[supervisor]\n{extra}\n");
    let config: Config = crate::config::load_str(&text, Format::Toml, "test", Some(Default::default()))
        .expect("valid supervisor config");
    config.supervisor
}

fn slot(registry: &StatusRegistry, name: &str, type_name: &str, metadata: &[(&str, &str)]) -> Arc<Slot<Hellos>> {
    let mut spec = ComponentSpec::new(name, type_name);
    for (k, v) in metadata {
        spec = spec.with_metadata(k, v);
    }
    let status = registry.register(ComponentId {
        kind: Kind::Hellos,
        name: name.into(),
        type_name: type_name.into(),
    });
    Slot::new(spec, status, 16)
}

/// Runs `test` on a fresh actix system with tokio's clock paused (it jumps
/// ahead whenever everything waits on a timer).
fn on_actix<F>(test: impl FnOnce() -> F)
where
    F: std::future::Future<Output = ()>,
{
    actix_rt::System::new().block_on(async {
        tokio::time::pause();
        test().await;
    });
}

async fn wait_for(slot: &Slot<Hellos>, health: Health) -> tokio::time::Instant {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while slot.status.snapshot().health != health {
        assert!(tokio::time::Instant::now() < deadline, "never {health:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::Instant::now()
}

/// One `faulty` component `f`, UP under its own supervisor.
#[cfg(feature = "test-components")]
struct FaultyUp {
    supervisor: SupervisorHandle,
    f: Arc<Slot<Hellos>>,
    handle: ComponentHandle<Hellos>,
    _escalations: mpsc::UnboundedReceiver<Escalation>,
    _registry: Arc<StatusRegistry>,
}

/// Starts a supervisor on `config` with one `faulty` component `f` (its
/// token made from `prefix`) and waits until it is UP.
#[cfg(feature = "test-components")]
async fn faulty_up(config: SupervisorConfig, prefix: &str) -> FaultyUp {
    let registry = StatusRegistry::new(Metrics::new());
    let (escalate, escalations) = mpsc::unbounded_channel();
    let supervisor = SupervisorHandle::start(config, escalate);
    let token = format!("{prefix}-{}", std::process::id());
    let f = slot(&registry, "f", "faulty", &[("token", &token)]);
    supervisor
        .start_components(Slots {
            hellos: vec![f.clone()],
            ..Default::default()
        })
        .await;
    wait_for(&f, Health::Up).await;
    let handle = ComponentHandle::new(f.clone());
    FaultyUp {
        supervisor,
        f,
        handle,
        _escalations: escalations,
        _registry: registry,
    }
}

/// An operation whose synchronous part (before any future exists) panics.
struct PanicsBeforeItsFuture;

impl Operation<Hellos> for PanicsBeforeItsFuture {
    type Output = String;

    fn run(self, _c: Arc<dyn HelloService>) -> BoxFuture<'static, Result<String, ComponentError>> {
        panic!("panicked before returning a future")
    }
}

#[test]
fn a_panic_in_the_synchronous_part_of_an_operation_leaves_other_components_serving() {
    on_actix(|| async {
        let registry = StatusRegistry::new(Metrics::new());
        let (escalate, _escalations) = mpsc::unbounded_channel();
        let supervisor = SupervisorHandle::start(supervisor_config("backoff_min = \"50ms\""), escalate);
        let a = slot(&registry, "a", "helloworld", &[]);
        let b = slot(&registry, "b", "helloworld", &[("hello", "hi")]);
        let slots = Slots {
            hellos: vec![a.clone(), b.clone()],
            ..Default::default()
        };
        supervisor.start_components(slots).await;
        wait_for(&a, Health::Up).await;
        wait_for(&b, Health::Up).await;

        let (a_handle, b_handle) = (ComponentHandle::new(a.clone()), ComponentHandle::new(b.clone()));
        let err = a_handle.call(PanicsBeforeItsFuture).await.expect_err("panics");
        assert!(matches!(err, CallError::Panicked { .. }), "{err:?}");
        // The event loop every component shares survived: b serves at once.
        let hello = b_handle.call(SayHello { name: "x".into() }).await.expect("b serves");
        assert_eq!(hello, "hi, x");
        // a was stopped for the panic and comes back.
        wait_for(&a, Health::Up).await;
        assert_eq!(a.status.snapshot().restarts, 1);
        let hello = a_handle
            .call(SayHello { name: "y".into() })
            .await
            .expect("a serves again");
        assert_eq!(hello, "greetings, y");
        // No place in either bound is left taken.
        assert_eq!((a.in_flight(), b.in_flight()), (0, 0));
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

#[cfg(feature = "test-components")]
#[test]
fn restart_delays_double_within_their_jitter_bounds_up_to_the_cap() {
    on_actix(|| async {
        let registry = StatusRegistry::new(Metrics::new());
        let (escalate, _escalations) = mpsc::unbounded_channel();
        let config = supervisor_config(
            "backoff_min = \"1s\"\nbackoff_max = \"8s\"\nmax_restarts = 100\nrestart_window = \"1h\"\nprobe_interval = \"1h\"",
        );
        let supervisor = SupervisorHandle::start(config, escalate);
        let token = format!("backoff-{}", std::process::id());
        let f = slot(&registry, "f", "faulty", &[("token", &token), ("failBuilds", "6")]);
        supervisor
            .start_components(Slots {
                hellos: vec![f.clone()],
                ..Default::default()
            })
            .await;
        let mut down = wait_for(&f, Health::Down).await;
        // Full delays 1, 2, 4, 8, 8, 8 s; each waited between half and all.
        for full in [1u64, 2, 4, 8, 8, 8] {
            let restarts = f.status.snapshot().restarts;
            while f.status.snapshot().restarts == restarts {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let waited = tokio::time::Instant::now() - down;
            let full = Duration::from_secs(full);
            assert!(
                waited >= full / 2 && waited <= full + Duration::from_millis(50),
                "waited {waited:?} for a full delay of {full:?}"
            );
            if f.status.snapshot().restarts < 6 {
                while f.status.snapshot().health != Health::Down {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                down = tokio::time::Instant::now();
            }
        }
        wait_for(&f, Health::Up).await;
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

/// A backend that stays down for long: builds keep failing, and each
/// retry comes within `probe_interval`, not after an ever longer backoff,
/// so the component is UP soon after the backend returns.
#[cfg(feature = "test-components")]
#[test]
fn a_component_that_cannot_be_built_is_probed_at_a_fixed_interval() {
    on_actix(|| async {
        let registry = StatusRegistry::new(Metrics::new());
        let (escalate, _escalations) = mpsc::unbounded_channel();
        let config = supervisor_config(
            "backoff_min = \"200ms\"\nbackoff_max = \"30s\"\nmax_restarts = 1000\nrestart_window = \"1h\"\nprobe_interval = \"500ms\"",
        );
        let supervisor = SupervisorHandle::start(config, escalate);
        let token = format!("probe-{}", std::process::id());
        let f = slot(&registry, "f", "faulty", &[("token", &token), ("failBuilds", "40")]);
        let started = tokio::time::Instant::now();
        supervisor
            .start_components(Slots {
                hellos: vec![f.clone()],
                ..Default::default()
            })
            .await;
        wait_for(&f, Health::Up).await;
        // 40 failed builds, each retried within 500 ms: at most 20 s, where
        // an exponential backoff would have waited minutes.
        assert!(started.elapsed() <= Duration::from_secs(20), "{:?}", started.elapsed());
        assert_eq!(f.status.snapshot().restarts, 40);
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

#[cfg(feature = "test-components")]
#[test]
fn exceeding_the_restart_intensity_escalates_under_fail_fast() {
    on_actix(|| async {
        let registry = StatusRegistry::new(Metrics::new());
        let (escalate, mut escalations) = mpsc::unbounded_channel::<Escalation>();
        let config = supervisor_config(
            "backoff_min = \"10ms\"\nbackoff_max = \"40ms\"\nmax_restarts = 2\nrestart_window = \"1h\"\nfail_fast = true",
        );
        let supervisor = SupervisorHandle::start(config, escalate);
        let token = format!("intensity-{}", std::process::id());
        let f = slot(&registry, "f", "faulty", &[("token", &token), ("failBuilds", "100")]);
        supervisor
            .start_components(Slots {
                hellos: vec![f.clone()],
                ..Default::default()
            })
            .await;
        let escalation = escalations.recv().await.expect("an escalation");
        assert_eq!(escalation.component, "hellos/f");
        assert!(escalation.reason.starts_with("build failed"), "{}", escalation.reason);
        // Two restarts were allowed; the third stop escalated.
        assert_eq!(f.status.snapshot().restarts, 2);
        assert!(f.status.snapshot().reason.contains("more than 2 restarts"));
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn an_event_from_an_older_generation_is_ignored() {
    on_actix(|| async {
        let registry = StatusRegistry::new(Metrics::new());
        let (escalate, _escalations) = mpsc::unbounded_channel();
        let root = super::root::RootSupervisor::new(supervisor_config(""), escalate).start();
        let a = slot(&registry, "a", "helloworld", &[]);
        let block = BlockSupervisor::<Hellos>::new(
            std::slice::from_ref(&a),
            supervisor_config("backoff_min = \"10ms\""),
            root.recipient(),
        )
        .start();
        wait_for(&a, Health::Up).await;
        // Generation 1 serves; a late "stopped" from generation 0 (an actor
        // replaced long ago) must change nothing.
        block
            .send(ChildEvent::Stopped {
                name: "a".into(),
                generation: 0,
                reason: StopReason::Fatal("stale".into()),
            })
            .await
            .expect("delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snapshot = a.status.snapshot();
        assert_eq!((snapshot.health, snapshot.restarts), (Health::Up, 0));
        // The current generation's stop is acted on.
        block
            .send(ChildEvent::Stopped {
                name: "a".into(),
                generation: 1,
                reason: StopReason::Fatal("current".into()),
            })
            .await
            .expect("delivered");
        assert_eq!(a.status.snapshot().health, Health::Down);
        assert!(a.status.snapshot().reason.starts_with("fatal error: current"));
        wait_for(&a, Health::Up).await;
        assert_eq!(a.status.snapshot().restarts, 1);
    });
}

#[cfg(feature = "test-components")]
#[test]
fn a_linked_task_that_panics_stops_its_component_which_is_rebuilt_with_a_new_task() {
    on_actix(|| async {
        let FaultyUp {
            supervisor, f, handle, ..
        } = faulty_up(supervisor_config("backoff_min = \"20ms\""), "linked").await;
        for (round, command) in [(1, "task:panic"), (2, "task:end")] {
            handle.call(SayHello { name: command.into() }).await.expect("taken");
            wait_for(&f, Health::Down).await;
            assert!(
                f.status.snapshot().reason.contains("background task 'faulty worker'"),
                "{}",
                f.status.snapshot().reason
            );
            wait_for(&f, Health::Up).await;
            assert_eq!(f.status.snapshot().restarts, round);
        }
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

/// A state operation that panics: the component restarts.
struct StatePanics;

impl Operation<crate::components::State> for StatePanics {
    type Output = ();

    fn run(self, _c: Arc<dyn crate::components::state::StateStore>) -> BoxFuture<'static, Result<(), ComponentError>> {
        panic!("state component panicked")
    }
}

#[test]
fn a_restarted_in_memory_store_keeps_every_key() {
    use crate::actors::state::{Get, Set};
    use crate::components::State;
    use crate::components::state::{Concurrency, Consistency, SetRequest};

    on_actix(|| async {
        let registry = StatusRegistry::new(Metrics::new());
        let (escalate, _escalations) = mpsc::unbounded_channel();
        let supervisor = SupervisorHandle::start(supervisor_config("backoff_min = \"20ms\""), escalate);
        let status = registry.register(ComponentId {
            kind: Kind::State,
            name: "mem".into(),
            type_name: "in-memory".into(),
        });
        let slot: Arc<Slot<State>> = Slot::new(ComponentSpec::new("mem", "in-memory"), status, 64);
        supervisor
            .start_components(Slots {
                state: vec![slot.clone()],
                ..Default::default()
            })
            .await;
        while slot.status.snapshot().health != Health::Up {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let store = ComponentHandle::new(slot.clone());
        for i in 0..100 {
            store
                .call(Set(SetRequest {
                    key: format!("k{i}"),
                    value: vec![1],
                    etag: None,
                    concurrency: Concurrency::LastWrite,
                    ttl: None,
                }))
                .await
                .expect("saved");
        }
        store.call(StatePanics).await.expect_err("panics");
        while slot.status.snapshot().restarts == 0 || slot.status.snapshot().health != Health::Up {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for i in 0..100 {
            let value = store
                .call(Get {
                    key: format!("k{i}"),
                    consistency: Consistency::Unspecified,
                })
                .await
                .expect("read");
            assert_eq!(value.map(|v| v.data), Some(vec![1]), "k{i} lost in the restart");
        }
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

/// A call in flight when its component stops because the backend is
/// unreachable (here another call's fatal error) is answered UNAVAILABLE
/// at once rather than left to the client's own timeouts; one in flight
/// when the component panics finishes on the client it started with.
#[cfg(feature = "test-components")]
#[test]
fn calls_in_flight_are_answered_at_once_only_when_the_backend_is_lost() {
    on_actix(|| async {
        let FaultyUp {
            supervisor, f, handle, ..
        } = faulty_up(supervisor_config("backoff_min = \"50ms\""), "abandon").await;
        let slow = |handle: ComponentHandle<Hellos>| {
            actix_rt::spawn(async move {
                handle
                    .call(SayHello {
                        name: "sleep:600000".into(),
                    })
                    .await
            })
        };

        let in_flight = slow(handle.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        let err = handle.call(SayHello { name: "fatal".into() }).await.expect_err("fatal");
        assert!(matches!(err, CallError::Component { .. }), "{err:?}");
        // Had it waited for its 10-minute sleep it would have answered OK.
        let err = in_flight.await.expect("task").expect_err("abandoned");
        assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("fatal error"), "{err}");

        wait_for(&f, Health::Up).await;
        let in_flight = slow(handle.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        let err = handle
            .call(SayHello { name: "panic".into() })
            .await
            .expect_err("panics");
        assert!(matches!(err, CallError::Panicked { .. }), "{err:?}");
        let hello = in_flight.await.expect("task").expect("finishes on its client");
        assert_eq!(hello, "faulty, sleep:600000");
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

/// A component built lazily, whose backend turns out to be gone, fails its
/// health check right after each start: it is probed at `probe_interval`
/// like one whose build fails, not after an ever longer backoff.
#[cfg(feature = "test-components")]
#[test]
fn a_component_whose_health_check_keeps_failing_is_probed_at_a_fixed_interval() {
    on_actix(|| async {
        let config = supervisor_config(
            "backoff_min = \"200ms\"\nbackoff_max = \"30s\"\nmax_restarts = 1000\nrestart_window = \"1h\"\nprobe_interval = \"500ms\"\nhealth_interval = \"100ms\"",
        );
        let FaultyUp {
            supervisor, f, handle, ..
        } = faulty_up(config, "health-probe").await;
        handle
            .call(SayHello {
                name: "unhealthy:20".into(),
            })
            .await
            .expect("served");
        let started = tokio::time::Instant::now();
        while f.status.snapshot().restarts < 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        wait_for(&f, Health::Up).await;
        // 20 restarts, each within 500 ms plus a 100 ms check: at most 12 s,
        // where the exponential backoff would have waited minutes.
        assert!(started.elapsed() <= Duration::from_secs(12), "{:?}", started.elapsed());
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

/// A call that waits on a backend which died under it makes the actor check
/// the backend's health at once, not at the next `health_interval`: the
/// component turns DOWN and the waiting call is answered UNAVAILABLE within
/// a few stall ticks. A call that is merely slow on a healthy backend is
/// left to finish.
#[cfg(feature = "test-components")]
#[test]
fn a_stalled_call_has_the_backend_checked_at_once() {
    on_actix(|| async {
        let config = supervisor_config("health_interval = \"1h\"\nbackoff_min = \"50ms\"");
        let FaultyUp {
            supervisor, f, handle, ..
        } = faulty_up(config, "stall").await;

        // Slow, on a healthy backend: it answers, however many checks ran.
        let hello = handle
            .call(SayHello {
                name: "sleep:2000".into(),
            })
            .await
            .expect("a slow call on a healthy backend finishes");
        assert_eq!(hello, "faulty, sleep:2000");
        assert_eq!(f.status.snapshot().restarts, 0);

        handle
            .call(SayHello {
                name: "unhealthy:1".into(),
            })
            .await
            .expect("served");
        let started = tokio::time::Instant::now();
        let err = handle
            .call(SayHello {
                name: "sleep:600000".into(),
            })
            .await
            .expect_err("abandoned");
        assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("health check"), "{err}");
        // Two stall ticks at most, where the periodic check is an hour away.
        assert!(
            started.elapsed() <= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        wait_for(&f, Health::Up).await;
        supervisor.stop(Duration::from_secs(5)).await;
    });
}

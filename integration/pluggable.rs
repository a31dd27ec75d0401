//! Pluggable components: component processes in Python (grpcio, in the SDK
//! test virtualenv) serving Dapr's and Layotto's pluggable protocols on
//! unix sockets, discovered and supervised by the sidecar. The state store
//! and the pub/sub also run their blocks' conformance suites
//! (`state::pluggable`, `pubsub::pluggable`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use layotto::components::Kind;
use layotto::components::pluggable;
use layotto::proto::runtime::v1 as pb;
use tokio::sync::OnceCell;

use crate::support::{self, eventually};

/// A component process of the test's own, on a socket in a folder of its
/// own.
pub struct Components {
    child: Option<Child>,
    python: String,
    serve: String,
    /// The socket folder.
    pub folder: PathBuf,
    /// The folder's temporary directory, when it is the process's own.
    _own: Option<tempfile::TempDir>,
    /// The type name: the socket's name.
    pub name: String,
    pub socket: PathBuf,
    descriptors: PathBuf,
}

/// The virtualenv's python with grpcio and its reflection service; `None`
/// (skip, with the reason printed) outside CI when they are missing.
fn python() -> Option<String> {
    let python = crate::sdk::sdk_python()?;
    let ready = Command::new(&python)
        .args(["-c", "import grpc, grpc_reflection.v1alpha.reflection"])
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("grpcio-reflection is not installed in the SDK virtualenv; run integration/sdk/setup.sh");
    }
    eprintln!("skipping: grpcio-reflection is not installed (run integration/sdk/setup.sh)");
    None
}

impl Components {
    /// Starts the process serving `serve` (`state,pubsub,...`) and waits
    /// for its socket to answer discovery; `None` when Python is missing
    /// outside CI.
    pub async fn start(name: &str, serve: &str) -> Option<Components> {
        let dir = tempfile::tempdir().expect("socket folder");
        let folder = dir.path().to_owned();
        Components::launch(folder, Some(dir), name, serve).await
    }

    /// The same, with its socket in `folder` (a sidecar's socket folder).
    pub async fn start_in(folder: &std::path::Path, name: &str, serve: &str) -> Option<Components> {
        Components::launch(folder.to_owned(), None, name, serve).await
    }

    async fn launch(folder: PathBuf, own: Option<tempfile::TempDir>, name: &str, serve: &str) -> Option<Components> {
        let python = python()?;
        // Beside the socket folder, so that it is not listed as a socket.
        let descriptors = std::env::temp_dir().join(format!("{name}-descriptors.bin"));
        std::fs::write(&descriptors, layotto::proto::PLUGGABLE_FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut components = Components {
            child: None,
            python,
            serve: serve.to_owned(),
            socket: folder.join(format!("{name}.sock")),
            name: name.to_owned(),
            folder,
            _own: own,
            descriptors,
        };
        components.spawn().await;
        Some(components)
    }

    /// The process again, on the same socket.
    pub async fn spawn(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/pluggable/components.py");
        let child = Command::new(&self.python)
            .arg(script)
            .arg("--descriptors")
            .arg(&self.descriptors)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--serve")
            .arg(&self.serve)
            .stdout(Stdio::null())
            .spawn()
            .expect("python starts");
        self.child = Some(child);
        let folder = self.folder.clone();
        let name = self.name.clone();
        eventually(
            "the component process to be discovered",
            Duration::from_secs(30),
            || {
                let (folder, name) = (folder.clone(), name.clone());
                async move {
                    let found = pluggable::discover(&[folder]).await;
                    found.iter().any(|f| f.name == name).then_some(())
                }
            },
        )
        .await;
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Components {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.descriptors);
    }
}

/// One process serving every protocol, shared by the tests of this
/// binary (it exits with them): the conformance suites' backend.
pub async fn shared() -> Option<&'static Components> {
    static SHARED: OnceCell<Option<Components>> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async { Components::start(&shared_name(), "state,pubsub,bindings,secrets,hello").await })
        .await
        .as_ref()
}

/// The shared process's type name.
pub fn shared_name() -> String {
    format!("pycomp-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_the_type_after_the_socket_and_finds_every_protocol() {
    let Some(c) = Components::start(&support::unique("pyall"), "state,pubsub,bindings,secrets,hello").await else {
        return;
    };
    let found = pluggable::discover(std::slice::from_ref(&c.folder)).await;
    let ours = found.iter().find(|f| f.name == c.name).expect("discovered");
    assert_eq!(
        ours.kinds,
        [
            Kind::SecretStore,
            Kind::Hellos,
            Kind::State,
            Kind::PubSubs,
            Kind::Bindings
        ]
        .into_iter()
        .collect()
    );
    assert!(ours.socket.serves(pluggable::TRANSACTIONAL_STATE_STORE));
    for kind in [
        Kind::State,
        Kind::PubSubs,
        Kind::Bindings,
        Kind::SecretStore,
        Kind::Hellos,
    ] {
        assert!(kind.has_type(&c.name), "{kind}");
        assert!(kind.known_types().contains(&c.name), "{kind}");
    }
    assert!(!Kind::Lock.has_type(&c.name), "no pluggable lock protocol");
    // A Dapr resource names it `<category>.<socket name>`.
    let yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: kv\nspec:\n  type: state.{}\n  version: v1\n",
        c.name
    );
    layotto::config::dapr_resources::load_text("kv.yaml", &yaml, "app").expect("a discovered type validates");
    // A socket whose process is gone is forgotten by the next discovery.
    let mut c = c;
    c.kill();
    let _ = std::fs::remove_file(&c.socket);
    pluggable::discover(std::slice::from_ref(&c.folder)).await;
    assert!(!Kind::State.has_type(&c.name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_bindings_secrets_and_hello_are_served_by_the_process() {
    let Some(c) = shared().await else { return };
    let ty = &c.name;
    let (rt, mut client) = support::start_ready(&format!(
        "[app]\napp_id = \"{}\"\n\
         [bindings.out]\ntype = \"{ty}\"\nmetadata = {{ direction = \"output\" }}\n\
         [secret_store.vault]\ntype = \"{ty}\"\nmetadata = {{ \"secret.db-password\" = \"s3cret\" }}\n\
         [hellos.py]\ntype = \"{ty}\"\nmetadata = {{ hello = \"bonjour\" }}\n",
        support::unique("plug")
    ))
    .await;
    // The output binding: the operations it listed, echoed back.
    let answer = client
        .invoke_binding(pb::InvokeBindingRequest {
            name: "out".into(),
            data: b"payload".to_vec(),
            metadata: HashMap::from([("k".to_owned(), "v".to_owned())]),
            operation: "create".into(),
        })
        .await
        .expect("invoke")
        .into_inner();
    assert_eq!(answer.data, b"payload");
    assert_eq!(answer.metadata.get("operation").map(String::as_str), Some("create"));
    assert_eq!(answer.metadata.get("k").map(String::as_str), Some("v"));
    let refused = client
        .invoke_binding(pb::InvokeBindingRequest {
            name: "out".into(),
            data: Vec::new(),
            metadata: HashMap::new(),
            operation: "delete".into(),
        })
        .await
        .expect_err("not an operation it listed");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("create emit answers"),
        "{}",
        refused.message()
    );
    // The secret store: secrets from its Init metadata.
    let secret = client
        .get_secret(pb::GetSecretRequest {
            store_name: "vault".into(),
            key: "db-password".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect("secret")
        .into_inner();
    assert_eq!(secret.data.get("db-password").map(String::as_str), Some("s3cret"));
    let bulk = client
        .get_bulk_secret(pb::GetBulkSecretRequest {
            store_name: "vault".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk")
        .into_inner();
    assert!(bulk.data.contains_key("db-password"));
    // Layotto's pluggable hello: the greeting its Init was given.
    assert_eq!(
        support::say_hello(&mut client, "py", "layotto").await.expect("hello"),
        "bonjour, layotto"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_binding_delivers_its_events_to_the_app_and_hears_each_answer() {
    let Some(c) = Components::start(&support::unique("pyin"), "bindings").await else {
        return;
    };
    let app = crate::bindings::InputApp::start(&["events"], b"", 0).await;
    let ty = &c.name;
    let (rt, mut client) = support::start_ready(&format!(
        "{}[bindings.events]\ntype = \"{ty}\"\nmetadata = {{ direction = \"input, output\" }}\n",
        crate::bindings::http_app_section(app.port)
    ))
    .await;
    // The process's "emit" operation queues an event on its input side.
    client
        .invoke_binding(pb::InvokeBindingRequest {
            name: "events".into(),
            data: b"from-the-component".to_vec(),
            metadata: HashMap::new(),
            operation: "emit".into(),
        })
        .await
        .expect("emit");
    eventually("the app to get the event", Duration::from_secs(20), || async {
        app.posts_to("/events")
            .iter()
            .any(|(body, _)| body == b"from-the-component")
            .then_some(())
    })
    .await;
    // The sidecar answered the event by its id once the app took it.
    eventually("the component to hear the answer", Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            let answers = client
                .invoke_binding(pb::InvokeBindingRequest {
                    name: "events".into(),
                    data: Vec::new(),
                    metadata: HashMap::new(),
                    operation: "answers".into(),
                })
                .await
                .ok()?
                .into_inner()
                .data;
            String::from_utf8_lossy(&answers).contains(":ok").then_some(())
        }
    })
    .await;
    rt.shutdown().await;
}

/// Under the binary, as users run it: discovery from
/// `DAPR_COMPONENTS_SOCKETS_FOLDER`, then a crash of the component process
/// turns the component DOWN in readiness within the health interval, and a
/// restart brings it UP again (dialled and initialised anew).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_component_process_is_down_until_it_answers_again() {
    let Some(mut c) = Components::start(&support::unique("pykill"), "state").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("pluggable.toml");
    std::fs::write(
        &config,
        format!(
            "[supervisor]\nhealth_interval = \"500ms\"\nprobe_interval = \"500ms\"\nbackoff_min = \"200ms\"\nbackoff_max = \"1s\"\nmax_restarts = 1000\n\
             [state.kv]\ntype = \"{}\"\n",
            c.name
        ),
    )
    .expect("config");
    let folder = c.folder.display().to_string();
    let sidecar = support::Sidecar::start_env(config, &[("DAPR_COMPONENTS_SOCKETS_FOLDER", &folder)]).await;
    let client = support::client_at(sidecar.grpc_addr()).await;
    save_kv(&client, b"before").await.expect("save through the process");
    let readiness = format!("http://{}/actuator/health/readiness", sidecar.actuator_addr());
    let kv_status = |readiness: String| async move {
        let (code, body) = support::http_get(&readiness).await;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some((code, json["components"]["state/kv"]["status"].as_str()?.to_owned()))
    };
    c.kill();
    let killed = std::time::Instant::now();
    eventually(
        "the component DOWN after its process died",
        Duration::from_secs(10),
        || {
            let readiness = readiness.clone();
            async move {
                kv_status(readiness)
                    .await
                    .filter(|(code, s)| *code == 503 && s == "DOWN")
            }
        },
    )
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "DOWN after {:?}, more than a few health intervals",
        killed.elapsed()
    );
    assert!(save_kv(&client, b"during").await.is_err(), "no process, no state");
    c.spawn().await;
    eventually(
        "the component UP once the process answers",
        Duration::from_secs(20),
        || {
            let readiness = readiness.clone();
            async move { kv_status(readiness).await.filter(|(code, s)| *code == 200 && s == "UP") }
        },
    )
    .await;
    save_kv(&client, b"after").await.expect("save after the restart");
}

async fn save_kv(
    client: &layotto::proto::runtime::v1::runtime_client::RuntimeClient<tonic::transport::Channel>,
    value: &[u8],
) -> Result<(), tonic::Status> {
    client
        .clone()
        .save_state(pb::SaveStateRequest {
            store_name: "kv".into(),
            states: vec![crate::state::item("k", value)],
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_no_socket_serves_is_refused_naming_it() {
    let err = layotto::config::load_str(
        "[state.kv]\ntype = \"no-such-pluggable\"\n",
        layotto::config::Format::Toml,
        "t.toml",
        Some(Default::default()),
    )
    .expect_err("unknown type");
    let text = err.to_string();
    assert!(
        text.contains("state.kv.type") && text.contains("no-such-pluggable"),
        "{text}"
    );
}

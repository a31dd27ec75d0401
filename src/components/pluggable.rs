//! Pluggable components: component processes of their own, in any
//! language, serving Dapr's pluggable component protocol
//! (`dapr.proto.components.v1`) or Layotto's (`spec.proto.pluggable.v1`)
//! on a unix socket.
//!
//! [`discover`] lists the socket folders ([`socket_folders`]: Dapr's
//! `DAPR_COMPONENTS_SOCKETS_FOLDER`, default `/tmp/dapr-components-sockets`,
//! and Layotto's `LAYOTTO_COMPONENTS_SOCKETS_FOLDER`, default
//! `/tmp/runtime/component-sockets`), asks each socket which services it
//! serves with gRPC reflection, and registers one component type per
//! (block, socket): the socket's file name without its extension, as Dapr
//! and Layotto name them (`my-store.sock` serving `StateStore` is type
//! `my-store` in the `state` section, `state.my-store` in a Dapr resource).
//! Discovery runs before the config is validated, at start and on every
//! reload, so a config naming a discovered type validates like one naming
//! a built-in type; a built-in type of the same name wins.
//!
//! Each block's client lives beside its built-in types
//! (`state/pluggable.rs`, `pubsub/pluggable.rs`, ...). Every call carries
//! `x-component-instance: <component name>`, so one process can serve
//! several instances, as with daprd. The process is not managed here: the
//! component's health check is its `Ping`, so a process that dies turns the
//! component DOWN and its supervisor rebuilds it (dialling and `Init`
//! again) once the socket answers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{info, warn};

use super::{BuildError, ComponentError, ComponentSpec, Kind, MetadataError};

/// Dapr's socket folder variable.
pub const DAPR_FOLDER_ENV: &str = "DAPR_COMPONENTS_SOCKETS_FOLDER";
/// Dapr's default socket folder.
pub const DAPR_DEFAULT_FOLDER: &str = "/tmp/dapr-components-sockets";
/// Layotto's socket folder variable.
pub const LAYOTTO_FOLDER_ENV: &str = "LAYOTTO_COMPONENTS_SOCKETS_FOLDER";
/// Layotto's default socket folder.
pub const LAYOTTO_DEFAULT_FOLDER: &str = "/tmp/runtime/component-sockets";

/// The gRPC metadata key naming the component instance of each call.
pub const INSTANCE_HEADER: &str = "x-component-instance";

/// How long discovery waits for one socket to answer reflection.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dialling a component's socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The services this sidecar knows, and the block each one serves.
pub const SERVICES: &[(&str, Kind)] = &[
    (STATE_STORE, Kind::State),
    (TRANSACTIONAL_STATE_STORE, Kind::State),
    (QUERIABLE_STATE_STORE, Kind::State),
    (PUBSUB, Kind::PubSubs),
    (INPUT_BINDING, Kind::Bindings),
    (OUTPUT_BINDING, Kind::Bindings),
    (SECRET_STORE, Kind::SecretStore),
    (HELLO, Kind::Hellos),
];

pub const STATE_STORE: &str = "dapr.proto.components.v1.StateStore";
pub const TRANSACTIONAL_STATE_STORE: &str = "dapr.proto.components.v1.TransactionalStateStore";
pub const QUERIABLE_STATE_STORE: &str = "dapr.proto.components.v1.QueriableStateStore";
pub const PUBSUB: &str = "dapr.proto.components.v1.PubSub";
pub const INPUT_BINDING: &str = "dapr.proto.components.v1.InputBinding";
pub const OUTPUT_BINDING: &str = "dapr.proto.components.v1.OutputBinding";
pub const SECRET_STORE: &str = "dapr.proto.components.v1.SecretStore";
pub const HELLO: &str = "spec.proto.pluggable.v1.hello.Hello";

/// A discovered component type: where it listens and what it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub path: PathBuf,
    /// The services of [`SERVICES`] it serves.
    pub services: BTreeSet<String>,
}

impl Socket {
    pub fn serves(&self, service: &str) -> bool {
        self.services.contains(service)
    }
}

/// The discovered types, by (block, type name). One per process, as
/// daprd's component registries are: discovery fills it before the config
/// that names its types is validated.
#[derive(Default)]
pub struct Registry {
    types: RwLock<BTreeMap<(Kind, String), Socket>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process's registry of discovered types.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    /// The socket of type `name` of `kind`, when one was discovered.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Socket> {
        self.read().get(&(kind, name.to_owned())).cloned()
    }

    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        self.read().contains_key(&(kind, name.to_owned()))
    }

    /// The discovered type names of `kind`.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.read()
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Every discovered type: (block, type name, socket).
    pub fn all(&self) -> Vec<(Kind, String, Socket)> {
        self.read()
            .iter()
            .map(|((kind, name), socket)| (*kind, name.clone(), socket.clone()))
            .collect()
    }

    /// Replaces what was found in `folder` by `found`.
    fn replace_folder(&self, folder: &Path, found: Vec<(Kind, String, Socket)>) {
        let mut types = self.types.write().unwrap_or_else(|p| p.into_inner());
        types.retain(|_, socket| socket.path.parent() != Some(folder));
        for (kind, name, socket) in found {
            types.insert((kind, name), socket);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(Kind, String), Socket>> {
        self.types.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The folders discovery lists: Dapr's and Layotto's, each from its
/// environment variable or its default.
pub fn socket_folders() -> Vec<PathBuf> {
    let folder = |env: &str, default: &str| {
        std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let mut folders = vec![
        folder(DAPR_FOLDER_ENV, DAPR_DEFAULT_FOLDER),
        folder(LAYOTTO_FOLDER_ENV, LAYOTTO_DEFAULT_FOLDER),
    ];
    folders.dedup();
    folders
}

/// One component process found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The type name: the socket's file name without its extension.
    pub name: String,
    pub socket: Socket,
    /// The blocks it serves.
    pub kinds: BTreeSet<Kind>,
}

/// Lists `folders`, asks every socket in them what it serves, and
/// registers what it finds (replacing what an earlier discovery found in
/// the same folders). A missing folder holds nothing; a socket that does
/// not answer is logged and skipped.
pub async fn discover(folders: &[PathBuf]) -> Vec<Found> {
    let mut all = Vec::new();
    for folder in folders {
        let found = discover_folder(folder).await;
        registry().replace_folder(
            folder,
            found
                .iter()
                .flat_map(|f| f.kinds.iter().map(|k| (*k, f.name.clone(), f.socket.clone())))
                .collect(),
        );
        all.extend(found);
    }
    all
}

/// Discovery in the default folders ([`socket_folders`]).
pub async fn discover_default() -> Vec<Found> {
    discover(&socket_folders()).await
}

/// [`discover_default`] from code that is not async (the CLI, before its
/// runtime starts): on a thread and runtime of its own.
pub fn discover_default_blocking() -> Vec<Found> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(discover_default()))
                    .unwrap_or_default()
            })
            .join()
            .unwrap_or_default()
    })
}

async fn discover_folder(folder: &Path) -> Vec<Found> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut sockets = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_socket() => sockets.push(path),
            Ok(t) if t.is_dir() => {}
            _ => warn!(path = %path.display(), "Skipped a file in the pluggable component folder: not a unix socket"),
        }
    }
    sockets.sort();
    let probes = sockets.into_iter().map(|path| async move {
        let name = type_name(&path)?;
        match tokio::time::timeout(DISCOVERY_TIMEOUT, list_services(&path)).await {
            Ok(Ok(listed)) => {
                let services: BTreeSet<String> = listed
                    .into_iter()
                    .filter(|s| SERVICES.iter().any(|(known, _)| known == s))
                    .collect();
                let kinds: BTreeSet<Kind> = SERVICES
                    .iter()
                    .filter(|(s, _)| services.contains(*s))
                    .map(|(_, k)| *k)
                    .collect();
                if kinds.is_empty() {
                    warn!(socket = %path.display(), "A pluggable component serves none of the known component services; skipped");
                    return None;
                }
                info!(socket = %path.display(), r#type = %name, services = ?services, "Discovered a pluggable component");
                Some(Found {
                    name,
                    socket: Socket { path, services },
                    kinds,
                })
            }
            Ok(Err(error)) => {
                warn!(socket = %path.display(), %error, "A pluggable component socket did not answer reflection; skipped");
                None
            }
            Err(_) => {
                warn!(socket = %path.display(), "A pluggable component socket did not answer reflection in time; skipped");
                None
            }
        }
    });
    futures::future::join_all(probes).await.into_iter().flatten().collect()
}

/// A socket's type name: its file name without the extension.
fn type_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    (!stem.is_empty()).then(|| stem.to_owned())
}

/// The services a socket lists through gRPC reflection (v1alpha, which
/// Dapr's and Layotto's SDKs serve).
async fn list_services(path: &Path) -> Result<Vec<String>, String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};

    let channel = dial(path).await.map_err(|e| e.to_string())?;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let answer: Option<ServerReflectionResponse> = answers.message().await.map_err(|s| s.message().to_owned())?;
    match answer.and_then(|a| a.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        Some(MessageResponse::ErrorResponse(e)) => Err(e.error_message),
        _ => Err("no list of services in the reflection answer".into()),
    }
}

/// A channel to a unix socket, connected now.
async fn dial(path: &Path) -> Result<Channel, tonic::transport::Error> {
    endpoint().connect_with_connector(connector(path)).await
}

fn endpoint() -> Endpoint {
    // The authority is never used to route: every connection goes to the
    // socket.
    Endpoint::from_static("http://pluggable.component").connect_timeout(CONNECT_TIMEOUT)
}

fn connector(
    path: &Path,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let path = path.to_owned();
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}

/// Stamps every call with the component instance's name.
#[derive(Clone)]
pub struct InstanceHeader(MetadataValue<Ascii>);

impl Interceptor for InstanceHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(INSTANCE_HEADER, self.0.clone());
        Ok(request)
    }
}

/// A connection to a component process, every call naming the instance.
pub type Connection = InterceptedService<Channel, InstanceHeader>;

/// The connection an instance's client uses: dialled now, so that a
/// process that is not listening fails the build (and the supervisor
/// retries it); reconnected by the channel when the process restarts.
pub async fn connect(kind: Kind, spec: &ComponentSpec) -> Result<(Connection, Socket), BuildError> {
    let socket = registry().get(kind, &spec.type_name).ok_or_else(|| {
        BuildError(format!(
            "no pluggable component '{}' was discovered for {kind} in {}",
            spec.type_name,
            socket_folders()
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    })?;
    let header = MetadataValue::try_from(spec.name.as_str())
        .map_err(|_| BuildError(format!("component name '{}' cannot travel in a gRPC header", spec.name)))?;
    let channel = dial(&socket.path)
        .await
        .map_err(|e| BuildError(format!("cannot connect to {}: {e}", socket.path.display())))?;
    Ok((InterceptedService::new(channel, InstanceHeader(header)), socket))
}

/// What a pluggable type checks of its metadata: nothing; the component
/// process reads it in `Init`.
pub fn any_metadata(_spec: &ComponentSpec) -> Vec<MetadataError> {
    Vec::new()
}

/// A component process's error as a component error: its code kept where
/// the API has the same meaning, its message passed on.
pub fn error(status: tonic::Status) -> ComponentError {
    let message = if status.message().is_empty() {
        format!("the pluggable component answered {:?}", status.code())
    } else {
        status.message().to_owned()
    };
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ComponentError::InvalidArgument(message),
        tonic::Code::NotFound => ComponentError::NotFound(message),
        tonic::Code::FailedPrecondition | tonic::Code::Aborted | tonic::Code::AlreadyExists => {
            ComponentError::Conflict(message)
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ComponentError::Unavailable(message),
        tonic::Code::Unimplemented => ComponentError::Unsupported(message),
        _ => ComponentError::Internal(message),
    }
}

/// A build's failure to initialise the component process.
pub fn init_failed(status: tonic::Status) -> BuildError {
    BuildError(format!("the pluggable component refused Init: {}", status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_named_by_its_file_name_without_the_extension() {
        assert_eq!(
            type_name(Path::new("/tmp/s/my-store.sock")).as_deref(),
            Some("my-store")
        );
        assert_eq!(type_name(Path::new("/tmp/s/plain")).as_deref(), Some("plain"));
        assert_eq!(type_name(Path::new("/tmp/s/.sock")).as_deref(), Some(".sock"));
    }

    #[test]
    fn status_codes_keep_their_meaning() {
        assert!(matches!(
            error(tonic::Status::failed_precondition("etag")),
            ComponentError::Conflict(_)
        ));
        assert!(matches!(
            error(tonic::Status::invalid_argument("etag")),
            ComponentError::InvalidArgument(_)
        ));
        assert!(matches!(
            error(tonic::Status::unavailable("")),
            ComponentError::Unavailable(m) if m.contains("Unavailable")
        ));
    }

    #[tokio::test]
    async fn a_missing_folder_holds_nothing_and_other_files_are_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(discover(&[dir.path().join("absent")]).await.is_empty());
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        assert!(discover(&[dir.path().to_owned()]).await.is_empty());
    }

    #[tokio::test]
    async fn a_socket_that_does_not_answer_is_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("silent.sock");
        // Bound but never accepted: the dial succeeds, reflection does not.
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(listener);
        assert!(discover(&[dir.path().to_owned()]).await.is_empty());
        assert!(!registry().contains(Kind::State, "silent"));
    }
}

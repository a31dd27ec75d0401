//! Building blocks, the component traits they define, and THE registry that
//! maps a configured `type` to the code that builds it.
//!
//! Adding a component type is one file under `components/<block>/` and one
//! line in that block's table below. Nothing here knows about gRPC or actors:
//! a component is plain async code over a backend client. Types discovered at
//! run time (pluggable components, see [`pluggable`]) join through each
//! block's `pluggable` entry.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

pub mod bindings;
pub mod configuration;
pub mod etcd_client;
#[cfg(feature = "test-components")]
pub mod faulty;
pub mod file;
pub mod hello;
pub mod lock;
pub mod meta;
pub mod name_resolution;
pub mod pluggable;
pub mod pubsub;
pub mod redis_client;
pub mod secrets;
pub mod sequencer;
pub mod sql;
pub mod state;
pub mod tasks;
pub mod wasm;
pub mod zookeeper_client;

pub use tasks::Tasks;

/// THE block table: one row per building block, in start-up order
/// (Layotto's: secrets first, so that other components can draw their
/// credentials from them). Everything that lists the blocks derives from
/// it: the [`Kind`] enum and its config section names, each block's
/// marker type and type registry, and, through [`with_blocks!`], the
/// router (`actors::Router`), the supervisor's slots and the order in
/// which block supervisors start.
///
/// `reserved` lists sections Layotto defines that no component type
/// implements yet: validation rejects any type in them. Then one row per
/// block: `Block (Kind, "section", router_field): dyn ComponentTrait =
/// [registered types];`.
macro_rules! block_table {
    (
        reserved: [$($rkind:ident => $rsection:literal),* $(,)?];
        $(
            $(#[$doc:meta])*
            $block:ident ($kind:ident, $section:literal, $field:ident): dyn $component:path = [$($types:tt)*] $(pluggable $plug:path)?;
        )*
    ) => {
        /// The building blocks, named as the sections of Layotto's
        /// `grpc_config`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $($kind,)*
            $($rkind,)*
        }

        impl Kind {
            /// Every kind, in start-up order.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)* $(Kind::$rkind,)*];

            /// The config section, and the prefix of `"<kind>/<name>"`
            /// status keys.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$kind => $section,)*
                    $(Kind::$rkind => $rsection,)*
                }
            }

            pub fn from_section(section: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|k| k.as_str() == section)
            }

            /// The type names a config may use for this kind: the
            /// registered ones, then the discovered pluggable ones.
            pub fn known_types(self) -> Vec<String> {
                match self {
                    $(Kind::$kind => <$block as BuildingBlock>::type_names(),)*
                    $(Kind::$rkind => Vec::new(),)*
                }
            }

            /// Whether `type_name` is a type of this kind.
            pub fn has_type(self, type_name: &str) -> bool {
                match self {
                    $(Kind::$kind => <$block as BuildingBlock>::entry(type_name).is_some(),)*
                    $(Kind::$rkind => false,)*
                }
            }

            /// The module of type `type_name` of this kind (the target
            /// of its log events), when it is registered.
            pub fn type_module(self, type_name: &str) -> Option<&'static str> {
                let path = match self {
                    $(Kind::$kind => <$block as BuildingBlock>::entry(type_name).map(|t| (t.rust_type)()),)*
                    $(Kind::$rkind => None,)*
                }?;
                path.rsplit_once("::").map(|(module, _)| module)
            }

            /// Checks a component's metadata without I/O; `None` when
            /// `type` is not registered for this kind.
            pub fn validate(self, spec: &ComponentSpec) -> Option<Vec<MetadataError>> {
                match self {
                    $(Kind::$kind => <$block as BuildingBlock>::entry(&spec.type_name).map(|t| (t.validate)(spec)),)*
                    $(Kind::$rkind => None,)*
                }
            }
        }

        $(
            $(#[$doc])*
            pub struct $block;

            impl BuildingBlock for $block {
                type Component = dyn $component;
                const KIND: Kind = Kind::$kind;
                const TYPES: &'static [TypeEntry<Self::Component>] = &[$($types)*];
                $(const PLUGGABLE: Option<&'static TypeEntry<Self::Component>> = Some(&$plug);)?
            }
        )*

        /// Calls `$callback! { (Block, router_field), ... }` with every row
        /// of the block table, in start-up order: how the router, the
        /// supervisor's slots and anything else that lists every block are
        /// generated from the one table. (In scope for the modules declared
        /// after `components` in `lib.rs`.)
        macro_rules! with_blocks {
            ($callback:ident) => {
                $callback! { $(($block, $field)),* }
            };
        }
    };
}

block_table! {
    reserved: [];
    /// The `secret_store` building block.
    SecretStores (SecretStore, "secret_store", secret_stores): dyn secrets::SecretStore =
        [secrets::env::TYPE, secrets::file::TYPE] pluggable secrets::pluggable::TYPE;
    /// The `config_store` building block.
    ConfigStores (ConfigStore, "config_store", config_stores): dyn configuration::ConfigStore = [
        configuration::memory::TYPE,
        configuration::file::TYPE,
        configuration::redis::TYPE,
        configuration::postgres::TYPE,
        configuration::etcd::TYPE,
    ];
    /// The `name_resolution` building block: where other apps' sidecars
    /// listen, for service invocation.
    NameResolvers (NameResolution, "name_resolution", name_resolvers): dyn name_resolution::NameResolver = [
        name_resolution::static_list::TYPE,
        name_resolution::dns::DNS,
        name_resolution::dns::KUBERNETES,
        name_resolution::sqlite::TYPE,
        name_resolution::redis::TYPE,
        name_resolution::postgres::TYPE,
    ];
    /// The `hellos` building block.
    Hellos (Hellos, "hellos", hellos): dyn hello::HelloService = [
        hello::helloworld::TYPE,
        #[cfg(feature = "test-components")]
        faulty::HELLO,
    ] pluggable hello::pluggable::TYPE;
    /// The `state` building block.
    State (State, "state", state): dyn state::StateStore = [
        state::memory::TYPE,
        state::sqlite::TYPE,
        state::redis::TYPE,
        state::postgres::TYPE,
        state::mysql::TYPE,
        state::zookeeper::TYPE,
    ] pluggable state::pluggable::TYPE;
    /// The `pub_subs` building block.
    PubSubs (PubSubs, "pub_subs", pubsubs): dyn pubsub::PubSub = [
        pubsub::memory::TYPE,
        pubsub::redis::TYPE,
        pubsub::rabbitmq::TYPE,
        pubsub::nats::TYPE,
        pubsub::mqtt::TYPE,
    ] pluggable pubsub::pluggable::TYPE;
    /// The `file` building block.
    FileStores (File, "file", files): dyn file::FileStore = [
        file::local::TYPE,
        file::s3::AWS_S3,
        file::s3::MINIO,
    ];
    /// The `bindings` building block: output bindings.
    Bindings (Bindings, "bindings", bindings): dyn bindings::Binding = [
        bindings::http::TYPE,
        bindings::redis::TYPE,
        bindings::localstorage::TYPE,
        bindings::sql::POSTGRESQL,
        bindings::sql::POSTGRES_ALIAS,
        bindings::sql::MYSQL_TYPE,
        bindings::rabbitmq::TYPE,
        bindings::mqtt::TYPE,
        bindings::mqtt::MQTT3,
        bindings::cron::TYPE,
        bindings::wasm::TYPE,
    ] pluggable bindings::pluggable::TYPE;
    /// The `lock` building block.
    Locks (Lock, "lock", locks): dyn lock::LockStore = [
        lock::memory::TYPE,
        lock::sqlite::TYPE,
        lock::redis::TYPE,
        lock::postgres::TYPE,
        lock::etcd::TYPE,
        lock::zookeeper::TYPE,
        lock::redis_cluster::TYPE,
    ];
    /// The `sequencer` building block.
    Sequencers (Sequencer, "sequencer", sequencers): dyn sequencer::SequencerStore = [
        sequencer::memory::TYPE,
        sequencer::sqlite::TYPE,
        sequencer::redis::TYPE,
        sequencer::postgres::TYPE,
        sequencer::mysql::TYPE,
        sequencer::etcd::TYPE,
        sequencer::zookeeper::TYPE,
        sequencer::snowflake::TYPE,
    ];
    /// The `wasm` building block: functions compiled to WebAssembly.
    Functions (Wasm, "wasm", functions): dyn wasm::Function = [
        wasm::wasmer::TYPE,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured component instance, as validated from the config file.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentSpec {
    /// Instance name: the key in its config section, used by clients as
    /// `store_name`, `pubsub_name`, `service_name`, ...
    pub name: String,
    /// Registered type, e.g. `redis`.
    pub type_name: String,
    /// Backend settings, spelled as Dapr's component metadata.
    pub metadata: BTreeMap<String, String>,
    /// Requests this component may hold at once (queued plus running);
    /// overrides `supervisor.queue_capacity`.
    pub queue_capacity: Option<usize>,
    /// A rate limit on every call to this component, from any API
    /// (`flow_control = { threshold, stat_interval, control_behavior, ... }`
    /// in its section, with the keys of a `server.flow_control` rule but
    /// `resource`); a call over it is answered RESOURCE_EXHAUSTED (HTTP
    /// 429). Default none.
    pub flow_control: Option<crate::config::FlowRule>,
    /// The application's id (`app.app_id`), for components that scope by it.
    pub app_id: String,
    /// Names this sidecar among others sharing a backend, stable across its
    /// restarts: `<hostname>-<gRPC port>`. Set at start-up.
    pub instance_id: String,
    /// Metadata values to fetch from secret stores at start-up.
    pub secret_refs: Vec<secrets::refs::SecretRef>,
    /// `host:port` where other sidecars reach this one's internal
    /// (service invocation) listener, which name resolvers register; `None`
    /// without one. Set at start-up.
    pub advertise: Option<String>,
}

impl ComponentSpec {
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Self {
        ComponentSpec {
            name: name.into(),
            type_name: type_name.into(),
            metadata: BTreeMap::new(),
            queue_capacity: None,
            flow_control: None,
            app_id: String::new(),
            instance_id: String::new(),
            secret_refs: Vec::new(),
            advertise: None,
        }
    }

    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }
}

/// A metadata problem found by a type's `validate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataError {
    /// The metadata key at fault.
    pub key: String,
    pub message: String,
}

impl MetadataError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        MetadataError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// What a component call can fail with. The block services turn each
/// variant into a `BlockError` of the same kind, which each front end maps
/// in one place (`api::grpc::status` for gRPC).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComponentError {
    /// The request is malformed for this component.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named item does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An optimistic-concurrency check failed (etag mismatch, ...).
    #[error("{0}")]
    Conflict(String),
    /// The backend could not be reached; the call may succeed if retried.
    #[error("{0}")]
    Unavailable(String),
    /// The component cannot serve any more calls (a broken connection, a
    /// lost session): the supervisor restarts it with a fresh client.
    #[error("{0}")]
    Fatal(String),
    /// The component does not support this operation.
    #[error("{0}")]
    Unsupported(String),
    /// The component cannot serve this request as it is configured
    /// (a sequencer's `biggerThan` floor above every id it can make):
    /// retrying will not help until the configuration changes.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Anything else the backend reported.
    #[error("{0}")]
    Internal(String),
}

impl ComponentError {
    /// Whether the supervisor must restart the component after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ComponentError::Fatal(_))
    }
}

/// Why a component could not be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BuildError(pub String);

/// What every component offers its supervisor.
#[async_trait::async_trait]
pub trait Component: Send + Sync + 'static {
    /// Proves the backend is usable by doing what real use does (Redis
    /// `PING`, Postgres `SELECT 1`, an AMQP channel open).
    async fn health_check(&self) -> Result<(), ComponentError>;

    /// Releases the backend client. Called once when the component's actor
    /// stops; the next start builds a new client.
    async fn close(&self) {}
}

/// What a build gets: the component's spec, the handle through which it
/// links background work to its actor, and what it keeps across restarts.
pub struct BuildContext {
    pub spec: ComponentSpec,
    pub tasks: Tasks,
    pub retained: Retained,
}

/// What a component keeps across its restarts, as a Redis server keeps its
/// data when its client reconnects: an in-memory store's data. Held by the
/// component's slot for the runtime's life and handed to every build, so a
/// restart (after a panic, say) loses nothing; gone when the runtime stops.
#[derive(Clone, Default)]
pub struct Retained(Arc<std::sync::Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>>);

impl Retained {
    /// The value kept by an earlier build, or `init()`'s, kept from now on.
    pub fn get_or_init<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = kept.as_ref().and_then(|k| k.clone().downcast::<T>().ok()) {
            return existing;
        }
        let fresh = Arc::new(init());
        *kept = Some(fresh.clone());
        fresh
    }
}

/// Builds one component instance. Runs on every (re)start, so a restart
/// never reuses a dead connection.
pub type BuildFn<C> = fn(BuildContext) -> BoxFuture<'static, Result<Arc<C>, BuildError>>;

/// A component type whose metadata is a typed struct: validation parses
/// it, and the build receives the parsed value.
pub trait ComponentType<C: ?Sized>: 'static {
    /// The `type` value in config.
    const NAME: &'static str;
    /// What the type reads from its metadata.
    type Metadata: meta::Metadata;

    fn build(ctx: BuildContext, metadata: Self::Metadata) -> BoxFuture<'static, Result<Arc<C>, BuildError>>;
}

impl<C: ?Sized + Send + Sync + 'static> TypeEntry<C> {
    /// The registry entry of a typed component type.
    pub const fn of<T: ComponentType<C>>() -> TypeEntry<C> {
        TypeEntry {
            name: T::NAME,
            rust_type: std::any::type_name::<T>,
            validate: meta::validate::<T::Metadata>,
            build: build_typed::<C, T>,
        }
    }
}

fn build_typed<C: ?Sized + Send + Sync + 'static, T: ComponentType<C>>(
    ctx: BuildContext,
) -> BoxFuture<'static, Result<Arc<C>, BuildError>> {
    match meta::parse_for_build::<T::Metadata>(&ctx.spec) {
        Ok(metadata) => T::build(ctx, metadata),
        Err(errors) => {
            let problems: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.key, e.message)).collect();
            let error = BuildError(format!("bad metadata: {}", problems.join("; ")));
            Box::pin(std::future::ready(Err(error)))
        }
    }
}

/// One registered component type.
pub struct TypeEntry<C: ?Sized> {
    /// The `type` value in config.
    pub name: &'static str,
    /// The type's Rust path (`layotto::components::lock::redis::RedisLockType`):
    /// its module is the target of the component's own log events.
    pub rust_type: fn() -> &'static str,
    /// Pure metadata checks, run by `layotto validate` and at start-up.
    pub validate: fn(&ComponentSpec) -> Vec<MetadataError>,
    pub build: BuildFn<C>,
}

/// Ties a kind to its component trait and its type table.
pub trait BuildingBlock: Send + Sync + 'static {
    /// The component trait object, e.g. `dyn HelloService`.
    type Component: ?Sized + Component;
    const KIND: Kind;
    const TYPES: &'static [TypeEntry<Self::Component>];
    /// What a discovered pluggable type of this block builds with (see
    /// [`pluggable`]); `None` where no pluggable protocol exists.
    const PLUGGABLE: Option<&'static TypeEntry<Self::Component>> = None;

    /// The entry of type `name`: a registered type, else a discovered
    /// pluggable one.
    fn entry(name: &str) -> Option<&'static TypeEntry<Self::Component>> {
        find(Self::TYPES, name).or_else(|| Self::PLUGGABLE.filter(|_| pluggable::registry().contains(Self::KIND, name)))
    }

    /// The registered type names, then the discovered pluggable ones.
    fn type_names() -> Vec<String> {
        let mut names: Vec<String> = Self::TYPES.iter().map(|t| t.name.to_owned()).collect();
        if Self::PLUGGABLE.is_some() {
            names.extend(
                pluggable::registry()
                    .names(Self::KIND)
                    .into_iter()
                    .filter(|n| find(Self::TYPES, n).is_none()),
            );
        }
        names
    }
}

/// Looks a type up in a block's table.
pub fn find<'a, C: ?Sized>(types: &'a [TypeEntry<C>], name: &str) -> Option<&'a TypeEntry<C>> {
    types.iter().find(|t| t.name == name)
}

/// Dapr's name for a component type: `state.redis`, `pubsub.rabbitmq`,
/// `secretstores.local.file`, ...
pub fn dapr_type(kind: Kind, type_name: &str) -> String {
    let prefix = match kind {
        Kind::State => "state",
        Kind::PubSubs => "pubsub",
        Kind::Lock => "lock",
        Kind::SecretStore => "secretstores",
        Kind::ConfigStore => "configuration",
        Kind::Bindings => "bindings",
        Kind::NameResolution => "nameresolution",
        other => other.as_str(),
    };
    let type_name = match (kind, type_name) {
        (Kind::PubSubs, "nats") => "jetstream",
        (Kind::PubSubs, "mqtt") => "mqtt3",
        (_, other) => other,
    };
    format!("{prefix}.{type_name}")
}

/// How keys are scoped in the backend: Layotto's `keyPrefix` metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPrefix {
    /// The bare key (Layotto's default).
    None,
    /// `<app id>||key`.
    AppId,
    /// `<store name>||key`.
    Name,
    /// `<literal>||key`.
    Literal(String),
}

/// The metadata key that sets the prefix.
pub const KEY_PREFIX: &str = "keyPrefix";
/// Separates the prefix from the key.
pub const PREFIX_SEPARATOR: &str = "||";

impl KeyPrefix {
    /// The component's prefix; `default` when `keyPrefix` is not set (the
    /// state API's default is `none`, lock's and sequencer's `appid`, as in
    /// Layotto).
    pub fn from_spec(spec: &ComponentSpec, default: KeyPrefix) -> KeyPrefix {
        match spec.meta(KEY_PREFIX).map(str::trim) {
            None | Some("") => default,
            Some("none") => KeyPrefix::None,
            Some("appid") => KeyPrefix::AppId,
            Some("name") => KeyPrefix::Name,
            Some(literal) => KeyPrefix::Literal(literal.to_owned()),
        }
    }

    /// The prefix for a store `store` of app `app_id`, or `None` when keys
    /// go bare. An empty app id means no prefix, as in Layotto.
    pub fn prefix<'a>(&'a self, app_id: &'a str, store: &'a str) -> Option<&'a str> {
        match self {
            KeyPrefix::None => None,
            KeyPrefix::AppId => Some(app_id).filter(|id| !id.is_empty()),
            KeyPrefix::Name => Some(store),
            KeyPrefix::Literal(literal) => Some(literal),
        }
    }
}

/// The `keyPrefix` key, a section of the metadata of every state, lock and
/// sequencer type. The API layer scopes keys with it (see
/// [`KeyPrefix::from_spec`]); the component only has it checked.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct KeyPrefixSection {
    /// How keys are scoped in the backend: `none`, `appid`, `name`, or a
    /// literal prefix (without `||`). Default: `none` for state, `appid`
    /// for lock and sequencer, as in Layotto.
    #[serde(rename = "keyPrefix", default, deserialize_with = "key_prefix")]
    pub key_prefix: Option<String>,
}

impl meta::Section for KeyPrefixSection {}

fn key_prefix<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    let literal = text.trim();
    if literal.contains(PREFIX_SEPARATOR) {
        return Err(serde::de::Error::custom(format!(
            "'{literal}' must not contain '{PREFIX_SEPARATOR}'"
        )));
    }
    Ok(Some(text))
}

/// Characters of client input an error message quotes at most: an 8 MB key
/// must not make an 8 MB error (which gRPC would refuse to send).
pub const QUOTE_LIMIT: usize = 64;

/// Client input for an error message: at most [`QUOTE_LIMIT`] characters,
/// with an ellipsis and the full length when cut.
pub fn quote(input: &str) -> std::borrow::Cow<'_, str> {
    match input.char_indices().nth(QUOTE_LIMIT) {
        None => std::borrow::Cow::Borrowed(input),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}... ({} bytes)", &input[..end], input.len())),
    }
}

/// Percent-encodes what would break the user-info part of a URL, for
/// building connection URLs from metadata.
pub(crate) fn url_encode(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_follow_layottos_rules() {
        let spec = |p: Option<&str>| {
            let spec = ComponentSpec::new("orders", "in-memory");
            match p {
                Some(p) => spec.with_metadata(KEY_PREFIX, p),
                None => spec,
            }
        };
        assert_eq!(
            KeyPrefix::from_spec(&spec(None), KeyPrefix::None).prefix("app1", "orders"),
            None
        );
        assert_eq!(
            KeyPrefix::from_spec(&spec(Some("none")), KeyPrefix::None).prefix("app1", "orders"),
            None
        );
        assert_eq!(
            KeyPrefix::from_spec(&spec(Some("appid")), KeyPrefix::None).prefix("app1", "orders"),
            Some("app1")
        );
        assert_eq!(
            KeyPrefix::from_spec(&spec(Some("appid")), KeyPrefix::None).prefix("", "orders"),
            None
        );
        assert_eq!(
            KeyPrefix::from_spec(&spec(Some("name")), KeyPrefix::None).prefix("app1", "orders"),
            Some("orders")
        );
        assert_eq!(
            KeyPrefix::from_spec(&spec(Some("shop")), KeyPrefix::None).prefix("app1", "orders"),
            Some("shop")
        );
    }

    #[test]
    fn lock_and_sequencer_default_to_the_app_id() {
        let spec = ComponentSpec::new("locks", "redis");
        assert_eq!(
            KeyPrefix::from_spec(&spec, KeyPrefix::AppId).prefix("app1", "locks"),
            Some("app1")
        );
    }
}

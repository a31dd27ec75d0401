//! `file`: configuration in a YAML or JSON file, nested as
//! `app id -> group -> label -> key -> item`, where an item is its content
//! (a string) or `{ content, tags, metadata }`:
//!
//! ```yaml
//! app1:
//!   default:
//!     default:
//!       timeout: "30s"
//!       feature-x: { content: "on", tags: { owner: payments } }
//! ```
//!
//! The file is watched (polled every `pollInterval`): edits
//! made by hand reach subscribers. Writes through the API rewrite the file
//! atomically, as JSON (which is also valid YAML); a missing file starts
//! empty.
//!
//! Metadata: [`FileKeys`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::task::AbortHandle;
use tracing::warn;

use super::{ConfigEvent, ConfigEvents, ConfigStore, Feed, ItemId, ItemValue, Selector};
use crate::components::meta::{self, Seconds, Section};
use crate::components::tasks::Tasks;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn ConfigStore> = TypeEntry::of::<FileType>();

pub struct FileType;

impl ComponentType<dyn ConfigStore> for FileType {
    const NAME: &'static str = "file";
    type Metadata = FileKeys;

    fn build(ctx: BuildContext, keys: FileKeys) -> BoxFuture<'static, Result<Arc<dyn ConfigStore>, BuildError>> {
        async move { FileConfig::open(keys, &ctx.tasks).map(|f| f as Arc<dyn ConfigStore>) }.boxed()
    }
}

/// What the `file` store reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileKeys {
    /// The file: `.yaml`, `.yml` or `.json`.
    #[serde(deserialize_with = "meta::non_empty")]
    pub path: String,
    /// How often to look for edits made by hand (at least 10ms).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Seconds,
}

fn default_poll_interval() -> Seconds {
    Seconds::millis(500)
}

impl Section for FileKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        let path = &self.path;
        if !matches!(
            Path::new(path).extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            errors.push(MetadataError::new(
                "path",
                format!("'{path}' must end in .yaml, .yml or .json"),
            ));
        }
    }
}

type Items = BTreeMap<ItemId, ItemValue>;

struct Shared {
    path: PathBuf,
    items: Mutex<Items>,
    feed: Feed,
}

impl Shared {
    fn items(&self) -> MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the file again and publishes what differs from what we hold.
    fn reload(&self) {
        let fresh = match read(&self.path) {
            Ok(items) => items,
            Err(error) => {
                // Half-written by an editor, perhaps: try again next time.
                warn!(path = %self.path.display(), %error, "Cannot read the configuration file");
                return;
            }
        };
        let mut items = self.items();
        for (id, value) in &fresh {
            if items.get(id) != Some(value) {
                self.feed.publish(ConfigEvent::Changed(id.clone(), Some(value.clone())));
            }
        }
        for id in items.keys() {
            if !fresh.contains_key(id) {
                self.feed.publish(ConfigEvent::Changed(id.clone(), None));
            }
        }
        *items = fresh;
    }
}

pub struct FileConfig {
    shared: Arc<Shared>,
    poller: AbortHandle,
}

impl FileConfig {
    fn open(keys: FileKeys, tasks: &Tasks) -> Result<Arc<FileConfig>, BuildError> {
        let path = PathBuf::from(keys.path);
        let items = read(&path).map_err(|e| BuildError(format!("file config store: {e}")))?;
        let every: Duration = keys.poll_interval.into();
        let shared = Arc::new(Shared {
            path,
            items: Mutex::new(items),
            feed: Feed::default(),
        });
        let watched = shared.clone();
        let poller = tasks.spawn("file poller", async move {
            let mut seen = fingerprint(&watched.path);
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            loop {
                ticks.tick().await;
                let now = fingerprint(&watched.path);
                if now != seen {
                    seen = now;
                    watched.reload();
                }
            }
        });
        Ok(Arc::new(FileConfig { shared, poller }))
    }

    /// Writes `items` to the file: a temporary file renamed into place.
    fn write(&self, items: &Items) -> Result<(), ComponentError> {
        let path = &self.shared.path;
        let text =
            serde_json::to_string_pretty(&to_tree(items)).map_err(|e| ComponentError::Internal(e.to_string()))?;
        let temp = path.with_extension("layotto-tmp");
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, path))
            .map_err(|e| ComponentError::Unavailable(format!("cannot write {}: {e}", path.display())))
    }
}

impl Drop for FileConfig {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// What changes when the file does: its length and modification time.
fn fingerprint(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

fn read(path: &Path) -> Result<Items, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Items::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Items::new());
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => config::FileFormat::Json,
        _ => config::FileFormat::Yaml,
    };
    let tree: Value = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| format!("{} does not parse: {e}", path.display()))?;
    from_tree(&tree).map_err(|e| format!("{}: {e}", path.display()))
}

fn from_tree(tree: &Value) -> Result<Items, String> {
    let mut items = Items::new();
    let level = |v: &Value, what: &str| -> Result<Map<String, Value>, String> {
        match v {
            Value::Object(m) => Ok(m.clone()),
            Value::Null => Ok(Map::new()),
            other => Err(format!("expected a table of {what}, found {other}")),
        }
    };
    for (app_id, groups) in level(tree, "app ids")? {
        for (group, labels) in level(&groups, "groups")? {
            for (label, keys) in level(&labels, "labels")? {
                for (key, item) in level(&keys, "keys")? {
                    let value = match item {
                        Value::String(content) => ItemValue {
                            content,
                            ..Default::default()
                        },
                        Value::Object(_) => {
                            serde_json::from_value(item).map_err(|e| format!("{app_id}.{group}.{label}.{key}: {e}"))?
                        }
                        other => ItemValue {
                            content: other.to_string(),
                            ..Default::default()
                        },
                    };
                    let id = ItemId {
                        app_id: app_id.clone(),
                        group: group.clone(),
                        label: label.clone(),
                        key,
                    };
                    items.insert(id, value);
                }
            }
        }
    }
    Ok(items)
}

fn to_tree(items: &Items) -> Value {
    let mut tree = Map::new();
    for (id, value) in items {
        let nest = |m: &mut Map<String, Value>, k: &str| -> Map<String, Value> {
            match m.remove(k) {
                Some(Value::Object(inner)) => inner,
                _ => Map::new(),
            }
        };
        let mut groups = nest(&mut tree, &id.app_id);
        let mut labels = nest(&mut groups, &id.group);
        let mut keys = nest(&mut labels, &id.label);
        let item = if value.tags.is_empty() && value.metadata.is_empty() {
            Value::String(value.content.clone())
        } else {
            serde_json::to_value(value).unwrap_or(Value::Null)
        };
        keys.insert(id.key.clone(), item);
        labels.insert(id.label.clone(), Value::Object(keys));
        groups.insert(id.group.clone(), Value::Object(labels));
        tree.insert(id.app_id.clone(), Value::Object(groups));
    }
    Value::Object(tree)
}

#[async_trait::async_trait]
impl Component for FileConfig {
    async fn health_check(&self) -> Result<(), ComponentError> {
        match std::fs::metadata(&self.shared.path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ComponentError::Unavailable(format!(
                "{}: {e}",
                self.shared.path.display()
            ))),
        }
    }

    async fn close(&self) {
        self.poller.abort();
    }
}

#[async_trait::async_trait]
impl ConfigStore for FileConfig {
    async fn get(&self, selector: &Selector) -> Result<Vec<(ItemId, ItemValue)>, ComponentError> {
        Ok(self
            .shared
            .items()
            .iter()
            .filter(|(id, _)| selector.matches(id))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect())
    }

    async fn save(&self, items: Vec<(ItemId, ItemValue)>) -> Result<(), ComponentError> {
        let mut all = self.shared.items();
        let mut next = all.clone();
        for (id, value) in &items {
            next.insert(id.clone(), value.clone());
        }
        self.write(&next)?;
        *all = next;
        for (id, value) in items {
            self.shared.feed.publish(ConfigEvent::Changed(id, Some(value)));
        }
        Ok(())
    }

    async fn delete(&self, ids: Vec<ItemId>) -> Result<(), ComponentError> {
        let mut all = self.shared.items();
        let mut next = all.clone();
        let removed: Vec<ItemId> = ids.into_iter().filter(|id| next.remove(id).is_some()).collect();
        if removed.is_empty() {
            return Ok(());
        }
        self.write(&next)?;
        *all = next;
        for id in removed {
            self.shared.feed.publish(ConfigEvent::Changed(id, None));
        }
        Ok(())
    }

    async fn watch(&self) -> Result<ConfigEvents, ComponentError> {
        Ok(self.shared.feed.watch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_round_trips() {
        let tree: Value =
            serde_json::from_str(r#"{"app1": {"g": {"l": {"a": "1", "b": {"content": "2", "tags": {"t": "x"}}}}}}"#)
                .expect("json");
        let items = from_tree(&tree).expect("items");
        assert_eq!(items.len(), 2);
        let b = ItemId {
            app_id: "app1".into(),
            group: "g".into(),
            label: "l".into(),
            key: "b".into(),
        };
        assert_eq!(items[&b].tags.get("t").map(String::as_str), Some("x"));
        assert_eq!(from_tree(&to_tree(&items)).expect("again"), items);
    }
}

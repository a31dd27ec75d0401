//! The Configuration block: get, save, delete and subscribe.
//!
//! Items are scoped by app id (the request's, else the sidecar's), group
//! and label (blank: `default`, as in Layotto). A subscription first gets
//! the current values of what it watches, then every change, in order,
//! from any writer of the store; a delete arrives as an item with empty
//! content and metadata `deleted = "true"`. A subscription outlives its
//! store's restarts and lost change feeds: each time, it is sent the
//! current values again (and deletes for what vanished).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::{BlockError, quote};
use crate::actors::ComponentHandle;
use crate::actors::configuration::{DeleteItems, GetItems, SaveItems, Watch};
use crate::api::ApiContext;
use crate::components::ConfigStores;
use crate::components::configuration::{ConfigEvent, DEFAULT_GROUP, DEFAULT_LABEL, ItemId, ItemValue, Selector};
use crate::supervisor::backoff::Backoff;

/// Metadata key marking a deleted item in a subscription.
pub const DELETED: &str = "deleted";
/// The field that names the store, in routing errors.
const STORE_NAME: &str = "store_name";
/// Changes a subscriber has not taken yet, before its subscriptions wait.
const BUFFERED_CHANGES: usize = 64;

/// Which items of a store a request means: every key of the app, group and
/// label when `keys` is empty.
#[derive(Clone, Debug, Default)]
pub struct ConfigurationQuery {
    pub store: String,
    /// Blank: the sidecar's app id.
    pub app_id: String,
    /// Blank: `default`.
    pub group: String,
    /// Blank: `default`.
    pub label: String,
    pub keys: Vec<String>,
}

/// One item, as read, written or heard of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigurationItem {
    pub key: String,
    pub content: String,
    pub group: String,
    pub label: String,
    pub tags: HashMap<String, String>,
    pub metadata: HashMap<String, String>,
}

/// Items to write under one app id.
#[derive(Clone, Debug, Default)]
pub struct SaveConfiguration {
    pub store: String,
    /// Blank: the sidecar's app id.
    pub app_id: String,
    /// Blank group or label: `default`.
    pub items: Vec<ConfigurationItem>,
}

/// What one subscription has heard: current values after it opens or
/// resyncs, then each change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    pub store: String,
    pub app_id: String,
    pub items: Vec<ConfigurationItem>,
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value.to_owned()
    }
}

fn no_separator(value: &str, field: &str) -> Result<(), BlockError> {
    if value.contains("||") {
        Err(BlockError::invalid(format!(
            "{field} '{}' must not contain '||'",
            quote(value)
        )))
    } else {
        Ok(())
    }
}

/// The selector of a query, with the defaults filled in.
pub(crate) fn selector(own_app_id: &str, query: ConfigurationQuery) -> Result<Selector, BlockError> {
    let selector = Selector {
        app_id: or_default(&query.app_id, own_app_id),
        group: or_default(&query.group, DEFAULT_GROUP),
        label: or_default(&query.label, DEFAULT_LABEL),
        keys: query.keys,
    };
    no_separator(&selector.app_id, "app_id")?;
    no_separator(&selector.group, "group")?;
    no_separator(&selector.label, "label")?;
    if selector.keys.iter().any(String::is_empty) {
        return Err(BlockError::invalid("keys holds an empty key"));
    }
    Ok(selector)
}

/// The items to write, with the defaults filled in.
pub(crate) fn items_to_save(own_app_id: &str, req: SaveConfiguration) -> Result<Vec<(ItemId, ItemValue)>, BlockError> {
    if req.items.is_empty() {
        return Err(BlockError::invalid("items is empty"));
    }
    let app_id = or_default(&req.app_id, own_app_id);
    no_separator(&app_id, "app_id")?;
    let mut items = Vec::with_capacity(req.items.len());
    for (i, it) in req.items.into_iter().enumerate() {
        if it.key.is_empty() {
            return Err(BlockError::invalid(format!("items[{i}].key is empty")));
        }
        let id = ItemId {
            app_id: app_id.clone(),
            group: or_default(&it.group, DEFAULT_GROUP),
            label: or_default(&it.label, DEFAULT_LABEL),
            key: it.key,
        };
        no_separator(&id.group, "group")?;
        no_separator(&id.label, "label")?;
        let value = ItemValue {
            content: it.content,
            tags: it.tags.into_iter().collect(),
            metadata: it.metadata.into_iter().collect(),
        };
        items.push((id, value));
    }
    Ok(items)
}

/// The items a delete names: it must name at least one key.
pub(crate) fn items_to_delete(own_app_id: &str, query: ConfigurationQuery) -> Result<Vec<ItemId>, BlockError> {
    if query.keys.is_empty() {
        return Err(BlockError::invalid("keys is empty; name the keys to delete"));
    }
    let selector = selector(own_app_id, query)?;
    Ok(selector.keys.iter().map(|k| selector.id(k)).collect())
}

fn item(id: ItemId, value: ItemValue) -> ConfigurationItem {
    ConfigurationItem {
        key: id.key,
        content: value.content,
        group: id.group,
        label: id.label,
        tags: value.tags.into_iter().collect(),
        metadata: value.metadata.into_iter().collect(),
    }
}

fn deleted(id: ItemId) -> ConfigurationItem {
    ConfigurationItem {
        key: id.key,
        group: id.group,
        label: id.label,
        metadata: [(DELETED.to_owned(), "true".to_owned())].into(),
        ..Default::default()
    }
}

pub async fn get(ctx: &ApiContext, query: ConfigurationQuery) -> Result<Vec<ConfigurationItem>, BlockError> {
    let store = ctx.router.config_stores.get(STORE_NAME, &query.store)?;
    let selector = selector(&ctx.app.app_id, query)?;
    let items = store.call(GetItems(selector)).await?;
    Ok(items.into_iter().map(|(id, v)| item(id, v)).collect())
}

pub async fn save(ctx: &ApiContext, req: SaveConfiguration) -> Result<(), BlockError> {
    let store = ctx.router.config_stores.get(STORE_NAME, &req.store)?;
    let items = items_to_save(&ctx.app.app_id, req)?;
    Ok(store.call(SaveItems(items)).await?)
}

pub async fn delete(ctx: &ApiContext, query: ConfigurationQuery) -> Result<(), BlockError> {
    let store = ctx.router.config_stores.get(STORE_NAME, &query.store)?;
    let ids = items_to_delete(&ctx.app.app_id, query)?;
    Ok(store.call(DeleteItems(ids)).await?)
}

/// Whether `query` could be subscribed to: its store exists and its
/// selector is well formed. (A stream subscription checks this before it
/// opens, so that a bad request is an error status, not a broken stream.)
pub fn check(ctx: &ApiContext, query: &ConfigurationQuery) -> Result<(), BlockError> {
    ctx.router.config_stores.get(STORE_NAME, &query.store)?;
    selector(&ctx.app.app_id, query.clone()).map(|_| ())
}

/// Subscriptions opened by id (Dapr's SubscribeConfiguration), so that
/// UnsubscribeConfiguration can end one.
#[derive(Default)]
pub struct SubscriptionIds(std::sync::Mutex<HashMap<String, (String, tokio::sync::oneshot::Sender<()>)>>);

impl SubscriptionIds {
    /// Registers a new subscription on `store`: its id, and what resolves
    /// when it is unsubscribed.
    pub fn open(&self, store: &str) -> (String, tokio::sync::oneshot::Receiver<()>) {
        let id = uuid::Uuid::new_v4().to_string();
        let (end, ended) = tokio::sync::oneshot::channel();
        self.lock().insert(id.clone(), (store.to_owned(), end));
        (id, ended)
    }

    /// Forgets `id` once its stream is over.
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, tokio::sync::oneshot::Sender<()>)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends the subscription `id` on `store`: false when there is none.
pub fn unsubscribe(ctx: &ApiContext, store: &str, id: &str) -> Result<bool, BlockError> {
    ctx.router.config_stores.get(STORE_NAME, store)?;
    if id.is_empty() {
        return Err(BlockError::invalid("id is empty; name the subscription to end"));
    }
    let mut open = ctx.config_subscriptions.lock();
    match open.get(id) {
        Some((on, _)) if on == store => {}
        _ => return Ok(false),
    }
    if let Some((_, end)) = open.remove(id) {
        let _ = end.send(());
    }
    Ok(true)
}

/// Each query from `queries` adds a subscription; all of them answer on
/// the one receiver returned, until it is dropped, `queries` ends, or the
/// sidecar stops. A query that cannot be served is answered with its error,
/// and ends the lot.
pub fn subscribe<Q>(ctx: Arc<ApiContext>, mut queries: Q) -> mpsc::Receiver<Result<Changes, BlockError>>
where
    Q: Stream<Item = ConfigurationQuery> + Send + Unpin + 'static,
{
    let (changes, changes_rx) = mpsc::channel(BUFFERED_CHANGES);
    let mut stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        let mut subscriptions = tokio::task::JoinSet::new();
        loop {
            let query = tokio::select! {
                query = queries.next() => query,
                () = changes.closed() => break,
                _ = stopping.wait_for(|s| *s) => break,
            };
            let Some(query) = query else { break };
            let opened = ctx
                .router
                .config_stores
                .get(STORE_NAME, &query.store)
                .map_err(BlockError::from)
                .and_then(|store| {
                    let name = query.store.clone();
                    Ok((store.clone(), name, selector(&ctx.app.app_id, query)?))
                });
            match opened {
                Ok((store, name, sel)) => {
                    subscriptions.spawn(follow(store, name, sel, changes.clone()));
                }
                Err(error) => {
                    let _ = changes.send(Err(error)).await;
                    break;
                }
            }
        }
        // The subscriber is gone, or the sidecar is stopping: so are the
        // subscriptions, and with them the stream.
        subscriptions.abort_all();
    });
    changes_rx
}

type Out = mpsc::Sender<Result<Changes, BlockError>>;

/// One subscription: the current values, then every change, across the
/// store's restarts and lost feeds, until the subscriber goes away.
async fn follow(store: ComponentHandle<ConfigStores>, store_name: String, sel: Selector, out: Out) {
    let mut known: BTreeMap<ItemId, ItemValue> = BTreeMap::new();
    // Short: the subscriber should hear of its store soon after the store
    // is UP again.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let send = |items: Vec<ConfigurationItem>| {
        let (out, store, app_id) = (out.clone(), store_name.clone(), sel.app_id.clone());
        async move {
            if items.is_empty() {
                return true;
            }
            out.send(Ok(Changes { store, app_id, items })).await.is_ok()
        }
    };
    while !out.is_closed() {
        // Watch first, then read: a change in between is in the feed.
        let opened = async {
            let events = store.call(Watch).await?;
            let current = store.call(GetItems(sel.clone())).await?;
            Ok::<_, crate::actors::CallError>((events, current))
        };
        let (mut events, current) = match opened.await {
            Ok(opened) => opened,
            Err(error) => {
                debug!(store = %store_name, %error, "Configuration subscription waits for its store");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        if !send(resync(&mut known, current)).await {
            return;
        }
        while let Some(event) = tokio::select! {
            event = events.next() => event,
            () = out.closed() => return,
        } {
            let items = match event {
                // What the subscriber already has is no change: the write
                // that the first read already saw, arriving through the
                // feed after it (watch first, then read), is not sent
                // twice.
                ConfigEvent::Changed(id, value) if known.get(&id) == value.as_ref() => continue,
                ConfigEvent::Changed(id, value) if sel.matches(&id) => match value {
                    Some(value) => {
                        known.insert(id.clone(), value.clone());
                        vec![item(id, value)]
                    }
                    None => {
                        known.remove(&id);
                        vec![deleted(id)]
                    }
                },
                ConfigEvent::Changed(..) => continue,
                ConfigEvent::Resync => match store.call(GetItems(sel.clone())).await {
                    Ok(current) => resync(&mut known, current),
                    // The store is going down; the outer loop catches up.
                    Err(_) => break,
                },
            };
            if !send(items).await {
                return;
            }
        }
    }
}

/// Every current value, and a delete for each item that vanished.
fn resync(known: &mut BTreeMap<ItemId, ItemValue>, current: Vec<(ItemId, ItemValue)>) -> Vec<ConfigurationItem> {
    let now: BTreeMap<ItemId, ItemValue> = current.into_iter().collect();
    let mut items: Vec<ConfigurationItem> = known
        .keys()
        .filter(|id| !now.contains_key(*id))
        .cloned()
        .map(deleted)
        .collect();
    items.extend(now.iter().map(|(id, v)| item(id.clone(), v.clone())));
    *known = now;
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(app_id: &str, group: &str, label: &str, keys: &[&str]) -> ConfigurationQuery {
        ConfigurationQuery {
            store: "c".into(),
            app_id: app_id.into(),
            group: group.into(),
            label: label.into(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    fn id(key: &str) -> ItemId {
        ItemId {
            app_id: "app".into(),
            group: DEFAULT_GROUP.into(),
            label: DEFAULT_LABEL.into(),
            key: key.into(),
        }
    }

    fn value(content: &str) -> ItemValue {
        ItemValue {
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn blank_scopes_take_the_defaults() {
        let sel = selector("app", query("", "", "", &["k"])).expect("accepted");
        assert_eq!(
            sel,
            Selector {
                app_id: "app".into(),
                group: "default".into(),
                label: "default".into(),
                keys: vec!["k".into()],
            }
        );
        let sel = selector("app", query("other", "g", "l", &[])).expect("accepted");
        assert_eq!(
            (sel.app_id.as_str(), sel.group.as_str(), sel.label.as_str()),
            ("other", "g", "l")
        );
    }

    #[test]
    fn selectors_refuse_separators_and_empty_keys() {
        assert_eq!(
            selector("app", query("", "a||b", "", &[])).expect_err("refused"),
            BlockError::invalid("group 'a||b' must not contain '||'")
        );
        assert_eq!(
            selector("app", query("", "", "", &["k", ""])).expect_err("refused"),
            BlockError::invalid("keys holds an empty key")
        );
    }

    #[test]
    fn saves_need_items_with_keys() {
        let empty = SaveConfiguration::default();
        assert_eq!(
            items_to_save("app", empty).expect_err("refused"),
            BlockError::invalid("items is empty")
        );
        let keyless = SaveConfiguration {
            items: vec![ConfigurationItem::default()],
            ..Default::default()
        };
        assert_eq!(
            items_to_save("app", keyless).expect_err("refused"),
            BlockError::invalid("items[0].key is empty")
        );
        let one = SaveConfiguration {
            items: vec![ConfigurationItem {
                key: "k".into(),
                content: "v".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            items_to_save("app", one).expect("accepted"),
            vec![(id("k"), value("v"))]
        );
    }

    #[test]
    fn a_resync_sends_current_values_and_deletes_what_vanished() {
        let mut known = BTreeMap::from([(id("gone"), value("x")), (id("kept"), value("old"))]);
        let items = resync(&mut known, vec![(id("kept"), value("new"))]);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, "gone");
        assert_eq!(items[0].metadata.get(DELETED).map(String::as_str), Some("true"));
        assert_eq!((items[1].key.as_str(), items[1].content.as_str()), ("kept", "new"));
        assert_eq!(known, BTreeMap::from([(id("kept"), value("new"))]));
    }
}

//! The Configuration API: GetConfiguration, SaveConfiguration,
//! DeleteConfiguration and SubscribeConfiguration.
//!
//! Items are scoped by app id (the request's, else the sidecar's), group
//! and label (blank: `default`, as in Layotto). A subscription first gets
//! the current values of what it watches, then every change, in order,
//! from any writer of the store; a delete arrives as an item with empty
//! content and metadata `deleted = "true"`. A subscription outlives its
//! store's restarts and lost change feeds: each time, it is sent the
//! current values again (and deletes for what vanished).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::debug;

use crate::actors::ComponentHandle;
use crate::actors::configuration::{DeleteItems, GetItems, SaveItems, Watch};
use crate::api::ApiContext;
use crate::components::ConfigStores;
use crate::components::configuration::{ConfigEvent, DEFAULT_GROUP, DEFAULT_LABEL, ItemId, ItemValue, Selector};
use crate::proto::runtime::v1 as pb;

/// Metadata key marking a deleted item in a subscription.
pub const DELETED: &str = "deleted";

pub type SubscriptionStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribeConfigurationResponse, Status>> + Send + 'static>>;

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value.to_owned()
    }
}

fn no_separator(value: &str, field: &str) -> Result<(), Status> {
    if value.contains("||") {
        Err(Status::invalid_argument(format!(
            "{field} '{value}' must not contain '||'"
        )))
    } else {
        Ok(())
    }
}

fn selector(ctx: &ApiContext, app_id: &str, group: &str, label: &str, keys: Vec<String>) -> Result<Selector, Status> {
    let selector = Selector {
        app_id: or_default(app_id, &ctx.app.app_id),
        group: or_default(group, DEFAULT_GROUP),
        label: or_default(label, DEFAULT_LABEL),
        keys,
    };
    no_separator(&selector.app_id, "app_id")?;
    no_separator(&selector.group, "group")?;
    no_separator(&selector.label, "label")?;
    if selector.keys.iter().any(String::is_empty) {
        return Err(Status::invalid_argument("keys holds an empty key"));
    }
    Ok(selector)
}

fn item(id: ItemId, value: ItemValue) -> pb::ConfigurationItem {
    pb::ConfigurationItem {
        key: id.key,
        content: value.content,
        group: id.group,
        label: id.label,
        tags: value.tags.into_iter().collect(),
        metadata: value.metadata.into_iter().collect(),
    }
}

fn deleted(id: ItemId) -> pb::ConfigurationItem {
    pb::ConfigurationItem {
        key: id.key,
        group: id.group,
        label: id.label,
        metadata: [(DELETED.to_owned(), "true".to_owned())].into(),
        ..Default::default()
    }
}

pub async fn get_configuration(
    ctx: &ApiContext,
    req: pb::GetConfigurationRequest,
) -> Result<pb::GetConfigurationResponse, Status> {
    let store = ctx.router.config_stores.get("store_name", &req.store_name)?;
    let selector = selector(ctx, &req.app_id, &req.group, &req.label, req.keys)?;
    let items = store.call(GetItems(selector)).await?;
    Ok(pb::GetConfigurationResponse {
        items: items.into_iter().map(|(id, v)| item(id, v)).collect(),
    })
}

pub async fn save_configuration(ctx: &ApiContext, req: pb::SaveConfigurationRequest) -> Result<(), Status> {
    let store = ctx.router.config_stores.get("store_name", &req.store_name)?;
    if req.items.is_empty() {
        return Err(Status::invalid_argument("items is empty"));
    }
    let app_id = or_default(&req.app_id, &ctx.app.app_id);
    no_separator(&app_id, "app_id")?;
    let mut items = Vec::with_capacity(req.items.len());
    for (i, it) in req.items.into_iter().enumerate() {
        if it.key.is_empty() {
            return Err(Status::invalid_argument(format!("items[{i}].key is empty")));
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
    store.call(SaveItems(items)).await.map_err(Status::from)
}

pub async fn delete_configuration(ctx: &ApiContext, req: pb::DeleteConfigurationRequest) -> Result<(), Status> {
    let store = ctx.router.config_stores.get("store_name", &req.store_name)?;
    if req.keys.is_empty() {
        return Err(Status::invalid_argument("keys is empty; name the keys to delete"));
    }
    let selector = selector(ctx, &req.app_id, &req.group, &req.label, req.keys)?;
    let ids = selector.keys.iter().map(|k| selector.id(k)).collect();
    store.call(DeleteItems(ids)).await.map_err(Status::from)
}

/// Each request on the stream adds a subscription; all of them answer on
/// the one response stream, until the client closes it.
pub async fn subscribe_configuration(
    ctx: Arc<ApiContext>,
    mut requests: Streaming<pb::SubscribeConfigurationRequest>,
) -> Result<SubscriptionStream, Status> {
    let (responses, responses_rx) = mpsc::channel(64);
    let mut stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        let mut subscriptions = tokio::task::JoinSet::new();
        loop {
            let request = tokio::select! {
                request = requests.message() => request,
                () = responses.closed() => break,
                _ = stopping.wait_for(|s| *s) => break,
            };
            let req = match request {
                Ok(Some(req)) => req,
                Ok(None) | Err(_) => break,
            };
            let opened = ctx
                .router
                .config_stores
                .get("store_name", &req.store_name)
                .map_err(Status::from)
                .and_then(|store| {
                    let sel = selector(&ctx, &req.app_id, &req.group, &req.label, req.keys)?;
                    Ok((store.clone(), sel))
                });
            match opened {
                Ok((store, sel)) => {
                    subscriptions.spawn(follow(store, req.store_name, sel, responses.clone()));
                }
                Err(status) => {
                    let _ = responses.send(Err(status)).await;
                    break;
                }
            }
        }
        // The client is gone, or the sidecar is stopping: so are the
        // subscriptions, and with them the stream.
        subscriptions.abort_all();
    });
    Ok(Box::pin(ReceiverStream::new(responses_rx)))
}

type Responses = mpsc::Sender<Result<pb::SubscribeConfigurationResponse, Status>>;

/// One subscription: the current values, then every change, across the
/// store's restarts and lost feeds, until the client goes away.
async fn follow(store: ComponentHandle<ConfigStores>, store_name: String, sel: Selector, out: Responses) {
    let mut known: BTreeMap<ItemId, ItemValue> = BTreeMap::new();
    let mut backoff = Duration::from_millis(100);
    let send = |items: Vec<pb::ConfigurationItem>| {
        let (out, store_name, app_id) = (out.clone(), store_name.clone(), sel.app_id.clone());
        async move {
            if items.is_empty() {
                return true;
            }
            let response = pb::SubscribeConfigurationResponse {
                store_name,
                app_id,
                items,
            };
            out.send(Ok(response)).await.is_ok()
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
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if !send(resync(&mut known, current)).await {
            return;
        }
        while let Some(event) = tokio::select! {
            event = events.next() => event,
            () = out.closed() => return,
        } {
            let items = match event {
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
fn resync(known: &mut BTreeMap<ItemId, ItemValue>, current: Vec<(ItemId, ItemValue)>) -> Vec<pb::ConfigurationItem> {
    let now: BTreeMap<ItemId, ItemValue> = current.into_iter().collect();
    let mut items: Vec<pb::ConfigurationItem> = known
        .keys()
        .filter(|id| !now.contains_key(*id))
        .cloned()
        .map(deleted)
        .collect();
    items.extend(now.iter().map(|(id, v)| item(id.clone(), v.clone())));
    *known = now;
    items
}

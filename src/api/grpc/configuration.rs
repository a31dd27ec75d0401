//! The Configuration API: GetConfiguration, SaveConfiguration,
//! DeleteConfiguration and SubscribeConfiguration, over
//! [`blocks::configuration`](crate::api::blocks::configuration).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::api::ApiContext;
use crate::api::blocks::configuration::{self, Changes, ConfigurationItem, ConfigurationQuery, SaveConfiguration};
use crate::proto::runtime::v1 as pb;

pub type SubscriptionStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribeConfigurationResponse, Status>> + Send + 'static>>;

fn to_proto(item: ConfigurationItem) -> pb::ConfigurationItem {
    pb::ConfigurationItem {
        key: item.key,
        content: item.content,
        group: item.group,
        label: item.label,
        tags: item.tags,
        metadata: item.metadata,
    }
}

fn from_proto(item: pb::ConfigurationItem) -> ConfigurationItem {
    ConfigurationItem {
        key: item.key,
        content: item.content,
        group: item.group,
        label: item.label,
        tags: item.tags,
        metadata: item.metadata,
    }
}

pub async fn get_configuration(
    ctx: &ApiContext,
    req: pb::GetConfigurationRequest,
) -> Result<pb::GetConfigurationResponse, Status> {
    let query = ConfigurationQuery {
        store: req.store_name,
        app_id: req.app_id,
        group: req.group,
        label: req.label,
        keys: req.keys,
    };
    let items = configuration::get(ctx, query).await?;
    Ok(pb::GetConfigurationResponse {
        items: items.into_iter().map(to_proto).collect(),
    })
}

pub async fn save_configuration(ctx: &ApiContext, req: pb::SaveConfigurationRequest) -> Result<(), Status> {
    let save = SaveConfiguration {
        store: req.store_name,
        app_id: req.app_id,
        items: req.items.into_iter().map(from_proto).collect(),
    };
    Ok(configuration::save(ctx, save).await?)
}

pub async fn delete_configuration(ctx: &ApiContext, req: pb::DeleteConfigurationRequest) -> Result<(), Status> {
    let query = ConfigurationQuery {
        store: req.store_name,
        app_id: req.app_id,
        group: req.group,
        label: req.label,
        keys: req.keys,
    };
    Ok(configuration::delete(ctx, query).await?)
}

/// Each request on the stream adds a subscription; all of them answer on
/// the one response stream, until the client closes it.
pub async fn subscribe_configuration(
    ctx: Arc<ApiContext>,
    requests: Streaming<pb::SubscribeConfigurationRequest>,
) -> Result<SubscriptionStream, Status> {
    // A broken request stream ends the subscriptions, as its end does.
    let queries = tokio_stream::StreamExt::map_while(requests, Result::ok).map(|req| ConfigurationQuery {
        store: req.store_name,
        app_id: req.app_id,
        group: req.group,
        label: req.label,
        keys: req.keys,
    });
    let changes = configuration::subscribe(ctx, Box::pin(queries));
    let responses = ReceiverStream::new(changes).map(|changes| {
        let Changes { store, app_id, items } = changes?;
        Ok(pb::SubscribeConfigurationResponse {
            store_name: store,
            app_id,
            items: items.into_iter().map(to_proto).collect(),
        })
    });
    Ok(Box::pin(responses))
}

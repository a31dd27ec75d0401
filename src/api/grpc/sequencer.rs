//! The Sequencer API: GetNextId.

use tonic::Status;

use super::scoped_key;
use crate::actors::sequencer::NextId;
use crate::api::ApiContext;
use crate::components::sequencer::Increment;
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::sequencer_options::AutoIncrement;

/// The backend key of a sequence: `sequencer|||<prefix>||<key>`.
const NAMESPACE: &str = "sequencer";

pub async fn get_next_id(ctx: &ApiContext, req: pb::GetNextIdRequest) -> Result<pb::GetNextIdResponse, Status> {
    let store = ctx.router.sequencers.get("store_name", &req.store_name)?;
    if req.key.is_empty() {
        return Err(Status::invalid_argument("key is empty"));
    }
    // Unset options mean WEAK, as in Layotto.
    let increment = match req.options.map(|o| o.increment()) {
        Some(AutoIncrement::Strong) => Increment::Strong,
        _ => Increment::Weak,
    };
    let floor = crate::components::sequencer::floor(store.spec(), &req.key);
    let key = scoped_key(NAMESPACE, store.spec(), &ctx.app.app_id, &req.store_name, &req.key)?;
    let next_id = store.call(NextId { key, floor, increment }).await?;
    Ok(pb::GetNextIdResponse { next_id })
}

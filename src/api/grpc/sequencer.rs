//! The Sequencer API: GetNextId, over
//! [`blocks::sequencer`](crate::api::blocks::sequencer).

use tonic::Status;

use crate::api::ApiContext;
use crate::api::blocks::sequencer::{self, Increment, NextIdRequest};
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::sequencer_options::AutoIncrement;

pub async fn get_next_id(ctx: &ApiContext, req: pb::GetNextIdRequest) -> Result<pb::GetNextIdResponse, Status> {
    // Unset options mean WEAK, as in Layotto.
    let increment = match req.options.map(|o| o.increment()) {
        Some(AutoIncrement::Strong) => Increment::Strong,
        _ => Increment::Weak,
    };
    let next = NextIdRequest {
        store: req.store_name,
        key: req.key,
        increment,
    };
    let next_id = sequencer::next_id(ctx, next).await?;
    Ok(pb::GetNextIdResponse { next_id })
}

//! The Sequencer block: the next id of a key.
//!
//! Keys are scoped as Layotto does (`sequencer|||<prefix>||<key>`), and a
//! key's first id is above the component's `biggerThan` floor for it.

use super::{BlockError, required, scoped_key};
use crate::actors::sequencer::NextId;
use crate::api::ApiContext;
use crate::components::ComponentSpec;
pub use crate::components::sequencer::Increment;

/// The backend key of a sequence: `sequencer|||<prefix>||<key>`.
const NAMESPACE: &str = "sequencer";

/// The next id of `key` in `store`.
#[derive(Clone, Debug)]
pub struct NextIdRequest {
    pub store: String,
    pub key: String,
    /// Unset in the request means WEAK, as in Layotto.
    pub increment: Increment,
}

/// The backend key of a request's sequence, and its floor (`biggerThan`).
pub(crate) fn sequence(app_id: &str, spec: &ComponentSpec, req: &NextIdRequest) -> Result<(String, i64), BlockError> {
    required(&req.key, "key")?;
    let floor = crate::components::sequencer::floor(spec, &req.key);
    let key = scoped_key(NAMESPACE, spec, app_id, &req.store, &req.key)?;
    Ok((key, floor))
}

pub async fn next_id(ctx: &ApiContext, req: NextIdRequest) -> Result<i64, BlockError> {
    let store = ctx.router.sequencers.get("store_name", &req.store)?;
    let (key, floor) = sequence(&ctx.app.app_id, &store.spec(), &req)?;
    Ok(store
        .call(NextId {
            key,
            floor,
            increment: req.increment,
        })
        .await?)
}

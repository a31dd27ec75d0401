//! The root of the supervision tree: it starts one supervisor per building
//! block, stops them in reverse order at shutdown (each stops its children
//! first), and carries an escalation out of the actor system.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc;
use tracing::error;

use super::Slots;
use super::block::{BlockSupervisor, StopBlock};
use crate::actors::Slot;
use crate::components::{BuildingBlock, Kind};
use crate::config::SupervisorConfig;

/// A component that keeps failing, under `fail_fast`: the runtime exits.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Escalation {
    /// `"<kind>/<name>"`.
    pub component: String,
    pub reason: String,
}

pub struct RootSupervisor {
    settings: SupervisorConfig,
    escalations: mpsc::UnboundedSender<Escalation>,
    /// Block supervisors in start order.
    blocks: Vec<Recipient<StopBlock>>,
    /// The same, by kind (each an `Addr<BlockSupervisor<B>>`), for
    /// components added at run time.
    by_kind: std::collections::HashMap<Kind, Box<dyn std::any::Any>>,
}

impl RootSupervisor {
    pub fn new(settings: SupervisorConfig, escalations: mpsc::UnboundedSender<Escalation>) -> Self {
        RootSupervisor {
            settings,
            escalations,
            blocks: Vec::new(),
            by_kind: std::collections::HashMap::new(),
        }
    }

    pub(super) fn start_block<B: BuildingBlock>(&mut self, slots: &[Arc<Slot<B>>], ctx: &mut Context<Self>) {
        // Functions come and go at run time: their supervisor is started
        // on its own (StartDynamicBlock), with or without any.
        if slots.is_empty() || B::KIND == Kind::Wasm {
            return;
        }
        self.spawn_block(slots, ctx);
    }

    fn spawn_block<B: BuildingBlock>(
        &mut self,
        slots: &[Arc<Slot<B>>],
        ctx: &mut Context<Self>,
    ) -> Addr<BlockSupervisor<B>> {
        let block = BlockSupervisor::<B>::new(slots, self.settings.clone(), ctx.address().recipient()).start();
        self.blocks.push(block.clone().recipient());
        self.by_kind.insert(B::KIND, Box::new(block.clone()));
        block
    }
}

impl Actor for RootSupervisor {
    type Context = Context<Self>;
}

/// Starts the supervisors of the blocks with components in these slots,
/// in the block table's order (secret stores first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartBlocks(pub Slots);

impl Handler<StartBlocks> for RootSupervisor {
    type Result = ();

    fn handle(&mut self, StartBlocks(slots): StartBlocks, ctx: &mut Context<Self>) {
        slots.start_blocks(self, ctx);
    }
}

/// Starts the supervisor of a block whose components may be added and
/// removed at run time (functions), even with none yet; answers its
/// address.
#[derive(Message)]
#[rtype(result = "Addr<BlockSupervisor<B>>")]
pub struct StartDynamicBlock<B: BuildingBlock>(pub Vec<Arc<Slot<B>>>);

impl<B: BuildingBlock> Handler<StartDynamicBlock<B>> for RootSupervisor {
    type Result = MessageResult<StartDynamicBlock<B>>;

    fn handle(&mut self, StartDynamicBlock(slots): StartDynamicBlock<B>, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.spawn_block(&slots, ctx))
    }
}

/// The supervisor of block `B`, started (with no components) when the
/// block had none: where a reload adds components.
#[derive(Message)]
#[rtype(result = "Addr<BlockSupervisor<B>>")]
pub struct BlockOf<B: BuildingBlock>(pub std::marker::PhantomData<fn() -> B>);

impl<B: BuildingBlock> Handler<BlockOf<B>> for RootSupervisor {
    type Result = MessageResult<BlockOf<B>>;

    fn handle(&mut self, _: BlockOf<B>, ctx: &mut Context<Self>) -> Self::Result {
        let known = self
            .by_kind
            .get(&B::KIND)
            .and_then(|block| block.downcast_ref::<Addr<BlockSupervisor<B>>>())
            .cloned();
        MessageResult(known.unwrap_or_else(|| self.spawn_block::<B>(&[], ctx)))
    }
}

impl Handler<Escalation> for RootSupervisor {
    type Result = ();

    fn handle(&mut self, escalation: Escalation, _ctx: &mut Context<Self>) {
        error!(component = %escalation.component, reason = %escalation.reason, "Escalating component failure");
        let _ = self.escalations.send(escalation);
    }
}

/// Stops the whole tree, children first; answers when every component has
/// closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopTree;

impl Handler<StopTree> for RootSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopTree, _ctx: &mut Context<Self>) -> Self::Result {
        let blocks: Vec<_> = self.blocks.drain(..).rev().collect();
        let stop_all = async move {
            // Later blocks may depend on earlier ones (secrets), so stop
            // them one after another, newest first.
            for block in blocks {
                let _ = block.send(StopBlock).await;
            }
        };
        Box::pin(stop_all.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}

/// Answers when the actor system is responsive: the liveness probe.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for RootSupervisor {
    type Result = ();

    fn handle(&mut self, _: Ping, _ctx: &mut Context<Self>) {}
}

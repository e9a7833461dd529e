//! Load generator: new conversations at a steady rate, each left by its guest
//! after a fixed time unless something closed it first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::world::World;
use super::{ConversationSpec, GeneratorConfig};

/// Shortest period between conversations; far above any useful rate.
const MIN_PERIOD: Duration = Duration::from_micros(1);

fn pick<T: Clone>(items: &[T]) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        items.get(fastrand::usize(..items.len())).cloned()
    }
}

/// Runs until `total` conversations were created and every one of them has
/// reached its leave time, or until the sim shuts down.
pub(crate) async fn run(world: Arc<World>, g: GeneratorConfig) {
    if !(g.rate_per_sec.is_finite() && g.rate_per_sec > 0.0) {
        tracing::warn!(
            rate = g.rate_per_sec,
            "sim generator: rate_per_sec must be a positive number; not starting"
        );
        return;
    }
    if g.queue_ids.is_empty() {
        tracing::warn!("sim generator: no queue_ids; not starting");
        return;
    }
    let period = Duration::try_from_secs_f64(1.0 / g.rate_per_sec)
        .unwrap_or(Duration::MAX)
        .max(MIN_PERIOD);
    // The leave delay is the same for all, so deadlines arrive in creation order
    // and one FIFO queue replaces a sleeping task per conversation.
    let (leave_tx, leave_rx) = mpsc::unbounded_channel::<(Instant, String)>();
    let produce = produce(Arc::clone(&world), g, period, leave_tx);
    let leave = leave(Arc::clone(&world), leave_rx);
    tokio::select! {
        _ = world.cancel.cancelled() => {}
        _ = async { tokio::join!(produce, leave) } => {}
    }
}

async fn produce(
    world: Arc<World>,
    g: GeneratorConfig,
    period: Duration,
    leave_tx: mpsc::UnboundedSender<(Instant, String)>,
) {
    let mut tick = tokio::time::interval(period);
    // Burst keeps the average rate when the runtime falls behind briefly.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut made: u64 = 0;
    while g.total.is_none_or(|t| made < t) {
        tick.tick().await;
        let Some(queue_id) = pick(&g.queue_ids) else {
            return;
        };
        let spec = ConversationSpec {
            queue_id,
            intent_attribute: g.intent_attribute.clone(),
            intent: pick(&g.intents).flatten(),
            agent_user_id: None,
        };
        let id = world.create_conversation(&spec);
        made += 1;
        // A leave time beyond what `Instant` can hold means the guest never leaves.
        let Some(deadline) = Instant::now().checked_add(g.customer_leaves_after) else {
            continue;
        };
        if leave_tx.send((deadline, id)).is_err() {
            return;
        }
    }
    tracing::info!(made, "sim generator: done creating conversations");
}

async fn leave(world: Arc<World>, mut rx: mpsc::UnboundedReceiver<(Instant, String)>) {
    while let Some((deadline, id)) = rx.recv().await {
        tokio::time::sleep_until(deadline).await;
        if world.is_open(&id) {
            world.customer_leaves(&id);
        }
    }
}

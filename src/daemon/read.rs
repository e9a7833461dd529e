//! One patient read of a conversation by REST, shared by the event loop's catch-up,
//! verify and resync reads and by recovery: a 404 is asked once more before the
//! conversation is taken as unknown, and failures that pass are retried for a while.

use std::time::Duration;

use crate::genesys::api::ApiClient;
use crate::genesys::budget::Priority;
use crate::genesys::frames::ConversationEvent;

/// Why a read gave no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unread {
    /// Genesys answered 404, and again after [`NOT_FOUND_RECHECK`].
    NotFound,
    /// Any other failure (after the retries of those that pass).
    Failed,
}

/// A 404 is asked once more after this long before the conversation is taken as
/// unknown to Genesys: a conversation read moments after it started might not be
/// readable yet, and giving its topics back would lose it.
const NOT_FOUND_RECHECK: Duration = Duration::from_secs(2);

/// How long a catch-up, verify or resync read is retried when it fails for a reason
/// that passes (429, 5xx, transport): a read that matters must not be dropped by a
/// short outage.
const READ_RETRY_FOR: Duration = Duration::from_secs(120);

/// Reads one conversation at budget priority `priority`, retrying failures that pass
/// until [`READ_RETRY_FOR`].
pub(super) async fn read_at(
    priority: Priority,
    api: &ApiClient,
    id: &str,
    wanted: &[Box<str>],
    why: &'static str,
) -> Option<ConversationEvent> {
    read_checked(priority, api, id, wanted, why).await.ok()
}

/// [`read_at`], saying why it gave nothing.
pub(super) async fn read_checked(
    priority: Priority,
    api: &ApiClient,
    id: &str,
    wanted: &[Box<str>],
    why: &'static str,
) -> Result<ConversationEvent, Unread> {
    use backon::BackoffBuilder as _;
    // Failures that pass: 1 s doubling to 20 s, with jitter, for READ_RETRY_FOR in all.
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter()
        .with_total_delay(Some(READ_RETRY_FOR))
        .without_max_times()
        .build();
    let mut rechecked = false;
    loop {
        match api.get_conversation_as(priority, id, wanted).await {
            Ok(ev) => return Ok(ev),
            Err(e) if e.status() == Some(404) && !rechecked => {
                tracing::debug!(conversation_id = id, error = %e, why,
                    "conversation not found; asking once more");
                rechecked = true;
                tokio::time::sleep(NOT_FOUND_RECHECK).await;
            }
            Err(e) if e.status() == Some(404) => {
                tracing::warn!(conversation_id = id, error = %e,
                    correlation_id = e.correlation_id(), why,
                    "Genesys does not know this conversation (404)");
                return Err(Unread::NotFound);
            }
            Err(e) if e.is_retryable() => match backoff.next() {
                Some(pause) => {
                    tracing::debug!(conversation_id = id, error = %e, why,
                        retry_in_ms = pause.as_millis() as u64, "read failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                None => {
                    tracing::warn!(conversation_id = id, error = %e,
                        correlation_id = e.correlation_id(), why,
                        "conversation read failed (retried for 2 min)");
                    return Err(Unread::Failed);
                }
            },
            Err(e) => {
                tracing::warn!(conversation_id = id, error = %e,
                    correlation_id = e.correlation_id(), why, "conversation read failed");
                return Err(Unread::Failed);
            }
        }
    }
}

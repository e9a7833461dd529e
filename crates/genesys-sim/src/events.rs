//! Event fan-out: every conversation, detail and flow-metrics frame goes out
//! through `publish_event`, which numbers it per conversation in the event log,
//! hands it to the subscribed sockets, and applies the event faults
//! (`duplicate_events`, `reorder_events`).
//!
//! The sequence number lives only in the log: the shared schemas forbid extra
//! fields in frames, and the real platform numbers nothing either. Tests use the
//! log to prove that no event of a watched conversation went out while no
//! daemon socket could receive it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::Value;

use super::EventRecord;
use super::world::{World, lock};

/// Records kept for `event_log()`.
const EVENT_LOG_CAP: usize = 100_000;
/// Conversations whose sequence counters are remembered; the oldest is
/// forgotten first, so only a conversation still publishing after 100,000
/// newer ones would start again at 1.
const SEQ_KEEP: usize = 100_000;
/// How long `reorder_events` holds a frame when no other frame follows.
const HOLD: Duration = Duration::from_millis(50);

/// A frame held back on one socket by `reorder_events`.
pub(crate) struct Held {
    msg: Message,
    /// 2 when `duplicate_events` was on as it was published.
    copies: usize,
    /// Its entry in the event log, credited once it is handed over.
    log_id: u64,
}

/// The event log and the per-conversation counters.
#[derive(Default)]
pub(crate) struct EventLog {
    next_id: u64,
    /// `(log id, record)`, ids increasing, so an entry is found by binary search.
    records: VecDeque<(u64, EventRecord)>,
    seqs: HashMap<String, u64>,
    /// Conversations in the order their counter started, to forget the oldest.
    seq_order: VecDeque<String>,
}

impl EventLog {
    /// Numbers the next event of the conversation and logs it as delivered to
    /// nobody yet; returns its log id.
    fn open(&mut self, conversation_id: &str, topic: &str) -> u64 {
        let seq = match self.seqs.get_mut(conversation_id) {
            Some(s) => {
                *s += 1;
                *s
            }
            None => {
                self.seqs.insert(conversation_id.to_owned(), 1);
                self.seq_order.push_back(conversation_id.to_owned());
                while self.seq_order.len() > SEQ_KEEP {
                    if let Some(old) = self.seq_order.pop_front() {
                        self.seqs.remove(&old);
                    }
                }
                1
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        if self.records.len() >= EVENT_LOG_CAP {
            self.records.pop_front();
        }
        let record = EventRecord {
            conversation_id: conversation_id.to_owned(),
            seq,
            topic: topic.to_owned(),
            delivered: 0,
        };
        self.records.push_back((id, record));
        id
    }

    /// Counts `n` more sockets that took the event (if it is still in the log).
    fn credit(&mut self, id: u64, n: usize) {
        if n == 0 {
            return;
        }
        if let Ok(i) = self.records.binary_search_by_key(&id, |(k, _)| *k)
            && let Some((_, r)) = self.records.get_mut(i)
        {
            r.delivered += n;
        }
    }

    pub(crate) fn records(&self) -> Vec<EventRecord> {
        self.records.iter().map(|(_, r)| r.clone()).collect()
    }
}

/// Queues `copies` copies; `true` if the first was taken (duplicates count once).
fn hand(
    world_channel: &str,
    ch: &mut super::channels::Channel,
    msg: &Message,
    copies: usize,
) -> bool {
    let taken = World::offer(world_channel, ch, msg);
    if taken {
        for _ in 1..copies {
            World::offer(world_channel, ch, msg);
        }
    }
    taken
}

impl World {
    /// Publishes an event of `conversation_id` on `topic`: logs it with the
    /// conversation's next sequence number, pushes it to every attached socket
    /// whose channel subscribes to `topic` (faults permitting), and records the
    /// frame once in `pushed_frames`, whether or not anyone was subscribed.
    /// Callers hold the conversation store lock, so one conversation's events
    /// are numbered and sent in the order they happened.
    pub(crate) fn publish_event(&self, conversation_id: &str, topic: &str, frame: Value) {
        let key = topic.to_ascii_lowercase();
        let msg = Message::Text(Utf8Bytes::from(frame.to_string()));
        let faults = self.faults();
        let copies = if faults.duplicate_events { 2 } else { 1 };
        let mut to_flush = Vec::new();
        {
            let mut channels = lock(&self.channels);
            let mut log = lock(&self.events);
            let log_id = log.open(conversation_id, topic);
            let mut delivered = 0;
            for (id, ch) in channels.iter_mut() {
                // A stalled socket (silent_sockets) sends nothing at all: what is
                // published meanwhile is lost, as on a real half-dead connection.
                if !ch.topics.contains(&key) {
                    continue;
                }
                if ch
                    .socket
                    .as_ref()
                    .is_some_and(|s| self.is_stalled(s.conn_id))
                {
                    continue;
                }
                let Some(slot) = ch.socket.as_mut() else {
                    continue;
                };
                let earlier = slot.held.take();
                if faults.reorder_events && earlier.is_none() {
                    slot.held = Some(Held {
                        msg: msg.clone(),
                        copies,
                        log_id,
                    });
                    to_flush.push((id.clone(), slot.conn_id, log_id));
                    continue;
                }
                // The new frame overtakes the one held back, if any.
                if hand(id, ch, &msg, copies) {
                    delivered += 1;
                }
                if let Some(h) = earlier
                    && hand(id, ch, &h.msg, h.copies)
                {
                    log.credit(h.log_id, 1);
                }
            }
            log.credit(log_id, delivered);
        }
        self.record_frame(frame);
        for (channel_id, conn_id, log_id) in to_flush {
            self.after(HOLD, move |world| {
                world.flush_held(&channel_id, conn_id, log_id);
            });
        }
    }

    /// Sends a frame still held back on that connection once no other frame
    /// came to overtake it.
    fn flush_held(&self, channel_id: &str, conn_id: u64, log_id: u64) {
        let mut channels = lock(&self.channels);
        let Some(ch) = channels.get_mut(channel_id) else {
            return;
        };
        let Some(slot) = ch.socket.as_mut().filter(|s| s.conn_id == conn_id) else {
            return;
        };
        if slot.held.as_ref().is_none_or(|h| h.log_id != log_id) {
            return;
        }
        let Some(h) = slot.held.take() else {
            return;
        };
        if hand(channel_id, ch, &h.msg, h.copies) {
            lock(&self.events).credit(h.log_id, 1);
        }
    }

    pub(crate) fn event_log(&self) -> Vec<EventRecord> {
        lock(&self.events).records()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_per_conversation_and_the_log_is_bounded() {
        let mut log = EventLog::default();
        let a1 = log.open("a", "t");
        let _b1 = log.open("b", "t");
        let a2 = log.open("a", "t");
        log.credit(a2, 2);
        log.credit(a1, 0);
        let seqs: Vec<(String, u64, usize)> = log
            .records()
            .into_iter()
            .map(|r| (r.conversation_id, r.seq, r.delivered))
            .collect();
        assert_eq!(
            seqs,
            [("a".into(), 1, 0), ("b".into(), 1, 0), ("a".into(), 2, 2)]
        );
        for _ in 0..EVENT_LOG_CAP {
            log.open("c", "t");
        }
        assert_eq!(log.records().len(), EVENT_LOG_CAP);
        // The oldest entries are gone; crediting them is harmless.
        log.credit(a1, 1);
        assert_eq!(
            log.records().last().map(|r| r.seq),
            Some(EVENT_LOG_CAP as u64)
        );
    }
}

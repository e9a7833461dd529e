//! Reloading the configuration in place (SIGHUP, `systemctl reload`).
//!
//! The file is read and validated again. On any problem the running configuration
//! stays, every problem is logged with its position, then one error line says the
//! reload failed, why (the first problem) and that the previous configuration stays in
//! force; systemd's `STATUS=` says so too, and
//! `genesys_closer_config_last_reload_successful` drops to 0.
//! On success the rules are swapped at once (closes in flight finish under the rule
//! that started them: each holds its own), the attributes frames keep follow the new
//! rules, and changed queues, users and flows are subscribed on the running channels
//! without a reconnect. Settings only read at start are named in a warning and take
//! effect at the next restart.

use std::sync::Arc;

use crate::config::{Config, TOPICS_PER_CHANNEL};
use crate::genesys::subscriptions::Slot;
use crate::rules::Rules;

use super::event_loop::EventLoop;

/// What a reload needs to reach.
pub(crate) struct Reloader {
    /// The configuration running now.
    pub current: Config,
    /// The slots holding the configured topics (one per 1,000), and their mirrors.
    pub static_slots: Vec<Arc<Slot>>,
    /// The mirrors' slots, by the same index.
    pub mirror_slots: Vec<Arc<Slot>>,
}

impl Reloader {
    /// Re-reads the file; `Ok(status)` when the new configuration runs, `Err(status)`
    /// when the old one stays.
    pub(crate) fn reload(&mut self, lp: &mut EventLoop) -> Result<String, String> {
        let path = self.current.source.clone();
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(errors) => {
                for issue in &errors.0 {
                    tracing::error!(problem = %issue, "reload: configuration problem");
                }
                crate::metrics::config_loaded(false);
                // One line that says it all, for whoever reads only the last one (or
                // greps for "reload failed").
                let first = errors.0.first().map(ToString::to_string);
                tracing::error!(
                    config = %path.display(),
                    problems = errors.0.len(),
                    error = first.as_deref().unwrap_or("unknown"),
                    "reload failed; the previous configuration stays in force"
                );
                return Err(format!(
                    "reload failed: {} problem(s) in {}; still running the previous configuration",
                    errors.0.len(),
                    path.display()
                ));
            }
        };
        let old = &self.current;
        let mut at_restart: Vec<&str> = Vec::new();
        // Sections read only at start keep their running values until a restart.
        macro_rules! keep {
            ($field:ident, $name:literal) => {
                if new.$field != old.$field {
                    at_restart.push($name);
                    new.$field = old.$field.clone();
                }
            };
        }
        keep!(genesys, "[genesys]");
        keep!(intake, "[intake]");
        keep!(daemon, "[daemon]");
        keep!(log, "[log]");
        keep!(metrics, "[metrics]");
        keep!(feed, "[feed]");
        // [stream]: the topic lists apply now; timings and switches at restart.
        let mut timings = new.stream.clone();
        timings.queues = old.stream.queues.clone();
        timings.users = old.stream.users.clone();
        timings.flows = old.stream.flows.clone();
        if timings != old.stream {
            at_restart.push("[stream] timings and switches");
            let (q, u, f) = (
                std::mem::take(&mut new.stream.queues),
                std::mem::take(&mut new.stream.users),
                std::mem::take(&mut new.stream.flows),
            );
            new.stream = old.stream.clone();
            new.stream.queues = q;
            new.stream.users = u;
            new.stream.flows = f;
        }
        let topics = new.stream.topics();
        let mut topics_changed = false;
        if topics != old.stream.topics() {
            let chunks: Vec<Vec<String>> = topics
                .chunks(TOPICS_PER_CHANNEL)
                .map(<[String]>::to_vec)
                .collect();
            if chunks.len() != self.static_slots.len() || self.static_slots.is_empty() {
                at_restart
                    .push("[stream] queues/users/flows (they need a different number of channels)");
                new.stream.queues = old.stream.queues.clone();
                new.stream.users = old.stream.users.clone();
                new.stream.flows = old.stream.flows.clone();
            } else {
                for (i, chunk) in chunks.into_iter().enumerate() {
                    if let Some(m) = self.mirror_slots.get(i) {
                        m.set_static(chunk.clone());
                    }
                    self.static_slots[i].set_static(chunk);
                }
                lp.recovery.set_lists(&new.stream.queues, &new.stream.flows);
                topics_changed = true;
            }
        }
        let rules = Rules::compile(&new);
        lp.wanted.set(rules.attributes());
        lp.rules = rules;
        if !at_restart.is_empty() {
            tracing::warn!(
                sections = %at_restart.join(", "),
                "reload: these changes take effect at the next restart; the running values stay"
            );
        }
        crate::metrics::config_loaded(true);
        tracing::info!(
            config = %path.display(),
            rules = new.rules.len(),
            topics = new.stream.topics().len(),
            topics_changed,
            "configuration reloaded"
        );
        let status = format!(
            "reloaded {}: {} rule(s), {} topic(s){}",
            path.display(),
            new.rules.len(),
            new.stream.topics().len(),
            if at_restart.is_empty() {
                String::new()
            } else {
                format!("; at next restart: {}", at_restart.join(", "))
            }
        );
        self.current = new;
        Ok(status)
    }
}

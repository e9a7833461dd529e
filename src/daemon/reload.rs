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
        let mut new = Config::load(&path).map_err(|errors| refused(&path, &errors.0))?;
        let mut at_restart = kept_until_restart(&self.current, &mut new);
        let topics_changed = self.apply_topics(lp, &mut new, &mut at_restart);
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

    /// Changed queues, users and flows are written on the running channels in place
    /// (and the blind-window listings follow), when they fit the same number of
    /// channels; else they wait for a restart. Whether the topics changed now.
    fn apply_topics(
        &self,
        lp: &mut EventLoop,
        new: &mut Config,
        at_restart: &mut Vec<&'static str>,
    ) -> bool {
        let old = &self.current;
        let topics = new.stream.topics();
        if topics == old.stream.topics() {
            return false;
        }
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
            return false;
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            if let Some(m) = self.mirror_slots.get(i) {
                m.set_static(chunk.clone());
            }
            self.static_slots[i].set_static(chunk);
        }
        lp.recovery.set_lists(&new.stream.queues, &new.stream.flows);
        true
    }
}

/// Every problem logged, then one line that says it all, for whoever reads only the
/// last one (or greps for "reload failed"); the `STATUS=` text.
fn refused(path: &std::path::Path, problems: &[impl std::fmt::Display]) -> String {
    for issue in problems {
        tracing::error!(problem = %issue, "reload: configuration problem");
    }
    crate::metrics::config_loaded(false);
    let first = problems.first().map(ToString::to_string);
    tracing::error!(
        config = %path.display(),
        problems = problems.len(),
        error = first.as_deref().unwrap_or("unknown"),
        "reload failed; the previous configuration stays in force"
    );
    format!(
        "reload failed: {} problem(s) in {}; still running the previous configuration",
        problems.len(),
        path.display()
    )
}

/// Sections read only at start keep their running values in `new` until a restart;
/// what changed in them is named. Of `[stream]`, the topic lists apply now; timings
/// and switches at restart.
fn kept_until_restart(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut at_restart: Vec<&'static str> = Vec::new();
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
    at_restart
}

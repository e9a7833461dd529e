//! `[[rule]]`: every rule, in file order, each problem carrying the rule's name.

use super::*;

impl Checker<'_> {
    pub(super) fn rules(&mut self, root: &dyn TableLike) -> Vec<RuleConfig> {
        let Some(item) = root.get("rule") else {
            self.at(None, "no [[rule]]: nothing would ever be closed".into());
            return Vec::new();
        };
        let Some(array) = item.as_array_of_tables() else {
            self.at(
                item.span(),
                "`rule` must be an array of tables ([[rule]])".into(),
            );
            return Vec::new();
        };
        let mut rules = Vec::new();
        let mut names = HashSet::new();
        for (i, table) in array.iter().enumerate() {
            self.rule = Some(format!("#{}", i + 1));
            let name = self.nonempty_string(table, "name");
            if let Some(n) = &name {
                self.rule = Some(n.clone());
                if !names.insert(n.clone()) {
                    let span = table.get("name").and_then(Item::span);
                    self.at(span, "another rule already has this name".into());
                }
            } else if table.get("name").is_none() {
                self.at(table.span(), "a rule needs a `name`".into());
            }
            if let Some(rule) = self.rule_body(table, name) {
                rules.push(rule);
            }
        }
        self.rule = None;
        rules
    }

    pub(super) fn rule_body(
        &mut self,
        t: &toml_edit::Table,
        name: Option<String>,
    ) -> Option<RuleConfig> {
        self.unknown_keys(
            t,
            "[[rule]]",
            &[
                "name",
                "intents",
                "attribute",
                "queues",
                "message_types",
                "dry_run",
                "disconnect",
                "confirm_timeout",
                "retry_for",
                "farewell",
                "wrapup_code",
            ],
        );
        let intents = self.rule_intents(t);
        let attribute = self.nonempty_string(t, "attribute");
        let queues = self.id_list(t, "queues");
        let message_types = self.message_types(t);
        let dry_run = self.bool(t, "dry_run").unwrap_or(false);
        let disconnect = self.disconnect_mode(t);
        let confirm_timeout = self
            .duration(t, "confirm_timeout")
            .unwrap_or(Duration::from_secs(10));
        let retry_for = self
            .duration(t, "retry_for")
            .unwrap_or(Duration::from_secs(180));
        let farewell = self.farewell(t, &message_types);
        let wrapup_code = self.nonempty_string(t, "wrapup_code");
        Some(RuleConfig {
            farewell,
            wrapup_code,
            retry_for,
            name: name?,
            intents,
            attribute,
            queues,
            message_types,
            dry_run,
            disconnect,
            confirm_timeout,
        })
    }

    /// A rule's `intents`: at least one.
    fn rule_intents(&mut self, t: &toml_edit::Table) -> Vec<String> {
        let intents = self.string_list(t, "intents");
        // A wrong type or a bad element was reported already: one mistake, one message.
        let absent_or_empty = t
            .get("intents")
            .is_none_or(|i| i.as_array().is_some_and(|a| a.is_empty()));
        if intents.is_empty() && absent_or_empty {
            let span = t.get("intents").and_then(Item::span).or(t.span());
            self.at(
                span,
                "`intents` must list at least one intent value, e.g. intents = [\"Goodbye\"]"
                    .into(),
            );
        }
        intents
    }

    /// A rule's `message_types`, each one of [`MESSAGE_TYPES`].
    fn message_types(&mut self, t: &toml_edit::Table) -> Vec<String> {
        let message_types = self.string_list(t, "message_types");
        for mt in &message_types {
            if !MESSAGE_TYPES.contains(&mt.as_str()) {
                let span = t.get("message_types").and_then(Item::span);
                self.at(
                    span,
                    format!(
                        "unknown message type `{mt}` (expected one of: {})",
                        MESSAGE_TYPES.join(", ")
                    ),
                );
            }
        }
        message_types
    }

    /// A rule's `disconnect`: `conversation` (the default) or `customer`.
    fn disconnect_mode(&mut self, t: &toml_edit::Table) -> DisconnectMode {
        match self.string(t, "disconnect").as_deref() {
            None | Some("conversation") => DisconnectMode::Conversation,
            Some("customer") => DisconnectMode::Customer,
            Some(other) => {
                let span = t.get("disconnect").and_then(Item::span);
                self.at(
                    span,
                    format!("disconnect `{other}` is not `conversation` or `customer`"),
                );
                DisconnectMode::Conversation
            }
        }
    }

    /// A rule's `farewell`, no longer than Genesys accepts on the channels the rule may
    /// close (`message_types`).
    fn farewell(&mut self, t: &toml_edit::Table, message_types: &[String]) -> Option<String> {
        // AdditionalMessage.textBody: "SMS - 765 characters, other channels - 2000"
        // (facts sheet D.5). A rule that may close SMS conversations gets the SMS limit.
        let farewell = self.nonempty_string(t, "farewell");
        if let Some(text) = &farewell {
            let sms = message_types.is_empty() || message_types.iter().any(|m| m == "sms");
            let limit = if sms { FAREWELL_MAX_SMS } else { FAREWELL_MAX };
            let len = text.chars().count();
            if len > limit {
                let span = t.get("farewell").and_then(Item::span);
                self.at(
                    span,
                    format!(
                        "`farewell` is {len} characters; Genesys accepts at most {limit}{}",
                        if sms {
                            " for SMS (2000 on other channels: limit the rule with \
                             message_types to lift it)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        farewell
    }

    // ---- typed value readers: each reports a wrong type at the value's position ----
}

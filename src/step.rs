//! The steps of a close as the journal keeps them: one vocabulary for the closer that
//! writes them, the journal that stores them, the restart that resumes from them and
//! `history` that shows them.
//!
//! A step is stored as text (`about_to_send:farewell`, `failed:patch_conversation: 503
//! Service Unavailable`), and that text is stable: a journal a past version wrote must
//! read in this one. [`Step`]'s `Display` writes exactly the text past versions wrote and
//! its `FromStr` reads it back; text that is no step this version knows is an
//! [`UnknownStep`] error, never a default (what a restart does with one is
//! [`crate::closer::Resume`]'s to say).
//!
//! The text is a head and, for some steps, a detail after the first `": "` (the head
//! `failed:farewell`, the detail `503 ...`); `history` shows them as `step` and
//! `reason`. Like [`crate::outcome`], nothing here imports the rest of the crate, so the
//! closer and the journal both use it without the journal importing the closer.

use std::fmt;
use std::str::FromStr;

/// The detail of a [`Step::Dropped`].
const DROPPED_WHY: &str = "the conversation closed while it was in flight";
/// The detail of [`Step::Unfinished`].
const UNFINISHED_WHY: &str = "stopped while waiting for the login";
/// The detail of [`Step::Abandoned`].
const ABANDONED_WHY: &str = "rule removed";

/// A request of the close sequence, as steps name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    /// The farewell message to the guest.
    Farewell,
    /// The PATCH that disconnects the whole conversation.
    PatchConversation,
    /// The PATCH that disconnects the customer participant.
    PatchCustomer,
    /// The one read of the conversation.
    GetConversation,
    /// The full teardown, the last resort.
    Teardown,
    /// A wrap-up code for one agent (`wrapup:{participant}`), or for the wrap-ups as a
    /// whole (`wrapup`: the participants could not be read).
    Wrapup {
        /// The agent's participant id.
        participant: Option<String>,
    },
}

impl Call {
    /// The request's name without its participant: `patch_conversation`, `wrapup`, ...
    /// (the names [`crate::closer::CloseReport::sent`] lists).
    pub fn name(&self) -> &'static str {
        match self {
            Call::Farewell => "farewell",
            Call::PatchConversation => "patch_conversation",
            Call::PatchCustomer => "patch_customer",
            Call::GetConversation => "get_conversation",
            Call::Teardown => "teardown",
            Call::Wrapup { .. } => "wrapup",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if let Call::Wrapup {
            participant: Some(p),
        } = self
        {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl FromStr for Call {
    type Err = UnknownStep;

    fn from_str(s: &str) -> Result<Call, UnknownStep> {
        Ok(match s {
            "farewell" => Call::Farewell,
            "patch_conversation" => Call::PatchConversation,
            "patch_customer" => Call::PatchCustomer,
            "get_conversation" => Call::GetConversation,
            "teardown" => Call::Teardown,
            "wrapup" => Call::Wrapup { participant: None },
            _ => match s.strip_prefix("wrapup:") {
                Some(p) if !p.is_empty() => Call::Wrapup {
                    participant: Some(p.to_owned()),
                },
                _ => return Err(UnknownStep(s.to_owned())),
            },
        })
    }
}

/// One step of a close, as journalled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// `about_to_send:{call}`: stored before the request goes, so a restart knows it
    /// may have gone.
    AboutToSend(Call),
    /// `sent:{call}`: Genesys accepted it.
    Sent(Call),
    /// `failed:{call}: {reason}`: it was refused, or never answered.
    Failed(Call, String),
    /// `dropped:{call}: the conversation closed while it was in flight`: abandoned
    /// unanswered, the close being confirmed meanwhile.
    Dropped(Call),
    /// `skipped:{call}: {reason}`: not sent, on purpose (the farewell).
    Skipped(Call, String),
    /// `read:closed` or `read:open`: what the one read showed.
    Read {
        /// Every participant had ended.
        closed: bool,
    },
    /// `waiting:login: {call} not sent: {error}`: no token, so nothing went; the
    /// close waits for the login.
    WaitingLogin {
        /// What could not be sent.
        call: Call,
        /// Why no token could be had.
        error: String,
    },
    /// `unfinished: stopped while waiting for the login`: the next start resumes it.
    Unfinished,
    /// `abandoned: rule removed`: a restart found the close but not its rule.
    Abandoned,
}

/// Text that is no step this version knows (a typo, a newer version's step, a damaged
/// journal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a close step this version knows")]
pub struct UnknownStep(pub String);

impl Step {
    /// The text before the detail: `failed:farewell` of `failed:farewell: 503 ...`.
    pub fn head(&self) -> String {
        match self {
            Step::AboutToSend(c) => format!("about_to_send:{c}"),
            Step::Sent(c) => format!("sent:{c}"),
            Step::Failed(c, _) => format!("failed:{c}"),
            Step::Dropped(c) => format!("dropped:{c}"),
            Step::Skipped(c, _) => format!("skipped:{c}"),
            Step::Read { closed: true } => "read:closed".into(),
            Step::Read { closed: false } => "read:open".into(),
            Step::WaitingLogin { .. } => "waiting:login".into(),
            Step::Unfinished => "unfinished".into(),
            Step::Abandoned => "abandoned".into(),
        }
    }

    /// The text after the head's `": "`, for the steps that have one.
    pub fn detail(&self) -> Option<String> {
        match self {
            Step::Failed(_, why) | Step::Skipped(_, why) => Some(why.clone()),
            Step::Dropped(_) => Some(DROPPED_WHY.into()),
            Step::WaitingLogin { call, error } => Some(format!("{call} not sent: {error}")),
            Step::Unfinished => Some(UNFINISHED_WHY.into()),
            Step::Abandoned => Some(ABANDONED_WHY.into()),
            Step::AboutToSend(_) | Step::Sent(_) | Step::Read { .. } => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.head())?;
        match self.detail() {
            Some(d) => write!(f, ": {d}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Step {
    type Err = UnknownStep;

    fn from_str(s: &str) -> Result<Step, UnknownStep> {
        let unknown = || UnknownStep(s.to_owned());
        let (head, detail) = match s.split_once(": ") {
            Some((h, d)) => (h, Some(d)),
            None => (s, None),
        };
        let step = match (head, detail) {
            ("read:closed", None) => Step::Read { closed: true },
            ("read:open", None) => Step::Read { closed: false },
            ("unfinished", Some(UNFINISHED_WHY)) => Step::Unfinished,
            ("abandoned", Some(ABANDONED_WHY)) => Step::Abandoned,
            ("waiting:login", Some(d)) => {
                let (call, error) = d.split_once(" not sent: ").ok_or_else(unknown)?;
                Step::WaitingLogin {
                    call: call.parse().map_err(|_| unknown())?,
                    error: error.to_owned(),
                }
            }
            _ => {
                let (verb, call) = head.split_once(':').ok_or_else(unknown)?;
                let call: Call = call.parse().map_err(|_| unknown())?;
                match (verb, detail) {
                    ("about_to_send", None) => Step::AboutToSend(call),
                    ("sent", None) => Step::Sent(call),
                    ("failed", Some(why)) => Step::Failed(call, why.to_owned()),
                    ("skipped", Some(why)) => Step::Skipped(call, why.to_owned()),
                    ("dropped", Some(DROPPED_WHY)) => Step::Dropped(call),
                    _ => return Err(unknown()),
                }
            }
        };
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls() -> Vec<Call> {
        vec![
            Call::Farewell,
            Call::PatchConversation,
            Call::PatchCustomer,
            Call::GetConversation,
            Call::Teardown,
            Call::Wrapup { participant: None },
            Call::Wrapup {
                participant: Some("7f3c2a1e-5b4d-4c3b-9a2f-1e0d9c8b7a6f".into()),
            },
        ]
    }

    /// Which variant a step is; fails to compile when one is added, and
    /// `every_step_round_trips_through_its_text` fails until [`every_step`] lists it.
    fn variant(s: &Step) -> usize {
        match s {
            Step::AboutToSend(_) => 0,
            Step::Sent(_) => 1,
            Step::Failed(..) => 2,
            Step::Dropped(_) => 3,
            Step::Skipped(..) => 4,
            Step::Read { .. } => 5,
            Step::WaitingLogin { .. } => 6,
            Step::Unfinished => 7,
            Step::Abandoned => 8,
        }
    }
    const VARIANTS: usize = 9;

    /// Every variant, with every call where it takes one.
    fn every_step() -> Vec<Step> {
        let mut steps = Vec::new();
        for call in calls() {
            steps.extend([
                Step::AboutToSend(call.clone()),
                Step::Sent(call.clone()),
                Step::Failed(call.clone(), "503 Service Unavailable: try: again".into()),
                Step::Dropped(call.clone()),
                Step::Skipped(call.clone(), "a past run may have sent it".into()),
                Step::WaitingLogin {
                    call,
                    error: "login refused: 401 not sent: twice".into(),
                },
            ]);
        }
        steps.extend([
            Step::Read { closed: true },
            Step::Read { closed: false },
            Step::Unfinished,
            Step::Abandoned,
        ]);
        steps
    }

    #[test]
    fn every_step_round_trips_through_its_text() {
        let steps = every_step();
        let mut seen: Vec<usize> = steps.iter().map(variant).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen,
            (0..VARIANTS).collect::<Vec<_>>(),
            "a variant is not listed"
        );
        for step in steps {
            let text = step.to_string();
            assert_eq!(text.parse::<Step>(), Ok(step.clone()), "{text}");
            let (head, detail) = match text.split_once(": ") {
                Some((h, d)) => (h.to_owned(), Some(d.to_owned())),
                None => (text.clone(), None),
            };
            assert_eq!((step.head(), step.detail()), (head, detail), "{text}");
        }
    }

    /// The text past versions journalled, byte for byte: old journals must still read.
    #[test]
    fn the_text_past_versions_journalled_reads() {
        let p = "7f3c2a1e-5b4d-4c3b-9a2f-1e0d9c8b7a6f";
        let cases = [
            ("about_to_send:farewell", Step::AboutToSend(Call::Farewell)),
            ("sent:farewell", Step::Sent(Call::Farewell)),
            (
                "about_to_send:patch_conversation",
                Step::AboutToSend(Call::PatchConversation),
            ),
            (
                "sent:patch_conversation",
                Step::Sent(Call::PatchConversation),
            ),
            (
                "about_to_send:patch_customer",
                Step::AboutToSend(Call::PatchCustomer),
            ),
            ("sent:patch_customer", Step::Sent(Call::PatchCustomer)),
            ("about_to_send:teardown", Step::AboutToSend(Call::Teardown)),
            ("sent:teardown", Step::Sent(Call::Teardown)),
            (
                "failed:patch_conversation: 503 Service Unavailable",
                Step::Failed(Call::PatchConversation, "503 Service Unavailable".into()),
            ),
            (
                "dropped:teardown: the conversation closed while it was in flight",
                Step::Dropped(Call::Teardown),
            ),
            (
                "waiting:login: get_conversation not sent: token refused",
                Step::WaitingLogin {
                    call: Call::GetConversation,
                    error: "token refused".into(),
                },
            ),
            (
                "unfinished: stopped while waiting for the login",
                Step::Unfinished,
            ),
            ("abandoned: rule removed", Step::Abandoned),
            ("read:closed", Step::Read { closed: true }),
            ("read:open", Step::Read { closed: false }),
            (
                "skipped:farewell: cannot read communications: 500",
                Step::Skipped(Call::Farewell, "cannot read communications: 500".into()),
            ),
            (
                "failed:wrapup: cannot read participants: 500",
                Step::Failed(
                    Call::Wrapup { participant: None },
                    "cannot read participants: 500".into(),
                ),
            ),
            (
                &format!("sent:wrapup:{p}"),
                Step::Sent(Call::Wrapup {
                    participant: Some(p.into()),
                }),
            ),
            (
                &format!("failed:wrapup:{p}: 400 bad code"),
                Step::Failed(
                    Call::Wrapup {
                        participant: Some(p.into()),
                    },
                    "400 bad code".into(),
                ),
            ),
        ];
        for (text, step) in cases {
            assert_eq!(text.parse::<Step>(), Ok(step.clone()), "{text}");
            assert_eq!(step.to_string(), text);
        }
    }

    #[test]
    fn unknown_text_is_an_error_not_a_default() {
        for text in [
            "",
            "sent",
            "sent:farewel",
            "sent:farewell: why",
            "about_to_sent:farewell",
            "failed:farewell",
            "read:maybe",
            "dropped:teardown: some other reason",
            "unfinished",
            "waiting:login: teardown",
            "sent:wrapup:",
        ] {
            assert_eq!(
                text.parse::<Step>(),
                Err(UnknownStep(text.into())),
                "{text}"
            );
        }
    }
}

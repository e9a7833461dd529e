//! The tolerant reader: serde seeds and visitors that read a conversation object and its
//! participants in one pass, keeping only what the daemon needs and reading a field of a
//! wrong type as absent rather than failing the frame.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::model::{FrameError, InlineStr, ParticipantUpdate};

/// Which of `names` a map key is (`None`: another key), read without copying it.
pub(super) struct FieldOf<'n, N>(pub(super) &'n [N]);

impl<'de, N: AsRef<str>> DeserializeSeed<'de> for FieldOf<'_, N> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, N: AsRef<str>> Visitor<'de> for FieldOf<'_, N> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| n.as_ref() == v))
    }
}

/// A string, borrowed from the frame unless it has escapes; any other type is an error.
pub(super) struct CowStr<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `S`, or `None` for `null` (as an absent field would be).
pub(super) struct OrNull<S>(pub(super) S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<S::Value>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OrNull<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E>(self) -> Result<Option<S::Value>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<S::Value>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<S::Value>, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// A conversation object as read: its id and the participants that have one.
#[derive(Default)]
pub(super) struct ConversationBody<'a> {
    pub(super) id: Option<Cow<'a, str>>,
    pub(super) participants: Vec<ParticipantUpdate>,
}

const CONVERSATION_FIELDS: &[&str] = &["id", "participants"];

/// Reads a conversation object, skipping every field but `id` and `participants`.
/// `id` must be a string (or null); `participants` an array of objects.
pub(super) struct ConversationSeed<'w> {
    pub(super) wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for ConversationSeed<'_> {
    type Value = ConversationBody<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConversationSeed<'_> {
    type Value = ConversationBody<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a conversation object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = ConversationBody::default();
        while let Some(field) = map.next_key_seed(FieldOf(CONVERSATION_FIELDS))? {
            match field {
                Some(0) => body.id = map.next_value::<Option<CowStr<'de>>>()?.map(|s| s.0),
                Some(_) => {
                    body.participants = map.next_value_seed(ParticipantsSeed {
                        wanted: self.wanted,
                    })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

struct ParticipantsSeed<'w> {
    wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for ParticipantsSeed<'_> {
    type Value = Vec<ParticipantUpdate>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ParticipantsSeed<'_> {
    type Value = Vec<ParticipantUpdate>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of participants")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(4);
        while let Some(p) = seq.next_element_seed(ParticipantSeed {
            wanted: self.wanted,
        })? {
            v.extend(p);
        }
        Ok(v)
    }
}

const PARTICIPANT_FIELDS: &[&str] = &[
    "id",
    "purpose",
    "state",
    "endTime",
    "queue",
    "type",
    "attributes",
];

/// Reads one participant object, leniently: a field of a wrong type reads as absent. A
/// participant without a string id cannot be tracked across events: `None`.
struct ParticipantSeed<'w> {
    wanted: &'w [Box<str>],
}

impl<'de> DeserializeSeed<'de> for ParticipantSeed<'_> {
    type Value = Option<ParticipantUpdate>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ParticipantSeed<'_> {
    type Value = Option<ParticipantUpdate>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a participant object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        let mut purpose = None;
        let mut state = None;
        let mut end_time = None;
        let mut queue_id = None;
        let mut message_type = None;
        let mut attributes = Vec::new();
        while let Some(field) = map.next_key_seed(FieldOf(PARTICIPANT_FIELDS))? {
            match field {
                Some(0) => id = map.next_value::<Text<'de>>()?.get(),
                Some(1) => purpose = map.next_value::<Text<'de>>()?.get(),
                Some(2) => state = map.next_value::<Text<'de>>()?.get(),
                Some(3) => end_time = map.next_value::<Text<'de>>()?.get(),
                // A queue that is not an object with a string id is ignored, not fatal.
                Some(4) => queue_id = map.next_value_seed(EntityIdSeed)?,
                Some(5) => message_type = map.next_value::<Text<'de>>()?.get(),
                Some(_) => attributes = map.next_value_seed(AttributesSeed::new(self.wanted))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let ended = end_time.is_some_and(|t| !t.is_empty())
            || state.is_some_and(|s| {
                s.eq_ignore_ascii_case("disconnected") || s.eq_ignore_ascii_case("terminated")
            });
        Ok(Some(ParticipantUpdate {
            id: id.into(),
            purpose: purpose.as_deref().unwrap_or_default().into(),
            ended,
            queue_id,
            message_type: message_type.map(Into::into),
            attributes,
        }))
    }
}

/// Visitor methods for a value of any type that only a map can give a result: every
/// other type is skipped and reads as the default.
macro_rules! lenient_non_map {
    ($t:ty) => {
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$t, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// The string `id` of an entity reference (`{"id": "..."}`); anything else reads as
/// absent.
struct EntityIdSeed;

impl<'de> DeserializeSeed<'de> for EntityIdSeed {
    type Value = Option<InlineStr>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntityIdSeed {
    type Value = Option<InlineStr>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    lenient_non_map!(Option<InlineStr>);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(field) = map.next_key_seed(FieldOf(&["id"]))? {
            match field {
                Some(_) => id = map.next_value::<Text<'de>>()?.get().map(Into::into),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(id)
    }
}

/// The attributes some rule reads, from an attributes object: other names are skipped
/// unread, a value that is not a string is ignored, and anything but an object reads as
/// no attributes (the rest of the frame may carry what matters). Latest wins. `T` is the
/// text type kept ([`InlineStr`] for participants, `Box<str>` for events).
pub(super) struct AttributesSeed<'w, T> {
    wanted: &'w [Box<str>],
    text: std::marker::PhantomData<T>,
}

impl<'w, T> AttributesSeed<'w, T> {
    pub(super) fn new(wanted: &'w [Box<str>]) -> Self {
        AttributesSeed {
            wanted,
            text: std::marker::PhantomData,
        }
    }
}

impl<'de, T: for<'s> From<&'s str> + std::ops::Deref<Target = str>> DeserializeSeed<'de>
    for AttributesSeed<'_, T>
{
    type Value = Vec<(T, T)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: for<'s> From<&'s str> + std::ops::Deref<Target = str>> Visitor<'de>
    for AttributesSeed<'_, T>
{
    type Value = Vec<(T, T)>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    lenient_non_map!(Vec<(T, T)>);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept: Vec<(T, T)> = Vec::new();
        while let Some(field) = map.next_key_seed(FieldOf(self.wanted))? {
            let Some(i) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let Some(value) = map.next_value::<Text<'de>>()?.get() else {
                continue;
            };
            let name: &str = &self.wanted[i];
            match kept.iter_mut().find(|(k, _)| &**k == name) {
                Some(slot) => slot.1 = T::from(&value),
                None => kept.push((T::from(name), T::from(&value))),
            }
        }
        Ok(kept)
    }
}

/// A string field read leniently: any other JSON type (a number, `null`, an object)
/// reads as absent instead of failing the whole frame, which may carry what matters.
#[derive(Default)]
pub(super) struct Text<'a>(Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub(super) fn get(self) -> Option<Cow<'a, str>> {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Reads `raw`, a whole JSON text, with `seed`.
pub(super) fn read_raw<'de, S: DeserializeSeed<'de>>(
    raw: &'de str,
    seed: S,
) -> Result<S::Value, FrameError> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

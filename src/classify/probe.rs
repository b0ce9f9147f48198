//! The success-body probe: the facts of a non-streaming 2xx body ([`UpstreamInfo`]) read
//! with borrowed serde visitors, so the happy path neither builds a `Value` nor parses a
//! long answer.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::extensions::UpstreamInfo;

/// The facts of a success body ([`UpstreamInfo`]), from a borrowed probe (no `Value`).
///
/// The probe reads the top-level members in order and stops as soon as it has both
/// `model` and `provider` (`id`, which comes first, is read on the way): OpenRouter puts
/// them before `choices` and `usage`, so a long answer is not parsed at all. The finish
/// reasons and `usage` are found by byte scans (`facts::read`), when someone observes. When the probe does not stop
/// early the whole body must be valid JSON (as before); a `model` or `provider` that is
/// not a string (or `null`) gives `None`.
///
/// What only observers need (`id`, finish reasons, `usage`) is filled only when
/// `observed`: off the happy path otherwise.
pub(crate) fn upstream_info(body: &[u8], observed: bool) -> Option<UpstreamInfo> {
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::Deserializer::deserialize_map(&mut de, Probe(&mut found));
    // An early stop leaves the rest unread, which the deserializer reports as an error.
    if !found.both && (parsed.is_err() || de.end().is_err()) {
        return None;
    }
    if found.model.is_none() && found.provider.is_none() {
        return None;
    }
    let mut info = UpstreamInfo {
        model: found.model.map(|m| Arc::from(&*m)),
        provider: found.provider.map(|m| Arc::from(&*m)),
        ..UpstreamInfo::default()
    };
    if observed {
        info.id = found.id.map(|m| Arc::from(&*m));
        super::facts::read(body, &mut info);
    }
    Some(info)
}

#[derive(Default)]
struct Found<'de> {
    id: Option<Cow<'de, str>>,
    model: Option<Cow<'de, str>>,
    provider: Option<Cow<'de, str>>,
    /// Both were found, and the probe stopped there.
    both: bool,
}

/// Visits the top-level object, filling [`Found`].
struct Probe<'a, 'de>(&'a mut Found<'de>);

impl<'de> Visitor<'de> for Probe<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => self.0.id = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                Key::Model => self.0.model = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                Key::Provider => {
                    self.0.provider = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0)
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if self.0.model.is_some() && self.0.provider.is_some() {
                self.0.both = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A top-level key, compared without allocating.
enum Key {
    Id,
    Model,
    Provider,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "id" => Key::Id,
                    "model" => Key::Model,
                    "provider" => Key::Provider,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// A string value, borrowed from the body when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_info;

    fn info(body: &str) -> Option<(Option<String>, Option<String>)> {
        upstream_info(body.as_bytes(), true).map(|i| {
            (
                i.model.map(|m| m.to_string()),
                i.provider.map(|p| p.to_string()),
            )
        })
    }

    fn some(
        model: Option<&str>,
        provider: Option<&str>,
    ) -> Option<(Option<String>, Option<String>)> {
        Some((model.map(str::to_owned), provider.map(str::to_owned)))
    }

    #[test]
    fn reads_model_and_provider_wherever_they_are() {
        let tail = r#""choices":[{"message":{"content":"{\"model\":\"no\"}","model":"nested"}}],"usage":{"total_tokens":3}"#;
        let first =
            format!(r#"{{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o",{tail}}}"#);
        assert_eq!(info(&first), some(Some("openai/gpt-4o"), Some("OpenAI")));
        let last = format!(r#"{{"id":"gen-1",{tail},"model":"a/b","provider":"P"}}"#);
        assert_eq!(info(&last), some(Some("a/b"), Some("P")));
        assert_eq!(
            info(&format!(r#"{{{tail},"model":"a/b"}}"#)),
            some(Some("a/b"), None)
        );
        assert_eq!(
            info(r#"{"provider":"P","model":null}"#),
            some(None, Some("P"))
        );
        assert_eq!(info(r#"{"model":"a\/b\u0021"}"#), some(Some("a/b!"), None));
    }

    #[test]
    fn stops_once_both_are_known() {
        // The rest is never read: a cut body still names its model.
        assert_eq!(
            info(r#"{"provider":"OpenAI","model":"openai/gpt-4o","choices":[{"mess"#),
            some(Some("openai/gpt-4o"), Some("OpenAI"))
        );
    }

    #[test]
    fn nothing_from_bodies_it_cannot_read() {
        assert_eq!(info(r#"{"model":"a/b","choices":[{"mess"#), None);
        assert_eq!(info(r#"{"choices":[]}"#), None);
        assert_eq!(info(r#"{"model":42,"provider":"P"}"#), None);
        assert_eq!(info(r#"["model","a/b"]"#), None);
        assert_eq!(info(r#"{"model":"a/b"} trailing"#), None);
        assert_eq!(info(""), None);
    }
}

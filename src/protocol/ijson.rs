//! The I-JSON check (RFC 7493) for the JSON the broker stores raw and replays: message bodies and
//! call `data`.
//!
//! Those stay `RawValue` text end to end, so nothing else ever parses them; without this check a
//! lone surrogate (`"\ud800"`), a number beyond f64 (`1e400`) or a duplicate key would be stored
//! and replayed on every catch-up, where a strict client fails on the same frame at every sync.
//! The check is one validating pass over the text that builds no value: strings are checked by
//! serde_json's own decoding (borrowed from the text unless they hold escapes), numbers by its
//! f64 conversion, and keys are remembered only for objects with more than one key, on the stack
//! for up to [`INLINE_KEYS`] keys.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

/// Keys of one object compared by a linear scan, kept on the stack; a larger object switches to
/// a hash set.
const INLINE_KEYS: usize = 8;

/// Checks that `text` (already valid JSON) is I-JSON: no lone surrogates, no number outside the
/// f64 range, no object with a key twice. The error says what is wrong, without a position.
pub fn check(text: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    Strict
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|err| {
            let detail = err.to_string();
            let detail = detail.split(" at line ").next().unwrap_or(&detail);
            // serde_json names a lone surrogate by where its decoding stopped.
            if detail.contains("surrogate") || detail.contains("hex escape") {
                "a string holds a lone UTF-16 surrogate (an unpaired escape in D800-DFFF)".into()
            } else {
                detail.to_string()
            }
        })
}

/// Visits any JSON value, checking it and keeping nothing.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json already refuses numbers that overflow f64; this keeps the rule explicit.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }

    // serde_json decodes escapes before calling these, and refuses lone surrogates there.
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strict)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(Key)? {
            map.next_value_seed(Strict)?;
            if let Err(key) = keys.insert(key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
        }
        Ok(())
    }
}

/// The keys seen in one object so far.
enum Keys<'de> {
    Few(SmallVec<[Cow<'de, str>; INLINE_KEYS]>),
    Many(HashSet<Cow<'de, str>>),
}

impl Default for Keys<'_> {
    fn default() -> Self {
        Keys::Few(SmallVec::new())
    }
}

impl<'de> Keys<'de> {
    /// Adds a key; gives it back if the object already had it.
    fn insert(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        match self {
            Keys::Few(few) if few.contains(&key) => Err(key),
            Keys::Few(few) if few.len() < INLINE_KEYS => {
                few.push(key);
                Ok(())
            }
            Keys::Few(few) => {
                let mut many: HashSet<_> = few.drain(..).collect();
                many.insert(key);
                *self = Keys::Many(many);
                Ok(())
            }
            Keys::Many(many) if many.contains(&key) => Err(key),
            Keys::Many(many) => {
                many.insert(key);
                Ok(())
            }
        }
    }
}

/// An object key, borrowed from the text unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ijson_is_accepted() {
        for text in [
            r#"null"#,
            r#""hi""#,
            r#"{"text":"hi","n":1,"f":-2.5e10,"big":18446744073709551615}"#,
            r#""\ud83d\ude00 \u00e9 \n""#,
            r#"[{"a":1},{"a":2},[],{}]"#,
            r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#,
            r#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9}"#,
            r#"123456789012345678901234567890"#,
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn poison_is_refused_with_what_is_wrong() {
        for (text, says) in [
            (r#""\ud800""#, "lone UTF-16 surrogate"),
            (r#"{"t":"x\udc00y"}"#, "lone UTF-16 surrogate"),
            (r#"1e400"#, "out of range"),
            (r#"[-1e400]"#, "out of range"),
            (r#"{"a":1,"a":2}"#, "duplicate key `a`"),
            (r#"{"a":1,"\u0061":2}"#, "duplicate key `a`"),
            (r#"[{"x":{"k":1,"j":[],"k":2}}]"#, "duplicate key `k`"),
            (
                r#"{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k3":3}"#,
                "duplicate key `k3`",
            ),
        ] {
            let err = check(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains("line"), "{text}: {err}");
        }
    }
}

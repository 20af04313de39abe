//! What a scenario binds while it runs (tokens, timestamps, epochs, file ids) and how an
//! example is compared with what the server sent.

use super::*;

/// Values bound while a scenario runs: user-token placeholders, example timestamps and epochs.
#[derive(Default)]
pub(super) struct Bindings {
    /// Placeholder text → real text (the app token, and `octu_<name>` → the issued token).
    pub(super) strings: HashMap<String, String>,
    /// Example `ts` → the real `ts` it stood for, so equal examples stay equal for real.
    pub(super) ts: HashMap<i64, i64>,
    /// Example nonzero `duration_ms` → the real duration it stood for (both records of a call).
    pub(super) durations: HashMap<i64, i64>,
    /// Example `epoch` → the real epoch a `welcome` showed for it.
    pub(super) epochs: HashMap<String, String>,
    /// Epochs a `login` sent as written (from another database): never bound afterwards.
    pub(super) foreign_epochs: BTreeSet<String>,
}

impl Bindings {
    pub(super) fn new() -> Bindings {
        let mut b = Bindings::default();
        b.strings
            .insert(APP_TOKEN_PLACEHOLDER.into(), APP_TOKEN.into());
        b.strings
            .insert(ADMIN_TOKEN_PLACEHOLDER.into(), ADMIN_TOKEN.into());
        b
    }

    /// Replaces every placeholder string in a request or frame with its real value.
    pub(super) fn fill(&self, value: &Value, errors: &mut Vec<String>) -> Value {
        match value {
            Value::String(s) => match (self.strings.get(s), repeat_placeholder(s)) {
                (Some(real), _) => Value::String(real.clone()),
                (None, Some(n)) => Value::String("x".repeat(n)),
                (None, None) => {
                    if is_token_placeholder(s) {
                        errors.push(format!("{s} is used before a response issued it"));
                    }
                    value.clone()
                }
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.fill(v, errors)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.fill(v, errors)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub(super) fn fill_text(&self, text: &str) -> String {
        self.strings
            .iter()
            .fold(text.to_string(), |acc, (placeholder, real)| {
                acc.replace(placeholder, real)
            })
    }
}

fn is_token_placeholder(s: &str) -> bool {
    token_prefix_of(s).is_some()
}

/// `octu_<name>` stands for a user token, `octa_<name>` for an app token a response issued,
/// `f_<name>` for a file id an upload answered.
fn token_prefix_of(s: &str) -> Option<&'static str> {
    if !s.ends_with('>') || s[..s.len() - 1].contains('>') {
        return None;
    }
    ["octu_<", "octa_<", "f_<"]
        .into_iter()
        .find(|p| s.starts_with(p))
        .map(|p| &p[..p.len() - 1])
}

/// A signed URL's query (`exp=<ms>&sig=<64 hex digits>`), which `?<signed>` stands for.
fn is_signed_query(query: &str) -> bool {
    let Some((exp, sig)) = query.split_once("&sig=") else {
        return false;
    };
    exp.strip_prefix("exp=")
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
        && sig.len() == 64
        && sig.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `"<x*N>"` in a request or a sent frame stands for a string of N `x` characters (for limits
/// that a readable example cannot reach).
fn repeat_placeholder(s: &str) -> Option<usize> {
    s.strip_prefix("<x*")?.strip_suffix('>')?.parse().ok()
}

/// Compares an example with what the server sent: exactly, except that `octu_<name>` matches
/// any `octu_` token (binding it), `ts` matches any positive integer (the same real value for
/// the same example value), a nonzero `duration_ms` matches any non-negative integer (the same
/// real value for the same example value; a call can be shorter than a millisecond, so 0 too),
/// a string `epoch` matches any non-empty string (the same real value for the same example
/// value, and different real values for different example values), a numeric `last_seen`
/// matches any integer, and `"<x*N>"` matches a string of N `x` characters. `duration_ms: 0` is
/// exact.
pub(super) fn compare(
    expected: &Value,
    actual: &Value,
    key: Option<&str>,
    path: &str,
    bind: &mut Bindings,
    diffs: &mut Vec<String>,
) {
    match (key, expected) {
        (_, Value::String(s)) if repeat_placeholder(s).is_some() => {
            let n = repeat_placeholder(s).unwrap_or_default();
            if actual.as_str() != Some("x".repeat(n).as_str()) {
                diffs.push(format!("{path}: expected {n} x characters, got {actual}"));
            }
        }
        (_, Value::String(s)) if is_token_placeholder(s) => {
            let prefix = token_prefix_of(s).unwrap_or(USER_TOKEN_PREFIX);
            let Some(real) = actual.as_str().filter(|a| a.starts_with(prefix)) else {
                diffs.push(format!(
                    "{path}: expected a token ({prefix}…), got {actual}"
                ));
                return;
            };
            match bind.strings.get(s) {
                Some(bound) if bound != real => {
                    diffs.push(format!("{path}: {s} is a different token than before"));
                }
                Some(_) => {}
                None => {
                    if bind.strings.values().any(|v| v == real) {
                        diffs.push(format!(
                            "{path}: {s} is a token issued before, not a fresh one"
                        ));
                    }
                    bind.strings.insert(s.clone(), real.to_string());
                }
            }
        }
        (_, Value::String(s)) if s.contains("f_<") => {
            // A file id inside a longer string (a URL): filled in from its binding.
            let filled = bind.fill_text(s);
            let (want, signed) = match filled.strip_suffix("?<signed>") {
                Some(base) => (base.to_string(), true),
                None => (filled.clone(), false),
            };
            let got = actual.as_str().unwrap_or_default();
            let ok = if filled.contains("f_<") {
                false
            } else if signed {
                got.split_once('?')
                    .is_some_and(|(base, query)| base == want && is_signed_query(query))
            } else {
                got == want
            };
            if !ok {
                diffs.push(format!("{path}: expected {s} (as {filled}), got {actual}"));
            }
        }
        (Some("expires"), Value::Number(_)) => {
            if actual.as_i64().is_none_or(|t| t <= 0) {
                diffs.push(format!("{path}: expected a timestamp in ms, got {actual}"));
            }
        }
        (Some("ts"), Value::Number(n)) => {
            let example = n.as_i64().unwrap_or_default();
            let Some(real) = actual.as_i64().filter(|t| *t > 0) else {
                diffs.push(format!("{path}: expected a timestamp in ms, got {actual}"));
                return;
            };
            match bind.ts.get(&example) {
                Some(bound) if *bound != real => diffs.push(format!(
                    "{path}: example ts {example} stood for {bound} before, now {real}"
                )),
                Some(_) => {}
                None => {
                    bind.ts.insert(example, real);
                }
            }
        }
        (Some("duration_ms"), Value::Number(n)) if n.as_i64() != Some(0) => {
            let example = n.as_i64().unwrap_or_default();
            let Some(real) = actual.as_i64().filter(|d| *d >= 0) else {
                diffs.push(format!("{path}: expected a duration in ms, got {actual}"));
                return;
            };
            match bind.durations.get(&example) {
                Some(bound) if *bound != real => diffs.push(format!(
                    "{path}: example duration_ms {example} stood for {bound} before, now {real}"
                )),
                Some(_) => {}
                None => {
                    bind.durations.insert(example, real);
                }
            }
        }
        (Some("epoch"), Value::String(example)) => {
            let Some(real) = actual.as_str().filter(|e| !e.is_empty()) else {
                diffs.push(format!(
                    "{path}: expected an epoch (a string), got {actual}"
                ));
                return;
            };
            match bind.epochs.get(example) {
                Some(bound) if bound != real => diffs.push(format!(
                    "{path}: example epoch {example} stood for {bound} before, now {real}"
                )),
                Some(_) => {}
                None => {
                    if let Some((other, _)) = bind.epochs.iter().find(|(_, v)| *v == real) {
                        diffs.push(format!(
                            "{path}: the real epoch {real} was shown as {other} before, not {example}"
                        ));
                    }
                    if bind.foreign_epochs.contains(example) {
                        diffs.push(format!(
                            "{path}: {example} was sent before as an epoch of another database"
                        ));
                    }
                    bind.epochs.insert(example.clone(), real.to_string());
                }
            }
        }
        (Some("last_seen" | "previous_valid_until"), Value::Number(_)) => {
            if !actual.is_i64() {
                diffs.push(format!("{path}: expected a timestamp in ms, got {actual}"));
            }
        }
        (_, Value::Object(want)) => {
            let Some(got) = actual.as_object() else {
                diffs.push(format!("{path}: expected {expected}, got {actual}"));
                return;
            };
            let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
            for k in keys {
                let sub = format!("{path}.{k}");
                match (want.get(k), got.get(k)) {
                    (Some(w), Some(g)) => compare(w, g, Some(k), &sub, bind, diffs),
                    (Some(w), None) => diffs.push(format!("{sub}: missing (expected {w})")),
                    (None, Some(g)) => diffs.push(format!("{sub}: not in the example (got {g})")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (_, Value::Array(want)) => match actual.as_array() {
            Some(got) if got.len() == want.len() => {
                for (i, (w, g)) in want.iter().zip(got).enumerate() {
                    compare(w, g, None, &format!("{path}[{i}]"), bind, diffs);
                }
            }
            _ => diffs.push(format!("{path}: expected {expected}, got {actual}")),
        },
        _ => {
            if expected != actual {
                diffs.push(format!("{path}: expected {expected}, got {actual}"));
            }
        }
    }
}

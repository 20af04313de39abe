//! Decoding helpers shared by the client frames, the server frames and the backend API: `op`
//! first ([`read_op`]), then that op's own struct ([`decode_fields`]/[`decode_value`]).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{BEYOND_MAX_ID, DecodeError, ErrorCode};

#[derive(Deserialize)]
struct OpOnly<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
}

/// Reads the `op` of a JSON object, with line and column for malformed JSON.
pub fn read_op(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    let peek: OpOnly<'_> = match serde_json::from_str(text) {
        Ok(peek) => peek,
        Err(err) if err.is_syntax() || err.is_eof() => return Err(malformed(&err)),
        Err(err) if err.to_string().starts_with("duplicate field") => {
            return Err(duplicate_field("op"));
        }
        Err(_) => {
            // Either not an object, or `op` is not a string: tell which.
            let value: Value = serde_json::from_str(text).map_err(|err| malformed(&err))?;
            return Err(match value {
                Value::Object(map) => DecodeError::new(
                    ErrorCode::WrongType,
                    format!(".op: expected a string, found {}", json_kind(&map["op"])),
                ),
                other => DecodeError::new(
                    ErrorCode::BadRequest,
                    format!("expected a JSON object, found {}", json_kind(&other)),
                ),
            });
        }
    };
    // serde fills a struct from an array by position; a frame must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::new(
            ErrorCode::BadRequest,
            "expected a JSON object, found an array",
        ));
    }
    peek.op
        .ok_or_else(|| DecodeError::new(ErrorCode::MissingField, "missing field `op`"))
}

/// A frame that names a field twice: which one counts is not obvious, so neither does.
fn duplicate_field(field: &str) -> DecodeError {
    DecodeError::new(
        ErrorCode::BadJson,
        format!("duplicate field `{field}`: name each field of a frame once"),
    )
}

/// The text without a leading UTF-8 byte order mark, which some (Windows) tools write before
/// JSON; it is not JSON whitespace, so serde_json would refuse the text at line 1, column 1.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{FEFF}').unwrap_or(text)
}

/// Refuses JSON nested deeper than `max` levels, by a scan that allocates nothing (so a
/// hostile frame cannot make the parser recurse or allocate first).
pub fn check_depth(text: &[u8], max: usize) -> Result<(), DecodeError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(DecodeError::new(
                        ErrorCode::TooDeep,
                        format!("JSON is nested deeper than {max} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes one op's own struct, naming the field path of a missing or mistyped field.
pub fn decode_fields<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return malformed(&inner);
        }
        field_error(&path, &inner.to_string())
    })
}

/// Decodes one op's struct from an already parsed JSON value (the backend API's path).
pub fn decode_value<T: DeserializeOwned>(value: &Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| field_error(&err.path().to_string(), &err.into_inner().to_string()))
}

fn field_error(path: &str, detail: &str) -> DecodeError {
    // serde_json's messages end in " at line L column C"; the path already says where.
    let detail = detail.split(" at line ").next().unwrap_or(detail);
    if let Some(field) = detail.strip_prefix("duplicate field ") {
        return duplicate_field(field.trim_matches('`'));
    }
    if let Some(rest) = detail.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        let full = if path == "." || path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return DecodeError::new(
            ErrorCode::MissingField,
            format!("missing field `{}`", full.trim_start_matches('.')),
        );
    }
    let path = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(".{}", path.trim_start_matches('.'))
    };
    if detail.contains(BEYOND_MAX_ID) {
        return DecodeError::new(ErrorCode::BadValue, format!("{path}: {detail}"));
    }
    DecodeError::new(
        ErrorCode::WrongType,
        format!("{path}: {}", plain_types(detail)),
    )
}

/// Replaces Rust type names in serde's messages with JSON words.
fn plain_types(detail: &str) -> String {
    let detail = match detail.find("expected struct ") {
        Some(at) => format!("{}expected an object", &detail[..at]),
        None => detail.to_string(),
    };
    detail
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
}

/// A malformed-JSON error that says the line and column, and what usually causes it.
pub fn malformed(err: &serde_json::Error) -> DecodeError {
    let detail = err.to_string();
    let detail = detail.split(" at line ").next().unwrap_or(&detail);
    let hint = if detail.contains("expected `,` or `}`") || detail.contains("expected `,` or `]`") {
        " (a comma is probably missing before this point)"
    } else if detail.contains("trailing comma") {
        " (remove the comma before the closing bracket)"
    } else {
        ""
    };
    DecodeError::new(
        ErrorCode::BadJson,
        format!(
            "malformed JSON at line {}, column {}: {detail}{hint}",
            err.line(),
            err.column()
        ),
    )
}

/// A JSON value's kind, in the words of the decoder's messages ("a string", "null", …).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes an internally tagged frame: `op` first, then that op's struct.
pub(super) fn decode_tagged<T>(
    text: &str,
    known: &[&str],
    by_op: impl FnOnce(&str, &str) -> Option<Result<T, DecodeError>>,
) -> Result<T, DecodeError> {
    let text = strip_bom(text);
    let op = read_op(text)?;
    by_op(&op, text).unwrap_or_else(|| {
        Err(DecodeError::new(
            ErrorCode::UnknownOp,
            format!("unknown op `{op}`; known ops: {}", known.join(", ")),
        ))
    })
}

//! Property tests of everything a client controls in a frame: random and mutated input never
//! panics, every refusal has a decoder's code and a message, and what decodes survives a round
//! trip. Inputs start from valid frames and are then mutated (fields removed, duplicated,
//! retyped, nested values replaced, ops swapped, bytes truncated, flipped or appended), because
//! purely random text is refused at its first byte and never reaches the per-op decoders.
//! More cases (a fuzzing run on the stable toolchain):
//! `PROPTEST_CASES=200000 cargo test -p octet --lib fuzz_`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

use super::*;

const VALID: &[&str] = &[
    r#"{"op":"login","token":"octu_x","appid":"a","since":3,"epoch":"e"}"#,
    r#"{"op":"send","id":"c1","to":"bob@example.com","body":{"text":"hi","n":[1,2,{"x":null}]}}"#,
    r#"{"op":"send","id":"c2","to":"bob@example.com","files":["f1","f2"]}"#,
    r#"{"op":"call","call":"c","action":"ring","to":"b","data":{"sdp":"v=0"}}"#,
    r#"{"op":"history","before":10,"limit":50}"#,
    r#"{"op":"ack","seq":7}"#,
    r#"{"op":"read","peer":"a@example.com","upto":3}"#,
    r#"{"op":"profile","set":{"name":"A","fields":{"k":1}}}"#,
    r#"{"op":"file_url","id":"f1"}"#,
    r#"{"op":"typing","to":"bob@example.com","state":"start"}"#,
    r#"{"op":"presence","subscribe":["bob@example.com"],"unsubscribe":["c@example.com"]}"#,
    r#"{"op":"devices"}"#,
    r#"{"op":"revoke","uid":2}"#,
];

/// The codes `ClientFrame::decode` may refuse with; anything else (say `internal`) is a bug.
const DECODE_CODES: &[ErrorCode] = &[
    ErrorCode::BadJson,
    ErrorCode::BadRequest,
    ErrorCode::UnknownOp,
    ErrorCode::MissingField,
    ErrorCode::WrongType,
    ErrorCode::BadValue,
];

/// JSON texts of every type, including ones a decoder must refuse: out of range, negative,
/// fractional, lone surrogates, nested, duplicate keys.
const ODD_VALUES: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "9223372036854775808",
    "18446744073709551616",
    "1e400",
    r#""""#,
    r#""x""#,
    r#""\ud800""#,
    "[]",
    "{}",
    "[[[[[1]]]]]",
    r#"{"a":1,"a":2}"#,
    r#""ring""#,
    r#""send""#,
];

/// Op names to swap in: every known op (its fields then mostly do not fit) and unknown ones.
const OPS: &[&str] = &[
    "login", "send", "call", "history", "ack", "read", "profile", "file_url", "typing", "",
    "LOGIN", "nope",
];

/// What to do to one top-level field of a valid frame (the index picks which).
#[derive(Debug, Clone)]
enum FieldEdit {
    Remove(Index),
    Retype(Index, &'static str),
    Duplicate(Index),
    AddUnknown(&'static str),
    SwapOp(&'static str),
    /// Replaces a value nested anywhere inside the frame (a `body` leaf, `set.name`, ...).
    Nested(Index, &'static str),
}

/// What to do to the bytes afterwards.
#[derive(Debug, Clone)]
enum ByteEdit {
    Keep,
    Truncate(Index),
    Flip(Vec<(Index, u8)>),
    Append(Vec<u8>),
    /// A valid prefix followed by random text.
    PrefixThen(Index, String),
    /// The frame inside an array: JSON, but not an object.
    Wrap,
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    let odd = || proptest::sample::select(ODD_VALUES);
    prop_oneof![
        any::<Index>().prop_map(FieldEdit::Remove),
        (any::<Index>(), odd()).prop_map(|(i, v)| FieldEdit::Retype(i, v)),
        any::<Index>().prop_map(FieldEdit::Duplicate),
        odd().prop_map(FieldEdit::AddUnknown),
        proptest::sample::select(OPS).prop_map(FieldEdit::SwapOp),
        (any::<Index>(), odd()).prop_map(|(i, v)| FieldEdit::Nested(i, v)),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        4 => Just(ByteEdit::Keep),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => proptest::collection::vec((any::<Index>(), any::<u8>()), 1..4).prop_map(ByteEdit::Flip),
        1 => proptest::collection::vec(any::<u8>(), 1..16).prop_map(ByteEdit::Append),
        1 => (any::<Index>(), ".{0,32}").prop_map(|(i, s)| ByteEdit::PrefixThen(i, s)),
        1 => Just(ByteEdit::Wrap),
    ]
}

/// A valid frame, then 0–2 field edits, then one byte edit.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0..VALID.len(),
        proptest::collection::vec(field_edit(), 0..3),
        byte_edit(),
    )
        .prop_map(|(pick, fields, bytes)| mutate(VALID[pick], &fields, &bytes))
}

/// Placeholder a nested edit puts in the tree, then replaces by raw (maybe invalid) JSON text.
const MARK: &str = "\u{1}octet-fuzz-mark";

fn mutate(valid: &str, fields: &[FieldEdit], bytes: &ByteEdit) -> Vec<u8> {
    let Value::Object(map) = serde_json::from_str(valid).unwrap() else {
        unreachable!("VALID holds objects")
    };
    // Raw (key, value text) pairs, so a key can appear twice and a value need not be valid.
    let mut entries: Vec<(String, String)> =
        map.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    for edit in fields {
        let n = entries.len();
        match edit {
            FieldEdit::Remove(i) if n > 0 => {
                entries.remove(i.index(n));
            }
            FieldEdit::Retype(i, v) if n > 0 => entries[i.index(n)].1 = v.to_string(),
            FieldEdit::Duplicate(i) if n > 0 => entries.push(entries[i.index(n)].clone()),
            FieldEdit::AddUnknown(v) => entries.push(("zz_unknown".into(), v.to_string())),
            FieldEdit::SwapOp(op) => match entries.iter_mut().find(|(k, _)| k == "op") {
                Some(entry) => entry.1 = Value::from(*op).to_string(),
                None => entries.push(("op".into(), Value::from(*op).to_string())),
            },
            FieldEdit::Nested(i, v) => {
                let nested: Vec<usize> = (0..n)
                    .filter(|&e| entries[e].1.starts_with(['{', '[']))
                    .collect();
                if nested.is_empty() {
                    continue;
                }
                let entry = &mut entries[nested[i.index(nested.len())]];
                let Ok(mut tree) = serde_json::from_str::<Value>(&entry.1) else {
                    continue;
                };
                let mut slots = Vec::new();
                pointers(&tree, String::new(), &mut slots);
                if let Some(slot) = slots.get(i.index(slots.len().max(1))).cloned()
                    && let Some(target) = tree.pointer_mut(&slot)
                {
                    *target = Value::from(MARK);
                    entry.1 = tree.to_string().replace(&Value::from(MARK).to_string(), v);
                }
            }
            _ => {}
        }
    }
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
        .collect();
    let mut out = format!("{{{}}}", body.join(",")).into_bytes();
    match bytes {
        ByteEdit::Keep => {}
        ByteEdit::Truncate(i) => out.truncate(i.index(out.len())),
        ByteEdit::Flip(flips) => {
            for (i, b) in flips {
                let at = i.index(out.len());
                out[at] = *b;
            }
        }
        ByteEdit::Append(tail) => out.extend_from_slice(tail),
        ByteEdit::PrefixThen(i, text) => {
            out.truncate(i.index(out.len()));
            out.extend_from_slice(text.as_bytes());
        }
        ByteEdit::Wrap => {
            out.insert(0, b'[');
            out.push(b']');
        }
    }
    out
}

/// JSON pointers to every value below `value` (not `value` itself).
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        let path = format!("{at}/{key}");
        out.push(path.clone());
        pointers(child, path, out);
    }
}

fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Decodes `text` every way the broker does and checks what each answer promises; returns the
/// decoder's verdict.
fn check(text: &str) -> Result<&'static str, DecodeError> {
    let verdict = match ClientFrame::decode(text) {
        Ok(frame) => {
            // What decodes can be sent again: the encoding decodes to the same op.
            let again = serde_json::to_string(&frame).unwrap();
            let decoded = ClientFrame::decode(&again)
                .unwrap_or_else(|e| panic!("{text:?} decoded, its encoding {again:?} not: {e}"));
            assert_eq!(decoded.op(), frame.op(), "{text:?}");
            if let ClientFrame::Send(send) = &frame {
                // The error frame of a later refusal (say duplicate_id) names the client id.
                assert_eq!(
                    ClientFrame::ids_of(text).0.as_deref(),
                    Some(send.id.as_str())
                );
            }
            Ok(frame.op())
        }
        Err(err) => {
            assert!(!err.message.is_empty(), "{text:?} → empty message");
            assert!(
                DECODE_CODES.contains(&err.code),
                "{text:?} → {} ({})",
                err.code,
                err.message
            );
            Err(err)
        }
    };
    if let Ok(value) = serde_json::from_str::<Value>(strip_bom(text)) {
        // The allocation-free scan counts what the parser sees, strings and all.
        let deep = nesting(&value);
        assert_eq!(
            check_depth(text.as_bytes(), 32).is_ok(),
            deep <= 32,
            "{text:?} is nested {deep} deep"
        );
        if let Some(patch) = value.get("set").and_then(Value::as_object)
            && let Err(err) = check_profile_patch(".set", patch)
        {
            assert!(!err.message.is_empty());
        }
    }
    verdict
}

fn check_bytes(bytes: &[u8]) -> Result<&'static str, DecodeError> {
    let _ = check_depth(bytes, 32);
    check(&String::from_utf8_lossy(bytes))
}

proptest! {
    #[test]
    fn fuzz_valid_prefix_then_random_text_never_panics(
        pick in 0..VALID.len(),
        cut in any::<Index>(),
        text in ".{0,64}",
    ) {
        let valid = VALID[pick];
        let mut cut = cut.index(valid.len() + 1);
        while !valid.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = check(&format!("{}{text}", &valid[..cut]));
    }

    #[test]
    fn fuzz_structurally_mutated_frames_never_panic(bytes in mutated_frame()) {
        let _ = check_bytes(&bytes);
    }

    #[test]
    fn fuzz_byte_edited_valid_frames_never_panic(
        pick in 0..VALID.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = VALID[pick].as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at % (bytes.len() + 1);
            match kind {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => { bytes.remove(at); }
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        let _ = check_bytes(&bytes);
    }

    #[test]
    fn fuzz_random_bytes_as_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = check_bytes(&bytes);
    }

    #[test]
    fn fuzz_depth_check_agrees_with_nesting(depth in 0usize..80) {
        let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert_eq!(check_depth(text.as_bytes(), 32).is_ok(), depth <= 32);
    }
}

/// The mutated inputs reach the per-op decoders: a fixed sample (seeded, so the numbers do not
/// drift) decodes often enough and meets every decoder refusal, not only malformed JSON.
#[test]
fn fuzz_mutations_reach_every_decoder_state() {
    // Where serde_json reports text it refused before reading anything of the frame.
    const FIRST_BYTE: &[&str] = &["line 1, column 0:", "line 1, column 1:"];
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = mutated_frame();
    let total = 3000;
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..total {
        let bytes = strategy.new_tree(&mut runner).unwrap().current();
        let verdict = match check_bytes(&bytes) {
            Ok(op) => format!("ok {op}"),
            Err(err) if FIRST_BYTE.iter().any(|at| err.message.contains(at)) => {
                "refused at the first byte".into()
            }
            Err(err) => err.code.as_str().to_string(),
        };
        *verdicts.entry(verdict).or_default() += 1;
    }
    let count = |key: &str| verdicts.get(key).copied().unwrap_or(0);
    let ok: usize = verdicts
        .iter()
        .filter(|(k, _)| k.starts_with("ok "))
        .map(|(_, n)| n)
        .sum();
    assert!(
        ok * 10 >= total,
        "only {ok} of {total} decoded: {verdicts:?}"
    );
    let shallow = count("refused at the first byte");
    assert!(
        shallow * 10 <= total,
        "{shallow} of {total} refused at once: {verdicts:?}"
    );
    for code in DECODE_CODES {
        assert!(
            count(code.as_str()) > 0,
            "no input met `{code}`: {verdicts:?}"
        );
    }
    for op in ClientFrame::OPS {
        assert!(
            count(&format!("ok {op}")) > 0,
            "no `{op}` decoded: {verdicts:?}"
        );
    }
}

/// Inputs that once were, or could be, trouble: replayed on every test run
/// (`fuzz/corpus/`; add a file for every crash a longer run finds). What the broker answers to
/// each is checked end to end by tests/it/raw_frames.rs against `fuzz/expected.txt`.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");
    let mut replayed = 0;
    for entry in std::fs::read_dir(dir).expect("fuzz/corpus exists") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = check_bytes(&bytes);
        replayed += 1;
    }
    assert!(replayed >= 10, "only {replayed} corpus files");
}

#[test]
fn every_valid_frame_decodes() {
    for text in VALID {
        ClientFrame::decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

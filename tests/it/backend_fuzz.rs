//! Property test of the backend API against a live broker: random and mutated requests never
//! crash it, always get a JSON answer with `result`, and a refusal changes nothing.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::harness::{APP_TOKEN, TestServer};

fn seeds() -> Vec<String> {
    [
        r#"{"op":"useradd","token":"TOKEN","user":{"address":"a@example.com","token":{"appid":"com.example.app","expiry":525600,"device":"d1"}}}"#,
        r#"{"op":"useradd","token":"TOKEN","user":{"address":"b@example.com","token":{"appid":"com.example.app","linkto":"a@example.com"}}}"#,
        r#"{"op":"devices","token":"TOKEN","user":{"address":"a@example.com"}}"#,
        r#"{"op":"tokendel","token":"TOKEN","uid":1}"#,
        r#"{"op":"userdel","token":"TOKEN","user":{"address":"zz@example.com"}}"#,
        r#"{"op":"profileset","token":"TOKEN","uid":1,"profile":{"name":"A"}}"#,
    ]
    .iter()
    .map(|s| s.replace("TOKEN", APP_TOKEN))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_backend_requests_never_break_the_broker() {
    let server = TestServer::start().await;
    server.device_token("a@example.com", "d0").await;
    let seeds = seeds();
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6),
    );
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    runner
        .run(&strategy, |(pick, edits)| {
            let mut bytes = seeds[pick].clone().into_bytes();
            for (at, byte, kind) in edits {
                let at = at % (bytes.len() + 1);
                match kind {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => {}
                }
            }
            let body = String::from_utf8_lossy(&bytes).into_owned();
            let (status, answer, changed) = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let before = server.snapshot();
                    let (status, answer) = server.backend_raw(&body).await;
                    let changed = server.snapshot() != before;
                    (status, answer, changed)
                })
            });
            prop_assert_eq!(status, 200, "{} → {}", body, answer);
            let result = answer["result"].as_bool();
            prop_assert!(result.is_some(), "{} → {}", body, answer);
            if result == Some(false) {
                prop_assert!(answer["error"].is_string() && answer["message"].is_string());
                prop_assert!(
                    !changed,
                    "a refusal changed the store: {} → {}",
                    body,
                    answer
                );
            } else {
                prop_assert!(answer.get("error").is_none_or(Value::is_null));
            }
            Ok(())
        })
        .unwrap();
    // The corpus of hostile inputs (fuzz/corpus/) as backend bodies: every one refused cleanly.
    let before = server.snapshot();
    for entry in std::fs::read_dir("fuzz/corpus").unwrap() {
        let path = entry.unwrap().path();
        let body = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let (status, answer) = server.backend_raw(&body).await;
        // Over the body limit is a transport error (413); everything else is a refusal.
        let expected = if body.len() > 64 * 1024 { 413 } else { 200 };
        assert_eq!(status, expected, "{}", path.display());
        assert_eq!(answer["result"], false, "{}: {answer}", path.display());
    }
    assert_eq!(server.snapshot(), before);
    // Still serving.
    server.device("c@example.com", "c").await;
}

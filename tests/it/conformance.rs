//! The Autobahn WebSocket conformance cases (run by `kosoku`, from PyPI) against the broker's
//! WebSocket layer through its `--conformance` echo endpoint. Fails when a case recorded in
//! `conformance/expected.json` as passing comes out worse; cases recorded as failing
//! (messages over the 64 KiB limit) or unimplemented (compression) are not run.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::harness::{TestServer, heavy};

/// Behaviours, best first.
fn rank(behavior: &str) -> u8 {
    match behavior {
        "OK" => 0,
        "NON-STRICT" | "INFORMATIONAL" => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_that_passed_still_pass() {
    let _heavy = heavy().await;
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string("conformance/expected.json").unwrap())
            .unwrap();
    let recorded: BTreeMap<String, String> = recorded["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(case, behavior)| (case.clone(), behavior.as_str().unwrap().to_string()))
        .collect();
    let server = TestServer::start_with(|c| c.conformance = true).await;
    let out = tempfile::tempdir().unwrap();
    let mut kosoku = Command::new("kosoku");
    kosoku.args(["-p", "4", "-o"]).arg(out.path());
    for (case, behavior) in &recorded {
        if rank(behavior) == 2 {
            kosoku.args(["-x", case]);
        }
    }
    kosoku.arg(server.addr.to_string());
    let status = tokio::task::spawn_blocking(move || kosoku.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| {
            panic!("kosoku is not installed ({err}): `pip install kosoku` (scripts/test does it)")
        });
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("index.json")).unwrap_or_else(|err| {
            panic!(
                "kosoku wrote no report ({err}); stderr: {}",
                String::from_utf8_lossy(&status.stderr)
            )
        }),
    )
    .unwrap();
    let results = index
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_object()
        .unwrap();
    let mut worse = Vec::new();
    let mut ran = 0;
    for (case, behavior) in &recorded {
        if rank(behavior) == 2 {
            continue;
        }
        ran += 1;
        let now = results
            .get(case)
            .and_then(|r| r["behavior"].as_str())
            .unwrap_or("MISSING");
        if rank(now) > rank(behavior) {
            worse.push(format!("{case}: was {behavior}, now {now}"));
        }
    }
    assert!(ran > 250, "only {ran} cases ran");
    assert!(
        worse.is_empty(),
        "conformance regressions:\n{}",
        worse.join("\n")
    );
}

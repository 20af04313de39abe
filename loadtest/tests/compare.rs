//! `compare.sh` end to end at tiny scale, with the debug binaries this test run built: octet,
//! NATS core and JetStream (a real nats-server, Debian's package; `scripts/test` installs it),
//! one run, two rates. Every broker must be in the table with every message accounted for. The
//! performance targets are checked in the benchmark itself, never here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The octet binary next to this package's (both in the workspace's target dir), built now so it
/// is this tree's (`cargo test -p octet-loadtest` alone does not build other packages' binaries).
fn octet_bin(loadtest: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "octet", "--bin", "octet"]);
    // The same profile as this test's binaries (`cargo test --release` puts them in release/).
    if loadtest.parent().and_then(|d| d.file_name()) == Some("release".as_ref()) {
        build.arg("--release");
    }
    let status = build.current_dir(workspace()).status().expect("cargo runs");
    assert!(status.success(), "cargo build -p octet failed");
    let bin = loadtest.with_file_name("octet");
    assert!(bin.exists(), "no octet binary at {}", bin.display());
    bin
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn compare_runs_every_broker_end_to_end_and_accounts_for_every_message() {
    assert!(
        Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok(),
        "nats-server is not installed: apt-get install nats-server (scripts/test does it)"
    );
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_octet-loadtest"));
    let octet = octet_bin(&loadtest);
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // Pinned, as the benchmark runs: the broker on CPU 1, the generator on CPU 0.
    let output = Command::new(workspace().join("loadtest/compare.sh"))
        .args([
            "--pin",
            "--runs",
            "1",
            "--rates",
            "50,100",
            "--measure",
            "1",
        ])
        .args([
            "--warmup",
            "0",
            "--persons",
            "4",
            "--senders",
            "4",
            "--devices",
            "3",
            "--brokers",
            "octet,webhooks,nats,jetstream",
        ])
        .arg("--octet-bin")
        .arg(&octet)
        .arg("--loadtest-bin")
        .arg(&loadtest)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("compare.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare.sh failed\n{stdout}\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "took {:?}",
        started.elapsed()
    );

    // The table: every broker, both ratios, both rates, every metric.
    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("rate |"))
        .unwrap_or_else(|| panic!("no table in\n{stdout}"));
    for column in [
        "octet",
        "octet+webhooks",
        "NATS",
        "JetStream",
        "octet/octet+webhooks",
        "octet/NATS",
        "octet/JetStream",
    ] {
        assert!(header.contains(column), "{column} missing: {header}");
    }
    for rate in ["50", "100"] {
        for metric in [
            "deliveries/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "sent p99 µs",
            "server CPU s",
            "deliv / CPU-s",
            "lost/dup/ooo",
        ] {
            let row = stdout
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{rate} | {metric}")))
                .unwrap_or_else(|| panic!("no {metric} row at {rate}/s in\n{stdout}"));
            if metric == "lost/dup/ooo" {
                assert_eq!(row.matches("0/0/0").count(), 4, "{row}");
            }
        }
    }
    assert!(
        stdout.contains("every message accounted for"),
        "something lost, duplicated, out of order or unacknowledged:\n{stdout}"
    );
    let ceiling = stdout
        .lines()
        .find(|l| l.starts_with("ceiling"))
        .unwrap_or_else(|| panic!("no ceiling line in\n{stdout}"));
    // Whether a broker kept up at these rates depends on the machine (other tests run
    // beside this one): only that each broker has its ceiling reported is checked here.
    for broker in ["octet ", "octet+webhooks ", "NATS ", "JetStream "] {
        assert!(ceiling.contains(broker), "{broker} missing: {ceiling}");
    }

    // The webhook receiver ran beside octet+webhooks and was stopped cleanly (how many events
    // it got depends on how much of the run is older than the push grace).
    let events = std::fs::read_to_string(out.path().join("run1-webhooks.events"))
        .expect("the webhook receiver wrote its count");
    events.trim().parse::<u64>().expect("a count of events");

    // The JSON: every run's report and the summary.
    for broker in ["octet", "webhooks", "nats", "jetstream"] {
        let path = out.path().join(format!("run1-{broker}.json"));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let totals = &report["totals"];
        assert!(totals["expected"].as_u64().unwrap() > 0, "{totals}");
        assert_eq!(totals["expected"], totals["received"], "{broker}: {totals}");
        assert_eq!(totals["lost"], 0, "{broker}: {totals}");
        assert!(
            report["phases"][0]["server_cpu_seconds"].is_number(),
            "{broker}: no server CPU reading"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    for (broker, acks) in [
        ("octet", true),
        ("webhooks", true),
        ("nats", false),
        ("jetstream", true),
    ] {
        let accounting = &summary["accounting"][broker];
        assert_eq!(accounting["deliveries"]["lost"], 0, "{summary}");
        if acks {
            assert_eq!(
                accounting["acks"]["owed"], accounting["acks"]["stored"],
                "{broker}: {accounting}"
            );
        }
    }
}

//! `webhook-receiver`: the app backend's side of octet's webhooks, for measuring what the
//! outbox costs the broker (`compare.sh --brokers octet,webhooks`): answers every POST with 200
//! at once and counts the events it was given; on SIGTERM or SIGINT writes the count to
//! `--count-file` and exits. It does not check signatures (the broker's cost is the point; the
//! integration tests check them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::post;

/// Flags of `webhook-receiver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen (loopback only).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where to write the number of events received when stopped.
    #[arg(long)]
    pub count_file: PathBuf,
}

#[derive(serde::Deserialize)]
struct Batch {
    events: Vec<serde::de::IgnoredAny>,
}

async fn take(State(count): State<Arc<AtomicU64>>, body: axum::body::Bytes) -> &'static str {
    if let Ok(batch) = serde_json::from_slice::<Batch>(&body) {
        count.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
    }
    "ok"
}

/// Serves until SIGTERM or SIGINT, then writes the count.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen must be a loopback address"
    );
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/{*path}", post(take))
        .route("/", post(take))
        .with_state(count.clone());
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    std::fs::write(&args.count_file, count.load(Ordering::Relaxed).to_string())?;
    Ok(())
}

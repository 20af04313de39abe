//! The `octet` binary: parses the command line and runs the chosen subcommand.

use anyhow::Context;
use clap::Parser;
use octet::config::{Cli, Command, Config};
use octet::server;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(serve) => {
            let config = Config::from_serve(serve)?;
            let listen = config.listen;
            let data_dir = config.data_dir.clone();
            let prepared = server::prepare(config).await?;
            if let Some(token) = &prepared.generated_app_token {
                // Printed once, never logged: only its hash is stored.
                println!("octet: created an app token (shown only this once; keep it secret):");
                println!("{}", token.expose());
            }
            let listener = server::bind(listen)?;
            tracing::info!(
                "octet listening on http://{} (data in {})",
                listener.local_addr()?,
                data_dir.display()
            );
            server::run(listener, prepared.state, shutdown_signal())
                .await
                .context("serving")?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

//! The `octet` binary: parses the command line and runs the chosen subcommand.

use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use octet::config::{Cli, Command, Config, LogFormat, Settings};
use octet::server;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            let checked = Settings::from_file(&file).and_then(Config::from_settings);
            match checked {
                Ok(config) => {
                    println!(
                        "{}: valid (listen {}, data dir {})",
                        file.display(),
                        config.listen,
                        config.data_dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("{err}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Serve(serve) => {
            let config = Config::load(*serve)?;
            init_logging(config.log_format);
            let listen = config.listen;
            let data_dir = config.data_dir.clone();
            let prepared = server::prepare(config).await?;
            // Printed once, never logged: only the hashes are stored.
            if let Some(token) = &prepared.generated_app_token {
                println!("octet: created an app token (shown only this once; keep it secret):");
                println!("{}", token.expose());
            }
            if let Some(token) = &prepared.generated_admin_token {
                println!(
                    "octet: created an admin token for /dashboard and stats (shown only this once):"
                );
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

//! octet-loadtest: the load generator.
//!
//! Today it has one workload, `store`: how many sends per second one SQLite writer takes, with
//! group commit and without. The network workloads (connect, fanout, slow, the NATS comparison)
//! are tracked in their own issue.

mod store;

use clap::{Parser, Subcommand};

/// Load generator for octet.
#[derive(Parser)]
#[command(name = "octet-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends per second through the store's writer, with and without group commit.
    Store(store::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store(args) => store::run(args).await,
    }
}

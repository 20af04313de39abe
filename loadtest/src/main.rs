//! octet-loadtest: the load generator's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use octet_loadtest::target::{JetStream, Nats, Octet, Target, raise_nofile};
use octet_loadtest::{connect, fanout, slow, store};

/// Load generator for octet.
#[derive(Parser)]
#[command(name = "octet-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N device connections and measure logins/s and broker memory per connection.
    Connect {
        #[command(flatten)]
        broker: Broker,
        /// Persons.
        #[arg(long, default_value_t = 1250)]
        persons: u32,
        /// Devices per person.
        #[arg(long, default_value_t = 8)]
        devices: u32,
        /// Handshakes in flight.
        #[arg(long, default_value_t = 256)]
        inflight: usize,
    },
    /// Persons × devices; senders at a schedule of rates; latency, loss, CPU per delivery.
    Fanout {
        #[command(flatten)]
        broker: Broker,
        /// Persons.
        #[arg(long, default_value_t = 250)]
        persons: u32,
        /// Devices per person.
        #[arg(long, default_value_t = 8)]
        devices: u32,
        /// Sending devices (one per person).
        #[arg(long, default_value_t = 250)]
        senders: u32,
        /// Aggregate sends per second, one phase each.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 3000, 6000, 10000])]
        rates: Vec<u32>,
        /// Unmeasured seconds at the start of each phase.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Measured seconds per phase.
        #[arg(long, default_value_t = 5)]
        measure: u64,
        /// Handshakes in flight while connecting.
        #[arg(long, default_value_t = 256)]
        inflight: usize,
    },
    /// Fanout at one rate while 1% of the devices stop reading: the others' latency and loss,
    /// the broker's memory, and how the stalled devices were closed (octet: 4008).
    Slow {
        #[command(flatten)]
        broker: Broker,
        /// Persons.
        #[arg(long, default_value_t = 50)]
        persons: u32,
        /// Devices per person.
        #[arg(long, default_value_t = 8)]
        devices: u32,
        /// Sending devices (one per person).
        #[arg(long, default_value_t = 50)]
        senders: u32,
        /// Aggregate sends per second.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Unmeasured seconds at the start.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Measured seconds (the stalled devices' queues must fill in this time).
        #[arg(long, default_value_t = 20)]
        measure: u64,
        /// Percent of the devices that stop reading.
        #[arg(long, default_value_t = 1.0)]
        stall_percent: f64,
        /// Filler bytes per message body (the stalled devices' socket buffers and queues must
        /// fill within the run).
        #[arg(long, default_value_t = 4096)]
        pad: usize,
        /// Handshakes in flight while connecting.
        #[arg(long, default_value_t = 256)]
        inflight: usize,
    },
    /// Sends per second through the store's writer, with and without group commit.
    Store(store::Args),
    /// CPU per send of candidate SQLite log layouts, on the SQL alone.
    Schema(octet_loadtest::schema::Args),
    /// A webhook receiver that answers 200 and counts events (octet's `--webhook-url` in
    /// `compare.sh --brokers octet,webhooks`).
    WebhookReceiver(octet_loadtest::receiver::Args),
}

/// The brokers the generator can drive.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Octet,
    Nats,
    /// nats-server with JetStream on (`-js`): one file-storage stream over the persons'
    /// subjects, every publish acknowledged and carrying a `Nats-Msg-Id`.
    Jetstream,
}

/// Where the broker is and how to reach it.
#[derive(Args)]
struct Broker {
    /// The broker's address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Which broker is at --addr: octet, or nats-server's WebSocket listener (the same work
    /// in NATS terms, for comparison): NATS core, or JetStream (durable, acknowledged
    /// publishes; the server must run with `-js`).
    #[arg(long, value_enum, default_value = "octet")]
    target: Kind,
    /// octet's app token (as printed at its first start, or set with --app-token).
    #[arg(long, env = "OCTET_APP_TOKEN", hide_env_values = true)]
    app_token: Option<String>,
    /// The appid to issue tokens for.
    #[arg(long, default_value = "com.octet.loadtest")]
    appid: String,
    /// The broker's pid, to read its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Client source addresses 127.0.0.1..=N (each gives ~28k ports).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl Broker {
    fn target(&self) -> anyhow::Result<Target> {
        // Load is only ever sent to this machine.
        anyhow::ensure!(
            self.addr.ip().is_loopback(),
            "--addr must be a loopback address (127.0.0.0/8 or [::1])"
        );
        Ok(match self.target {
            Kind::Octet => Target::Octet(Octet {
                addr: self.addr,
                app_token: self
                    .app_token
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--app-token is required for octet"))?,
                appid: self.appid.clone(),
            }),
            Kind::Nats => Target::Nats(Nats { addr: self.addr }),
            Kind::Jetstream => Target::JetStream(JetStream::new(self.addr)),
        })
    }

    fn write_json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_string_pretty(value)?)?;
        }
        Ok(())
    }
}

/// Raises the open-file limit and checks that `persons` × `devices` sockets fit in it (with
/// room for the process's other files), saying what to lower when they do not.
fn room_for(persons: u32, devices: u32) -> anyhow::Result<()> {
    let limit = raise_nofile();
    let wanted = u64::from(persons) * u64::from(devices);
    anyhow::ensure!(
        wanted + 256 <= limit,
        "{wanted} connections need more than this process's {limit} open files; lower --persons"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Connect {
            broker,
            persons,
            devices,
            inflight,
        } => {
            room_for(persons, devices)?;
            let report = connect::run(
                &broker.target()?,
                persons,
                devices,
                inflight,
                broker.sources,
                broker.server_pid,
                !broker.quiet,
            )
            .await?;
            println!("connections        {}", report.connections);
            println!("logins/s           {:.0}", report.logins_per_sec);
            println!(
                "login p50 / p99    {} µs / {} µs",
                report.login_p50_us, report.login_p99_us
            );
            if let Some(per) = report.rss_per_connection_bytes {
                println!("broker RSS / conn  {:.1} KiB", per / 1024.0);
            }
            if let Some(cpu) = report.server_cpu_us_per_login {
                println!("broker CPU / login {cpu:.0} µs");
            }
            if let Some(cpu) = report.client_cpu_us_per_login {
                println!("loadgen CPU / login {cpu:.0} µs (same machine)");
            }
            broker.write_json(&report)?;
        }
        Command::Fanout {
            broker,
            persons,
            devices,
            senders,
            rates,
            warmup,
            measure,
            inflight,
        } => {
            anyhow::ensure!(persons >= 2, "--persons must be at least 2");
            room_for(persons, devices)?;
            let plan = fanout::Plan {
                persons,
                devices,
                senders: senders.min(persons),
                rates,
                warmup: Duration::from_secs(warmup),
                measure: Duration::from_secs(measure),
                inflight,
                sources: broker.sources,
                server_pid: broker.server_pid,
                progress: !broker.quiet,
            };
            let report = fanout::run(&broker.target()?, &plan).await?;
            println!(
                "{:>8} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>12} {:>8} {:>6} {:>6} {:>9}",
                "rate",
                "deliv/s",
                "p50 µs",
                "p99 µs",
                "p99.9 µs",
                "max µs",
                "sent p99",
                "cpu s",
                "deliv/cpu-s",
                "lost",
                "dup",
                "ooo",
                "in-phase"
            );
            for p in &report.phases {
                println!(
                    "{:>8} {:>12.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>12} {:>8} {:>6} {:>6} {:>8.1}%",
                    p.rate,
                    p.window_deliveries_per_sec,
                    p.latency.p50_us,
                    p.latency.p99_us,
                    p.latency.p999_us,
                    p.latency.max_us,
                    p.ack_latency
                        .map(|l| l.p99_us.to_string())
                        .unwrap_or("-".into()),
                    p.server_cpu_seconds
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or("-".into()),
                    p.deliveries_per_cpu_second
                        .map(|c| format!("{c:.0}"))
                        .unwrap_or("-".into()),
                    p.lost,
                    p.duplicated,
                    p.out_of_order,
                    p.delivered_share * 100.0,
                );
            }
            let t = report.totals;
            println!(
                "expected {} received {} lost {} duplicated {} out-of-order {}",
                t.expected, t.received, t.lost, t.duplicated, t.out_of_order
            );
            if let Some(a) = report.acks {
                println!(
                    "acknowledged sends: owed {} stored {} refused {} missing {}",
                    a.owed, a.stored, a.refused, a.missing
                );
            }
            match report.headline_rate {
                Some(rate) => println!(
                    "headline: {rate} sends/s ({:.0} deliveries/s) with p99 ≤ 10 ms and nothing lost",
                    report.headline_deliveries_per_sec.unwrap_or_default()
                ),
                None => println!("headline: no rate met p99 ≤ 10 ms with nothing lost"),
            }
            match report.ceiling_rate {
                Some(rate) => println!(
                    "ceiling: {rate} sends/s ({:.0} deliveries/s, p99 {} µs): ≥ {:.0}% delivered within the phase, nothing lost",
                    report.ceiling_deliveries_per_sec.unwrap_or_default(),
                    report.ceiling_p99_us.unwrap_or_default(),
                    fanout::KEPT_UP_SHARE * 100.0
                ),
                None => println!("ceiling: no rate kept up"),
            }
            broker.write_json(&report)?;
        }
        Command::Slow {
            broker,
            persons,
            devices,
            senders,
            rate,
            warmup,
            measure,
            stall_percent,
            pad,
            inflight,
        } => {
            room_for(persons, devices)?;
            let plan = slow::Plan {
                persons,
                devices,
                senders: senders.min(persons),
                rate,
                warmup: Duration::from_secs(warmup),
                measure: Duration::from_secs(measure),
                stall_percent,
                pad,
                inflight,
                sources: broker.sources,
                server_pid: broker.server_pid,
                progress: !broker.quiet,
            };
            let target = broker.target()?;
            let r = slow::run(&target, &plan).await?;
            let mib = |b: Option<u64>| {
                b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
                    .unwrap_or("-".into())
            };
            println!(
                "connections        {} ({} stalled)",
                r.connections, r.stalled
            );
            println!("sends              {} ({rate}/s)", r.sends);
            println!("others' deliv/s    {:.0}", r.deliveries_per_sec);
            println!(
                "others' latency    p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                r.latency.p50_us, r.latency.p99_us, r.latency.p999_us, r.latency.max_us
            );
            let t = r.totals;
            println!(
                "others' accounting expected {} received {} lost {} duplicated {} out-of-order {}",
                t.expected, t.received, t.lost, t.duplicated, t.out_of_order
            );
            println!(
                "broker RSS         start {}, peak {}, end {}",
                mib(r.rss_start_bytes),
                mib(r.rss_peak_bytes),
                mib(r.rss_end_bytes)
            );
            if let Some(cpu) = r.server_cpu_seconds {
                println!("broker CPU         {cpu:.2} s in the measured window");
            }
            for (outcome, n) in &r.stalled_outcomes {
                println!("stalled devices    {n} × {outcome}");
            }
            if matches!(target, Target::Nats(_) | Target::JetStream(_)) {
                println!(
                    "(NATS has no close codes: it drops a slow consumer's connection once a write \
                     stalls past its write_deadline, or its pending bytes exceed max_pending)"
                );
            }
            broker.write_json(&r)?;
        }
        Command::Store(args) => store::run(args).await?,
        Command::Schema(args) => {
            octet_loadtest::schema::run(&args)?;
        }
        Command::WebhookReceiver(args) => octet_loadtest::receiver::run(args).await?,
    }
    Ok(())
}

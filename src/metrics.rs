//! Prometheus metrics, one registry per server (no global recorder, so tests that run several
//! servers in one process see their own numbers). `GET /metrics` renders it in text format.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The ops most frames out carry (their counters are cached).
const OUT_OPS: [&str; 4] = ["message", "sent", "welcome", "synced"];

/// Every metric octet exports. Names follow Prometheus conventions (`_total`, `_seconds`).
pub struct Metrics {
    registry: Registry,
    /// `frames_out` children for the common ops, resolved once: looking a label up takes a
    /// lock shared by every writer, and it ran once per delivered frame.
    frames_out_by_op: [std::sync::OnceLock<IntCounter>; OUT_OPS.len()],
    /// WebSocket connections open (logged in or not).
    pub connections: IntGauge,
    /// Persons with at least one live device (set at scrape time from the router).
    pub persons_online: IntGauge,
    /// Logged-in connections in the routing table (set at scrape time from the router).
    pub routed_connections: IntGauge,
    /// WebSockets not logged in yet (set at scrape time; capped by `max_anonymous`).
    pub anonymous_connections: IntGauge,
    /// Open HTTP connections, upgraded WebSockets not included (set at scrape time; capped by
    /// `max_http_connections`).
    pub http_connections: IntGauge,
    /// Logins by result: ok, auth_failed, bad_frame, timeout.
    pub logins: IntCounterVec,
    /// Frames received from devices, by op (`invalid` for frames that did not decode).
    pub frames_in: IntCounterVec,
    /// Frames written to devices, by op.
    pub frames_out: IntCounterVec,
    /// Messages stored (`sent` answered; retries not counted).
    pub messages: IntCounter,
    /// Message frames handed to device queues.
    pub deliveries: IntCounter,
    /// Devices one message reached (recipient's devices plus the sender's other devices).
    pub fanout_width: Histogram,
    /// From a `send` arriving to its frames sitting in every target's queue.
    pub send_to_deliver: Histogram,
    /// Connections closed as slow consumers (4008).
    pub slow_consumer_closes: IntCounter,
    /// Jobs per store transaction (group commit).
    pub store_batch_size: Histogram,
    /// Time to run and commit one store transaction.
    pub store_batch_seconds: Histogram,
    /// Backend API calls by op and result (`ok` or the error code).
    pub backend_calls: IntCounterVec,
    /// Errors sent to clients, by code: WebSocket `error` frames and backend refusals. The
    /// codes are a fixed set (`ErrorCode`), so the label set stays bounded.
    pub errors: IntCounterVec,
    /// Uploads stored (`POST /files` answered).
    pub files_uploaded: IntCounter,
    /// Bytes of those uploads.
    pub file_bytes_uploaded: IntCounter,
    /// Downloads served (files and previews, whole or ranges).
    pub file_downloads: IntCounter,
    /// Images decoded for a preview (once per upload of bytes its person had not stored).
    pub file_previews: IntCounter,
    /// Webhook events by outcome: `delivered` (a 2xx), `skipped` (acked in time, or the person
    /// was deleted), `dead` (retry window over, or the outbox was full).
    pub webhook_events: IntCounterVec,
    /// Webhook events waiting in the outbox (set every few seconds by the delivery loop).
    pub webhook_pending: IntGauge,
    /// Time of each webhook request, answered or not.
    pub webhook_request_seconds: Histogram,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ];
        let metrics = Metrics {
            connections: IntGauge::new("octet_connections", "WebSocket connections open").unwrap(),
            persons_online: IntGauge::new(
                "octet_persons_online",
                "Persons with at least one live device",
            )
            .unwrap(),
            routed_connections: IntGauge::new(
                "octet_routed_connections",
                "Logged-in connections in the routing table",
            )
            .unwrap(),
            anonymous_connections: IntGauge::new(
                "octet_anonymous_connections",
                "WebSockets open that have not logged in yet",
            )
            .unwrap(),
            http_connections: IntGauge::new(
                "octet_http_connections",
                "Open HTTP connections (upgraded WebSockets not included)",
            )
            .unwrap(),
            logins: IntCounterVec::new(
                Opts::new("octet_logins_total", "Logins by result"),
                &["result"],
            )
            .unwrap(),
            frames_in: IntCounterVec::new(
                Opts::new(
                    "octet_frames_in_total",
                    "Frames received from devices, by op",
                ),
                &["op"],
            )
            .unwrap(),
            frames_out: IntCounterVec::new(
                Opts::new("octet_frames_out_total", "Frames written to devices, by op"),
                &["op"],
            )
            .unwrap(),
            messages: IntCounter::new("octet_messages_total", "Messages stored").unwrap(),
            deliveries: IntCounter::new(
                "octet_deliveries_total",
                "Message frames handed to device queues",
            )
            .unwrap(),
            fanout_width: Histogram::with_opts(
                HistogramOpts::new("octet_fanout_width", "Devices one message reached")
                    .buckets(vec![0.0, 1.0, 2.0, 4.0, 8.0, 15.0]),
            )
            .unwrap(),
            send_to_deliver: Histogram::with_opts(
                HistogramOpts::new(
                    "octet_send_to_deliver_seconds",
                    "From a send arriving to its frames queued for every target",
                )
                .buckets(latency.clone()),
            )
            .unwrap(),
            slow_consumer_closes: IntCounter::new(
                "octet_slow_consumer_closes_total",
                "Connections closed as slow consumers",
            )
            .unwrap(),
            store_batch_size: Histogram::with_opts(
                HistogramOpts::new("octet_store_batch_size", "Jobs per store transaction").buckets(
                    vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                ),
            )
            .unwrap(),
            store_batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "octet_store_batch_seconds",
                    "Time to run and commit one store transaction",
                )
                .buckets(latency),
            )
            .unwrap(),
            backend_calls: IntCounterVec::new(
                Opts::new(
                    "octet_backend_calls_total",
                    "Backend API calls by op and result",
                ),
                &["op", "result"],
            )
            .unwrap(),
            errors: IntCounterVec::new(
                Opts::new("octet_errors_total", "Errors sent to clients, by code"),
                &["code"],
            )
            .unwrap(),
            files_uploaded: IntCounter::new("octet_files_uploaded_total", "Uploads stored")
                .unwrap(),
            file_bytes_uploaded: IntCounter::new(
                "octet_file_bytes_uploaded_total",
                "Bytes of the uploads stored",
            )
            .unwrap(),
            file_downloads: IntCounter::new(
                "octet_file_downloads_total",
                "File and preview downloads served",
            )
            .unwrap(),
            file_previews: IntCounter::new(
                "octet_file_previews_total",
                "Images decoded for a preview",
            )
            .unwrap(),
            webhook_events: IntCounterVec::new(
                Opts::new(
                    "octet_webhook_events_total",
                    "Webhook events by outcome: delivered, skipped, dead",
                ),
                &["outcome"],
            )
            .unwrap(),
            webhook_pending: IntGauge::new(
                "octet_webhook_pending",
                "Webhook events waiting in the outbox",
            )
            .unwrap(),
            webhook_request_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "octet_webhook_request_seconds",
                    "Time of each webhook request, answered or not",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
            )
            .unwrap(),
            registry,
            frames_out_by_op: Default::default(),
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let r = &self.registry;
        r.register(Box::new(self.connections.clone())).unwrap();
        r.register(Box::new(self.persons_online.clone())).unwrap();
        r.register(Box::new(self.routed_connections.clone()))
            .unwrap();
        r.register(Box::new(self.anonymous_connections.clone()))
            .unwrap();
        r.register(Box::new(self.http_connections.clone())).unwrap();
        r.register(Box::new(self.logins.clone())).unwrap();
        r.register(Box::new(self.frames_in.clone())).unwrap();
        r.register(Box::new(self.frames_out.clone())).unwrap();
        r.register(Box::new(self.messages.clone())).unwrap();
        r.register(Box::new(self.deliveries.clone())).unwrap();
        r.register(Box::new(self.fanout_width.clone())).unwrap();
        r.register(Box::new(self.send_to_deliver.clone())).unwrap();
        r.register(Box::new(self.slow_consumer_closes.clone()))
            .unwrap();
        r.register(Box::new(self.store_batch_size.clone())).unwrap();
        r.register(Box::new(self.store_batch_seconds.clone()))
            .unwrap();
        r.register(Box::new(self.backend_calls.clone())).unwrap();
        r.register(Box::new(self.errors.clone())).unwrap();
        r.register(Box::new(self.files_uploaded.clone())).unwrap();
        r.register(Box::new(self.file_bytes_uploaded.clone()))
            .unwrap();
        r.register(Box::new(self.file_downloads.clone())).unwrap();
        r.register(Box::new(self.file_previews.clone())).unwrap();
        r.register(Box::new(self.webhook_events.clone())).unwrap();
        r.register(Box::new(self.webhook_pending.clone())).unwrap();
        r.register(Box::new(self.webhook_request_seconds.clone()))
            .unwrap();
    }

    /// Records one store transaction (the store's batch observer).
    pub fn observe_batch(&self, jobs: usize, took: Duration) {
        self.store_batch_size.observe(jobs as f64);
        self.store_batch_seconds.observe(took.as_secs_f64());
    }

    /// Counts a frame written to a device by the `op` at its start (frames are serialized with
    /// `op` first, so no parsing is needed).
    pub fn count_out(&self, frame: &str) {
        let op = frame
            .strip_prefix("{\"op\":\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("other");
        match OUT_OPS.iter().position(|known| *known == op) {
            Some(idx) => self.frames_out_by_op[idx]
                .get_or_init(|| self.frames_out.with_label_values(&[op]))
                .inc(),
            None => self.frames_out.with_label_values(&[op]).inc(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

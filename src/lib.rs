//! octet: a real-time message broker for people signed in on up to eight devices at once.
//!
//! Module map (ARCHITECTURE.md tells the whole story):
//! - [`protocol`]: every wire type, the error codes and close codes.
//! - [`config`]: flags, environment and the validated [`config::Config`].
//! - [`auth`]: token formats and hashing.
//! - [`store`]: durable state behind the [`store::Store`] trait (SQLite by default).
//! - [`router`]: the live table person → connections, fan-out and call state.
//! - [`fanout`]: stored events → frames → every live device, after commit.
//! - [`gateway`]: WebSocket connections (`GET /ws`).
//! - [`api`]: the backend HTTP API (`POST /backend`).
//! - [`limits`]: send rate, failed logins per address, the Origin allow-list.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.
//! - [`dashboard`]: the live admin dashboard at `GET /dashboard` and its event feed.
//! - [`state`]: the shared server state.
//! - [`server`]: wiring, startup and shutdown.
//! - [`wire`]: WebSocket frames as they leave the broker, encoded once.
//! - [`client`]: octet's own client, for tests, the load generator and examples.
//! - [`webhooks`]: event webhooks to the app's backend, from the durable outbox.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod edge;
pub mod fanout;
pub mod files;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod router;
pub mod server;
pub mod state;
pub mod store;
pub mod webhooks;
pub mod wire;

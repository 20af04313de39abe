//! Every type that crosses the wire: WebSocket frames in both directions, the backend API's
//! requests and responses, the error-code table and the WebSocket close codes.
//!
//! This is the only module whose types derive `Serialize`/`Deserialize` for the wire, and it
//! depends on nothing else inside octet. `proto/` documents the same types for humans.
//!
//! Frames are tagged by `op`. Message bodies stay raw JSON text end to end (`Box<RawValue>`),
//! and because serde cannot buffer a `RawValue` inside an internally tagged enum, decoding reads
//! the `op` first and then that op's own struct ([`decode_tagged`]).

mod backend;
mod client;
mod decode;
mod devices;
mod errors;
mod ijson;
mod server;
mod webhook;

pub use backend::*;
pub use client::*;
pub use decode::*;
pub use devices::*;
pub use errors::*;
pub use server::*;
pub use webhook::*;

/// A user id, as mesibo numbers them.
pub type Uid = u64;
/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[cfg(test)]
mod fuzz_tests;

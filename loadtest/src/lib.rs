//! The load generator's library: workloads (`connect`, `fanout`, `slow`, `store`, `schema`), the accounting of
//! what arrived, and readings of the broker process. `main.rs` is only the command line.

pub mod accounting;
pub mod connect;
pub mod fanout;
pub mod procstat;
pub mod receiver;
pub mod schema;
pub mod slow;
pub mod store;
pub mod target;

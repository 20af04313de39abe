//! The one integration-test binary: every module starts real servers through `harness`.

mod harness;

mod backend_errors;
mod backend_ops;
mod calls;
mod crash;
mod dashboard;
mod fanout;
mod login;
mod metrics;
mod proto_examples;
mod records;
mod sync;

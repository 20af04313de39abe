//! The one integration-test binary: every module starts real servers through `harness`.

mod harness;

mod backend_ops;
mod calls;
mod fanout;
mod login;
mod backend_errors;
mod proto_examples;

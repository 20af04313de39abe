//! The one integration-test binary: every module starts real servers through `harness`.

mod harness;

mod abuse;
mod admin;
mod backend_errors;
mod backend_fuzz;
mod backend_ops;
mod browser;
mod calls;
mod churn;
mod config;
mod conformance;
mod crash;
mod dashboard;
mod disk_full;
mod fanout;
mod faults;
mod files;
mod files_limits;
mod hardening_net;
mod hardening_store;
mod limits;
mod login;
mod metrics;
mod ordering;
mod origin;
mod proto_examples;
mod raw_frames;
mod readyz;
mod records;
mod sent_from;
mod seq_restart;
mod slowloris;
mod storm;
mod sync;
mod webhooks;

//! octet-loadtest: the load generator. Its workloads (connect, fanout, slow, the NATS
//! comparison) arrive with their own issue; until then it refuses to pretend.

fn main() {
    eprintln!("octet-loadtest: no workloads yet; the load generator is tracked in its own issue");
    std::process::exit(2);
}

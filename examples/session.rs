//! A device that stays connected: logs in, sends one message, and prints what arrives; kill and
//! restart the broker meanwhile and it reconnects by itself, missing and doubling nothing.
//!
//! ```text
//! cargo run --example session -- ws://127.0.0.1:8080/ws <user token> <appid> <to address>
//! ```

use octet::client::{Session, SessionEvent, SessionOptions};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, appid, to] = args.as_slice() else {
        anyhow::bail!("usage: session <ws url> <user token> <appid> <to address>");
    };
    let mut session = Session::start(SessionOptions::new(url, token, appid));
    let body = RawValue::from_string(r#"{"text":"hello from octet's Rust client"}"#.into())?;
    let sender = session.sender();
    let to = to.clone();
    tokio::spawn(async move {
        match sender.send(&to, &body).await {
            Ok(sent) => println!("sent: mid {} at seq {}", sent.mid, sent.seq),
            Err(err) => println!("not sent: {err}"),
        }
    });
    while let Some(event) = session.next().await {
        match event {
            SessionEvent::Connected(welcome) => println!("connected at seq {}", welcome.seq),
            SessionEvent::Event(frame) => println!("event: {frame:?}"),
            SessionEvent::Live(frame) => println!("live: {frame:?}"),
            SessionEvent::Resync { head } => {
                println!("resync: refilling from history up to {head}")
            }
            SessionEvent::Refilled { head, complete } => {
                // Incomplete: older events were pruned; page `history` for more if needed.
                println!("refilled up to {head}, complete: {complete}")
            }
            SessionEvent::Disconnected { code } => {
                println!("disconnected ({code:?}), reconnecting")
            }
            SessionEvent::Stopped { code, reason } => {
                println!("stopped ({code:?}): {reason}");
                break;
            }
        }
    }
    Ok(())
}

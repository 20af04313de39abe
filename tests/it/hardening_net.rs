//! Issue 13, network abuse: slow request bodies and connection caps, anonymous WebSockets,
//! the failed-login limiter, concurrent app token rotations and the protected `/metrics`.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{APP_TOKEN, TestServer};

/// Two (or more) rotations at once: rotations are serialized, so exactly one wins and the
/// others are refused (their token is by then the previous one); every token a `result:true`
/// answer carried works, as the current token (it can rotate again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_app_token_rotations_never_hand_out_a_dead_token() {
    let server = TestServer::start().await;
    let mut current = APP_TOKEN.to_string();
    // A few rounds, each racing 16 rotations with the current token.
    for round in 0..4 {
        let body = json!({"op":"apptokenrotate","token":current,"grace":0}).to_string();
        // Connected first, then every request written at once, so they overlap in the broker.
        let mut sockets = Vec::new();
        for _ in 0..16 {
            sockets.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let request = post_request("/backend", &body);
        for socket in &mut sockets {
            socket.write_all(request.as_bytes()).await.unwrap();
        }
        let answers = futures::future::join_all(sockets.into_iter().map(read_response)).await;
        let mut won = Vec::new();
        for (status, answer) in &answers {
            assert_eq!(*status, 200);
            if answer["result"] == json!(true) {
                won.push(answer["token"].as_str().unwrap().to_string());
            } else {
                assert_eq!(answer["error"], "bad_app_token", "{answer}");
            }
        }
        // Every token handed out works (grace 0: only the current one does).
        for token in &won {
            let useradd = json!({"op":"useradd","token":token,"user":{"address":"x@example.com"}});
            let answer = server.backend_raw(&useradd.to_string()).await.1;
            assert_eq!(
                answer["result"], true,
                "round {round}: a handed-out token is dead: {answer}"
            );
        }
        assert_eq!(
            won.len(),
            1,
            "round {round}: rotations were not serialized: {answers:?}"
        );
        current = won.pop().unwrap();
    }
}

/// A complete HTTP/1.1 POST of a JSON body, closing the connection after the answer.
fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one HTTP answer until the broker closes the connection (bounded by `WAIT`): the
/// status and the JSON body (null when there is none).
async fn read_response(mut socket: TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(crate::harness::WAIT, socket.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("answer read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

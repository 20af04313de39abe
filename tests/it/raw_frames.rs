//! Raw WebSocket frames a library would never send: each gets the right close code, and the
//! broker never allocates what a frame header merely declares.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestServer;

/// A hand-made client: an HTTP upgrade, then whatever bytes a test writes.
async fn upgraded(server: &TestServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// A masked client frame with the given first byte (FIN/opcode), declared length and payload.
fn frame(first: u8, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mask = [1u8, 2, 3, 4];
    if declared < 126 {
        out.push(0x80 | declared as u8);
    } else if declared <= u16::MAX as u64 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(declared as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&declared.to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until a close; returns the data frames before it (opcode, payload) and
/// the close code. A connection that ends without a close frame fails the test.
async fn frames_until_close(tcp: &mut TcpStream) -> (Vec<(u8, Vec<u8>)>, u16) {
    let mut buf = Vec::new();
    let mut at = 0;
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // Parse what we have: unmasked server frames.
        while buf.len() >= at + 2 {
            let opcode = buf[at] & 0x0f;
            let (len, header) = match buf[at + 1] & 0x7f {
                126 if buf.len() >= at + 4 => {
                    (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                }
                127 => panic!("the broker sent a huge frame"),
                126 => break,
                n => (n as usize, 2),
            };
            if buf.len() < at + header + len {
                break;
            }
            let payload = buf[at + header..at + header + len].to_vec();
            at += header + len;
            if opcode == 0x8 {
                assert!(payload.len() >= 2, "a close frame without a code");
                return (before, u16::from_be_bytes([payload[0], payload[1]]));
            }
            before.push((opcode, payload));
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("a close frame in time")
            .unwrap();
        assert!(read > 0, "the connection ended without a close frame");
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// Reads server frames until a close; returns its code.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    frames_until_close(tcp).await.1
}

#[tokio::test]
async fn a_reserved_opcode_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut tcp = upgraded(&server).await;
    tcp.write_all(&frame(0x83, 2, b"hi")).await.unwrap(); // opcode 3 is reserved
    assert_eq!(close_code(&mut tcp).await, 1002);
}

#[tokio::test]
async fn text_that_is_not_utf8_is_1007() {
    let server = TestServer::start().await;
    let mut tcp = upgraded(&server).await;
    tcp.write_all(&frame(0x81, 4, &[0xff, 0xfe, 0xfd, 0xfc]))
        .await
        .unwrap();
    let (before, code) = frames_until_close(&mut tcp).await;
    // The client learns why before the close: exactly one `error` frame with `bad_utf8`.
    let texts: Vec<serde_json::Value> = before
        .iter()
        .filter(|(opcode, _)| *opcode == 0x1)
        .map(|(_, payload)| serde_json::from_slice(payload).expect("a JSON text frame"))
        .collect();
    assert_eq!(texts.len(), 1, "frames before the close: {texts:?}");
    assert_eq!(texts[0]["op"], "error", "{}", texts[0]);
    assert_eq!(texts[0]["code"], "bad_utf8", "{}", texts[0]);
    assert_eq!(code, 1007);
}

#[tokio::test]
async fn a_huge_declared_length_is_refused_without_reading_it() {
    let server = TestServer::start().await;
    let mut tcp = upgraded(&server).await;
    // Declares 1 TiB and sends 4 bytes: the broker must answer from the header alone.
    tcp.write_all(&frame(0x81, 1 << 40, b"abcd")).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, 1009);
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_is_1009() {
    let server = TestServer::start().await;
    let mut tcp = upgraded(&server).await;
    let chunk = vec![b'a'; 40 * 1024];
    // Two fragments of 40 KiB each: each fits a frame, the message does not (64 KiB).
    tcp.write_all(&frame(0x01, chunk.len() as u64, &chunk))
        .await
        .unwrap();
    let _ = tcp
        .write_all(&frame(0x80, chunk.len() as u64, &chunk))
        .await;
    assert_eq!(close_code(&mut tcp).await, 1009);
}

/// What the broker answered to `text`: each frame's op (`error:<code>` for errors), then
/// `close:<code>`; `-` when nothing came within 300 ms.
async fn answers(dev: &mut crate::harness::Device, text: &str) -> String {
    dev.send_text(text).await;
    let mut seen = Vec::new();
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), dev.next()).await {
        match frame["op"].as_str().unwrap_or("?") {
            "closed" => {
                seen.push(format!("close:{}", frame["code"]));
                break;
            }
            "error" => seen.push(format!("error:{}", frame["code"].as_str().unwrap_or("?"))),
            op => seen.push(op.to_string()),
        }
    }
    if seen.is_empty() {
        "-".into()
    } else {
        seen.join(" ")
    }
}

/// Every file of `fuzz/corpus/` has its answers written down in `fuzz/expected.txt`, both as
/// the first frame of a connection and from a logged-in device, and the broker gives exactly
/// those (the unit tests only check that decoding does not panic).
#[tokio::test]
async fn the_fuzz_corpus_gets_the_expected_answers() {
    let expected_text = std::fs::read_to_string("fuzz/expected.txt").expect("fuzz/expected.txt");
    let mut expected = std::collections::BTreeMap::new();
    for line in expected_text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(parts.len(), 3, "fuzz/expected.txt: {line:?}");
        expected.insert(
            parts[0].to_string(),
            (parts[1].to_string(), parts[2].to_string()),
        );
    }
    let mut files: Vec<String> = std::fs::read_dir("fuzz/corpus")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let listed: Vec<&String> = expected.keys().collect();
    assert_eq!(
        files.iter().collect::<Vec<_>>(),
        listed,
        "fuzz/expected.txt lists other files"
    );

    let server = TestServer::start().await;
    // Each file on its own connections, all at once: most of the time is the 300 ms silence.
    let replays = files.iter().enumerate().map(|(n, file)| {
        let server = &server;
        async move {
            let bytes = std::fs::read(format!("fuzz/corpus/{file}")).unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut first = server.connect().await;
            let as_first = answers(&mut first, &text).await;
            let mut device = server.device(&format!("fuzz{n}@example.com"), "d").await;
            let logged_in = answers(&mut device, &text).await;
            (file.clone(), (as_first, logged_in))
        }
    });
    let got: std::collections::BTreeMap<String, (String, String)> =
        futures::future::join_all(replays)
            .await
            .into_iter()
            .collect();
    let wrong: Vec<String> = got
        .iter()
        .filter(|(file, answers)| expected.get(*file) != Some(answers))
        .map(|(file, (first, logged_in))| format!("{file} | {first} | {logged_in}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "answers differ from fuzz/expected.txt:\n{}",
        wrong.join("\n")
    );
}

/// Request headers: (name, value).
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A request to `/ws` that is not a valid WebSocket upgrade gets a clear refusal saying what
/// is missing, and opens nothing.
#[tokio::test]
async fn requests_that_are_not_upgrades_are_refused_clearly() {
    let server = TestServer::start().await;
    let url = format!("http://{}/ws", server.addr);
    let http = reqwest::Client::new();
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let cases: [(Headers, u16, &str); 4] = [
        (&[], 400, "Connection header"),
        (
            &[("connection", "upgrade"), ("upgrade", "h2c")],
            400,
            "Upgrade header",
        ),
        (
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "8"),
                key,
            ],
            400,
            "Sec-WebSocket-Version",
        ),
        (
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
            ],
            400,
            "Sec-WebSocket-Key",
        ),
    ];
    for (headers, status, says) in cases {
        let mut req = http.get(&url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let answer = req.send().await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{headers:?}");
        let text = answer.text().await.unwrap();
        assert!(text.contains(says), "{headers:?}: {text}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("octet_connections 0"),
        "no connection was opened"
    );
}

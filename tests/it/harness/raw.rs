//! WebSocket frames read from a bare socket.

use super::WAIT;

/// Reads a WebSocket's server frames from its bare socket until the close frame (skipping
/// every other frame) and returns its code and reason. Writes nothing, so nothing the peer
/// closed on can reset the socket and destroy the close in flight.
pub async fn read_close_raw(tcp: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    // Where the first frame not walked yet starts.
    let mut at = 0;
    loop {
        while buf.len() >= at + 2 {
            let (op, len7) = (buf[at] & 0x0f, (buf[at + 1] & 0x7f) as usize);
            let masked = buf[at + 1] & 0x80 != 0;
            let (len, mut head) = match len7 {
                126 if buf.len() >= at + 4 => {
                    (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4)
                }
                127 if buf.len() >= at + 10 => {
                    let bytes: [u8; 8] = buf[at + 2..at + 10].try_into().unwrap();
                    (u64::from_be_bytes(bytes) as usize, 10)
                }
                126 | 127 => break,
                n => (n, 2),
            };
            head += if masked { 4 } else { 0 };
            if buf.len() < at + head + len {
                break;
            }
            let payload = &buf[at + head..at + head + len];
            if op == 0x8 {
                assert!(!masked, "a server frame is never masked");
                assert!(len >= 2, "a close frame without a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
            at += head + len;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no close frame within {WAIT:?}"))
            .expect("the socket closes cleanly, not by a reset");
        assert!(n > 0, "the socket ended without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

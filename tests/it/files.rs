//! Files: upload, attachments on every device (live, catch-up, history, a new device),
//! authorized downloads, Range/ETag, signed URLs, previews, hostile images, limits and pruning.

mod delivery;
mod images;
mod pruning;
mod signed;
mod uploads;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Broker, Device, TestServer, WAIT};

/// A PNG of `w`×`h` with a gradient (and transparency when `alpha`).
pub fn png(w: u32, h: u32, alpha: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let picture: image::DynamicImage = if alpha {
        image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([x as u8, y as u8, 90, (x % 255) as u8])
        })
        .into()
    } else {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90])).into()
    };
    picture
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A JPEG of `w`×`h`.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::from(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x / 4) as u8, (y / 4) as u8, 200])
    }))
    .write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

/// `POST /files?name=…` with the bytes as the body.
pub async fn upload(server_addr: &str, token: &str, bytes: Vec<u8>, name: &str) -> (u16, Value) {
    let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let response = reqwest::Client::new()
        .post(format!("http://{server_addr}/files?name={name}"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .expect("upload answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

pub async fn upload_ok(server: &TestServer, token: &str, bytes: Vec<u8>, name: &str) -> Value {
    let (status, answer) = upload(&server.addr.to_string(), token, bytes, name).await;
    assert_eq!(status, 200, "upload refused: {answer}");
    assert_eq!(answer["result"], true);
    answer["file"].clone()
}

pub async fn get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    get_with(server, path, token, &[]).await
}

pub async fn get_with(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("download answered")
}

/// Every stored blob and preview on disk (not the upload dir).
pub fn stored(server: &TestServer) -> Vec<PathBuf> {
    let root = server.state.config.data_dir.join("files");
    let mut found = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap() == "tmp" {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            found.push(file.unwrap().path());
        }
    }
    found.sort();
    found
}

pub fn upload_dir_entries(server: &TestServer) -> usize {
    std::fs::read_dir(server.state.config.data_dir.join("files/tmp"))
        .unwrap()
        .count()
}

pub fn count(server: &TestServer, table: &str) -> i64 {
    let db = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits (at most [`WAIT`]) until `done`; fails with `what` otherwise.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_files(dev: &mut Device, id: &str, to: &str, files: &[&Value], body: Option<Value>) {
    let mut frame = json!({"op":"send","id":id,"to":to,"files":files.iter().map(|f| f["id"].clone()).collect::<Vec<_>>()});
    if let Some(body) = body {
        frame["body"] = body;
    }
    dev.send_json(frame).await;
}

/// Every file below `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

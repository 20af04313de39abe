//! Previews for every image type, and hostile or corrupt images refused in bounded memory.

use super::*;

/// A PNG whose header claims `w`×`h` and whose data is `zeros` bytes of deflated zeros.
fn bomb(w: u32, h: u32, zeros: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let data = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; zeros], 9);
        writer.write_chunk(png::chunk::IDAT, &data).unwrap();
        writer.finish().unwrap();
    }
    out
}

#[tokio::test]
async fn hostile_and_corrupt_images_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path()).await;
    let backend = octet::client::Backend::new(
        &format!("http://{}", broker.addr),
        crate::harness::APP_TOKEN,
    );
    let token = backend
        .device_token("alice@example.com", "a", crate::harness::APPID)
        .await
        .unwrap()
        .token;
    let addr = broker.addr.to_string();

    // 50,000 × 50,000 pixels (2.5 GB decoded) from a few kilobytes of zeros.
    let payload = bomb(50_000, 50_000, 8 << 20);
    assert!(
        payload.len() < 64 * 1024,
        "a real bomb is small: {}",
        payload.len()
    );
    let (status, answer) = upload(&addr, &token, payload, "bomb.png").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "image_too_large");
    assert!(
        answer["message"].as_str().unwrap().contains("50000x50000"),
        "{answer}"
    );

    // Within the pixel limit but over the decoder's memory limit (16-bit RGBA, 512 MB).
    let mut wide = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut wide, 8_000, 8_000);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_chunk(
                png::chunk::IDAT,
                &miniz_oxide::deflate::compress_to_vec_zlib(&[0u8; 4096], 9),
            )
            .unwrap();
        writer.finish().unwrap();
    }
    let (status, answer) = upload(&addr, &token, wide, "wide.png").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("image_too_large")),
        "{answer}"
    );

    // A PNG signature with garbage behind it.
    let mut corrupt = png(10, 10, false);
    corrupt.truncate(40);
    corrupt.extend_from_slice(&[0xAB; 200]);
    let (status, answer) = upload(&addr, &token, corrupt, "broken.png").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("bad_image")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("image/png"),
        "{answer}"
    );

    // The broker never held the decoded bomb: its peak memory stayed small.
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    let db = rusqlite::Connection::open(dir.path().join("octet.db")).unwrap();
    for table in ["files", "blobs"] {
        let rows: i64 = db
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "a refused upload left a row in {table}");
    }
    let files = dir.path().join("files");
    let leftovers: Vec<_> = walk(&files);
    assert!(leftovers.is_empty(), "refused uploads left {leftovers:?}");
}

#[test]
fn bomb_fixture_is_a_png_header_the_decoder_reads() {
    let bytes = bomb(50_000, 50_000, 1024);
    let mut reader = std::io::Cursor::new(&bytes);
    let mut head = [0u8; 8];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"\x89PNG\r\n\x1a\n");
    let dims =
        image::ImageReader::with_format(std::io::Cursor::new(&bytes), image::ImageFormat::Png)
            .into_dimensions()
            .unwrap();
    assert_eq!(dims, (50_000, 50_000));
}

#[tokio::test]
async fn gif_and_webp_get_previews_too_and_uploads_are_counted() {
    let server = TestServer::start().await;
    let alice = server.device("alice@example.com", "a").await;
    let frame = image::RgbaImage::from_fn(500, 250, |x, _| image::Rgba([x as u8, 20, 200, 255]));
    let mut gif = Vec::new();
    image::DynamicImage::from(frame.clone())
        .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
        .unwrap();
    let mut webp = Vec::new();
    image::DynamicImage::from(frame)
        .write_to(
            &mut std::io::Cursor::new(&mut webp),
            image::ImageFormat::WebP,
        )
        .unwrap();
    for (bytes, kind) in [(gif, "image/gif"), (webp, "image/webp")] {
        let file = upload_ok(&server, &alice.token, bytes, "anim").await;
        assert_eq!(file["type"], kind);
        assert_eq!(
            (file["width"].as_u64(), file["height"].as_u64()),
            (Some(500), Some(250))
        );
        assert_eq!(file["thumb"]["width"], 320, "{file}");
        assert_eq!(file["thumb"]["height"], 160, "{file}");
        assert!(file["blurhash"].is_string());
        let thumb = get(
            &server,
            file["thumb"]["url"].as_str().unwrap(),
            Some(&alice.token),
        )
        .await;
        assert_eq!(thumb.status(), 200);
        let preview = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
        assert_eq!((preview.width(), preview.height()), (320, 160));
    }
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("octet_files_uploaded_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("octet_file_downloads_total 2"),
        "{metrics}"
    );
}

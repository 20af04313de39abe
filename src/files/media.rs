//! What a file is, from its bytes, and an image's preview.
//!
//! The content type is sniffed from the first bytes (the client's claim is ignored). Images
//! octet can decode (JPEG, PNG, WebP, GIF's first frame) get their dimensions, a preview of at
//! most [`THUMB_SIDE`] px on the long side and a BlurHash, made once at upload. Hostile images
//! are refused before decoding: the header's dimensions are checked first, and the decoder runs
//! with allocation limits, so a decompression bomb costs neither memory nor time.

use std::io::Write;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::FileError;
use crate::store::ThumbMeta;

/// The longest side of a preview, in pixels.
pub const THUMB_SIDE: u32 = 320;
/// The longest side of an image octet decodes.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels of an image octet decodes (a 64-megapixel photo).
pub const MAX_PIXELS: u64 = 64_000_000;
/// The most memory the decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 320 * 1024 * 1024;
/// Bytes of the file's start that sniffing looks at.
pub const SNIFF_BYTES: usize = 8192;

/// What the first bytes say a file is: its content type, and the image format octet decodes.
pub fn sniff(head: &[u8]) -> (String, Option<ImageFormat>) {
    if let Ok(format) = image::guess_format(head) {
        let decodable = matches!(
            format,
            ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
        );
        if decodable {
            return (format.to_mime_type().to_string(), Some(format));
        }
    }
    if let Some(kind) = infer::get(head) {
        return (kind.mime_type().to_string(), None);
    }
    if looks_like_text(head) {
        return ("text/plain; charset=utf-8".into(), None);
    }
    ("application/octet-stream".into(), None)
}

/// UTF-8 without NULs; a character cut by the end of the sniffed window still counts.
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => head.len(),
        Err(err) if err.error_len().is_none() => err.valid_up_to(),
        Err(_) => return false,
    };
    !head[..valid].contains(&0)
}

/// An image's facts and its preview.
#[derive(Debug)]
pub struct ImageFacts {
    /// Width and height as displayed (after the EXIF orientation).
    pub dimensions: (u32, u32),
    /// The preview, written to the path given.
    pub thumb: ThumbMeta,
    /// A BlurHash of the picture.
    pub blurhash: String,
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

fn open(
    path: &Path,
    format: ImageFormat,
) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, FileError> {
    let mut reader = ImageReader::open(path).map_err(FileError::Io)?;
    reader.set_format(format);
    reader.limits(limits());
    Ok(reader)
}

fn image_error(format: ImageFormat, err: image::ImageError) -> FileError {
    match err {
        image::ImageError::Limits(limit) => FileError::ImageTooLarge(limit.to_string()),
        other => FileError::BadImage {
            format: format.to_mime_type(),
            reason: other.to_string(),
        },
    }
}

/// Reads the image at `path`, checks its size, and writes its preview to `thumb_path`.
/// Blocking and CPU-heavy: run it off the async workers.
pub fn inspect(
    path: &Path,
    format: ImageFormat,
    thumb_path: &Path,
) -> Result<ImageFacts, FileError> {
    // The header alone first: a bomb is refused before a pixel is decoded.
    let mut header = ImageReader::open(path).map_err(FileError::Io)?;
    header.set_format(format);
    let (width, height) = header
        .into_dimensions()
        .map_err(|err| image_error(format, err))?;
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(FileError::ImageTooLarge(format!("{width}x{height} pixels")));
    }
    let mut decoder = open(path, format)?
        .into_decoder()
        .map_err(|err| image_error(format, err))?;
    // The decoder's own allocation limit is not checked by every format before it allocates.
    let decoded = decoder.total_bytes();
    if decoded > MAX_DECODE_BYTES {
        return Err(FileError::ImageTooLarge(format!(
            "{width}x{height} pixels, {decoded} bytes decoded"
        )));
    }
    let orientation = decoder
        .orientation()
        .map_err(|err| image_error(format, err))?;
    let picture = DynamicImage::from_decoder(decoder).map_err(|err| image_error(format, err))?;
    // Orientation is applied to the preview only: rotating the full picture would hold a
    // second copy of it.
    let turned = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let dimensions = if turned {
        (picture.height(), picture.width())
    } else {
        (picture.width(), picture.height())
    };

    // Never upscale: a picture already small enough is its own preview (re-encoded).
    let mut preview = if picture.width() <= THUMB_SIDE && picture.height() <= THUMB_SIDE {
        picture
    } else {
        picture.thumbnail(THUMB_SIDE, THUMB_SIDE)
    };
    preview.apply_orientation(orientation);
    let blurhash = {
        let tiny = preview.thumbnail(32, 32).to_rgba8();
        blurhash::encode(4, 3, tiny.width(), tiny.height(), tiny.as_raw()).map_err(|err| {
            FileError::BadImage {
                format: format.to_mime_type(),
                reason: format!("no preview: {err}"),
            }
        })?
    };
    // JPEG for opaque pictures (small); PNG keeps transparency.
    let (encoded, content_type) = if preview.color().has_alpha() {
        let mut out = Vec::new();
        preview
            .write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png)
            .map_err(|err| image_error(format, err))?;
        (out, "image/png")
    } else {
        let mut out = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        preview
            .to_rgb8()
            .write_with_encoder(encoder)
            .map_err(|err| image_error(format, err))?;
        (out, "image/jpeg")
    };
    let mut file = std::fs::File::create(thumb_path).map_err(FileError::Io)?;
    file.write_all(&encoded).map_err(FileError::Io)?;
    file.sync_all().map_err(FileError::Io)?;
    Ok(ImageFacts {
        dimensions,
        thumb: ThumbMeta {
            width: preview.width(),
            height: preview.height(),
            content_type: content_type.into(),
            size: encoded.len() as u64,
        },
        blurhash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_trusts_bytes_not_names() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png), ("image/png".into(), Some(ImageFormat::Png)));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0").1, Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"%PDF-1.7\n").0, "application/pdf");
        assert_eq!(
            sniff("héllo wörld".as_bytes()).0,
            "text/plain; charset=utf-8"
        );
        // A multi-byte character cut at the end of the window is still text.
        assert_eq!(sniff(&"é".as_bytes()[..1]).0, "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\0\x01\x02\xfe").0, "application/octet-stream");
    }
}

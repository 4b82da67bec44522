//! Small JPEG pictures for the gallery: an image's thumbnail (from its encoded bytes, or from RGB pixels the
//! caller decoded) and a video's sampled frames as one mosaic.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageReader, Limits, RgbImage};
use thiserror::Error;

/// Longest side of an image thumbnail, in pixels (shown at about half that, sharp on 2x screens).
pub const THUMBNAIL_MAX_SIDE: u32 = 320;
/// Width of one frame in a video's mosaic, in pixels.
pub const FRAME_CELL_WIDTH: u32 = 192;
/// Frames side by side in a mosaic.
pub const MOSAIC_COLUMNS: usize = 2;
/// Largest image decoded for a thumbnail, in pixels (as the worker's default: decompression bombs are refused).
pub const MAX_SOURCE_PIXELS: u64 = 100_000_000;
const JPEG_QUALITY: u8 = 80;

/// A JPEG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Packed RGB8 pixels, rows top to bottom, borrowed from the caller (a decoded image or a video frame).
#[derive(Debug, Clone, Copy)]
pub struct RgbPixels<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// Why no thumbnail could be made; the message is shown in the picture's place.
#[derive(Debug, Error)]
pub enum ThumbnailError {
    #[error("not a picture the gallery can decode: {0}")]
    Decode(String),
    #[error("{width}x{height} pixels expected {expected} bytes, got {got}")]
    PixelCount { width: u32, height: u32, expected: usize, got: usize },
    #[error("empty picture ({width}x{height})")]
    Empty { width: u32, height: u32 },
    #[error("no frames to show")]
    NoFrames,
    #[error("cannot encode the JPEG: {0}")]
    Encode(String),
}

/// The thumbnail of an encoded image (PNG, JPEG, WebP, GIF, BMP, TIFF), turned upright by its EXIF orientation,
/// transparency composited onto white.
pub fn thumbnail_from_encoded(bytes: &[u8]) -> Result<Thumbnail, ThumbnailError> {
    let decode = |error: image::ImageError| ThumbnailError::Decode(error.to_string());
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| ThumbnailError::Decode(error.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_SOURCE_PIXELS * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_SOURCE_PIXELS {
        return Err(ThumbnailError::Decode(format!("{width}x{height} is over {MAX_SOURCE_PIXELS} pixels")));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut picture = DynamicImage::from_decoder(decoder).map_err(decode)?;
    picture.apply_orientation(orientation);
    let rgb = on_white(picture);
    let (width, height) = fit(rgb.width(), rgb.height(), THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE);
    encode(&image::imageops::thumbnail(&rgb, width, height))
}

/// The thumbnail of pixels the caller decoded.
pub fn thumbnail_from_rgb(pixels: RgbPixels<'_>) -> Result<Thumbnail, ThumbnailError> {
    let rgb = to_image(pixels)?;
    let (width, height) = fit(rgb.width(), rgb.height(), THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE);
    encode(&image::imageops::thumbnail(&rgb, width, height))
}

/// A video's frames in order, [`MOSAIC_COLUMNS`] to a row, each scaled to [`FRAME_CELL_WIDTH`] wide (the first
/// frame's aspect ratio sets every cell's height; a frame of another shape is fitted and centred on black).
pub fn frame_mosaic(frames: &[RgbPixels<'_>]) -> Result<Thumbnail, ThumbnailError> {
    let first = frames.first().ok_or(ThumbnailError::NoFrames)?;
    if first.width == 0 || first.height == 0 {
        return Err(ThumbnailError::Empty { width: first.width, height: first.height });
    }
    let cell_width = FRAME_CELL_WIDTH;
    let cell_height =
        ((u64::from(first.height) * u64::from(cell_width)) / u64::from(first.width)).clamp(1, 4096) as u32;
    let columns = frames.len().min(MOSAIC_COLUMNS) as u32;
    let rows = frames.len().div_ceil(MOSAIC_COLUMNS) as u32;
    let mut mosaic = RgbImage::new(cell_width * columns, cell_height * rows);
    for (position, frame) in frames.iter().enumerate() {
        let frame = to_image(*frame)?;
        let (width, height) = fit(frame.width(), frame.height(), cell_width, cell_height);
        let small = image::imageops::thumbnail(&frame, width, height);
        let x = (position % MOSAIC_COLUMNS) as u32 * cell_width + (cell_width - width) / 2;
        let y = (position / MOSAIC_COLUMNS) as u32 * cell_height + (cell_height - height) / 2;
        image::imageops::replace(&mut mosaic, &small, i64::from(x), i64::from(y));
    }
    encode(&mosaic)
}

fn to_image(pixels: RgbPixels<'_>) -> Result<RgbImage, ThumbnailError> {
    let RgbPixels { width, height, data } = pixels;
    if width == 0 || height == 0 {
        return Err(ThumbnailError::Empty { width, height });
    }
    let expected = width as usize * height as usize * 3;
    if data.len() != expected {
        return Err(ThumbnailError::PixelCount { width, height, expected, got: data.len() });
    }
    Ok(RgbImage::from_raw(width, height, data.to_vec()).expect("length checked"))
}

/// RGB with any transparency composited onto white (a transparent logo stays readable on the card).
fn on_white(picture: DynamicImage) -> RgbImage {
    if !picture.color().has_alpha() {
        return picture.into_rgb8();
    }
    let rgba = picture.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = RgbImage::new(width, height);
    for (out, pixel) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(pixel[3]);
        for channel in 0..3 {
            out[channel] = ((u32::from(pixel[channel]) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        }
    }
    rgb
}

/// The largest size of `width`x`height`'s aspect ratio within `max_width`x`max_height`, never enlarged, at
/// least 1x1.
fn fit(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    if width <= max_width && height <= max_height {
        return (width.max(1), height.max(1));
    }
    let scale = (f64::from(max_width) / f64::from(width)).min(f64::from(max_height) / f64::from(height));
    let scaled = |side: u32, max: u32| ((f64::from(side) * scale).round() as u32).clamp(1, max);
    (scaled(width, max_width), scaled(height, max_height))
}

fn encode(rgb: &RgbImage) -> Result<Thumbnail, ThumbnailError> {
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode(rgb.as_raw(), rgb.width(), rgb.height(), ExtendedColorType::Rgb8)
        .map_err(|error| ThumbnailError::Encode(error.to_string()))?;
    Ok(Thumbnail { jpeg, width: rgb.width(), height: rgb.height() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> Vec<u8> {
        (0..height).flat_map(|y| (0..width).flat_map(move |x| [(x % 256) as u8, (y % 256) as u8, 128])).collect()
    }

    fn decoded_size(jpeg: &[u8]) -> (u32, u32) {
        let picture = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).expect("a JPEG");
        (picture.width(), picture.height())
    }

    #[test]
    fn a_large_image_is_scaled_to_fit_the_thumbnail_box_keeping_its_aspect_ratio() {
        let data = gradient(1000, 500);
        let thumb = thumbnail_from_rgb(RgbPixels { width: 1000, height: 500, data: &data }).unwrap();
        assert_eq!((thumb.width, thumb.height), (320, 160));
        assert_eq!(decoded_size(&thumb.jpeg), (320, 160));
    }

    #[test]
    fn a_small_image_is_not_enlarged() {
        let data = gradient(40, 30);
        let thumb = thumbnail_from_rgb(RgbPixels { width: 40, height: 30, data: &data }).unwrap();
        assert_eq!(decoded_size(&thumb.jpeg), (40, 30));
    }

    #[test]
    fn encoded_images_are_turned_upright_by_their_exif_orientation() {
        // A 60x20 PNG with an eXIf chunk saying "rotate 90 degrees clockwise" (orientation 6).
        let mut png = Vec::new();
        let data = gradient(60, 20);
        let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
        // TIFF header (little endian), one IFD entry: tag 0x0112 (Orientation), SHORT, count 1, value 6.
        let exif = [b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
        image::ImageEncoder::set_exif_metadata(&mut encoder, exif.to_vec()).unwrap();
        image::ImageEncoder::write_image(encoder, &data, 60, 20, ExtendedColorType::Rgb8).unwrap();
        let thumb = thumbnail_from_encoded(&png).unwrap();
        assert_eq!((thumb.width, thumb.height), (20, 60));
    }

    #[test]
    fn transparent_pixels_become_white() {
        let picture = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(4, 4, image::Rgba([0, 0, 0, 0])));
        let rgb = on_white(picture);
        assert!(rgb.pixels().all(|p| p.0 == [255, 255, 255]));
    }

    #[test]
    fn undecodable_bytes_are_an_error_that_says_so() {
        let error = thumbnail_from_encoded(b"not an image at all").unwrap_err();
        assert!(error.to_string().starts_with("not a picture the gallery can decode"), "{error}");
    }

    #[test]
    fn a_mosaic_puts_two_frames_a_row() {
        let data = gradient(160, 90);
        let frames = vec![RgbPixels { width: 160, height: 90, data: &data }; 5];
        let mosaic = frame_mosaic(&frames).unwrap();
        assert_eq!((mosaic.width, mosaic.height), (2 * FRAME_CELL_WIDTH, 3 * 108));
        assert_eq!(decoded_size(&mosaic.jpeg), (384, 324));
        assert!(matches!(frame_mosaic(&[]), Err(ThumbnailError::NoFrames)));
    }

    #[test]
    fn pixels_of_the_wrong_length_are_refused() {
        let error = thumbnail_from_rgb(RgbPixels { width: 4, height: 4, data: &[0; 10] }).unwrap_err();
        assert!(matches!(error, ThumbnailError::PixelCount { expected: 48, got: 10, .. }));
    }
}

//! Image decoding to the RGB8 pixels that transformers + Pillow see after an image processor's
//! `convert_to_rgb`: `PIL.Image.open(...)` then, unless the mode is already RGB,
//! `Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")`.
//!
//! | source | result |
//! |---|---|
//! | RGB | as is |
//! | RGBA, LA, palette or gray with transparency | composited onto white with Pillow's integer formula ([`pil::alpha_composite`]) |
//! | L (gray) | replicated into R, G, B |
//! | 16-bit RGB / RGBA / LA | high byte of each sample (`v >> 8`), as Pillow's PNG/TIFF unpackers do |
//! | 16-bit gray | see [`SixteenBit`]: high byte by default, or Pillow's clip to 255 |
//! | JPEG | decoded by the system libjpeg-turbo (`csrc/vl_jpeg.c`) with Pillow's settings, byte-identical to Pillow |
//! | CMYK / YCCK JPEG | libjpeg's CMYK, then Pillow's Adobe-polarity inversion and `cmyk2rgb` ([`pil::adobe_cmyk_to_rgb`]) |
//! | EXIF orientation 2-8 | applied by default ([`ExifOrientation::Apply`]); Pillow/transformers processors ignore it |
//!
//! JPEGs: libjpeg defaults as in Pillow's `JpegDecode.c` (ISLOW IDCT, fancy upsampling, progressive block
//! smoothing; output GRAYSCALE / RGB / CMYK for 1 / 3 / 4 components). Debian's libjpeg-turbo 2.1.5 gives the
//! same bytes as Pillow 11.0.0's bundled 3.0.4 on every case of `tests/fixtures/jpeg` (all subsamplings, odd
//! sizes, progressive, restart markers, arithmetic coding, gray, CMYK). Warnings (corrupt data) are ignored as
//! in Pillow; a file without its end-of-image marker is refused, as Pillow's "image file is truncated".
//!
//! Known differences from Pillow: lossy WebP (image-webp vs libwebp); an RGB PNG with a `tRNS` colour key is
//! composited onto white here, while Pillow keeps mode RGB and ignores the key.

use std::io::Cursor;
use std::path::Path;

use ::image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use thiserror::Error;

use super::pil;

/// 100 megapixels: refuse larger images before allocating their pixels (decompression bombs).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// An 8-bit RGB image, rows top to bottom, 3 interleaved bytes a pixel (what `np.array(pil_rgb_image)` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps `data` (`width * height * 3` bytes). Panics if the length does not match.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * 3, "RgbImage::new: {width}x{height}x3 != {} bytes", data.len());
        RgbImage { width, height, data }
    }

    /// The pixel at column `x`, row `y`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Pillow's `Image.resize((width, height), filter)` (bit-exact, see [`pil::resize`]).
    pub fn resize(&self, width: usize, height: usize, filter: pil::Filter) -> Result<RgbImage, pil::PilError> {
        let data = pil::resize(&self.data, self.width, self.height, 3, width, height, filter)?;
        Ok(RgbImage { width, height, data })
    }
}

/// How 16-bit samples become 8-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SixteenBit {
    /// Every 16-bit sample maps to its high byte (`v >> 8`, i.e. `floor(v / 256)`), gray included. This is
    /// what Pillow itself does for 16-bit RGB, RGBA and LA files, so those agree with Pillow in both modes.
    #[default]
    ScaleTo8Bit,
    /// Pillow parity for 16-bit grayscale: Pillow opens it as mode `I;16`, and `convert("RGBA")` (which
    /// transformers' `convert_to_rgb` calls) clips each value to 255 instead of scaling, so a typical
    /// 16-bit gray photo becomes nearly white. The reference fixtures are made this way. Colour images are
    /// treated as in [`SixteenBit::ScaleTo8Bit`].
    PillowClip,
}

/// Whether the EXIF orientation tag (1-8) is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExifOrientation {
    /// Rotate/flip the pixels so that the image is upright (what viewers and phones show).
    #[default]
    Apply,
    /// Keep the stored pixel order, as `PIL.Image.open` and transformers' image processors do (the reference
    /// fixtures; transformers' `load_image` helper, by contrast, applies it).
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    pub exif: ExifOrientation,
    pub sixteen_bit: SixteenBit,
    /// Largest `width * height` accepted; larger images are refused before their pixels are decoded.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            exif: ExifOrientation::Apply,
            sixteen_bit: SixteenBit::ScaleTo8Bit,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeOptions {
    /// The way the reference (Pillow + transformers processor) sees a file: EXIF ignored, 16-bit gray clipped.
    pub fn pillow_parity() -> Self {
        DecodeOptions { exif: ExifOrientation::Ignore, sixteen_bit: SixteenBit::PillowClip, ..Default::default() }
    }
}

/// Why an image could not be decoded. `asset` is the file path, or the name given to [`decode_bytes`].
#[derive(Debug, Error)]
pub enum MediaError {
    #[error("{asset}: cannot read the file: {source}")]
    Unreadable {
        asset: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{asset}: unsupported image format: {detail}")]
    UnsupportedFormat { asset: String, detail: String },
    #[error("{asset}: corrupt or truncated image: {detail}")]
    Corrupt { asset: String, detail: String },
    #[error("{asset}: image has zero size ({width}x{height})")]
    ZeroSize { asset: String, width: u32, height: u32 },
    #[error("{asset}: image is {width}x{height} ({pixels} pixels), over the limit of {limit} pixels")]
    TooManyPixels { asset: String, width: u32, height: u32, pixels: u64, limit: u64 },
}

impl MediaError {
    /// The file path or asset name the error is about.
    pub fn asset(&self) -> &str {
        match self {
            MediaError::Unreadable { asset, .. }
            | MediaError::UnsupportedFormat { asset, .. }
            | MediaError::Corrupt { asset, .. }
            | MediaError::ZeroSize { asset, .. }
            | MediaError::TooManyPixels { asset, .. } => asset,
        }
    }
}

/// Reads and decodes an image file (format from its content, not its name).
pub fn decode_file(path: impl AsRef<Path>, options: &DecodeOptions) -> Result<RgbImage, MediaError> {
    let path = path.as_ref();
    let asset = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| MediaError::Unreadable { asset: asset.clone(), source })?;
    decode_named(&bytes, asset, options)
}

/// Decodes an encoded image held in memory; `asset` names it in errors (a URL, an upload name, ...).
pub fn decode_bytes(bytes: &[u8], asset: &str, options: &DecodeOptions) -> Result<RgbImage, MediaError> {
    decode_named(bytes, asset.to_string(), options)
}

fn decode_named(bytes: &[u8], asset: String, options: &DecodeOptions) -> Result<RgbImage, MediaError> {
    let corrupt = |detail: String| MediaError::Corrupt { asset: asset.clone(), detail };
    if bytes.is_empty() {
        return Err(MediaError::UnsupportedFormat { asset, detail: "the file is empty".into() });
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| corrupt(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(MediaError::UnsupportedFormat {
            asset,
            detail: format!(
                "not a recognised image (PNG, JPEG, WebP, GIF, BMP, TIFF); starts with {}",
                hex_head(bytes)
            ),
        });
    };
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, &asset, options);
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    // Bytes for the decoded pixels at up to 16-bit RGBA, plus slack for the decoders' own buffers.
    limits.max_alloc = Some(options.max_pixels.saturating_mul(8).saturating_add(64 << 20).max(512 << 20));
    reader.limits(limits);

    let mut decoder = reader.into_decoder().map_err(|e| map_image_error(e, &asset, format))?;
    let (width, height) = decoder.dimensions();
    check_size(&asset, width, height, options.max_pixels)?;
    let orientation = match options.exif {
        // A malformed EXIF block is not worth refusing the picture for: keep it unrotated.
        ExifOrientation::Apply => decoder.orientation().unwrap_or(::image::metadata::Orientation::NoTransforms),
        ExifOrientation::Ignore => ::image::metadata::Orientation::NoTransforms,
    };

    let image = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, &asset, format))?;
    let rgb = to_rgb8(image, options.sixteen_bit);
    if rgb.width != width as usize || rgb.height != height as usize {
        return Err(corrupt(format!("decoded {}x{}, header says {width}x{height}", rgb.width, rgb.height)));
    }
    Ok(apply_orientation(rgb, orientation))
}

fn check_size(asset: &str, width: u32, height: u32, limit: u64) -> Result<(), MediaError> {
    if width == 0 || height == 0 {
        return Err(MediaError::ZeroSize { asset: asset.to_string(), width, height });
    }
    let pixels = width as u64 * height as u64;
    if pixels > limit {
        return Err(MediaError::TooManyPixels { asset: asset.to_string(), width, height, pixels, limit });
    }
    Ok(())
}

fn hex_head(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn map_image_error(e: ImageError, asset: &str, format: ImageFormat) -> MediaError {
    let asset = asset.to_string();
    match e {
        ImageError::Unsupported(u) => MediaError::UnsupportedFormat { asset, detail: format!("{format:?}: {u}") },
        ImageError::Limits(l) => {
            MediaError::Corrupt { asset, detail: format!("{format:?}: over the decoder's limits: {l}") }
        }
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            MediaError::Corrupt { asset, detail: format!("{format:?}: unexpected end of data (truncated file)") }
        }
        other => MediaError::Corrupt { asset, detail: format!("{format:?}: {other}") },
    }
}

/// A truncated JPEG decodes without error in libjpeg (the missing part is filled in), where Pillow refuses
/// it ("image file is truncated"): refuse a JPEG with no end-of-image marker after its first scan.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let mut i = 2; // after SOI
    loop {
        // Find the next marker, skipping fill bytes.
        while i < n && bytes[i] != 0xFF {
            i += 1;
        }
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return true;
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return false,           // EOI before any scan: the decoder reports what is wrong
            0x01 | 0xD0..=0xD7 => continue, // no length field
            _ => {}
        }
        if i + 2 > n {
            return true;
        }
        let len = u16::from_be_bytes([bytes[i], bytes[i + 1]]) as usize;
        if marker == 0xDA {
            // Start of the (first) scan: entropy-coded data stuffs 0xFF as FF 00, so FF D9 only ends the image.
            let start = (i + len).min(n);
            return !bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]);
        }
        i += len;
    }
}

/// What `csrc/vl_jpeg.c` fills in (`vl_jpeg_image`).
#[repr(C)]
struct VlJpegImage {
    width: std::ffi::c_uint,
    height: std::ffi::c_uint,
    components: std::ffi::c_int,
    pixels: *mut u8,
    exif: *mut u8,
    exif_len: usize,
    message: [std::ffi::c_char; 200], // JMSG_LENGTH_MAX
}

extern "C" {
    fn vl_jpeg_decode(data: *const u8, len: usize, max_pixels: u64, image: *mut VlJpegImage) -> std::ffi::c_int;
    fn vl_jpeg_free(image: *mut VlJpegImage);
}

const VL_OK: std::ffi::c_int = 0;
const VL_TOO_MANY_PIXELS: std::ffi::c_int = 2;
const VL_ZERO_SIZE: std::ffi::c_int = 3;
const VL_UNSUPPORTED: std::ffi::c_int = 4;

/// A JPEG decoded by libjpeg-turbo with Pillow's settings, then `convert("RGB")`: gray replicated, CMYK/YCCK
/// (which libjpeg turns into CMYK) inverted with Adobe polarity and converted by [`pil::adobe_cmyk_to_rgb`].
fn decode_jpeg(bytes: &[u8], asset: &str, options: &DecodeOptions) -> Result<RgbImage, MediaError> {
    let corrupt = |detail: String| MediaError::Corrupt { asset: asset.to_string(), detail };
    // libjpeg pads a truncated file with gray and only warns; Pillow refuses it.
    if jpeg_is_truncated(bytes) {
        return Err(corrupt("JPEG data ends before its end-of-image marker (truncated file)".into()));
    }
    // SAFETY: an all-zero VlJpegImage is valid (null pointers, zero sizes); vl_jpeg_decode only reads `bytes`
    // and owns the buffers it sets until vl_jpeg_free, which runs on every path below.
    let mut image: VlJpegImage = unsafe { std::mem::zeroed() };
    let status = unsafe { vl_jpeg_decode(bytes.as_ptr(), bytes.len(), options.max_pixels, &mut image) };
    let result = (|| {
        let message = || unsafe { std::ffi::CStr::from_ptr(image.message.as_ptr()) }.to_string_lossy().into_owned();
        let (width, height) = (image.width, image.height);
        match status {
            VL_OK => {}
            VL_TOO_MANY_PIXELS | VL_ZERO_SIZE => {
                return check_size(asset, width, height, options.max_pixels).map(|_| None)
            }
            VL_UNSUPPORTED => {
                return Err(MediaError::UnsupportedFormat {
                    asset: asset.to_string(),
                    detail: format!("Jpeg: {}", message()),
                })
            }
            _ => return Err(corrupt(format!("Jpeg: {}", message()))),
        }
        let exif = if image.exif.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(image.exif, image.exif_len) }
        };
        let orientation = match options.exif {
            ExifOrientation::Apply => ::image::metadata::Orientation::from_exif_chunk(exif)
                .unwrap_or(::image::metadata::Orientation::NoTransforms),
            ExifOrientation::Ignore => ::image::metadata::Orientation::NoTransforms,
        };
        let (w, h) = (width as usize, height as usize);
        let samples = unsafe { std::slice::from_raw_parts(image.pixels, w * h * image.components as usize) };
        let data = match image.components {
            1 => samples.iter().flat_map(|&l| [l, l, l]).collect(),
            3 => samples.to_vec(),
            4 => pil::adobe_cmyk_to_rgb(samples),
            n => return Err(corrupt(format!("Jpeg: libjpeg produced {n} samples per pixel"))),
        };
        Ok(Some((RgbImage::new(w, h, data), orientation)))
    })();
    unsafe { vl_jpeg_free(&mut image) };
    match result? {
        Some((rgb, orientation)) => Ok(apply_orientation(rgb, orientation)),
        None => Err(corrupt(format!("Jpeg: size {}x{} refused", image.width, image.height))),
    }
}

/// `convert_to_rgb` on whatever the decoder produced.
fn to_rgb8(image: DynamicImage, sixteen_bit: SixteenBit) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let hi = |v: u16| (v >> 8) as u8;
    let gray16 = |v: u16| match sixteen_bit {
        SixteenBit::ScaleTo8Bit => hi(v),
        SixteenBit::PillowClip => pil::i16_to_l_clipped(v),
    };
    let data = match image {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => pil::rgba_over_white(b.as_raw()),
        DynamicImage::ImageLuma8(b) => b.as_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(b) => pil::la_over_white(b.as_raw()),
        DynamicImage::ImageLuma16(b) => b.as_raw().iter().flat_map(|&v| [gray16(v); 3]).collect(),
        DynamicImage::ImageLumaA16(b) => {
            let la: Vec<u8> = b.as_raw().iter().map(|&v| hi(v)).collect();
            pil::la_over_white(&la)
        }
        DynamicImage::ImageRgb16(b) => b.as_raw().iter().map(|&v| hi(v)).collect(),
        DynamicImage::ImageRgba16(b) => {
            let rgba: Vec<u8> = b.as_raw().iter().map(|&v| hi(v)).collect();
            pil::rgba_over_white(&rgba)
        }
        other => {
            // Float images (e.g. 32-bit TIFF): clamp to [0, 1] and round; Pillow has no equivalent path.
            let rgba = other.to_rgba8();
            pil::rgba_over_white(rgba.as_raw())
        }
    };
    RgbImage::new(width, height, data)
}

fn apply_orientation(image: RgbImage, orientation: ::image::metadata::Orientation) -> RgbImage {
    use ::image::metadata::Orientation;
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let buffer = ::image::RgbImage::from_raw(image.width as u32, image.height as u32, image.data)
        .expect("buffer length matches its dimensions");
    let mut dynamic = DynamicImage::ImageRgb8(buffer);
    dynamic.apply_orientation(orientation);
    let (width, height) = (dynamic.width() as usize, dynamic.height() as usize);
    RgbImage::new(width, height, dynamic.into_rgb8().into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_jpeg_marker_scan() {
        // SOI, a tiny APP0-like segment, SOS with its header, some data, EOI.
        let mut ok = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00];
        assert!(jpeg_is_truncated(&ok));
        ok.extend_from_slice(&[0x34, 0xFF, 0xD9]);
        assert!(!jpeg_is_truncated(&ok));
    }

    #[test]
    fn empty_and_unknown_bytes_are_unsupported() {
        let opts = DecodeOptions::default();
        let err = decode_bytes(b"", "empty.bin", &opts).unwrap_err();
        assert!(matches!(err, MediaError::UnsupportedFormat { .. }) && err.to_string().contains("empty.bin"));
        let err = decode_bytes(b"hello, world, not an image", "note.txt", &opts).unwrap_err();
        assert!(matches!(err, MediaError::UnsupportedFormat { .. }), "{err}");
    }
}

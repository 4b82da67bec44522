//! `MllamaImageProcessor` port against transformers 4.46.3 + Pillow 11.0.0 (fixtures in
//! `tests/fixtures/mllama-tiny`: tile 56, max_image_tiles 4; images opened with `PIL.Image.open`, no EXIF
//! transpose), plus the decoding behaviours the reference does not cover.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vislingo_worker::media::{self, pil, DecodeOptions, ExifOrientation, MediaError, RgbImage, SixteenBit};
use vislingo_worker::models::mllama::processor::{
    get_image_size_fit_to_canvas, get_optimal_tiled_canvas, vision_input, MllamaImageProcessor, ProcessedImage,
    ProcessorError,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mllama-tiny")
}

fn processor() -> MllamaImageProcessor {
    MllamaImageProcessor::from_file(fixture_dir().join("preprocessor_config.json")).unwrap()
}

struct Reference {
    json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

impl Reference {
    fn load() -> Self {
        let dir = fixture_dir();
        let json = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let tensors = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        Reference { json, tensors }
    }

    fn image(&self, stem: &str) -> &serde_json::Value {
        &self.json["images"][stem]
    }

    fn path(&self, stem: &str) -> PathBuf {
        fixture_dir().join(self.image(stem)["file"].as_str().unwrap())
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        self.tensors[name].flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
    }

    fn i64s(&self, name: &str) -> Vec<i64> {
        self.tensors[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    /// `image.<stem>.rgb`, the RGB pixels after `convert_to_rgb`, where the fixture has them.
    fn rgb(&self, stem: &str) -> Option<RgbImage> {
        let t = self.tensors.get(&format!("image.{stem}.rgb"))?;
        let (h, w, _) = t.dims3().unwrap();
        Some(RgbImage::new(w, h, t.flatten_all().unwrap().to_vec1().unwrap()))
    }
}

fn pairs(v: &serde_json::Value) -> (usize, usize) {
    (v[0].as_u64().unwrap() as usize, v[1].as_u64().unwrap() as usize)
}

/// Checks everything but the pixel values and returns the largest absolute pixel_values difference.
fn compare(reference: &Reference, stem: &str, got: &ProcessedImage) -> f32 {
    let meta = reference.image(stem);
    let (w, h) = pairs(&meta["pil_size_wh"]);
    assert_eq!(got.original_hw, (h, w), "{stem}: decoded size");
    assert_eq!(got.resized_hw, pairs(&meta["resized_hw"]), "{stem}: resized size");
    assert_eq!(got.tiles_hw, pairs(&meta["tiles_hw"]), "{stem}: tiles");
    assert_eq!(got.num_tiles as u64, meta["num_tiles"].as_u64().unwrap(), "{stem}: num_tiles");
    let ids = reference.i64s(&format!("image.{stem}.aspect_ratio_ids"));
    assert_eq!(ids, vec![got.aspect_ratio_id as i64], "{stem}: aspect_ratio_ids");
    let mask = reference.i64s(&format!("image.{stem}.aspect_ratio_mask"));
    assert_eq!(mask, got.aspect_ratio_mask.iter().map(|&m| m as i64).collect::<Vec<_>>(), "{stem}: mask");
    let expected = reference.f32s(&format!("image.{stem}.pixel_values"));
    assert_eq!(expected.len(), got.pixel_values.len(), "{stem}: pixel_values size");
    expected.iter().zip(&got.pixel_values).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Largest per-channel difference between two RGB8 images of the same size, in 8-bit levels.
fn max_level_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data.iter().zip(&b.data).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

fn pillow() -> DecodeOptions {
    DecodeOptions::pillow_parity()
}

#[test]
fn image_fixtures_reproduce_reference_pixel_values_exactly() {
    let reference = Reference::load();
    let processor = processor();
    let stems =
        ["landscape", "square_small", "wide", "gray", "rgba", "palette", "gray16", "portrait", "exif_rotated", "cmyk"];
    for stem in stems {
        let image = media::decode_file(reference.path(stem), &pillow()).unwrap();
        let is_jpeg = reference.path(stem).extension().is_some_and(|e| e == "jpg");
        assert!(!is_jpeg || reference.rgb(stem).is_some(), "{stem}: the fixture keeps the RGB of its JPEGs");
        if let Some(rgb) = reference.rgb(stem) {
            assert_eq!(image, rgb, "{stem}: decoded RGB differs from Pillow's convert_to_rgb");
        }
        let got = processor.preprocess(&image).unwrap();
        let diff = compare(&reference, stem, &got);
        assert!(diff <= 1e-6, "{stem}: pixel_values differ by up to {diff}");
    }
}

#[test]
fn exif_rotated_jpeg_is_upright_by_default_and_matches_reference_when_ignored() {
    let reference = Reference::load();
    assert_eq!(reference.image("exif_rotated")["exif_orientation"], 6);
    let path = reference.path("exif_rotated");
    let stored =
        media::decode_file(&path, &DecodeOptions { exif: ExifOrientation::Ignore, ..Default::default() }).unwrap();
    let upright = media::decode_file(&path, &DecodeOptions::default()).unwrap();
    assert_eq!((stored.width, stored.height), (80, 50));
    assert_eq!((upright.width, upright.height), (50, 80));
    // Orientation 6: the stored image is rotated 90 degrees clockwise for display.
    for y in 0..upright.height {
        for x in 0..upright.width {
            assert_eq!(upright.pixel(x, y), stored.pixel(y, stored.height - 1 - x), "at ({x}, {y})");
        }
    }

    let processor = processor();
    let got = processor.preprocess(&upright).unwrap();
    assert_eq!(got.original_hw, (80, 50));
    assert_eq!(got.tiles_hw, (2, 1), "the canvas follows the upright (tall) shape");
    assert_eq!(got.resized_hw, (80, 50));
    let ignored = processor.preprocess(&stored).unwrap();
    assert_eq!(ignored.tiles_hw, pairs(&reference.image("exif_rotated")["tiles_hw"]));
}

#[test]
fn gray16_png_clips_like_pillow_only_when_asked() {
    let reference = Reference::load();
    let path = reference.path("gray16");
    let clipped =
        media::decode_file(&path, &DecodeOptions { sixteen_bit: SixteenBit::PillowClip, ..Default::default() })
            .unwrap();
    assert_eq!(clipped, reference.rgb("gray16").unwrap(), "PillowClip reproduces Pillow's I;16 -> RGB");
    let scaled = media::decode_file(&path, &DecodeOptions::default()).unwrap();
    // The reference image is nearly white; scaled, it keeps its gradient.
    let mean = |im: &RgbImage| im.data.iter().map(|&v| v as f64).sum::<f64>() / im.data.len() as f64;
    eprintln!("gray16: mean level clipped {:.1}, scaled {:.1}", mean(&clipped), mean(&scaled));
    assert!(mean(&clipped) > 230.0);
    assert!(mean(&scaled) < 200.0);
    let levels: std::collections::BTreeSet<u8> = scaled.data.iter().copied().collect();
    assert!(levels.len() > 16, "the scaled image keeps its gray levels");
    assert!(scaled.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn cmyk_jpeg_converts_with_pillow_adobe_polarity() {
    let reference = Reference::load();
    let image = media::decode_file(reference.path("cmyk"), &pillow()).unwrap();
    let rgb = reference.rgb("cmyk").unwrap();
    assert_eq!((image.width, image.height), (rgb.width, rgb.height));
    assert_eq!(max_level_diff(&image, &rgb), 0, "libjpeg's CMYK + Pillow's Adobe inversion and cmyk2rgb");
}

#[test]
fn canvas_choice_matches_transformers() {
    // (height, width) -> canvas, resized size; from transformers 4.46.3 with tile 560, max_image_tiles 4.
    let cases = [
        ((2000, 300), (2240, 560), (2000, 300)), // tall: 4x1 tiles, already fits, not resized
        ((300, 2000), (560, 2240), (300, 2000)), // wide: 1x4 tiles
        ((20, 30), (560, 560), (373, 560)),      // tiny: upscaled into one tile
        ((560, 560), (560, 560), (560, 560)),    // exact fit: smallest of the canvases with scale 1
        ((1120, 560), (1120, 560), (1120, 560)), // exact fit on 2x1
        ((800, 600), (1120, 1120), (800, 600)),  // the smallest upscale wins over downscaling
        ((100, 1500), (560, 1680), (100, 1500)),
        ((561, 560), (1120, 560), (561, 560)),
        ((559, 1121), (560, 1680), (559, 1121)),
        ((3, 5000), (560, 2240), (1, 2240)), // no upscale possible: the least downscale
        ((4000, 3000), (1120, 1120), (1120, 840)), // large photo: 2x2, downscaled
        ((1000, 3000), (560, 1680), (560, 1680)),
    ];
    for ((h, w), canvas, resized) in cases {
        let got = get_optimal_tiled_canvas(h, w, 4, 560);
        assert_eq!(got, canvas, "canvas for {h}x{w}");
        assert_eq!(get_image_size_fit_to_canvas(h, w, canvas.0, canvas.1, 560), resized, "size for {h}x{w}");
    }
}

#[test]
fn extremely_thin_image_gets_a_one_pixel_side_instead_of_failing() {
    // transformers computes height 0 for 1x5000 and Pillow's resize then raises; the port keeps 1 pixel.
    let canvas = get_optimal_tiled_canvas(1, 5000, 4, 560);
    assert_eq!(canvas, (560, 2240));
    assert_eq!(get_image_size_fit_to_canvas(1, 5000, canvas.0, canvas.1, 560), (1, 2240));
}

fn write_temp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn truncated_png_and_jpeg_are_refused_naming_the_file() {
    let reference = Reference::load();
    for stem in ["landscape", "portrait"] {
        let bytes = std::fs::read(reference.path(stem)).unwrap();
        let ext = reference.path(stem).extension().unwrap().to_string_lossy().to_string();
        let (_dir, path) = write_temp(&format!("cut_{stem}.{ext}"), &bytes[..bytes.len() * 2 / 3]);
        let err = media::decode_file(&path, &DecodeOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, MediaError::Corrupt { .. }), "{stem}: {text}");
        assert!(text.contains(&format!("cut_{stem}.{ext}")), "{text}");
    }
}

#[test]
fn corrupt_image_data_is_refused_naming_the_file() {
    let reference = Reference::load();
    let mut bytes = std::fs::read(reference.path("landscape")).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 3..n / 3 + 64] {
        *b ^= 0x5A;
    }
    let (_dir, path) = write_temp("scrambled.png", &bytes);
    let err = media::decode_file(&path, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("scrambled.png"), "{err}");
}

#[test]
fn non_image_and_missing_files_give_clear_errors() {
    let (_dir, path) = write_temp("notes.jpg", b"these are not the pixels you are looking for\n");
    let err = media::decode_file(&path, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::UnsupportedFormat { .. }), "{err}");
    assert!(err.to_string().contains("notes.jpg"), "{err}");

    let missing = fixture_dir().join("images/does_not_exist.png");
    let err = media::decode_file(&missing, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("does_not_exist.png"), "{err}");

    let err = processor().preprocess_file(&missing, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, ProcessorError::Media(MediaError::Unreadable { .. })), "{err}");
}

#[test]
fn images_over_the_pixel_limit_are_refused_before_decoding() {
    let reference = Reference::load();
    let options = DecodeOptions { max_pixels: 150 * 90 - 1, ..Default::default() };
    let err = media::decode_file(reference.path("landscape"), &options).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { width: 150, height: 90, .. }), "{err}");
    assert!(err.to_string().contains("landscape.png"), "{err}");
    let ok = DecodeOptions { max_pixels: 150 * 90, ..Default::default() };
    media::decode_file(reference.path("landscape"), &ok).unwrap();
}

#[test]
fn zero_size_image_is_refused() {
    // A GIF whose screen and frame are 0x0.
    let mut gif = b"GIF89a\x00\x00\x00\x00\x00\x00\x00".to_vec();
    gif.extend_from_slice(b"\x2c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x02\x44\x01\x00\x3b");
    let err = media::decode_bytes(&gif, "empty.gif", &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::ZeroSize { width: 0, height: 0, .. }), "{err}");
    assert!(err.to_string().contains("empty.gif"), "{err}");
}

#[test]
fn decode_bytes_names_the_asset_in_errors() {
    let err = media::decode_bytes(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0], "upload-7", &pillow())
        .unwrap_err();
    assert_eq!(err.asset(), "upload-7");
    assert!(err.to_string().starts_with("upload-7: "), "{err}");
}

#[test]
fn padding_is_normalized_zero_and_unused_tiles_are_zero() {
    let reference = Reference::load();
    let processor = processor();
    let image = media::decode_file(reference.path("wide"), &pillow()).unwrap();
    let got = processor.preprocess(&image).unwrap();
    // wide: 48x224 on a 56x224 canvas: the bottom 8 rows are padding, which is -mean/std after normalization.
    let plane = 56 * 56;
    let cfg = processor.config();
    for c in 0..3 {
        let expected = (0.0 - cfg.image_mean[c] as f32) / cfg.image_std[c] as f32;
        assert_eq!(got.pixel_values[c * plane + 50 * 56 + 3], expected);
    }
    let rgba = processor.preprocess(&media::decode_file(reference.path("rgba"), &pillow()).unwrap()).unwrap();
    assert_eq!(rgba.num_tiles, 2);
    assert!(rgba.pixel_values[2 * 3 * plane..].iter().all(|&v| v == 0.0), "tiles past num_tiles are zero");
}

#[test]
fn vision_input_stacks_images_for_the_model() {
    let reference = Reference::load();
    let processor = processor();
    let images: Vec<ProcessedImage> = ["landscape", "palette"]
        .iter()
        .map(|stem| processor.preprocess(&media::decode_file(reference.path(stem), &pillow()).unwrap()).unwrap())
        .collect();
    let input = processor.vision_input(&images, &Device::Cpu).unwrap();
    assert_eq!(input.pixel_values.dims(), &[2, 4, 3, 56, 56]);
    assert_eq!(input.aspect_ratio_ids, vec![6, 3]);
    assert_eq!(input.aspect_ratio_mask, vec![vec![1, 1, 1, 1], vec![1, 1, 1, 0]]);
    let second: Vec<f32> = input.pixel_values.get(1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(second, reference.f32s("image.palette.pixel_values"));
    assert_eq!(images[0].to_tensor(&Device::Cpu).unwrap().dims(), &[4, 3, 56, 56]);
    assert!(vision_input(&[], &Device::Cpu).is_err());
}

#[test]
fn resize_of_decoded_images_is_pillow_bilinear() {
    // The processor's resize of the landscape fixture, checked independently of rescale/normalize: undo the
    // normalization of the reference pixel_values for the first tile and compare with pil::resize.
    let reference = Reference::load();
    let processor = processor();
    let image = media::decode_file(reference.path("landscape"), &pillow()).unwrap();
    let resized = image.resize(112, 67, pil::Filter::Bilinear).unwrap();
    let expected = reference.f32s("image.landscape.pixel_values");
    let cfg = processor.config();
    let plane = 56 * 56;
    for c in 0..3 {
        for y in 0..56 {
            for x in 0..56 {
                let v = expected[c * plane + y * 56 + x] * cfg.image_std[c] as f32 + cfg.image_mean[c] as f32;
                let level = (v * 255.0).round() as u8;
                assert_eq!(level, resized.data[(y * 112 + x) * 3 + c], "c{c} ({x}, {y})");
            }
        }
    }
}

/// A PNG whose header claims `width` x `height` pixels, with a valid zlib stream of only a few rows: the shape
/// of a decompression bomb (or of a huge scan) without the bytes.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend(data);
        out.extend(crc32(&crc_input).to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]); // 8-bit grayscale
    chunk(&mut png, b"IHDR", &header);
    // zlib stream of one stored (uncompressed) empty block: valid, and far too short for the image.
    chunk(&mut png, b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_20000_by_20000_image_is_refused_from_its_header_without_allocating_it() {
    let (_dir, path) = write_temp("huge_scan.png", &png_claiming(20000, 20000));
    let err = media::decode_file(&path, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { width: 20000, height: 20000, .. }), "{err}");
    assert!(err.to_string().contains("huge_scan.png"), "{err}");
}

#[test]
fn an_image_bomb_within_the_pixel_limit_but_without_its_data_is_reported_corrupt() {
    // 9000 x 9000 = 81 megapixels (under the default limit) claimed by a 100-byte file.
    let (_dir, path) = write_temp("bomb.png", &png_claiming(9000, 9000));
    let err = media::decode_file(&path, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("bomb.png"), "{err}");
}

//! JPEG decoding against Pillow 11.0.0 (libjpeg-turbo 3.0.4): every file in `tests/fixtures/jpeg` (made by
//! `tools/make_fixtures.py jpeg`) must decode to exactly the bytes of Pillow's `Image.open(f).convert("RGB")`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vislingo_worker::media::{self, DecodeOptions, MediaError};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_jpeg_fixture_decodes_to_pillows_exact_bytes() {
    let reference = reference();
    let images = reference["images"].as_object().unwrap();
    assert!(images.len() >= 15, "the fixture covers many kinds of JPEG");
    let mut with_raw = 0;
    for (name, meta) in images {
        let how = meta["how"].as_str().unwrap();
        let image = media::decode_file(fixture_dir().join(format!("{name}.jpg")), &DecodeOptions::pillow_parity())
            .unwrap_or_else(|e| panic!("{name} ({how}): {e}"));
        let size = (meta["width"].as_u64().unwrap() as usize, meta["height"].as_u64().unwrap() as usize);
        assert_eq!((image.width, image.height), size, "{name} ({how}): size");
        if let Some(raw) = meta["rgb"].as_str() {
            let expected = std::fs::read(fixture_dir().join(raw)).unwrap();
            assert_eq!(expected.len(), image.data.len(), "{name}: raw reference size");
            let diffs: Vec<u8> = expected.iter().zip(&image.data).map(|(a, b)| a.abs_diff(*b)).collect();
            let differing = diffs.iter().filter(|&&d| d > 0).count();
            let max = diffs.iter().copied().max().unwrap_or(0);
            assert_eq!(differing, 0, "{name} ({how}): {differing} samples differ from Pillow's, by up to {max}");
            with_raw += 1;
        }
        let digest = hex(&Sha256::digest(&image.data));
        assert_eq!(digest, meta["sha256"].as_str().unwrap(), "{name} ({how}): sha256 of the decoded RGB");
    }
    assert!(with_raw >= 10, "most cases are small enough to keep Pillow's bytes");
}

#[test]
fn jpeg_modes_cover_gray_rgb_and_cmyk() {
    let reference = reference();
    let modes: std::collections::BTreeSet<&str> =
        reference["images"].as_object().unwrap().values().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(modes.into_iter().collect::<Vec<_>>(), ["CMYK", "L", "RGB"]);
    // Gray JPEGs replicate their one channel.
    let gray = media::decode_file(fixture_dir().join("gray.jpg"), &DecodeOptions::pillow_parity()).unwrap();
    assert!(gray.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn jpeg_pixel_limit_is_checked_before_decoding() {
    let path = fixture_dir().join("photo_420.jpg");
    let options = DecodeOptions { max_pixels: 517 * 389 - 1, ..DecodeOptions::pillow_parity() };
    let err = media::decode_file(&path, &options).unwrap_err();
    assert!(matches!(err, MediaError::TooManyPixels { width: 517, height: 389, .. }), "{err}");
    assert!(err.to_string().contains("photo_420.jpg"), "{err}");
    let options = DecodeOptions { max_pixels: 517 * 389, ..DecodeOptions::pillow_parity() };
    assert!(media::decode_file(&path, &options).is_ok());
}

#[test]
fn corrupt_jpeg_headers_give_an_error_naming_the_asset() {
    let mut bytes = std::fs::read(fixture_dir().join("q75_420.jpg")).unwrap();
    // Replace the frame header's component count with an impossible value (SOF0 = FF C0, count at +9).
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 9] = 0;
    let err = media::decode_bytes(&bytes, "upload-17.jpg", &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::Corrupt { .. }), "{err}");
    assert!(err.to_string().starts_with("upload-17.jpg: "), "{err}");
}

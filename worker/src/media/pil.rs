//! Bit-exact ports of the Pillow 11.0.0 operations that transformers' image processors rely on.
//!
//! * [`resize`]: `Image.resize(size, resample)` for 8-bit images (1 to 4 interleaved channels) with the
//!   convolution filters (BOX, BILINEAR, HAMMING, BICUBIC, LANCZOS): `libImaging/Resample.c`
//!   (`precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`,
//!   `ImagingResampleVertical_8bpc`, `ImagingResampleInner`), with the same double-precision coefficients,
//!   the same 22-bit fixed-point rounding and clipping, and the same pass order (horizontal first, then
//!   vertical, each only when that axis changes). `reducing_gap` is not supported (transformers passes
//!   `None`), nor is a crop `box` (the full image is always resampled).
//! * [`alpha_composite`] / [`rgba_over_white`]: `Image.alpha_composite` (`libImaging/AlphaComposite.c`), as
//!   used by transformers' `convert_to_rgb` to flatten transparent images onto white.
//! * [`cmyk_to_rgb`]: `Image.convert("RGB")` from mode CMYK (`libImaging/Convert.c`, `cmyk2rgb`).
//! * [`i16_to_l_clipped`]: the `I;16` -> `RGB`/`RGBA` conversion (`I16_RGB`), which clips values above 255.

use thiserror::Error;

/// Pillow's `Image.Resampling` codes, as stored in `preprocessor_config.json`'s `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    /// The filter for a Pillow resampling code (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING).
    pub fn from_pil(code: u32) -> Option<Self> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    /// The Pillow resampling code of this filter.
    pub fn pil_code(self) -> u32 {
        match self {
            Filter::Nearest => 0,
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    /// Support radius of the convolution kernel (`struct filter.support`), `None` for NEAREST.
    fn support(self) -> Option<f64> {
        match self {
            Filter::Nearest => None,
            Filter::Box => Some(0.5),
            Filter::Bilinear | Filter::Hamming => Some(1.0),
            Filter::Bicubic => Some(2.0),
            Filter::Lanczos => Some(3.0),
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // C: `sin(x) / x * (0.54f + 0.46f * cos(x))`, float literals promoted to double.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PilError {
    #[error("resize: height and width must be > 0 (from {from_w}x{from_h} to {to_w}x{to_h})")]
    EmptySize { from_w: usize, from_h: usize, to_w: usize, to_h: usize },
    #[error("resize: buffer holds {got} bytes, {width}x{height}x{channels} needs {expected}")]
    BufferSize { got: usize, expected: usize, width: usize, height: usize, channels: usize },
    #[error("resize: {0} channels are not supported (1 to 4)")]
    Channels(usize),
    #[error("resize: resampling filter {0:?} is not supported by this port (only the convolution filters)")]
    UnsupportedFilter(Filter),
}

/// `PRECISION_BITS` of Resample.c: 8 bits for the result, 2 for overflow.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel source window and normalized fixed-point weights (`bounds`, `kk` of Resample.c).
struct Coeffs {
    ksize: usize,
    /// `(xmin, count)` per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel (unused tail zero), in `PRECISION_BITS` fixed point.
    kk: Vec<i32>,
}

/// `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
fn precompute_coeffs(in_size: usize, in0: f32, in1: f32, out_size: usize, filter: Filter, support: f64) -> Coeffs {
    // `filterscale = scale = (double)(in1 - in0) / outSize`: the difference is taken in float.
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;

    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C `(int)` truncates toward zero; Rust's `as` does too.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let xmax = xmax.max(0) as usize;
        let mut ww = 0.0f64;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = filter.eval((((x as i64 + xmin) as f64 - center) + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut kk[xx * ksize..(xx + 1) * ksize];
        for x in 0..xmax {
            let mut w = k[x];
            if ww != 0.0 {
                w /= ww;
            }
            // normalize_coeffs_8bpc
            row[x] = if w < 0.0 {
                (-0.5 + w * (1u32 << PRECISION_BITS) as f64) as i32
            } else {
                (0.5 + w * (1u32 << PRECISION_BITS) as f64) as i32
            };
        }
        bounds.push((xmin as usize, xmax));
    }
    Coeffs { ksize, bounds, kk }
}

/// `clip8`: `_clip8_lookups[(in >> PRECISION_BITS) + 640]`, i.e. the shifted sum clamped to 0..=255.
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUND_INIT: i32 = 1 << (PRECISION_BITS - 1);

/// `ImagingResampleHorizontal_8bpc` over source rows `offset..offset + out_h`.
fn resample_horizontal(
    src: &[u8],
    in_w: usize,
    channels: usize,
    offset: usize,
    out_w: usize,
    out_h: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; out_w * out_h * channels];
    for yy in 0..out_h {
        let in_row = &src[(yy + offset) * in_w * channels..(yy + offset + 1) * in_w * channels];
        let out_row = &mut out[yy * out_w * channels..(yy + 1) * out_w * channels];
        for xx in 0..out_w {
            let (xmin, xmax) = c.bounds[xx];
            let k = &c.kk[xx * c.ksize..xx * c.ksize + xmax];
            for ch in 0..channels {
                let mut ss = ROUND_INIT;
                for (x, &w) in k.iter().enumerate() {
                    ss += in_row[(x + xmin) * channels + ch] as i32 * w;
                }
                out_row[xx * channels + ch] = clip8(ss);
            }
        }
    }
    out
}

/// `ImagingResampleVertical_8bpc`.
fn resample_vertical(src: &[u8], width: usize, channels: usize, out_h: usize, c: &Coeffs, row_shift: usize) -> Vec<u8> {
    let stride = width * channels;
    let mut out = vec![0u8; stride * out_h];
    let mut acc = vec![0i32; stride];
    for yy in 0..out_h {
        let (ymin, ymax) = c.bounds[yy];
        let ymin = ymin - row_shift;
        let k = &c.kk[yy * c.ksize..yy * c.ksize + ymax];
        acc.fill(ROUND_INIT);
        for (y, &w) in k.iter().enumerate() {
            let in_row = &src[(y + ymin) * stride..(y + ymin + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(in_row) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow's `Image.resize((out_w, out_h), filter)` of a whole 8-bit image with `channels` interleaved bands
/// (L, LA, RGB, RGBA, ... stored as 1 to 4 bytes a pixel, row-major). Bit-exact with Pillow 11.0.0 for the
/// convolution filters.
///
/// Notes on Pillow semantics that this reproduces: an unchanged size is a plain copy; the horizontal pass runs
/// first, only over the source rows that the vertical pass reads; an axis whose size is unchanged is not
/// resampled at all. Unlike `Image.resize` it does not premultiply alpha for LA/RGBA (Pillow converts those to
/// `La`/`RGBa` first), so give it RGB or L data for Pillow parity.
pub fn resize(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
) -> Result<Vec<u8>, PilError> {
    if !(1..=4).contains(&channels) {
        return Err(PilError::Channels(channels));
    }
    let expected = width * height * channels;
    if src.len() != expected {
        return Err(PilError::BufferSize { got: src.len(), expected, width, height, channels });
    }
    if width == 0 || height == 0 || out_w == 0 || out_h == 0 {
        return Err(PilError::EmptySize { from_w: width, from_h: height, to_w: out_w, to_h: out_h });
    }
    if width == out_w && height == out_h {
        return Ok(src.to_vec());
    }
    let support = filter.support().ok_or(PilError::UnsupportedFilter(filter))?;

    // `box` is (0, 0, width, height) as floats.
    let need_horizontal = out_w != width;
    let need_vertical = out_h != height;
    let horiz = precompute_coeffs(width, 0.0, width as f32, out_w, filter, support);
    let vert = precompute_coeffs(height, 0.0, height as f32, out_h, filter, support);

    // First and last source rows the vertical pass uses.
    let ybox_first = vert.bounds[0].0;
    let ybox_last = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;

    let (buf, cur_w, row_shift) = if need_horizontal {
        let tmp = resample_horizontal(src, width, channels, ybox_first, out_w, ybox_last - ybox_first, &horiz);
        (std::borrow::Cow::Owned(tmp), out_w, ybox_first)
    } else {
        (std::borrow::Cow::Borrowed(src), width, 0)
    };
    if need_vertical {
        Ok(resample_vertical(&buf, cur_w, channels, out_h, &vert, row_shift))
    } else {
        Ok(buf.into_owned())
    }
}

/// `SHIFTFORDIV255` of ImagingUtils.h: `((a >> 8) + a) >> 8`, a division by 255 for the ranges used here.
#[inline]
fn shift_for_div255(a: u32) -> u32 {
    ((a >> 8) + a) >> 8
}

/// `Image.alpha_composite(dst, src)` for one RGBA pixel (AlphaComposite.c, 7 extra bits of precision).
#[inline]
pub fn alpha_composite(dst: [u8; 4], src: [u8; 4]) -> [u8; 4] {
    const PREC: u32 = 7;
    if src[3] == 0 {
        return dst;
    }
    let (sa, da) = (src[3] as u32, dst[3] as u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PREC) / outa255;
    let coef2 = 255 * (1 << PREC) - coef1;
    let mix = |s: u8, d: u8| {
        let tmp = s as u32 * coef1 + d as u32 * coef2;
        (shift_for_div255(tmp + (0x80 << PREC)) >> PREC) as u8
    };
    [mix(src[0], dst[0]), mix(src[1], dst[1]), mix(src[2], dst[2]), shift_for_div255(outa255 + 0x80) as u8]
}

/// transformers' `convert_to_rgb` for an RGBA image: `Image.alpha_composite(white, image).convert("RGB")`.
/// `rgba` holds 4 bytes a pixel; the result 3.
pub fn rgba_over_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for p in rgba.chunks_exact(4) {
        let c = alpha_composite([255, 255, 255, 255], [p[0], p[1], p[2], p[3]]);
        out.extend_from_slice(&c[..3]);
    }
    out
}

/// Same as [`rgba_over_white`] for luminance + alpha (`LA` -> `RGBA` replicates L, then composites).
pub fn la_over_white(la: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(la.len() / 2 * 3);
    for p in la.chunks_exact(2) {
        let c = alpha_composite([255, 255, 255, 255], [p[0], p[0], p[0], p[1]]);
        out.extend_from_slice(&c[..3]);
    }
    out
}

/// `MULDIV255(a, b)`: `a * b / 255` rounded, as ImagingUtils.h computes it.
#[inline]
fn muldiv255(a: i32, b: i32) -> i32 {
    let tmp = a * b + 128;
    ((tmp >> 8) + tmp) >> 8
}

/// Pillow's CMYK -> RGB conversion (`cmyk2rgb`) of one pixel, in Pillow's CMYK convention (0 = no ink).
#[inline]
pub fn cmyk_to_rgb(cmyk: [u8; 4]) -> [u8; 3] {
    let nk = 255 - cmyk[3] as i32;
    let ch = |c: u8| (nk - muldiv255(c as i32, nk)).clamp(0, 255) as u8;
    [ch(cmyk[0]), ch(cmyk[1]), ch(cmyk[2])]
}

/// The samples of a 4-component JPEG as libjpeg hands them over, to RGB the way Pillow does: Pillow always
/// assumes Adobe polarity (raw mode `CMYK;I`, i.e. stored values are inverted: `C = 255 - stored`), then
/// applies [`cmyk_to_rgb`].
pub fn adobe_cmyk_to_rgb(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() / 4 * 3);
    for p in stored.chunks_exact(4) {
        out.extend_from_slice(&cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]));
    }
    out
}

/// Pillow's `I;16` -> `L`/`RGB`/`RGBA` sample conversion (`I16_RGB`, `I16L_L`): values above 255 clip to 255
/// (no scaling), so a typical 16-bit grayscale image comes out nearly white.
#[inline]
pub fn i16_to_l_clipped(v: u16) -> u8 {
    v.min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_composite_opaque_and_transparent_pixels() {
        let white = [255, 255, 255, 255];
        assert_eq!(alpha_composite(white, [10, 20, 30, 255]), [10, 20, 30, 255]);
        assert_eq!(alpha_composite(white, [10, 20, 30, 0]), white);
        // Half transparent black over white is mid gray.
        assert_eq!(alpha_composite(white, [0, 0, 0, 128]), [127, 127, 127, 255]);
    }

    #[test]
    fn cmyk_conversion_matches_pillow_formula() {
        assert_eq!(cmyk_to_rgb([0, 0, 0, 0]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([0, 0, 0, 255]), [0, 0, 0]);
        // `Image.new("CMYK", (1, 1), (100, 0, 50, 20)).convert("RGB")` in Pillow 11.0.0.
        assert_eq!(cmyk_to_rgb([100, 0, 50, 20]), [143, 235, 189]);
    }

    /// Cases made by `tests/fixtures/pil/make_resize_cases.py` with Pillow 11.0.0: up/down-scaling in each
    /// axis, one axis only, large and fractional factors, 1-pixel images, gray, and the other filters.
    #[test]
    fn resize_matches_pillow_bit_exactly() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pil/resize_cases.json");
        let text = std::fs::read_to_string(path).unwrap();
        let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = cases["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let n = |k: &str| case[k].as_u64().unwrap() as usize;
            let bytes =
                |k: &str| case[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect::<Vec<_>>();
            let filter = Filter::from_pil(n("filter") as u32).unwrap();
            let got =
                resize(&bytes("input"), n("in_w"), n("in_h"), n("channels"), n("out_w"), n("out_h"), filter).unwrap();
            let expected = bytes("expected");
            let mismatches = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
            assert_eq!(got.len(), expected.len(), "{}", case["name"]);
            assert_eq!(mismatches, 0, "{}: {mismatches} of {} values differ from Pillow", case["name"], got.len());
        }
    }

    #[test]
    fn same_size_resize_is_a_copy() {
        let src: Vec<u8> = (0..27).collect();
        assert_eq!(resize(&src, 3, 3, 3, 3, 3, Filter::Bilinear).unwrap(), src);
    }

    #[test]
    fn nearest_and_empty_sizes_are_refused() {
        let src = vec![0u8; 12];
        assert!(matches!(resize(&src, 2, 2, 3, 4, 4, Filter::Nearest), Err(PilError::UnsupportedFilter(_))));
        assert!(matches!(resize(&src, 2, 2, 3, 0, 4, Filter::Bilinear), Err(PilError::EmptySize { .. })));
    }
}

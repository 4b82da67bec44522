//! Decoded frame -> packed RGB: swscale as PyAV's `frame.to_ndarray(format="rgb24")` calls it, and rotation.

use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next::util::frame::Video as VideoFrame;

use crate::media::RgbImage;

/// Converts frames to rgb24 exactly as PyAV 14's `VideoReformatter.reformat(format="rgb24")` does:
/// `sws_getCachedContext(w, h, src_fmt, w, h, AV_PIX_FMT_RGB24, SWS_BILINEAR)` and `sws_scale`, with no
/// `sws_setColorspaceDetails` (PyAV passes the frame's own colorspace as both source and destination and
/// unspecified ranges, so it leaves swscale's defaults: BT.601 matrix, range from the pixel format).
pub(super) struct RgbConverter {
    scaler: Option<(Pixel, u32, u32, Scaler)>,
}

impl RgbConverter {
    pub(super) fn new() -> Self {
        RgbConverter { scaler: None }
    }

    pub(super) fn convert(&mut self, frame: &VideoFrame) -> Result<RgbImage, ffmpeg_next::Error> {
        let (format, width, height) = (frame.format(), frame.width(), frame.height());
        let reuse = matches!(&self.scaler, Some((f, w, h, _)) if *f == format && *w == width && *h == height);
        if !reuse {
            let scaler = Scaler::get(format, width, height, Pixel::RGB24, width, height, Flags::BILINEAR)?;
            self.scaler = Some((format, width, height, scaler));
        }
        let scaler = &mut self.scaler.as_mut().expect("set above").3;
        let mut rgb = VideoFrame::empty();
        scaler.run(frame, &mut rgb)?;
        // Rows may be padded (stride > width * 3): copy row by row.
        let (w, h) = (width as usize, height as usize);
        let stride = rgb.stride(0);
        let plane = rgb.data(0);
        let mut data = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            data.extend_from_slice(&plane[row * stride..row * stride + w * 3]);
        }
        Ok(RgbImage::new(w, h, data))
    }
}

/// Turns `image` clockwise by `degrees` (0, 90, 180 or 270; anything else is returned unchanged).
pub fn rotate_clockwise(image: &RgbImage, degrees: u16) -> RgbImage {
    let (w, h) = (image.width, image.height);
    let src = &image.data;
    let mut out = vec![0u8; src.len()];
    let (ow, oh) = match degrees {
        90 | 270 => (h, w),
        180 => (w, h),
        _ => return image.clone(),
    };
    for y in 0..h {
        for x in 0..w {
            // Where source pixel (x, y) lands in the output.
            let (ox, oy) = match degrees {
                90 => (h - 1 - y, x),
                180 => (w - 1 - x, h - 1 - y),
                _ => (y, w - 1 - x),
            };
            let s = (y * w + x) * 3;
            let d = (oy * ow + ox) * 3;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    RgbImage::new(ow, oh, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x2 image whose pixels are numbered 0..6 in reading order.
    fn numbered() -> RgbImage {
        RgbImage::new(3, 2, (0..6u8).flat_map(|v| [v, v, v]).collect())
    }

    fn reading_order(image: &RgbImage) -> Vec<u8> {
        image.data.chunks(3).map(|p| p[0]).collect()
    }

    #[test]
    fn rotate_clockwise_turns_rows_into_columns() {
        // 0 1 2        3 0
        // 3 4 5   ->   4 1
        //              5 2
        let r = rotate_clockwise(&numbered(), 90);
        assert_eq!((r.width, r.height), (2, 3));
        assert_eq!(reading_order(&r), vec![3, 0, 4, 1, 5, 2]);
        assert_eq!(reading_order(&rotate_clockwise(&numbered(), 180)), vec![5, 4, 3, 2, 1, 0]);
        assert_eq!(reading_order(&rotate_clockwise(&numbered(), 270)), vec![2, 5, 1, 4, 0, 3]);
        assert_eq!(rotate_clockwise(&numbered(), 0), numbered());
    }
}

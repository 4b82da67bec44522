//! transformers 4.46.3 `LlavaNextVideoProcessor`, pixel-exact: video frames as `LlavaNextVideoImageProcessor`
//! (resize the shortest edge with Pillow, centre crop, rescale, normalize), still images as
//! `LlavaNextImageProcessor`'s anyres path (best grid resolution, aspect-keeping resize, centred zero padding,
//! crops of `crop_size`, plus the whole image squashed to one crop, each then through the same per-crop steps), and
//! the number of `<image>` / `<video>` placeholder tokens each expands to.
//!
//! As in the Python code every geometric step runs on the uint8 image (so padding is 0 before normalization, not
//! after); `rescale` computes `float64(x) * factor` cast to float32 and `normalize` `(x - mean) / std` in float32.

use std::path::Path;

use serde::Deserialize;

use crate::media::pil::{Filter, PilError};
use crate::media::RgbImage;
pub use crate::models::image_processing::ProcessorError;
use crate::models::image_processing::{convolution_filter, float_or_list, read_config, PixelNormalizer};

const PROCESSOR: &str = "LlavaNextImageProcessor";

/// `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, the processors' defaults.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `size`: `{"shortest_edge": n}` or `{"height": h, "width": w}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SizeSpec {
    #[serde(default)]
    pub shortest_edge: Option<usize>,
    #[serde(default)]
    pub height: Option<usize>,
    #[serde(default)]
    pub width: Option<usize>,
}

/// `crop_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CropSize {
    pub height: usize,
    pub width: usize,
}

/// `preprocessor_config.json` of `LlavaNextImageProcessor` and `LlavaNextVideoImageProcessor` (the Hub repo's one
/// file configures both; the video processor ignores `image_grid_pinpoints` and `do_pad`), with their defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ImageProcessorConfig {
    pub do_resize: bool,
    pub size: SizeSpec,
    /// `(height, width)` canvases for anyres.
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// Pillow resampling code (3 = BICUBIC).
    pub resample: u32,
    pub do_center_crop: bool,
    pub crop_size: CropSize,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    #[serde(deserialize_with = "float_or_list")]
    pub image_mean: Vec<f64>,
    #[serde(deserialize_with = "float_or_list")]
    pub image_std: Vec<f64>,
    /// Pads the crop count of a batch to its largest; no effect on each image's values.
    pub do_pad: bool,
    /// Decoding always yields RGB (see [`crate::media::image`]).
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        ImageProcessorConfig {
            do_resize: true,
            size: SizeSpec { shortest_edge: Some(224), height: None, width: None },
            image_grid_pinpoints: vec![[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
            resample: Filter::Bicubic.pil_code(),
            do_center_crop: true,
            crop_size: CropSize { height: 224, width: 224 },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.to_vec(),
            image_std: CLIP_STD.to_vec(),
            do_pad: true,
            do_convert_rgb: true,
        }
    }
}

/// `processor_config.json`: what `LlavaNextVideoProcessor` needs to expand the placeholder tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProcessorConfig {
    /// The vision tower's patch size; `None` makes transformers skip the expansion (legacy), which vislingo does
    /// not support: the model config's patch size is used instead.
    #[serde(default)]
    pub patch_size: Option<usize>,
    #[serde(default)]
    pub vision_feature_select_strategy: Option<String>,
    #[serde(default = "default_image_token")]
    pub image_token: String,
    #[serde(default = "default_video_token")]
    pub video_token: String,
}

fn default_image_token() -> String {
    "<image>".into()
}

fn default_video_token() -> String {
    "<video>".into()
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// One still image after preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `(crops, 3, crop_h, crop_w)` row-major float32: the squashed whole image first, then the grid row by row.
    pub pixel_values: Vec<f32>,
    pub num_crops: usize,
    pub crop_hw: (usize, usize),
    /// `image_sizes`: `(height, width)` of the image as given.
    pub image_size: (usize, usize),
}

/// One video after preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedVideo {
    /// `(frames, 3, crop_h, crop_w)` row-major float32.
    pub pixel_values: Vec<f32>,
    pub frames: usize,
    pub crop_hw: (usize, usize),
}

/// The resize / crop / rescale / normalize steps shared by both processors (`_preprocess`).
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: ImageProcessorConfig,
    filter: Filter,
    normalizer: PixelNormalizer,
}

impl ImageProcessor {
    pub fn new(config: ImageProcessorConfig) -> Result<Self, ProcessorError> {
        let bad = |message: String| Err(ProcessorError::Config { processor: PROCESSOR, message });
        let filter = convolution_filter(config.resample, PROCESSOR)?;
        let size = config.size;
        if size.shortest_edge.is_none() && (size.height.is_none() || size.width.is_none()) {
            return bad("`size` must contain either 'shortest_edge' or 'height' and 'width'".into());
        }
        if [size.shortest_edge, size.height, size.width].contains(&Some(0)) {
            return bad("`size` must be positive".into());
        }
        if config.crop_size.height == 0 || config.crop_size.width == 0 {
            return bad("`crop_size` must be positive".into());
        }
        let normalizer = PixelNormalizer::new(
            config.do_rescale.then_some(config.rescale_factor),
            config.do_normalize.then_some((&config.image_mean, &config.image_std)),
            PROCESSOR,
        )?;
        Ok(ImageProcessor { config, filter, normalizer })
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ProcessorError> {
        Self::new(read_config(path.as_ref())?)
    }

    pub fn config(&self) -> &ImageProcessorConfig {
        &self.config
    }

    /// `(height, width)` of every processed crop or frame.
    pub fn crop_hw(&self) -> (usize, usize) {
        (self.config.crop_size.height, self.config.crop_size.width)
    }

    /// `_preprocess` of one uint8 image: resize, centre crop, then rescale + normalize into `out` (CHW).
    fn preprocess_into(&self, image: &RgbImage, out: &mut Vec<f32>) -> Result<(), ProcessorError> {
        let c = &self.config;
        let resized;
        let mut image = image;
        if c.do_resize {
            let (h, w) = match c.size.shortest_edge {
                Some(edge) => resize_output_size((image.height, image.width), edge),
                None => (c.size.height.unwrap_or(0), c.size.width.unwrap_or(0)),
            };
            resized = image.resize(w, h, self.filter)?;
            image = &resized;
        }
        let cropped;
        if c.do_center_crop {
            cropped = center_crop(image, c.crop_size.height, c.crop_size.width);
            image = &cropped;
        }
        let plane = image.width * image.height;
        let start = out.len();
        out.resize(start + 3 * plane, 0.0);
        for (i, px) in image.data.chunks_exact(3).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[start + ch * plane + i] = self.normalizer.value(v, ch);
            }
        }
        Ok(())
    }

    /// `LlavaNextVideoImageProcessor` on one video's frames (all the same size).
    pub fn preprocess_video(&self, frames: &[RgbImage]) -> Result<ProcessedVideo, ProcessorError> {
        let Some(first) = frames.first() else {
            return Err(ProcessorError::Frames { frame: 0, got_w: 0, got_h: 0, w: 0, h: 0 });
        };
        if let Some((i, f)) =
            frames.iter().enumerate().find(|(_, f)| (f.width, f.height) != (first.width, first.height))
        {
            return Err(ProcessorError::Frames {
                frame: i,
                got_w: f.width,
                got_h: f.height,
                w: first.width,
                h: first.height,
            });
        }
        let mut pixel_values = Vec::new();
        for frame in frames {
            self.preprocess_into(frame, &mut pixel_values)?;
        }
        let crop_hw = self.check_output(pixel_values.len(), frames.len())?;
        Ok(ProcessedVideo { pixel_values, frames: frames.len(), crop_hw })
    }

    /// `LlavaNextImageProcessor` on one still image (`get_image_patches` then `_preprocess` of every crop).
    pub fn preprocess_image(&self, image: &RgbImage) -> Result<ProcessedImage, ProcessorError> {
        let (h, w) = (image.height, image.width);
        if h == 0 || w == 0 {
            return Err(PilError::EmptySize { from_w: w, from_h: h, to_w: 0, to_h: 0 }.into());
        }
        let c = &self.config;
        let crop = c.crop_size.height;
        let best = select_best_resolution((h, w), &c.image_grid_pinpoints);
        let (new_h, new_w) = patch_output_size((h, w), best);
        let resized = image.resize(new_w, new_h, self.filter)?;
        let padded = pad_for_patching(&resized, best);
        let base_edge = match c.size.shortest_edge {
            Some(edge) => edge,
            None => c.size.height.unwrap_or(0).min(c.size.width.unwrap_or(0)),
        };
        let mut crops = vec![image.resize(base_edge, base_edge, self.filter)?];
        crops.extend(divide_to_patches(&padded, crop));
        let mut pixel_values = Vec::new();
        for crop in &crops {
            self.preprocess_into(crop, &mut pixel_values)?;
        }
        let crop_hw = self.check_output(pixel_values.len(), crops.len())?;
        Ok(ProcessedImage { pixel_values, num_crops: crops.len(), crop_hw, image_size: (h, w) })
    }

    /// Every crop must come out the same size (stacked as one tensor, as numpy would need).
    fn check_output(&self, values: usize, items: usize) -> Result<(usize, usize), ProcessorError> {
        let (h, w) = self.crop_hw();
        if !self.config.do_center_crop || values != items * 3 * h * w {
            return Err(ProcessorError::Config {
                processor: PROCESSOR,
                message: "vislingo needs do_center_crop, so that every crop comes out crop_size".into(),
            });
        }
        Ok((h, w))
    }
}

/// Both processors and the placeholder-token arithmetic of `LlavaNextVideoProcessor`.
#[derive(Debug, Clone)]
pub struct LlavaNextProcessor {
    pub image: ImageProcessor,
    pub video: ImageProcessor,
    pub config: ProcessorConfig,
    /// The patch size used for token counts (`processor_config.json`, else the vision config's).
    patch_size: usize,
    /// Whether the class token is dropped (`vision_feature_select_strategy` "default").
    drops_class_token: bool,
}

impl LlavaNextProcessor {
    /// `fallback_patch_size` / `fallback_strategy` come from the model config, for a processor config without them.
    pub fn new(
        image: ImageProcessor,
        video: ImageProcessor,
        config: ProcessorConfig,
        fallback_patch_size: usize,
        fallback_strategy: &str,
    ) -> Result<Self, ProcessorError> {
        let patch_size = config.patch_size.unwrap_or(fallback_patch_size);
        if patch_size == 0 {
            let message = "`patch_size` must be positive".into();
            return Err(ProcessorError::Config { processor: "LlavaNextVideoProcessor", message });
        }
        let strategy = config.vision_feature_select_strategy.as_deref().unwrap_or(fallback_strategy);
        Ok(LlavaNextProcessor { image, video, drops_class_token: strategy == "default", patch_size, config })
    }

    /// Reads `processor_config.json` (optional) and the image processor configs.
    pub fn from_files(
        preprocessor_config: &Path,
        video_preprocessor_config: Option<&Path>,
        processor_config: Option<&Path>,
        fallback_patch_size: usize,
        fallback_strategy: &str,
    ) -> Result<Self, ProcessorError> {
        let image = ImageProcessor::from_file(preprocessor_config)?;
        let video = ImageProcessor::from_file(video_preprocessor_config.unwrap_or(preprocessor_config))?;
        let config = match processor_config {
            Some(path) => read_config(path)?,
            None => ProcessorConfig::default(),
        };
        Self::new(image, video, config, fallback_patch_size, fallback_strategy)
    }

    /// `<image>` tokens for an image of `(height, width)` (`_get_number_of_features`, minus the class token).
    pub fn image_tokens(&self, image_size: (usize, usize)) -> usize {
        let (height, width) = self.image.crop_hw();
        let (best_h, best_w) = select_best_resolution(image_size, &self.image.config.image_grid_pinpoints);
        let (scale_h, scale_w) = (best_h / height, best_w / width);
        let (patches_h, patches_w) = (height / self.patch_size, width / self.patch_size);
        let (unpadded, newline) = unpadded_features(image_size, (patches_h, patches_w), (scale_h, scale_w));
        let tokens = unpadded + newline + patches_h * patches_w + 1;
        tokens - usize::from(self.drops_class_token)
    }

    /// `<video>` tokens for a video of `frames` frames: `(h // patch) * (w // patch) // 4 * frames` (the 4 is
    /// hard-coded in transformers for the 2x2 pooling).
    pub fn video_tokens(&self, frames: usize) -> usize {
        let (height, width) = self.video.crop_hw();
        (height / self.patch_size) * (width / self.patch_size) / 4 * frames
    }
}

/// `_get_unpadded_features` with its integer arithmetic: (unpadded features, newline features).
fn unpadded_features(
    (height, width): (usize, usize),
    (patches_h, patches_w): (usize, usize),
    (scale_h, scale_w): (usize, usize),
) -> (usize, usize) {
    let mut current_h = patches_h * scale_h;
    let mut current_w = patches_w * scale_w;
    // original_aspect_ratio > current_aspect_ratio, compared as Python floats
    if width as f64 / height as f64 > current_w as f64 / current_h as f64 {
        let new_h = (height * current_w) / width;
        let padding = (current_h - new_h.min(current_h)) / 2;
        current_h -= padding * 2;
    } else {
        let new_w = (width * current_h) / height;
        let padding = (current_w - new_w.min(current_w)) / 2;
        current_w -= padding * 2;
    }
    (current_h * current_w, current_h)
}

/// `select_best_resolution`: the `(height, width)` pinpoint keeping the most pixels of the image, then wasting
/// the fewest (first in list order on ties).
pub fn select_best_resolution(original: (usize, usize), pinpoints: &[[usize; 2]]) -> (usize, usize) {
    let (oh, ow) = original;
    let mut best = (pinpoints[0][0], pinpoints[0][1]);
    let mut max_effective = 0usize;
    let mut min_wasted = usize::MAX;
    for &[h, w] in pinpoints {
        let scale = (w as f64 / ow as f64).min(h as f64 / oh as f64);
        let (dw, dh) = ((ow as f64 * scale) as usize, (oh as f64 * scale) as usize);
        let effective = (dw * dh).min(ow * oh);
        let wasted = (w * h).saturating_sub(effective);
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = (h, w);
        }
    }
    best
}

/// `get_resize_output_image_size(image, shortest_edge, default_to_square=False)`: `(height, width)`.
pub fn resize_output_size((h, w): (usize, usize), edge: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((edge * long) as f64 / short as f64) as usize;
    if w <= h {
        (new_long, edge)
    } else {
        (edge, new_long)
    }
}

/// `_get_patch_output_size`: the aspect-keeping size inside `target`, the short side rounded up.
pub fn patch_output_size((h, w): (usize, usize), (th, tw): (usize, usize)) -> (usize, usize) {
    let scale_w = tw as f64 / w as f64;
    let scale_h = th as f64 / h as f64;
    if scale_w < scale_h {
        (((h as f64 * scale_w).ceil() as usize).min(th), tw)
    } else {
        (th, ((w as f64 * scale_h).ceil() as usize).min(tw))
    }
}

/// `_pad_for_patching`: zeros around the resized image, `(target - size) // 2` on each side (so an odd
/// difference leaves the result one pixel short of the target, as in transformers).
fn pad_for_patching(image: &RgbImage, (th, tw): (usize, usize)) -> RgbImage {
    let (py, px) = ((th - image.height) / 2, (tw - image.width) / 2);
    let (h, w) = (image.height + 2 * py, image.width + 2 * px);
    let mut data = vec![0u8; h * w * 3];
    for y in 0..image.height {
        let src = &image.data[y * image.width * 3..(y + 1) * image.width * 3];
        let start = ((y + py) * w + px) * 3;
        data[start..start + src.len()].copy_from_slice(src);
    }
    RgbImage::new(w, h, data)
}

/// `divide_to_patches`: `size x size` crops row by row (the last row/column may be smaller).
fn divide_to_patches(image: &RgbImage, size: usize) -> Vec<RgbImage> {
    let mut patches = Vec::new();
    for top in (0..image.height).step_by(size) {
        for left in (0..image.width).step_by(size) {
            patches.push(crop(
                image,
                top as isize,
                left as isize,
                size.min(image.height - top),
                size.min(image.width - left),
            ));
        }
    }
    patches
}

/// `center_crop` (image_transforms.py): the centred `height x width` window, zero-filled where the image is
/// smaller than the crop.
pub fn center_crop(image: &RgbImage, height: usize, width: usize) -> RgbImage {
    let offset = |orig: usize, size: usize| -> isize {
        if size > orig {
            -((size - orig).div_ceil(2) as isize)
        } else {
            ((orig - size) / 2) as isize
        }
    };
    crop(image, offset(image.height, height), offset(image.width, width), height, width)
}

/// The `height x width` window at `(top, left)`, zeros outside the image.
fn crop(image: &RgbImage, top: isize, left: isize, height: usize, width: usize) -> RgbImage {
    let mut data = vec![0u8; height * width * 3];
    for y in 0..height {
        let sy = top + y as isize;
        if sy < 0 || sy >= image.height as isize {
            continue;
        }
        for x in 0..width {
            let sx = left + x as isize;
            if sx < 0 || sx >= image.width as isize {
                continue;
            }
            let src = (sy as usize * image.width + sx as usize) * 3;
            data[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&image.data[src..src + 3]);
        }
    }
    RgbImage::new(width, height, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_resize_truncates_the_long_side() {
        assert_eq!(resize_output_size((480, 640), 336), (336, 448));
        assert_eq!(resize_output_size((641, 480), 336), (448, 336)); // int(336 * 641 / 480) = 448
    }

    #[test]
    fn centre_crop_pads_with_zeros_when_the_image_is_smaller() {
        let image = RgbImage::new(1, 1, vec![9, 9, 9]);
        let out = center_crop(&image, 2, 3);
        // top = -ceil(1/2) = -1 rows, left = -ceil(2/2) = -1 columns: the pixel lands at (1, 1)
        assert_eq!(out.pixel(1, 1), [9, 9, 9]);
        assert_eq!(out.pixel(0, 0), [0, 0, 0]);
    }

    #[test]
    fn image_token_count_matches_the_7b_numbers() {
        let processor = LlavaNextProcessor::new(
            ImageProcessor::new(ImageProcessorConfig {
                size: SizeSpec { shortest_edge: Some(336), height: None, width: None },
                crop_size: CropSize { height: 336, width: 336 },
                ..Default::default()
            })
            .unwrap(),
            ImageProcessor::new(ImageProcessorConfig {
                size: SizeSpec { shortest_edge: Some(336), height: None, width: None },
                crop_size: CropSize { height: 336, width: 336 },
                ..Default::default()
            })
            .unwrap(),
            ProcessorConfig::default(),
            14,
            "default",
        )
        .unwrap();
        // A 336x336 image: best (336, 672) (the first of the ties), a 24x48 grid unpadded to 24x24, 24 newlines,
        // 576 base features (the class token dropped)
        assert_eq!(processor.image_tokens((336, 336)), 24 * 24 + 24 + 576);
        // transformers 4.46.3: _get_number_of_features(500, 1200, 336, 336) - 1
        assert_eq!(processor.image_tokens((500, 1200)), 1992);
        // 8 frames of 336x336: 24x24 patches pooled 2x2
        assert_eq!(processor.video_tokens(8), 8 * 144);
    }

    #[test]
    fn a_video_with_frames_of_different_sizes_is_refused() {
        let processor = ImageProcessor::new(ImageProcessorConfig::default()).unwrap();
        let frames = [RgbImage::new(4, 3, vec![0; 36]), RgbImage::new(3, 4, vec![0; 36])];
        let error = processor.preprocess_video(&frames).unwrap_err();
        assert!(matches!(error, ProcessorError::Frames { frame: 1, .. }), "{error}");
        assert!(matches!(processor.preprocess_video(&[]), Err(ProcessorError::Frames { .. })));
    }
}

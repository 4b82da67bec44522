//! transformers 4.46.3 `MllamaImageProcessor` (Llama 3.2 Vision), pixel-exact: each image is resized with
//! Pillow's BILINEAR filter ([`crate::media::pil`]) to fit the best canvas of `tile x tile` tiles (at most
//! `max_image_tiles`), padded with zeros at the bottom/right, rescaled and normalized, split into tiles
//! (row-major) and packed into `max_image_tiles` slots (the unused ones zero).
//!
//! Order and arithmetic follow the Python code: padding happens on the uint8 image, before rescaling, so the
//! padding becomes `-mean / std` after normalization (not 0); `rescale` computes `float64(x) * factor` and
//! casts to float32; `normalize` computes `(x - mean) / std` in float32 with `mean`/`std` cast to float32.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::vision::VisionInput;
use crate::media::pil::{Filter, PilError};
use crate::media::{self, DecodeOptions, RgbImage};
pub use crate::models::image_processing::ProcessorError;
use crate::models::image_processing::{convolution_filter, float_or_list, read_config, PixelNormalizer};

const PROCESSOR: &str = "MllamaImageProcessor";

/// `IMAGENET_STANDARD_MEAN` / `IMAGENET_STANDARD_STD`, the class defaults for `image_mean` / `image_std`.
const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];

/// `{"height": h, "width": w}` of the Hub's `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SizeDict {
    pub height: usize,
    pub width: usize,
}

/// `preprocessor_config.json`, with the Hub's field names and `MllamaImageProcessor.__init__`'s defaults.
/// Unknown fields (`image_processor_type`, `processor_class`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct MllamaImageProcessorConfig {
    /// Decoding always yields RGB (see [`crate::media::image`]); kept for completeness.
    pub do_convert_rgb: bool,
    /// Must be true (transformers refuses `false`).
    pub do_resize: bool,
    /// Tile size; height and width must be equal.
    pub size: SizeDict,
    /// Pillow resampling code (2 = BILINEAR).
    pub resample: u32,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    #[serde(deserialize_with = "float_or_list")]
    pub image_mean: Vec<f64>,
    #[serde(deserialize_with = "float_or_list")]
    pub image_std: Vec<f64>,
    /// Must be true (transformers refuses `false`).
    pub do_pad: bool,
    pub max_image_tiles: usize,
}

impl Default for MllamaImageProcessorConfig {
    fn default() -> Self {
        MllamaImageProcessorConfig {
            do_convert_rgb: true,
            do_resize: true,
            size: SizeDict { height: 224, width: 224 },
            resample: Filter::Bilinear.pil_code(),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: IMAGENET_STANDARD.to_vec(),
            image_std: IMAGENET_STANDARD.to_vec(),
            do_pad: true,
            max_image_tiles: 4,
        }
    }
}

/// One image after preprocessing: the `pixel_values[i, j]`, `aspect_ratio_ids[i, j]`,
/// `aspect_ratio_mask[i, j]` and `num_tiles[i][j]` that transformers returns for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `(max_tiles, 3, tile, tile)` row-major float32; tiles past `num_tiles` are zero.
    pub pixel_values: Vec<f32>,
    /// 1-based index of `tiles_hw` in [`get_all_supported_aspect_ratios`].
    pub aspect_ratio_id: u32,
    /// `max_tiles` entries: 1 for the first `num_tiles` tiles (the first always 1), then 0.
    pub aspect_ratio_mask: Vec<u8>,
    pub num_tiles: usize,
    /// Tiles down and across.
    pub tiles_hw: (usize, usize),
    /// `(height, width)` after decoding (and EXIF orientation), before resizing.
    pub original_hw: (usize, usize),
    /// `(height, width)` after resizing, before padding to `tiles_hw * tile`.
    pub resized_hw: (usize, usize),
    pub tile_size: usize,
    pub max_tiles: usize,
}

impl ProcessedImage {
    /// `pixel_values` as a `(max_tiles, 3, tile, tile)` f32 tensor.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.pixel_values, (self.max_tiles, 3, self.tile_size, self.tile_size), device)
    }
}

/// `get_all_supported_aspect_ratios`: every `(a, b)` with `a * b <= max_image_tiles`, `a` outer. The processor
/// treats the pair as (tiles down, tiles across).
pub fn get_all_supported_aspect_ratios(max_image_tiles: usize) -> Vec<(usize, usize)> {
    let mut ratios = Vec::new();
    for a in 1..=max_image_tiles {
        for b in 1..=max_image_tiles {
            if a * b <= max_image_tiles {
                ratios.push((a, b));
            }
        }
    }
    ratios
}

/// `get_optimal_tiled_canvas`: the `(height, width)` canvas whose limiting scale is the smallest upscale
/// (>= 1), or else the largest downscale; ties go to the smallest area (the first in list order among equals).
pub fn get_optimal_tiled_canvas(
    image_height: usize,
    image_width: usize,
    max_image_tiles: usize,
    tile_size: usize,
) -> (usize, usize) {
    let canvases: Vec<(usize, usize)> = get_all_supported_aspect_ratios(max_image_tiles)
        .into_iter()
        .map(|(h, w)| (h * tile_size, w * tile_size))
        .collect();
    let scales: Vec<f64> = canvases
        .iter()
        .map(|&(h, w)| {
            let scale_h = h as f64 / image_height as f64;
            let scale_w = w as f64 / image_width as f64;
            // np.where(scale_w > scale_h, scale_h, scale_w)
            if scale_w > scale_h {
                scale_h
            } else {
                scale_w
            }
        })
        .collect();
    let upscaling = scales.iter().copied().filter(|&s| s >= 1.0);
    let selected = match upscaling.clone().reduce(f64::min) {
        Some(s) => s,
        None => scales.iter().copied().filter(|&s| s < 1.0).reduce(f64::max).expect("at least one canvas"),
    };
    // argmin of the area over the canvases with exactly that scale: the first minimum wins.
    let mut best: Option<(usize, usize)> = None;
    for (&canvas, &scale) in canvases.iter().zip(&scales) {
        if scale == selected && best.is_none_or(|b| canvas.0 * canvas.1 < b.0 * b.1) {
            best = Some(canvas);
        }
    }
    best.expect("the selected scale comes from one of the canvases")
}

/// `get_image_size_fit_to_canvas`: the `(height, width)` to resize to, keeping the aspect ratio, each side
/// first clipped to `[tile_size, canvas side]`, the other side floored.
///
/// Where the Python code would return 0 for a side (an image so thin that its scaled short side floors to 0,
/// on which Pillow's resize then raises), this returns 1.
pub fn get_image_size_fit_to_canvas(
    image_height: usize,
    image_width: usize,
    canvas_height: usize,
    canvas_width: usize,
    tile_size: usize,
) -> (usize, usize) {
    // np.clip(x, lo, hi) = min(max(x, lo), hi)
    let target_width = image_width.max(tile_size).min(canvas_width);
    let target_height = image_height.max(tile_size).min(canvas_height);
    let scale_h = target_height as f64 / image_height as f64;
    let scale_w = target_width as f64 / image_width as f64;
    let (h, w) = if scale_w < scale_h {
        (((image_height as f64 * scale_w).floor() as usize).min(target_height), target_width)
    } else {
        (target_height, ((image_width as f64 * scale_h).floor() as usize).min(target_width))
    };
    (h.max(1), w.max(1))
}

/// transformers' `MllamaImageProcessor`.
#[derive(Debug, Clone)]
pub struct MllamaImageProcessor {
    config: MllamaImageProcessorConfig,
    filter: Filter,
    normalizer: PixelNormalizer,
}

impl MllamaImageProcessor {
    /// Validates the config as `_validate_mllama_preprocess_arguments` and `validate_preprocess_arguments` do.
    pub fn new(config: MllamaImageProcessorConfig) -> Result<Self, ProcessorError> {
        let bad = |message: String| Err(ProcessorError::Config { processor: PROCESSOR, message });
        if !config.do_pad {
            return bad("MllamaImageProcessor doesn't support `do_pad=False` mode".into());
        }
        if !config.do_resize {
            return bad("MllamaImageProcessor doesn't support `do_resize=False` mode".into());
        }
        if config.max_image_tiles == 0 {
            return bad("`max_image_tiles` must be a positive integer, got 0".into());
        }
        if config.size.height != config.size.width || config.size.height == 0 {
            return bad(format!(
                "`size` must have equal, positive height and width, got {}x{}",
                config.size.height, config.size.width
            ));
        }
        let filter = convolution_filter(config.resample, PROCESSOR)?;
        let normalizer = PixelNormalizer::new(
            config.do_rescale.then_some(config.rescale_factor),
            config.do_normalize.then_some((&config.image_mean, &config.image_std)),
            PROCESSOR,
        )?;
        Ok(MllamaImageProcessor { config, filter, normalizer })
    }

    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ProcessorError> {
        Self::new(read_config(path.as_ref())?)
    }

    pub fn config(&self) -> &MllamaImageProcessorConfig {
        &self.config
    }

    pub fn tile_size(&self) -> usize {
        self.config.size.height
    }

    pub fn max_image_tiles(&self) -> usize {
        self.config.max_image_tiles
    }

    /// Decodes an image file (see [`crate::media::decode_file`]) and preprocesses it.
    pub fn preprocess_file(
        &self,
        path: impl AsRef<Path>,
        options: &DecodeOptions,
    ) -> Result<ProcessedImage, ProcessorError> {
        let image = media::decode_file(path, options)?;
        self.preprocess(&image)
    }

    /// Preprocesses one decoded RGB image.
    pub fn preprocess(&self, image: &RgbImage) -> Result<ProcessedImage, ProcessorError> {
        let tile = self.tile_size();
        let max_tiles = self.max_image_tiles();
        let (h, w) = (image.height, image.width);
        if h == 0 || w == 0 {
            return Err(PilError::EmptySize { from_w: w, from_h: h, to_w: 0, to_h: 0 }.into());
        }

        // resize
        let (canvas_h, canvas_w) = get_optimal_tiled_canvas(h, w, max_tiles, tile);
        let (tiles_h, tiles_w) = (canvas_h / tile, canvas_w / tile);
        let (new_h, new_w) = get_image_size_fit_to_canvas(h, w, canvas_h, canvas_w, tile);
        let resized = image.resize(new_w, new_h, self.filter)?;

        // pad (uint8 zeros, bottom/right) + rescale + normalize, straight into the tile layout.
        let num_tiles = tiles_h * tiles_w;
        let plane = tile * tile;
        let mut pixel_values = vec![0f32; max_tiles * 3 * plane];
        let value = |v: u8, c: usize| self.normalizer.value(v, c);
        let padding: [f32; 3] = [value(0, 0), value(0, 1), value(0, 2)];
        for th in 0..tiles_h {
            for tw in 0..tiles_w {
                let tile_base = (th * tiles_w + tw) * 3 * plane;
                for y in 0..tile {
                    let sy = th * tile + y;
                    for x in 0..tile {
                        let sx = tw * tile + x;
                        let inside = sy < new_h && sx < new_w;
                        for c in 0..3 {
                            pixel_values[tile_base + c * plane + y * tile + x] =
                                if inside { value(resized.data[(sy * new_w + sx) * 3 + c], c) } else { padding[c] };
                        }
                    }
                }
            }
        }

        let ratios = get_all_supported_aspect_ratios(max_tiles);
        let index = ratios.iter().position(|&r| r == (tiles_h, tiles_w)).expect("the canvas is a supported ratio");
        let mut aspect_ratio_mask = vec![0u8; max_tiles];
        aspect_ratio_mask[..num_tiles.max(1)].fill(1);
        Ok(ProcessedImage {
            pixel_values,
            aspect_ratio_id: index as u32 + 1,
            aspect_ratio_mask,
            num_tiles,
            tiles_hw: (tiles_h, tiles_w),
            original_hw: (h, w),
            resized_hw: (new_h, new_w),
            tile_size: tile,
            max_tiles,
        })
    }

    /// Stacks preprocessed images into the vision model's input: `pixel_values` `(images, max_tiles, 3, tile,
    /// tile)` f32 on `device` (the model casts it to its dtype).
    pub fn vision_input(&self, images: &[ProcessedImage], device: &Device) -> candle_core::Result<VisionInput> {
        vision_input(images, device)
    }
}

/// [`MllamaImageProcessor::vision_input`] without the processor: all images must share tile size and count.
pub fn vision_input(images: &[ProcessedImage], device: &Device) -> candle_core::Result<VisionInput> {
    let Some(first) = images.first() else {
        candle_core::bail!("vision_input: no images");
    };
    let (tile, max_tiles) = (first.tile_size, first.max_tiles);
    if let Some(other) = images.iter().find(|i| i.tile_size != tile || i.max_tiles != max_tiles) {
        candle_core::bail!(
            "vision_input: images differ in tile layout ({max_tiles} x {tile}px vs {} x {}px)",
            other.max_tiles,
            other.tile_size
        );
    }
    let mut data = Vec::with_capacity(images.len() * first.pixel_values.len());
    for image in images {
        data.extend_from_slice(&image.pixel_values);
    }
    Ok(VisionInput {
        pixel_values: Tensor::from_vec(data, (images.len(), max_tiles, 3, tile, tile), device)?,
        aspect_ratio_ids: images.iter().map(|i| i.aspect_ratio_id).collect(),
        aspect_ratio_mask: images.iter().map(|i| i.aspect_ratio_mask.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_aspect_ratios_match_the_docstring() {
        assert_eq!(
            get_all_supported_aspect_ratios(4),
            vec![(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)]
        );
    }

    #[test]
    fn config_defaults_follow_transformers() {
        let c: MllamaImageProcessorConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, MllamaImageProcessorConfig::default());
        let c: MllamaImageProcessorConfig = serde_json::from_str(r#"{"image_mean": 0.25}"#).unwrap();
        assert_eq!(c.image_mean, vec![0.25; 3]);
    }

    #[test]
    fn invalid_configs_are_refused() {
        for json in [
            r#"{"do_pad": false}"#,
            r#"{"do_resize": false}"#,
            r#"{"max_image_tiles": 0}"#,
            r#"{"size": {"height": 56, "width": 112}}"#,
            r#"{"resample": 0}"#,
            r#"{"image_std": [0.5, 0.5]}"#,
        ] {
            let c: MllamaImageProcessorConfig = serde_json::from_str(json).unwrap();
            assert!(matches!(MllamaImageProcessor::new(c), Err(ProcessorError::Config { .. })), "{json}");
        }
    }
}

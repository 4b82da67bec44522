//! `LlavaNextVideoForConditionalGeneration` (transformers 4.46.3): the CLIP tower's features go through the
//! two-layer GELU projector; video frames are first pooled spatially (`LlavaNextVideoPooler`), still images take
//! the anyres path (a base view plus a grid of crops, re-assembled, unpadded, with an `image_newline` column)
//! (`get_image_features`, `pack_image_features`). The features replace the expanded `<image>` / `<video>`
//! tokens of the prompt's embeddings (`masked_scatter`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::config::LlavaNextVideoConfig;
use super::processor::select_best_resolution;
use super::text::{LlamaModel, LlamaSession};
use super::vision::ClipVisionTower;
use crate::models::quant::Quant;

/// Video frames encoded per vision-tower pass (bounds the attention scores' memory; the results do not depend on it).
const FRAMES_PER_VISION_PASS: usize = 8;

/// `LlavaNextVideoMultiModalProjector`: `linear_2(gelu(linear_1(x)))`.
#[derive(Debug, Clone)]
struct Projector {
    linear_1: Linear,
    linear_2: Linear,
}

impl Projector {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.gelu_erf()?)
    }
}

/// `LlavaNextVideoPooler`'s pooling of a frame's `side x side` patch grid.
#[derive(Debug, Clone)]
enum Pool {
    Average(usize),
    Max(usize),
    Conv(Conv2d),
}

#[derive(Debug, Clone)]
pub struct LlavaNextVideo {
    vision: ClipVisionTower,
    projector: Projector,
    pool: Pool,
    image_newline: Tensor,
    text: LlamaModel,
    config: LlavaNextVideoConfig,
}

impl LlavaNextVideo {
    pub fn new(config: &LlavaNextVideoConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_quantized(config, vb, Quant::None)
    }

    /// Loads the model, quantizing the text decoder's linear layers in place (`--quant`).
    pub fn new_quantized(config: &LlavaNextVideoConfig, vb: VarBuilder, quant: Quant) -> Result<Self> {
        let (v, t) = (config.vision_config.hidden_size, config.text_config.hidden_size);
        let stride = config.spatial_pool_stride;
        let pool = match config.spatial_pool_mode.as_str() {
            "average" => Pool::Average(stride),
            "max" => Pool::Max(stride),
            _ => {
                let out = config.spatial_pool_out_channels.unwrap_or(v);
                let conv = Conv2dConfig { stride, ..Default::default() };
                Pool::Conv(candle_nn::conv2d(v, out, stride, conv, vb.pp("vision_resampler").pp("pool"))?)
            }
        };
        let projector = vb.pp("multi_modal_projector");
        Ok(LlavaNextVideo {
            vision: ClipVisionTower::new(
                &config.vision_config,
                config.vision_layers_used(),
                vb.pp("vision_tower").pp("vision_model"),
            )?,
            projector: Projector {
                linear_1: linear(v, t, projector.pp("linear_1"))?,
                linear_2: linear(t, t, projector.pp("linear_2"))?,
            },
            pool,
            image_newline: vb.get(t, "image_newline")?,
            text: LlamaModel::new(&config.text_config, vb.pp("language_model"), quant)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &LlavaNextVideoConfig {
        &self.config
    }

    pub fn text(&self) -> &LlamaModel {
        &self.text
    }

    pub fn device(&self) -> &Device {
        self.text.device()
    }

    pub fn dtype(&self) -> DType {
        self.text.dtype()
    }

    /// The vision tower's selected hidden state of `pixel_values` `(n, 3, size, size)`, class token dropped
    /// (`vision_feature_select_strategy` "default"): `(n, patches, vision hidden)`.
    fn vision_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let states = self.vision.forward(pixel_values)?;
        if self.config.keeps_class_token() {
            Ok(states)
        } else {
            states.narrow(1, 1, states.dim(1)? - 1)
        }
    }

    /// Features of one video, `(frames * pooled patches, text hidden)`, from its frames' pixel values
    /// `(frames, 3, size, size)` (`get_video_features`: vision tower, pooler, projector).
    pub fn video_features(&self, frames: &Tensor) -> Result<Tensor> {
        // The tower runs a few frames at a time: its attention scores grow with frames x patches^2.
        let count = frames.dim(0)?;
        let chunks = (0..count)
            .step_by(FRAMES_PER_VISION_PASS)
            .map(|start| self.vision_features(&frames.narrow(0, start, FRAMES_PER_VISION_PASS.min(count - start))?))
            .collect::<Result<Vec<_>>>()?;
        let features = Tensor::cat(&chunks, 0)?;
        let (n, patches, dim) = features.dims3()?;
        let dtype = features.dtype();
        // ori_width = int(sqrt(patches)) and a view as (n, side, side, dim).
        let side = (patches as f64).sqrt() as usize;
        if side * side != patches {
            candle_core::bail!("video features: {patches} patches per frame are not a square grid");
        }
        let grid = features.reshape((n, side, side, dim))?;
        // AvgPool2d / MaxPool2d(kernel = stride = k): windows of k x k, a remainder row/column dropped.
        let window = |k: usize| -> Result<(Tensor, usize)> {
            let out = side / k;
            let grid = grid.narrow(1, 0, out * k)?.narrow(2, 0, out * k)?;
            Ok((grid.reshape((n, out, k, out, k, dim))?, out))
        };
        let (pooled, out) = match &self.pool {
            Pool::Average(k) => {
                // summed in f32, as torch's AvgPool2d accumulates half-precision inputs
                let (w, out) = window(*k)?;
                let mean = (w.to_dtype(DType::F32)?.sum(4)?.sum(2)? / (k * k) as f64)?;
                (mean.to_dtype(dtype)?, out)
            }
            Pool::Max(k) => {
                let (w, out) = window(*k)?;
                (w.max(4)?.max(2)?, out)
            }
            Pool::Conv(conv) => {
                let pooled = conv.forward(&grid.permute((0, 3, 1, 2))?.contiguous()?)?;
                let out = pooled.dim(2)?;
                (pooled.permute((0, 2, 3, 1))?, out)
            }
        };
        let pooled = pooled.reshape((n, out * out, ()))?;
        self.projector.forward(&pooled)?.reshape((n * out * out, ()))
    }

    /// Features of one still image, `(tokens, text hidden)`, from its anyres pixel values `(1 + grid patches, 3,
    /// size, size)` (base view first) and its original `(height, width)` (`get_image_features` +
    /// `pack_image_features` with `image_newline`).
    pub fn image_features(&self, pixel_values: &Tensor, image_size: (usize, usize)) -> Result<Tensor> {
        let size = self.config.vision_config.image_size;
        let expected = image_num_patches(image_size, &self.config.image_grid_pinpoints, size);
        let given = pixel_values.dim(0)?;
        if given != expected {
            candle_core::bail!(
                "image features: {given} patches given, the anyres grid of {image_size:?} needs {expected}"
            );
        }
        let features = self.projector.forward(&self.vision_features(pixel_values)?)?;
        let (patches, tokens, hidden) = features.dims3()?;
        let side = self.config.vision_config.patches_per_side();
        if patches == 1 {
            let base = features.get(0)?;
            return Tensor::cat(&[&base, &self.image_newline.unsqueeze(0)?.to_dtype(base.dtype())?], 0);
        }
        if tokens != side * side {
            candle_core::bail!("image features: {tokens} tokens per patch, expected {side}x{side}");
        }
        let base = features.get(0)?;
        let (grid_h, grid_w) = anyres_grid_shape(image_size, &self.config.image_grid_pinpoints, size);
        let grid = features
            .narrow(0, 1, patches - 1)?
            .reshape((grid_h, grid_w, side, side, hidden))?
            .permute((4, 0, 2, 1, 3))?
            .reshape((hidden, grid_h * side, grid_w * side))?;
        let grid = unpad_image(&grid, image_size)?;
        let (_, rows, cols) = grid.dims3()?;
        let newline =
            self.image_newline.to_dtype(grid.dtype())?.reshape((hidden, 1, 1))?.broadcast_as((hidden, rows, 1))?;
        let grid = Tensor::cat(&[&grid, &newline], 2)?.reshape((hidden, rows * (cols + 1)))?.t()?;
        Tensor::cat(&[&base, &grid], 0)
    }

    /// Prompt embeddings `(len, hidden)` with the image (video) tokens replaced, in order, by the rows of
    /// `image_features` (`video_features`), as `inputs_embeds.masked_scatter(...)` does.
    pub fn merge_features(
        &self,
        ids: &[u32],
        image_features: Option<&Tensor>,
        video_features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let embeds = self.text.embed(ids)?;
        let len = ids.len();
        let mut parts = vec![embeds];
        let mut index = Vec::with_capacity(len);
        let (mut next_image, mut next_video) = (0usize, 0usize);
        let image_rows = match image_features {
            Some(f) => f.dim(0)?,
            None => 0,
        };
        let video_rows = match video_features {
            Some(f) => f.dim(0)?,
            None => 0,
        };
        for (i, &id) in ids.iter().enumerate() {
            if id == self.config.image_token_index {
                index.push((len + next_image) as u32);
                next_image += 1;
            } else if id == self.config.video_token_index {
                index.push((len + image_rows + next_video) as u32);
                next_video += 1;
            } else {
                index.push(i as u32);
            }
        }
        if next_image != image_rows {
            candle_core::bail!(
                "Image features and image tokens do not match: tokens: {next_image}, features {image_rows}"
            );
        }
        if next_video != video_rows {
            candle_core::bail!(
                "Video features and video tokens do not match: tokens: {next_video}, features {video_rows}"
            );
        }
        let dtype = parts[0].dtype();
        for features in [image_features, video_features].into_iter().flatten() {
            parts.push(features.to_dtype(dtype)?);
        }
        let table = Tensor::cat(&parts, 0)?;
        table.index_select(&Tensor::new(index.as_slice(), table.device())?, 0)
    }

    /// A decoding session for `rows` prompts given as embeddings (see [`Self::merge_features`]).
    pub fn start(&self, prompt_embeddings: Vec<Tensor>) -> LlamaSession<'_> {
        self.text.start(prompt_embeddings.len()).with_prompt_embeddings(prompt_embeddings)
    }
}

/// `get_anyres_image_grid_shape`: crops down and across for an image of `(height, width)`.
pub fn anyres_grid_shape(image_size: (usize, usize), pinpoints: &[[usize; 2]], patch: usize) -> (usize, usize) {
    let (h, w) = select_best_resolution(image_size, pinpoints);
    (h / patch, w / patch)
}

/// `image_size_to_num_patches`: the grid's crops (ceil division) plus the base view.
pub fn image_num_patches(image_size: (usize, usize), pinpoints: &[[usize; 2]], patch: usize) -> usize {
    let (h, w) = select_best_resolution(image_size, pinpoints);
    h.div_ceil(patch) * w.div_ceil(patch) + 1
}

/// `unpad_image`: crops the padding that anyres added around an image of `original` `(height, width)` from a
/// `(channels, height, width)` feature map, with the float arithmetic of modeling_llava_next_video.py.
pub fn unpad_image(tensor: &Tensor, original: (usize, usize)) -> Result<Tensor> {
    let (_, current_h, current_w) = tensor.dims3()?;
    let (keep_rows, keep_cols) = unpadded_extent(original, (current_h, current_w));
    let tensor = tensor.narrow(1, keep_rows.0, keep_rows.1)?;
    tensor.narrow(2, keep_cols.0, keep_cols.1)
}

/// `(start, len)` of the rows and columns `unpad_image` keeps.
fn unpadded_extent(original: (usize, usize), current: (usize, usize)) -> ((usize, usize), (usize, usize)) {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let (ch, cw) = current;
    if ow / oh > cw as f64 / ch as f64 {
        let scale = cw as f64 / ow;
        let new_h = (oh * scale) as usize;
        let padding = (ch - new_h.min(ch)) / 2;
        ((padding, ch - 2 * padding), (0, cw))
    } else {
        let scale = ch as f64 / oh;
        let new_w = (ow * scale) as usize;
        let padding = (cw - new_w.min(cw)) / 2;
        ((0, ch), (padding, cw - 2 * padding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpadding_keeps_the_image_area_of_a_wide_image() {
        // 100x300 image on a 24x48 grid: scale 48/300, new height int(16.0) = 16, padding 4 rows each side.
        assert_eq!(unpadded_extent((100, 300), (24, 48)), ((4, 16), (0, 48)));
        // a tall image: columns cropped
        assert_eq!(unpadded_extent((300, 100), (48, 24)), ((0, 48), (4, 16)));
    }

    #[test]
    fn anyres_grid_and_patch_count_follow_the_best_resolution() {
        let pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];
        assert_eq!(anyres_grid_shape((500, 1200), &pinpoints, 336), (1, 3));
        assert_eq!(image_num_patches((500, 1200), &pinpoints, 336), 4);
    }
}

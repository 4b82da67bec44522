//! Llama 3.2 Vision (transformers `MllamaForConditionalGeneration`): the vision encoder, the projector, and the
//! text decoder with gated cross-attention, loaded by the Hub's tensor names (`vision_model.*`,
//! `multi_modal_projector.*`, `language_model.*`). Paper: "The Llama 3 Herd of Models" (2024),
//! <https://arxiv.org/abs/2407.21783>.

pub mod chat;
pub mod config;
pub mod processor;
pub mod text;
pub mod vision;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use crate::models::quant::Quant;

pub use config::MllamaConfig;
pub use processor::{MllamaImageProcessor, MllamaImageProcessorConfig, ProcessedImage, ProcessorError};
pub use text::{ImageContext, TextModel, TextSession};
pub use vision::{VisionInput, VisionModel};

/// Bytes of attention scores the vision encoder may hold at once: its attention spans all tiles of an image
/// (`heads x (tiles * 1608)^2` scores, 1.3 GB in bf16 per 4-tile image at 560 px, and as much again for their
/// softmax), so large batches are encoded a few images at a time. A score counts 4 bytes: the bf16/f16 scores and
/// their softmax (f32 runs, on small models, hold twice that).
pub const VISION_SCORES_BUDGET: usize = 6 << 30;

#[derive(Debug, Clone)]
pub struct Mllama {
    vision: VisionModel,
    projector: Linear,
    text: TextModel,
    config: MllamaConfig,
}

impl Mllama {
    pub fn new(config: &MllamaConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_quantized(config, vb, Quant::None)
    }

    /// Loads the model, quantizing the text decoder's linear layers in place (`--quant`).
    pub fn new_quantized(config: &MllamaConfig, vb: VarBuilder, quant: Quant) -> Result<Self> {
        Ok(Mllama {
            vision: VisionModel::new(&config.vision_config, vb.pp("vision_model"))?,
            projector: linear(
                config.vision_config.vision_output_dim,
                config.text_config.hidden_size,
                vb.pp("multi_modal_projector"),
            )?,
            text: TextModel::new(&config.text_config, vb.pp("language_model"), quant)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &MllamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        self.vision_device()
    }

    fn vision_device(&self) -> &Device {
        self.projector.weight().device()
    }

    pub fn dtype(&self) -> DType {
        self.projector.weight().dtype()
    }

    /// Projected features of each image, `(images, tiles * patches, text hidden)`: what cross-attention
    /// attends to (`multi_modal_projector(vision_model(...))`).
    /// Images go through the encoder a few at a time ([`VISION_SCORES_BUDGET`]), which bounds its memory.
    pub fn encode_images(&self, input: &VisionInput) -> Result<Tensor> {
        let total = input.aspect_ratio_ids.len();
        let chunk_images = self.vision_chunk_images();
        let mut chunks = Vec::with_capacity(total.div_ceil(chunk_images));
        for start in (0..total).step_by(chunk_images) {
            let len = chunk_images.min(total - start);
            let chunk = if len == total {
                input.clone()
            } else {
                VisionInput {
                    pixel_values: input.pixel_values.narrow(0, start, len)?,
                    aspect_ratio_ids: input.aspect_ratio_ids[start..start + len].to_vec(),
                    aspect_ratio_mask: input.aspect_ratio_mask[start..start + len].to_vec(),
                }
            };
            let features = self.vision.forward(&chunk)?;
            let (images, tiles, patches, _) = features.dims4()?;
            chunks.push(self.projector.forward(&features)?.reshape((images, tiles * patches, ()))?);
        }
        if chunks.len() == 1 {
            return Ok(chunks.pop().expect("one chunk"));
        }
        Tensor::cat(&chunks, 0)
    }

    /// A decoding session for `rows` sequences, with their images' features (or none, text-only).
    pub fn start(&self, rows: usize, images: Option<ImageContext>) -> Result<TextSession<'_>> {
        self.text.start(rows, images)
    }

    /// A decoding session whose rows may share images: `images.states` holds each image once and
    /// `row_images[row]` names each row's (see [`TextModel::start_shared`]).
    pub fn start_shared(
        &self,
        rows: usize,
        images: Option<ImageContext>,
        row_images: Vec<usize>,
    ) -> Result<TextSession<'_>> {
        self.text.start_shared(rows, images, row_images)
    }

    /// Images per vision-encoder pass under [`VISION_SCORES_BUDGET`] (at least one).
    fn vision_chunk_images(&self) -> usize {
        let v = &self.config.vision_config;
        let tokens = v.max_num_tiles * (v.num_patches() + 8);
        (VISION_SCORES_BUDGET / (v.attention_heads * tokens * tokens * 4).max(1)).max(1)
    }

    /// Vision tokens per tile (`vision_model.num_patches`).
    pub fn patches_per_tile(&self) -> usize {
        self.config.vision_config.num_patches()
    }
}

/// Which image tiles each prompt token may attend to, as `MllamaProcessor` builds `cross_attention_mask`
/// (processing_mllama.py `get_cross_attention_token_mask` + `convert_sparse_cross_attention_mask_to_dense`):
/// image `i` is seen from its `<|image|>` token up to the next image token (to the end for the last one;
/// adjacent image tokens share the following span), over its first `num_tiles[i]` tiles.
/// Returns `masks[token][image * max_tiles + tile]`.
pub fn cross_attention_token_masks(
    input_ids: &[u32],
    image_token_id: u32,
    num_tiles: &[usize],
    max_tiles: usize,
) -> Vec<Vec<u8>> {
    let len = input_ids.len();
    let locations: Vec<usize> =
        input_ids.iter().enumerate().filter(|(_, &t)| t == image_token_id).map(|(i, _)| i).collect();
    let images = num_tiles.len().max(1);
    let mut masks = vec![vec![0u8; images * max_tiles]; len];
    let mut spans: Vec<(usize, usize)> =
        locations.iter().enumerate().map(|(i, &start)| (start, locations.get(i + 1).copied().unwrap_or(len))).collect();
    let mut last_end = spans.last().map_or(len, |s| s.1);
    for span in spans.iter_mut().rev() {
        if span.0 + 1 == span.1 {
            span.1 = last_end;
        }
        last_end = span.1;
    }
    for (image, (&(start, end), &tiles)) in spans.iter().zip(num_tiles).enumerate() {
        for token in &mut masks[start..end.min(len)] {
            for tile in 0..tiles.min(max_tiles) {
                token[image * max_tiles + tile] = 1;
            }
        }
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::cross_attention_token_masks;

    #[test]
    fn an_image_is_seen_from_its_token_to_the_end_over_its_real_tiles() {
        let masks = cross_attention_token_masks(&[1, 9, 2, 3], 9, &[2], 4);
        assert_eq!(masks[0], vec![0, 0, 0, 0]);
        assert_eq!(masks[1], vec![1, 1, 0, 0]);
        assert_eq!(masks[3], vec![1, 1, 0, 0]);
    }

    #[test]
    fn adjacent_image_tokens_share_the_text_that_follows_them() {
        // <img><img> text <img> text
        let masks = cross_attention_token_masks(&[9, 9, 5, 9, 6], 9, &[1, 1, 1], 1);
        assert_eq!(masks[0], vec![1, 0, 0]);
        assert_eq!(masks[2], vec![1, 1, 0]);
        assert_eq!(masks[4], vec![0, 0, 1]);
    }
}

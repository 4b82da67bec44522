//! The Mllama vision encoder (transformers 4.46.3 `MllamaVisionModel`): patch embedding of each 560 px tile,
//! gated pre-/post-tile and positional embeddings, a local transformer whose chosen intermediate states are
//! concatenated to the output of a gated global transformer, and the projector into the text model's width.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::VisionConfig;

/// Pixels of a batch of images after `MllamaImageProcessor`: `(images, max_num_tiles, 3, tile, tile)`, the
/// aspect-ratio id of each image, and which of its tiles are real.
#[derive(Debug, Clone)]
pub struct VisionInput {
    pub pixel_values: Tensor,
    pub aspect_ratio_ids: Vec<u32>,
    pub aspect_ratio_mask: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Attention {
            q_proj: linear_no_bias(h, h, vb.pp("q_proj"))?,
            k_proj: linear_no_bias(h, h, vb.pp("k_proj"))?,
            v_proj: linear_no_bias(h, h, vb.pp("v_proj"))?,
            o_proj: linear_no_bias(h, h, vb.pp("o_proj"))?,
            heads: cfg.attention_heads,
            head_dim: h / cfg.attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let split = |t: Tensor| t.reshape((batch, seq, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous();
        let q = split(self.q_proj.forward(x)?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?.broadcast_add(mask)?;
        let weights = softmax_f32(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, hidden))?;
        self.o_proj.forward(&out)
    }
}

/// `softmax(x, dim=-1, dtype=torch.float32).to(x.dtype)`.
pub(crate) fn softmax_f32(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    fc1: Linear,
    fc2: Linear,
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    /// `tanh(gate_attn)`, `tanh(gate_ffn)` of the global layers.
    gates: Option<(Tensor, Tensor)>,
}

impl EncoderLayer {
    fn new(cfg: &VisionConfig, gated: bool, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let gates = if gated { Some((vb.get(1, "gate_attn")?.tanh()?, vb.get(1, "gate_ffn")?.tanh()?)) } else { None };
        Ok(EncoderLayer {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            fc1: linear(h, cfg.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, h, vb.pp("mlp").pp("fc2"))?,
            input_layernorm: layer_norm(h, cfg.norm_eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: layer_norm(h, cfg.norm_eps, vb.pp("post_attention_layernorm"))?,
            gates,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut attn = self.self_attn.forward(&self.input_layernorm.forward(x)?, mask)?;
        if let Some((gate, _)) = &self.gates {
            attn = attn.broadcast_mul(gate)?;
        }
        let x = (x + attn)?;
        let mut mlp = self.fc2.forward(&self.fc1.forward(&self.post_attention_layernorm.forward(&x)?)?.gelu_erf()?)?;
        if let Some((_, gate)) = &self.gates {
            mlp = mlp.broadcast_mul(gate)?;
        }
        x + mlp
    }
}

/// `MllamaPrecomputedAspectRatioEmbedding`: one learned vector per tile for each aspect ratio, gated.
#[derive(Debug, Clone)]
struct AspectRatioEmbedding {
    embedding: Embedding,
    gate: Tensor,
    max_num_tiles: usize,
    hidden: usize,
}

impl AspectRatioEmbedding {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let width = cfg.max_num_tiles * cfg.hidden_size;
        let table = vb.pp("embedding").get((cfg.max_aspect_ratio_id() + 1, width), "weight")?;
        Ok(AspectRatioEmbedding {
            embedding: Embedding::new(table, width),
            gate: vb.get(1, "gate")?.tanh()?,
            max_num_tiles: cfg.max_num_tiles,
            hidden: cfg.hidden_size,
        })
    }

    /// `x`: `(images, tiles, patches, hidden)`.
    fn forward(&self, x: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let emb = self.embedding.forward(ids)?.reshape(((), self.max_num_tiles, 1, self.hidden))?;
        x.broadcast_add(&emb.broadcast_mul(&self.gate)?)
    }
}

/// `MllamaPrecomputedPositionEmbedding`: `(1 - tanh g) * positions + tanh g * per-aspect-ratio tile positions`.
#[derive(Debug, Clone)]
struct GatedPositionEmbedding {
    embedding: Tensor,
    tile_embedding: Embedding,
    gate: Tensor,
    max_num_tiles: usize,
    num_patches: usize,
    hidden: usize,
}

impl GatedPositionEmbedding {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (p, h, t) = (cfg.num_patches(), cfg.hidden_size, cfg.max_num_tiles);
        let tiles = vb.pp("tile_embedding").get((cfg.max_aspect_ratio_id() + 1, t * p * h), "weight")?;
        Ok(GatedPositionEmbedding {
            embedding: vb.get((p, h), "embedding")?,
            tile_embedding: Embedding::new(tiles, t * p * h),
            gate: vb.get(1, "gate")?.tanh()?,
            max_num_tiles: t,
            num_patches: p,
            hidden: h,
        })
    }

    fn forward(&self, x: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let one_minus_gate = self.gate.affine(-1.0, 1.0)?;
        let positions = self.embedding.broadcast_mul(&one_minus_gate)?;
        let x = x.broadcast_add(&positions.reshape((1, 1, self.num_patches, self.hidden))?)?;
        let tiles =
            self.tile_embedding.forward(ids)?.reshape(((), self.max_num_tiles, self.num_patches, self.hidden))?;
        x + tiles.broadcast_mul(&self.gate)?
    }
}

#[derive(Debug, Clone)]
pub struct VisionModel {
    patch_embedding: Linear,
    class_embedding: Tensor,
    gated_positional_embedding: GatedPositionEmbedding,
    pre_tile_positional_embedding: AspectRatioEmbedding,
    post_tile_positional_embedding: AspectRatioEmbedding,
    layernorm_pre: LayerNorm,
    layernorm_post: LayerNorm,
    transformer: Vec<EncoderLayer>,
    global_transformer: Vec<EncoderLayer>,
    config: VisionConfig,
}

impl VisionModel {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (h, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        // Conv2d(kernel = stride = patch, no bias) as a matmul over flattened (channel, y, x) patches.
        let conv = vb.pp("patch_embedding").get((h, c, p, p), "weight")?.reshape((h, c * p * p))?;
        let local = vb.pp("transformer").pp("layers");
        let global = vb.pp("global_transformer").pp("layers");
        Ok(VisionModel {
            patch_embedding: Linear::new(conv, None),
            class_embedding: vb.get(h, "class_embedding")?,
            gated_positional_embedding: GatedPositionEmbedding::new(cfg, vb.pp("gated_positional_embedding"))?,
            pre_tile_positional_embedding: AspectRatioEmbedding::new(cfg, vb.pp("pre_tile_positional_embedding"))?,
            post_tile_positional_embedding: AspectRatioEmbedding::new(cfg, vb.pp("post_tile_positional_embedding"))?,
            // nn.LayerNorm(hidden_size): transformers' default eps, not norm_eps.
            layernorm_pre: layer_norm(h, 1e-5, vb.pp("layernorm_pre"))?,
            layernorm_post: layer_norm(h, 1e-5, vb.pp("layernorm_post"))?,
            transformer: (0..cfg.num_hidden_layers)
                .map(|i| EncoderLayer::new(cfg, false, local.pp(i)))
                .collect::<Result<_>>()?,
            global_transformer: (0..cfg.num_global_layers)
                .map(|i| EncoderLayer::new(cfg, true, global.pp(i)))
                .collect::<Result<_>>()?,
            config: cfg.clone(),
        })
    }

    /// Vision features of each image, `(images, tiles, num_patches, vision_output_dim)`.
    pub fn forward(&self, input: &VisionInput) -> Result<Tensor> {
        let cfg = &self.config;
        let started = std::time::Instant::now();
        let (images, tiles, channels, height, width) = input.pixel_values.dims5()?;
        let (h, p) = (cfg.hidden_size, cfg.patch_size);
        let device = input.pixel_values.device();
        let dtype = self.class_embedding.dtype();
        let ids = Tensor::from_vec(input.aspect_ratio_ids.clone(), images, device)?;

        // Patches in (channel, y, x) order, as the convolution kernel is laid out.
        let (gh, gw) = (height / p, width / p);
        let patches = input
            .pixel_values
            .to_dtype(dtype)?
            .reshape((images * tiles, channels, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((images * tiles, gh * gw, channels * p * p))?;
        let x = self.patch_embedding.forward(&patches)?;
        let num_patches = gh * gw;
        let x = x.reshape((images, tiles, num_patches, h))?;
        let x = self.pre_tile_positional_embedding.forward(&x, &ids)?;
        let x = x.reshape((images * tiles, num_patches, h))?;
        let class = self.class_embedding.reshape((1, 1, h))?.broadcast_as((images * tiles, 1, h))?;
        let x = Tensor::cat(&[&class, &x], 1)?;
        let patches_with_class = num_patches + 1;
        let x = x.reshape((images, tiles, patches_with_class, h))?;
        let x = self.gated_positional_embedding.forward(&x, &ids)?;
        let x = self.layernorm_pre.forward(&x)?;

        // Pad each tile's patch sequence to a multiple of 8.
        let padding = (8 - patches_with_class % 8) % 8;
        let padded = patches_with_class + padding;
        let x = if padding > 0 { x.pad_with_zeros(2, 0, padding)? } else { x };
        let mask = aspect_ratio_attention_mask(&input.aspect_ratio_mask, tiles, padded, padding, device, dtype)?;
        let mut x = x.reshape((images, tiles * padded, h))?;
        let embedded = crate::models::profile::lap(device, started);

        // Local transformer, keeping the input of every layer and the final output (`output_hidden_states`).
        let mut states = Vec::with_capacity(self.transformer.len() + 1);
        for layer in &self.transformer {
            states.push(x.clone());
            x = layer.forward(&x, &mask)?;
        }
        states.push(x.clone());

        let x = self.layernorm_post.forward(&x)?.reshape((images, tiles, padded, h))?;
        let x = self.post_tile_positional_embedding.forward(&x, &ids)?;
        let mut x = x.reshape((images, tiles * padded, h))?;
        for layer in &self.global_transformer {
            x = layer.forward(&x, &mask)?;
        }
        let x = x.reshape((images, tiles, padded, h))?.narrow(2, 0, patches_with_class)?;

        crate::models::profile::report(
            &format!("vision forward images={images}"),
            &[("embeddings+mask", embedded), ("all", crate::models::profile::lap(device, started))],
        );
        // torch.stack(states, -1)[..., indices] then reshape: features interleave as (hidden, layer).
        let chosen: Vec<&Tensor> = cfg.intermediate_layers_indices.iter().map(|&i| &states[i]).collect();
        let intermediate = Tensor::stack(&chosen, D::Minus1)?
            .reshape((images, tiles, padded, h * chosen.len()))?
            .narrow(2, 0, patches_with_class)?;
        Tensor::cat(&[&x, &intermediate], D::Minus1)?.contiguous()
    }
}

/// `_prepare_aspect_ratio_attention_mask`: a position is "masked" when its tile is padding or it is a padding
/// patch (with transformers' quirk that `x[:, :, -0:] = 0` masks every patch when there is no padding); the
/// additive mask is `min` exactly where both the query and the key are masked, 0 elsewhere.
fn aspect_ratio_attention_mask(
    aspect_ratio_mask: &[Vec<u8>],
    tiles: usize,
    padded: usize,
    padding: usize,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let len = tiles * padded;
    let images = aspect_ratio_mask.len();
    let mut masked = Vec::with_capacity(images * len);
    for tile_mask in aspect_ratio_mask {
        masked.extend((0..len).map(|i| {
            let (tile, patch) = (i / padded, i % padded);
            let tile_real = tile_mask.get(tile).copied().unwrap_or(0) != 0;
            let padding_patch = padding == 0 || patch >= padded - padding;
            if !tile_real || padding_patch {
                1f32
            } else {
                0.0
            }
        }));
    }
    // The outer product of the per-position flags, built on the device: `len^2` per image is 41M values at
    // 560 px tiles, too many to fill on the host.
    let masked = Tensor::from_vec(masked, (images, len), device)?;
    let both = masked.unsqueeze(2)?.broadcast_mul(&masked.unsqueeze(1)?)?;
    (both * f64::from(dtype_min(dtype)))?.unsqueeze(1)?.to_dtype(dtype)
}

/// `torch.finfo(dtype).min`, as an f32 that converts to exactly that value.
pub(crate) fn dtype_min(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.3895314e38,
        _ => f32::MIN,
    }
}

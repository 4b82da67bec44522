//! The CLIP ViT vision tower of LLaVA-NeXT(-Video) (transformers 4.46.3 `CLIPVisionModel`, loaded under
//! `vision_tower.vision_model.*`): convolutional patch embedding, class token and learned positions,
//! `pre_layrnorm`, then pre-LayerNorm encoder layers with `quick_gelu` MLPs. Only the layers up to
//! `vision_feature_layer` run: the features are that hidden state, not the pooled output.

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use super::config::ClipVisionConfig;
use crate::models::attention::attend;
use crate::models::linear::{fused_linear, Part};

/// `ACT2FN[hidden_act]` for the activations CLIP checkpoints use.
#[derive(Debug, Clone, Copy)]
enum Activation {
    /// `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

impl Activation {
    fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    /// `q_proj`, `k_proj`, `v_proj` as one matmul: `q | k | v` along the output.
    qkv_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let parts = [Part::new(h, vb.pp("q_proj")), Part::new(h, vb.pp("k_proj")), Part::new(h, vb.pp("v_proj"))];
        Ok(Attention {
            qkv_proj: fused_linear(h, &parts, true)?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// `CLIPAttention.forward`: queries scaled by `head_dim ** -0.5` before the product, no mask.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        // (q | k | v, batch, heads, seq, head_dim)
        let qkv =
            self.qkv_proj.forward(x)?.reshape((batch, seq, 3, self.heads, self.head_dim))?.permute((2, 0, 3, 1, 4))?;
        // The scaling writes q contiguous, as the products want it.
        let q = (qkv.get(0)? * (self.head_dim as f64).powf(-0.5))?;
        let (k, v) = (qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let out = attend(&q, &k, &v, None)?.transpose(1, 2)?.reshape((batch, seq, hidden))?;
        self.out_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    act: Activation,
}

impl EncoderLayer {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(EncoderLayer {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            fc1: linear(h, i, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(i, h, vb.pp("mlp").pp("fc2"))?,
            layer_norm2: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            act: if cfg.hidden_act == "gelu" { Activation::Gelu } else { Activation::QuickGelu },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?)?)?;
        let h = self.fc2.forward(&self.act.forward(&self.fc1.forward(&self.layer_norm2.forward(&x)?)?)?)?;
        x + h
    }
}

/// The CLIP vision transformer, truncated after the layer whose hidden state the projector reads.
#[derive(Debug, Clone)]
pub struct ClipVisionTower {
    /// Conv2d(kernel = stride = patch, no bias) as a matmul over flattened (channel, y, x) patches.
    patch_embedding: Linear,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    config: ClipVisionConfig,
}

impl ClipVisionTower {
    /// `vb` is `vision_tower.vision_model`; `layers_used` of the encoder layers are loaded (the rest, and
    /// `post_layernorm`, never contribute to LLaVA's features).
    pub fn new(cfg: &ClipVisionConfig, layers_used: usize, vb: VarBuilder) -> Result<Self> {
        let (h, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let embeddings = vb.pp("embeddings");
        let conv = embeddings.pp("patch_embedding").get((h, c, p, p), "weight")?.reshape((h, c * p * p))?;
        let positions = cfg.patches_per_side().pow(2) + 1;
        let layers = vb.pp("encoder").pp("layers");
        Ok(ClipVisionTower {
            patch_embedding: Linear::new(conv, None),
            class_embedding: embeddings.get(h, "class_embedding")?,
            position_embedding: embeddings.pp("position_embedding").get((positions, h), "weight")?,
            pre_layrnorm: layer_norm(h, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            layers: (0..layers_used.min(cfg.num_hidden_layers))
                .map(|i| EncoderLayer::new(cfg, layers.pp(i)))
                .collect::<Result<_>>()?,
            config: cfg.clone(),
        })
    }

    /// The hidden state after the loaded layers for `pixel_values` `(images, channels, size, size)`:
    /// `(images, 1 + patches, hidden)`, class token first.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (images, channels, height, width) = pixel_values.dims4()?;
        let (h, p) = (self.config.hidden_size, self.config.patch_size);
        if height != self.config.image_size || width != self.config.image_size {
            candle_core::bail!(
                "vision tower: pixel values are {height}x{width}, the model takes {0}x{0}",
                self.config.image_size
            );
        }
        let dtype = self.class_embedding.dtype();
        let (gh, gw) = (height / p, width / p);
        let patches = pixel_values
            .to_dtype(dtype)?
            .reshape((images, channels, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((images, gh * gw, channels * p * p))?;
        let x = self.patch_embedding.forward(&patches)?;
        let class = self.class_embedding.reshape((1, 1, h))?.broadcast_as((images, 1, h))?;
        let x = Tensor::cat(&[&class, &x], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

//! The Mllama vision encoder (transformers 4.46.3 `MllamaVisionModel`): patch embedding of each 560 px tile,
//! gated pre-/post-tile and positional embeddings, a local transformer whose chosen intermediate states are
//! concatenated to the output of a gated global transformer, and the projector into the text model's width.
//! The transformers run over each image's positions reordered real-first ([`RealFirst`]), which turns the
//! aspect-ratio attention mask into two unmasked attentions.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::VisionConfig;
use crate::models::attention::attend;
use crate::models::linear::{fused_linear, Part};

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
    /// `q_proj`, `k_proj`, `v_proj` as one matmul: `q | k | v` along the output.
    qkv_proj: Linear,
    o_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let parts = [Part::new(h, vb.pp("q_proj")), Part::new(h, vb.pp("k_proj")), Part::new(h, vb.pp("v_proj"))];
        Ok(Attention {
            qkv_proj: fused_linear(h, &parts, false)?,
            o_proj: linear_no_bias(h, h, vb.pp("o_proj"))?,
            heads: cfg.attention_heads,
            head_dim: h / cfg.attention_heads,
        })
    }

    /// `x`: `(images, seq, hidden)` in [`RealFirst`] order, whose image `i` has `real[i]` real positions.
    fn forward(&self, x: &Tensor, real: &[usize]) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        // (q | k | v, images, heads, seq, head_dim)
        let qkv =
            self.qkv_proj.forward(x)?.reshape((batch, seq, 3, self.heads, self.head_dim))?.permute((2, 0, 3, 1, 4))?;
        // The scaling writes q contiguous, as the products want it.
        let q = (qkv.get(0)? * (self.head_dim as f64).powf(-0.5))?;
        let (k, v) = (qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let out = real_first_attention(&q, &k, &v, real)?.transpose(1, 2)?.reshape((batch, seq, hidden))?;
        self.o_proj.forward(&out)
    }
}

/// Attention under `_prepare_aspect_ratio_attention_mask` for images whose positions are in [`RealFirst`] order:
/// `q`, `k`, `v` `(images, heads, seq, head_dim)` (q pre-scaled), the first `real[i]` positions of image `i`
/// real. The mask adds `min` to a score only when both the query and the key are masked positions, so a real
/// query sees every key unmasked and a masked query sees the real keys only (a masked key's `min` gives it a
/// weight of exactly 0): two unmasked attentions. With no real position (the `padding == 0` quirk masks them
/// all) every score is `min` and the weights are uniform (exactly so in f32 and bf16, whose scores round to `min`).
/// Images with equal `real` go through together.
fn real_first_attention(q: &Tensor, k: &Tensor, v: &Tensor, real: &[usize]) -> Result<Tensor> {
    let seq = q.dim(2)?;
    let mut outs = Vec::new();
    let mut first = 0;
    while first < real.len() {
        let n = real[first];
        let count = real[first..].iter().take_while(|&&r| r == n).count();
        let (q, k, v) = (q.narrow(0, first, count)?, k.narrow(0, first, count)?, v.narrow(0, first, count)?);
        outs.push(if n == 0 {
            v.mean_keepdim(2)?.broadcast_as(q.shape())?.contiguous()?
        } else {
            let real_queries = attend(&q.narrow(2, 0, n)?, &k, &v, None)?;
            if n == seq {
                real_queries
            } else {
                let masked_queries = attend(&q.narrow(2, n, seq - n)?, &k.narrow(2, 0, n)?, &v.narrow(2, 0, n)?, None)?;
                Tensor::cat(&[&real_queries, &masked_queries], 2)?
            }
        });
        first += count;
    }
    if outs.len() == 1 {
        return Ok(outs.pop().expect("one group"));
    }
    Tensor::cat(&outs, 0)
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

    /// `x` in [`RealFirst`] order, `real` its real positions per image.
    /// `times` gathers the attention and MLP halves' time under `VISLINGO_PROFILE=1`.
    fn forward(&self, x: &Tensor, real: &[usize], times: &mut LayerTimes) -> Result<Tensor> {
        let started = std::time::Instant::now();
        let mut attn = self.self_attn.forward(&self.input_layernorm.forward(x)?, real)?;
        if let Some((gate, _)) = &self.gates {
            attn = attn.broadcast_mul(gate)?;
        }
        let x = (x + attn)?;
        let attended = crate::models::profile::lap(x.device(), started);
        let mut mlp = self.fc2.forward(&self.fc1.forward(&self.post_attention_layernorm.forward(&x)?)?.gelu_erf()?)?;
        if let Some((_, gate)) = &self.gates {
            mlp = mlp.broadcast_mul(gate)?;
        }
        let out = (x + mlp)?;
        times.attention_s += attended;
        times.mlp_s += crate::models::profile::lap(out.device(), started) - attended;
        Ok(out)
    }
}

/// Seconds the encoder layers spent in their attention half (layer norm, attention, gate, residual) and their MLP
/// half, summed over layers; zero unless `VISLINGO_PROFILE=1`.
#[derive(Debug, Default)]
struct LayerTimes {
    attention_s: f64,
    mlp_s: f64,
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
        let seq = tiles * padded;
        let order = RealFirst::new(&input.aspect_ratio_mask, tiles, padded, padding, patches_with_class, device)?;
        let mut x = order.reorder(&x.reshape((images, seq, h))?)?;
        let embedded = crate::models::profile::lap(device, started);

        // Local transformer, keeping the hidden states that the output takes (`output_hidden_states`: the input
        // of layer `i`, or the final output for `i == layers`).
        let keep = &cfg.intermediate_layers_indices;
        let mut kept: Vec<Option<Tensor>> = vec![None; self.transformer.len() + 1];
        let (mut local_times, mut global_times) = (LayerTimes::default(), LayerTimes::default());
        for (i, layer) in self.transformer.iter().enumerate() {
            if keep.contains(&i) {
                kept[i] = Some(x.clone());
            }
            x = layer.forward(&x, &order.real, &mut local_times)?;
        }
        if keep.contains(&self.transformer.len()) {
            kept[self.transformer.len()] = Some(x.clone());
        }

        let x = self.layernorm_post.forward(&order.restore(&x)?)?.reshape((images, tiles, padded, h))?;
        let x = self.post_tile_positional_embedding.forward(&x, &ids)?;
        let mut x = order.reorder(&x.reshape((images, seq, h))?)?;
        for layer in &self.global_transformer {
            x = layer.forward(&x, &order.real, &mut global_times)?;
        }

        // torch.stack(states, -1)[..., indices] then reshape: features interleave as (hidden, layer).
        let chosen = keep
            .iter()
            .map(|&i| kept.get(i).cloned().flatten())
            .collect::<Option<Vec<Tensor>>>()
            .ok_or_else(|| candle_core::Error::Msg(format!("intermediate layer indices {keep:?} out of range")))?;
        let intermediate = Tensor::stack(&chosen, D::Minus1)?.reshape((images, seq, h * chosen.len()))?;
        let features = Tensor::cat(&[&x, &intermediate], D::Minus1)?;
        let out = order.output(&features)?.reshape((images, tiles, patches_with_class, ()))?;
        crate::models::profile::report(
            &format!("vision forward images={images}"),
            &[
                ("embeddings", embedded),
                ("local attention", local_times.attention_s),
                ("local MLP", local_times.mlp_s),
                ("global attention", global_times.attention_s),
                ("global MLP", global_times.mlp_s),
                ("all", crate::models::profile::lap(device, started)),
            ],
        );
        Ok(out)
    }
}

/// The order the encoder's transformers run each image's `tiles * padded` positions in: the real positions first
/// (the class token and patches of its real tiles), then the masked ones (the padding patches that make a tile's
/// length a multiple of 8, and every position of a padding tile), each part in the natural order. Attention is
/// equivariant under a reordering of positions, so the hidden states are the same, reordered; and with the real
/// positions first, `_prepare_aspect_ratio_attention_mask` amounts to two unmasked attentions
/// ([`real_first_attention`]) instead of a `(seq, seq)` mask per image.
struct RealFirst {
    /// Per image, how many leading positions are real.
    real: Vec<usize>,
    /// Row of `(images * seq, ..)` natural-order states that each reordered row takes.
    order: Tensor,
    /// Row of reordered states that each natural row takes (the inverse of `order`).
    inverse: Tensor,
    /// Row of reordered states that each output row takes: natural order, padding patches dropped
    /// (`images * tiles * patches_with_class` rows).
    output: Tensor,
}

impl RealFirst {
    fn new(
        aspect_ratio_mask: &[Vec<u8>],
        tiles: usize,
        padded: usize,
        padding: usize,
        patches_with_class: usize,
        device: &Device,
    ) -> Result<RealFirst> {
        let seq = tiles * padded;
        let mut real = Vec::with_capacity(aspect_ratio_mask.len());
        let mut order = Vec::with_capacity(aspect_ratio_mask.len() * seq);
        let mut inverse = vec![0u32; aspect_ratio_mask.len() * seq];
        for (image, tile_mask) in aspect_ratio_mask.iter().enumerate() {
            let base = image * seq;
            let masked = |i: usize| position_masked(tile_mask, i / padded, i % padded, padded, padding);
            let first_part = order.len();
            order.extend((0..seq).filter(|&i| !masked(i)).map(|i| (base + i) as u32));
            real.push(order.len() - first_part);
            order.extend((0..seq).filter(|&i| masked(i)).map(|i| (base + i) as u32));
        }
        for (reordered, &natural) in order.iter().enumerate() {
            inverse[natural as usize] = reordered as u32;
        }
        let output: Vec<u32> = (0..aspect_ratio_mask.len() * tiles)
            .flat_map(|tile| (0..patches_with_class).map(move |patch| tile * padded + patch))
            .map(|natural| inverse[natural])
            .collect();
        let index = |v: Vec<u32>| {
            let len = v.len();
            Tensor::from_vec(v, len, device)
        };
        Ok(RealFirst { real, order: index(order)?, inverse: index(inverse)?, output: index(output)? })
    }

    /// Natural `(images, seq, h)` states in this order.
    fn reorder(&self, x: &Tensor) -> Result<Tensor> {
        Self::gather(x, &self.order, x.dim(1)?)
    }

    /// Reordered `(images, seq, h)` states back in the natural order.
    fn restore(&self, x: &Tensor) -> Result<Tensor> {
        Self::gather(x, &self.inverse, x.dim(1)?)
    }

    /// Reordered `(images, seq, h)` states in the natural order without the padding patches:
    /// `(images, tiles * patches_with_class, h)`.
    fn output(&self, x: &Tensor) -> Result<Tensor> {
        let images = x.dim(0)?;
        Self::gather(x, &self.output, self.output.dim(0)? / images.max(1))
    }

    fn gather(x: &Tensor, rows: &Tensor, per_image: usize) -> Result<Tensor> {
        let (images, seq, h) = x.dims3()?;
        x.reshape((images * seq, h))?.index_select(rows, 0)?.reshape((images, per_image, h))
    }
}

/// Whether `_prepare_aspect_ratio_attention_mask` masks a position: its tile is padding, or it is one of the
/// `padding` patches at the end of a tile (with transformers' quirk that `x[:, :, -0:] = 0` masks every patch when
/// there is no padding). The additive mask is `min` exactly where both the query and the key are masked.
fn position_masked(tile_mask: &[u8], tile: usize, patch: usize, padded: usize, padding: usize) -> bool {
    let tile_real = tile_mask.get(tile).copied().unwrap_or(0) != 0;
    !tile_real || padding == 0 || patch >= padded - padding
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::attention::dtype_min;
    use candle_core::{DType, IndexOp};

    fn values(shape: &[usize], seed: u64) -> Tensor {
        crate::models::attention::test_values(shape, seed, 2.0)
    }

    /// `_prepare_aspect_ratio_attention_mask` as transformers builds it, `(images, seq, seq)` f32: the outer
    /// product of the per-position masked flags times `finfo.min`.
    fn dense_mask(aspect_ratio_mask: &[Vec<u8>], tiles: usize, padded: usize, padding: usize) -> Tensor {
        let seq = tiles * padded;
        let mut data = Vec::new();
        for tile_mask in aspect_ratio_mask {
            let masked = |i: usize| position_masked(tile_mask, i / padded, i % padded, padded, padding);
            for i in 0..seq {
                data.extend((0..seq).map(|j| if masked(i) && masked(j) { dtype_min(DType::F32) } else { 0.0 }));
            }
        }
        Tensor::from_vec(data, (aspect_ratio_mask.len(), seq, seq), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Images with padding tiles (two alike, so they share a group), a full one, and the `padding == 0` quirk:
    /// the real-first attention, put back in the natural order, equals softmax(q·kᵀ/√d + mask)·v with the dense mask.
    #[test]
    fn real_first_attention_equals_attention_under_the_aspect_ratio_mask() {
        let (heads, d, tiles) = (2, 4, 3);
        let cases: [(Vec<Vec<u8>>, usize, usize); 2] = [
            (vec![vec![1, 1, 0], vec![1, 1, 0], vec![1, 0, 0], vec![1, 1, 1]], 8, 3),
            (vec![vec![1, 0, 0], vec![1, 1, 1]], 5, 0),
        ];
        for (case, (tile_masks, padded, padding)) in cases.iter().enumerate() {
            let (images, seq) = (tile_masks.len(), tiles * padded);
            let q = values(&[images, heads, seq, d], 1 + case as u64);
            let k = values(&[images, heads, seq, d], 11 + case as u64);
            let v = values(&[images, heads, seq, d], 21 + case as u64);
            let mask = dense_mask(tile_masks, tiles, *padded, *padding).unsqueeze(1).unwrap();
            let scores =
                (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap().broadcast_add(&mask).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&scores).unwrap().matmul(&v).unwrap();

            let order = RealFirst::new(tile_masks, tiles, *padded, *padding, padded - padding, &Device::Cpu).unwrap();
            // (images, heads, seq, d) <-> (images, seq, heads * d), the layout the order applies to.
            let flat = |t: &Tensor| t.transpose(1, 2).unwrap().reshape((images, seq, heads * d)).unwrap();
            let heads_of =
                |t: Tensor| t.reshape((images, seq, heads, d)).unwrap().transpose(1, 2).unwrap().contiguous();
            let reorder = |t: &Tensor| heads_of(order.reorder(&flat(t)).unwrap()).unwrap();
            let scaled = (reorder(&q) * (d as f64).powf(-0.5)).unwrap();
            let got = real_first_attention(&scaled, &reorder(&k), &reorder(&v), &order.real).unwrap();
            let got = heads_of(order.restore(&flat(&got)).unwrap()).unwrap();
            assert!(max_diff(&got, &want) < 1e-5, "case {case}: differs by {}", max_diff(&got, &want));
            if *padding > 0 {
                let real: Vec<usize> = tile_masks.iter().map(|m| m.iter().filter(|&&t| t != 0).count() * 5).collect();
                assert_eq!(order.real, real, "a real tile has {} real positions", padded - padding);
            }

            // The output rows are the natural ones without padding patches.
            let x = values(&[images, seq, 3], 31);
            let out = order.output(&order.reorder(&x).unwrap()).unwrap();
            let natural = x.reshape((images, tiles, *padded, 3)).unwrap().narrow(2, 0, padded - padding).unwrap();
            let natural = natural.reshape((images, (), 3)).unwrap();
            assert_eq!(max_diff(&out, &natural), 0.0);
            assert_eq!(max_diff(&order.restore(&order.reorder(&x).unwrap()).unwrap(), &x), 0.0);
            // Reordered, each image starts with its real positions.
            let first = order.reorder(&x).unwrap().i((0, 0)).unwrap();
            assert_eq!(max_diff(&first, &x.i((0, 0)).unwrap()), 0.0);
        }
    }
}

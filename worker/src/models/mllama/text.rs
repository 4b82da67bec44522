//! The Llama 3.1 text decoder of Mllama (transformers 4.46.3 `MllamaTextModel` + `MllamaForCausalLM`):
//! RMS-normed self-attention layers with grouped-query attention and llama3-scaled RoPE, and, at
//! `cross_attention_layers`, tanh-gated cross-attention to the image features. A `TextSession` holds the KV caches
//! of a batch of rows; cross-attention keys/values are computed once per image and kept at the key/value heads' size.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, linear_no_bias, Embedding, Linear, RmsNorm, VarBuilder};

use crate::models::attention::{dtype_min, grouped_attention, softmax_last_dim};
use crate::models::linear::Part;
use crate::models::profile;
use crate::models::quant::{QLinear, Quant};

use super::config::{RopeScaling, TextConfig};
use crate::models::generate::{DecodeSession, JoinSession};

fn rms_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    candle_nn::rms_norm(size, eps, vb)
}

/// Llama's gated MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    /// `gate_proj` and `up_proj` as one matmul: `gate | up` along the output.
    gate_up_proj: QLinear,
    down_proj: QLinear,
    intermediate: usize,
}

impl Mlp {
    fn new(cfg: &TextConfig, vb: VarBuilder, quant: Quant) -> Result<Self> {
        Self::with_dims(cfg.hidden_size, cfg.intermediate_size, false, vb, quant)
    }

    pub(crate) fn with_dims(h: usize, i: usize, bias: bool, vb: VarBuilder, quant: Quant) -> Result<Self> {
        Self::with_output_scale(h, i, bias, vb, quant, None)
    }

    /// The MLP with its output multiplied by `scale` (folded into `down_proj`).
    fn with_output_scale(
        h: usize,
        i: usize,
        bias: bool,
        vb: VarBuilder,
        quant: Quant,
        scale: Option<f64>,
    ) -> Result<Self> {
        let parts = [Part::new(i, vb.pp("gate_proj")), Part::new(i, vb.pp("up_proj"))];
        let down = Part { scale, ..Part::new(h, vb.pp("down_proj")) };
        Ok(Mlp {
            gate_up_proj: QLinear::load_fused(h, &parts, bias, quant)?,
            down_proj: QLinear::load_fused(i, &[down], bias, quant)?,
            intermediate: i,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?;
        self.down_proj.forward(&crate::models::gated::silu_mul(&gate_up, self.intermediate)?)
    }
}

/// Llama self-attention with rotary embeddings and grouped-query heads; the KV cache is passed in.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    /// `q_proj`, `k_proj`, `v_proj` as one matmul: `q | k | v` along the output, with the queries scaled by
    /// `1/sqrt(head_dim)` (which commutes with the rotary embedding) for the attention product.
    qkv_proj: QLinear,
    o_proj: QLinear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(cfg: &TextConfig, vb: VarBuilder, quant: Quant) -> Result<Self> {
        let head_dim = cfg.hidden_size / cfg.num_attention_heads;
        let heads = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Self::with_dims(cfg.hidden_size, heads, head_dim, false, vb, quant)
    }

    /// `heads` is (query heads, key/value heads).
    pub(crate) fn with_dims(
        h: usize,
        (heads, kv_heads): (usize, usize),
        head_dim: usize,
        bias: bool,
        vb: VarBuilder,
        quant: Quant,
    ) -> Result<Self> {
        let (q, kv) = (heads * head_dim, kv_heads * head_dim);
        let parts = [
            Part::new(q, vb.pp("q_proj")).scaled((head_dim as f64).powf(-0.5)),
            Part::new(kv, vb.pp("k_proj")),
            Part::new(kv, vb.pp("v_proj")),
        ];
        Ok(SelfAttention {
            qkv_proj: QLinear::load_fused(h, &parts, bias, quant)?,
            o_proj: QLinear::load(q, h, bias, vb.pp("o_proj"), quant)?,
            heads,
            kv_heads,
            head_dim,
        })
    }

    /// `mask`: the additive `(rows, 1, len, keys)` mask, `None` where it would be all zeros (a decode step of
    /// rows without left padding).
    ///
    /// For one position of one row (a batch-1 decode step) every head split below is a view, so with dense weights
    /// the attention runs 8 kernels: the fused projection, one rotary pass over q and k, two cache writes, the two
    /// attention products and their softmax, and `o_proj`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cache: &mut Option<KvCache>,
    ) -> Result<Tensor> {
        let (rows, len, _) = x.dims3()?;
        let (heads, kv_heads, head_dim) = (self.heads, self.kv_heads, self.head_dim);
        // (rows, q heads | k heads | v heads, len, head_dim)
        let qkv = self.qkv_proj.forward(x)?.reshape((rows, len, heads + 2 * kv_heads, head_dim))?.transpose(1, 2)?;
        // One rotary pass over q and k: the angles are the same for every head.
        let qk = qkv.narrow(1, 0, heads + kv_heads)?.contiguous()?;
        let qk = candle_nn::rotary_emb::rope(&qk, &rope.cos, &rope.sin)?;
        let q = qk.narrow(1, 0, heads)?;
        let k = qk.narrow(1, heads, kv_heads)?.contiguous()?;
        let v = qkv.narrow(1, heads + kv_heads, kv_heads)?.contiguous()?;
        let (k, v) = KvCache::append(cache, &k, &v)?;
        let out = grouped_attention(&q, &k, &v, mask, kv_heads)?;
        self.o_proj.forward(&out.transpose(1, 2)?.reshape((rows, len, heads * head_dim))?)
    }
}

/// Keys and values of a layer's past positions, `(rows, kv_heads, capacity, head_dim)` of which the first `len`
/// positions are filled. New positions are written in place; the buffer doubles when full, so a decode step
/// copies one position per row rather than the whole cache as concatenation would.
#[derive(Debug, Clone)]
pub(crate) struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvCache {
    /// Positions allocated beyond the first call's, before the first doubling.
    const HEADROOM: usize = 128;

    /// Appends `k` and `v` `(rows, kv_heads, new, head_dim)` and returns views of all positions so far.
    pub(crate) fn append(cache: &mut Option<KvCache>, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(2)?;
        let needed = cache.as_ref().map_or(0, |c| c.len) + new;
        let capacity = cache.as_ref().map_or(0, |c| c.k.dim(2).unwrap_or(0));
        if needed > capacity {
            let capacity = (needed + Self::HEADROOM).max(2 * capacity);
            let (rows, heads, _, head_dim) = k.dims4()?;
            let grown = KvCache {
                k: Tensor::zeros((rows, heads, capacity, head_dim), k.dtype(), k.device())?,
                v: Tensor::zeros((rows, heads, capacity, head_dim), v.dtype(), v.device())?,
                len: 0,
            };
            if let Some(old) = cache.take() {
                grown.k.slice_set(&old.k.narrow(2, 0, old.len)?.contiguous()?, 2, 0)?;
                grown.v.slice_set(&old.v.narrow(2, 0, old.len)?.contiguous()?, 2, 0)?;
                *cache = Some(KvCache { len: old.len, ..grown });
            } else {
                *cache = Some(grown);
            }
        }
        let cache = cache.as_mut().expect("allocated above");
        cache.k.slice_set(&k.contiguous()?, 2, cache.len)?;
        cache.v.slice_set(&v.contiguous()?, 2, cache.len)?;
        cache.len += new;
        Ok((cache.k.narrow(2, 0, cache.len)?, cache.v.narrow(2, 0, cache.len)?))
    }

    /// The caches of two groups of rows, `a`'s rows first, lined up on one position axis: `a_shift` and
    /// `b_shift` empty (masked) positions go before each group's own, then the first `trim` positions of the
    /// result, padding in every row, are dropped.
    pub(crate) fn join(a: &KvCache, a_shift: usize, b: &KvCache, b_shift: usize, trim: usize) -> Result<KvCache> {
        let len = a.len + a_shift - trim;
        if b.len + b_shift - trim != len {
            candle_core::bail!("joined caches differ in length: {} + {a_shift} vs {} + {b_shift}", a.len, b.len);
        }
        let capacity = len + Self::HEADROOM;
        let place = |t: &Tensor, filled: usize, shift: usize| -> Result<Tensor> {
            let (start, offset) = (trim.saturating_sub(shift), shift.saturating_sub(trim));
            let (rows, heads, _, head_dim) = t.dims4()?;
            let out = Tensor::zeros((rows, heads, capacity, head_dim), t.dtype(), t.device())?;
            out.slice_set(&t.narrow(2, start, filled - start)?.contiguous()?, 2, offset)?;
            Ok(out)
        };
        let k = Tensor::cat(&[place(&a.k, a.len, a_shift)?, place(&b.k, b.len, b_shift)?], 0)?;
        let v = Tensor::cat(&[place(&a.v, a.len, a_shift)?, place(&b.v, b.len, b_shift)?], 0)?;
        Ok(KvCache { k, v, len })
    }

    /// Keeps these rows, in this order.
    pub(crate) fn select_rows(&mut self, index: &Tensor) -> Result<()> {
        self.k = self.k.index_select(index, 0)?;
        self.v = self.v.index_select(index, 0)?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct CrossAttention {
    q_proj: QLinear,
    /// `k_proj` and `v_proj` as one matmul: `k | v` along the output.
    kv_proj: QLinear,
    /// Multiplied by the layer's `tanh(cross_attn_attn_gate)`.
    o_proj: QLinear,
    /// `q_norm` with its weight multiplied by `1/sqrt(head_dim)`: the queries come out scaled for the product.
    q_norm_scaled: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl CrossAttention {
    /// `gate`: `tanh(cross_attn_attn_gate)`, which multiplies the output.
    fn new(cfg: &TextConfig, vb: VarBuilder, quant: Quant, gate: f64) -> Result<Self> {
        let head_dim = cfg.hidden_size / cfg.num_attention_heads;
        let (h, q, kv) = (cfg.hidden_size, cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim);
        let q_norm_weight = vb.pp("q_norm").get(head_dim, "weight")?;
        Ok(CrossAttention {
            q_proj: QLinear::load(h, q, false, vb.pp("q_proj"), quant)?,
            kv_proj: QLinear::load_fused(
                h,
                &[Part::new(kv, vb.pp("k_proj")), Part::new(kv, vb.pp("v_proj"))],
                false,
                quant,
            )?,
            o_proj: QLinear::load_fused(q, &[Part::new(h, vb.pp("o_proj")).scaled(gate)], false, quant)?,
            q_norm_scaled: RmsNorm::new((q_norm_weight * (head_dim as f64).powf(-0.5))?, cfg.rms_norm_eps),
            k_norm: rms_norm(head_dim, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim,
        })
    }

    /// Keys (after `k_norm`) and values of image features `(rows, vision_tokens, hidden)`, at kv-head size.
    fn keys_values(&self, states: &Tensor) -> Result<(Tensor, Tensor)> {
        let (rows, tokens, _) = states.dims3()?;
        let kv_heads = self.kv_heads;
        let kv = self.kv_proj.forward(states)?.reshape((rows, tokens, 2 * kv_heads, self.head_dim))?.transpose(1, 2)?;
        let k = self.k_norm.forward(&kv.narrow(1, 0, kv_heads)?.contiguous()?)?;
        let v = kv.narrow(1, kv_heads, kv_heads)?.contiguous()?;
        Ok((k, v))
    }

    /// `kv` holds each image's keys and values once; `routing` says which image each row attends to, and `mask`
    /// is already laid out as `routing` needs it.
    fn forward(&self, x: &Tensor, kv: &(Tensor, Tensor), mask: &Tensor, routing: &CrossRouting) -> Result<Tensor> {
        let (rows, len, hidden) = x.dims3()?;
        let q =
            self.q_proj.forward(x)?.reshape((rows, len, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()?;
        let q = self.q_norm_scaled.forward(&q)?;
        let out = match &routing.slots {
            None => grouped_attention(&q, &kv.0, &kv.1, Some(mask), self.kv_heads)?,
            Some(slots) => {
                // Rows gathered into `per_image` slots per image, folded into the query length of their image's
                // keys: each image's keys and values are read once for all its rows.
                let (images, per_image) = (kv.0.dim(0)?, slots.per_image);
                let groups = self.heads / self.kv_heads;
                let q = q
                    .index_select(&slots.gather, 0)?
                    .reshape((images, per_image, self.kv_heads, groups * len * self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((images, self.kv_heads, per_image * groups * len, self.head_dim))?;
                let keys = kv.0.dim(2)?;
                // mask: (images * per_image, 1, len, keys), the same for every head of a slot
                let scores = q
                    .matmul(&kv.0.t()?)?
                    .reshape((images, self.kv_heads, per_image, groups, len, keys))?
                    .broadcast_add(&mask.reshape((images, 1, per_image, 1, len, keys))?)?
                    .reshape((images, self.kv_heads, per_image * groups * len, keys))?;
                softmax_last_dim(&scores)?
                    .matmul(&kv.1)?
                    .reshape((images, self.kv_heads, per_image, groups * len * self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((images * per_image, self.heads, len, self.head_dim))?
                    .index_select(&slots.scatter, 0)?
            }
        };
        self.o_proj.forward(&out.transpose(1, 2)?.reshape((rows, len, hidden))?)
    }
}

#[derive(Debug, Clone)]
enum Layer {
    SelfAttention {
        attn: SelfAttention,
        mlp: Mlp,
        input_layernorm: RmsNorm,
        post_attention_layernorm: RmsNorm,
    },
    /// The tanh gates of the attention and the MLP are folded into their output projections.
    CrossAttention {
        attn: CrossAttention,
        mlp: Mlp,
        input_layernorm: RmsNorm,
        post_attention_layernorm: RmsNorm,
    },
}

/// `tanh` of a gate parameter `(1,)`, computed in the model dtype as transformers does.
fn tanh_gate(vb: &VarBuilder, name: &str) -> Result<f64> {
    let gate = vb.get(1, name)?.tanh()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(f64::from(gate[0]))
}

/// Rotary cosines and sines for the rows' positions, `(rows, len, head_dim / 2)`.
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// `cos(p * f)` and `sin(p * f)` in f32 for every row's positions `p` and inverse frequency `f`
    /// (`LlamaRotaryEmbedding.forward`), then cast to `dtype`.
    pub(crate) fn new(inv_freq: &[f32], positions: &[Vec<u32>], device: &Device, dtype: DType) -> Result<Rope> {
        let rows = positions.len();
        let len = positions.first().map_or(0, Vec::len);
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(rows * len * half);
        let mut sin = Vec::with_capacity(rows * len * half);
        for row in positions {
            for &p in row {
                for &f in inv_freq {
                    let angle = f * p as f32;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let make = |v: Vec<f32>| Tensor::from_vec(v, (rows, len, half), device)?.to_dtype(dtype);
        Ok(Rope { cos: make(cos)?, sin: make(sin)? })
    }
}

#[derive(Debug, Clone)]
pub struct TextModel {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    inv_freq: Vec<f32>,
    config: TextConfig,
    device: Device,
    dtype: DType,
}

impl TextModel {
    /// `vb` is `language_model`: `model.embed_tokens` (vocab + 8 rows), `model.layers.N`, `model.norm`, `lm_head`.
    /// `quant` quantizes the decoder layers' linear weights as they load (the embeddings and LM head stay dense).
    pub fn new(cfg: &TextConfig, vb: VarBuilder, quant: Quant) -> Result<Self> {
        let model = vb.pp("model");
        let h = cfg.hidden_size;
        let embed_tokens = embedding(cfg.vocab_size + 8, h, model.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let vb = model.pp("layers").pp(i);
                let input_layernorm = rms_norm(h, cfg.rms_norm_eps, vb.pp("input_layernorm"))?;
                let post_attention_layernorm = rms_norm(h, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?;
                Ok(if cfg.cross_attention_layers.contains(&i) {
                    let (attn_gate, mlp_gate) =
                        (tanh_gate(&vb, "cross_attn_attn_gate")?, tanh_gate(&vb, "cross_attn_mlp_gate")?);
                    let mlp =
                        Mlp::with_output_scale(h, cfg.intermediate_size, false, vb.pp("mlp"), quant, Some(mlp_gate))?;
                    Layer::CrossAttention {
                        attn: CrossAttention::new(cfg, vb.pp("cross_attn"), quant, attn_gate)?,
                        mlp,
                        input_layernorm,
                        post_attention_layernorm,
                    }
                } else {
                    Layer::SelfAttention {
                        attn: SelfAttention::new(cfg, vb.pp("self_attn"), quant)?,
                        mlp: Mlp::new(cfg, vb.pp("mlp"), quant)?,
                        input_layernorm,
                        post_attention_layernorm,
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().narrow(0, 0, cfg.vocab_size)?, None)
        } else {
            linear_no_bias(h, cfg.vocab_size, vb.pp("lm_head"))?
        };
        Ok(TextModel {
            embed_tokens,
            layers,
            norm: rms_norm(h, cfg.rms_norm_eps, model.pp("norm"))?,
            lm_head,
            inv_freq: rope_inverse_frequencies(
                cfg.hidden_size / cfg.num_attention_heads,
                cfg.rope_theta,
                cfg.rope_scaling.as_ref(),
            ),
            config: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// A decoding session over `rows` sequences. `images` holds the projected image features of each row,
    /// `(rows, vision_tokens, hidden)` (all rows, or `None` for text-only batches).
    pub fn start(&self, rows: usize, images: Option<ImageContext>) -> Result<TextSession<'_>> {
        self.start_shared(rows, images, (0..rows).collect())
    }

    /// A decoding session over `rows` sequences whose images may repeat: `images.states` holds each distinct
    /// image once, `(images, vision_tokens, hidden)`, and `row_images[row]` is the image of each row. Each image's
    /// cross-attention keys and values are computed and kept once, whatever the number of its rows.
    pub fn start_shared(
        &self,
        rows: usize,
        images: Option<ImageContext>,
        row_images: Vec<usize>,
    ) -> Result<TextSession<'_>> {
        let started = std::time::Instant::now();
        let image_count = match &images {
            Some(context) => context.states.dim(0)?,
            None => 0,
        };
        if images.is_some() && (row_images.len() != rows || row_images.iter().any(|&i| i >= image_count)) {
            candle_core::bail!("{rows} rows map to images {row_images:?} of {image_count}");
        }
        let cross = match &images {
            Some(context) => self
                .layers
                .iter()
                .map(|layer| match layer {
                    Layer::CrossAttention { attn, .. } => attn.keys_values(&context.states).map(Some),
                    Layer::SelfAttention { .. } => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?,
            None => vec![None; self.layers.len()],
        };
        profile::report(
            &format!("cross-attention keys/values rows={rows}"),
            &[("", profile::lap(&self.device, started))],
        );
        Ok(TextSession {
            model: self,
            self_kv: vec![None; self.layers.len()],
            cross_kv: cross,
            patches_per_tile: images.as_ref().map_or(0, |c| c.patches_per_tile),
            token_masks: images.map(|c| c.token_masks),
            decode_cross_mask: None,
            rows: (0..rows).map(|_| RowState::default()).collect(),
            row_images: if image_count > 0 { row_images } else { Vec::new() },
            images: image_count,
        })
    }

    /// Runs the decoder over `tokens` (one equal-length slice per row, already left-padded) and returns the
    /// final-norm hidden states `(rows, len, hidden)`.
    fn forward(&self, session: &mut TextSession, tokens: &[Vec<u32>], pads: &[usize]) -> Result<Tensor> {
        let started = std::time::Instant::now();
        let rows = tokens.len();
        let len = tokens.first().map_or(0, Vec::len);
        let past = session.rows.first().map_or(0, |r| r.len);
        let ids = Tensor::from_iter(tokens.iter().flatten().copied(), &self.device)?.reshape((rows, len))?;
        let mut x = self.embed_tokens.forward(&ids)?;

        let positions = padded_positions(pads, past, len);
        let rope = Rope::new(&self.inv_freq, &positions, &self.device, self.dtype)?;
        let self_mask = if self_mask_needed(pads, len) {
            Some(causal_padding_mask(pads, past, len, &self.device, self.dtype)?)
        } else {
            None
        };
        // A generated token sees what the last prompt token sees, so decode steps share one mask until the
        // rows change.
        let decoding = past > 0;
        let cross_masks = match (&session.token_masks, &session.decode_cross_mask) {
            (Some(_), Some(cached)) if decoding && len == 1 => Some(cached.clone()),
            (Some(masks), _) => {
                let (mask, visible) = cross_attention_mask(
                    masks,
                    &session.rows,
                    past,
                    len,
                    session.patches_per_tile,
                    &self.device,
                    self.dtype,
                )?;
                let routing = CrossRouting::new(&session.row_images, session.images, &self.device)?;
                let built = (routing.to_slots(mask)?, visible, routing);
                if decoding && len == 1 {
                    session.decode_cross_mask = Some(built.clone());
                }
                Some(built)
            }
            (None, _) => None,
        };

        let prepared = profile::lap(&self.device, started);
        let (mut self_s, mut cross_s) = (0.0, 0.0);
        for (index, layer) in self.layers.iter().enumerate() {
            let layer_started = std::time::Instant::now();
            match layer {
                Layer::SelfAttention { attn, mlp, input_layernorm, post_attention_layernorm } => {
                    let h = attn.forward(
                        &input_layernorm.forward(&x)?,
                        &rope,
                        self_mask.as_ref(),
                        &mut session.self_kv[index],
                    )?;
                    x = (x + h)?;
                    x = (&x + mlp.forward(&post_attention_layernorm.forward(&x)?)?)?;
                }
                Layer::CrossAttention { attn, mlp, input_layernorm, post_attention_layernorm } => {
                    // Skipped when the batch has no image (transformers skips it for text-only inputs).
                    let (Some(kv), Some((mask, row_visible, routing))) = (&session.cross_kv[index], &cross_masks)
                    else {
                        continue;
                    };
                    // Both outputs come multiplied by their tanh gates.
                    let h = attn.forward(&input_layernorm.forward(&x)?, kv, mask, routing)?;
                    x = (&x + h)?;
                    let h = mlp.forward(&post_attention_layernorm.forward(&x)?)?.broadcast_mul(row_visible)?;
                    x = (&x + h)?;
                }
            }
            if profile::enabled() {
                let spent = profile::lap(&self.device, layer_started);
                match layer {
                    Layer::SelfAttention { .. } => self_s += spent,
                    Layer::CrossAttention { .. } => cross_s += spent,
                }
            }
        }
        for row in session.rows.iter_mut() {
            row.len += len;
        }
        let out = self.norm.forward(&x);
        profile::report(
            &format!("text forward rows={rows} len={len} past={past}"),
            &[("inputs+masks", prepared), ("self layers", self_s), ("cross layers", cross_s)],
        );
        out
    }

    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }
}

/// Image features of every row and, per row and prompt token, which image tiles it may attend to
/// (transformers' `cross_attention_mask`, `(tokens, images * tiles)`, 1 = visible). Generated tokens reuse
/// the last prompt token's row, as `_update_model_kwargs_for_generation` does.
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// `(rows, images * tiles * patches, hidden)`.
    pub states: Tensor,
    /// `token_masks[row][token][tile]`.
    pub token_masks: Vec<Vec<Vec<u8>>>,
    /// Vision tokens per tile (`num_patches`).
    pub patches_per_tile: usize,
}

/// Per-row bookkeeping of a session.
#[derive(Debug, Clone, Default)]
struct RowState {
    /// Tokens fed so far, padding included.
    len: usize,
    /// Left padding of the prompt.
    pad: usize,
    /// Index of this row in the image context's `token_masks`.
    source: usize,
}

/// Which image each row's cross-attention reads. With one image per row, in order, rows and images line up
/// (`slots: None`); otherwise each image gets `per_image` slots, rows are gathered into their image's slots for
/// the attention (spare slots repeat row 0 and are dropped) and scattered back.
#[derive(Debug, Clone)]
struct CrossRouting {
    slots: Option<Slots>,
}

#[derive(Debug, Clone)]
struct Slots {
    per_image: usize,
    /// Row of each slot, `(images * per_image)`.
    gather: Tensor,
    /// Slot of each row, `(rows)`.
    scatter: Tensor,
}

impl CrossRouting {
    fn new(row_images: &[usize], images: usize, device: &Device) -> Result<CrossRouting> {
        if row_images.len() == images && row_images.iter().enumerate().all(|(row, &image)| row == image) {
            return Ok(CrossRouting { slots: None });
        }
        let mut counts = vec![0usize; images];
        for &image in row_images {
            counts[image] += 1;
        }
        let per_image = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut gather = vec![0u32; images * per_image];
        let mut filled = vec![0usize; images];
        let mut scatter = Vec::with_capacity(row_images.len());
        for (row, &image) in row_images.iter().enumerate() {
            let slot = image * per_image + filled[image];
            filled[image] += 1;
            gather[slot] = row as u32;
            scatter.push(slot as u32);
        }
        Ok(CrossRouting {
            slots: Some(Slots {
                per_image,
                gather: Tensor::new(gather.as_slice(), device)?,
                scatter: Tensor::new(scatter.as_slice(), device)?,
            }),
        })
    }

    /// A per-row tensor `(rows, ...)` laid out by slot `(images * per_image, ...)`.
    fn to_slots(&self, per_row: Tensor) -> Result<Tensor> {
        match &self.slots {
            None => Ok(per_row),
            Some(slots) => per_row.index_select(&slots.gather, 0),
        }
    }
}

/// A text decoder mid-generation over a batch of rows.
pub struct TextSession<'m> {
    model: &'m TextModel,
    self_kv: Vec<Option<KvCache>>,
    cross_kv: Vec<Option<(Tensor, Tensor)>>,
    token_masks: Option<Vec<Vec<Vec<u8>>>>,
    /// The cross-attention mask (laid out by the routing), row factor and routing of a one-token decode step,
    /// kept while the rows stay the same.
    decode_cross_mask: Option<(Tensor, Tensor, CrossRouting)>,
    patches_per_tile: usize,
    rows: Vec<RowState>,
    /// The image of each row (an index into `cross_kv`'s first dimension); empty without images.
    row_images: Vec<usize>,
    /// Distinct images held.
    images: usize,
}

impl TextSession<'_> {
    /// Prefill: left-pads the prompts to one length and runs them; returns the hidden states of all positions.
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Tensor> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pad_id = self.model.config.pad_token_id.unwrap_or(0);
        let mut padded = Vec::with_capacity(prompts.len());
        for ((row, prompt), source) in self.rows.iter_mut().zip(prompts).zip(0..) {
            row.pad = longest - prompt.len();
            row.source = source;
            padded.push(std::iter::repeat_n(pad_id, row.pad).chain(prompt.iter().copied()).collect::<Vec<_>>());
        }
        let pads: Vec<usize> = self.rows.iter().map(|r| r.pad).collect();
        let model = self.model;
        model.forward(self, &padded, &pads)
    }

    /// Logits of every prompt position, `(rows, len, vocab)` (parity checks).
    pub fn prefill_logits(&mut self, prompts: &[Vec<u32>]) -> Result<Tensor> {
        let hidden = self.prefill(prompts)?;
        self.model.logits(&hidden)
    }
}

impl DecodeSession for TextSession<'_> {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn forward(&mut self, new_tokens: &[Vec<u32>]) -> Result<Tensor> {
        let first_call = self.rows.first().is_some_and(|r| r.len == 0);
        let hidden = if first_call {
            self.prefill(new_tokens)?
        } else {
            let pads: Vec<usize> = self.rows.iter().map(|r| r.pad).collect();
            let model = self.model;
            model.forward(self, new_tokens, &pads)?
        };
        // Contiguous: CUDA matmul takes no row stride other than the row length.
        let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?.squeeze(1)?.contiguous()?;
        self.model.logits(&last)
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let index = Tensor::from_iter(rows.iter().map(|&r| r as u32), &self.model.device)?;
        for kv in self.self_kv.iter_mut().flatten() {
            kv.select_rows(&index)?;
        }
        if self.images > 0 {
            // Images no kept row reads are dropped.
            let mut kept_images: Vec<usize> = rows.iter().map(|&r| self.row_images[r]).collect();
            kept_images.sort_unstable();
            kept_images.dedup();
            if kept_images.len() < self.images {
                let index = Tensor::from_iter(kept_images.iter().map(|&i| i as u32), &self.model.device)?;
                for kv in self.cross_kv.iter_mut().flatten() {
                    *kv = (kv.0.index_select(&index, 0)?, kv.1.index_select(&index, 0)?);
                }
            }
            let renumber = |image: usize| kept_images.binary_search(&image).expect("a kept image");
            self.row_images = rows.iter().map(|&r| renumber(self.row_images[r])).collect();
            self.images = kept_images.len();
        }
        self.rows = rows.iter().map(|&r| self.rows[r].clone()).collect();
        self.decode_cross_mask = None;
        Ok(())
    }
}

impl JoinSession for TextSession<'_> {
    /// Lines the two sessions' rows up on one position axis (the shorter side gains left padding, leading
    /// positions that every row pads are dropped) and stacks their caches, image keys/values and token masks.
    fn join(&mut self, mut other: Self) -> Result<()> {
        if !std::ptr::eq(self.model, other.model) {
            candle_core::bail!("join: the sessions belong to different models");
        }
        let (a_len, b_len) = (self.rows.first().map_or(0, |r| r.len), other.rows.first().map_or(0, |r| r.len));
        if a_len == 0 || b_len == 0 {
            candle_core::bail!("join: both sessions must have run their prefill");
        }
        let width = a_len.max(b_len);
        let (a_shift, b_shift) = (width - a_len, width - b_len);
        let trim = self
            .rows
            .iter()
            .map(|r| r.pad + a_shift)
            .chain(other.rows.iter().map(|r| r.pad + b_shift))
            .min()
            .unwrap_or(0);
        for (mine, theirs) in self.self_kv.iter_mut().zip(other.self_kv.iter()) {
            *mine = match (mine.take(), theirs) {
                (Some(a), Some(b)) => Some(KvCache::join(&a, a_shift, b, b_shift, trim)?),
                (None, None) => None,
                _ => candle_core::bail!("join: the sessions differ in which layers hold a cache"),
            };
        }
        for (mine, theirs) in self.cross_kv.iter_mut().zip(other.cross_kv.iter()) {
            *mine = match (mine.take(), theirs) {
                (Some((ka, va)), Some((kb, vb))) => Some((Tensor::cat(&[&ka, kb], 0)?, Tensor::cat(&[&va, vb], 0)?)),
                (None, None) => None,
                _ => candle_core::bail!("join: one session has images and the other none"),
            };
        }
        let image_offset = self.images;
        self.row_images.extend(other.row_images.iter().map(|&i| i + image_offset));
        self.images += other.images;
        let offset = self.token_masks.as_ref().map_or(0, Vec::len);
        match (self.token_masks.as_mut(), other.token_masks.take()) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (None, None) => {}
            _ => candle_core::bail!("join: one session has images and the other none"),
        }
        for row in self.rows.iter_mut() {
            row.pad = row.pad + a_shift - trim;
            row.len = width - trim;
        }
        self.rows.extend(other.rows.into_iter().map(|row| RowState {
            len: width - trim,
            pad: row.pad + b_shift - trim,
            source: row.source + offset,
        }));
        self.decode_cross_mask = None;
        Ok(())
    }
}

/// Positions of tokens `past..past + len` of left-padded rows: `attention_mask.cumsum(-1) - 1`, 1 where padded
/// (`prepare_inputs_for_generation`).
pub(crate) fn padded_positions(pads: &[usize], past: usize, len: usize) -> Vec<Vec<u32>> {
    pads.iter().map(|&pad| (past..past + len).map(|j| if j < pad { 1 } else { (j - pad) as u32 }).collect()).collect()
}

/// Whether [`causal_padding_mask`] masks anything: not for one new position per row and no left padding.
pub(crate) fn self_mask_needed(pads: &[usize], len: usize) -> bool {
    len > 1 || pads.iter().any(|&pad| pad > 0)
}

/// Additive mask `(rows, 1, len, past + len)`: causal, and left padding masked with the dtype's minimum
/// (`_prepare_4d_causal_attention_mask_with_cache_position`).
pub(crate) fn causal_padding_mask(
    pads: &[usize],
    past: usize,
    len: usize,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let total = past + len;
    let min = dtype_min(dtype);
    let mut data = Vec::with_capacity(pads.len() * len * total);
    for &pad in pads {
        for i in 0..len {
            data.extend((0..total).map(|j| if j > past + i || j < pad { min } else { 0.0 }));
        }
    }
    Tensor::from_vec(data, (pads.len(), 1, len, total), device)?.to_dtype(dtype)
}

/// `_prepare_cross_attention_mask` for the rows' tokens `past..past + len`: each tile's visibility repeated
/// over its `patches` vision tokens, `min` where hidden. A token that sees no tile (left padding, text before
/// the image) gets an all-zero row and is zeroed after the cross-attention MLP (`full_text_row_masked_out_mask`).
/// Generated tokens see what the last prompt token sees. Returns the additive mask `(rows, 1, len, vision)` and
/// the per-token factor `(rows, len, 1)`.
fn cross_attention_mask(
    token_masks: &[Vec<Vec<u8>>],
    rows: &[RowState],
    past: usize,
    len: usize,
    patches: usize,
    device: &Device,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let tiles = token_masks.first().and_then(|m| m.first()).map_or(0, Vec::len);
    let min = dtype_min(dtype);
    let mut mask = Vec::with_capacity(rows.len() * len * tiles * patches);
    let mut visible = Vec::with_capacity(rows.len() * len);
    for row in rows {
        let masks = &token_masks[row.source];
        for j in past..past + len {
            let tile_mask = if j < row.pad { None } else { masks.get((j - row.pad).min(masks.len() - 1)) };
            let any = tile_mask.is_some_and(|m| m.iter().any(|&v| v != 0));
            visible.push(if any { 1f32 } else { 0.0 });
            for tile in 0..tiles {
                let seen = tile_mask.is_some_and(|m| m[tile] != 0);
                let value = if !any || seen { 0.0 } else { min };
                mask.extend(std::iter::repeat_n(value, patches));
            }
        }
    }
    let mask = Tensor::from_vec(mask, (rows.len(), 1, len, tiles * patches), device)?.to_dtype(dtype)?;
    let visible = Tensor::from_vec(visible, (rows.len(), len, 1), device)?.to_dtype(dtype)?;
    Ok((mask, visible))
}

/// Inverse RoPE frequencies in f32 as transformers computes them, with linear or llama3 scaling when configured
/// (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`).
pub(crate) fn rope_inverse_frequencies(head_dim: usize, rope_theta: f64, scaling: Option<&RopeScaling>) -> Vec<f32> {
    let base = rope_theta as f32;
    let inv: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32)).collect();
    if let Some(linear) = scaling.filter(|s| s.rope_type == "linear") {
        let factor = linear.factor as f32;
        return inv.into_iter().map(|f| f / factor).collect();
    }
    let Some(scaling) = scaling.filter(|s| s.rope_type == "llama3") else {
        return inv;
    };
    let factor = scaling.factor as f32;
    let (low, high) = (scaling.low_freq_factor as f32, scaling.high_freq_factor as f32);
    let old_context = scaling.original_max_position_embeddings as f32;
    let low_freq_wavelen = old_context / low;
    let high_freq_wavelen = old_context / high;
    inv.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
            let medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            if medium {
                let smooth = (old_context / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kv_cache_grows_in_place_and_equals_concatenation() {
        let device = Device::Cpu;
        let step = |n: usize, seed: f32| {
            let data: Vec<f32> = (0..2 * 3 * n * 4).map(|i| seed + i as f32).collect();
            Tensor::from_vec(data, (2, 3, n, 4), &device).unwrap()
        };
        let mut cache = None;
        let mut expected_k: Option<Tensor> = None;
        // A long prefill, then single tokens past the first capacity (prefill + HEADROOM) and a doubling.
        let lengths: Vec<usize> = std::iter::once(5).chain(std::iter::repeat_n(1, KvCache::HEADROOM + 20)).collect();
        for (i, &n) in lengths.iter().enumerate() {
            let k = step(n, i as f32 * 1000.0);
            let v = (&k * -1.0).unwrap();
            let (all_k, all_v) = KvCache::append(&mut cache, &k, &v).unwrap();
            let want = match expected_k.take() {
                Some(past) => Tensor::cat(&[&past, &k], 2).unwrap(),
                None => k.clone(),
            };
            assert_eq!(all_k.dims(), want.dims());
            let got = all_k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "keys after {} appends", i + 1);
            let got_v = all_v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want_v = (&want * -1.0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got_v, want_v);
            expected_k = Some(want);
        }
        let capacity = cache.as_ref().unwrap().k.dim(2).unwrap();
        assert!(capacity >= 5 + KvCache::HEADROOM + 20 && capacity > 5 + KvCache::HEADROOM, "it grew: {capacity}");
        // Selecting rows keeps the filled positions of the chosen rows.
        let index = Tensor::new(&[1u32, 1], &device).unwrap();
        cache.as_mut().unwrap().select_rows(&index).unwrap();
        let (k, _) = KvCache::append(&mut cache, &step(1, 0.5).narrow(0, 0, 2).unwrap(), &step(1, 0.5)).unwrap();
        assert_eq!(k.dims(), &[2, 3, 5 + KvCache::HEADROOM + 21, 4]);
        let past = expected_k.unwrap().narrow(0, 1, 1).unwrap();
        assert_eq!(
            k.narrow(0, 0, 1)
                .unwrap()
                .narrow(2, 0, past.dim(2).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            past.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

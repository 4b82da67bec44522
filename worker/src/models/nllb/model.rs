//! The M2M100 encoder-decoder as NLLB-200 uses it, ported from transformers 4.46.3
//! `models/m2m_100/modeling_m2m_100.py`: scaled token embeddings, sinusoidal positions offset by the padding
//! index, pre-norm layers with final layer norms, ReLU feed-forward, and an LM head tied to the embeddings.
//! Paper: "No Language Left Behind" (NLLB Team, 2022), <https://arxiv.org/abs/2207.04672>.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{layer_norm, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::{Activation, M2M100Config};
use crate::models::generate::DecodeSession;
use crate::models::linear::DenseLinear;
use crate::models::profile;

/// transformers' `nn.LayerNorm` default.
const LAYER_NORM_EPS: f64 = 1e-5;
/// `M2M100SinusoidalPositionalEmbedding.offset`.
const POSITION_OFFSET: usize = 2;

fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<DenseLinear> {
    candle_nn::linear(in_dim, out_dim, vb).map(DenseLinear::new)
}

/// Multi-head attention (`M2M100Attention`); keys/values come from the same sequence or from the encoder.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: DenseLinear,
    k_proj: DenseLinear,
    v_proj: DenseLinear,
    out_proj: DenseLinear,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
}

impl Attention {
    fn new(d_model: usize, num_heads: usize, vb: VarBuilder) -> Result<Self> {
        let head_dim = d_model / num_heads;
        Ok(Attention {
            q_proj: linear(d_model, d_model, vb.pp("q_proj"))?,
            k_proj: linear(d_model, d_model, vb.pp("k_proj"))?,
            v_proj: linear(d_model, d_model, vb.pp("v_proj"))?,
            out_proj: linear(d_model, d_model, vb.pp("out_proj"))?,
            num_heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
        })
    }

    /// `(batch, seq, d_model)` -> `(batch, heads, seq, head_dim)`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, seq, _) = x.dims3()?;
        x.reshape((batch, seq, self.num_heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.split_heads(&self.k_proj.forward(x)?)?, self.split_heads(&self.v_proj.forward(x)?)?))
    }

    /// Attends queries from `x` to `keys`/`values`; `mask` is additive and broadcasts to
    /// `(batch, heads, queries, keys)`.
    fn attend(&self, x: &Tensor, keys: &Tensor, values: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch, seq, d_model) = x.dims3()?;
        // query_states = self.q_proj(hidden_states) * self.scaling
        let queries = self.split_heads(&(self.q_proj.forward(x)? * self.scaling)?)?;
        let mut scores = queries.matmul(&keys.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(values)?.transpose(1, 2)?.reshape((batch, seq, d_model))?;
        self.out_proj.forward(&context)
    }
}

#[derive(Debug, Clone)]
struct FeedForward {
    fc1: DenseLinear,
    fc2: DenseLinear,
    activation: Activation,
}

impl FeedForward {
    fn new(d_model: usize, ffn_dim: usize, activation: Activation, vb: &VarBuilder) -> Result<Self> {
        Ok(FeedForward {
            fc1: linear(d_model, ffn_dim, vb.pp("fc1"))?,
            fc2: linear(ffn_dim, d_model, vb.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = self.fc1.forward(x)?;
        let hidden = match self.activation {
            Activation::Relu => hidden.relu()?,
            Activation::Gelu => hidden.gelu_erf()?,
            Activation::GeluNew => hidden.gelu()?,
            Activation::Silu => hidden.silu()?,
        };
        self.fc2.forward(&hidden)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    fn new(cfg: &M2M100Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(EncoderLayer {
            self_attn: Attention::new(d, cfg.encoder_attention_heads, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
            feed_forward: FeedForward::new(d, cfg.encoder_ffn_dim, cfg.activation_function, &vb)?,
            final_layer_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let normed = self.self_attn_layer_norm.forward(x)?;
        let (keys, values) = self.self_attn.keys_values(&normed)?;
        let x = (x + self.self_attn.attend(&normed, &keys, &values, Some(mask))?)?;
        let x = (&x + self.feed_forward.forward(&self.final_layer_norm.forward(&x)?)?)?;
        clamp_f16_overflow(x)
    }
}

/// transformers clamps fp16 encoder states that overflowed to +-(65504 - 1000) (M2M100EncoderLayer.forward).
fn clamp_f16_overflow(x: Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F16 {
        return Ok(x);
    }
    let largest = x.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if largest.is_finite() {
        return Ok(x);
    }
    let limit = 65504.0 - 1000.0;
    // NaN stays NaN in torch.clamp; infinities are clipped.
    x.clamp(-limit, limit)
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn new(cfg: &M2M100Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(DecoderLayer {
            self_attn: Attention::new(d, cfg.decoder_attention_heads, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: Attention::new(d, cfg.decoder_attention_heads, vb.pp("encoder_attn"))?,
            encoder_attn_layer_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("encoder_attn_layer_norm"))?,
            feed_forward: FeedForward::new(d, cfg.decoder_ffn_dim, cfg.activation_function, &vb)?,
            final_layer_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cache: &mut LayerCache,
        causal_mask: Option<&Tensor>,
        encoder_mask: &Tensor,
    ) -> Result<Tensor> {
        let normed = self.self_attn_layer_norm.forward(x)?;
        let (new_keys, new_values) = self.self_attn.keys_values(&normed)?;
        let (keys, values) = match cache.self_kv.take() {
            Some((keys, values)) => (Tensor::cat(&[&keys, &new_keys], 2)?, Tensor::cat(&[&values, &new_values], 2)?),
            None => (new_keys, new_values),
        };
        let attended = self.self_attn.attend(&normed, &keys, &values, causal_mask)?;
        cache.self_kv = Some((keys, values));
        let x = (x + attended)?;

        let normed = self.encoder_attn_layer_norm.forward(&x)?;
        let (cross_keys, cross_values) = &cache.cross_kv;
        let x = (&x + self.encoder_attn.attend(&normed, cross_keys, cross_values, Some(encoder_mask))?)?;

        &x + self.feed_forward.forward(&self.final_layer_norm.forward(&x)?)?
    }
}

/// Keys and values one decoder layer keeps between steps.
#[derive(Debug, Clone)]
struct LayerCache {
    /// Self-attention keys/values of all tokens so far, `(rows, heads, past, head_dim)`.
    self_kv: Option<(Tensor, Tensor)>,
    /// Cross-attention keys/values of the encoder states, computed once, `(rows, heads, source, head_dim)`.
    cross_kv: (Tensor, Tensor),
}

/// What the encoder hands the decoder: its final states and the padding mask of the source.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `(batch, source_len, d_model)`.
    pub hidden: Tensor,
    /// Additive mask `(batch, 1, 1, source_len)`: 0 for tokens, -inf for padding.
    pub mask: Tensor,
}

/// The M2M100 model: encoder, decoder and tied LM head.
#[derive(Debug, Clone)]
pub struct M2M100 {
    config: M2M100Config,
    embed_tokens: Embedding,
    embed_scale: f64,
    /// Sinusoidal table `(max_position_embeddings + 2, d_model)`, row `padding_idx` zero.
    positions: Tensor,
    encoder_layers: Vec<EncoderLayer>,
    encoder_layer_norm: LayerNorm,
    decoder_layers: Vec<DecoderLayer>,
    decoder_layer_norm: LayerNorm,
    lm_head: DenseLinear,
    device: Device,
    dtype: DType,
}

impl M2M100 {
    /// Loads the weights by their Hub names (`model.encoder.layers.0.self_attn.q_proj.weight`, ...). The
    /// embedding matrix is `model.shared.weight`, or one of its tied copies when a checkpoint saved only those.
    pub fn new(config: &M2M100Config, vb: VarBuilder) -> Result<Self> {
        let alignment = if vb.device().is_cuda() { CUDA_VOCAB_ALIGNMENT } else { 1 };
        Self::with_vocab_alignment(config, vb, alignment)
    }

    /// [`M2M100::new`] with the LM head's rows padded to a multiple of `alignment` (tests force the CUDA layout
    /// on the CPU).
    fn with_vocab_alignment(config: &M2M100Config, vb: VarBuilder, alignment: usize) -> Result<Self> {
        let d = config.d_model;
        let model = vb.pp("model");
        let shared = ["shared", "encoder.embed_tokens", "decoder.embed_tokens"]
            .into_iter()
            .find(|name| model.contains_tensor(&format!("{name}.weight")))
            .unwrap_or("shared");
        let tied = config.tie_word_embeddings || !vb.contains_tensor("lm_head.weight");
        let embedding_weight = model.pp(shared).get((config.vocab_size, d), "weight")?;
        let lm_head_weight = if tied {
            padded_rows(&embedding_weight, alignment)?
        } else {
            padded_rows(&vb.pp("lm_head").get((config.vocab_size, d), "weight")?, alignment)?
        };
        // Tied weights stay one tensor: the embedding reads the padded head's first rows.
        let embedding_weight = if tied { lm_head_weight.narrow(0, 0, config.vocab_size)? } else { embedding_weight };
        let encoder = model.pp("encoder");
        let decoder = model.pp("decoder");
        let encoder_layers = (0..config.encoder_layers)
            .map(|i| EncoderLayer::new(config, encoder.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let decoder_layers = (0..config.decoder_layers)
            .map(|i| DecoderLayer::new(config, decoder.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let positions = sinusoidal_positions(config.max_position_embeddings + POSITION_OFFSET, d, config.pad_token_id)?
            .to_dtype(vb.dtype())?
            .to_device(vb.device())?;
        Ok(M2M100 {
            config: config.clone(),
            embed_tokens: Embedding::new(embedding_weight, d),
            embed_scale: if config.scale_embedding { (d as f64).sqrt() } else { 1.0 },
            positions,
            encoder_layers,
            encoder_layer_norm: layer_norm(d, LAYER_NORM_EPS, encoder.pp("layer_norm"))?,
            decoder_layers,
            decoder_layer_norm: layer_norm(d, LAYER_NORM_EPS, decoder.pp("layer_norm"))?,
            lm_head: DenseLinear::new(Linear::new(lm_head_weight, None)),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &M2M100Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Longest sequence the position table covers.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Token embeddings times `embed_scale` plus positions (`M2M100ScaledWordEmbedding` +
    /// `M2M100SinusoidalPositionalEmbedding`), for `tokens` that follow `past_len` earlier ones.
    fn embed(&self, tokens: &[Vec<u32>], past_len: usize) -> Result<Tensor> {
        let rows = tokens.len();
        let len = tokens.first().map_or(0, Vec::len);
        let ids = Tensor::from_iter(tokens.iter().flatten().copied(), &self.device)?.reshape((rows, len))?;
        let pad = self.config.pad_token_id;
        // create_position_ids_from_input_ids: (cumsum(mask) + past) * mask + padding_idx
        let mut position_ids = Vec::with_capacity(rows * len);
        for row in tokens {
            let mut non_pad = 0usize;
            for &token in row {
                if token == pad {
                    position_ids.push(pad);
                } else {
                    non_pad += 1;
                    position_ids.push((past_len + non_pad) as u32 + pad);
                }
            }
        }
        let last = position_ids.iter().copied().max().unwrap_or(0) as usize;
        if last >= self.positions.dim(0)? {
            candle_core::bail!(
                "sequence reaches position {} but the model has {} positions",
                last - pad as usize,
                self.config.max_position_embeddings
            );
        }
        let position_ids = Tensor::from_vec(position_ids, rows * len, &self.device)?;
        let positions = self.positions.index_select(&position_ids, 0)?.reshape((rows, len, ()))?;
        (self.embed_tokens.forward(&ids)? * self.embed_scale)? + positions
    }

    /// Runs the encoder on right-padded token rows (padding with `pad_token_id`).
    pub fn encode(&self, input_ids: &[Vec<u32>]) -> Result<EncoderOutput> {
        let longest = input_ids.iter().map(Vec::len).max().unwrap_or(0);
        let pad = self.config.pad_token_id;
        let padded: Vec<Vec<u32>> = input_ids
            .iter()
            .map(|row| row.iter().copied().chain(std::iter::repeat(pad)).take(longest).collect())
            .collect();
        let mask: Vec<f32> = input_ids
            .iter()
            .flat_map(|row| (0..longest).map(move |i| if i < row.len() { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (input_ids.len(), 1, 1, longest), &self.device)?.to_dtype(self.dtype)?;
        let mut hidden = self.embed(&padded, 0)?;
        for layer in &self.encoder_layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(EncoderOutput { hidden: self.encoder_layer_norm.forward(&hidden)?, mask })
    }

    /// A decoding session over the encoder output: one row per encoder row, cross-attention keys/values
    /// computed once here.
    pub fn start_decoding(&self, encoded: &EncoderOutput) -> Result<Decoding<'_>> {
        let caches = self
            .decoder_layers
            .iter()
            .map(|layer| Ok(LayerCache { self_kv: None, cross_kv: layer.encoder_attn.keys_values(&encoded.hidden)? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoding {
            model: self,
            caches,
            encoder_mask: encoded.mask.clone(),
            past_len: 0,
            rows: encoded.hidden.dim(0)?,
        })
    }

    /// Decoder states after the final layer norm for `tokens` (equal-length rows), `(rows, len, d_model)`.
    fn decode(&self, session: &mut Decoding, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let len = tokens.first().map_or(0, Vec::len);
        let mut hidden = self.embed(tokens, session.past_len)?;
        let causal = if len > 1 { Some(causal_mask(len, session.past_len, &self.device, self.dtype)?) } else { None };
        for (layer, cache) in self.decoder_layers.iter().zip(session.caches.iter_mut()) {
            hidden = layer.forward(&hidden, cache, causal.as_ref(), &session.encoder_mask)?;
        }
        session.past_len += len;
        self.decoder_layer_norm.forward(&hidden)
    }

    /// LM-head logits of every position, `(rows, len, vocab)` (for parity checks; generation uses the last).
    pub fn decode_logits(&self, session: &mut Decoding, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let hidden = self.decode(session, tokens)?;
        self.lm_head.forward(&hidden)?.narrow(candle_core::D::Minus1, 0, self.config.vocab_size)
    }
}

/// A decoder mid-generation: per-layer caches for `rows` sequences.
pub struct Decoding<'m> {
    model: &'m M2M100,
    caches: Vec<LayerCache>,
    encoder_mask: Tensor,
    past_len: usize,
    rows: usize,
}

impl DecodeSession for Decoding<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn forward(&mut self, new_tokens: &[Vec<u32>]) -> Result<Tensor> {
        let model = self.model;
        let started = std::time::Instant::now();
        let hidden = model.decode(self, new_tokens)?;
        let decoded = profile::lap(&model.device, started);
        let last = hidden.i((.., hidden.dim(1)? - 1, ..))?.contiguous()?;
        let logits = model
            .lm_head
            .forward(&last)?
            .narrow(candle_core::D::Minus1, 0, model.config.vocab_size)?
            .to_dtype(DType::F32)?;
        if profile::enabled() {
            let rows = self.rows;
            profile::report(
                &format!("nllb step, {rows} rows, past {}", self.past_len),
                &[("decoder layers", decoded), ("lm head", profile::lap(&model.device, started) - decoded)],
            );
        }
        Ok(logits)
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let index = Tensor::from_iter(rows.iter().map(|&r| r as u32), &self.model.device)?;
        let pick = |t: &Tensor| t.index_select(&index, 0);
        for cache in &mut self.caches {
            if let Some((keys, values)) = &cache.self_kv {
                cache.self_kv = Some((pick(keys)?, pick(values)?));
            }
            cache.cross_kv = (pick(&cache.cross_kv.0)?, pick(&cache.cross_kv.1)?);
        }
        self.encoder_mask = pick(&self.encoder_mask)?;
        self.rows = rows.len();
        Ok(())
    }
}

/// On CUDA the LM head's rows are padded with zeros to a multiple of this, and its logits narrowed back to the
/// vocabulary: cuBLAS's fast half-precision kernels want the logits' row length 16-byte aligned, and NLLB's 256,206
/// tokens are not.
const CUDA_VOCAB_ALIGNMENT: usize = 64;

/// `weight` `(vocab, d)` with zero rows appended up to a multiple of `alignment`.
fn padded_rows(weight: &Tensor, alignment: usize) -> Result<Tensor> {
    let (vocab, d) = weight.dims2()?;
    let padding = vocab.next_multiple_of(alignment.max(1)) - vocab;
    if padding == 0 {
        return Ok(weight.clone());
    }
    Tensor::cat(&[weight, &Tensor::zeros((padding, d), weight.dtype(), weight.device())?], 0)
}

/// Additive causal mask `(len, past + len)` for new tokens that follow `past` cached ones.
fn causal_mask(len: usize, past: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..past + len).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (len, past + len), device)?.to_dtype(dtype)
}

/// `M2M100SinusoidalPositionalEmbedding.get_embedding`, computed in f32 as torch does:
/// `[sin(p * f_i), cos(p * f_i)]` with `f_i = exp(-i * ln(10000) / (half - 1))`, the padding row zeroed.
pub fn sinusoidal_positions(rows: usize, dim: usize, padding_idx: u32) -> Result<Tensor> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut table = vec![0f32; rows * dim];
    for position in 0..rows {
        if position == padding_idx as usize {
            continue;
        }
        let row = &mut table[position * dim..(position + 1) * dim];
        for (i, &f) in freqs.iter().enumerate() {
            let angle = position as f32 * f;
            row[i] = angle.sin();
            row[half + i] = angle.cos();
        }
    }
    Tensor::from_vec(table, (rows, dim), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_table_zeroes_the_padding_row_and_starts_with_sin_cos_of_zero() {
        let table = sinusoidal_positions(6, 8, 1).unwrap().to_vec2::<f32>().unwrap();
        assert!(table[1].iter().all(|&x| x == 0.0));
        assert_eq!(&table[0][..4], &[0.0; 4]);
        assert_eq!(&table[0][4..], &[1.0; 4]);
        // position 2, frequency 0 is 1: sin(2), cos(2)
        assert!((table[2][0] - 2f32.sin()).abs() < 1e-7);
        assert!((table[2][4] - 2f32.cos()).abs() < 1e-7);
    }

    #[test]
    fn a_padded_lm_head_gives_the_same_logits() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nllb-tiny");
        let config: M2M100Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_ne!(config.vocab_size % CUDA_VOCAB_ALIGNMENT, 0, "the fixture's vocabulary must need padding");
        let load = |alignment| {
            let vb = unsafe {
                VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu)
            }
            .unwrap();
            M2M100::with_vocab_alignment(&config, vb, alignment).unwrap()
        };
        let (plain, padded) = (load(1), load(CUDA_VOCAB_ALIGNMENT));
        assert_eq!(padded.lm_head.weight().dim(0).unwrap() % CUDA_VOCAB_ALIGNMENT, 0);
        let source = vec![vec![5, 17, 99, 2], vec![8, 40, 2]];
        let run = |model: &M2M100| {
            let encoded = model.encode(&source).unwrap();
            let mut session = model.start_decoding(&encoded).unwrap();
            let all = model.decode_logits(&mut session, &[vec![2, 30], vec![2, 31]]).unwrap();
            let step = session.forward(&[vec![44], vec![45]]).unwrap();
            (all.to_dtype(DType::F32).unwrap().flatten_all().unwrap(), step.flatten_all().unwrap())
        };
        let ((plain_all, plain_step), (padded_all, padded_step)) = (run(&plain), run(&padded));
        assert_eq!(plain_all.dims(), padded_all.dims());
        assert_eq!(plain_step.dims(), &[2 * config.vocab_size]);
        let largest =
            |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(largest(&plain_all, &padded_all) < 1e-6);
        assert!(largest(&plain_step, &padded_step) < 1e-6);
    }

    #[test]
    fn causal_mask_lets_each_token_see_the_past_and_itself() {
        let mask = causal_mask(2, 3, &Device::Cpu, DType::F32).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(mask[0][..4], [0.0; 4]);
        assert_eq!(mask[0][4], f32::NEG_INFINITY);
        assert_eq!(mask[1], vec![0.0; 5]);
    }
}

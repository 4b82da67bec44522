//! The Llama decoder of LLaVA-NeXT-Video (transformers 4.46.3 `LlamaForCausalLM`, under `language_model.*`),
//! driven by input embeddings so that image and video features can stand in for their placeholder tokens.
//! Layers are the shared Llama blocks of [`crate::models::mllama::text`]; a [`LlamaSession`] holds a batch's KV
//! caches and left padding.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};

use super::config::LlamaConfig;
use crate::models::generate::{DecodeSession, JoinSession};
use crate::models::mllama::text::{
    causal_padding_mask, padded_positions, rope_inverse_frequencies, self_mask_needed, KvCache, Mlp, Rope,
    SelfAttention,
};
use crate::models::quant::Quant;

#[derive(Debug, Clone)]
struct Layer {
    self_attn: SelfAttention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

#[derive(Debug, Clone)]
pub struct LlamaModel {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    inv_freq: Vec<f32>,
    config: LlamaConfig,
    device: Device,
    dtype: DType,
}

impl LlamaModel {
    /// `vb` is `language_model`: `model.embed_tokens`, `model.layers.N`, `model.norm`, `lm_head`. `quant`
    /// quantizes the decoder layers' linear weights as they load (the embeddings and LM head stay dense).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder, quant: Quant) -> Result<Self> {
        let model = vb.pp("model");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let embed_tokens = embedding(cfg.vocab_size, h, model.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let vb = model.pp("layers").pp(i);
                Ok(Layer {
                    self_attn: SelfAttention::with_dims(
                        h,
                        (cfg.num_attention_heads, cfg.kv_heads()),
                        cfg.head_dim(),
                        cfg.attention_bias,
                        vb.pp("self_attn"),
                        quant,
                    )?,
                    mlp: Mlp::with_dims(h, cfg.intermediate_size, cfg.mlp_bias, vb.pp("mlp"), quant)?,
                    input_layernorm: rms_norm(h, eps, vb.pp("input_layernorm"))?,
                    post_attention_layernorm: rms_norm(h, eps, vb.pp("post_attention_layernorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            candle_nn::linear_no_bias(h, cfg.vocab_size, vb.pp("lm_head"))?
        };
        Ok(LlamaModel {
            embed_tokens,
            layers,
            norm: rms_norm(h, eps, model.pp("norm"))?,
            lm_head,
            inv_freq: rope_inverse_frequencies(cfg.head_dim(), cfg.rope_theta, cfg.rope_scaling.as_ref()),
            config: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Token embeddings `(ids, hidden)`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        self.embed_tokens.forward(&Tensor::new(ids, &self.device)?)
    }

    /// A decoding session over `rows` sequences.
    pub fn start(&self, rows: usize) -> LlamaSession<'_> {
        LlamaSession {
            model: self,
            kv: vec![None; self.layers.len()],
            pads: vec![0; rows],
            len: 0,
            prompt_embeddings: None,
        }
    }

    /// Runs the decoder over `x` `(rows, len, hidden)` (left-padded rows) and returns the final-norm hidden states.
    fn forward(&self, session: &mut LlamaSession, x: Tensor) -> Result<Tensor> {
        let len = x.dim(1)?;
        let past = session.len;
        let rope = Rope::new(&self.inv_freq, &padded_positions(&session.pads, past, len), &self.device, self.dtype)?;
        let mask = if self_mask_needed(&session.pads, len) {
            Some(causal_padding_mask(&session.pads, past, len, &self.device, self.dtype)?)
        } else {
            None
        };
        let mut x = x;
        for (layer, kv) in self.layers.iter().zip(session.kv.iter_mut()) {
            let h = layer.self_attn.forward(&layer.input_layernorm.forward(&x)?, &rope, mask.as_ref(), kv)?;
            x = (x + h)?;
            x = (&x + layer.mlp.forward(&layer.post_attention_layernorm.forward(&x)?)?)?;
        }
        session.len += len;
        self.norm.forward(&x)
    }

    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }
}

/// The decoder mid-generation over a batch of rows.
pub struct LlamaSession<'m> {
    model: &'m LlamaModel,
    kv: Vec<Option<KvCache>>,
    /// Left padding of each row's prompt.
    pads: Vec<usize>,
    /// Positions fed so far (padding included), the same for every row.
    len: usize,
    /// Each row's prompt as embeddings `(len, hidden)` (image/video features merged in), used by the first
    /// `forward` instead of the prompt ids' embeddings.
    prompt_embeddings: Option<Vec<Tensor>>,
}

impl LlamaSession<'_> {
    /// Sets the prompt embeddings that the first `forward` (prefill) feeds in place of the token embeddings.
    pub fn with_prompt_embeddings(mut self, rows: Vec<Tensor>) -> Self {
        self.prompt_embeddings = Some(rows);
        self
    }

    /// Left-pads the prompts to one length and runs them; returns the hidden states of all positions.
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Tensor> {
        let model = self.model;
        let rows = match self.prompt_embeddings.take() {
            Some(rows) => rows,
            None => prompts.iter().map(|p| model.embed(p)).collect::<Result<Vec<_>>>()?,
        };
        if rows.len() != prompts.len() || rows.len() != self.pads.len() {
            candle_core::bail!("prefill: {} prompt embeddings for {} rows", rows.len(), self.pads.len());
        }
        let longest = rows.iter().map(|r| r.dim(0)).collect::<Result<Vec<_>>>()?.into_iter().max().unwrap_or(0);
        let pad_id = model.config.pad_token_id.unwrap_or(0);
        let pad_row = model.embed(&[pad_id])?;
        let mut padded = Vec::with_capacity(rows.len());
        for (row, (embeds, prompt)) in rows.iter().zip(prompts).enumerate() {
            let len = embeds.dim(0)?;
            if len != prompt.len() {
                candle_core::bail!("prefill: row {row} has {len} prompt embeddings for {} ids", prompt.len());
            }
            self.pads[row] = longest - len;
            padded.push(if len < longest {
                Tensor::cat(&[&pad_row.broadcast_as((longest - len, pad_row.dim(1)?))?, embeds], 0)?
            } else {
                embeds.clone()
            });
        }
        let x = Tensor::stack(&padded, 0)?.to_dtype(model.dtype)?;
        model.forward(self, x)
    }

    /// Logits of every prompt position, `(rows, len, vocab)` (parity checks).
    pub fn prefill_logits(&mut self, prompts: &[Vec<u32>]) -> Result<Tensor> {
        let hidden = self.prefill(prompts)?;
        self.model.logits(&hidden)
    }
}

impl JoinSession for LlamaSession<'_> {
    /// Lines the two sessions' rows up on one position axis (the shorter side gains left padding, leading
    /// positions that every row pads are dropped) and stacks their caches.
    fn join(&mut self, other: Self) -> Result<()> {
        if !std::ptr::eq(self.model, other.model) {
            candle_core::bail!("join: the sessions belong to different models");
        }
        if self.len == 0 || other.len == 0 {
            candle_core::bail!("join: both sessions must have run their prefill");
        }
        let width = self.len.max(other.len);
        let (a_shift, b_shift) = (width - self.len, width - other.len);
        let trim =
            self.pads.iter().map(|p| p + a_shift).chain(other.pads.iter().map(|p| p + b_shift)).min().unwrap_or(0);
        for (mine, theirs) in self.kv.iter_mut().zip(other.kv.iter()) {
            *mine = match (mine.take(), theirs) {
                (Some(a), Some(b)) => Some(KvCache::join(&a, a_shift, b, b_shift, trim)?),
                (None, None) => None,
                _ => candle_core::bail!("join: the sessions differ in which layers hold a cache"),
            };
        }
        for pad in self.pads.iter_mut() {
            *pad = *pad + a_shift - trim;
        }
        self.pads.extend(other.pads.iter().map(|p| p + b_shift - trim));
        self.len = width - trim;
        self.prompt_embeddings = None;
        Ok(())
    }
}

impl DecodeSession for LlamaSession<'_> {
    fn rows(&self) -> usize {
        self.pads.len()
    }

    fn forward(&mut self, new_tokens: &[Vec<u32>]) -> Result<Tensor> {
        let hidden = if self.len == 0 {
            self.prefill(new_tokens)?
        } else {
            let model = self.model;
            let rows = new_tokens.len();
            let len = new_tokens.first().map_or(0, Vec::len);
            let ids = Tensor::from_iter(new_tokens.iter().flatten().copied(), &model.device)?.reshape((rows, len))?;
            let x = model.embed_tokens.forward(&ids)?;
            model.forward(self, x)?
        };
        // Contiguous: CUDA matmul takes no row stride other than the row length.
        let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?.squeeze(1)?.contiguous()?;
        self.model.logits(&last)
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let index = Tensor::from_iter(rows.iter().map(|&r| r as u32), &self.model.device)?;
        for kv in self.kv.iter_mut().flatten() {
            kv.select_rows(&index)?;
        }
        self.pads = rows.iter().map(|&r| self.pads[r]).collect();
        if let Some(embeddings) = self.prompt_embeddings.as_mut() {
            *embeddings = rows.iter().map(|&r| embeddings[r].clone()).collect();
        }
        Ok(())
    }
}

//! `config.json` and `generation_config.json` of an M2M100/NLLB checkpoint, with the field names of the Hub and
//! the defaults of transformers' `M2M100Config` (transformers/models/m2m_100/configuration_m2m_100.py).

use serde::Deserialize;

/// The architecture hyper-parameters. Unknown fields are ignored, as transformers does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct M2M100Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default = "d::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "d::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "d::d_model")]
    pub d_model: usize,
    #[serde(default = "d::layers")]
    pub encoder_layers: usize,
    #[serde(default = "d::ffn")]
    pub encoder_ffn_dim: usize,
    #[serde(default = "d::heads")]
    pub encoder_attention_heads: usize,
    #[serde(default = "d::layers")]
    pub decoder_layers: usize,
    #[serde(default = "d::ffn")]
    pub decoder_ffn_dim: usize,
    #[serde(default = "d::heads")]
    pub decoder_attention_heads: usize,
    #[serde(default)]
    pub activation_function: Activation,
    #[serde(default = "d::yes")]
    pub scale_embedding: bool,
    #[serde(default = "d::pad")]
    pub pad_token_id: u32,
    #[serde(default)]
    pub bos_token_id: u32,
    #[serde(default = "d::eos")]
    pub eos_token_id: u32,
    #[serde(default = "d::eos")]
    pub decoder_start_token_id: u32,
    /// NLLB's config sets none; a checkpoint that does is honoured when no target language is forced.
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    #[serde(default = "d::yes")]
    pub tie_word_embeddings: bool,
}

fn default_model_type() -> String {
    "m2m_100".into()
}

/// transformers' defaults for each field.
mod d {
    pub fn vocab_size() -> usize {
        128112
    }
    pub fn max_position_embeddings() -> usize {
        1024
    }
    pub fn d_model() -> usize {
        1024
    }
    pub fn layers() -> usize {
        12
    }
    pub fn ffn() -> usize {
        4096
    }
    pub fn heads() -> usize {
        16
    }
    pub fn yes() -> bool {
        true
    }
    pub fn pad() -> u32 {
        1
    }
    pub fn eos() -> u32 {
        2
    }
}

/// `activation_function` values of transformers' `ACT2FN` that an M2M100 checkpoint may name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    /// Exact (erf) GELU, transformers' "gelu".
    Gelu,
    /// Tanh approximation, transformers' "gelu_new" / "gelu_pytorch_tanh".
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    #[serde(alias = "swish")]
    Silu,
}

/// Decoding defaults shipped with the checkpoint (`generation_config.json`); absent fields keep transformers'
/// `GenerationConfig` defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GenerationDefaults {
    #[serde(default = "GenerationDefaults::default_max_length")]
    pub max_length: usize,
    #[serde(default)]
    pub num_beams: Option<usize>,
    #[serde(default)]
    pub length_penalty: Option<f64>,
}

impl GenerationDefaults {
    fn default_max_length() -> usize {
        20
    }
}

impl Default for GenerationDefaults {
    fn default() -> Self {
        GenerationDefaults { max_length: 200, num_beams: None, length_penalty: None }
    }
}

impl M2M100Config {
    /// Checks what the forward pass relies on, so that a wrong config fails at load, not mid-batch.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.model_type.as_str(), "m2m_100" | "nllb" | "nllb-moe") {
            return Err(format!("model_type `{}` is not an M2M100/NLLB model", self.model_type));
        }
        if self.model_type == "nllb-moe" {
            return Err("NLLB-MoE (mixture of experts) checkpoints are not supported; use a dense NLLB-200".into());
        }
        for (what, heads) in [("encoder", self.encoder_attention_heads), ("decoder", self.decoder_attention_heads)] {
            if heads == 0 || self.d_model % heads != 0 {
                return Err(format!("d_model {} is not divisible by {what}_attention_heads {heads}", self.d_model));
            }
        }
        if self.d_model < 4 {
            return Err(format!("d_model {} is too small for sinusoidal positions", self.d_model));
        }
        Ok(())
    }
}

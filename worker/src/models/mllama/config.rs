//! `config.json` of an Mllama checkpoint (Llama 3.2 Vision), with the Hub's field names and the defaults of
//! transformers' `MllamaConfig`, `MllamaVisionConfig` and `MllamaTextConfig` (configuration_mllama.py).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MllamaConfig {
    #[serde(default = "d::model_type")]
    pub model_type: String,
    pub vision_config: VisionConfig,
    pub text_config: TextConfig,
    #[serde(default = "d::image_token_index")]
    pub image_token_index: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct VisionConfig {
    #[serde(default = "d::vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::gelu")]
    pub hidden_act: String,
    #[serde(default = "d::vision_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::global_layers")]
    pub num_global_layers: usize,
    /// Saved as `attention_heads` by transformers; `num_attention_heads` is the constructor's name.
    #[serde(default = "d::vision_heads", alias = "num_attention_heads")]
    pub attention_heads: usize,
    #[serde(default = "d::channels")]
    pub num_channels: usize,
    #[serde(default = "d::vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d::vision_output_dim")]
    pub vision_output_dim: usize,
    #[serde(default = "d::image_size")]
    pub image_size: usize,
    #[serde(default = "d::patch_size")]
    pub patch_size: usize,
    #[serde(default = "d::eps")]
    pub norm_eps: f64,
    #[serde(default = "d::max_tiles")]
    pub max_num_tiles: usize,
    #[serde(default = "d::intermediate_layers")]
    pub intermediate_layers_indices: Vec<usize>,
    #[serde(default = "d::aspect_ratios")]
    pub supported_aspect_ratios: Vec<[usize; 2]>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TextConfig {
    #[serde(default = "d::vocab")]
    pub vocab_size: usize,
    #[serde(default = "d::text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::silu")]
    pub hidden_act: String,
    #[serde(default = "d::text_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d::kv_heads")]
    pub num_key_value_heads: usize,
    #[serde(default = "d::text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d::rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "d::eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d::text_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "d::cross_layers")]
    pub cross_attention_layers: Vec<usize>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

/// `eos_token_id` is an id or a list of ids.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling`; vislingo implements `default`, `linear` and Llama 3.1's `llama3` (transformers
/// modeling_rope_utils.py). The kind is `rope_type`, or the older `type` (transformers writes both).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawRopeScaling")]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Deserialize)]
struct RawRopeScaling {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
    #[serde(default = "d::one")]
    factor: f64,
    #[serde(default = "d::one")]
    low_freq_factor: f64,
    #[serde(default = "d::four")]
    high_freq_factor: f64,
    #[serde(default = "d::original_positions")]
    original_max_position_embeddings: usize,
}

impl TryFrom<RawRopeScaling> for RopeScaling {
    type Error = String;

    fn try_from(raw: RawRopeScaling) -> Result<Self, String> {
        Ok(RopeScaling {
            rope_type: raw.rope_type.or(raw.legacy_type).ok_or("rope_scaling has no `rope_type` (or `type`)")?,
            factor: raw.factor,
            low_freq_factor: raw.low_freq_factor,
            high_freq_factor: raw.high_freq_factor,
            original_max_position_embeddings: raw.original_max_position_embeddings,
        })
    }
}

impl VisionConfig {
    /// Patches per tile plus the class token (`MllamaVisionModel.num_patches`).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    pub fn max_aspect_ratio_id(&self) -> usize {
        self.supported_aspect_ratios.len()
    }
}

impl MllamaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.model_type != "mllama" {
            return Err(format!("model_type `{}` is not mllama", self.model_type));
        }
        let v = &self.vision_config;
        if v.attention_heads == 0 || v.hidden_size % v.attention_heads != 0 {
            return Err(format!("vision hidden_size {} not divisible by {} heads", v.hidden_size, v.attention_heads));
        }
        if v.image_size % v.patch_size != 0 {
            return Err(format!("image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if let Some(&bad) = v.intermediate_layers_indices.iter().find(|&&i| i > v.num_hidden_layers) {
            return Err(format!("intermediate layer {bad} beyond {} vision layers", v.num_hidden_layers));
        }
        let expected_output = v.hidden_size * (v.intermediate_layers_indices.len() + 1);
        if v.vision_output_dim != expected_output {
            return Err(format!(
                "vision_output_dim {} is not hidden_size x (intermediate layers + 1) = {expected_output}",
                v.vision_output_dim
            ));
        }
        if v.hidden_act != "gelu" {
            return Err(format!("vision hidden_act `{}` is not supported (gelu)", v.hidden_act));
        }
        let t = &self.text_config;
        if t.num_attention_heads == 0
            || t.hidden_size % t.num_attention_heads != 0
            || t.num_key_value_heads == 0
            || t.num_attention_heads % t.num_key_value_heads != 0
        {
            return Err(format!(
                "text heads {} / kv heads {} do not divide hidden_size {}",
                t.num_attention_heads, t.num_key_value_heads, t.hidden_size
            ));
        }
        if let Some(&bad) = t.cross_attention_layers.iter().find(|&&i| i >= t.num_hidden_layers) {
            return Err(format!("cross-attention layer {bad} beyond {} text layers", t.num_hidden_layers));
        }
        if t.hidden_act != "silu" {
            return Err(format!("text hidden_act `{}` is not supported (silu)", t.hidden_act));
        }
        if let Some(scaling) = &t.rope_scaling {
            if !matches!(scaling.rope_type.as_str(), "default" | "llama3") {
                return Err(format!("rope_scaling type `{}` is not supported (default, llama3)", scaling.rope_type));
            }
        }
        Ok(())
    }
}

/// transformers' defaults (the 11B model's values).
mod d {
    pub fn model_type() -> String {
        "mllama".into()
    }
    pub fn image_token_index() -> u32 {
        128256
    }
    pub fn vision_hidden() -> usize {
        1280
    }
    pub fn gelu() -> String {
        "gelu".into()
    }
    pub fn silu() -> String {
        "silu".into()
    }
    pub fn vision_layers() -> usize {
        32
    }
    pub fn global_layers() -> usize {
        8
    }
    pub fn vision_heads() -> usize {
        16
    }
    pub fn channels() -> usize {
        3
    }
    pub fn vision_intermediate() -> usize {
        5120
    }
    pub fn vision_output_dim() -> usize {
        7680
    }
    pub fn image_size() -> usize {
        448
    }
    pub fn patch_size() -> usize {
        14
    }
    pub fn eps() -> f64 {
        1e-5
    }
    pub fn max_tiles() -> usize {
        4
    }
    pub fn intermediate_layers() -> Vec<usize> {
        vec![3, 7, 15, 23, 30]
    }
    pub fn aspect_ratios() -> Vec<[usize; 2]> {
        vec![[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
    }
    pub fn vocab() -> usize {
        128256
    }
    pub fn text_hidden() -> usize {
        4096
    }
    pub fn text_layers() -> usize {
        40
    }
    pub fn text_heads() -> usize {
        32
    }
    pub fn kv_heads() -> usize {
        8
    }
    pub fn text_intermediate() -> usize {
        14336
    }
    pub fn rope_theta() -> f64 {
        500000.0
    }
    pub fn text_positions() -> usize {
        131072
    }
    pub fn cross_layers() -> Vec<usize> {
        vec![3, 8, 13, 18, 23, 28, 33, 38]
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn four() -> f64 {
        4.0
    }
    pub fn original_positions() -> usize {
        8192
    }
}

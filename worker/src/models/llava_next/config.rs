//! `config.json` of a LLaVA-NeXT-Video checkpoint, with the Hub's field names and the defaults of transformers'
//! `LlavaNextVideoConfig`, `CLIPVisionConfig` and `LlamaConfig` (configuration_llava_next_video.py,
//! configuration_clip.py, configuration_llama.py).

use serde::Deserialize;

pub use crate::models::mllama::config::{RopeScaling, TokenIds};

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlavaNextVideoConfig {
    #[serde(default = "d::model_type")]
    pub model_type: String,
    #[serde(default)]
    pub vision_config: ClipVisionConfig,
    #[serde(default)]
    pub text_config: LlamaConfig,
    #[serde(default = "d::image_token_index")]
    pub image_token_index: u32,
    #[serde(default = "d::video_token_index")]
    pub video_token_index: u32,
    #[serde(default = "d::gelu")]
    pub projector_hidden_act: String,
    /// `default` drops the class token of the vision features, `full` keeps it.
    #[serde(default = "d::select_strategy")]
    pub vision_feature_select_strategy: String,
    /// Index into the vision tower's hidden states (0 = embeddings, -1 = last layer).
    #[serde(default = "d::feature_layer")]
    pub vision_feature_layer: i64,
    /// `(height, width)` canvases the anyres path chooses from.
    #[serde(default = "d::grid_pinpoints")]
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// `average`, `max` or `conv`: how video frame features are pooled (`LlavaNextVideoPooler`).
    #[serde(default = "d::pool_mode")]
    pub spatial_pool_mode: String,
    #[serde(default = "d::pool_stride")]
    pub spatial_pool_stride: usize,
    /// Output channels of the `conv` pooler (transformers: `vision_config.hidden_size` when absent).
    #[serde(default)]
    pub spatial_pool_out_channels: Option<usize>,
    /// Image/video token counts below which transformers 4.46.3 takes its legacy merge (which fails on the
    /// processor's expanded prompts); vislingo always merges expanded placeholders (see the module docs).
    #[serde(default = "d::image_seq_length")]
    pub image_seq_length: usize,
    #[serde(default = "d::video_seq_length")]
    pub video_seq_length: usize,
}

/// `CLIPVisionConfig` with the defaults `LlavaNextVideoConfig` gives it when absent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ClipVisionConfig {
    #[serde(default = "d::vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d::vision_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d::channels")]
    pub num_channels: usize,
    #[serde(default = "d::image_size")]
    pub image_size: usize,
    #[serde(default = "d::patch_size")]
    pub patch_size: usize,
    #[serde(default = "d::quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "d::eps")]
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// `LlamaConfig` (the text model of LLaVA-NeXT-Video 7B is Vicuna 7B v1.5).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlamaConfig {
    #[serde(default = "d::vocab")]
    pub vocab_size: usize,
    #[serde(default = "d::text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d::text_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::text_heads")]
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouped-query attention).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d::silu")]
    pub hidden_act: String,
    #[serde(default = "d::text_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d::rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d::rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
}

impl ClipVisionConfig {
    /// Patches along one side of the (square) input.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

impl LlavaNextVideoConfig {
    /// How many vision-tower layers run to reach `vision_feature_layer` (hidden state 0 is the embeddings).
    pub fn vision_layers_used(&self) -> usize {
        let total = self.vision_config.num_hidden_layers as i64 + 1;
        let index =
            if self.vision_feature_layer < 0 { total + self.vision_feature_layer } else { self.vision_feature_layer };
        index.clamp(0, total - 1) as usize
    }

    /// Whether the class token is kept in the vision features (`full`) or dropped (`default`).
    pub fn keeps_class_token(&self) -> bool {
        self.vision_feature_select_strategy == "full"
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.model_type != "llava_next_video" {
            return Err(format!("model_type `{}` is not llava_next_video", self.model_type));
        }
        let v = &self.vision_config;
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(format!(
                "vision hidden_size {} not divisible by {} heads",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!("image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if !matches!(v.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(format!("vision hidden_act `{}` is not supported (quick_gelu, gelu)", v.hidden_act));
        }
        let total = v.num_hidden_layers as i64 + 1;
        if self.vision_feature_layer >= total || self.vision_feature_layer < -total {
            return Err(format!(
                "vision_feature_layer {} is outside the {total} hidden states of the vision tower",
                self.vision_feature_layer
            ));
        }
        if !matches!(self.vision_feature_select_strategy.as_str(), "default" | "full") {
            return Err(format!(
                "vision_feature_select_strategy `{}` is not default or full",
                self.vision_feature_select_strategy
            ));
        }
        if self.projector_hidden_act != "gelu" {
            return Err(format!("projector_hidden_act `{}` is not supported (gelu)", self.projector_hidden_act));
        }
        if !matches!(self.spatial_pool_mode.as_str(), "average" | "max" | "conv") || self.spatial_pool_stride == 0 {
            return Err(format!(
                "spatial_pool_mode `{}` / stride {} is not supported (average, max or conv; stride > 0)",
                self.spatial_pool_mode, self.spatial_pool_stride
            ));
        }
        // LlavaNextVideoPooler divides by image_size // patch_size**2 (Python precedence): it must not be 0.
        if v.image_size < v.patch_size * v.patch_size {
            return Err(format!(
                "image_size {} < patch_size^2 {}: transformers' video pooler divides by zero",
                v.image_size,
                v.patch_size * v.patch_size
            ));
        }
        if self.image_grid_pinpoints.is_empty() || self.image_grid_pinpoints.iter().any(|p| p[0] == 0 || p[1] == 0) {
            return Err("image_grid_pinpoints must be a non-empty list of positive [height, width]".into());
        }
        let t = &self.text_config;
        if t.num_attention_heads == 0 || t.kv_heads() == 0 || !t.num_attention_heads.is_multiple_of(t.kv_heads()) {
            return Err(format!(
                "text heads {} are not a multiple of kv heads {}",
                t.num_attention_heads,
                t.kv_heads()
            ));
        }
        if !t.head_dim().is_multiple_of(2) {
            return Err(format!("text head_dim {} is odd", t.head_dim()));
        }
        if t.hidden_act != "silu" {
            return Err(format!("text hidden_act `{}` is not supported (silu)", t.hidden_act));
        }
        if let Some(scaling) = &t.rope_scaling {
            if !matches!(scaling.rope_type.as_str(), "default" | "linear" | "llama3") {
                return Err(format!(
                    "rope_scaling type `{}` is not supported (default, linear, llama3)",
                    scaling.rope_type
                ));
            }
        }
        Ok(())
    }
}

/// transformers' defaults (LLaVA-NeXT-Video 7B's values where `LlavaNextVideoConfig` sets them).
mod d {
    pub fn model_type() -> String {
        "llava_next_video".into()
    }
    pub fn image_token_index() -> u32 {
        32001
    }
    pub fn video_token_index() -> u32 {
        32000
    }
    pub fn gelu() -> String {
        "gelu".into()
    }
    pub fn quick_gelu() -> String {
        "quick_gelu".into()
    }
    pub fn silu() -> String {
        "silu".into()
    }
    pub fn select_strategy() -> String {
        "default".into()
    }
    pub fn feature_layer() -> i64 {
        -2
    }
    pub fn grid_pinpoints() -> Vec<[usize; 2]> {
        vec![[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    }
    pub fn pool_mode() -> String {
        "average".into()
    }
    pub fn pool_stride() -> usize {
        2
    }
    pub fn image_seq_length() -> usize {
        576
    }
    pub fn video_seq_length() -> usize {
        288
    }
    pub fn vision_hidden() -> usize {
        1024
    }
    pub fn vision_intermediate() -> usize {
        4096
    }
    pub fn vision_layers() -> usize {
        24
    }
    pub fn vision_heads() -> usize {
        16
    }
    pub fn channels() -> usize {
        3
    }
    pub fn image_size() -> usize {
        336
    }
    pub fn patch_size() -> usize {
        14
    }
    pub fn eps() -> f64 {
        1e-5
    }
    pub fn vocab() -> usize {
        32000
    }
    pub fn text_hidden() -> usize {
        4096
    }
    pub fn text_intermediate() -> usize {
        11008
    }
    pub fn text_layers() -> usize {
        32
    }
    pub fn text_heads() -> usize {
        32
    }
    pub fn text_positions() -> usize {
        2048
    }
    pub fn rms_eps() -> f64 {
        1e-6
    }
    pub fn rope_theta() -> f64 {
        10000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of llava-hf/LLaVA-NeXT-Video-7B-hf's config.json: most fields left to the defaults, Vicuna's
    /// linear RoPE scaling written with the old `type` key.
    const HUB_7B: &str = r#"{
        "architectures": ["LlavaNextVideoForConditionalGeneration"],
        "ignore_index": -100,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "image_seq_length": 576,
        "image_token_index": 32001,
        "model_type": "llava_next_video",
        "projector_hidden_act": "gelu",
        "spatial_pool_mode": "average",
        "spatial_pool_stride": 2,
        "text_config": {
            "architectures": ["LlamaForCausalLM"],
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "pad_token_id": 0,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 2.0, "type": "linear"},
            "torch_dtype": "float16",
            "vocab_size": 32064
        },
        "tie_word_embeddings": false,
        "use_image_newline_parameter": true,
        "video_seq_length": 288,
        "video_token_index": 32000,
        "vision_config": {
            "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
            "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
            "vocab_size": 32000
        },
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default"
    }"#;

    #[test]
    fn the_7b_hub_config_parses_with_transformers_defaults() {
        let config: LlavaNextVideoConfig = serde_json::from_str(HUB_7B).unwrap();
        config.validate().unwrap();
        assert_eq!(config.vision_layers_used(), 23);
        assert!(!config.keeps_class_token());
        let t = &config.text_config;
        assert_eq!((t.hidden_size, t.num_hidden_layers, t.kv_heads(), t.head_dim()), (4096, 32, 32, 128));
        assert_eq!(t.rope_scaling.as_ref().map(|r| (r.rope_type.as_str(), r.factor)), Some(("linear", 2.0)));
        assert_eq!(config.vision_config.hidden_act, "quick_gelu");
    }

    #[test]
    fn unsupported_settings_are_refused() {
        for (field, value) in [
            ("vision_feature_layer", "25"),
            ("vision_feature_select_strategy", "\"cls\""),
            ("spatial_pool_mode", "\"bilinear\""),
            ("projector_hidden_act", "\"relu\""),
        ] {
            let mut json: serde_json::Value = serde_json::from_str(HUB_7B).unwrap();
            json[field] = serde_json::from_str(value).unwrap();
            let config: LlavaNextVideoConfig = serde_json::from_value(json).unwrap();
            assert!(config.validate().is_err(), "{field} = {value}");
        }
    }
}

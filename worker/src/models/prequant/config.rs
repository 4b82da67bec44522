//! The `quantization_config` of a pre-quantized checkpoint's `config.json`, with the Hub's field names: which
//! layout its weights are stored in (bitsandbytes 4-bit, compressed-tensors float8) and which modules it left dense.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::PrequantError;

/// How a checkpoint's weights are stored, from `config.json`'s `quantization_config`.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantizationConfig {
    /// `quant_method: bitsandbytes` with `load_in_4bit` (transformers' `BitsAndBytesConfig`).
    Bitsandbytes(BitsAndBytesConfig),
    /// `quant_method: compressed-tensors` in the `float-quantized` format (llm-compressor's FP8 schemes).
    CompressedTensors(CompressedTensorsConfig),
}

/// transformers' `BitsAndBytesConfig.to_dict()`; defaults are the constructor's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BitsAndBytesConfig {
    #[serde(default)]
    pub load_in_4bit: bool,
    #[serde(default)]
    pub load_in_8bit: bool,
    /// `nf4` or `fp4` (transformers' default); each weight's own quant_state says it again and is what counts.
    #[serde(default = "default_quant_type")]
    pub bnb_4bit_quant_type: String,
    /// Whether the per-block absmax values are themselves quantized to 8 bits ("double quantization").
    #[serde(default)]
    pub bnb_4bit_use_double_quant: bool,
    /// Modules the quantizer left in the original dtype (matched as dotted name parts); `None` means transformers
    /// chose them (the output head).
    #[serde(default)]
    pub llm_int8_skip_modules: Option<Vec<String>>,
}

fn default_quant_type() -> String {
    "fp4".into()
}

/// compressed-tensors' `QuantizationConfig` (the fields that decide how weights are stored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompressedTensorsConfig {
    /// `float-quantized` for float8 weights with scales (a group may override it).
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub config_groups: BTreeMap<String, ConfigGroup>,
    /// Modules left dense: names, or regular expressions prefixed with `re:`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// `compressed` when the weights are stored quantized.
    #[serde(default)]
    pub quantization_status: Option<String>,
}

/// One scheme of `config_groups`: which modules it targets and how their weights and inputs are quantized.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConfigGroup {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub weights: Option<QuantizationArgs>,
    /// Activations: with `dynamic: true` they are quantized per token at run time by the serving engine; vislingo
    /// runs the dequantized weights on unquantized activations instead.
    #[serde(default)]
    pub input_activations: Option<QuantizationArgs>,
    #[serde(default)]
    pub format: Option<String>,
}

/// compressed-tensors' `QuantizationArgs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuantizationArgs {
    #[serde(default = "default_bits")]
    pub num_bits: u32,
    /// `float` or `int`.
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// `tensor`, `channel`, `group`, `block` or `token`.
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub group_size: Option<usize>,
}

fn default_bits() -> u32 {
    8
}

fn default_type() -> String {
    "int".into()
}

/// What the loader supports, for error messages.
const SUPPORTED: &str = "vislingo loads bitsandbytes 4-bit (nf4, fp4) and compressed-tensors float8 \
                         (float-quantized) checkpoints as they are; dense checkpoints can be quantized on load with \
                         --quant";

impl QuantizationConfig {
    /// Parses and checks a `quantization_config` object.
    pub fn from_value(value: &Value) -> Result<QuantizationConfig, PrequantError> {
        let method = value.get("quant_method").and_then(Value::as_str);
        // Configs written before transformers recorded `quant_method` are bitsandbytes ones.
        let legacy_bnb =
            method.is_none() && (value.get("load_in_4bit").is_some() || value.get("load_in_8bit").is_some());
        let config = match method {
            Some("bitsandbytes") => QuantizationConfig::Bitsandbytes(parse(value)?),
            None if legacy_bnb => QuantizationConfig::Bitsandbytes(parse(value)?),
            Some("compressed-tensors") => QuantizationConfig::CompressedTensors(parse(value)?),
            Some(other) => {
                return Err(PrequantError::Unsupported { what: format!("quant_method `{other}`"), hint: SUPPORTED })
            }
            None => return Err(PrequantError::BadConfig { reason: "no `quant_method`".into() }),
        };
        config.validate()?;
        Ok(config)
    }

    /// The `quantization_config` of a model's `config.json`; `None` for a dense checkpoint.
    pub fn from_model_config(path: &Path) -> Result<Option<QuantizationConfig>, PrequantError> {
        let text = std::fs::read_to_string(path).map_err(|source| PrequantError::Read { path: path.into(), source })?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| PrequantError::BadConfig { reason: format!("{}: {e}", path.display()) })?;
        match json.get("quantization_config") {
            None | Some(Value::Null) => Ok(None),
            Some(value) => QuantizationConfig::from_value(value).map(Some),
        }
    }

    fn validate(&self) -> Result<(), PrequantError> {
        match self {
            QuantizationConfig::Bitsandbytes(c) if !c.load_in_4bit => Err(PrequantError::Unsupported {
                what: if c.load_in_8bit {
                    "8-bit bitsandbytes (LLM.int8) weights".into()
                } else {
                    "a bitsandbytes config without load_in_4bit".into()
                },
                hint: SUPPORTED,
            }),
            QuantizationConfig::Bitsandbytes(c) if !matches!(c.bnb_4bit_quant_type.as_str(), "nf4" | "fp4") => {
                Err(PrequantError::Unsupported {
                    what: format!("bnb_4bit_quant_type `{}`", c.bnb_4bit_quant_type),
                    hint: SUPPORTED,
                })
            }
            QuantizationConfig::Bitsandbytes(_) => Ok(()),
            QuantizationConfig::CompressedTensors(c) => c.validate(),
        }
    }

    /// One line for logs: the method, its options and the modules left dense.
    pub fn summary(&self) -> String {
        match self {
            QuantizationConfig::Bitsandbytes(c) => format!(
                "bitsandbytes {} (double quantization: {}; left dense: {})",
                c.bnb_4bit_quant_type,
                if c.bnb_4bit_use_double_quant { "yes" } else { "no" },
                c.llm_int8_skip_modules.as_ref().map_or("transformers' default".into(), |m| m.join(", "))
            ),
            QuantizationConfig::CompressedTensors(c) => format!(
                "compressed-tensors {} (weights: {}; left dense: {})",
                c.format.as_deref().unwrap_or("float-quantized"),
                c.config_groups
                    .values()
                    .filter_map(|g| g.weights.as_ref())
                    .map(|w| format!("{}{} {}", w.kind, w.num_bits, w.strategy.as_deref().unwrap_or("tensor")))
                    .collect::<Vec<_>>()
                    .join(", "),
                c.ignore.join(", ")
            ),
        }
    }
}

impl CompressedTensorsConfig {
    fn validate(&self) -> Result<(), PrequantError> {
        let unsupported = |what: String| Err(PrequantError::Unsupported { what, hint: SUPPORTED });
        // `dense`: nothing stored quantized; `mixed-precision`: each group names its own format.
        let known = |format: &str| matches!(format, "float-quantized" | "dense" | "mixed-precision");
        if let Some(format) = self.format.as_deref().filter(|f| !known(f)) {
            return unsupported(format!("compressed-tensors format `{format}`"));
        }
        for (name, group) in &self.config_groups {
            if let Some(format) = group.format.as_deref().filter(|f| !known(f)) {
                return unsupported(format!("compressed-tensors format `{format}` ({name})"));
            }
            if let Some(w) = &group.weights {
                if w.kind != "float" || w.num_bits != 8 {
                    return unsupported(format!("{}{} weights ({name})", w.kind, w.num_bits));
                }
                if let Some(strategy @ ("block" | "token")) = w.strategy.as_deref() {
                    return unsupported(format!("`{strategy}` weight scales ({name})"));
                }
            }
        }
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, PrequantError> {
    T::deserialize(value).map_err(|e| PrequantError::BadConfig { reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_without_quant_method_but_with_load_in_4bit_are_bitsandbytes() {
        let config = QuantizationConfig::from_value(&json!({"load_in_4bit": true, "bnb_4bit_quant_type": "nf4"}));
        assert!(matches!(config, Ok(QuantizationConfig::Bitsandbytes(c)) if c.bnb_4bit_quant_type == "nf4"));
    }

    #[test]
    fn other_methods_and_int8_layouts_are_refused_by_name() {
        let cases = [
            (json!({"quant_method": "gptq", "bits": 4}), "gptq"),
            (json!({"quant_method": "bitsandbytes", "load_in_8bit": true}), "LLM.int8"),
            (json!({"quant_method": "compressed-tensors", "format": "pack-quantized"}), "pack-quantized"),
            (
                json!({"quant_method": "compressed-tensors", "format": "float-quantized",
                       "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}}),
                "int4",
            ),
        ];
        for (value, needle) in cases {
            let error = QuantizationConfig::from_value(&value).unwrap_err();
            assert!(matches!(error, PrequantError::Unsupported { .. }), "{error}");
            assert!(error.to_string().contains(needle), "{error}");
        }
    }
}

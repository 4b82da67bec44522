//! A Hugging Face tokenizer as transformers' `PreTrainedTokenizerFast` uses it: `tokenizer.json` through the
//! `tokenizers` crate, plus what `tokenizer_config.json` adds (special token names, the chat template,
//! `clean_up_tokenization_spaces` on decode).

use std::path::Path;

use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: String, message: String },
    #[error("the tokenizer has no `{token}` token")]
    MissingToken { token: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
}

/// `tokenizer.json` with the settings of `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    inner: Tokenizer,
    /// transformers' `clean_up_tokenization_spaces`.
    clean_up_spaces: bool,
    config: serde_json::Value,
}

impl HfTokenizer {
    /// Loads `tokenizer.json`; `tokenizer_config.json` is optional. Truncation and padding configured in the
    /// file are switched off: callers frame and pad sequences themselves.
    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self, TokenizerError> {
        let load_error = |message: String| TokenizerError::Load { path: tokenizer_json.display().to_string(), message };
        let mut inner = Tokenizer::from_file(tokenizer_json).map_err(|e| load_error(e.to_string()))?;
        inner.with_truncation(None).map_err(|e| load_error(e.to_string()))?;
        inner.with_padding(None);
        let config = match tokenizer_config {
            Some(path) => {
                let error = |e: String| TokenizerError::Load { path: path.display().to_string(), message: e };
                let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
                serde_json::from_str(&text).map_err(|e| error(e.to_string()))?
            }
            None => serde_json::Value::Null,
        };
        let clean_up_spaces = config.get("clean_up_tokenization_spaces").and_then(|v| v.as_bool()).unwrap_or(false);
        Ok(HfTokenizer { inner, clean_up_spaces, config })
    }

    pub fn token_id(&self, token: &str) -> Result<u32, TokenizerError> {
        self.inner.token_to_id(token).ok_or_else(|| TokenizerError::MissingToken { token: token.to_string() })
    }

    /// A special token named in `tokenizer_config.json` (`bos_token`, `eos_token`, `pad_token`), as text.
    pub fn special_token(&self, key: &str) -> Option<String> {
        match self.config.get(key)? {
            serde_json::Value::String(token) => Some(token.clone()),
            serde_json::Value::Object(added) => added.get("content")?.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// The chat template kept in `tokenizer_config.json`, if any.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// Ids of `text`; `add_special_tokens` applies the post-processor of `tokenizer.json` (BOS and the like).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding =
            self.inner.encode(text, add_special_tokens).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// `tokenizer.decode(ids, skip_special_tokens=...)`, with transformers' space clean-up when configured.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let text = self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(if self.clean_up_spaces { clean_up_tokenization(&text) } else { text })
    }
}

/// transformers' `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::clean_up_tokenization;

    #[test]
    fn clean_up_removes_spaces_before_punctuation_and_contractions() {
        assert_eq!(clean_up_tokenization("Hello , world ! It 's fine ."), "Hello, world! It's fine.");
    }
}

//! The NLLB tokenizer from `tokenizer.json`, framed as transformers' `NllbTokenizerFast` does in its default
//! (non-legacy) mode: source ids are `[src_lang] + pieces + [</s>]`, and the target language is the token
//! forced right after the decoder start token (`forced_bos_token_id`).

use std::path::Path;

use tokenizers::Tokenizer;
use vislingo_proto::Lang;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: String, message: String },
    #[error("the tokenizer of this model has no token for {lang} ({name}); it is not an NLLB-200 tokenizer or does not cover that language")]
    UnknownLanguage { lang: &'static str, name: &'static str },
    #[error("the tokenizer has no `{token}` token")]
    MissingSpecial { token: &'static str },
    #[error("tokenization failed: {0}")]
    Encode(String),
}

/// `tokenizer.json` plus the framing NLLB needs.
#[derive(Debug, Clone)]
pub struct NllbTokenizer {
    inner: Tokenizer,
    eos_id: u32,
    /// transformers' `clean_up_tokenization_spaces` from `tokenizer_config.json`.
    clean_up_spaces: bool,
}

impl NllbTokenizer {
    /// Loads `tokenizer.json`; `tokenizer_config.json` (optional) says whether decoding cleans up spaces.
    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self, TokenizerError> {
        let load_error = |message: String| TokenizerError::Load { path: tokenizer_json.display().to_string(), message };
        let mut inner = Tokenizer::from_file(tokenizer_json).map_err(|e| load_error(e.to_string()))?;
        inner.with_truncation(None).map_err(|e| load_error(e.to_string()))?;
        inner.with_padding(None);
        let clean_up_spaces = match tokenizer_config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| load_error(format!("{}: {e}", path.display())))?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| load_error(format!("{}: {e}", path.display())))?;
                json.get("clean_up_tokenization_spaces").and_then(|v| v.as_bool()).unwrap_or(false)
            }
            None => false,
        };
        let eos_id = inner.token_to_id("</s>").ok_or(TokenizerError::MissingSpecial { token: "</s>" })?;
        Ok(NllbTokenizer { inner, eos_id, clean_up_spaces })
    }

    /// The id of a language token such as `fra_Latn`.
    pub fn lang_id(&self, lang: Lang) -> Result<u32, TokenizerError> {
        self.inner
            .token_to_id(lang.code())
            .ok_or(TokenizerError::UnknownLanguage { lang: lang.code(), name: lang.name() })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Encoder input ids: `[src_lang] + pieces + [</s>]`.
    pub fn encode(&self, text: &str, src: Lang) -> Result<Vec<u32>, TokenizerError> {
        let lang = self.lang_id(src)?;
        let encoding = self.inner.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        ids.push(lang);
        ids.extend_from_slice(encoding.get_ids());
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Text of generated ids, special tokens (language codes, `</s>`, padding) skipped, as
    /// `tokenizer.decode(ids, skip_special_tokens=True)`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text = self.inner.decode(ids, true).map_err(|e| TokenizerError::Encode(e.to_string()))?;
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

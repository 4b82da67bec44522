//! The NLLB tokenizer framed as transformers' `NllbTokenizerFast` does in its default (non-legacy) mode:
//! source ids are `[src_lang] + pieces + [</s>]`, and the target language is the token forced right after
//! the decoder start token (`forced_bos_token_id`). The `tokenizer.json` post-processor is not used: it is
//! frozen to the language the file was saved with.

use std::path::Path;

use vislingo_proto::Lang;

use crate::models::tokenizer::HfTokenizer;
pub use crate::models::tokenizer::TokenizerError;

/// `tokenizer.json` plus the framing NLLB needs.
#[derive(Debug, Clone)]
pub struct NllbTokenizer {
    inner: HfTokenizer,
    eos_id: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("the tokenizer of this model has no token for {lang} ({name}); it is not an NLLB-200 tokenizer or does not cover that language")]
pub struct UnknownLanguage {
    pub lang: &'static str,
    pub name: &'static str,
}

impl NllbTokenizer {
    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self, TokenizerError> {
        let inner = HfTokenizer::from_files(tokenizer_json, tokenizer_config)?;
        let eos_id = inner.token_id("</s>")?;
        Ok(NllbTokenizer { inner, eos_id })
    }

    /// The id of a language token such as `fra_Latn`.
    pub fn lang_id(&self, lang: Lang) -> Result<u32, UnknownLanguage> {
        self.inner.token_id(lang.code()).map_err(|_| UnknownLanguage { lang: lang.code(), name: lang.name() })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Encoder input ids: `[src_lang] + pieces + [</s>]`.
    pub fn encode(&self, text: &str, src: Lang) -> Result<Vec<u32>, crate::models::nllb::TranslateError> {
        let lang = self.lang_id(src)?;
        let pieces = self.inner.encode(text, false)?;
        let mut ids = Vec::with_capacity(pieces.len() + 2);
        ids.push(lang);
        ids.extend_from_slice(&pieces);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Text of generated ids, special tokens (language codes, `</s>`, padding) skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, true)
    }
}

//! Model ports and what they share: where weights come from (`hub`), and the decoding loop (`generate`).

pub mod attention;
pub mod chat_template;
pub mod gated;
pub mod generate;
pub mod hub;
pub mod image_processing;
pub mod linear;
pub mod llava_next;
pub mod mllama;
pub mod nllb;
pub mod prequant;
pub mod profile;
pub mod quant;
pub mod tokenizer;
pub mod vision_chat;
pub mod vlm;

//! Model ports and what they share: where weights come from (`hub`), and the decoding loop (`generate`).

pub mod generate;
pub mod hub;
pub mod nllb;

//! LLaVA-NeXT-Video (transformers `LlavaNextVideoForConditionalGeneration`): a CLIP ViT tower, a GELU projector,
//! spatially pooled video frames, anyres still images, and a Llama decoder, loaded by the Hub's tensor names
//! (`vision_tower.*`, `multi_modal_projector.*`, `image_newline`, `language_model.*`). Paper: "LLaVA-NeXT: A Strong
//! Zero-shot Video Understanding Model" (2024), <https://llava-vl.github.io/blog/2024-04-30-llava-next-video/>.

pub mod chat;
pub mod config;
pub mod model;
pub mod processor;
pub mod text;
pub mod vision;

pub use chat::{Answer, LlavaNextChat, Media, MediaPrompt};
pub use config::LlavaNextVideoConfig;
pub use model::LlavaNextVideo;
pub use processor::{LlavaNextProcessor, ProcessedImage, ProcessedVideo};
pub use text::{LlamaModel, LlamaSession};

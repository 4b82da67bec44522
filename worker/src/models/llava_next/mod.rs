//! LLaVA-NeXT-Video (transformers `LlavaNextVideoForConditionalGeneration`): a CLIP ViT tower, a GELU projector,
//! spatially pooled video frames, anyres still images, and a Llama decoder, loaded by the Hub's tensor names
//! (`vision_tower.*`, `multi_modal_projector.*`, `image_newline`, `language_model.*`). Paper: "LLaVA-NeXT: A Strong
//! Zero-shot Video Understanding Model" (2024), <https://llava-vl.github.io/blog/2024-04-30-llava-next-video/>.
//!
//! # Two transformers 4.46.3 behaviours vislingo does not reproduce
//! Both concern inputs transformers cannot answer at all; on every input it answers, vislingo's placeholders,
//! merge and answers are transformers' (the parity tests), and a prompt answered in a batch gets the answer it
//! gets alone.
//! 1. **A batch's videos counted with the first video's frames.** `LlavaNextVideoProcessor.__call__` expands
//!    every `<video>` of the batch to `(h // patch) * (w // patch) // 4 * frames` tokens with `frames` taken from
//!    `pixel_values_videos[0]`. All frames are resized and cropped to the same size, so the count can only be
//!    wrong when the batch's videos have different frame counts, and then the video processor cannot stack them:
//!    `BatchFeature(..., tensor_type="pt")` raises "Unable to create tensor" before the model runs. One video per
//!    prompt, as the worker asks, always gets the right count. vislingo counts each video with its own frames
//!    ([`LlavaNextProcessor::video_tokens`]), which is what transformers gives each of those videos alone.
//! 2. **The legacy merge below `video_seq_length`.** `LlavaNextVideoForConditionalGeneration.forward` takes its
//!    deprecated legacy path ("will throw an error in v4.47") when the batch's largest `<video>` count is below
//!    `config.video_seq_length` (default 288, which the 7B's config keeps) and videos are given, or likewise for
//!    images and `image_seq_length` (576; an anyres image always has more). With the processor's expanded
//!    prompts, `_merge_input_ids_with_image_features` then finds 144 `<video>` tokens for one video and raises
//!    "Number of image tokens in input_ids (144) different from num_images (1)". On the 7B (144 tokens a frame)
//!    that is every prompt about a one-frame clip: a video file with a single frame, or `--frames 1`; two frames
//!    make 288 and take the normal path. vislingo merges expanded placeholders the normal way for every clip
//!    ([`LlavaNextVideo::merge_features`]), as transformers does for clips of two frames or more.
//!
//! Both failures reproduce with transformers 4.46.3 on the tiny fixture (16 tokens a frame) once its
//! `video_seq_length` is set to 32, the 7B's proportion: one frame raises the ValueError above, two frames answer,
//! and a 4-frame and a 2-frame clip in one `processor(...)` call raise "Unable to create tensor".

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

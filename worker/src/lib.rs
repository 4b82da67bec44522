//! vislingo worker library: model ports (candle), decoding, media and the job pipeline.
//! The `worker` binary (src/main.rs) is a thin CLI over this crate.

pub mod cli;
pub mod frames;
pub mod media;
pub mod models;
pub mod pipeline;
pub mod run;
pub mod tasks;

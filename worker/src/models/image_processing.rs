//! What the ports of transformers' image processors share: reading `preprocessor_config.json`, the filter and
//! mean/std checks of `validate_preprocess_arguments`, and `rescale` + `normalize` of one uint8 sample with the
//! Python arithmetic (`float64(x) * factor` cast to float32, then `(x - mean) / std` in float32).

use std::path::Path;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::media::pil::{Filter, PilError};
use crate::media::MediaError;

#[derive(Debug, Error)]
pub enum ProcessorError {
    #[error("{path}: cannot read the image processor config: {source}")]
    ConfigRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid image processor config: {source}")]
    ConfigJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {processor} config: {message}")]
    Config { processor: &'static str, message: String },
    #[error("a video needs at least one frame, all of one size (frame {frame} is {got_w}x{got_h}, the first {w}x{h})")]
    Frames { frame: usize, got_w: usize, got_h: usize, w: usize, h: usize },
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Resize(#[from] PilError),
}

/// Reads and parses a processor config file.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ProcessorError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ProcessorError::ConfigRead { path: path.display().to_string(), source })?;
    serde_json::from_str(&text)
        .map_err(|source| ProcessorError::ConfigJson { path: path.display().to_string(), source })
}

/// `image_mean` / `image_std` may be one number (applied to every channel) or a list.
pub fn float_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum FloatOrList {
        One(f64),
        Many(Vec<f64>),
    }
    Ok(match FloatOrList::deserialize(d)? {
        FloatOrList::One(v) => vec![v; 3],
        FloatOrList::Many(v) => v,
    })
}

/// The Pillow filter of `resample`; NEAREST is refused (only the convolution filters are ported).
pub fn convolution_filter(resample: u32, processor: &'static str) -> Result<Filter, ProcessorError> {
    match Filter::from_pil(resample) {
        Some(Filter::Nearest) | None => Err(ProcessorError::Config {
            processor,
            message: format!("`resample` {resample} is not supported (use a Pillow convolution filter, 1-5)"),
        }),
        Some(filter) => Ok(filter),
    }
}

/// `rescale` then `normalize` of uint8 samples, as the processors apply them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelNormalizer {
    rescale_factor: Option<f64>,
    mean_std: Option<([f32; 3], [f32; 3])>,
}

impl PixelNormalizer {
    /// `rescale_factor` when `do_rescale`; `mean` / `std` (3 values, std non-zero) when `do_normalize`.
    pub fn new(
        rescale_factor: Option<f64>,
        mean_std: Option<(&[f64], &[f64])>,
        processor: &'static str,
    ) -> Result<Self, ProcessorError> {
        let three = |name: &str, v: &[f64]| -> Result<[f32; 3], ProcessorError> {
            match v {
                [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
                _ => Err(ProcessorError::Config {
                    processor,
                    message: format!("`{name}` must have 3 values (RGB), got {}", v.len()),
                }),
            }
        };
        let mean_std = match mean_std {
            Some((mean, std)) => {
                let (mean, std) = (three("image_mean", mean)?, three("image_std", std)?);
                if std.contains(&0.0) {
                    return Err(ProcessorError::Config { processor, message: "`image_std` must not contain 0".into() });
                }
                Some((mean, std))
            }
            None => None,
        };
        Ok(PixelNormalizer { rescale_factor, mean_std })
    }

    /// The processed value of sample `v` of channel `c`.
    pub fn value(&self, v: u8, c: usize) -> f32 {
        let mut x = match self.rescale_factor {
            Some(factor) => (v as f64 * factor) as f32,
            None => v as f32,
        };
        if let Some((mean, std)) = &self.mean_std {
            x = (x - mean[c]) / std[c];
        }
        x
    }
}

//! Where a model's files come from: a local folder, or a Hugging Face Hub repo resolved through `hf-hub`
//! (its cache first, honouring `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`, then a download).
//! Also turns the weight files found there (safetensors, single or sharded, or `pytorch_model.bin`) into a
//! candle `VarBuilder` that reaches tensors by their Hub names (dequantizing pre-quantized ones, `prequant`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use hf_hub::{Repo, RepoType};

use crate::models::prequant::{self, PrequantError, QuantizationConfig};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model folder {path} does not exist; pass a Hugging Face repo id (e.g. facebook/nllb-200-distilled-600M) or a folder holding config.json and the weights")]
    MissingFolder { path: PathBuf },
    #[error("{file} is missing from model {model}")]
    MissingFile { model: String, file: String },
    #[error("{file} of {repo}@{revision} is not in the Hugging Face cache at {cache} and HF_HUB_OFFLINE is set; download it once with network access, or point --model at a local folder")]
    NotCachedOffline { repo: String, revision: String, file: String, cache: PathBuf },
    #[error("cannot download {file} of {repo}@{revision} from the Hugging Face Hub: {source}")]
    Download {
        repo: String,
        revision: String,
        file: String,
        #[source]
        source: Box<hf_hub::api::sync::ApiError>,
    },
    #[error(
        "model {model} has no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )]
    NoWeights { model: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Boxed: the pre-quantization errors are large and `HubError` travels in every loader's `Result`.
    #[error(transparent)]
    Prequant(Box<PrequantError>),
    #[error("cannot load weights from {path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

impl From<PrequantError> for HubError {
    fn from(error: PrequantError) -> HubError {
        HubError::Prequant(Box::new(error))
    }
}

/// A model to load: a local folder or a Hub repo at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub { repo: String, revision: String },
}

impl ModelSource {
    /// A path that exists (or looks like a path: starts with `.`, `/` or `~`) is a folder; anything else is a
    /// Hub repo id.
    pub fn parse(spec: &str, revision: Option<&str>) -> ModelSource {
        let path = Path::new(spec);
        let looks_like_path = spec.starts_with('.') || spec.starts_with('/') || spec.starts_with('~');
        if path.exists() || looks_like_path || spec.split('/').count() > 2 {
            ModelSource::Local(path.to_path_buf())
        } else {
            ModelSource::Hub { repo: spec.to_string(), revision: revision.unwrap_or("main").to_string() }
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Local(path) => write!(f, "{}", path.display()),
            ModelSource::Hub { repo, revision } if revision == "main" => write!(f, "{repo}"),
            ModelSource::Hub { repo, revision } => write!(f, "{repo}@{revision}"),
        }
    }
}

/// Resolves file names of one model to local paths, downloading from the Hub when allowed.
#[derive(Debug, Clone)]
pub struct ModelRepo {
    source: ModelSource,
    cache_dir: PathBuf,
    offline: bool,
}

impl ModelRepo {
    pub fn open(source: ModelSource) -> Result<ModelRepo, HubError> {
        if let ModelSource::Local(path) = &source {
            if !path.is_dir() {
                return Err(HubError::MissingFolder { path: path.clone() });
            }
        }
        Ok(ModelRepo { source, cache_dir: hub_cache_dir(), offline: hub_offline() })
    }

    /// Overrides the Hub cache folder (tests, and `--hf-cache`).
    pub fn with_cache_dir(mut self, cache_dir: PathBuf) -> ModelRepo {
        self.cache_dir = cache_dir;
        self
    }

    pub fn with_offline(mut self, offline: bool) -> ModelRepo {
        self.offline = offline;
        self
    }

    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// The local path of `file`, or `MissingFile`.
    pub fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        self.find(file)?.ok_or_else(|| HubError::MissingFile { model: self.source.to_string(), file: file.into() })
    }

    /// The local path of `file`, `None` if the model does not have it.
    pub fn find(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
        match &self.source {
            ModelSource::Local(dir) => {
                let path = dir.join(file);
                Ok(path.is_file().then_some(path))
            }
            ModelSource::Hub { repo, revision } => {
                if let Some(path) = self.cached(repo, revision, file) {
                    return Ok(Some(path));
                }
                if self.offline {
                    // Offline, a file absent from the cache may simply not exist in the repo (optional files);
                    // callers that need it turn `None` into an error naming the cache.
                    return Ok(None);
                }
                self.download(repo, revision, file)
            }
        }
    }

    /// Like `get`, with an error that explains offline mode when the file is not cached.
    pub fn require(&self, file: &str) -> Result<PathBuf, HubError> {
        match (&self.source, self.find(file)?) {
            (_, Some(path)) => Ok(path),
            (ModelSource::Hub { repo, revision }, None) if self.offline => Err(HubError::NotCachedOffline {
                repo: repo.clone(),
                revision: revision.clone(),
                file: file.into(),
                cache: self.cache_dir.clone(),
            }),
            _ => Err(HubError::MissingFile { model: self.source.to_string(), file: file.into() }),
        }
    }

    /// A file in the Hub cache layout: `models--org--name/snapshots/<commit>/<file>`, where the commit is
    /// read from `refs/<revision>`, or is the revision itself when it is a commit hash.
    fn cached(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let cache_repo = hf_hub::Cache::new(self.cache_dir.clone()).repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        if let Some(path) = cache_repo.get(file) {
            return Some(path);
        }
        let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
        if is_commit {
            let folder = format!("models--{}", repo.replace('/', "--"));
            let path = self.cache_dir.join(folder).join("snapshots").join(revision).join(file);
            return path.is_file().then_some(path);
        }
        None
    }

    fn download(&self, repo: &str, revision: &str, file: &str) -> Result<Option<PathBuf>, HubError> {
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(self.cache_dir.clone())).with_progress(false);
        if token.is_some() {
            builder = builder.with_token(token);
        }
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        let download_error = |source| HubError::Download {
            repo: repo.into(),
            revision: revision.into(),
            file: file.into(),
            source: Box::new(source),
        };
        let api = builder.build().map_err(download_error)?;
        let handle = api.repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string()));
        match handle.get(file) {
            Ok(path) => Ok(Some(path)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(download_error(e)),
        }
    }
}

/// A 404 means the repo does not have the file (an optional file such as `generation_config.json`).
/// hf-hub boxes ureq's error without re-exporting its type, so the status is read from the message.
fn is_not_found(error: &hf_hub::api::sync::ApiError) -> bool {
    matches!(error, hf_hub::api::sync::ApiError::RequestError(_)) && error.to_string().contains("status code 404")
}

/// The Hub cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    hf_hub::Cache::from_env().path().clone()
}

/// `HF_HUB_OFFLINE=1` (or `true`/`yes`) forbids downloads, as in huggingface_hub.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The weight files of a model, in the order of preference transformers uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    Safetensors(Vec<PathBuf>),
    Pytorch(PathBuf),
}

impl WeightFiles {
    pub fn locate(repo: &ModelRepo) -> Result<WeightFiles, HubError> {
        if let Some(single) = repo.find("model.safetensors")? {
            return Ok(WeightFiles::Safetensors(vec![single]));
        }
        if let Some(index) = repo.find("model.safetensors.index.json")? {
            let shards = shard_names(&index)?;
            let paths = shards.iter().map(|name| repo.require(name)).collect::<Result<Vec<_>, _>>()?;
            return Ok(WeightFiles::Safetensors(paths));
        }
        if let Some(bin) = repo.find("pytorch_model.bin")? {
            return Ok(WeightFiles::Pytorch(bin));
        }
        Err(HubError::NoWeights { model: repo.source().to_string() })
    }

    /// A `VarBuilder` over these files; tensors are converted to `dtype` as they are read.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>, HubError> {
        match self {
            WeightFiles::Safetensors(paths) => {
                for path in paths {
                    check_safetensors_header(path)?;
                }
                // SAFETY: the files are memory-mapped read-only; vislingo never writes model files while serving.
                unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }
                    .map_err(|source| HubError::Weights { path: paths[0].clone(), source })
            }
            WeightFiles::Pytorch(path) => VarBuilder::from_pth(path, dtype, device)
                .map_err(|source| HubError::Weights { path: path.clone(), source }),
        }
    }

    /// `var_builder` for a checkpoint whose `config.json` may have a `quantization_config` (`quantization`):
    /// weights stored pre-quantized (bitsandbytes 4-bit, compressed-tensors float8) come out dequantized to
    /// `dtype`, everything else as `var_builder` gives it; `None` is `var_builder`.
    pub fn var_builder_with(
        &self,
        quantization: Option<&QuantizationConfig>,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>, HubError> {
        let Some(config) = quantization else {
            return self.var_builder(dtype, device);
        };
        match self {
            WeightFiles::Safetensors(paths) => {
                for path in paths {
                    check_safetensors_header(path)?;
                }
                Ok(prequant::var_builder(paths, config, dtype, device)?)
            }
            WeightFiles::Pytorch(path) => Err(PrequantError::NotSafetensors { path: path.clone() }.into()),
        }
    }
}

/// Shard file names listed in a `model.safetensors.index.json`, sorted and deduplicated.
fn shard_names(index: &Path) -> Result<BTreeSet<String>, HubError> {
    let text = std::fs::read_to_string(index).map_err(|source| HubError::Read { path: index.into(), source })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| HubError::Json { path: index.into(), source })?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| HubError::Json {
        path: index.into(),
        source: serde::de::Error::custom("no `weight_map` object"),
    })?;
    Ok(map.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
}

/// Reads a safetensors header so that a truncated or corrupt file is reported with its path before mmap.
fn check_safetensors_header(path: &Path) -> Result<(), HubError> {
    use std::io::Read;
    let corrupt = |why: String| HubError::Weights {
        path: path.into(),
        source: candle_core::Error::Msg(format!("not a safetensors file ({why})")),
    };
    let mut file = std::fs::File::open(path).map_err(|source| HubError::Read { path: path.into(), source })?;
    let size = file.metadata().map_err(|source| HubError::Read { path: path.into(), source })?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| corrupt(format!("{size} bytes, too short")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len == 0 || header_len.saturating_add(8) > size {
        return Err(corrupt(format!("header length {header_len} but file is {size} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| corrupt(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let data_end = json
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, t)| t.get("data_offsets")?.as_array()?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if 8 + header_len + data_end > size {
        return Err(corrupt(format!(
            "truncated: tensors end at byte {} but file is {size} bytes",
            8 + header_len + data_end
        )));
    }
    Ok(())
}

/// Reads and parses a JSON file of the model (config.json, generation_config.json, ...).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, HubError> {
    let text = std::fs::read_to_string(path).map_err(|source| HubError::Read { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| HubError::Json { path: path.into(), source })
}

//! `batches/<batch>.json`: what a batch was asked for and what its source held, written by `enqueue` (and
//! rewritten by a re-run) so that `status` and `collect` know the batch's size, request and queues.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use vislingo_fleet::Storage;
use vislingo_proto::{keys, AssetResult, Lang};

/// Bumped when a field changes meaning.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;
/// Manifests and result records are small; anything larger is not ours.
pub const RECORD_LIMIT_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchManifest {
    pub schema_version: u32,
    pub batch: String,
    /// `s3://bucket/prefix` listed.
    pub source: String,
    pub bucket: String,
    pub prefix: String,
    pub tasks: Vec<String>,
    pub langs: Vec<Lang>,
    /// Route per asset kind (`image` -> `mllama`).
    pub routes: BTreeMap<String, String>,
    /// Assets of the source (images and videos) at the last enqueue: the batch's size.
    pub assets: u64,
    pub images: u64,
    pub videos: u64,
    /// Unix seconds of the first and of the last enqueue.
    pub created_at: f64,
    pub updated_at: f64,
    /// Jobs published over all enqueues of the batch.
    pub published: u64,
}

impl BatchManifest {
    pub async fn read(storage: &Storage, bucket: &str, batch: &str) -> Result<Option<BatchManifest>> {
        let key = keys::manifest_key(batch);
        let Some(bytes) = storage.get_if_exists(bucket, &key, RECORD_LIMIT_BYTES).await? else { return Ok(None) };
        let manifest =
            serde_json::from_slice(&bytes).with_context(|| format!("s3://{bucket}/{key}: not a manifest"))?;
        Ok(Some(manifest))
    }

    pub async fn write(&self, storage: &Storage) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        storage.put_json(&self.bucket, &keys::manifest_key(&self.batch), bytes).await?;
        Ok(())
    }
}

/// Every result record of a batch (fetched `concurrency` at a time), keyed by asset; unreadable ones are logged
/// and left out.
pub async fn read_results(
    storage: &Storage,
    bucket: &str,
    batch: &str,
    concurrency: usize,
) -> Result<BTreeMap<String, AssetResult>> {
    use futures_util::StreamExt;
    let mut keys_found = Vec::new();
    storage
        .list(bucket, &keys::results_prefix(batch), |page| {
            keys_found.extend(page.into_iter().map(|object| object.key));
        })
        .await?;
    let fetches = futures_util::stream::iter(keys_found.into_iter().map(|key| async move {
        let bytes = storage.get_if_exists(bucket, &key, RECORD_LIMIT_BYTES).await;
        (key, bytes)
    }))
    .buffer_unordered(concurrency.max(1));
    let fetched: Vec<_> = fetches.collect().await;
    let mut records = BTreeMap::new();
    for (key, bytes) in fetched {
        let Some(asset) = keys::asset_of_result_key(batch, &key) else { continue };
        match bytes? {
            None => {}
            Some(bytes) => match serde_json::from_slice::<AssetResult>(&bytes) {
                Ok(record) => {
                    records.insert(asset.to_string(), record);
                }
                Err(error) => tracing::warn!(key, %error, "unreadable result record"),
            },
        }
    }
    Ok(records)
}

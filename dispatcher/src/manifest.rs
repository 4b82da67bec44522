//! `batches/<batch>.json`: what a batch was asked for and what its source held, written by `enqueue` (and
//! rewritten by a re-run) so that `status` and `collect` know the batch's size, request and queues; and the
//! batch's records found by listing `results/<batch>/` (done and failed told apart by key, see
//! `vislingo_proto::keys`), read only where their contents are needed (`collect`).

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use vislingo_fleet::Storage;
use vislingo_proto::keys::{self, RecordKind};
use vislingo_proto::{AssetResult, Lang};

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

/// The assets of a batch by their records, from the keys alone: those with a result record, and those with an
/// error record and no result. One LIST request per 1000 records, none per record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordSets {
    pub done: HashSet<String>,
    pub failed: HashSet<String>,
}

/// Lists `results/<batch>/` and sorts its keys into done and failed assets (an asset with both records is done).
pub async fn list_records(storage: &Storage, bucket: &str, batch: &str) -> Result<RecordSets> {
    let mut sets = RecordSets::default();
    storage
        .list(bucket, &keys::results_prefix(batch), |page| {
            for object in page {
                match keys::parse_record_key(batch, &object.key) {
                    Some((asset, RecordKind::Result)) => {
                        sets.failed.remove(asset);
                        sets.done.insert(asset.to_string());
                    }
                    Some((asset, RecordKind::Error)) if !sets.done.contains(asset) => {
                        sets.failed.insert(asset.to_string());
                    }
                    _ => {}
                }
            }
        })
        .await
        .with_context(|| format!("cannot list the records of batch {batch} in s3://{bucket}"))?;
    Ok(sets)
}

/// Done and failed counts of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    pub done: u64,
    pub failed: u64,
}

/// Counts a batch's records from their keys alone, in constant memory but for the failures: ListObjectsV2 returns
/// keys in order and an asset's error record sorts before its result ([`keys`]), so a result met in the listing
/// cancels the error seen before it. Were a server to list out of order, the remaining error records are checked
/// for a result with one HEAD each.
pub async fn count_records(storage: &Storage, bucket: &str, batch: &str, concurrency: usize) -> Result<RecordCounts> {
    use futures_util::StreamExt;
    let mut done = 0u64;
    let mut failed: HashSet<String> = HashSet::new();
    let mut previous: Option<String> = None;
    let mut in_order = true;
    storage
        .list(bucket, &keys::results_prefix(batch), |page| {
            for object in page {
                if previous.as_ref().is_some_and(|p| *p >= object.key) {
                    in_order = false;
                }
                match keys::parse_record_key(batch, &object.key) {
                    Some((asset, RecordKind::Result)) => {
                        done += 1;
                        failed.remove(asset);
                    }
                    Some((asset, RecordKind::Error)) => {
                        failed.insert(asset.to_string());
                    }
                    None => {}
                }
                previous = Some(object.key);
            }
        })
        .await
        .with_context(|| format!("cannot list the records of batch {batch} in s3://{bucket}"))?;
    if !in_order {
        tracing::warn!(batch, errors = failed.len(), "the storage listed out of key order: checking error records");
        let heads = futures_util::stream::iter(failed.iter().map(|asset| async move {
            (asset.clone(), storage.head_metadata(bucket, &keys::result_key(batch, asset)).await)
        }))
        .buffer_unordered(concurrency.max(1));
        let checked: Vec<_> = heads.collect().await;
        for (asset, head) in checked {
            if head?.is_some() {
                failed.remove(&asset);
            }
        }
    }
    Ok(RecordCounts { done, failed: failed.len() as u64 })
}

/// Every record of a batch (fetched `concurrency` at a time), keyed by asset: its result record, or its error
/// record when it has no result (the error record is then not fetched). Unreadable ones are logged and left out.
pub async fn read_results(
    storage: &Storage,
    bucket: &str,
    batch: &str,
    concurrency: usize,
) -> Result<BTreeMap<String, AssetResult>> {
    use futures_util::StreamExt;
    let sets = list_records(storage, bucket, batch).await?;
    let wanted = sets
        .done
        .into_iter()
        .map(|asset| (keys::result_key(batch, &asset), asset))
        .chain(sets.failed.into_iter().map(|asset| (keys::error_key(batch, &asset), asset)));
    let fetches = futures_util::stream::iter(wanted.map(|(key, asset)| async move {
        let bytes = storage.get_if_exists(bucket, &key, RECORD_LIMIT_BYTES).await;
        (key, asset, bytes)
    }))
    .buffer_unordered(concurrency.max(1));
    let fetched: Vec<_> = fetches.collect().await;
    let mut records = BTreeMap::new();
    for (key, asset, bytes) in fetched {
        match bytes? {
            None => {}
            Some(bytes) => match serde_json::from_slice::<AssetResult>(&bytes) {
                Ok(record) => {
                    records.insert(asset, record);
                }
                Err(error) => tracing::warn!(key, %error, "unreadable result record"),
            },
        }
    }
    Ok(records)
}

//! `dispatcher collect --html DIR`: the batch's records as a static HTML gallery (`vislingo-gallery`). Image
//! thumbnails are made from the assets fetched from the bucket; videos get a placeholder that says why, since
//! the dispatcher has no video decoder (the worker's FFmpeg sampling stays out of it, as the models do): their
//! cards list the frame numbers the model saw, and `worker run --html` shows the frames themselves.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use vislingo_fleet::storage::with_retries;
use vislingo_fleet::{Storage, StorageError};
use vislingo_gallery::{thumbnail_from_encoded, Gallery, GalleryReport, GalleryWriter, Preview};
use vislingo_proto::{AssetKind, AssetResult};

use crate::manifest::BatchManifest;

/// What the gallery's picture slots hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Thumbnails {
    /// Fetch every image asset from the bucket and make its thumbnail.
    Fetch,
    /// No pictures (nothing is downloaded): every card shows a placeholder.
    None,
}

/// How the gallery's pictures are made.
#[derive(Debug, Clone)]
pub struct HtmlOptions {
    pub thumbnails: Thumbnails,
    /// Image assets larger than this are not downloaded for a thumbnail.
    pub max_asset_bytes: u64,
    /// Downloads in flight at once.
    pub concurrency: usize,
}

/// Writes the gallery of `records` (sorted by asset) into `dir`.
pub async fn write_html(
    storage: &Storage,
    bucket: &str,
    batch: &str,
    manifest: Option<&BatchManifest>,
    records: &[AssetResult],
    dir: &Path,
    options: &HtmlOptions,
) -> Result<GalleryReport> {
    let mut writer = GalleryWriter::create(dir)?;
    let prefix = manifest.map(|m| m.prefix.as_str());
    // Downloads overlap freely; decoding (a large photo's pixels take hundreds of MB) runs a CPU's worth at once.
    let decoding = Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let decoding = &decoding;
    let mut previews = futures_util::stream::iter(
        records
            .iter()
            .map(|record| async move { (record, preview(storage, bucket, prefix, record, options, decoding).await) }),
    )
    .buffer_unordered(options.concurrency.max(1));
    while let Some((record, preview)) = previews.next().await {
        writer.add_preview(&record.asset, preview)?;
    }
    let title = format!("batch {batch}");
    let source = format!("s3://{bucket}/{}", vislingo_proto::keys::results_prefix(batch));
    let gallery = Gallery { title: &title, source: &source, records, expected_assets: manifest.map(|m| m.assets) };
    Ok(writer.finish(&gallery).with_context(|| format!("cannot write the gallery in {}", dir.display()))?)
}

async fn preview(
    storage: &Storage,
    bucket: &str,
    prefix: Option<&str>,
    record: &AssetResult,
    options: &HtmlOptions,
    decoding: &Semaphore,
) -> Preview {
    if record.kind == AssetKind::Video {
        return Preview::Unavailable(
            "the dispatcher does not decode videos (no FFmpeg); `worker run --html` shows the sampled frames".into(),
        );
    }
    if options.thumbnails == Thumbnails::None {
        return Preview::Unavailable("thumbnails were not fetched (--thumbnails none)".into());
    }
    let Some(prefix) = prefix else {
        return Preview::Unavailable("the batch has no manifest, so the asset's object key is unknown".into());
    };
    let bytes = match fetch_asset(storage, bucket, prefix, &record.asset, options.max_asset_bytes).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(asset = %record.asset, %error, "no thumbnail");
            return Preview::Unavailable(error.to_string());
        }
    };
    let _permit = decoding.acquire().await.expect("the semaphore is never closed");
    match tokio::task::spawn_blocking(move || thumbnail_from_encoded(&bytes)).await {
        Ok(Ok(thumbnail)) => Preview::Image(thumbnail),
        Ok(Err(error)) => Preview::Unavailable(error.to_string()),
        Err(error) => Preview::Unavailable(format!("thumbnail task failed: {error}")),
    }
}

/// The asset's bytes: its object key is the listed prefix joined to the asset key (see `enqueue`), with a `/`
/// between them unless the prefix ends with one (tried without it when that object does not exist).
async fn fetch_asset(
    storage: &Storage,
    bucket: &str,
    prefix: &str,
    asset: &str,
    limit: u64,
) -> Result<Vec<u8>, StorageError> {
    let candidates = object_keys(prefix, asset);
    let mut last = None;
    for key in &candidates {
        let fetched = with_retries("get", Duration::from_secs(5), || false, |_| {}, || storage.get(bucket, key, limit));
        match tokio::time::timeout(Duration::from_secs(120), fetched).await {
            Ok(Err(error @ StorageError::NotFound { .. })) => last = Some(error),
            Ok(result) => return result,
            Err(_) => {
                return Err(StorageError::Transient {
                    bucket: bucket.into(),
                    key: key.clone(),
                    operation: "get",
                    message: "no answer within 120 s".into(),
                })
            }
        }
    }
    Err(last.expect("at least one candidate key"))
}

fn object_keys(prefix: &str, asset: &str) -> Vec<String> {
    if prefix.is_empty() || prefix.ends_with('/') {
        vec![format!("{prefix}{asset}")]
    } else {
        vec![format!("{prefix}/{asset}"), format!("{prefix}{asset}")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_object_keys_join_the_listed_prefix() {
        assert_eq!(object_keys("", "a/b.jpg"), ["a/b.jpg"]);
        assert_eq!(object_keys("in/photos/", "b.jpg"), ["in/photos/b.jpg"]);
        assert_eq!(object_keys("in/photos", "b.jpg"), ["in/photos/b.jpg", "in/photosb.jpg"]);
    }
}

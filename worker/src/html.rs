//! `worker run --html DIR`: the folder's result records as a static HTML gallery (`vislingo-gallery`), with a
//! thumbnail per image (decoded as the pipeline decodes it, EXIF orientation applied) and, per video, a mosaic
//! of the frames its record says the model saw (sampled again with the same FFmpeg code; 8 frames when the
//! record has none, e.g. a video the model could not take).

use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;
use vislingo_gallery::{thumbnail_from_rgb, Gallery, GalleryReport, GalleryWriter, Preview, RgbPixels};
use vislingo_proto::asset::Asset;
use vislingo_proto::{AssetKind, AssetResult};

#[cfg(feature = "video")]
use crate::media::video::{SampleOptions, VideoReader};
use crate::media::{decode_file, DecodeOptions, RgbImage};

/// Previews made at once (each holds its decoded pixels until it is encoded).
const PREVIEWS_IN_FLIGHT: usize = 16;

/// Writes the gallery of the records under `out` of the assets listed in `folder` (assets without a record
/// count as missing) into `dir`.
pub fn write_folder_gallery(folder: &Path, out: &Path, assets: &[Asset], dir: &Path) -> Result<GalleryReport> {
    let records: Vec<AssetResult> = assets
        .iter()
        .filter_map(|asset| {
            // A result record, else the error record that stopped the asset (`run.rs` writes one or the other).
            let (path, bytes) = [
                out.join(format!("{}.json", asset.key)),
                out.join(format!("{}{}", asset.key, vislingo_proto::keys::ERROR_SUFFIX)),
            ]
            .into_iter()
            .find_map(|path| std::fs::read(&path).ok().map(|bytes| (path, bytes)))?;
            match serde_json::from_slice::<AssetResult>(&bytes) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "unreadable record left out of the gallery");
                    None
                }
            }
        })
        .collect();
    let mut writer = GalleryWriter::create(dir)?;
    for group in records.chunks(PREVIEWS_IN_FLIGHT) {
        let previews: Vec<Preview> = group.par_iter().map(|record| preview(folder, record)).collect();
        for (record, preview) in group.iter().zip(previews) {
            writer.add_preview(&record.asset, preview)?;
        }
    }
    let title = format!("folder {}", folder.display());
    let source = out.display().to_string();
    let gallery =
        Gallery { title: &title, source: &source, records: &records, expected_assets: Some(assets.len() as u64) };
    Ok(writer.finish(&gallery).with_context(|| format!("cannot write the gallery in {}", dir.display()))?)
}

/// The picture of one record's asset, or why there is none.
pub fn preview(folder: &Path, record: &AssetResult) -> Preview {
    let path = folder.join(&record.asset);
    let made = match record.kind {
        AssetKind::Image => image_preview(&path),
        AssetKind::Video => video_preview(&path, &record.asset, record),
    };
    made.unwrap_or_else(|reason| {
        tracing::debug!(asset = %record.asset, %reason, "no gallery picture");
        Preview::Unavailable(reason)
    })
}

fn image_preview(path: &Path) -> Result<Preview, String> {
    let image = decode_file(path, &DecodeOptions::default()).map_err(|error| error.to_string())?;
    thumbnail_from_rgb(pixels(&image)).map(Preview::Image).map_err(|error| error.to_string())
}

#[cfg(feature = "video")]
fn video_preview(path: &Path, asset: &str, record: &AssetResult) -> Result<Preview, String> {
    let mut reader = VideoReader::open(path, asset).map_err(|error| error.to_string())?;
    let options = SampleOptions::default();
    let seen = record.media.as_ref().and_then(|media| media.video.as_ref()).map(|video| &video.frame_indices);
    let (numbers, frames) = match seen.filter(|numbers| !numbers.is_empty()) {
        Some(numbers) => {
            let wanted: Vec<usize> = numbers.iter().map(|&n| n as usize).collect();
            let (frames, _) = reader.frames_at(&wanted, &options).map_err(|error| error.to_string())?;
            (numbers.clone(), frames)
        }
        None => {
            let sampled = reader.sample(&options).map_err(|error| error.to_string())?;
            (sampled.frame_indices.iter().map(|&n| n as u64).collect(), sampled.frames)
        }
    };
    let frames: Vec<RgbPixels<'_>> = frames.iter().map(pixels).collect();
    let mosaic = vislingo_gallery::frame_mosaic(&frames).map_err(|error| error.to_string())?;
    Ok(Preview::Frames { mosaic, frames: numbers })
}

/// Without the `video` feature the worker decodes no videos, so a video's card says so instead of a picture.
#[cfg(not(feature = "video"))]
fn video_preview(_path: &Path, asset: &str, _record: &AssetResult) -> Result<Preview, String> {
    Err(crate::media::VideoError::Unsupported { asset: asset.to_string() }.to_string())
}

fn pixels(image: &RgbImage) -> RgbPixels<'_> {
    RgbPixels { width: image.width as u32, height: image.height as u32, data: &image.data }
}

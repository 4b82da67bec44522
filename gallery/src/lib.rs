//! A static, self-contained HTML gallery of result records (`dispatcher collect --html DIR`, `worker run --html
//! DIR`): a card per asset with its picture, texts, tags, translations, statistics or error, batch statistics,
//! a search box and pages. It opens from the folder with no server and makes no request outside it.
//!
//! # The folder written
//!
//! | file | what |
//! |---|---|
//! | `index.html`, `gallery.css`, `gallery.js`, `icon.svg` | the page (embedded in this crate, `web/`) |
//! | `data/meta.js` | title, batch statistics, languages and tasks, and per asset its key, kind, failure and tags |
//! | `data/chunk-NNNN.js` | the records and their previews, [`page::CHUNK_SIZE`] a file, loaded as pages need them |
//! | `thumbs/NNNNNN.jpg` | image thumbnails and video frame mosaics |
//!
//! The page loads `meta.js` and the first chunk, shows the first page of [`page::PAGE_SIZE`] cards, and loads
//! other chunks when a page or a search needs them (through `<script>` elements: `fetch` is refused on
//! `file://`). Pictures are `loading="lazy"`. A search matches every word (or `"quoted phrase"`) against the
//! asset key, the tags and every text and translation; `tag:WORD` matches tags only.
//!
//! # Previews
//!
//! The caller makes them, since only it can reach the assets: [`thumbnail_from_encoded`] for an image's bytes,
//! [`thumbnail_from_rgb`] for pixels it decoded, [`frame_mosaic`] for a video's sampled frames, or
//! [`Preview::Unavailable`] with the reason, shown in the picture's place.
//!
//! ```no_run
//! # fn demo(records: &[vislingo_proto::AssetResult]) -> Result<(), vislingo_gallery::GalleryError> {
//! use vislingo_gallery::{Gallery, GalleryWriter, Preview};
//! let mut writer = GalleryWriter::create("gallery/".as_ref())?;
//! for record in records {
//!     let bytes = std::fs::read(&record.asset).unwrap_or_default();
//!     let preview = vislingo_gallery::thumbnail_from_encoded(&bytes)
//!         .map_or_else(|error| Preview::Unavailable(error.to_string()), Preview::Image);
//!     writer.add_preview(&record.asset, preview)?;
//! }
//! let report = writer.finish(&Gallery { title: "photos", source: "./photos", records, expected_assets: None })?;
//! println!("{}", report.index.display());
//! # Ok(()) }
//! ```

pub mod page;
#[cfg(feature = "testing")]
pub mod testing;
pub mod thumbnail;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;
use vislingo_proto::AssetResult;

use self::page::{BatchStats, IndexEntry, Meta, CHUNK_SIZE, PAGE_SIZE};
pub use self::thumbnail::{
    frame_mosaic, thumbnail_from_encoded, thumbnail_from_rgb, RgbPixels, Thumbnail, ThumbnailError,
};

/// The page's files, written as they are.
const STATIC_FILES: &[(&str, &str)] = &[
    ("index.html", include_str!("../web/index.html")),
    ("gallery.css", include_str!("../web/gallery.css")),
    ("gallery.js", include_str!("../web/gallery.js")),
    ("icon.svg", include_str!("../web/icon.svg")),
];
const THUMBS_DIR: &str = "thumbs";
const DATA_DIR: &str = "data";

/// What is shown in an asset's picture slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// An image's thumbnail.
    Image(Thumbnail),
    /// A video's sampled frames as one mosaic ([`frame_mosaic`]), and their frame numbers in order.
    Frames { mosaic: Thumbnail, frames: Vec<u64> },
    /// No picture, and why.
    Unavailable(String),
}

/// The records of one gallery.
#[derive(Debug, Clone, Copy)]
pub struct Gallery<'a> {
    /// The page's heading (`batch photos-2026-11`).
    pub title: &'a str,
    /// Where the records come from (`s3://assets/results/photos-2026-11/`, `./photos`).
    pub source: &'a str,
    /// Shown in this order (callers sort by asset key).
    pub records: &'a [AssetResult],
    /// Assets the batch holds, when known, so that the statistics count the missing ones.
    pub expected_assets: Option<u64>,
}

/// What [`GalleryWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryReport {
    /// `<dir>/index.html`.
    pub index: PathBuf,
    pub records: usize,
    /// Records shown with a picture.
    pub pictures: usize,
    /// Data files (`data/chunk-*.js`).
    pub chunks: usize,
    pub stats: BatchStats,
}

#[derive(Debug, Error)]
pub enum GalleryError {
    #[error("cannot write the gallery file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the gallery folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes a gallery folder: previews first, as the caller makes them ([`GalleryWriter::add_preview`], written
/// to disk at once, so that memory holds none of them), then the page and its data ([`GalleryWriter::finish`]).
#[derive(Debug)]
pub struct GalleryWriter {
    dir: PathBuf,
    /// Asset key -> what the page shows for it.
    previews: HashMap<String, PreviewRef>,
    /// Names the next picture file.
    next_file: usize,
}

/// A preview as the page reads it (`preview` beside each record in the data files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum PreviewRef {
    Image { src: String, width: u32, height: u32 },
    Frames { src: String, width: u32, height: u32, frames: Vec<u64> },
    None { reason: String },
}

/// One entry of a data file.
#[derive(Serialize)]
struct Item<'a> {
    record: &'a AssetResult,
    preview: &'a PreviewRef,
}

impl GalleryWriter {
    /// Creates `dir` (and `thumbs/`, `data/`), removing the picture and data files a previous gallery left there
    /// (only files named as this writer names them; nothing else in `dir` is touched).
    pub fn create(dir: &Path) -> Result<GalleryWriter, GalleryError> {
        for sub in [THUMBS_DIR, DATA_DIR] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|source| GalleryError::Folder { path: path.clone(), source })?;
            let entries = fs::read_dir(&path).map_err(|source| GalleryError::Folder { path: path.clone(), source })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_generated_file(sub, &name) {
                    let file = entry.path();
                    fs::remove_file(&file).map_err(|source| GalleryError::Folder { path: file, source })?;
                }
            }
        }
        Ok(GalleryWriter { dir: dir.to_path_buf(), previews: HashMap::new(), next_file: 0 })
    }

    /// Records the preview of `asset`, writing its picture under `thumbs/`; a second call for the same asset
    /// replaces the first.
    pub fn add_preview(&mut self, asset: &str, preview: Preview) -> Result<(), GalleryError> {
        let mut picture = |thumbnail: &Thumbnail| -> Result<String, GalleryError> {
            let src = format!("{THUMBS_DIR}/{:06}.jpg", self.next_file);
            self.next_file += 1;
            write(&self.dir.join(&src), &thumbnail.jpeg)?;
            Ok(src)
        };
        let reference = match preview {
            Preview::Image(thumbnail) => {
                PreviewRef::Image { src: picture(&thumbnail)?, width: thumbnail.width, height: thumbnail.height }
            }
            Preview::Frames { mosaic, frames } => {
                PreviewRef::Frames { src: picture(&mosaic)?, width: mosaic.width, height: mosaic.height, frames }
            }
            Preview::Unavailable(reason) => PreviewRef::None { reason },
        };
        self.previews.insert(asset.to_string(), reference);
        Ok(())
    }

    /// Writes the page, its data files and `meta.js`; records without a preview show "no preview".
    pub fn finish(self, gallery: &Gallery<'_>) -> Result<GalleryReport, GalleryError> {
        let records = gallery.records;
        let (langs, tasks) = page::langs_and_tasks(records);
        let stats = BatchStats::new(records, gallery.expected_assets);
        let missing = PreviewRef::None { reason: "no preview was made for this asset".to_string() };
        let chunks = records.len().div_ceil(CHUNK_SIZE);
        let mut pictures = 0;
        for (number, chunk) in records.chunks(CHUNK_SIZE).enumerate() {
            let items: Vec<Item<'_>> = chunk
                .iter()
                .map(|record| {
                    let preview = self.previews.get(&record.asset).unwrap_or(&missing);
                    pictures += usize::from(!matches!(preview, PreviewRef::None { .. }));
                    Item { record, preview }
                })
                .collect();
            let json = page::script_safe_json(serde_json::to_string(&items).expect("records serialize"));
            let path = self.dir.join(DATA_DIR).join(chunk_file_name(number));
            write(&path, page::chunk_script(number, &json).as_bytes())?;
        }
        let meta = Meta {
            title: gallery.title,
            source: gallery.source,
            generated_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            stats: stats.clone(),
            langs,
            tasks,
            count: records.len(),
            chunk_size: CHUNK_SIZE,
            chunks,
            page_size: PAGE_SIZE,
            index: records.iter().map(IndexEntry::new).collect(),
        };
        let json = page::script_safe_json(serde_json::to_string(&meta).expect("meta serializes"));
        write(&self.dir.join(DATA_DIR).join("meta.js"), format!("window.VISLINGO_META={json};\n").as_bytes())?;
        for (name, text) in STATIC_FILES {
            write(&self.dir.join(name), text.as_bytes())?;
        }
        let index = self.dir.join("index.html");
        tracing::info!(path = %index.display(), records = records.len(), pictures, chunks, "gallery written");
        Ok(GalleryReport { index, records: records.len(), pictures, chunks, stats })
    }
}

/// Writes a gallery in one call, asking `preview` for each record's picture.
pub fn write_gallery(
    dir: &Path,
    gallery: &Gallery<'_>,
    mut preview: impl FnMut(&AssetResult) -> Preview,
) -> Result<GalleryReport, GalleryError> {
    let mut writer = GalleryWriter::create(dir)?;
    for record in gallery.records {
        writer.add_preview(&record.asset, preview(record))?;
    }
    writer.finish(gallery)
}

fn chunk_file_name(number: usize) -> String {
    format!("chunk-{number:04}.js")
}

/// Whether `name` in `sub` is a file a gallery writer makes (`thumbs/000012.jpg`, `data/chunk-0003.js`,
/// `data/meta.js`).
fn is_generated_file(sub: &str, name: &str) -> bool {
    let digits = |s: &str, min: usize| s.len() >= min && s.bytes().all(|b| b.is_ascii_digit());
    match sub {
        THUMBS_DIR => name.strip_suffix(".jpg").is_some_and(|stem| digits(stem, 6)),
        DATA_DIR => {
            name == "meta.js"
                || name.strip_prefix("chunk-").and_then(|n| n.strip_suffix(".js")).is_some_and(|n| digits(n, 4))
        }
        _ => false,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), GalleryError> {
    fs::write(path, bytes).map_err(|source| GalleryError::Write { path: path.to_path_buf(), source })
}

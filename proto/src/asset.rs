//! What an asset is: its kind, decided from the extension (the dispatcher routes images and videos to the models
//! that serve them and skips everything else), and the listing of a local folder both dispatcher and worker use.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    Image,
    Video,
}

/// Extensions (lower case) of the still-image formats the worker decodes.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];
/// Extensions (lower case) of the containers the worker opens with FFmpeg.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "wmv", "flv"];

impl AssetKind {
    /// The kind of a key or path by its extension, case-insensitively; `None` for anything else.
    pub fn from_key(key: &str) -> Option<AssetKind> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let (stem, extension) = name.rsplit_once('.')?;
        if stem.is_empty() {
            return None; // a dotfile such as `.jpg` is not an asset
        }
        let extension = extension.to_ascii_lowercase();
        if IMAGE_EXTENSIONS.contains(&extension.as_str()) {
            Some(AssetKind::Image)
        } else if VIDEO_EXTENSIONS.contains(&extension.as_str()) {
            Some(AssetKind::Video)
        } else {
            None
        }
    }
}

impl std::fmt::Display for AssetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AssetKind::Image => "image",
            AssetKind::Video => "video",
        })
    }
}

/// One asset found by a listing: its key (path relative to the listed root, `/`-separated) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub key: String,
    pub kind: AssetKind,
    pub size_bytes: u64,
}

/// Every image and video under `root`, sorted by key; hidden files and folders are skipped.
pub fn list_folder(root: &Path) -> std::io::Result<Vec<Asset>> {
    let mut assets = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| with_path(e, &dir))?;
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, &dir))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let metadata = std::fs::metadata(&path).map_err(|e| with_path(e, &path))?;
            if metadata.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let key = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            if let Some(kind) = AssetKind::from_key(&key) {
                assets.push(Asset { key, kind, size_bytes: metadata.len() });
            }
        }
    }
    assets.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(assets)
}

/// An I/O error that names the path it concerns.
fn with_path(error: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_extension_in_any_case() {
        assert_eq!(AssetKind::from_key("photos/Beach.JPG"), Some(AssetKind::Image));
        assert_eq!(AssetKind::from_key("ads/spot.final.mp4"), Some(AssetKind::Video));
        assert_eq!(AssetKind::from_key("clips/a.WebM"), Some(AssetKind::Video));
    }

    #[test]
    fn other_files_and_dotfiles_are_not_assets() {
        assert_eq!(AssetKind::from_key("notes.txt"), None);
        assert_eq!(AssetKind::from_key("README"), None);
        assert_eq!(AssetKind::from_key("dir/.jpg"), None);
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn lists_images_and_videos_recursively_sorted_skipping_hidden_and_other_files() {
        let root = tempfile::tempdir().unwrap();
        for file in ["b.jpg", "a/clip.MP4", "a/notes.txt", ".hidden/x.png", "a/.y.png", "c/d/e.webp"] {
            let path = root.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"data").unwrap();
        }
        let keys: Vec<(String, AssetKind)> =
            list_folder(root.path()).unwrap().into_iter().map(|a| (a.key, a.kind)).collect();
        assert_eq!(
            keys,
            vec![
                ("a/clip.MP4".to_string(), AssetKind::Video),
                ("b.jpg".to_string(), AssetKind::Image),
                ("c/d/e.webp".to_string(), AssetKind::Image),
            ]
        );
    }

    #[test]
    fn a_missing_folder_is_named_in_the_error() {
        let error = list_folder(Path::new("/no/such/assets")).unwrap_err();
        assert!(error.to_string().contains("/no/such/assets"));
    }
}

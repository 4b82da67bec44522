//! What kind of asset a file is, decided from its extension: the dispatcher routes images and videos to the
//! models that serve them, and skips everything else.

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

//! Lists the assets under a local folder: every image and video file, recursively, in a stable order.
//! (S3 listing joins it with the fleet.)

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vislingo_proto::AssetKind;

/// One asset found by a listing: its key (path relative to the listed root, `/`-separated) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub key: String,
    pub kind: AssetKind,
    pub size_bytes: u64,
}

/// Every image and video under `root`, sorted by key; hidden files and folders are skipped.
pub fn list_folder(root: &Path) -> Result<Vec<Asset>> {
    let mut assets = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let metadata = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(format!("{error:#}").contains("/no/such/assets"));
    }
}

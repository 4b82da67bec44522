//! Where the fleet keeps things in the bucket: `results/<batch>/<asset key>.json` per asset and
//! `batches/<batch>.json`, the batch's manifest written by the dispatcher.

/// Prefix of every result record of `batch`.
pub fn results_prefix(batch: &str) -> String {
    format!("results/{batch}/")
}

/// The result record of `asset` (its key relative to the listed prefix) in `batch`.
pub fn result_key(batch: &str, asset: &str) -> String {
    format!("results/{batch}/{asset}.json")
}

/// The asset a result key names, when `key` is a result key of `batch`.
pub fn asset_of_result_key<'a>(batch: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix("results/")?.strip_prefix(batch)?.strip_prefix('/')?.strip_suffix(".json")
}

/// The manifest of `batch`: what was listed and asked (see the dispatcher's `BatchManifest`).
pub fn manifest_key(batch: &str) -> String {
    format!("batches/{batch}.json")
}

/// A batch name is a path segment: ASCII letters, digits, `.`, `_` and `-`, 1 to 128 characters, not `.`/`..`.
pub fn check_batch_name(name: &str) -> Result<(), String> {
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 128 || !valid_chars || name == "." || name == ".." {
        return Err(format!(
            "batch name `{name}`: expected 1 to 128 ASCII letters, digits, `.`, `_` or `-` (it is a path segment)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_keys_round_trip_to_their_asset() {
        let key = result_key("b-1", "trips/beach.jpg");
        assert_eq!(key, "results/b-1/trips/beach.jpg.json");
        assert_eq!(asset_of_result_key("b-1", &key), Some("trips/beach.jpg"));
        assert_eq!(asset_of_result_key("b-10", &key), None);
        assert_eq!(asset_of_result_key("b", &key), None);
        assert!(key.starts_with(&results_prefix("b-1")));
    }

    #[test]
    fn batch_names_are_single_path_segments() {
        assert!(check_batch_name("2026-11-25_run.1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(check_batch_name(bad).is_err(), "{bad}");
        }
    }
}

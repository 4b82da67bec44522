//! Where the fleet keeps things in the bucket, and how `worker run` names its files: one record per asset, at
//! `results/<batch>/<asset key>.json` when it holds a result and `results/<batch>/<asset key>.error.json` when it
//! holds the error that stopped the asset (`<out>/<key>.json` and `<out>/<key>.error.json` for `worker run`),
//! plus `batches/<batch>.json`, the batch's manifest written by the dispatcher.
//!
//! Done and failed are told apart by the key alone, so a listing counts millions of records without reading one
//! (ListObjectsV2 returns keys and sizes, never metadata). Writing one kind of record removes the other, and
//! where both are seen (between the two steps) the result wins. No asset key ends with `.error`
//! ([`check_asset_key`]): `<a>.error.json` would be both the error record of `a` and the result of `a.error`.
//! An error record sorts before the result of the same asset (`.e` < `.j`), which listings in key order use.

/// Suffix of a result record.
pub const RESULT_SUFFIX: &str = ".json";
/// Suffix of an error record.
pub const ERROR_SUFFIX: &str = ".error.json";

/// Which of an asset's two records a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// The asset was processed: texts, tags, translations.
    Result,
    /// The asset could not be processed: the record's `error` says where and why.
    Error,
}

impl RecordKind {
    /// The kind of a record by whether it holds an error.
    pub fn of(has_error: bool) -> RecordKind {
        if has_error {
            RecordKind::Error
        } else {
            RecordKind::Result
        }
    }

    /// The other kind (what a write of this kind removes).
    pub fn other(self) -> RecordKind {
        match self {
            RecordKind::Result => RecordKind::Error,
            RecordKind::Error => RecordKind::Result,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            RecordKind::Result => RESULT_SUFFIX,
            RecordKind::Error => ERROR_SUFFIX,
        }
    }
}

/// Prefix of every record of `batch`.
pub fn results_prefix(batch: &str) -> String {
    format!("results/{batch}/")
}

/// The record of `asset` (its key relative to the listed prefix) of `kind` in `batch`.
pub fn record_key(batch: &str, asset: &str, kind: RecordKind) -> String {
    format!("results/{batch}/{}", record_file(asset, kind))
}

/// The result record of `asset` in `batch`.
pub fn result_key(batch: &str, asset: &str) -> String {
    record_key(batch, asset, RecordKind::Result)
}

/// The error record of `asset` in `batch`.
pub fn error_key(batch: &str, asset: &str) -> String {
    record_key(batch, asset, RecordKind::Error)
}

/// The record's path relative to the results root (`worker run`'s `--out`, or `results/<batch>/`).
pub fn record_file(asset: &str, kind: RecordKind) -> String {
    format!("{asset}{}", kind.suffix())
}

/// The asset and kind of a record path relative to the results root; `None` for anything else.
pub fn parse_record_file(path: &str) -> Option<(&str, RecordKind)> {
    if let Some(asset) = path.strip_suffix(ERROR_SUFFIX) {
        return (!asset.is_empty()).then_some((asset, RecordKind::Error));
    }
    let asset = path.strip_suffix(RESULT_SUFFIX)?;
    (!asset.is_empty()).then_some((asset, RecordKind::Result))
}

/// The asset and kind of a record key of `batch`; `None` for any other key.
pub fn parse_record_key<'a>(batch: &str, key: &'a str) -> Option<(&'a str, RecordKind)> {
    parse_record_file(key.strip_prefix("results/")?.strip_prefix(batch)?.strip_prefix('/')?)
}

/// The asset a result (not error) record key names, when `key` is one of `batch`.
pub fn asset_of_result_key<'a>(batch: &str, key: &'a str) -> Option<&'a str> {
    parse_record_key(batch, key).filter(|(_, kind)| *kind == RecordKind::Result).map(|(asset, _)| asset)
}

/// An asset key must not end with `.error` (its result would be another asset's error record).
pub fn check_asset_key(asset: &str) -> Result<(), String> {
    if asset.ends_with(".error") {
        return Err(format!(
            "asset `{asset}`: keys ending with `.error` are refused (its record `{asset}.json` would read as the \
             error record of `{}`); rename it",
            &asset[..asset.len() - ".error".len()]
        ));
    }
    Ok(())
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
    fn record_keys_round_trip_to_their_asset_and_kind() {
        let key = result_key("b-1", "trips/beach.jpg");
        assert_eq!(key, "results/b-1/trips/beach.jpg.json");
        assert_eq!(parse_record_key("b-1", &key), Some(("trips/beach.jpg", RecordKind::Result)));
        assert_eq!(asset_of_result_key("b-1", &key), Some("trips/beach.jpg"));
        assert_eq!(asset_of_result_key("b-10", &key), None);
        assert_eq!(asset_of_result_key("b", &key), None);
        assert!(key.starts_with(&results_prefix("b-1")));
        let error = error_key("b-1", "trips/beach.jpg");
        assert_eq!(error, "results/b-1/trips/beach.jpg.error.json");
        assert_eq!(parse_record_key("b-1", &error), Some(("trips/beach.jpg", RecordKind::Error)));
        assert_eq!(asset_of_result_key("b-1", &error), None);
        assert_eq!(parse_record_key("b-1", "results/b-1/notes.txt"), None);
        assert_eq!(parse_record_file(".json"), None);
    }

    #[test]
    fn an_error_record_sorts_before_the_result_of_the_same_asset() {
        for asset in ["a.jpg", "trips/beach.jpg", "z"] {
            assert!(error_key("b", asset) < result_key("b", asset), "{asset}");
        }
    }

    #[test]
    fn asset_keys_ending_with_error_are_refused_as_they_would_shadow_error_records() {
        assert!(check_asset_key("photo.jpg").is_ok());
        assert!(check_asset_key("photo.errors.jpg").is_ok());
        let refused = check_asset_key("photo.jpg.error").unwrap_err();
        assert!(refused.contains("`photo.jpg`"), "{refused}");
        // The collision it prevents.
        assert_eq!(result_key("b", "photo.jpg.error"), error_key("b", "photo.jpg"));
    }

    #[test]
    fn batch_names_are_single_path_segments() {
        assert!(check_batch_name("2026-11-25_run.1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(check_batch_name(bad).is_err(), "{bad}");
        }
    }
}

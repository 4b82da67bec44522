//! What the page reads: `data/meta.js` (title, batch statistics, languages, tasks, and a small search index of
//! every asset) and `data/chunk-NNNN.js` (the records with their previews, [`CHUNK_SIZE`] a file), as JavaScript
//! calls carrying compact JSON, so that the page works from `file://` where `fetch` is refused.

use std::collections::BTreeMap;

use serde::Serialize;
use vislingo_proto::{AssetKind, AssetResult, Lang};

/// Records per data file: the first page needs only the first file.
pub const CHUNK_SIZE: usize = 200;
/// Cards per page.
pub const PAGE_SIZE: usize = 24;

/// `window.VISLINGO_META`.
#[derive(Debug, Serialize)]
pub struct Meta<'a> {
    pub title: &'a str,
    /// Where the records come from (`s3://bucket/results/batch/`, a folder).
    pub source: &'a str,
    /// Unix seconds when the gallery was written.
    pub generated_at: f64,
    pub stats: BatchStats,
    /// Every language of the records, in first-seen order.
    pub langs: Vec<LangInfo>,
    /// Every task of the records, in first-seen order.
    pub tasks: Vec<TaskInfo>,
    pub count: usize,
    pub chunk_size: usize,
    pub chunks: usize,
    pub page_size: usize,
    /// One entry per record, in record order: what the search box can match before the records' chunks load.
    pub index: Vec<IndexEntry<'a>>,
}

/// How the page labels and marks up a language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LangInfo {
    /// FLORES-200 code (`arb_Arab`).
    pub code: &'static str,
    /// English name (`Modern Standard Arabic`).
    pub name: &'static str,
    /// The `lang` attribute (`ar-Arab`).
    pub tag: String,
    /// The `dir` attribute: `rtl` or `ltr`.
    pub dir: &'static str,
}

impl LangInfo {
    pub fn new(lang: Lang) -> LangInfo {
        LangInfo {
            code: lang.code(),
            name: lang.name(),
            tag: lang.bcp47(),
            dir: if lang.is_rtl() { "rtl" } else { "ltr" },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    pub name: String,
    /// The heading shown for the task (`Ad analysis` for `ad`).
    pub label: String,
}

impl TaskInfo {
    pub fn new(name: &str) -> TaskInfo {
        let label = match name {
            "describe" => "Description".to_string(),
            "tags" => "Tags".to_string(),
            "sentiment" => "Sentiment".to_string(),
            "ad" => "Ad analysis".to_string(),
            other => {
                let spaced = other.replace(['_', '-'], " ");
                let mut chars = spaced.chars();
                chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
            }
        };
        TaskInfo { name: name.to_string(), label }
    }
}

/// `[asset key, "image" | "video", failed, English tags]`: enough to count, filter by tag and by failure
/// without the records.
#[derive(Debug, Serialize)]
pub struct IndexEntry<'a>(pub &'a str, pub AssetKind, pub bool, pub Vec<&'a str>);

impl<'a> IndexEntry<'a> {
    pub fn new(record: &'a AssetResult) -> IndexEntry<'a> {
        let tags = record.outputs.iter().filter_map(|output| output.tags.as_ref()).flatten().map(String::as_str);
        IndexEntry(&record.asset, record.kind, record.error.is_some(), tags.collect())
    }
}

/// Figures over every record of the gallery.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchStats {
    pub records: u64,
    pub images: u64,
    pub videos: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failed records per stage (`decode`, `unsupported`, ...).
    pub failed_by_stage: BTreeMap<String, u64>,
    /// Assets the batch holds, when the caller knows (a manifest, a folder listing).
    pub expected_assets: Option<u64>,
    /// `expected_assets` without a record.
    pub missing: Option<u64>,
    /// Models that wrote the records.
    pub models: Vec<String>,
    pub translators: Vec<String>,
    /// Bytes of the assets the records describe.
    pub media_bytes: u64,
    /// Seconds of video described.
    pub video_seconds: f64,
    /// Sums of the records' per-stage seconds (worker time, not wall time).
    pub decode_s: f64,
    pub vision_s: f64,
    pub generation_s: f64,
    pub translation_s: f64,
    pub total_s: f64,
    pub average_s_per_record: f64,
    pub generated_tokens: u64,
    /// `generated_tokens / generation_s`.
    pub tokens_per_s: f64,
    /// Texts the token limit cut before the model ended them.
    pub cut_by_token_limit: u64,
    pub translations: u64,
    /// Distinct tags (case-insensitive) over every record.
    pub distinct_tags: u64,
    /// The most frequent tags, most frequent first (at most 30), with their counts.
    pub top_tags: Vec<(String, u64)>,
}

impl BatchStats {
    pub fn new(records: &[AssetResult], expected_assets: Option<u64>) -> BatchStats {
        let mut stats = BatchStats { expected_assets, ..BatchStats::default() };
        let mut tags: BTreeMap<String, u64> = BTreeMap::new();
        for record in records {
            stats.records += 1;
            match record.kind {
                AssetKind::Image => stats.images += 1,
                AssetKind::Video => stats.videos += 1,
            }
            match &record.error {
                Some(error) => {
                    stats.failed += 1;
                    *stats.failed_by_stage.entry(error.stage.clone()).or_default() += 1;
                }
                None => stats.succeeded += 1,
            }
            if !stats.models.contains(&record.model) {
                stats.models.push(record.model.clone());
            }
            if let Some(translator) = &record.request.translator {
                if !stats.translators.contains(translator) {
                    stats.translators.push(translator.clone());
                }
            }
            if let Some(media) = &record.media {
                stats.media_bytes += media.bytes;
                stats.video_seconds += media.video.as_ref().map_or(0.0, |video| video.duration_s);
            }
            let timings = &record.timings;
            stats.decode_s += timings.decode_s;
            stats.vision_s += timings.vision_s;
            stats.generation_s += timings.generation_s;
            stats.translation_s += timings.translation_s;
            stats.total_s += timings.total_s;
            for output in &record.outputs {
                stats.generated_tokens += u64::from(output.generated_tokens);
                stats.cut_by_token_limit += u64::from(!output.finished);
                stats.translations += output.translations.len() as u64;
                for tag in output.tags.iter().flatten() {
                    *tags.entry(tag.to_lowercase()).or_default() += 1;
                }
            }
        }
        stats.missing = expected_assets.map(|expected| expected.saturating_sub(stats.records));
        if stats.records > 0 {
            stats.average_s_per_record = stats.total_s / stats.records as f64;
        }
        if stats.generation_s > 0.0 {
            stats.tokens_per_s = stats.generated_tokens as f64 / stats.generation_s;
        }
        stats.distinct_tags = tags.len() as u64;
        let mut by_count: Vec<(String, u64)> = tags.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by_count.truncate(30);
        stats.top_tags = by_count;
        stats
    }
}

/// Languages and tasks of the records, each once, in first-seen order (requests first, then outputs).
pub fn langs_and_tasks(records: &[AssetResult]) -> (Vec<LangInfo>, Vec<TaskInfo>) {
    let mut langs: Vec<Lang> = Vec::new();
    let mut tasks: Vec<&str> = Vec::new();
    for record in records {
        let requested = record.request.langs.iter().copied();
        let translated = record.outputs.iter().flat_map(|output| output.translations.iter().map(|t| t.lang));
        for lang in requested.chain(translated) {
            if !langs.contains(&lang) {
                langs.push(lang);
            }
        }
        let named = record.request.tasks.iter().map(String::as_str);
        for task in named.chain(record.outputs.iter().map(|output| output.task.as_str())) {
            if !tasks.contains(&task) {
                tasks.push(task);
            }
        }
    }
    (langs.into_iter().map(LangInfo::new).collect(), tasks.into_iter().map(TaskInfo::new).collect())
}

/// `window.vislingoChunk(<number>, <json>);` — a data file.
pub fn chunk_script(number: usize, json: &str) -> String {
    format!("window.vislingoChunk({number},{json});\n")
}

/// The JSON written into a `.js` file: U+2028 and U+2029 are escaped so that every engine reads the literal,
/// and `</` so that the text stays safe even if pasted into an inline script.
pub fn script_safe_json(json: String) -> String {
    if !json.contains(['\u{2028}', '\u{2029}']) && !json.contains("</") {
        return json;
    }
    json.replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029").replace("</", "<\\/")
}

#[cfg(test)]
mod tests {
    use vislingo_proto::result::{AssetError, ResultRequest, TaskOutput, Timings, Translation, RESULT_SCHEMA_VERSION};

    use super::*;

    fn lang(code: &str) -> Lang {
        Lang::parse(code).unwrap()
    }

    fn record(asset: &str, tags: &[&str], error: Option<&str>) -> AssetResult {
        AssetResult {
            schema_version: RESULT_SCHEMA_VERSION,
            asset: asset.into(),
            kind: AssetKind::from_key(asset).unwrap(),
            model: "m".into(),
            request: ResultRequest {
                tasks: vec!["describe".into(), "tags".into()],
                langs: vec![lang("fra_Latn"), lang("arb_Arab")],
                translator: Some("t".into()),
            },
            media: None,
            outputs: vec![TaskOutput {
                task: "tags".into(),
                text: tags.join(", "),
                generated_tokens: 10,
                finished: error.is_none(),
                tags: Some(tags.iter().map(|t| t.to_string()).collect()),
                tags_processed: None,
                translations: vec![Translation { lang: lang("arb_Arab"), text: "x".into(), tags: None }],
                generation_s: 2.0,
            }],
            timings: Timings { total_s: 4.0, generation_s: 2.0, ..Timings::default() },
            error: error.map(|stage| AssetError { stage: stage.into(), message: "boom".into() }),
        }
    }

    #[test]
    fn batch_stats_count_kinds_failures_tokens_and_tags() {
        let records = [
            record("a.jpg", &["Beach", "sea"], None),
            record("b.mp4", &["beach"], Some("decode")),
            record("c.png", &[], None),
        ];
        let stats = BatchStats::new(&records, Some(5));
        assert_eq!((stats.records, stats.images, stats.videos), (3, 2, 1));
        assert_eq!((stats.succeeded, stats.failed, stats.missing), (2, 1, Some(2)));
        assert_eq!(stats.failed_by_stage.get("decode"), Some(&1));
        assert_eq!(stats.generated_tokens, 30);
        assert_eq!(stats.tokens_per_s, 5.0);
        assert_eq!(stats.average_s_per_record, 4.0);
        assert_eq!(stats.cut_by_token_limit, 1);
        assert_eq!(stats.translations, 3);
        assert_eq!(stats.top_tags, vec![("beach".to_string(), 2), ("sea".to_string(), 1)]);
        assert_eq!(stats.distinct_tags, 2);
    }

    #[test]
    fn languages_carry_their_name_html_tag_and_direction() {
        let (langs, tasks) = langs_and_tasks(&[record("a.jpg", &["x"], None)]);
        assert_eq!(langs.iter().map(|l| l.code).collect::<Vec<_>>(), ["fra_Latn", "arb_Arab"]);
        assert_eq!(
            langs[1],
            LangInfo { code: "arb_Arab", name: "Modern Standard Arabic", tag: "ar-Arab".into(), dir: "rtl" }
        );
        assert_eq!(langs[0].dir, "ltr");
        assert_eq!(tasks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["Description", "Tags"]);
        assert_eq!(TaskInfo::new("brand_safety").label, "Brand safety");
    }

    #[test]
    fn the_index_holds_key_kind_failure_and_tags() {
        let records = [record("v/b.mp4", &["beach", "sea"], Some("decode"))];
        let json = serde_json::to_string(&IndexEntry::new(&records[0])).unwrap();
        assert_eq!(json, r#"["v/b.mp4","video",true,["beach","sea"]]"#);
    }

    #[test]
    fn data_scripts_escape_line_separators_and_closing_tags() {
        let json = serde_json::to_string("a\u{2028}b</script>").unwrap();
        let safe = script_safe_json(json);
        assert_eq!(safe, r#""a\u2028b<\/script>""#);
        assert_eq!(serde_json::from_str::<String>(&safe).unwrap(), "a\u{2028}b</script>");
        assert_eq!(chunk_script(3, "[]"), "window.vislingoChunk(3,[]);\n");
    }
}

//! The result record written for every asset (`<out>/<asset key>.json` locally, `results/<batch>/<asset key>.json`
//! in a bucket): what was asked, what the model wrote, its translations, timings, or the error that stopped it.

use serde::{Deserialize, Serialize};

use crate::{AssetKind, Lang};

/// Bumped when a field changes meaning; readers refuse records of a newer major version.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetResult {
    pub schema_version: u32,
    /// Key of the asset relative to the listed source (`photos/beach.jpg`).
    pub asset: String,
    pub kind: AssetKind,
    /// The vision-language model that wrote the texts (Hub repo id or folder).
    pub model: String,
    /// What was requested; a re-run with the same request skips this asset.
    pub request: ResultRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaInfo>,
    #[serde(default)]
    pub outputs: Vec<TaskOutput>,
    pub timings: Timings,
    /// Set when the asset could not be processed; `outputs` then holds what was done before the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AssetError>,
}

/// The request an asset was processed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRequest {
    pub tasks: Vec<String>,
    pub langs: Vec<Lang>,
    /// Translator model, when languages were requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translator: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MediaInfo {
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    /// Image tiles or video frames the model saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<u32>,
    /// Videos only: the probed metadata and the frames sampled. `width` and `height` above are those of the
    /// frames the model saw (after rotation, unless it was turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoMedia>,
}

/// What a video's container and stream say, and which of its frames the model saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VideoMedia {
    /// The file's size in MiB (bytes / 1024^2).
    pub size_mb: f64,
    pub duration_s: f64,
    /// Average frame rate; 0 when unknown.
    pub fps: f64,
    /// N, the frame count sampling is based on.
    pub frame_count: u64,
    /// How N was obtained: `container` (the container's count), `duration_times_rate` or `packet_count`.
    pub frame_count_source: String,
    /// FFmpeg's codec name (`h264`, `vp9`, ...).
    pub codec: String,
    /// FFmpeg's container (demuxer) name.
    pub container: String,
    /// Clockwise rotation in degrees that shows the clip upright (0, 90, 180, 270).
    pub rotation: u16,
    /// Whether that rotation was applied to the frames the model saw.
    pub rotation_applied: bool,
    /// Frame size as stored in the stream, before rotation.
    pub stored_width: u32,
    pub stored_height: u32,
    /// The frame numbers sampled (0-based, presentation order).
    pub frame_indices: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub task: String,
    /// The English text the model generated (trimmed).
    pub text: String,
    pub generated_tokens: u32,
    /// Whether the model ended the text itself (otherwise the token limit cut it).
    pub finished: bool,
    /// For tag tasks: tags in order of prominence, and sorted (the article's `tags_processed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_processed: Option<Vec<String>>,
    #[serde(default)]
    pub translations: Vec<Translation>,
    pub generation_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Translation {
    pub lang: Lang,
    pub text: String,
    /// For tag tasks: each tag translated on its own, in the order of `tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Seconds spent per stage of one asset (batch stages are shared among the batch's assets in proportion).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Timings {
    pub decode_s: f64,
    pub vision_s: f64,
    pub generation_s: f64,
    pub translation_s: f64,
    pub total_s: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetError {
    /// Where it failed: `read`, `decode`, `unsupported` (a video for a model that takes none), `generate`,
    /// `translate`, `write`.
    pub stage: String,
    pub message: String,
}

impl AssetResult {
    /// Whether this record answers `request` with `model` completely (no error), so a re-run may skip it.
    pub fn satisfies(&self, model: &str, request: &ResultRequest) -> bool {
        self.schema_version == RESULT_SCHEMA_VERSION
            && self.error.is_none()
            && self.model == model
            && &self.request == request
    }

    /// Whether this record, complete or an error record, is the outcome of processing with `model` for `request`:
    /// `worker run` skips such an asset on a re-run (an error record only without `--retry-failed`).
    pub fn settles_run(&self, model: &str, request: &ResultRequest) -> bool {
        self.schema_version == RESULT_SCHEMA_VERSION && self.model == model && &self.request == request
    }

    /// Which of the asset's two records this is (where it is written).
    pub fn record_kind(&self) -> crate::keys::RecordKind {
        crate::keys::RecordKind::of(self.error.is_some())
    }

    /// Whether this record answers a job asking for `tasks` and `langs` completely, whichever model and translator
    /// wrote it (they are the workers' choice, unknown to the dispatcher): the dispatcher's skip test.
    pub fn answers(&self, tasks: &[String], langs: &[Lang]) -> bool {
        self.error.is_none() && self.settles(tasks, langs)
    }

    /// Whether this record, complete or an error record, is the outcome of a job asking for `tasks` and `langs`:
    /// the asset was processed for this request (a re-run retries errors only when asked to).
    pub fn settles(&self, tasks: &[String], langs: &[Lang]) -> bool {
        self.schema_version == RESULT_SCHEMA_VERSION && self.request.tasks == tasks && self.request.langs == langs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> AssetResult {
        AssetResult {
            schema_version: RESULT_SCHEMA_VERSION,
            asset: "a/b.jpg".into(),
            kind: AssetKind::Image,
            model: "m".into(),
            request: ResultRequest {
                tasks: vec!["describe".into()],
                langs: vec![Lang::parse("fr").unwrap()],
                translator: None,
            },
            media: None,
            outputs: vec![],
            timings: Timings::default(),
            error: None,
        }
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = result();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"fra_Latn\""));
        assert_eq!(serde_json::from_str::<AssetResult>(&json).unwrap(), r);
    }

    #[test]
    fn records_without_video_fields_still_read_and_video_fields_round_trip() {
        let old = r#"{"schema_version":1,"asset":"a.jpg","kind":"image","model":"m",
            "request":{"tasks":["describe"],"langs":[]},"media":{"bytes":3,"width":2,"height":1,"tiles":4},
            "timings":{"decode_s":0,"vision_s":0,"generation_s":0,"translation_s":0,"total_s":0}}"#;
        let record: AssetResult = serde_json::from_str(old).unwrap();
        assert_eq!(record.media.as_ref().unwrap().video, None);
        assert!(!serde_json::to_string(&record).unwrap().contains("video"));
        let video = VideoMedia { frame_indices: vec![0, 5], codec: "h264".into(), ..VideoMedia::default() };
        let with_video = AssetResult {
            kind: AssetKind::Video,
            media: Some(MediaInfo { video: Some(video), ..MediaInfo::default() }),
            ..result()
        };
        let json = serde_json::to_string(&with_video).unwrap();
        assert_eq!(serde_json::from_str::<AssetResult>(&json).unwrap(), with_video);
    }

    #[test]
    fn only_a_complete_record_for_the_same_model_and_request_satisfies_a_rerun() {
        let r = result();
        assert!(r.satisfies("m", &r.request));
        assert!(!r.satisfies("other", &r.request));
        let mut more_langs = r.request.clone();
        more_langs.langs.push(Lang::parse("es").unwrap());
        assert!(!r.satisfies("m", &more_langs));
        let failed =
            AssetResult { error: Some(AssetError { stage: "decode".into(), message: "x".into() }), ..result() };
        assert!(!failed.satisfies("m", &r.request));
        assert!(failed.settles_run("m", &r.request));
        assert!(!failed.settles_run("other", &r.request));
        assert_eq!(failed.record_kind(), crate::keys::RecordKind::Error);
        assert_eq!(r.record_kind(), crate::keys::RecordKind::Result);
    }

    #[test]
    fn a_complete_record_answers_a_job_with_the_same_tasks_and_languages_in_order() {
        let r = result();
        let fr = vec![Lang::parse("fr").unwrap()];
        assert!(r.answers(&["describe".into()], &fr));
        assert!(!r.answers(&["describe".into(), "tags".into()], &fr));
        assert!(!r.answers(&["describe".into()], &[]));
        let failed =
            AssetResult { error: Some(AssetError { stage: "decode".into(), message: "x".into() }), ..result() };
        assert!(!failed.answers(&["describe".into()], &fr));
        assert!(failed.settles(&["describe".into()], &fr));
        assert!(!failed.settles(&["tags".into()], &fr));
    }
}

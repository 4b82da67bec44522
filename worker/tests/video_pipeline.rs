//! Videos through `worker describe` and `worker run` as a user runs them, on the tiny LLaVA-NeXT-Video fixture:
//! the pipeline's frames and ids are those of `sample_file` + `LlavaNextChat::answer` called directly (the parity
//! of those two with PyAV and transformers is proven in `video_frames.rs` and `parity_llava_next.rs`), records
//! carry the video metadata and frame numbers, bad videos get error records naming them, runs resume, the article
//! layout has the video script's fields, and the image-only Llama 3.2 Vision model gives videos an error record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use serde_json::Value;
use vislingo_worker::media::video::{sample_file, SampleOptions};
use vislingo_worker::models::hub::{ModelRepo, ModelSource};
use vislingo_worker::models::llava_next::{LlavaNextChat, Media, MediaPrompt};
use vislingo_worker::models::quant::Quant;

/// A short question: the built-in task prompts are longer than the tiny model's 512 positions.
const QUESTION: &str = "What happens in this clip?";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn llava() -> PathBuf {
    fixtures().join("llava-next-video-tiny")
}

fn video(name: &str) -> PathBuf {
    fixtures().join("videos").join(name)
}

fn worker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("VISLINGO_")) {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "error").env("HF_HUB_OFFLINE", "1");
    command
}

fn assert_status(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stderr:\n{}", String::from_utf8_lossy(&output.stderr));
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap_or_else(|| panic!("ids: {value}")).iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn describe_json_on_videos_gives_the_frames_and_ids_of_direct_sampling_and_llava_next() {
    let clips = [video("h264_bframes.mp4"), video("vp9.webm")];
    let output = worker()
        .args(["describe", "--model"])
        .arg(llava())
        .args(["--greedy", "--max-new-tokens", "6", "--frames", "4", "--format", "json", "--prompt", QUESTION])
        .args(&clips)
        .output()
        .unwrap();
    assert_status(&output, 0);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = json.as_array().unwrap();
    assert_eq!(results.len(), 2);

    let options = SampleOptions { frames: 4, ..SampleOptions::default() };
    let sampled: Vec<_> = clips.iter().map(|clip| sample_file(clip, &options).unwrap()).collect();
    let repo = ModelRepo::open(ModelSource::Local(llava())).unwrap();
    let chat = LlavaNextChat::load(&repo, DType::F32, &Device::Cpu, Quant::None).unwrap();
    let prompts: Vec<MediaPrompt> =
        sampled.iter().map(|s| MediaPrompt { media: Media::Video(&s.frames), text: QUESTION }).collect();
    let settings = chat.default_settings(6);
    assert_eq!(settings.sampling, None, "the fixture's generation config is greedy, as --greedy asks");
    let (answers, _) = chat.answer(&prompts, &settings).unwrap();

    for ((result, sampled), answer) in results.iter().zip(&sampled).zip(&answers) {
        let clip = result["asset"].as_str().unwrap();
        assert_eq!(result["kind"], "video", "{clip}");
        assert!(result["error"].is_null(), "{result}");
        assert_eq!(ids(&result["prompt_token_ids"]), answer.prompt_token_ids, "{clip}");
        assert_eq!(ids(&result["token_ids"]), answer.token_ids, "{clip}");
        assert_eq!(result["text"], answer.text.trim(), "{clip}");
        assert!(!answer.token_ids.is_empty());

        let media = &result["media"];
        let info = &sampled.info;
        let video = &media["video"];
        let indices: Vec<usize> =
            video["frame_indices"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(indices, sampled.frame_indices, "{clip}");
        assert_eq!(indices.len(), 4);
        assert_eq!(media["tiles"], 4, "{clip}: frames the model saw");
        assert_eq!(media["bytes"].as_u64(), Some(info.size_bytes));
        assert_eq!(media["width"].as_u64(), Some(sampled.frames[0].width as u64));
        assert_eq!(media["height"].as_u64(), Some(sampled.frames[0].height as u64));
        assert_eq!(video["frame_count"].as_u64(), Some(info.frame_count as u64));
        assert_eq!(video["frame_count_source"], serde_json::to_value(info.frame_count_source).unwrap());
        assert_eq!(video["codec"], info.codec.as_str());
        assert_eq!(video["fps"].as_f64(), Some(info.fps));
        assert_eq!(video["duration_s"].as_f64(), Some(info.duration_s));
        assert_eq!(
            (video["stored_width"].as_u64(), video["stored_height"].as_u64()),
            (Some(info.width as u64), Some(info.height as u64))
        );
        assert!(result["timings"]["decode_s"].as_f64().unwrap() > 0.0);
    }
    // WebM has no frame count in its container: the record says how N was derived.
    assert_eq!(results[1]["media"]["video"]["frame_count_source"], "duration_times_rate");
}

#[test]
fn no_rotate_gives_the_model_the_frames_as_stored() {
    let clip = video("rotated.mp4");
    let describe = |extra: &[&str]| {
        let output = worker()
            .args(["describe", "--model"])
            .arg(llava())
            .args(["--greedy", "--max-new-tokens", "1", "--frames", "2", "--format", "json", "--prompt", QUESTION])
            .args(extra)
            .arg(&clip)
            .output()
            .unwrap();
        assert_status(&output, 0);
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let (rotated, stored) = (describe(&[]), describe(&["--no-rotate"]));
    let video = &rotated["media"]["video"];
    assert_ne!(video["rotation"], 0, "the fixture has a rotation tag");
    assert_eq!(
        (video["rotation_applied"].clone(), stored["media"]["video"]["rotation_applied"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );
    let size = |r: &Value| (r["media"]["width"].as_u64().unwrap(), r["media"]["height"].as_u64().unwrap());
    assert_eq!(size(&stored), (video["stored_width"].as_u64().unwrap(), video["stored_height"].as_u64().unwrap()));
    let (w, h) = size(&stored);
    if video["rotation"].as_u64().unwrap() % 180 == 90 {
        assert_eq!(size(&rotated), (h, w));
    }
}

#[test]
fn describe_with_the_image_model_refuses_a_video_by_name_and_still_answers_the_image() {
    let clip = video("h264_no_bframes.mp4");
    let image = fixtures().join("mllama-tiny/images/square_small.png");
    let output = worker()
        .args(["describe", "--model"])
        .arg(fixtures().join("mllama-tiny"))
        .args(["--greedy", "--max-new-tokens", "2", "--format", "json"])
        .arg(&clip)
        .arg(&image)
        .output()
        .unwrap();
    assert_status(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(clip.to_str().unwrap()) && stderr.contains("LLaVA-NeXT-Video"), "{stderr}");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json[0]["error"]["stage"], "unsupported");
    assert_eq!(json[0]["kind"], "video");
    assert!(json[1]["error"].is_null() && !ids(&json[1]["token_ids"]).is_empty(), "{}", json[1]);
}

/// A folder of one image, two good videos (one in a sub-folder), a truncated video and a file that is no video.
fn mixed_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: PathBuf, to: &str| {
        let target = dir.path().join(to);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from, target).unwrap();
    };
    copy(llava().join("media/wide.png"), "photo.png");
    copy(video("h264_bframes.mp4"), "clip.mp4");
    copy(video("vp9.webm"), "sub/clip.webm");
    copy(video("truncated.mp4"), "truncated.mp4");
    copy(video("not_a_video.mp4"), "not_a_video.mp4");
    dir
}

/// A task file whose `describe` asks the short question (the built-in prompts overflow the tiny model).
fn task_file(dir: &Path) -> PathBuf {
    let path = dir.join("tasks.toml");
    let toml = format!("[[task]]\nname = \"describe\"\nprompt = \"{QUESTION}\"\nvideo_prompt = \"{QUESTION}\"\n");
    std::fs::write(&path, toml).unwrap();
    path
}

fn run(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    let tasks = task_file(out.parent().unwrap());
    worker()
        .arg("run")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(model)
        .arg("--task-file")
        .arg(tasks)
        .args(["--greedy", "--max-new-tokens", "3", "--frames", "3", "--tasks", "describe", "--no-progress"])
        .args(extra)
        .output()
        .unwrap()
}

fn records(out: &Path) -> BTreeMap<String, Value> {
    let mut records = BTreeMap::new();
    let mut pending = vec![out.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if path.is_dir() {
                pending.push(path);
            } else if !["summary.json", "results_article.json"].contains(&name.as_str()) {
                let relative = path.strip_prefix(out).unwrap().to_str().unwrap();
                if let Some((key, _)) = vislingo_proto::keys::parse_record_file(relative) {
                    assert!(records.insert(key.to_string(), read_json(&path)).is_none(), "{key}: two records");
                }
            }
        }
    }
    records
}

#[test]
fn run_with_the_video_model_writes_one_record_per_asset_names_bad_videos_and_resumes() {
    let input = mixed_folder();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let output = run(&llava(), input.path(), &out, &["--layout", "article", "--batch-size", "2"]);
    assert_status(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 of 5 assets failed"), "{stderr}");

    let records = records(&out);
    let keys: Vec<&str> = records.keys().map(String::as_str).collect();
    assert_eq!(keys, ["clip.mp4", "not_a_video.mp4", "photo.png", "sub/clip.webm", "truncated.mp4"]);
    for key in ["clip.mp4", "sub/clip.webm"] {
        let record = &records[key];
        assert!(record.get("error").is_none(), "{record}");
        assert_eq!(record["kind"], "video");
        assert_eq!(record["media"]["video"]["frame_indices"].as_array().unwrap().len(), 3, "{key}");
        assert!(record["outputs"][0]["generated_tokens"].as_u64().unwrap() >= 1);
    }
    assert_eq!(records["photo.png"]["kind"], "image");
    assert!(records["photo.png"].get("error").is_none());
    assert!(records["photo.png"]["media"].get("video").is_none());
    for key in ["truncated.mp4", "not_a_video.mp4"] {
        let error = &records[key]["error"];
        assert_eq!(error["stage"], "decode", "{key}");
        assert!(error["message"].as_str().unwrap().contains(key), "{error}");
        assert_eq!(records[key]["kind"], "video");
    }

    let summary = read_json(&out.join("summary.json"));
    let assets = &summary["assets"];
    assert_eq!((assets["images"].as_u64(), assets["videos"].as_u64()), (Some(1), Some(4)));
    assert_eq!((assets["processed"].as_u64(), assets["failed"].as_u64()), (Some(5), Some(2)));

    let article = read_json(&out.join("results_article.json"));
    let entries = article["descriptions"].as_array().unwrap();
    let first = entries[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    let mut expected = [
        "video_file",
        "video_size_mb",
        "video_duration_sec",
        "video_fps",
        "video_frames",
        "video_width",
        "video_height",
        "description_english",
        "generated_tokens",
        "description_generation_time_sec",
        "total_processing_time_sec",
    ];
    expected.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    let text = std::fs::read_to_string(out.join("results_article.json")).unwrap();
    assert!(text.contains("{\n            \"video_file\": \"clip.mp4\",\n            \"video_size_mb\""), "{text}");
    let video = &records["clip.mp4"]["media"]["video"];
    assert_eq!(first["video_file"], "clip.mp4");
    assert_eq!(first["video_frames"], video["frame_count"]);
    assert_eq!(first["video_width"], video["stored_width"]);
    assert_eq!(first["description_english"], records["clip.mp4"]["outputs"][0]["text"]);
    let files: Vec<&str> =
        entries.iter().map(|e| e.get("video_file").or(e.get("image_file")).unwrap().as_str().unwrap()).collect();
    assert_eq!(files, ["clip.mp4", "photo.png", "sub/clip.webm"]);
    assert_eq!(
        (article["stats"]["total_videos"].as_u64(), article["stats"]["total_images"].as_u64()),
        (Some(2), Some(1))
    );

    // Resume: done assets are skipped and left untouched, the bad videos too unless --retry-failed.
    let before = std::fs::read(out.join("clip.mp4.json")).unwrap();
    assert_status(&run(&llava(), input.path(), &out, &[]), 1);
    assert_eq!(std::fs::read(out.join("clip.mp4.json")).unwrap(), before);
    let assets = read_json(&out.join("summary.json"))["assets"].clone();
    assert_eq!((assets["skipped_done"].as_u64(), assets["skipped_failed"].as_u64()), (Some(3), Some(2)));
    assert_eq!(assets["processed"].as_u64(), Some(0));
    assert_status(&run(&llava(), input.path(), &out, &["--retry-failed"]), 1);
    assert_eq!(std::fs::read(out.join("clip.mp4.json")).unwrap(), before);
    let assets = read_json(&out.join("summary.json"))["assets"].clone();
    assert_eq!((assets["skipped_done"].as_u64(), assets["processed"].as_u64()), (Some(3), Some(2)));
}

#[test]
fn run_with_the_image_model_gives_videos_an_error_record_without_loading_the_model_for_them() {
    let input = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures().join("mllama-tiny/images/square_small.png"), input.path().join("photo.png")).unwrap();
    std::fs::copy(video("h264_no_bframes.mp4"), input.path().join("clip.mp4")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mllama = fixtures().join("mllama-tiny");
    let output = run(&mllama, input.path(), &out, &[]);
    assert_status(&output, 1);
    let records = records(&out);
    assert!(records["photo.png"].get("error").is_none(), "{}", records["photo.png"]);
    let clip = &records["clip.mp4"];
    assert_eq!(clip["kind"], "video");
    assert_eq!(clip["error"]["stage"], "unsupported");
    let message = clip["error"]["message"].as_str().unwrap();
    assert!(message.contains("clip.mp4") && message.contains("LLaVA-NeXT-Video"), "{message}");

    assert_status(&run(&mllama, input.path(), &out, &[]), 1);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(
        (summary["assets"]["skipped_done"].as_u64(), summary["assets"]["skipped_failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary["model_load_time_sec"].as_f64(), Some(0.0), "a video error record needs no model");
}

/// The texts of a record's outputs.
fn texts(record: &Value) -> Vec<Value> {
    record["outputs"].as_array().map_or_else(Vec::new, |outputs| outputs.iter().map(|o| o["text"].clone()).collect())
}

/// The JSON a gallery data file hands to the page (`window.X=<json>;` or `window.f(n,<json>);`).
fn gallery_data(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(['{', '[']).unwrap();
    let end = text.trim_end().trim_end_matches(';').trim_end_matches(')').len();
    serde_json::from_str(&text[start..end]).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn run_with_html_writes_a_gallery_with_image_thumbnails_and_the_frames_each_video_record_names() {
    let input = mixed_folder();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let html = work.path().join("gallery");
    assert_status(&run(&llava(), input.path(), &out, &["--html", html.to_str().unwrap()]), 1);
    let records = records(&out);

    let meta = gallery_data(&html.join("data/meta.js"));
    assert_eq!(meta["count"], 5);
    assert_eq!((meta["stats"]["failed"].as_u64(), meta["stats"]["missing"].as_u64()), (Some(2), Some(0)));
    let items = gallery_data(&html.join("data/chunk-0000.js"));
    let items: BTreeMap<String, &Value> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["record"]["asset"].as_str().unwrap().to_string(), item))
        .collect();
    assert_eq!(items.len(), 5);
    for (key, item) in &items {
        let (shown, written) = (&item["record"], &records[key]);
        for field in ["kind", "model", "request", "error"] {
            assert_eq!(shown.get(field), written.get(field), "{key}: {field}");
        }
        assert_eq!(texts(shown), texts(written), "{key}");
    }

    // The image: a thumbnail of its decoded pixels, within 320 px.
    let photo = &items["photo.png"]["preview"];
    assert_eq!(photo["kind"], "image");
    let thumbnail = image::open(html.join(photo["src"].as_str().unwrap())).unwrap();
    let media = &records["photo.png"]["media"];
    let (width, height) = (media["width"].as_f64().unwrap(), media["height"].as_f64().unwrap());
    assert!(thumbnail.width() <= 320 && thumbnail.height() <= 320);
    assert!((f64::from(thumbnail.width()) / f64::from(thumbnail.height()) - width / height).abs() < 0.05);

    // Each good video: a mosaic of exactly the frames its record names.
    for key in ["clip.mp4", "sub/clip.webm"] {
        let preview = &items[key]["preview"];
        assert_eq!(preview["kind"], "frames", "{key}");
        let numbers = &records[key]["media"]["video"]["frame_indices"];
        assert_eq!(&preview["frames"], numbers, "{key}");
        let wanted: Vec<usize> = numbers.as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect();
        let mut reader = vislingo_worker::media::video::VideoReader::open(&input.path().join(key), key).unwrap();
        let (frames, _) = reader.frames_at(&wanted, &SampleOptions::default()).unwrap();
        let pixels: Vec<vislingo_gallery::RgbPixels<'_>> = frames
            .iter()
            .map(|f| vislingo_gallery::RgbPixels { width: f.width as u32, height: f.height as u32, data: &f.data })
            .collect();
        let expected = vislingo_gallery::frame_mosaic(&pixels).unwrap();
        assert_eq!(std::fs::read(html.join(preview["src"].as_str().unwrap())).unwrap(), expected.jpeg, "{key}");
    }

    // A file FFmpeg cannot open: no picture, and the reason.
    let broken = &items["not_a_video.mp4"]["preview"];
    assert_eq!(broken["kind"], "none");
    assert!(broken["reason"].as_str().unwrap().contains("not_a_video.mp4"), "{broken}");
    assert!(html.join("index.html").is_file() && html.join("gallery.js").is_file());
}

//! `worker run FOLDER` as a user runs it, on the tiny fixture models: records, summary, resume, `--force`, the
//! article layout, batch size independence, setup errors and Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const IMAGES: [&str; 4] = ["portrait.jpg", "landscape.png", "gray.png", "sub/wide.png"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies of fixture images (one in a sub-folder), a corrupt `broken.jpg` and a `notes.txt` (videos: see
/// `video_pipeline.rs`).
fn input_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for image in IMAGES {
        let name = Path::new(image).file_name().unwrap();
        let target = dir.path().join(image);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(fixtures().join("mllama-tiny/images").join(name), target).unwrap();
    }
    let noise: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.path().join("broken.jpg"), &noise).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image\n").unwrap();
    dir
}

fn worker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("VISLINGO_")) {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "error").env("HF_HUB_OFFLINE", "1");
    command
}

/// `worker run` with the test defaults; a flag in `extra` replaces its default.
fn run_command(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let model = fixtures().join("mllama-tiny");
    let translator = fixtures().join("nllb-tiny");
    let defaults = [
        ("--max-new-tokens", "8"),
        ("--langs", "fra_Latn,hin_Deva"),
        ("--tasks", "describe,tags"),
        ("--model", model.to_str().unwrap()),
        ("--translator", translator.to_str().unwrap()),
    ];
    let mut command = worker();
    command.arg("run").arg(input).arg("--out").arg(out).arg("--greedy");
    for (flag, value) in defaults.into_iter().filter(|(flag, _)| !extra.contains(flag)) {
        command.args([flag, value]);
    }
    command.args(extra);
    command
}

fn run(input: &Path, out: &Path, extra: &[&str]) -> Output {
    run_command(input, out, extra).output().unwrap()
}

fn assert_status(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stderr:\n{}", String::from_utf8_lossy(&output.stderr));
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every record under `out` (`<key>.json` or `<key>.error.json`) by asset key, as raw bytes; an asset has one.
fn record_bytes(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut records = BTreeMap::new();
    for path in files_under(out) {
        let relative = path.strip_prefix(out).unwrap().to_str().unwrap();
        // Temporaries of a run still writing are not records yet.
        if ["summary.json", "results_article.json"].contains(&relative) {
            continue;
        }
        let Some((key, _)) = vislingo_proto::keys::parse_record_file(relative) else { continue };
        let previous = records.insert(key.to_string(), std::fs::read(&path).unwrap());
        assert!(previous.is_none(), "{key} has both a result and an error record");
    }
    records
}

fn records(out: &Path) -> BTreeMap<String, Value> {
    record_bytes(out).into_iter().map(|(key, bytes)| (key, serde_json::from_slice(&bytes).unwrap())).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn summary(out: &Path) -> Value {
    read_json(&out.join("summary.json"))
}

fn assert_no_temporaries(out: &Path) {
    for path in files_under(out) {
        assert!(!path.to_string_lossy().contains(".tmp-"), "left behind: {}", path.display());
        serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }
}

/// What a record says about its texts, without timings.
fn texts(record: &Value) -> Vec<Value> {
    record["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            serde_json::json!([
                o["task"],
                o["text"],
                o["generated_tokens"],
                o["tags"],
                o["tags_processed"],
                o["translations"]
            ])
        })
        .collect()
}

/// The languages an output is translated into: all of them, except for a tag answer in which no tag was found
/// (the tiny model writes gibberish), which has nothing to translate.
fn expected_langs<'a>(output: &Value, langs: &[&'a str]) -> Vec<&'a str> {
    let no_tags = output["tags"].as_array().is_some_and(|tags| tags.is_empty());
    if no_tags {
        Vec::new()
    } else {
        langs.to_vec()
    }
}

#[test]
fn every_image_gets_a_record_and_the_corrupt_file_an_error_record_with_exit_status_1() {
    let input = input_folder();
    let out = tempfile::tempdir().unwrap();
    let output = run(input.path(), out.path(), &[]);
    assert_status(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error: 1 of 5 assets failed"), "{stderr}");

    let records = records(out.path());
    let keys: Vec<&str> = records.keys().map(String::as_str).collect();
    assert_eq!(keys, ["broken.jpg", "gray.png", "landscape.png", "portrait.jpg", "sub/wide.png"]);
    for image in IMAGES {
        let record = &records[image];
        assert_eq!(record["asset"], image);
        assert!(record.get("error").is_none(), "{record}");
        let outputs = record["outputs"].as_array().unwrap();
        let tasks: Vec<&str> = outputs.iter().map(|o| o["task"].as_str().unwrap()).collect();
        assert_eq!(tasks, ["describe", "tags"]);
        for output in outputs {
            assert!(output["generated_tokens"].as_u64().unwrap() >= 1, "{output}");
            let langs: Vec<&str> =
                output["translations"].as_array().unwrap().iter().map(|t| t["lang"].as_str().unwrap()).collect();
            assert_eq!(langs, expected_langs(output, &["fra_Latn", "hin_Deva"]), "{image}: {output}");
        }
        assert!(outputs[1]["tags"].is_array() && outputs[1]["tags_processed"].is_array());
        assert_eq!(outputs[0]["translations"].as_array().unwrap().len(), 2, "{image}: describe is always translated");
        assert!(record["media"]["width"].as_u64().unwrap() > 0);
    }
    let tagged =
        IMAGES.iter().filter(|image| records[**image]["outputs"][1]["translations"].as_array().unwrap().len() == 2);
    assert!(tagged.count() >= 2, "the fixture images give tags to translate");
    let broken = &records["broken.jpg"];
    assert_eq!(broken["error"]["stage"], "decode");
    assert!(broken["error"]["message"].as_str().unwrap().contains("broken.jpg"), "{broken}");

    let summary = summary(out.path());
    let assets = &summary["assets"];
    assert_eq!((assets["listed"].as_u64(), assets["images"].as_u64()), (Some(5), Some(5)));
    assert_eq!((assets["processed"].as_u64(), assets["succeeded"].as_u64()), (Some(5), Some(4)));
    assert_eq!((assets["failed"].as_u64(), assets["skipped_done"].as_u64()), (Some(1), Some(0)));
    assert_eq!((assets["videos"].as_u64(), assets["remaining"].as_u64()), (Some(0), Some(0)));
    assert_eq!(summary["temperature"], "greedy");
    assert_eq!(summary["tasks"], serde_json::json!(["describe", "tags"]));
    assert_eq!(summary["langs"], serde_json::json!(["fra_Latn", "hin_Deva"]));
    assert_eq!(summary["failed_assets"][0]["asset"], "broken.jpg");
    assert_eq!(summary["failed_assets"][0]["stage"], "decode");
    assert_eq!(summary["interrupted"], false);
    let tokens: u64 = IMAGES
        .iter()
        .flat_map(|image| records[*image]["outputs"].as_array().unwrap().clone())
        .map(|o| o["generated_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["generated_tokens"].as_u64(), Some(tokens));
    let bytes: u64 = files_under(input.path())
        .iter()
        .filter(|p| !p.ends_with("notes.txt"))
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(summary["bytes_processed"].as_u64(), Some(bytes));
    assert!(summary["finished"].as_f64().unwrap() >= summary["started"].as_f64().unwrap());
    assert!(summary["total_batch_time_sec"].as_f64().unwrap() > 0.0);
    assert!(!out.path().join("results_article.json").exists());
    assert_no_temporaries(out.path());
}

#[test]
fn a_second_run_skips_done_and_failed_assets_retries_failed_ones_when_asked_and_leaves_records_untouched() {
    let input = input_folder();
    let out = tempfile::tempdir().unwrap();
    assert_status(&run(input.path(), out.path(), &[]), 1);
    let first = record_bytes(out.path());
    assert!(out.path().join("broken.jpg.error.json").exists(), "a failed asset has an error record");
    assert!(!out.path().join("broken.jpg.json").exists());

    // The error record stands, as in the fleet: nothing is processed, and the run still reports the failure.
    let output = run(input.path(), out.path(), &[]);
    assert_status(&output, 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 assets failed in an earlier run"));
    assert_eq!(record_bytes(out.path()), first, "nothing was rewritten");
    let summary_json = summary(out.path());
    let assets = &summary_json["assets"];
    assert_eq!((assets["skipped_done"].as_u64(), assets["skipped_failed"].as_u64()), (Some(4), Some(1)));
    assert_eq!((assets["processed"].as_u64(), assets["failed"].as_u64()), (Some(0), Some(0)));
    assert_eq!(summary_json["previously_failed_assets"][0]["asset"], "broken.jpg");
    assert_eq!(summary_json["previously_failed_assets"][0]["stage"], "decode");

    // --retry-failed runs it again; a file that now decodes replaces its error record with a result.
    assert_status(&run(input.path(), out.path(), &["--retry-failed"]), 1);
    let second = record_bytes(out.path());
    for image in IMAGES {
        assert_eq!(first[image], second[image], "{image} was rewritten");
    }
    let assets = summary(out.path())["assets"].clone();
    assert_eq!((assets["skipped_done"].as_u64(), assets["processed"].as_u64()), (Some(4), Some(1)));
    assert_eq!(assets["failed"].as_u64(), Some(1));
    std::fs::copy(input.path().join("gray.png"), input.path().join("broken.jpg")).unwrap();
    assert_status(&run(input.path(), out.path(), &["--retry-failed"]), 0);
    assert!(out.path().join("broken.jpg.json").exists());
    assert!(!out.path().join("broken.jpg.error.json").exists(), "the result replaced the error record");

    std::fs::remove_file(input.path().join("broken.jpg")).unwrap();
    std::fs::remove_file(out.path().join("broken.jpg.json")).unwrap();
    let started = Instant::now();
    assert_status(&run(input.path(), out.path(), &[]), 0);
    for image in IMAGES {
        assert_eq!(first[image], std::fs::read(out.path().join(format!("{image}.json"))).unwrap());
    }
    let summary = summary(out.path());
    assert_eq!(
        (summary["assets"]["skipped_done"].as_u64(), summary["assets"]["processed"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(summary["model_load_time_sec"].as_f64(), Some(0.0), "nothing to do loads no model");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_no_temporaries(out.path());
}

#[test]
fn force_or_other_languages_process_done_images_again() {
    let input = input_folder();
    std::fs::remove_file(input.path().join("broken.jpg")).unwrap();
    let out = tempfile::tempdir().unwrap();
    assert_status(&run(input.path(), out.path(), &[]), 0);
    let first = records(out.path());

    assert_status(&run(input.path(), out.path(), &["--force"]), 0);
    let assets = summary(out.path())["assets"].clone();
    assert_eq!((assets["processed"].as_u64(), assets["skipped_done"].as_u64()), (Some(4), Some(0)));
    let forced = records(out.path());
    for image in IMAGES {
        assert_eq!(texts(&first[image]), texts(&forced[image]), "{image}: greedy decoding repeats itself");
    }

    assert_status(&run(input.path(), out.path(), &["--langs", "fra_Latn"]), 0);
    let assets = summary(out.path())["assets"].clone();
    assert_eq!((assets["processed"].as_u64(), assets["skipped_done"].as_u64()), (Some(4), Some(0)));
    for (image, record) in records(out.path()) {
        assert_eq!(record["request"]["langs"], serde_json::json!(["fra_Latn"]), "{image}");
        for output in record["outputs"].as_array().unwrap() {
            let langs: Vec<&str> =
                output["translations"].as_array().unwrap().iter().map(|t| t["lang"].as_str().unwrap()).collect();
            assert_eq!(langs, expected_langs(output, &["fra_Latn"]), "{image}");
        }
    }

    assert_status(&run(input.path(), out.path(), &["--langs", "fra_Latn", "--tasks", "describe"]), 0);
    assert_eq!(summary(out.path())["assets"]["processed"].as_u64(), Some(4), "another task list reprocesses");
    assert_no_temporaries(out.path());
}

#[test]
fn article_layout_has_the_articles_field_names_and_one_entry_per_image_also_after_a_resumed_run() {
    let input = input_folder();
    let out = tempfile::tempdir().unwrap();
    assert_status(&run(input.path(), out.path(), &["--layout", "article"]), 1);
    std::fs::remove_file(input.path().join("broken.jpg")).unwrap();
    // Everything is done: the file is rebuilt from the records.
    assert_status(&run(input.path(), out.path(), &["--layout", "article"]), 0);
    assert_eq!(summary(out.path())["assets"]["skipped_done"].as_u64(), Some(4));

    let text = std::fs::read_to_string(out.path().join("results_article.json")).unwrap();
    assert!(text.starts_with("{\n    \"descriptions\": [\n        {\n            \"image_file\""), "{text}");
    let article: Value = serde_json::from_str(&text).unwrap();
    let entries = article["descriptions"].as_array().unwrap();
    let files: Vec<&str> = entries.iter().map(|e| e["image_file"].as_str().unwrap()).collect();
    assert_eq!(files, ["gray.png", "landscape.png", "portrait.jpg", "sub/wide.png"]);
    let records = records(out.path());
    for entry in entries {
        let record = &records[entry["image_file"].as_str().unwrap()];
        let describe = &record["outputs"][0];
        assert_eq!(entry["description_english"], describe["text"]);
        assert_eq!(entry["translation_french"], describe["translations"][0]["text"]);
        assert_eq!(entry["translation_hindi"], describe["translations"][1]["text"]);
        assert_eq!(entry["generated_tokens"], describe["generated_tokens"]);
        assert!(entry["description_generation_time_sec"].is_f64());
        assert!(entry["total_processing_time_sec"].is_f64());
        let tags = &record["outputs"][1];
        assert_eq!(entry["tags_english"], tags["text"]);
        assert_eq!(entry["tags_translation_french"], tags["translations"][0]["text"]);
        assert_eq!(entry["tags_processed"], tags["tags_processed"]);
    }
    let stats = &article["stats"];
    let keys: Vec<&str> = stats.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = ["model", "temperature", "total_batch_time_sec", "total_images", "average_time_per_image_sec"];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(stats["total_images"], 4);
    assert_eq!(stats["temperature"], 0.0);
    assert_eq!(stats["model"], fixtures().join("mllama-tiny").to_str().unwrap());
}

#[test]
fn batch_size_1_and_4_give_the_same_texts() {
    let input = input_folder();
    let single = tempfile::tempdir().unwrap();
    let batched = tempfile::tempdir().unwrap();
    assert_status(&run(input.path(), single.path(), &["--batch-size", "1"]), 1);
    assert_status(&run(input.path(), batched.path(), &["--batch-size", "4"]), 1);
    let (single, batched) = (records(single.path()), records(batched.path()));
    assert_eq!(single.keys().collect::<Vec<_>>(), batched.keys().collect::<Vec<_>>());
    for image in IMAGES {
        assert_eq!(texts(&single[image]), texts(&batched[image]), "{image}");
    }
    assert_eq!(single["broken.jpg"]["error"], batched["broken.jpg"]["error"]);
}

#[test]
fn setup_errors_exit_2_with_one_error_line_and_write_nothing() {
    let input = input_folder();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("results");
    let missing = parent.path().join("no-such-folder");
    let bad_model = ["--model", "/no/such/model"];
    let gallery_inside = input.path().join("gallery");
    let html_inside = ["--html", gallery_inside.to_str().unwrap()];
    let cases: [(&Path, &[&str], &str); 5] = [
        (&missing, &[], "no-such-folder"),
        (input.path(), &html_inside, "is inside the folder being described"),
        (input.path(), &bad_model, "/no/such/model"),
        (input.path(), &["--tasks", "describe,sentimet"], "did you mean `sentiment`?"),
        (input.path(), &["--langs", "fra_Latn,xx"], "unknown language `xx`"),
    ];
    for (folder, extra, needle) in cases {
        let output = run(folder, &out, extra);
        assert_status(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{stderr}");
        assert!(!out.exists(), "{needle}: the output folder was created");
    }
}

#[test]
fn ctrl_c_stops_after_the_current_batch_and_the_next_run_resumes() {
    let input = tempfile::tempdir().unwrap();
    let source = fixtures().join("mllama-tiny/images/portrait.jpg");
    const COPIES: usize = 30;
    for i in 0..COPIES {
        std::fs::copy(&source, input.path().join(format!("img{i:02}.jpg"))).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let child = run_command(input.path(), out.path(), &["--batch-size", "1"]).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while record_bytes(out.path()).is_empty() {
        assert!(Instant::now() < deadline, "no record written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert_status(&output, 130);
    assert!(String::from_utf8_lossy(&output.stderr).contains("error: interrupted"));

    let summary = summary(out.path());
    let done = summary["assets"]["processed"].as_u64().unwrap() as usize;
    assert_eq!(summary["interrupted"], true);
    assert!((1..COPIES).contains(&done), "{summary}");
    assert_eq!(summary["assets"]["remaining"].as_u64(), Some((COPIES - done) as u64));
    assert_eq!(records(out.path()).len(), done);
    assert_no_temporaries(out.path());

    assert_status(&run(input.path(), out.path(), &["--batch-size", "8"]), 0);
    let assets = summary_assets(out.path());
    assert_eq!(
        (assets["skipped_done"].as_u64(), assets["processed"].as_u64()),
        (Some(done as u64), Some((COPIES - done) as u64))
    );
    assert_eq!(records(out.path()).len(), COPIES);
}

fn summary_assets(out: &Path) -> Value {
    summary(out)["assets"].clone()
}

//! The fleet end to end on real RabbitMQ and s3s-fs with the tiny models: a mixed batch through two workers,
//! a worker killed mid-batch, a broker restart, a storage outage, re-runs, and parity with `worker run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vislingo_fleet_tests::{fixture_images, fixtures, noise, serial, Bins, Fleet};
use vislingo_proto::{topology, AssetResult};

fn bins() -> Bins {
    Bins {
        worker: env!("CARGO_BIN_EXE_fleet-worker").into(),
        dispatcher: env!("CARGO_BIN_EXE_fleet-dispatcher").into(),
    }
}

const TASKS: &str = "describe,tags";
const LANGS: &str = "fra_Latn";
/// Tokens per answer: enough to exercise generation and translation, small enough for CI on two cores.
const MAX_NEW_TOKENS: usize = 3;
const PATIENCE: Duration = Duration::from_secs(600);

/// Uploads `images` copies of the fixture images, `corrupt` undecodable `.jpg`s, `videos` `.mp4`s and two files
/// that are no assets, under `in/`. Returns the image and corrupt asset keys.
fn upload_assets(fleet: &Fleet, images: usize, corrupt: usize, videos: usize) -> (Vec<String>, Vec<String>) {
    let fixtures = fixture_images();
    let mut image_keys = Vec::new();
    for i in 0..images {
        let (name, bytes) = &fixtures[i % fixtures.len()];
        let key = format!("img/{i:03}-{name}");
        fleet.put(&format!("in/{key}"), bytes.clone());
        image_keys.push(key);
    }
    let mut corrupt_keys = Vec::new();
    for i in 0..corrupt {
        let key = format!("bad/{i:03}.jpg");
        fleet.put(&format!("in/{key}"), noise(2000 + i, i as u32));
        corrupt_keys.push(key);
    }
    for i in 0..videos {
        fleet.put(&format!("in/clips/{i:02}.mp4"), noise(500, 99 + i as u32));
    }
    fleet.put("in/notes.txt", b"not an asset".to_vec());
    fleet.put("in/data/table.csv", b"a,b\n".to_vec());
    (image_keys, corrupt_keys)
}

/// Exactly one record per asset: a complete one for each image, a decode error for each corrupt file.
fn assert_one_record_per_asset(records: &BTreeMap<String, AssetResult>, images: &[String], corrupt: &[String]) {
    assert_eq!(records.len(), images.len() + corrupt.len(), "records: {:?}", records.keys().collect::<Vec<_>>());
    for key in images {
        let record = records.get(key).unwrap_or_else(|| panic!("no record for {key}"));
        assert!(record.error.is_none(), "{key}: {:?}", record.error);
        let tasks: Vec<&str> = record.outputs.iter().map(|o| o.task.as_str()).collect();
        assert_eq!(tasks, ["describe", "tags"], "{key}");
        for output in &record.outputs {
            assert!(output.generated_tokens >= 1, "{key}");
            assert_eq!(output.translations.len(), 1, "{key}: one translation per language");
        }
    }
    for key in corrupt {
        let record = records.get(key).unwrap_or_else(|| panic!("no record for {key}"));
        let error = record.error.as_ref().unwrap_or_else(|| panic!("{key} decoded"));
        assert_eq!(error.stage, "decode", "{key}");
        assert!(error.message.contains(key.as_str()), "the error names the asset: {}", error.message);
    }
}

#[test]
fn a_mixed_batch_through_two_workers_gets_one_record_per_asset_and_a_rerun_enqueues_nothing_new() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let (images, corrupt) = upload_assets(&fleet, 180, 24, 6);

    // Unknown tasks and languages are refused before anything is sent.
    let source = format!("s3://{}/in/", fleet.bucket);
    let refused = Command::new(&fleet.bins.dispatcher)
        .args(["enqueue", &source, "--tasks", "describe,tagz", "--dry-run"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown task `tagz`"));

    let report = fleet.enqueue(TASKS, LANGS, &[]);
    assert_eq!(report["images"], 204, "{report}");
    assert_eq!(report["videos"], 6, "{report}");
    assert_eq!(report["enqueued"], 210, "{report}");
    // Videos wait in their own model's queue (no video worker in this test).
    assert_eq!(fleet.queue_depth(&topology::queue_name(&fleet.video_route)), 6);

    let a = fleet.spawn_worker("a", MAX_NEW_TOKENS);
    let b = fleet.spawn_worker("b", MAX_NEW_TOKENS);
    let records = fleet.wait_for_records(204, PATIENCE, &[&a, &b]);
    assert_one_record_per_asset(&records, &images, &corrupt);
    // Both workers took jobs.
    for worker in [&a, &b] {
        assert!(worker.logs().contains("job done"), "a worker did nothing:\n{}", worker.logs());
    }

    // Corrupt files were dead-lettered with their reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = Vec::new();
    while dead.len() < corrupt.len() && Instant::now() < deadline {
        dead.extend(fleet.drain_dead_letters());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut dead_assets: Vec<String> = dead.iter().map(|(_, job)| job.asset.clone()).collect();
    dead_assets.sort();
    assert_eq!(dead_assets, corrupt);
    assert!(dead.iter().all(|(reason, job)| reason.contains(&job.asset)), "{dead:?}");

    // status and collect see the whole batch.
    let status = fleet.dispatcher(&["status", &fleet.batch, "--bucket", &fleet.bucket, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!((status["done"].as_u64(), status["failed"].as_u64()), (Some(180), Some(24)), "{status}");
    assert_eq!(status["pending"], 6, "only the videos are pending: {status}");
    let out = fleet.work.path().join("collected.json");
    let html = fleet.work.path().join("gallery");
    let args = ["collect", &fleet.batch, "--bucket", &fleet.bucket, "--out", out.to_str().unwrap()];
    fleet.dispatcher(&[&args[..], &["--html", html.to_str().unwrap()][..]].concat());
    let collected: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(collected["descriptions"].as_array().unwrap().len(), 204);
    assert_eq!(collected["stats"]["succeeded"], 180);
    assert_eq!(collected["stats"]["failed"], 24);
    let lines = std::fs::read_to_string(out.with_extension("jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 204);
    // The gallery: every record, a thumbnail per image fetched from the bucket, the corrupt ones named as such.
    let meta = std::fs::read_to_string(html.join("data/meta.js")).unwrap();
    assert!(meta.contains("\"count\":204") && meta.contains("\"failed\":24"), "{}", &meta[..meta.len().min(600)]);
    let thumbs = std::fs::read_dir(html.join("thumbs")).unwrap().count();
    assert_eq!(thumbs, 180, "one thumbnail per image");
    let chunk = std::fs::read_to_string(html.join("data/chunk-0000.js")).unwrap();
    assert!(chunk.contains("not a picture the gallery can decode"), "corrupt assets get a placeholder saying why");

    // Done and failed are told apart by key: one record per asset, under the key of its kind.
    let keys = fleet.try_record_keys().unwrap();
    assert_eq!(keys.len(), 204, "one record per asset");
    assert_eq!(keys.iter().filter(|k| k.ends_with(".error.json")).count(), 24);

    // A re-run sends only what has no record: the videos, which no worker serves yet.
    let rerun = fleet.enqueue(TASKS, LANGS, &[]);
    assert_eq!(rerun["skipped_done"], 204, "{rerun}");
    assert_eq!(rerun["skipped_failed"], 24, "{rerun}");
    assert_eq!(rerun["enqueued"], 6, "{rerun}");
    // --retry-failed sends the failed assets again (dry run: nothing is sent).
    let retry = fleet.enqueue(TASKS, LANGS, &["--retry-failed", "--dry-run"]);
    assert_eq!(retry["enqueued"], 30, "{retry}");
    // A batch answers one request: other tasks are refused for it, and go as another batch.
    let source = format!("s3://{}/in/", fleet.bucket);
    let refused = fleet.dispatcher_unchecked(&[
        "enqueue",
        &source,
        "--batch",
        &fleet.batch,
        "--tasks",
        "describe",
        "--langs",
        LANGS,
        "--dry-run",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another --batch"), "{refused:?}");
    let other = fleet.dispatcher(&[
        "enqueue",
        &source,
        "--batch",
        &format!("{}-other", fleet.batch),
        "--tasks",
        "describe",
        "--langs",
        LANGS,
        "--dry-run",
    ]);
    let other: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(other["enqueued"], 210, "{other}");
}

#[test]
fn a_worker_killed_mid_batch_loses_nothing() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let (images, corrupt) = upload_assets(&fleet, 60, 4, 0);
    fleet.enqueue(TASKS, LANGS, &[]);
    let mut a = fleet.spawn_worker("a", MAX_NEW_TOKENS);
    let b = fleet.spawn_worker("b", MAX_NEW_TOKENS);
    // Kill `a` once it is busy: it holds a batch of unacked deliveries.
    let deadline = Instant::now() + PATIENCE;
    while !a.logs().contains("job done") {
        assert!(Instant::now() < deadline, "worker a never finished a job:\n{}", a.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    a.kill();
    let records = fleet.wait_for_records(64, PATIENCE, &[&b]);
    assert_one_record_per_asset(&records, &images, &corrupt);
}

#[test]
fn a_broker_restart_mid_batch_loses_nothing() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let (images, corrupt) = upload_assets(&fleet, 60, 4, 0);
    fleet.enqueue(TASKS, LANGS, &[]);
    let a = fleet.spawn_worker("a", MAX_NEW_TOKENS);
    let b = fleet.spawn_worker("b", MAX_NEW_TOKENS);
    let deadline = Instant::now() + PATIENCE;
    while fleet.try_records().map_or(0, |r| r.len()) < 8 {
        assert!(Instant::now() < deadline, "no progress:\n{}", a.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    {
        // The broker is started again however this block ends.
        let _restart = BrokerRestart::stop();
        std::thread::sleep(Duration::from_secs(3));
    }
    let records = fleet.wait_for_records(64, PATIENCE, &[&a, &b]);
    assert_one_record_per_asset(&records, &images, &corrupt);
    let logs = a.logs() + &b.logs();
    assert!(logs.contains("broker session lost"), "the workers never saw the broker go");
}

/// Stops the RabbitMQ application (closing every connection; durable queues survive) and starts it on drop.
struct BrokerRestart;

impl BrokerRestart {
    fn stop() -> BrokerRestart {
        let status = Command::new("rabbitmqctl").arg("stop_app").output().expect("rabbitmqctl");
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        BrokerRestart
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        let started = Command::new("rabbitmqctl").arg("start_app").output().map(|o| o.status.success());
        if started.ok() != Some(true) {
            // The node itself may be gone: start it whole.
            let _ = Command::new("rabbitmq-server").arg("-detached").status();
        }
        let _ = Command::new("rabbitmqctl").args(["await_startup", "--timeout", "60"]).status();
    }
}

#[test]
fn a_storage_outage_of_twenty_seconds_delays_but_loses_nothing() {
    let _serial = serial();
    let mut fleet = Fleet::new(bins());
    let (images, corrupt) = upload_assets(&fleet, 40, 4, 0);
    fleet.enqueue(TASKS, LANGS, &[]);
    let a = fleet.spawn_worker("a", MAX_NEW_TOKENS);
    let b = fleet.spawn_worker("b", MAX_NEW_TOKENS);
    let deadline = Instant::now() + PATIENCE;
    while fleet.try_records().map_or(0, |r| r.len()) < 4 {
        assert!(Instant::now() < deadline, "no progress:\n{}", a.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    fleet.s3.stop();
    std::thread::sleep(Duration::from_secs(20));
    fleet.s3.restart();
    let records = fleet.wait_for_records(44, PATIENCE, &[&a, &b]);
    assert_one_record_per_asset(&records, &images, &corrupt);
    let logs = a.logs() + &b.logs();
    assert!(logs.contains("storage retry"), "the workers never retried storage");
}

/// The meaningful fields of a record: outputs without timings, and the error stage.
fn meaningful(record: &AssetResult) -> serde_json::Value {
    let outputs: Vec<serde_json::Value> = record
        .outputs
        .iter()
        .map(|o| {
            serde_json::json!({
                "task": o.task, "text": o.text, "tokens": o.generated_tokens, "finished": o.finished,
                "tags": o.tags, "tags_processed": o.tags_processed, "translations": o.translations,
            })
        })
        .collect();
    serde_json::json!({
        "asset": record.asset, "kind": record.kind, "model": record.model, "request": record.request,
        "media": record.media, "outputs": outputs, "error": record.error.as_ref().map(|e| e.stage.clone()),
    })
}

#[test]
fn the_fleets_records_equal_worker_runs_for_the_same_folder() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let folder = fleet.work.path().join("folder");
    let mut keys = Vec::new();
    for (name, bytes) in fixture_images() {
        let key = format!("set/{name}");
        std::fs::create_dir_all(folder.join("set")).unwrap();
        std::fs::write(folder.join(&key), &bytes).unwrap();
        fleet.put(&format!("in/{key}"), bytes);
        keys.push(key);
    }
    std::fs::write(folder.join("broken.jpg"), noise(3000, 7)).unwrap();
    fleet.put("in/broken.jpg", noise(3000, 7));
    keys.push("broken.jpg".into());

    let out = fleet.work.path().join("run-out");
    let model = fixtures().join("mllama-tiny");
    let translator = fixtures().join("nllb-tiny");
    let tokens = "6".to_string();
    let run = Command::new(&fleet.bins.worker)
        .arg("run")
        .arg(&folder)
        .arg("--out")
        .arg(&out)
        .args(["--tasks", TASKS, "--langs", LANGS, "--greedy", "--max-new-tokens", &tokens, "--batch-size", "3"])
        .arg("--model")
        .arg(&model)
        .arg("--translator")
        .arg(&translator)
        .env("RUST_LOG", "error")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "one image fails: {}", String::from_utf8_lossy(&run.stderr));

    fleet.enqueue(TASKS, LANGS, &[]);
    let worker = fleet.spawn_worker("a", 6);
    let records = fleet.wait_for_records(keys.len(), PATIENCE, &[&worker]);
    for key in &keys {
        // The same layout: `<key>.json` for a result, `<key>.error.json` for an error, as in the bucket.
        let kind = records[key].record_kind();
        let local = out.join(vislingo_proto::keys::record_file(key, kind));
        let local: AssetResult = serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
        assert_eq!(meaningful(&records[key]), meaningful(&local), "{key}");
        assert!(!out.join(vislingo_proto::keys::record_file(key, kind.other())).exists(), "{key}: two records");
    }
    assert!(Path::new(&out).join("summary.json").exists());
}

/// Videos go to their own route, where a LLaVA-NeXT-Video worker samples the job's frame count and writes records
/// with the video's metadata; a corrupt video gets an error record naming it.
#[test]
fn a_video_worker_describes_the_videos_routed_to_it() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let videos = fixtures().join("videos");
    let clips = ["h264_bframes.mp4", "vp9.webm", "truncated.mp4"];
    for clip in clips {
        fleet.put(&format!("in/clips/{clip}"), std::fs::read(videos.join(clip)).unwrap());
    }
    // The built-in prompts are longer than the tiny model's 512 positions: a task file asks a short question.
    let task_file = fleet.work.path().join("tasks.toml");
    let question = "What happens in this clip?";
    std::fs::write(
        &task_file,
        format!("[[task]]\nname = \"describe\"\nprompt = \"{question}\"\nvideo_prompt = \"{question}\"\n"),
    )
    .unwrap();
    let report = fleet.enqueue("describe", LANGS, &["--frames", "3"]);
    assert_eq!(report["videos"], 3, "{report}");

    let model = fixtures().join("llava-next-video-tiny");
    let worker = fleet.spawn_worker_with(
        "video",
        &fleet.video_route,
        &model,
        MAX_NEW_TOKENS,
        &["--task-file".as_ref(), task_file.as_os_str()],
    );
    let records = fleet.wait_for_records(clips.len(), PATIENCE, &[&worker]);
    for clip in ["h264_bframes.mp4", "vp9.webm"] {
        let key = format!("clips/{clip}");
        let record = records.get(&key).unwrap_or_else(|| panic!("no record for {key}"));
        assert!(record.error.is_none(), "{key}: {:?}", record.error);
        let video = record.media.as_ref().and_then(|m| m.video.as_ref()).unwrap_or_else(|| panic!("{key}: no video"));
        assert_eq!(video.frame_indices.len(), 3, "{key}: the job's --frames 3 is used");
        assert_eq!(record.outputs.len(), 1, "{key}");
        assert!(record.outputs[0].generated_tokens >= 1, "{key}");
        assert_eq!(record.outputs[0].translations.len(), 1, "{key}");
    }
    let truncated = &records["clips/truncated.mp4"];
    let error = truncated.error.as_ref().expect("the truncated clip fails");
    assert_eq!(error.stage, "decode");
    assert!(error.message.contains("truncated.mp4"), "the error names the asset: {}", error.message);
}

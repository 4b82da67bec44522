//! The fleet's failure paths on real RabbitMQ and s3s-fs with the tiny models: SIGTERM mid-batch, poison jobs that
//! crash or stall their worker, an ack lost after the record was written, and a live worker's /metrics, /healthz
//! and /readyz. Faults are injected by the tests' wrapper binary only (`tests/src/bin/fleet_worker.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use vislingo_fleet_tests::{fixture_images, fixtures, http_get, metric, noise, serial, Bins, Fleet, WorkerProcess};
use vislingo_proto::topology::DELIVERY_LIMIT;
use vislingo_proto::AssetResult;

fn bins() -> Bins {
    Bins {
        worker: env!("CARGO_BIN_EXE_fleet-worker").into(),
        dispatcher: env!("CARGO_BIN_EXE_fleet-dispatcher").into(),
    }
}

const TASKS: &str = "describe,tags";
const LANGS: &str = "fra_Latn";
const PATIENCE: Duration = Duration::from_secs(600);

/// Uploads `count` fixture images under `in/img/` named `<n>-<marker><name>` for the markers given by index.
fn upload_images(fleet: &Fleet, count: usize, marker: impl Fn(usize) -> &'static str) -> Vec<String> {
    let fixtures = fixture_images();
    (0..count)
        .map(|i| {
            let (name, bytes) = &fixtures[i % fixtures.len()];
            let key = format!("img/{i:03}-{}{name}", marker(i));
            fleet.put(&format!("in/{key}"), bytes.clone());
            key
        })
        .collect()
}

/// Every job a worker settled (done, or failed and dead-lettered), by job id, with how often.
fn settlements(workers: &[&WorkerProcess]) -> BTreeMap<String, usize> {
    let mut settled = BTreeMap::new();
    for worker in workers {
        for (message, job) in worker.job_events() {
            if message == "job done" || message == "job failed, dead-lettered" {
                *settled.entry(job).or_insert(0) += 1;
            }
        }
    }
    settled
}

fn assert_complete(records: &BTreeMap<String, AssetResult>, keys: &[String]) {
    for key in keys {
        let record = records.get(key).unwrap_or_else(|| panic!("no record for {key}"));
        assert!(record.error.is_none(), "{key}: {:?}", record.error);
        assert_eq!(record.outputs.len(), 2, "{key}");
    }
}

#[test]
fn sigterm_mid_batch_finishes_the_jobs_in_hand_exits_0_and_loses_or_repeats_nothing() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let images = upload_images(&fleet, 30, |_| "");
    fleet.put("in/bad/0.jpg", noise(2000, 1));
    fleet.put("in/bad/1.jpg", noise(2100, 2));
    fleet.enqueue(TASKS, LANGS, &[]);

    // Longer answers: each batch takes seconds, so the signal lands in the middle of one.
    let mut a = fleet.spawn_worker("a", 12);
    let address = a.http_address();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, text) = http_get(&address, "/metrics");
        let done = metric(&text, "vislingo_jobs_total{outcome=\"done\"}").unwrap_or(0.0);
        if done >= 1.0 && metric(&text, "vislingo_jobs_in_flight").unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "worker a never got busy:\n{}", a.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    a.terminate();
    let status = a.wait_exit(Duration::from_secs(300));
    assert_eq!(status.code(), Some(0), "a SIGTERM exits cleanly:\n{}", a.logs());
    let logs = a.logs();
    let signalled = logs.find("\"signal\":\"SIGTERM\"").expect("the worker saw SIGTERM");
    let (before, after) = logs.split_at(signalled);
    assert!(after.contains("consumer cancelled, finishing the jobs in hand"), "{logs}");
    assert!(after.contains("\"job done\""), "the jobs in hand were finished after the signal:\n{after}");
    assert!(after.contains("\"stopped\""), "{after}");
    assert!(before.contains("\"job done\""));

    // Another worker takes what is left: every asset once, no job settled twice, no asset sent to .dead twice.
    let b = fleet.spawn_worker("b", 12);
    let records = fleet.wait_for_records(32, PATIENCE, &[&b]);
    assert_complete(&records, &images);
    assert_eq!(records["bad/0.jpg"].error.as_ref().map(|e| e.stage.as_str()), Some("decode"));
    // The last settlements follow the last records.
    let deadline = Instant::now() + Duration::from_secs(60);
    while settlements(&[&a, &b]).len() < 32 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let settled = settlements(&[&a, &b]);
    assert_eq!(settled.len(), 32, "one settlement per job: {settled:?}");
    assert!(settled.values().all(|&times| times == 1), "a job settled twice: {settled:?}");
    let mut dead: Vec<String> = fleet.drain_dead_letters().into_iter().map(|(_, job)| job.asset).collect();
    dead.sort();
    assert_eq!(dead, ["bad/0.jpg", "bad/1.jpg"]);
}

/// Restarts a worker whenever it exits, as Kubernetes would, until `done` (shown the workers so far) says so;
/// returns the exit statuses and the workers.
fn supervise(
    fleet: &Fleet,
    name: &str,
    extra: &[&OsStr],
    env: &[(&str, &str)],
    mut done: impl FnMut(&[WorkerProcess]) -> bool,
) -> (Vec<std::process::ExitStatus>, Vec<WorkerProcess>) {
    let spawn = |n: usize| {
        let model = fixtures().join("mllama-tiny");
        fleet.spawn_worker_env(&format!("{name}-{n}"), &fleet.route, &model, 3, extra, env)
    };
    let mut exits = Vec::new();
    let mut workers = vec![spawn(0)];
    let deadline = Instant::now() + PATIENCE;
    while !done(&workers) {
        let current = workers.last_mut().unwrap();
        if let Some(status) = current.exited() {
            exits.push(status);
            assert!(exits.len() <= 3 * DELIVERY_LIMIT as usize, "too many exits:\n{}", current.logs());
            workers.push(spawn(exits.len()));
        }
        assert!(Instant::now() < deadline, "not done:\n{}", workers.last().unwrap().logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    (exits, workers)
}

#[test]
fn poison_jobs_that_crash_or_stall_workers_are_dead_lettered_after_the_delivery_limit_and_their_batch_mates_complete() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let images = upload_images(&fleet, 10, |i| match i {
        3 => "poison-crash-",
        6 => "poison-stall-",
        _ => "",
    });
    fleet.put("in/bad/corrupt.jpg", noise(2000, 3));
    fleet.put("in/bad/missing.jpg", noise(2000, 4));
    fleet.enqueue(TASKS, LANGS, &[]);
    // Permanent failures: an asset deleted after its job was sent.
    fleet.runtime.block_on(fleet.storage.delete(&fleet.bucket, "in/bad/missing.jpg")).unwrap();

    let extra: [&OsStr; 2] = ["--batch-timeout-s".as_ref(), "8".as_ref()];
    let env = [("VISLINGO_TEST_FAULTS", "crash:poison-crash-,stall:poison-stall-")];
    let (exits, workers) =
        supervise(&fleet, "w", &extra, &env, |_| fleet.try_records().is_some_and(|records| records.len() == 12));
    let records = fleet.try_records().unwrap();

    let poison: Vec<&String> = images.iter().filter(|k| k.contains("poison")).collect();
    let innocent: Vec<String> = images.iter().filter(|k| !k.contains("poison")).cloned().collect();
    assert_complete(&records, &innocent);
    for key in &poison {
        let error = records[*key].error.as_ref().unwrap_or_else(|| panic!("{key} has a result"));
        assert_eq!(error.stage, "poison", "{key}");
        let times = format!("delivered {DELIVERY_LIMIT} times");
        assert!(error.message.contains(key.as_str()) && error.message.contains(&times), "{}", error.message);
    }
    assert_eq!(records["bad/corrupt.jpg"].error.as_ref().map(|e| e.stage.as_str()), Some("decode"));
    assert_eq!(records["bad/missing.jpg"].error.as_ref().map(|e| e.stage.as_str()), Some("read"));

    // Crashes end by a signal; stalls by the watchdog's exit status 1.
    let crashes = exits.iter().filter(|s| s.code().is_none()).count();
    let stalls = exits.iter().filter(|s| s.code() == Some(1)).count();
    assert!(crashes >= 1 && stalls >= 1, "{exits:?}");
    assert!(exits.len() >= DELIVERY_LIMIT as usize - 1, "each poison job failed its first deliveries: {exits:?}");
    let logs: String = workers.iter().map(|w| w.logs()).collect();
    assert!(logs.contains("the model thread is stalled"), "{logs}");

    // Every failure went to the route's dead-letter queue, once, with its reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = Vec::new();
    while dead.len() < 4 && Instant::now() < deadline {
        dead.extend(fleet.drain_dead_letters());
        std::thread::sleep(Duration::from_millis(200));
    }
    let dead_assets: BTreeSet<&str> = dead.iter().map(|(_, job)| job.asset.as_str()).collect();
    let expected: BTreeSet<&str> =
        poison.iter().map(|k| k.as_str()).chain(["bad/corrupt.jpg", "bad/missing.jpg"]).collect();
    assert_eq!(dead_assets, expected);
    assert_eq!(dead.len(), 4, "{dead:?}");
    for (reason, job) in &dead {
        assert!(reason.contains(&job.asset), "{reason}");
        if job.asset.contains("poison") {
            assert!(reason.contains("crashed or stalled"), "{reason}");
        }
    }
}

#[test]
fn a_job_whose_ack_was_lost_after_its_record_was_written_is_settled_on_redelivery_without_running_again() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let images = upload_images(&fleet, 4, |i| if i == 1 { "ack-lost-" } else { "" });
    fleet.enqueue(TASKS, LANGS, &[]);
    // The worker aborts right after writing that record, before its ack (as a consumer timeout or a crash would
    // lose it); were the job run again, it would abort again.
    let env = [("VISLINGO_TEST_FAULTS", "crash-after-write:ack-lost-")];
    let settled_by_record = |workers: &[WorkerProcess]| {
        let lines: String = workers.iter().map(|w| w.logs()).collect();
        let settled = vislingo_fleet_tests::log_lines(&lines).any(|line| {
            line["fields"]["message"] == "job done"
                && line["fields"]["already_written"] == true
                && line["span"]["asset"].as_str().is_some_and(|a| a.contains("ack-lost-"))
        });
        settled
    };
    let (exits, mut workers) = supervise(&fleet, "w", &[], &env, settled_by_record);
    // The redelivered job was settled by its record, found by the job id in the record's metadata; the second
    // worker goes on running.
    assert_eq!(exits.len(), 1, "one crash, no second run: {exits:?}");
    assert!(exits[0].code().is_none(), "the first worker aborted: {exits:?}");
    assert!(workers.last_mut().unwrap().exited().is_none());
    let records = fleet.wait_for_records(4, PATIENCE, &[workers.last().unwrap()]);
    assert_complete(&records, &images);
}

#[test]
fn a_running_workers_metrics_health_and_readiness_follow_its_work() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let model = fixtures().join("mllama-tiny");

    // No broker: alive, models loaded, not ready.
    let unreachable: [&OsStr; 2] = ["--amqp".as_ref(), "amqp://guest:guest@127.0.0.1:1/%2f".as_ref()];
    let mut lonely = fleet.spawn_worker_with("lonely", &fleet.route, &model, 3, &unreachable);
    let address = lonely.http_address();
    let deadline = Instant::now() + PATIENCE;
    let body = loop {
        let (status, body) = http_get(&address, "/readyz");
        assert_eq!(status, 503, "{body}");
        if body.contains("models loaded true") {
            break body;
        }
        assert!(Instant::now() < deadline, "models never loaded:\n{}", lonely.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.contains("broker connected false"), "{body}");
    assert_eq!(http_get(&address, "/healthz").0, 200);
    lonely.kill();

    // With a broker: ready, and every counter at zero before work.
    let worker = fleet.spawn_worker("w", 3);
    let address = worker.http_address();
    let deadline = Instant::now() + PATIENCE;
    while http_get(&address, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", worker.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(&address, "/healthz"), (200, "ok\n".to_string()));
    let (status, before) = http_get(&address, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&before, "vislingo_jobs_total{outcome=\"done\"}"), Some(0.0), "{before}");
    assert_eq!(metric(&before, "vislingo_generated_tokens_total"), Some(0.0));
    assert!(metric(&before, "vislingo_model_load_seconds").unwrap() > 0.0);
    assert!(metric(&before, "process_resident_memory_bytes").unwrap() > 0.0);

    // A small batch: five images and a corrupt file.
    let images = upload_images(&fleet, 5, |_| "");
    let corrupt = noise(1500, 5);
    fleet.put("in/bad/0.jpg", corrupt.clone());
    fleet.enqueue(TASKS, LANGS, &[]);
    let records = fleet.wait_for_records(6, PATIENCE, &[&worker]);
    assert_complete(&records, &images);
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let (_, text) = http_get(&address, "/metrics");
        let settled = metric(&text, "vislingo_jobs_total{outcome=\"done\"}").unwrap_or(0.0)
            + metric(&text, "vislingo_jobs_total{outcome=\"failed\"}").unwrap_or(0.0);
        if settled >= 6.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "jobs not counted:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(metric(&text, "vislingo_jobs_total{outcome=\"done\"}"), Some(5.0), "{text}");
    assert_eq!(metric(&text, "vislingo_jobs_total{outcome=\"failed\"}"), Some(1.0));
    assert_eq!(metric(&text, "vislingo_jobs_total{outcome=\"requeued\"}"), Some(0.0));
    assert_eq!(metric(&text, "vislingo_dead_letters_total{stage=\"decode\"}"), Some(1.0));
    assert_eq!(metric(&text, "vislingo_jobs_in_flight"), Some(0.0));
    assert_eq!(metric(&text, "vislingo_job_duration_seconds_count"), Some(6.0));
    for stage in ["download", "decode", "vision", "generate", "translate", "upload"] {
        let count = metric(&text, &format!("vislingo_stage_duration_seconds_count{{stage=\"{stage}\"}}"));
        assert_eq!(count, Some(6.0), "stage {stage}:\n{text}");
    }
    let tokens: u32 = records.values().flat_map(|r| &r.outputs).map(|o| o.generated_tokens).sum();
    assert!(tokens > 0);
    assert_eq!(metric(&text, "vislingo_generated_tokens_total"), Some(tokens as f64));
    assert!(metric(&text, "vislingo_generation_tokens_per_second").unwrap() > 0.0);
    let bytes: usize = fixture_images().iter().cycle().take(5).map(|(_, b)| b.len()).sum::<usize>() + corrupt.len();
    assert_eq!(metric(&text, "vislingo_downloaded_bytes_total"), Some(bytes as f64));
    assert_eq!(metric(&text, "vislingo_batch_size_sum"), Some(6.0));
    assert_eq!(metric(&text, "vislingo_broker_reconnects_total"), Some(0.0));
}

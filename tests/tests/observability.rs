//! The deployment's dashboard and alert rules against reality: a real Prometheus (Debian's binary, on a free port)
//! scrapes a real `worker serve` that processes a small batch with the tiny models, and RabbitMQ's own Prometheus
//! endpoint (rabbitmq_prometheus, /metrics/per-object); then every query of deploy/grafana/dashboards and every
//! rule of deploy/prometheus/rules is evaluated through Prometheus' HTTP API. Every dashboard query must return
//! data, every rule must evaluate without error, and every metric name they read must be exported by the worker,
//! by RabbitMQ or by the rules themselves.
//!
//! Needs, besides the fleet tests' RabbitMQ and s3s-fs: `prometheus` (Debian package; or `PROMETHEUS=path`) and
//! the rabbitmq_prometheus plugin on 127.0.0.1:15692 (`RABBITMQ_PROMETHEUS_PORT`); `.ci/run` provides both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vislingo_fleet_tests::prometheus::{exposed_names, http_get, metric_names, rule_files, Prometheus, ScrapeJob};
use vislingo_fleet_tests::{fixture_images, noise, serial, Bins, Fleet, WorkerProcess};
use vislingo_proto::topology;

/// Metrics a worker exports only on a GPU (this test's worker runs on the CPU): their queries must parse and
/// evaluate, but cannot have data here. `worker/src/metrics.rs` defines them.
const GPU_ONLY: &[&str] = &["vislingo_device_memory_bytes"];

fn bins() -> Bins {
    Bins {
        worker: env!("CARGO_BIN_EXE_fleet-worker").into(),
        dispatcher: env!("CARGO_BIN_EXE_fleet-dispatcher").into(),
    }
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn rabbitmq_prometheus_port() -> u16 {
    std::env::var("RABBITMQ_PROMETHEUS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(15692)
}

/// Grafana's range variables, replaced by a window that covers the whole test.
const WINDOW: &str = "10m";

/// The worker's HTTP address, from its `http listening` log line.
fn listen_address(worker: &WorkerProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for line in worker.logs().lines() {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if json["fields"]["message"] == "http listening" {
                return json["fields"]["address"].as_str().expect("the address is logged").to_string();
            }
        }
        assert!(Instant::now() < deadline, "the worker never listened:\n{}", worker.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `expr` until its first sample's value satisfies `done` (panics after two minutes).
fn wait_for(prometheus: &Prometheus, expr: &str, done: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let value =
            prometheus.query(expr).ok().and_then(|result| result.first()?["value"][1].as_str()?.parse::<f64>().ok());
        if value.is_some_and(&done) {
            return;
        }
        assert!(Instant::now() < deadline, "{expr} stayed at {value:?}:\n{}", prometheus.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A dashboard query with Grafana's variables set to this test's route and worker.
fn resolve(expr: &str, route: &str, worker: &str) -> String {
    expr.replace("$__rate_interval", WINDOW)
        .replace("$__interval", "15s")
        .replace("$__range", WINDOW)
        .replace("$route", route)
        .replace("$worker", worker)
}

/// Every query of a dashboard: (where it is, the expression). Variable queries (`label_values(SELECTOR, LABEL)`)
/// come as the selector, with the label they list.
fn dashboard_queries(dashboard: &serde_json::Value) -> (Vec<(String, String)>, Vec<(String, String, String)>) {
    let mut targets = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let place =
                format!("panel {} \"{}\" {}", panel["id"], panel["title"].as_str().unwrap_or(""), target["refId"]);
            targets.push((place, target["expr"].as_str().expect("every target has an expr").to_string()));
        }
    }
    let mut variables = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().unwrap();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(',').unwrap();
        variables.push((
            variable["name"].as_str().unwrap().to_string(),
            selector.trim().to_string(),
            label.trim().to_string(),
        ));
    }
    (targets, variables)
}

#[test]
fn every_dashboard_query_and_rule_evaluates_on_a_real_worker_and_broker() {
    let _serial = serial();
    let fleet = Fleet::new(bins());
    let rabbit = rabbitmq_prometheus_port();
    let answered = http_get(rabbit, "/metrics/per-object").map(|(status, _)| status);
    assert_eq!(
        answered,
        Some(200),
        "RabbitMQ's Prometheus endpoint on 127.0.0.1:{rabbit}: run `rabbitmq-plugins enable rabbitmq_prometheus`"
    );

    // Three images and one undecodable file (it is dead-lettered, so the dead-letter series exist).
    let images = fixture_images();
    for (i, (name, bytes)) in images.iter().cycle().take(3).enumerate() {
        fleet.put(&format!("in/{i}-{name}"), bytes.clone());
    }
    fleet.put("in/broken.jpg", noise(3000, 7));

    let worker = fleet.spawn_worker("observed", 2);
    let address = listen_address(&worker);
    let prometheus = Prometheus::start(
        &[
            ScrapeJob { name: "vislingo-worker", metrics_path: "/metrics", target: address.clone() },
            ScrapeJob { name: "rabbitmq", metrics_path: "/metrics/per-object", target: format!("127.0.0.1:{rabbit}") },
        ],
        &rule_files(&deploy()),
    );
    // Prometheus sees the worker before any job, so that rates cover the batch.
    wait_for(&prometheus, &format!("sum(vislingo_worker_ready{{instance=\"{address}\"}})"), |v| v == 1.0);

    let report = fleet.enqueue("describe,tags", "fra_Latn", &[]);
    assert_eq!(report["enqueued"], 4, "{report}");
    fleet.wait_for_records(4, Duration::from_secs(600), &[&worker]);
    let settled = format!("sum(vislingo_jobs_total{{instance=\"{address}\", outcome=~\"done|failed\"}})");
    wait_for(&prometheus, &settled, |v| v == 4.0);
    // RabbitMQ refreshes its queue metrics every few seconds: wait until the dead letter shows.
    let dead_queue = topology::dead_letter_queue_name(&fleet.route);
    wait_for(&prometheus, &format!("sum(rabbitmq_queue_messages{{queue=\"{dead_queue}\"}})"), |v| v == 1.0);
    // Two more scrapes and a rule evaluation after the last change.
    std::thread::sleep(Duration::from_secs(3));

    // What the worker and RabbitMQ export, and what the rules record.
    let (_, worker_metrics) = http_get(address.rsplit_once(':').unwrap().1.parse().unwrap(), "/metrics").unwrap();
    let worker_names = exposed_names(&worker_metrics);
    let (_, rabbit_metrics) = http_get(rabbit, "/metrics/per-object").unwrap();
    let rabbit_names = exposed_names(&rabbit_metrics);
    let rules = prometheus.rules();
    let recorded: BTreeSet<String> =
        rules.iter().filter(|r| r["type"] == "recording").map(|r| r["name"].as_str().unwrap().to_string()).collect();
    let known = |name: &str| {
        name == "up"
            || worker_names.contains(name)
            || rabbit_names.contains(name)
            || recorded.contains(name)
            || GPU_ONLY.contains(&name)
    };

    // The dashboard: every query returns data; every name it reads exists.
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in std::fs::read_dir(deploy().join("grafana/dashboards")).unwrap() {
        let path = file.unwrap().path();
        let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (targets, variables) = dashboard_queries(&dashboard);
        assert!(targets.len() >= 20, "{}: {} queries", path.display(), targets.len());
        for (name, selector, label) in variables {
            for metric in metric_names(&selector) {
                if !known(&metric) {
                    problems.push(format!("variable {name}: reads {metric}, which nothing exports"));
                }
            }
            let values: BTreeSet<String> = match prometheus.query(&resolve(&selector, &fleet.route, &address)) {
                Ok(result) => result.iter().filter_map(|s| s["metric"][&label].as_str().map(String::from)).collect(),
                Err(error) => {
                    problems.push(format!("variable {name}: {selector}: {error}"));
                    continue;
                }
            };
            let expected = match name.as_str() {
                "route" => topology::queue_name(&fleet.route),
                "worker" => address.clone(),
                other => panic!("variable {other} is not known to this test"),
            };
            if !values.contains(&expected) {
                problems.push(format!("variable {name}: {selector} lists {values:?}, not {expected}"));
            }
            checked += 1;
        }
        for (place, expr) in targets {
            for name in metric_names(&expr) {
                if !known(&name) {
                    problems.push(format!("{place}: reads {name}, which nothing exports"));
                }
            }
            let gpu_only = metric_names(&expr).iter().any(|name| GPU_ONLY.contains(&name.as_str()));
            match prometheus.query(&resolve(&expr, &fleet.route, &address)) {
                Ok(result) if result.is_empty() && gpu_only => checked += 1,
                Ok(result) if result.is_empty() => problems.push(format!("{place}: no data for {expr}")),
                Ok(_) => checked += 1,
                Err(error) => problems.push(format!("{place}: {expr}: {error}")),
            }
        }
    }

    // The rules: all loaded, evaluated without error, reading only known names; recording rules have data for
    // this test's route (alerts stay silent: their windows are longer than this test).
    let declared = rule_files(&deploy())
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .flat_map(|text| text.lines().map(str::trim).map(String::from).collect::<Vec<_>>())
        .filter(|line| line.starts_with("- alert:") || line.starts_with("- record:"))
        .count();
    assert_eq!(rules.len(), declared, "Prometheus loaded {} of the {declared} rules", rules.len());
    let mut per_route: BTreeMap<String, usize> = BTreeMap::new();
    for rule in &rules {
        let (name, query) = (rule["name"].as_str().unwrap(), rule["query"].as_str().unwrap());
        if rule["health"] != "ok" || !rule["lastError"].as_str().unwrap_or("").is_empty() {
            problems.push(format!("rule {name}: health {} {}", rule["health"], rule["lastError"]));
        }
        for metric in metric_names(query) {
            if !known(&metric) {
                problems.push(format!("rule {name}: reads {metric}, which nothing exports"));
            }
        }
        match prometheus.query(query) {
            Err(error) => problems.push(format!("rule {name}: {error}")),
            Ok(_) if rule["type"] == "alerting" => checked += 1,
            Ok(_) => {
                let mine = format!("{name}{{route=\"{}\"}}", fleet.route);
                match prometheus.query(&mine) {
                    Ok(result) if !result.is_empty() => *per_route.entry(name.to_string()).or_default() += 1,
                    other => problems.push(format!("rule {name}: no series for this test's route: {other:?}")),
                }
                checked += 1;
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\nPrometheus:\n{}",
        problems.len(),
        problems.join("\n"),
        prometheus.logs()
    );
    assert!(per_route.len() >= 4, "recording rules with data: {per_route:?}");
    eprintln!("observability: {checked} checked: dashboard queries and variables with data, rules without error");
}

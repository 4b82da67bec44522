//! Fleet tests' harness: a fresh s3s-fs server per test (stoppable, restartable on the same data), unique
//! bucket, route and batch names per test on the shared RabbitMQ, dispatcher and worker processes started from
//! this package's wrapper binaries, and helpers that read the results back.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, or `AMQP_URL`) and `s3s-fs` (`S3S_FS`, `$CARGO_HOME/bin` or
//! `PATH`); `.ci/run` provides both.

pub mod prometheus;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vislingo_fleet::{S3Args, Storage};
use vislingo_proto::{keys, AssetResult};

pub const ACCESS_KEY: &str = "vislingo-test-access";
pub const SECRET_KEY: &str = "vislingo-test-secret";

/// The binaries under test (the integration test passes `env!("CARGO_BIN_EXE_...")`).
#[derive(Debug, Clone)]
pub struct Bins {
    pub worker: PathBuf,
    pub dispatcher: PathBuf,
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// The tiny fixture models.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/fixtures")
}

/// One fleet test at a time in a test binary: each runs two workers on two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A name no other test run uses: lower case, `<prefix>-<pid>-<n>-<time>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{n}-{}", std::process::id(), nanos % 1_000_000)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn s3s_fs_binary() -> PathBuf {
    if let Ok(path) = std::env::var("S3S_FS") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let installed = cargo_home.join("bin/s3s-fs");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("s3s-fs")
}

/// An s3s-fs server on its own data folder and port.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let mut server = S3Server { child: None, port: free_port(), dir: tempfile::tempdir().unwrap() };
        server.restart();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data folder; returns once the port accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs (cargo install s3s-fs@0.14.1 --features binary --locked, or set S3S_FS)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (the outage starts).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A started `worker serve`; killed when dropped. Its logs go to `log`.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status once the process has ended, `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to end (panics after `timeout`, with its logs).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "the worker did not exit within {timeout:?}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address of its /metrics, /healthz and /readyz, from its `http listening` log line (waits for it).
    pub fn http_address(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let logs = self.logs();
            if let Some(address) = log_lines(&logs)
                .find(|line| line["fields"]["message"] == "http listening")
                .and_then(|line| line["fields"]["address"].as_str().map(str::to_string))
            {
                return address;
            }
            assert!(Instant::now() < deadline, "no `http listening` line:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `(message, job id)` of every JSON log line about a job.
    pub fn job_events(&self) -> Vec<(String, String)> {
        let logs = self.logs();
        log_lines(&logs)
            .filter_map(|line| {
                let message = line["fields"]["message"].as_str()?.to_string();
                let job = line["span"]["job_id"].as_str()?.to_string();
                Some((message, job))
            })
            .collect()
    }
}

/// The JSON lines of a log (others, such as panics, are skipped).
pub fn log_lines(logs: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    logs.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
}

/// `GET path` from `address`: the status code and the body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The value of the Prometheus sample `series` (`name` or `name{label="value"}`) in a /metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's fleet: storage, bucket, routes, batch, and the processes it starts.
pub struct Fleet {
    pub bins: Bins,
    pub s3: S3Server,
    pub bucket: String,
    pub route: String,
    pub video_route: String,
    pub batch: String,
    pub work: tempfile::TempDir,
    pub runtime: tokio::runtime::Runtime,
    pub storage: Storage,
}

impl Fleet {
    pub fn new(bins: Bins) -> Fleet {
        let s3 = S3Server::start();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        set_aws_env();
        let args = S3Args {
            s3_endpoint: Some(s3.endpoint()),
            s3_path_style: Some(true),
            s3_default_region: "us-east-1".into(),
            s3_timeout_s: 10,
        };
        let storage = runtime.block_on(Storage::connect(&args));
        let bucket = unique("vl");
        runtime.block_on(storage.create_bucket(&bucket)).unwrap();
        Fleet {
            bins,
            s3,
            bucket,
            route: unique("img"),
            video_route: unique("vid"),
            batch: unique("batch"),
            work: tempfile::tempdir().unwrap(),
            runtime,
            storage,
        }
    }

    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        self.runtime.block_on(self.storage.put(&self.bucket, key, bytes)).unwrap();
    }

    fn command(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("VISLINGO_") || name == "RUST_LOG") {
            command.env_remove(name);
        }
        command
            .env("AMQP_URL", amqp_url())
            .env("S3_ENDPOINT", self.s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HF_HUB_OFFLINE", "1");
        command
    }

    /// Runs the dispatcher with `args`; panics unless it succeeds.
    pub fn dispatcher(&self, args: &[&str]) -> Output {
        let output = self.dispatcher_unchecked(args);
        assert!(output.status.success(), "dispatcher {args:?}:\n{}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Runs the dispatcher with `args`, whatever its exit status.
    pub fn dispatcher_unchecked(&self, args: &[&str]) -> Output {
        self.command(&self.bins.dispatcher).args(args).env("RUST_LOG", "warn").output().unwrap()
    }

    /// `dispatcher enqueue s3://<bucket>/in/` for this fleet's batch and routes; the JSON report.
    pub fn enqueue(&self, tasks: &str, langs: &str, extra: &[&str]) -> serde_json::Value {
        let source = format!("s3://{}/in/", self.bucket);
        let routes = format!("image={},video={}", self.route, self.video_route);
        let mut args = vec![
            "enqueue",
            &source,
            "--batch",
            &self.batch,
            "--tasks",
            tasks,
            "--langs",
            langs,
            "--model-route",
            &routes,
        ];
        args.extend_from_slice(extra);
        let output = self.dispatcher(&args);
        serde_json::from_slice(&output.stdout).expect("enqueue prints one JSON line")
    }

    /// Starts `worker serve` on this fleet's image route with the tiny models (greedy, `max_new_tokens` tokens).
    pub fn spawn_worker(&self, name: &str, max_new_tokens: usize) -> WorkerProcess {
        self.spawn_worker_with(name, &self.route, &fixtures().join("mllama-tiny"), max_new_tokens, &[])
    }

    /// Starts `worker serve` on `route` with the vision model `model`, the tiny translator and `extra` arguments.
    pub fn spawn_worker_with(
        &self,
        name: &str,
        route: &str,
        model: &Path,
        max_new_tokens: usize,
        extra: &[&std::ffi::OsStr],
    ) -> WorkerProcess {
        self.spawn_worker_env(name, route, model, max_new_tokens, extra, &[])
    }

    /// [`Fleet::spawn_worker_with`] with environment variables (`VISLINGO_TEST_FAULTS`, ...).
    pub fn spawn_worker_env(
        &self,
        name: &str,
        route: &str,
        model: &Path,
        max_new_tokens: usize,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let log = self.work.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(&self.bins.worker)
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--route", route, "--listen", "127.0.0.1:0", "--batch-size", "4"])
            .args(["--retry-max-delay-s", "1", "--log-format", "json", "--greedy"])
            .args(["--max-new-tokens", &max_new_tokens.to_string()])
            .args(extra)
            .arg("--model")
            .arg(model)
            .arg("--translator")
            .arg(fixtures().join("nllb-tiny"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        WorkerProcess { child, log }
    }

    /// Every record key of the batch (results and error records); `None` while storage does not answer.
    pub fn try_record_keys(&self) -> Option<Vec<String>> {
        self.runtime.block_on(async {
            let mut found = Vec::new();
            self.storage
                .list(&self.bucket, &keys::results_prefix(&self.batch), |page| {
                    found.extend(page.into_iter().map(|o| o.key))
                })
                .await
                .ok()?;
            Some(found)
        })
    }

    /// Every record of the batch, by asset (its result, or else its error record); `None` while storage does not
    /// answer. Each record sits under the key of its kind.
    pub fn try_records(&self) -> Option<BTreeMap<String, AssetResult>> {
        let found = self.try_record_keys()?;
        self.runtime.block_on(async {
            let mut records: BTreeMap<String, AssetResult> = BTreeMap::new();
            for key in found {
                let (asset, kind) = keys::parse_record_key(&self.batch, &key).expect("a record key");
                if kind == keys::RecordKind::Error && records.contains_key(asset) {
                    continue;
                }
                let bytes = self.storage.get(&self.bucket, &key, 1 << 26).await.ok()?;
                let record: AssetResult = serde_json::from_slice(&bytes).expect("records are valid JSON");
                assert_eq!(record.asset, asset, "{key} holds the record of {}", record.asset);
                assert_eq!(record.record_kind(), kind, "{key}: a record under the key of the other kind");
                records.insert(asset.to_string(), record);
            }
            Some(records)
        })
    }

    /// Waits until the batch has `count` records (panics after `timeout` with the workers' logs).
    pub fn wait_for_records(
        &self,
        count: usize,
        timeout: Duration,
        workers: &[&WorkerProcess],
    ) -> BTreeMap<String, AssetResult> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(records) = self.try_records() {
                if records.len() >= count {
                    return records;
                }
                if Instant::now() > deadline {
                    let logs: Vec<String> = workers.iter().map(|w| tail(&w.logs(), 4000)).collect();
                    panic!(
                        "{} of {count} records after {timeout:?}; worker logs:\n{}",
                        records.len(),
                        logs.join("\n---\n")
                    );
                }
            }
            assert!(Instant::now() < deadline + Duration::from_secs(60), "storage never answered");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Messages ready in a queue.
    pub fn queue_depth(&self, queue: &str) -> u32 {
        self.runtime.block_on(async {
            let connection = vislingo_fleet::broker::connect(&amqp_url()).await.unwrap();
            let channel = connection.create_channel().await.unwrap();
            let (ready, _) = vislingo_fleet::broker::queue_depth(&channel, queue).await.unwrap();
            let _ = connection.close(200, "test".into()).await;
            ready
        })
    }

    /// The dead-lettered messages of the image route: (reason header, body) each; they are consumed.
    pub fn drain_dead_letters(&self) -> Vec<(String, vislingo_proto::Job)> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        self.runtime.block_on(async {
            let connection = vislingo_fleet::broker::connect(&amqp_url()).await.unwrap();
            let channel = connection.create_channel().await.unwrap();
            let queue = vislingo_proto::topology::dead_letter_queue_name(&self.route);
            let mut dead = Vec::new();
            while let Some(message) =
                channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
            {
                let reason = message
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| {
                        h.inner()
                            .iter()
                            .find(|(k, _)| k.as_str() == vislingo_proto::topology::REASON_HEADER)
                            .map(|(_, v)| v.clone())
                    })
                    .map(|v| match v {
                        lapin::types::AMQPValue::LongString(s) => s.to_string(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                let job = vislingo_proto::Job::from_json(&message.delivery.data).unwrap();
                message.delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
                dead.push((reason, job));
            }
            let _ = connection.close(200, "test".into()).await;
            dead
        })
    }
}

impl Drop for Fleet {
    /// Deletes this test's queues so that the shared broker does not collect them.
    fn drop(&mut self) {
        let routes = [self.route.clone(), self.video_route.clone()];
        self.runtime.block_on(async {
            let Ok(connection) = vislingo_fleet::broker::connect(&amqp_url()).await else { return };
            let Ok(channel) = connection.create_channel().await else { return };
            for route in &routes {
                for queue in [
                    vislingo_proto::topology::queue_name(route),
                    vislingo_proto::topology::dead_letter_queue_name(route),
                ] {
                    let _ = channel.queue_delete(queue.as_str().into(), Default::default()).await;
                }
            }
            let _ = connection.close(200, "test".into()).await;
        });
    }
}

fn set_aws_env() {
    // The test process's own S3 client reads the same chain as the binaries.
    // SAFETY: set once per test before any thread reads them; values are constant.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
}

fn tail(text: &str, bytes: usize) -> String {
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].to_string()
}

/// Bytes that no decoder takes for an image (deterministic noise).
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// The fixture images (name, bytes).
pub fn fixture_images() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join("mllama-tiny/images");
    let mut images: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    images.sort();
    images
}

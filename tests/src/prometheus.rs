//! A real Prometheus for the observability test: Debian's `prometheus` binary started on a free port with a
//! generated config (the deployment's rule files, the given scrape targets, 1 s intervals), its HTTP API over plain
//! HTTP/1.0, and the metric names a PromQL expression reads (to check them against what the targets export).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One scrape job of the generated config.
pub struct ScrapeJob<'a> {
    pub name: &'a str,
    pub metrics_path: &'a str,
    pub target: String,
}

/// A started Prometheus; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

fn prometheus_binary() -> PathBuf {
    std::env::var_os("PROMETHEUS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("prometheus"))
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and evaluating `rule_files` every second; returns once
    /// it answers `/-/ready`.
    pub fn start(jobs: &[ScrapeJob], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n");
        for file in rule_files {
            config.push_str(&format!("  - {:?}\n", file.display().to_string()));
        }
        config.push_str("scrape_configs:\n");
        for job in jobs {
            config.push_str(&format!(
                "  - job_name: {:?}\n    metrics_path: {:?}\n    static_configs:\n      - targets: [{:?}]\n",
                job.name, job.metrics_path, job.target
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian: apt-get install prometheus; or set PROMETHEUS)");
        let prometheus = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/-/ready").map(|(status, _)| status) != Some(200) {
            assert!(Instant::now() < deadline, "prometheus did not start:\n{}", prometheus.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query at the current time: `data.result` on success, the error text otherwise.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", percent_encode(expr)))
            .ok_or_else(|| "prometheus did not answer".to_string())?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|error| format!("HTTP {status}, not JSON ({error}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("HTTP {status}: {} {}", json["errorType"], json["error"]));
        }
        Ok(json["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// `/api/v1/rules`: every rule of every group, as Prometheus reports them (name, query, health, lastError).
    pub fn rules(&self) -> Vec<serde_json::Value> {
        let (_, body) = http_get(self.port, "/api/v1/rules").expect("prometheus answers /api/v1/rules");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let groups = json["data"]["groups"].as_array().cloned().unwrap_or_default();
        groups.iter().flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default()).collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.0 (no chunked answer to decode): status and body, `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric names of a Prometheus text exposition: every sample's name, and for each histogram or summary
/// family the `_bucket`, `_sum` and `_count` series it stands for.
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut parts = declaration.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// PromQL words that are no metric names when they stand alone (not followed by `(`): operators, modifiers, and
/// aggregations, which may be followed by `by (...)` before their `(`.
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "atan2",
    "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
];

/// The metric names an expression reads: its identifiers outside strings, label matchers, ranges and label lists
/// that are neither functions, aggregations nor keywords.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank what holds no metric name: string literals, `{...}` matchers, `[...]` ranges.
    let mut plain = String::with_capacity(expr.len());
    let mut closing: Option<char> = None;
    let mut nesting = Vec::new();
    for c in expr.chars() {
        if let Some(end) = closing {
            if c == end {
                closing = None;
            }
            plain.push(' ');
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                closing = Some(c);
                plain.push(' ');
            }
            '{' | '[' => {
                nesting.push(if c == '{' { '}' } else { ']' });
                plain.push(' ');
            }
            '}' | ']' if nesting.last() == Some(&c) => {
                nesting.pop();
                plain.push(' ');
            }
            _ if !nesting.is_empty() => plain.push(' '),
            _ => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            // A number's exponent or a duration's unit follows a digit: `1e3`, `5m`.
            if start > 0 && chars[start - 1].is_ascii_digit() {
                continue;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let grouping = matches!(word.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right");
            if grouping {
                after_grouping = true;
            } else if next != Some(&'(') && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
            continue;
        }
        // The label list of a grouping keyword: skip to its closing parenthesis.
        if c == '(' && after_grouping {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
        }
        if !c.is_whitespace() {
            after_grouping = false;
        }
        i += 1;
    }
    names
}

/// The rule files of the deployment (deploy/prometheus/rules/*.yml).
pub fn rule_files(deploy: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy.join("prometheus/rules"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metric_names_skip_functions_keywords_matchers_and_label_lists() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (le, stage) (rate(vislingo_stage_duration_seconds_bucket{instance=~"$worker", stage!="x y"}[$__rate_interval])))"#
            ),
            ["vislingo_stage_duration_seconds_bucket"]
        );
        assert_eq!(
            names("sum by (route, outcome) (rate(vislingo_jobs_total[5m]) * on (instance) group_left (route) vislingo_worker_info)"),
            ["vislingo_jobs_total", "vislingo_worker_info"]
        );
        assert_eq!(
            names("route:vislingo_queue_messages_ready:sum >= route:vislingo_queue_messages_ready:sum offset 15m unless on (route) up == bool 0"),
            ["route:vislingo_queue_messages_ready:sum", "up"]
        );
        assert_eq!(
            names(
                "time() - vislingo_batch_started_timestamp_seconds > 1.8e3 and x_total / ignoring (stage) group_left y"
            ),
            ["vislingo_batch_started_timestamp_seconds", "x_total", "y"]
        );
        assert_eq!(names(r#"label_replace(a{queue=~`q\.(.+)`}, "route", "$1", "queue", `q\.(.+)`)"#), ["a"]);
    }

    #[test]
    fn exposed_names_include_histogram_series_and_samples() {
        let text = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE c counter\nc_total 3\nd{a=\"b\"} 1\n";
        let names: Vec<String> = exposed_names(text).into_iter().collect();
        assert_eq!(names, ["c", "c_total", "d", "h", "h_bucket", "h_count", "h_sum"]);
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(percent_encode(r#"sum(up{a="b c"})"#), "sum%28up%7Ba%3D%22b%20c%22%7D%29");
    }
}

//! `gallery-open-bench`: how fast a gallery of N generated records (default 10 000) opens in headless Chromium:
//! writes the gallery once, then per run starts a fresh browser, opens `index.html` and reads when the first
//! page of cards was in the DOM (`performance.now()` at that point, i.e. since navigation start), when the frame
//! showing it had been painted (a task queued from the next animation frame), then how long a tag search takes
//! to cover every record. One JSON line.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use vislingo_gallery::testing::cdp::{Browser, Page};
use vislingo_gallery::testing::synthetic::{self, Previews, LANGS};
use vislingo_gallery::{write_gallery, Gallery};

#[derive(Debug, Parser)]
struct Args {
    /// Records in the gallery.
    #[arg(long, env = "VL_GALLERY_RECORDS", default_value_t = 10_000)]
    records: usize,
    /// Timed opens, each in a fresh browser.
    #[arg(long, env = "VL_GALLERY_RUNS", default_value_t = 5)]
    runs: usize,
    /// Tasks of the generated records (among describe, tags, sentiment, ad).
    #[arg(long, env = "VL_GALLERY_TASKS", default_value = "describe,tags,sentiment,ad")]
    tasks: String,
    /// Where the gallery is written (default: a temporary folder).
    #[arg(long, env = "VL_GALLERY_DIR")]
    dir: Option<std::path::PathBuf>,
}

const WAIT: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    let args = Args::parse();
    let tasks: Vec<&str> = args.tasks.split(',').collect();
    let records = synthetic::batch(args.records, &tasks, &LANGS);
    let temporary = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let started = Instant::now();
    let gallery = Gallery { title: "benchmark", source: "generated", records: &records, expected_assets: None };
    let mut previews = Previews::default();
    let report = write_gallery(&dir, &gallery, |record| previews.preview(record))?;
    let write_s = started.elapsed().as_secs_f64();
    let data_bytes = folder_bytes(&dir.join("data"))?;
    let meta_bytes = std::fs::metadata(dir.join("data/meta.js"))?.len();
    let first_chunk_bytes = std::fs::metadata(dir.join("data/chunk-0000.js"))?.len();
    let thumbs_bytes = folder_bytes(&dir.join("thumbs"))?;

    let mut runs = Vec::new();
    for _ in 0..args.runs {
        let browser = Browser::launch()?;
        let page = browser.new_page(1366, 900, false)?;
        runs.push(open_once(&page, &dir.join("index.html"))?);
    }
    let median = |key: &str| {
        let mut values: Vec<f64> = runs.iter().filter_map(|run| run[key].as_f64()).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    let line = json!({
        "records": args.records,
        "tasks": tasks,
        "langs": LANGS,
        "chunks": report.chunks,
        "write_s": write_s,
        "data_bytes": data_bytes,
        "meta_bytes": meta_bytes,
        "first_chunk_bytes": first_chunk_bytes,
        "thumbs_bytes": thumbs_bytes,
        "median_first_page_dom_ms": median("first_page_dom_ms"),
        "median_first_page_painted_ms": median("first_page_painted_ms"),
        "median_search_all_ms": median("search_all_ms"),
        "median_heap_after_search_mb": median("heap_after_search_mb"),
        "runs": runs,
        "chromium": chromium_version(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{line}");
    Ok(())
}

fn open_once(page: &Page<'_>, index: &Path) -> Result<serde_json::Value> {
    let opened = Instant::now();
    page.open_file(index)?;
    page.wait_for("document.documentElement.dataset.state === 'ready'", WAIT)?;
    let dom_ms = page.eval("window.vislingoFirstPageMs")?.as_f64().context("vislingoFirstPageMs")?;
    page.wait_for("window.vislingoFirstPaintMs !== undefined", WAIT)?;
    let painted_ms = page.eval("window.vislingoFirstPaintMs")?.as_f64().context("vislingoFirstPaintMs")?;
    let seen_from_driver_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let cards = page.eval("document.querySelectorAll('#cards .card').length")?;

    // A tag search over every record: from typing to the last chunk searched (includes the 120 ms debounce).
    page.eval("document.getElementById('search').focus()")?;
    let typed = Instant::now();
    page.insert_text("tag:bridge")?;
    page.wait_for(
        "(() => { const d = document.documentElement.dataset; return d.query === 'tag:bridge' && d.busy === '0' && d.search === 'complete'; })()",
        WAIT,
    )?;
    let search_ms = typed.elapsed().as_secs_f64() * 1000.0;
    let matches = page.eval("Number(document.documentElement.dataset.matches)")?;
    let heap = page.call("Runtime.getHeapUsage", json!({}))?;
    let heap_mb = heap["usedSize"].as_f64().unwrap_or(0.0) / 1048576.0;
    Ok(json!({
        "first_page_dom_ms": dom_ms,
        "first_page_painted_ms": painted_ms,
        "seen_from_driver_ms": seen_from_driver_ms,
        "cards": cards,
        "search_all_ms": search_ms,
        "search_matches": matches,
        "heap_after_search_mb": heap_mb,
    }))
}

fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn chromium_version() -> String {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

//! `video-frames-bench`: times sampling k frames of one video by seeking (vislingo's method) against decoding
//! every frame up to the last sampled one (the Python reference's PyAV loop), alternating the two, and prints
//! one JSON line with the medians, their ratio, whether both gave identical frames, and the machine's CPUs and
//! load average before and after the runs. `--seek-only --write-frames` is the seek side of
//! `bench/video_frames_pyav.py`, which runs the article's own PyAV loop against it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use serde_json::json;
use vislingo_worker::media::video::{sample_file, SampleMethod, SampleOptions};

#[derive(Parser, Debug)]
#[command(about = "Time video frame sampling: seeking vs decoding every frame; prints one JSON line")]
struct Args {
    /// The video.
    video: PathBuf,
    /// Frames to sample (k).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Timed runs of each method.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Decoding threads of both methods (`SampleOptions::threads`; 0: one per CPU core for seeking, FFmpeg's
    /// automatic frame-thread count for sequential decoding).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Decoding threads of the sequential method only (default: `--threads`). 1 is what the article's PyAV loop
    /// gets on H.264 with one slice per frame (PyAV opens decoders with slice threading, which has nothing to
    /// split there).
    #[arg(long)]
    sequential_threads: Option<usize>,
    /// Time seeking only (no sequential runs; `identical_frames` is then null).
    #[arg(long)]
    seek_only: bool,
    /// Write the last seek run's frames to this file, packed rgb24 one after the other in frame order (what
    /// `np.stack([f.to_ndarray(format="rgb24") ...]).tobytes()` gives), for a reference to compare against.
    #[arg(long)]
    write_frames: Option<PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The 1, 5 and 15 minute load averages (Linux), to report how busy the machine was.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let load_before = load_average();
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    let sequential_threads = args.sequential_threads.unwrap_or(args.threads);
    let options = |method| {
        let threads = if method == SampleMethod::Sequential { sequential_threads } else { args.threads };
        SampleOptions { frames: args.frames, method, threads, ..SampleOptions::default() }
    };
    let (mut seek_s, mut seq_s) = (Vec::new(), Vec::new());
    let mut identical = true;
    let mut last = None;
    for _ in 0..args.repeats {
        let t = Instant::now();
        let seek = sample_file(&args.video, &options(SampleMethod::Seek))?;
        seek_s.push(t.elapsed().as_secs_f64());
        ensure!(seek.method == SampleMethod::Seek, "seeking fell back to sequential decoding");
        if args.seek_only {
            last = Some(seek);
            continue;
        }
        let t = Instant::now();
        let seq = sample_file(&args.video, &options(SampleMethod::Sequential))?;
        seq_s.push(t.elapsed().as_secs_f64());
        identical &= seek.frames == seq.frames && seek.frame_indices == seq.frame_indices;
        last = Some(seek);
    }
    let sampled = last.expect("repeats > 0");
    if let Some(path) = &args.write_frames {
        let bytes: Vec<u8> = sampled.frames.iter().flat_map(|frame| frame.data.iter().copied()).collect();
        std::fs::write(path, bytes).with_context(|| format!("cannot write the frames to {}", path.display()))?;
    }
    let seek = median(seek_s.clone());
    let seq = (!seq_s.is_empty()).then(|| median(seq_s.clone()));
    let out = json!({
        "video": args.video,
        "info": sampled.info,
        "frame_indices": sampled.frame_indices,
        "repeats": args.repeats,
        "seek_s": seek_s,
        "sequential_s": seq_s,
        "seek_median_s": seek,
        "sequential_median_s": seq,
        "speedup": seq.map(|seq| seq / seek),
        "identical_frames": (!args.seek_only).then_some(identical),
        "frame_shape": sampled.frames.first().map(|f| [f.height, f.width, 3]),
        "threads": args.threads,
        "sequential_threads": sequential_threads,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    });
    println!("{out}");
    ensure!(identical, "seeking and sequential decoding gave different frames");
    Ok(())
}

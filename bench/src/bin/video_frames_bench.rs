//! `video-frames-bench`: times sampling k frames of one video by seeking (vislingo's method) against decoding
//! every frame up to the last sampled one (the Python reference's PyAV loop), alternating the two, and prints
//! one JSON line with the medians, their ratio, and whether both gave identical frames.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
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
    /// Decoder threads (0: FFmpeg picks).
    #[arg(long, default_value_t = 0)]
    threads: usize,
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

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    let options =
        |method| SampleOptions { frames: args.frames, method, threads: args.threads, ..SampleOptions::default() };
    let (mut seek_s, mut seq_s) = (Vec::new(), Vec::new());
    let mut identical = true;
    let mut last = None;
    for _ in 0..args.repeats {
        let t = Instant::now();
        let seek = sample_file(&args.video, &options(SampleMethod::Seek))?;
        seek_s.push(t.elapsed().as_secs_f64());
        ensure!(seek.method == SampleMethod::Seek, "seeking fell back to sequential decoding");
        let t = Instant::now();
        let seq = sample_file(&args.video, &options(SampleMethod::Sequential))?;
        seq_s.push(t.elapsed().as_secs_f64());
        identical &= seek.frames == seq.frames && seek.frame_indices == seq.frame_indices;
        last = Some(seek);
    }
    let sampled = last.expect("repeats > 0");
    let (seek, seq) = (median(seek_s.clone()), median(seq_s.clone()));
    let out = json!({
        "video": args.video,
        "info": sampled.info,
        "frame_indices": sampled.frame_indices,
        "repeats": args.repeats,
        "seek_s": seek_s,
        "sequential_s": seq_s,
        "seek_median_s": seek,
        "sequential_median_s": seq,
        "speedup": seq / seek,
        "identical_frames": identical,
    });
    println!("{out}");
    ensure!(identical, "seeking and sequential decoding gave different frames");
    Ok(())
}

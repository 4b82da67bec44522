//! `worker frames`: probe a video and sample its frames as the pipeline does, printing the metadata and frame
//! numbers and optionally writing the frames as PNGs (for users checking a clip, and for debugging).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::OutputFormat;
use crate::media::video::{sample_file, SampleMethod, SampleOptions, SampledVideo, DEFAULT_FRAMES};

#[derive(Debug, Clone, Args)]
pub struct FramesArgs {
    /// The video file.
    pub video: PathBuf,
    /// Frames to sample (`np.arange(0, N, N / k)`).
    #[arg(long, env = "VISLINGO_FRAMES", default_value_t = DEFAULT_FRAMES)]
    pub frames: usize,
    /// Keep frames as stored instead of applying the clip's rotation (the Python reference ignores it).
    #[arg(long, env = "VISLINGO_NO_ROTATE")]
    pub no_rotate: bool,
    /// Decode every frame from the start instead of seeking (the reference's method; slow, for comparison).
    #[arg(long, env = "VISLINGO_SEQUENTIAL")]
    pub sequential: bool,
    /// Write the sampled frames to this folder as frame_NNNNNN.png.
    #[arg(long, env = "VISLINGO_FRAMES_OUT")]
    pub out: Option<PathBuf>,
    /// `text` for people, `json` for programs.
    #[arg(long, env = "VISLINGO_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub fn run(args: FramesArgs) -> Result<()> {
    let options = SampleOptions {
        frames: args.frames,
        rotate: !args.no_rotate,
        method: if args.sequential { SampleMethod::Sequential } else { SampleMethod::Seek },
        ..SampleOptions::default()
    };
    let started = std::time::Instant::now();
    let sampled = sample_file(&args.video, &options)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut written = Vec::new();
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (number, frame) in sampled.frame_indices.iter().zip(&sampled.frames) {
            let path = dir.join(format!("frame_{number:06}.png"));
            let image = ::image::RgbImage::from_raw(frame.width as u32, frame.height as u32, frame.data.clone())
                .expect("RgbImage holds width * height * 3 bytes");
            image.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
    }
    match args.format {
        OutputFormat::Json => {
            let json = serde_json::json!({
                "video": args.video,
                "info": sampled.info,
                "frame_indices": sampled.frame_indices,
                "method": sampled.method,
                "seconds": seconds,
                "pngs": written,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        OutputFormat::Text => print_text(&args, &sampled, seconds, &written),
    }
    Ok(())
}

fn print_text(args: &FramesArgs, sampled: &SampledVideo, seconds: f64, written: &[PathBuf]) {
    let info = &sampled.info;
    let (w, h) = if args.no_rotate { (info.width, info.height) } else { info.display_size() };
    println!("video:       {}", args.video.display());
    println!("size:        {:.2} MB ({} bytes)", info.size_mb, info.size_bytes);
    println!("container:   {}", info.container);
    println!("codec:       {}", info.codec);
    println!("frame size:  {}x{} stored, rotation {} deg clockwise", info.width, info.height, info.rotation);
    println!("duration:    {:.3} s (first frame at {:.3} s)", info.duration_s, info.start_time_s);
    println!("fps:         {:.3}", info.fps);
    println!("frames:      {} ({:?}; {} packets)", info.frame_count, info.frame_count_source, info.packets);
    println!(
        "sampled:     {:?} ({} frames of {w}x{h}, {:?}, {seconds:.3} s)",
        sampled.frame_indices,
        sampled.frames.len(),
        sampled.method
    );
    for path in written {
        println!("wrote        {}", path.display());
    }
}

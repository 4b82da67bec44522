//! Video probing and frame sampling with FFmpeg (ffmpeg-next): the frames the reference pipeline feeds a video
//! model, found by seeking instead of decoding the whole stream.
//!
//! The reference (LLaVA-NeXT-Video's PyAV example) takes `N = container.streams.video[0].frames`, samples
//! `indices = np.arange(0, N, N / k).astype(int)`, enumerates `container.decode(video=0)` keeping frame `i` when
//! `i in indices`, and converts each with `frame.to_ndarray(format="rgb24")`. This module returns the same frames,
//! byte for byte, but reaches them by seeking: it demuxes the video packets once without decoding them (cheap)
//! to learn every frame's timestamp and the keyframes, then for each wanted frame seeks to the last keyframe at
//! or before it and decodes forward only from there, up to the last wanted packet of that keyframe's segment
//! (skipping the non-reference frames nobody wants for H.264, and for HEVC with one temporal sub-layer: nothing is
//! predicted from them, so the wanted frames are unchanged). Segments are decoded in parallel, one demuxer and
//! decoder per CPU core ([`SampleOptions::threads`]). A frame's number is its rank in presentation-timestamp
//! order, which is the order a decoder outputs frames in (B-frames, variable frame rate and a first timestamp
//! other than 0 need nothing special). When the packets do not allow that mapping (missing or repeated
//! timestamps), the whole stream is decoded in order instead ([`SampleMethod::Sequential`]), which is what the
//! reference does.
//!
//! # API
//! ```no_run
//! use vislingo_worker::media::video::{sample_file, sample_bytes, probe_file, SampleOptions};
//! let sampled = sample_file("clip.mp4", &SampleOptions::default())?; // 8 frames, rotation applied
//! println!("{} frames of {}", sampled.frames.len(), sampled.info.frame_count);
//! for (number, frame) in sampled.frame_indices.iter().zip(&sampled.frames) {
//!     let _: &vislingo_worker::media::RgbImage = frame; // packed RGB8, as PyAV's rgb24 ndarray
//! }
//! let bytes = std::fs::read("clip.mp4")?;
//! let same = sample_bytes(&bytes, "s3://bucket/clip.mp4", &SampleOptions::default())?;
//! let info = probe_file("clip.mp4")?; // metadata only (reads the packets, decodes nothing)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! [`VideoReader`] gives finer control (several samplings of one open file, explicit frame numbers).
//!
//! # Frame count N
//! The container's `nb_frames` when it has one (mp4, mov, avi); otherwise (WebM, Matroska usually)
//! `round(duration * average frame rate)`, capped at the number of video packets in the file; the packet count
//! also when the container's count includes frames an edit list hides (never decoded). Which one was used
//! is [`VideoInfo::frame_count_source`]. A wanted frame the file does not hold (a container count larger than
//! what a truncated file still has) is an error ([`VideoError::Truncated`]), never replaced by another frame.
//!
//! # Limits
//! Frames over [`SampleOptions::max_frame_pixels`] or samplings over [`SampleOptions::max_output_bytes`] are
//! refused before decoding; besides the frames returned, memory holds the packet index (a few dozen bytes per
//! frame of the clip) and the state of one FFmpeg decoder per decoding thread. Files whose packets lack distinct timestamps (raw elementary
//! streams, AVI with B-frames) or cannot be recognised after a seek are decoded sequentially: correct, slower.
//!
//! # Rotation
//! A display matrix (phones record upright clips as landscape frames plus a rotation) is applied by default, as
//! players and `ffmpeg` do (byte-identical to `ffmpeg`'s autorotated output in the tests);
//! [`SampleOptions::rotate`] `= false` returns frames as stored, like the reference. [`VideoInfo::rotation`] is
//! clockwise; ffprobe prints the display matrix's counter-clockwise angle (an upright phone clip: rotation -90,
//! here 90).

#[cfg(feature = "video")]
mod convert;
#[cfg(feature = "video")]
mod reader;
mod sampling;
#[cfg(feature = "video")]
mod seek;

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[cfg(feature = "video")]
pub use self::convert::rotate_clockwise;
#[cfg(feature = "video")]
pub use self::reader::VideoReader;
pub use self::sampling::{article_indices, sampled_frame_numbers};
use super::RgbImage;

/// Frames sampled by default (the article's `k`).
pub const DEFAULT_FRAMES: usize = 8;
/// Largest frame accepted by default, in pixels (a 8K UHD frame is 33 megapixels).
pub const DEFAULT_MAX_FRAME_PIXELS: u64 = 40_000_000;
/// Default cap on the RGB bytes one sampling may return.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 2 << 30;

/// Metadata of a video's first (best) video stream, as probed by FFmpeg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// The file's size in MiB (bytes / 1024^2).
    pub size_mb: f64,
    /// Seconds: the stream's duration, or the container's when the stream has none.
    pub duration_s: f64,
    /// Average frame rate (`avg_frame_rate`, else `r_frame_rate`); 0 when unknown.
    pub fps: f64,
    /// N, the number of frames sampling is based on (see [`VideoInfo::frame_count_source`]).
    pub frame_count: usize,
    /// Where `frame_count` comes from.
    pub frame_count_source: FrameCountSource,
    /// Video packets the demuxer found (each is one frame for the codecs FFmpeg decodes here).
    pub packets: usize,
    /// Stored frame width in pixels (before rotation).
    pub width: u32,
    /// Stored frame height in pixels (before rotation).
    pub height: u32,
    /// FFmpeg's short codec name (`h264`, `hevc`, `vp9`, `av1`, ...).
    pub codec: String,
    /// FFmpeg's container (demuxer) name (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`, ...).
    pub container: String,
    /// Clockwise rotation, in degrees (0, 90, 180, 270), that shows the frames upright: the display matrix's
    /// angle rounded to a quarter turn (the old `rotate` tag's convention).
    pub rotation: u16,
    /// Seconds of the first frame's timestamp (0 for most files).
    pub start_time_s: f64,
}

impl VideoInfo {
    /// Width and height of the frames as returned with rotation applied.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation % 180 == 90 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// How [`VideoInfo::frame_count`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameCountSource {
    /// The container's frame count (`nb_frames`; `container.streams.video[0].frames` in PyAV).
    Container,
    /// The container has none: `round(duration_s * fps)`.
    DurationTimesRate,
    /// The video packets in the file (each a frame): used when the container has no count and
    /// `round(duration_s * fps)` exceeds them, or when the container's count includes frames its edit list hides
    /// (flagged discard, never decoded).
    PacketCount,
}

/// How frames are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleMethod {
    /// Seek to the keyframe at or before each frame and decode from there (falls back to `Sequential` when the
    /// file's timestamps cannot identify frames).
    #[default]
    Seek,
    /// Decode every frame from the start up to the last one wanted (the reference's method; slow).
    Sequential,
}

/// Options of [`sample_file`] and [`sample_bytes`].
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Frames to sample (the article's `k`).
    pub frames: usize,
    /// Apply the display matrix's rotation (`false`: frames as stored, like the reference).
    pub rotate: bool,
    /// How to reach the frames.
    pub method: SampleMethod,
    /// Refuse streams whose frames have more pixels than this.
    pub max_frame_pixels: u64,
    /// Refuse samplings whose RGB frames would take more bytes than this.
    pub max_output_bytes: u64,
    /// Decoding threads (0: one per CPU core). Seeking decodes that many keyframe segments at once, each on
    /// its own single-threaded decoder (a lone segment gets them all as FFmpeg frame threads, 0 leaving the count
    /// to FFmpeg); sequential decoding gives them to FFmpeg's frame threading (0: FFmpeg's automatic count).
    pub threads: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            frames: DEFAULT_FRAMES,
            rotate: true,
            method: SampleMethod::Seek,
            max_frame_pixels: DEFAULT_MAX_FRAME_PIXELS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            threads: 0,
        }
    }
}

/// Sampled frames of one video.
#[derive(Debug, Clone)]
pub struct SampledVideo {
    pub info: VideoInfo,
    /// Frame numbers (0-based, in decode/presentation order), sorted and unique: the frames the reference keeps
    /// for `np.arange(0, N, N / k).astype(int)` (see [`sampled_frame_numbers`]).
    pub frame_indices: Vec<usize>,
    /// One frame per entry of `frame_indices`.
    pub frames: Vec<RgbImage>,
    /// The method that produced the frames (`Sequential` when seeking was asked for but not possible).
    pub method: SampleMethod,
}

/// Why a video could not be probed or sampled. Every variant names the asset.
#[derive(Debug, Error)]
pub enum VideoError {
    #[error("cannot read video {asset}: {source}")]
    Io {
        asset: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open video {asset}: FFmpeg does not recognise it as a media file ({detail})")]
    Open { asset: String, detail: String },
    #[error("{asset} has no video stream ({detail})")]
    NoVideoStream { asset: String, detail: String },
    #[error("cannot decode video {asset}: {detail}")]
    Undecodable { asset: String, detail: String },
    #[error(
        "video {asset} is truncated or damaged: frame {frame} of {frame_count} is missing (the file holds {found} \
         decodable frames)"
    )]
    Truncated { asset: String, frame: usize, frame_count: usize, found: usize },
    #[error("video {asset} has no frames")]
    NoFrames { asset: String },
    #[error("video {asset} is too large: {detail}")]
    TooLarge { asset: String, detail: String },
    #[error("cannot read video {asset}: this worker was built without video support (cargo feature `video`)")]
    Unsupported { asset: String },
}

impl VideoError {
    /// The asset (file path or storage key) the error concerns.
    pub fn asset(&self) -> &str {
        match self {
            VideoError::Io { asset, .. }
            | VideoError::Open { asset, .. }
            | VideoError::NoVideoStream { asset, .. }
            | VideoError::Undecodable { asset, .. }
            | VideoError::Truncated { asset, .. }
            | VideoError::NoFrames { asset }
            | VideoError::TooLarge { asset, .. } => asset,
            VideoError::Unsupported { asset } => asset,
        }
    }
}

/// Metadata of the video at `path` (demuxes its packets; decodes nothing).
#[cfg(feature = "video")]
pub fn probe_file(path: impl AsRef<Path>) -> Result<VideoInfo, VideoError> {
    let path = path.as_ref();
    Ok(VideoReader::open(path, &path.display().to_string())?.info().clone())
}

/// Samples `options.frames` frames of the video at `path` (see the module docs).
#[cfg(feature = "video")]
pub fn sample_file(path: impl AsRef<Path>, options: &SampleOptions) -> Result<SampledVideo, VideoError> {
    let path = path.as_ref();
    VideoReader::open(path, &path.display().to_string())?.sample(options)
}

/// [`sample_file`] for a video held in memory; `asset` names it in errors (its extension, if any, helps FFmpeg
/// recognise the container). The bytes go through a temporary file.
#[cfg(feature = "video")]
pub fn sample_bytes(bytes: &[u8], asset: &str, options: &SampleOptions) -> Result<SampledVideo, VideoError> {
    let io = |source| VideoError::Io { asset: asset.to_string(), source };
    let suffix = Path::new(asset)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let mut file = tempfile::Builder::new().prefix("vislingo-video-").suffix(&suffix).tempfile().map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)?;
    std::io::Write::flush(&mut file).map_err(io)?;
    VideoReader::open(file.path(), asset)?.sample(options)
}

/// Without the `video` feature every video is an error record naming the asset.
#[cfg(not(feature = "video"))]
pub fn probe_file(path: impl AsRef<Path>) -> Result<VideoInfo, VideoError> {
    Err(VideoError::Unsupported { asset: path.as_ref().display().to_string() })
}

/// Without the `video` feature every video is an error record naming the asset.
#[cfg(not(feature = "video"))]
pub fn sample_file(path: impl AsRef<Path>, _options: &SampleOptions) -> Result<SampledVideo, VideoError> {
    Err(VideoError::Unsupported { asset: path.as_ref().display().to_string() })
}

/// Without the `video` feature every video is an error record naming the asset.
#[cfg(not(feature = "video"))]
pub fn sample_bytes(_bytes: &[u8], asset: &str, _options: &SampleOptions) -> Result<SampledVideo, VideoError> {
    Err(VideoError::Unsupported { asset: asset.to_string() })
}

//! An opened video: its packet index (timestamps and keyframes of every video packet, demuxed without decoding)
//! and the decoding of frames by number, by seeking to keyframes (`seek.rs`) or sequentially from the start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Once;

use ff::codec::context::Context as CodecContext;
use ff::format::context::Input;
use ff::media::Type;
use ff::util::frame::Video as VideoFrame;
use ff::{Packet, Rational};
use ffmpeg_next as ff;

use super::convert::{rotate_clockwise, RgbConverter};
use super::sampling::sampled_frame_numbers;
use super::seek::{decode_by_seeking, nonref_skipping_is_safe};
use super::{FrameCountSource, SampleMethod, SampleOptions, SampledVideo, VideoError, VideoInfo};
use crate::media::RgbImage;

/// Demuxers that FFmpeg uses for text and still images: their "video" is not a clip.
const NOT_VIDEO_FORMATS: [&str; 3] = ["tty", "image2", "lavfi"];

fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Only fails when no codec is registered, which then surfaces as an open error.
        let _ = ff::init();
        // FFmpeg logs to stderr on its own; errors reach the caller as `VideoError`s instead.
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

/// One video packet, in demux (decode) order.
#[derive(Debug, Clone, Copy)]
pub(super) struct PacketEntry {
    pts: Option<i64>,
    dts: Option<i64>,
    /// Byte position in the file (-1 when the demuxer does not say); with the timestamps, identifies the packet
    /// again after a seek.
    pos: i64,
    key: bool,
}

impl PacketEntry {
    pub(super) fn of(packet: &Packet) -> Self {
        PacketEntry { pts: packet.pts(), dts: packet.dts(), pos: packet.position() as i64, key: packet.is_key() }
    }

    pub(super) fn id(&self) -> (i64, Option<i64>, Option<i64>) {
        (self.pos, self.pts, self.dts)
    }

    /// Where to ask the demuxer to seek (stream time base) to land on this packet: the smaller timestamp, as
    /// demuxers index mp4 by decode time and Matroska by presentation time.
    pub(super) fn seek_timestamp(&self) -> Option<i64> {
        match (self.pts, self.dts) {
            (Some(p), Some(d)) => Some(p.min(d)),
            (p, d) => p.or(d),
        }
    }
}

/// Every video packet of the file, and from them the frame numbering.
pub(super) struct PacketIndex {
    pub(super) entries: Vec<PacketEntry>,
    /// Ordinals of keyframe packets, ascending.
    pub(super) keys: Vec<usize>,
    /// Frame number -> presentation timestamp, when every packet has a distinct pts (frames come out of a decoder
    /// in pts order, so frame `i` is the packet with the `i`-th smallest pts). `None`: only sequential decoding
    /// can number frames.
    pub(super) presentation: Option<Vec<i64>>,
    /// pts -> packet ordinal (when `presentation` is known).
    pub(super) ordinal_of_pts: HashMap<i64, usize>,
    /// Packet identity -> ordinal, to recognise where a seek landed.
    pub(super) ordinal_of_id: HashMap<(i64, Option<i64>, Option<i64>), usize>,
    /// Packets flagged discard (frames an mp4 edit list hides; the decoder drops them).
    discarded: usize,
    /// Why demuxing stopped before the end of the file, if it did.
    read_error: Option<String>,
}

impl PacketIndex {
    fn build(input: &mut Input, stream: usize) -> Self {
        let mut entries = Vec::new();
        let mut discarded = 0;
        let mut read_error = None;
        loop {
            match read_packet(input) {
                Ok(Some(packet)) if is_frame_packet(&packet, stream) => entries.push(PacketEntry::of(&packet)),
                Ok(Some(packet)) if packet.stream() == stream && packet.size() > 0 => discarded += 1,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e.to_string());
                    break;
                }
            }
        }
        let keys = entries.iter().enumerate().filter(|(_, e)| e.key).map(|(i, _)| i).collect();
        let mut presentation: Option<Vec<i64>> = entries.iter().map(|e| e.pts).collect();
        if let Some(pts) = presentation.as_mut() {
            pts.sort_unstable();
            if pts.windows(2).any(|w| w[0] == w[1]) {
                presentation = None;
            }
        }
        let ordinal_of_pts = match presentation {
            Some(_) => entries.iter().enumerate().map(|(i, e)| (e.pts.expect("all set"), i)).collect(),
            None => HashMap::new(),
        };
        let mut ordinal_of_id = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            ordinal_of_id.entry(e.id()).or_insert(i);
        }
        PacketIndex { entries, keys, presentation, ordinal_of_pts, ordinal_of_id, discarded, read_error }
    }

    /// The packet to start decoding from to reach frame `number`: the last keyframe, in decode order, at or
    /// before the frame's packet whose own pts is not after the frame's (so the frame is not one of its leading
    /// pictures). The first packet when there is none.
    pub(super) fn start_for(&self, pts: i64) -> usize {
        let ordinal = self.ordinal_of_pts[&pts];
        let upto = self.keys.partition_point(|&k| k <= ordinal);
        self.keys[..upto].iter().rev().copied().find(|&k| self.entries[k].pts.is_some_and(|p| p <= pts)).unwrap_or(0)
    }
}

/// `av_read_frame`: the next packet, `None` at the end of the file.
pub(super) fn read_packet(input: &mut Input) -> Result<Option<Packet>, ff::Error> {
    let mut packet = Packet::empty();
    match packet.read(input) {
        Ok(()) => Ok(Some(packet)),
        Err(ff::Error::Eof) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Packets of the video stream that carry a frame (FFmpeg drops the frames of packets flagged discard).
pub(super) fn is_frame_packet(packet: &Packet, stream: usize) -> bool {
    packet.stream() == stream && packet.size() > 0 && packet.flags().bits() & ff::ffi::AV_PKT_FLAG_DISCARD == 0
}

/// Seeking was not possible or gave an unexpected frame: decode sequentially instead.
pub(super) struct Fallback(pub(super) String);

/// The video stream of a file, as every thread that decodes it needs it.
pub(super) struct VideoSource {
    path: PathBuf,
    /// Names the video in errors (a path or a storage key).
    pub(super) asset: String,
    /// Index of the video stream in the container.
    pub(super) stream: usize,
    time_base: Rational,
    codec: String,
    /// Whether non-reference frames may be left undecoded: nothing is predicted from them, so the frames that
    /// are decoded come out identical (see [`nonref_skipping_is_safe`]).
    pub(super) skip_nonref: bool,
}

impl VideoSource {
    /// Opens the file again (one demuxer per decoding thread).
    pub(super) fn open_input(&self) -> Result<Input, VideoError> {
        open_input(&self.path, &self.asset)
    }

    fn undecodable(&self, detail: String) -> VideoError {
        VideoError::Undecodable { asset: self.asset.clone(), detail }
    }

    /// A decoder for the stream with `threads` frame threads (0: FFmpeg's automatic count).
    pub(super) fn decoder(&self, input: &Input, threads: usize) -> Result<ff::decoder::Video, VideoError> {
        let st = input.stream(self.stream).expect("stream exists");
        let mut ctx = CodecContext::from_parameters(st.parameters())
            .map_err(|e| self.undecodable(format!("codec {}: {e}", self.codec)))?;
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: threads,
            ..Default::default()
        });
        // SAFETY: plain field write on the context we own, before it is opened.
        unsafe { (*ctx.as_mut_ptr()).pkt_timebase = self.time_base.into() };
        ctx.decoder()
            .video()
            .map_err(|e| self.undecodable(format!("no decoder for codec {} in this FFmpeg ({e})", self.codec)))
    }

    /// rgb24 of a decoded frame, refusing frames over the pixel limit (a stream may change size midway).
    pub(super) fn to_rgb(
        &self,
        converter: &mut RgbConverter,
        frame: &VideoFrame,
        options: &SampleOptions,
    ) -> Result<RgbImage, VideoError> {
        let pixels = u64::from(frame.width()) * u64::from(frame.height());
        if pixels > options.max_frame_pixels {
            return Err(VideoError::TooLarge {
                asset: self.asset.clone(),
                detail: format!(
                    "a {}x{} frame exceeds the limit of {} pixels",
                    frame.width(),
                    frame.height(),
                    options.max_frame_pixels
                ),
            });
        }
        converter
            .convert(frame)
            .map_err(|e| self.undecodable(format!("{}x{} frame to RGB: {e}", frame.width(), frame.height())))
    }
}

/// A video opened for sampling. Opening demuxes every packet of the video stream (reading the file once,
/// decoding nothing) to number the frames.
pub struct VideoReader {
    source: VideoSource,
    /// The demuxer the index was read with; seeking reuses it on the calling thread.
    input: Input,
    info: VideoInfo,
    index: PacketIndex,
}

impl VideoReader {
    /// Opens the video at `path`; `asset` names it in errors (a path or a storage key).
    pub fn open(path: &Path, asset: &str) -> Result<Self, VideoError> {
        init_ffmpeg();
        let asset = asset.to_string();
        let size_bytes =
            std::fs::metadata(path).map_err(|source| VideoError::Io { asset: asset.clone(), source })?.len();
        let mut input = open_input(path, &asset)?;
        let format = input.format().name().to_string();
        let stream = pick_video_stream(&input, &asset, &format)?;
        let st = input.stream(stream).expect("picked above");
        let time_base = st.time_base();
        let params = st.parameters();
        // SAFETY: `params` borrows the stream's AVCodecParameters, valid while `input` lives.
        let (width, height) =
            unsafe { ((*params.as_ptr()).width.max(0) as u32, (*params.as_ptr()).height.max(0) as u32) };
        let codec = params.id().name().to_string();
        let skip_nonref = nonref_skipping_is_safe(&codec, extradata(&params));
        let seconds = |ts: i64| ts as f64 * f64::from(time_base);
        let stream_duration = st.duration();
        let duration_s = if stream_duration > 0 && stream_duration != ff::ffi::AV_NOPTS_VALUE {
            seconds(stream_duration)
        } else if input.duration() > 0 {
            input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE)
        } else {
            0.0
        };
        let rate = if st.avg_frame_rate().numerator() > 0 { st.avg_frame_rate() } else { st.rate() };
        let fps = if rate.numerator() > 0 && rate.denominator() > 0 { f64::from(rate) } else { 0.0 };
        let start_time_s = if st.start_time() != ff::ffi::AV_NOPTS_VALUE { seconds(st.start_time()) } else { 0.0 };
        let rotation = rotation_of(&st);
        let container_frames = st.frames().max(0) as usize;

        let index = PacketIndex::build(&mut input, stream);
        let packets = index.entries.len();
        let (frame_count, frame_count_source) = if container_frames > 0 {
            if index.read_error.is_none() && index.discarded > 0 && container_frames == packets + index.discarded {
                // The container counts frames its edit list hides: they are never decoded, so not frames.
                (packets, FrameCountSource::PacketCount)
            } else {
                (container_frames, FrameCountSource::Container)
            }
        } else {
            // Python's round() rounds halves to even; floor(x + 0.5) differs only at exact halves, which
            // duration * rate of a real clip does not hit. The reference script uses the same formula.
            let derived = (duration_s * fps + 0.5).floor().max(0.0) as usize;
            if derived <= packets {
                (derived, FrameCountSource::DurationTimesRate)
            } else {
                (packets, FrameCountSource::PacketCount)
            }
        };
        let info = VideoInfo {
            size_bytes,
            size_mb: size_bytes as f64 / (1024.0 * 1024.0),
            duration_s,
            fps,
            frame_count,
            frame_count_source,
            packets,
            width,
            height,
            codec,
            container: format,
            rotation,
            start_time_s,
        };
        let source =
            VideoSource { path: path.to_path_buf(), asset, stream, time_base, codec: info.codec.clone(), skip_nonref };
        Ok(VideoReader { source, input, info, index })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Samples `options.frames` frames the way the reference does (see the module docs).
    pub fn sample(&mut self, options: &SampleOptions) -> Result<SampledVideo, VideoError> {
        let n = self.info.frame_count;
        if n == 0 {
            return Err(VideoError::NoFrames { asset: self.source.asset.clone() });
        }
        let numbers = sampled_frame_numbers(n, options.frames);
        let (frames, method) = self.frames_at(&numbers, options)?;
        Ok(SampledVideo { info: self.info.clone(), frame_indices: numbers, frames, method })
    }

    /// The frames with the given numbers (0-based, decode order; any order, repeats allowed), one per number,
    /// and the method that produced them.
    pub fn frames_at(
        &mut self,
        numbers: &[usize],
        options: &SampleOptions,
    ) -> Result<(Vec<RgbImage>, SampleMethod), VideoError> {
        self.check_limits(numbers.len(), options)?;
        let wanted: Vec<usize> = {
            let mut w = numbers.to_vec();
            w.sort_unstable();
            w.dedup();
            w
        };
        if wanted.is_empty() {
            return Ok((Vec::new(), options.method));
        }
        let known = self.index.presentation.as_ref().map_or(self.index.entries.len(), Vec::len);
        let last = *wanted.last().expect("not empty");
        if last >= known && self.index.presentation.is_some() {
            return Err(self.truncated(last, known));
        }
        let mut method = options.method;
        let mut decoded = None;
        if method == SampleMethod::Seek {
            match decode_by_seeking(&mut self.input, &self.source, &self.index, &wanted, options)? {
                Ok(frames) => decoded = Some(frames),
                Err(Fallback(why)) => {
                    tracing::debug!(asset = %self.source.asset, reason = %why, "seeking not possible; decoding sequentially");
                    method = SampleMethod::Sequential;
                }
            }
        }
        let mut decoded = match decoded {
            Some(d) => d,
            None => self.decode_sequentially(&wanted, options)?,
        };
        let mut frames = Vec::with_capacity(numbers.len());
        for (i, number) in numbers.iter().enumerate() {
            // Hand over the decoded frame for its last use and clone it for the earlier repeats.
            let last_use = !numbers[i + 1..].contains(number);
            let frame = if last_use { decoded.remove(number) } else { decoded.get(number).cloned() };
            frames.push(frame.expect("every wanted frame was decoded"));
        }
        if options.rotate && self.info.rotation != 0 {
            frames = frames.iter().map(|f| rotate_clockwise(f, self.info.rotation)).collect();
        }
        Ok((frames, method))
    }

    fn check_limits(&self, count: usize, options: &SampleOptions) -> Result<(), VideoError> {
        let pixels = u64::from(self.info.width) * u64::from(self.info.height);
        if pixels > options.max_frame_pixels {
            return Err(VideoError::TooLarge {
                asset: self.source.asset.clone(),
                detail: format!(
                    "{}x{} frames ({pixels} pixels) exceed the limit of {} pixels",
                    self.info.width, self.info.height, options.max_frame_pixels
                ),
            });
        }
        let bytes = pixels * 3 * count as u64;
        if bytes > options.max_output_bytes {
            return Err(VideoError::TooLarge {
                asset: self.source.asset.clone(),
                detail: format!(
                    "{count} RGB frames of {}x{} take {bytes} bytes, over the limit of {}",
                    self.info.width, self.info.height, options.max_output_bytes
                ),
            });
        }
        Ok(())
    }

    fn truncated(&self, frame: usize, found: usize) -> VideoError {
        if let Some(e) = &self.index.read_error {
            tracing::debug!(asset = %self.source.asset, error = %e, "demuxing stopped early");
        }
        VideoError::Truncated { asset: self.source.asset.clone(), frame, frame_count: self.info.frame_count, found }
    }

    /// Decodes from the start of the file, numbering frames as they come out (the reference's method).
    fn decode_sequentially(
        &mut self,
        wanted: &[usize],
        options: &SampleOptions,
    ) -> Result<BTreeMap<usize, RgbImage>, VideoError> {
        let mut input = self.source.open_input()?;
        let mut decoder = self.source.decoder(&input, options.threads)?;
        let mut converter = RgbConverter::new();
        let mut frames = BTreeMap::new();
        let last = *wanted.last().expect("not empty");
        let mut number = 0usize;
        let mut frame = VideoFrame::empty();
        let mut decode_error: Option<String> = None;
        let mut eof_sent = false;
        // A packet the decoder refused until its frames are taken out.
        let mut pending: Option<Packet> = None;
        'decode: loop {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    if wanted.binary_search(&number).is_ok() {
                        frames.insert(number, self.source.to_rgb(&mut converter, &frame, options)?);
                    }
                    number += 1;
                    if number > last {
                        break 'decode;
                    }
                }
                Err(ff::Error::Eof) => break 'decode,
                Err(e) => {
                    // EAGAIN: the decoder wants the next packet; other errors are kept and decoding goes on.
                    if !matches!(e, ff::Error::Other { errno } if errno == ff::util::error::EAGAIN) {
                        decode_error = Some(format!("after frame {number}: {e}"));
                    }
                    if eof_sent {
                        break 'decode;
                    }
                    let packet = pending.take().or_else(|| loop {
                        match read_packet(&mut input) {
                            Ok(Some(p)) if is_frame_packet(&p, self.source.stream) => break Some(p),
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break None,
                        }
                    });
                    match packet {
                        Some(p) => match decoder.send_packet(&p) {
                            Ok(()) => {}
                            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => pending = Some(p),
                            Err(e) => decode_error = Some(format!("after frame {number}: {e}")),
                        },
                        None => {
                            let _ = decoder.send_eof();
                            eof_sent = true;
                        }
                    }
                }
            }
        }
        if let Some(&missing) = wanted.iter().find(|n| !frames.contains_key(n)) {
            if let Some(e) = decode_error {
                tracing::debug!(asset = %self.source.asset, error = %e, "decoding failed");
            }
            return Err(self.truncated(missing, number));
        }
        Ok(frames)
    }
}

fn open_input(path: &Path, asset: &str) -> Result<Input, VideoError> {
    ff::format::input(&path).map_err(|e| VideoError::Open { asset: asset.to_string(), detail: e.to_string() })
}

/// The best video stream that is a clip, not cover art, and not text or a still image.
fn pick_video_stream(input: &Input, asset: &str, format: &str) -> Result<usize, VideoError> {
    let no_video = |detail: String| VideoError::NoVideoStream { asset: asset.to_string(), detail };
    let is_clip = |s: &ff::format::stream::Stream| {
        s.parameters().medium() == Type::Video
            && !s.disposition().contains(ff::format::stream::Disposition::ATTACHED_PIC)
    };
    let kinds: Vec<String> =
        input.streams().map(|s| format!("{:?} {}", s.parameters().medium(), s.parameters().id().name())).collect();
    let stream = match input.streams().best(Type::Video) {
        Some(s) if is_clip(&s) => s,
        _ => input.streams().find(is_clip).ok_or_else(|| {
            no_video(if kinds.is_empty() { format!("{format} without streams") } else { kinds.join(", ") })
        })?,
    };
    if NOT_VIDEO_FORMATS.contains(&format) || format.ends_with("_pipe") {
        return Err(no_video(format!("FFmpeg reads it as {format} ({}), not a video", kinds.join(", "))));
    }
    Ok(stream.index())
}

/// The stream's codec extradata (`avcC`, `hvcC`, or parameter sets in Annex B form); empty when there is none.
fn extradata(params: &ff::codec::Parameters) -> &[u8] {
    // SAFETY: `extradata` is null or points to `extradata_size` bytes owned by the parameters, which outlive the
    // returned borrow.
    unsafe {
        let p = params.as_ptr();
        if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
            &[]
        } else {
            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize)
        }
    }
}

/// Clockwise degrees (0, 90, 180, 270) from the stream's display matrix.
fn rotation_of(stream: &ff::format::stream::Stream) -> u16 {
    for side in stream.side_data() {
        if side.kind() == ff::codec::packet::side_data::Type::DisplayMatrix && side.data().len() >= 36 {
            // SAFETY: a display matrix is 9 int32s; checked length above. av_display_rotation_get only reads.
            let ccw = unsafe { ff::ffi::av_display_rotation_get(side.data().as_ptr() as *const i32) };
            if ccw.is_finite() {
                let cw = (-ccw).round() as i64;
                return (((cw + 45).div_euclid(90) * 90).rem_euclid(360)) as u16;
            }
        }
    }
    0
}

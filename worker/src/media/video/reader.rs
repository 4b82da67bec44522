//! An opened video: its packet index (timestamps and keyframes of every video packet, demuxed without decoding)
//! and the decoding of frames by number, by seeking to keyframes or sequentially from the start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Once;

use ff::codec::context::Context as CodecContext;
use ff::codec::discard::Discard;
use ff::format::context::Input;
use ff::media::Type;
use ff::util::frame::Video as VideoFrame;
use ff::{Packet, Rational};
use ffmpeg_next as ff;

use super::convert::{rotate_clockwise, RgbConverter};
use super::sampling::sampled_frame_numbers;
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
struct PacketEntry {
    pts: Option<i64>,
    dts: Option<i64>,
    /// Byte position in the file (-1 when the demuxer does not say); with the timestamps, identifies the packet
    /// again after a seek.
    pos: i64,
    key: bool,
}

impl PacketEntry {
    fn of(packet: &Packet) -> Self {
        PacketEntry { pts: packet.pts(), dts: packet.dts(), pos: packet.position() as i64, key: packet.is_key() }
    }

    fn id(&self) -> (i64, Option<i64>, Option<i64>) {
        (self.pos, self.pts, self.dts)
    }

    /// Where to ask the demuxer to seek (stream time base) to land on this packet: the smaller timestamp, as
    /// demuxers index mp4 by decode time and Matroska by presentation time.
    fn seek_timestamp(&self) -> Option<i64> {
        match (self.pts, self.dts) {
            (Some(p), Some(d)) => Some(p.min(d)),
            (p, d) => p.or(d),
        }
    }
}

/// Every video packet of the file, and from them the frame numbering.
struct PacketIndex {
    entries: Vec<PacketEntry>,
    /// Ordinals of keyframe packets, ascending.
    keys: Vec<usize>,
    /// Frame number -> presentation timestamp, when every packet has a distinct pts (frames come out of a decoder
    /// in pts order, so frame `i` is the packet with the `i`-th smallest pts). `None`: only sequential decoding
    /// can number frames.
    presentation: Option<Vec<i64>>,
    /// pts -> packet ordinal (when `presentation` is known).
    ordinal_of_pts: HashMap<i64, usize>,
    /// Packet identity -> ordinal, to recognise where a seek landed.
    ordinal_of_id: HashMap<(i64, Option<i64>, Option<i64>), usize>,
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
    fn start_for(&self, pts: i64) -> usize {
        let ordinal = self.ordinal_of_pts[&pts];
        let upto = self.keys.partition_point(|&k| k <= ordinal);
        self.keys[..upto].iter().rev().copied().find(|&k| self.entries[k].pts.is_some_and(|p| p <= pts)).unwrap_or(0)
    }
}

/// `av_read_frame`: the next packet, `None` at the end of the file.
fn read_packet(input: &mut Input) -> Result<Option<Packet>, ff::Error> {
    let mut packet = Packet::empty();
    match packet.read(input) {
        Ok(()) => Ok(Some(packet)),
        Err(ff::Error::Eof) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Packets of the video stream that carry a frame (FFmpeg drops the frames of packets flagged discard).
fn is_frame_packet(packet: &Packet, stream: usize) -> bool {
    packet.stream() == stream && packet.size() > 0 && packet.flags().bits() & ff::ffi::AV_PKT_FLAG_DISCARD == 0
}

/// Seeking was not possible or gave an unexpected frame: decode sequentially instead.
struct Fallback(String);

/// A video opened for sampling. Opening demuxes every packet of the video stream (reading the file once,
/// decoding nothing) to number the frames.
pub struct VideoReader {
    path: PathBuf,
    asset: String,
    input: Input,
    stream: usize,
    time_base: Rational,
    info: VideoInfo,
    index: PacketIndex,
    /// A packet already read from `input` that the next `read_video_packet` returns (the keyframe a seek
    /// positioned on).
    pending: Option<Packet>,
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
        Ok(VideoReader { path: path.to_path_buf(), asset, input, stream, time_base, info, index, pending: None })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Samples `options.frames` frames the way the reference does (see the module docs).
    pub fn sample(&mut self, options: &SampleOptions) -> Result<SampledVideo, VideoError> {
        let n = self.info.frame_count;
        if n == 0 {
            return Err(VideoError::NoFrames { asset: self.asset.clone() });
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
            match self.decode_by_seeking(&wanted, options)? {
                Ok(frames) => decoded = Some(frames),
                Err(Fallback(why)) => {
                    tracing::debug!(asset = %self.asset, reason = %why, "seeking not possible; decoding sequentially");
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
                asset: self.asset.clone(),
                detail: format!(
                    "{}x{} frames ({pixels} pixels) exceed the limit of {} pixels",
                    self.info.width, self.info.height, options.max_frame_pixels
                ),
            });
        }
        let bytes = pixels * 3 * count as u64;
        if bytes > options.max_output_bytes {
            return Err(VideoError::TooLarge {
                asset: self.asset.clone(),
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
            tracing::debug!(asset = %self.asset, error = %e, "demuxing stopped early");
        }
        VideoError::Truncated { asset: self.asset.clone(), frame, frame_count: self.info.frame_count, found }
    }

    fn undecodable(&self, detail: String) -> VideoError {
        VideoError::Undecodable { asset: self.asset.clone(), detail }
    }

    fn decoder(&self, input: &Input, threads: usize) -> Result<ff::decoder::Video, VideoError> {
        let st = input.stream(self.stream).expect("stream exists");
        let mut ctx = CodecContext::from_parameters(st.parameters())
            .map_err(|e| self.undecodable(format!("codec {}: {e}", self.info.codec)))?;
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: threads,
            ..Default::default()
        });
        // SAFETY: plain field write on the context we own, before it is opened.
        unsafe { (*ctx.as_mut_ptr()).pkt_timebase = self.time_base.into() };
        ctx.decoder()
            .video()
            .map_err(|e| self.undecodable(format!("no decoder for codec {} in this FFmpeg ({e})", self.info.codec)))
    }

    /// Decodes `wanted` (sorted, unique) by seeking to a keyframe before each and decoding forward.
    fn decode_by_seeking(
        &mut self,
        wanted: &[usize],
        options: &SampleOptions,
    ) -> Result<Result<BTreeMap<usize, RgbImage>, Fallback>, VideoError> {
        let Some(presentation) = self.index.presentation.clone() else {
            return Ok(Err(Fallback("the packets do not all carry distinct timestamps".into())));
        };
        let frame_of_pts: HashMap<i64, usize> = presentation.iter().enumerate().map(|(i, &p)| (p, i)).collect();
        let mut decoder = self.decoder(&self.input, options.threads)?;
        let mut converter = RgbConverter::new();
        let mut frames = BTreeMap::new();
        // Ordinal of the next packet the demuxer will give (None: not positioned yet).
        let mut next: Option<usize> = None;
        let mut eof_sent = false;
        let mut decode_error: Option<String> = None;
        let mut frame = VideoFrame::empty();
        // Packets before the first packet of any frame still wanted may skip non-reference frames (nothing
        // decodes from them, so the frames wanted come out identical); H.264 and HEVC decoders honour this.
        let skip_nonref = matches!(self.info.codec.as_str(), "h264" | "hevc");
        let mut first_wanted_packet: Vec<usize> =
            wanted.iter().map(|&w| self.index.ordinal_of_pts[&presentation[w]]).collect();
        for i in (0..first_wanted_packet.len().saturating_sub(1)).rev() {
            first_wanted_packet[i] = first_wanted_packet[i].min(first_wanted_packet[i + 1]);
        }
        let mut skipping = false;
        for (ti, &target) in wanted.iter().enumerate() {
            if frames.contains_key(&target) {
                continue;
            }
            let protect_from = first_wanted_packet[ti];
            let pts = presentation[target];
            let start = self.index.start_for(pts);
            // Seek unless decoding on from where we are reaches the target without passing a better keyframe.
            if next.is_none_or(|n| start > n || eof_sent) {
                match self.seek_to(start)? {
                    Ok(()) => {}
                    Err(f) => return Ok(Err(f)),
                }
                decoder.flush();
                next = Some(start);
                eof_sent = false;
            }
            loop {
                match decoder.receive_frame(&mut frame) {
                    Ok(()) => {
                        let Some(fpts) = frame.pts().or(frame.timestamp()) else {
                            return Ok(Err(Fallback("a decoded frame has no timestamp".into())));
                        };
                        let Some(&number) = frame_of_pts.get(&fpts) else {
                            return Ok(Err(Fallback(format!("decoded frame with pts {fpts} is not in the index"))));
                        };
                        if number >= target && wanted.binary_search(&number).is_ok() && !frames.contains_key(&number) {
                            let rgb =
                                converter.convert(&frame).map_err(|e| self.undecodable(format!("to RGB: {e}")))?;
                            frames.insert(number, rgb);
                        }
                        if frames.contains_key(&target) {
                            break;
                        }
                    }
                    Err(ff::Error::Eof) => {
                        // Drained without the target: let the sequential decode decide (it reports the error).
                        return Ok(Err(Fallback(format!(
                            "frame {target} not produced after seeking{}",
                            decode_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                        ))));
                    }
                    Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                        let ordinal = next.expect("positioned");
                        match self.read_video_packet() {
                            Ok(Some(packet)) => {
                                let expected = self.index.entries.get(ordinal).map(PacketEntry::id);
                                if expected != Some(PacketEntry::of(&packet).id()) {
                                    return Ok(Err(Fallback(format!("packet {ordinal} differs from the index"))));
                                }
                                next = Some(ordinal + 1);
                                let skip = skip_nonref && ordinal < protect_from;
                                if skip != skipping {
                                    decoder.skip_frame(if skip { Discard::NonReference } else { Discard::Default });
                                    skipping = skip;
                                }
                                if let Err(e) = decoder.send_packet(&packet) {
                                    decode_error = Some(format!("packet {ordinal}: {e}"));
                                }
                            }
                            Ok(None) | Err(_) => {
                                let _ = decoder.send_eof();
                                eof_sent = true;
                            }
                        }
                    }
                    Err(e) => decode_error = Some(e.to_string()),
                }
            }
        }
        Ok(Ok(frames))
    }

    /// The next packet of the video stream (as the index counts them), `None` at the end of the file.
    fn read_video_packet(&mut self) -> Result<Option<Packet>, ff::Error> {
        if let Some(packet) = self.pending.take() {
            return Ok(Some(packet));
        }
        loop {
            match read_packet(&mut self.input)? {
                Some(p) if is_frame_packet(&p, self.stream) => return Ok(Some(p)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Positions the demuxer so that the next video packet read is packet `ordinal` (a keyframe, or 0). Seeks
    /// to its timestamp; if the demuxer lands after it, tries earlier keyframes, then the start of the file.
    fn seek_to(&mut self, ordinal: usize) -> Result<Result<(), Fallback>, VideoError> {
        let earlier: Vec<usize> = self.index.keys.iter().rev().copied().filter(|&k| k < ordinal).take(2).collect();
        let attempts = std::iter::once(ordinal).chain(earlier).chain(std::iter::once(0));
        for from in attempts {
            self.pending = None;
            let Some(ts) = self.index.entries[from].seek_timestamp() else { continue };
            // SAFETY: a plain FFmpeg call on the context this reader owns.
            let ret = unsafe {
                ff::ffi::av_seek_frame(self.input.as_mut_ptr(), self.stream as i32, ts, ff::ffi::AVSEEK_FLAG_BACKWARD)
            };
            if ret < 0 {
                continue;
            }
            let Ok(Some(first)) = self.read_video_packet() else { continue };
            let Some(&landed) = self.index.ordinal_of_id.get(&PacketEntry::of(&first).id()) else { continue };
            if landed > ordinal {
                continue;
            }
            // Landed at or before the start packet: read up to it without decoding.
            let mut at = landed;
            let mut packet = first;
            while at < ordinal {
                packet = match self.read_video_packet() {
                    Ok(Some(p)) => p,
                    _ => return Ok(Err(Fallback(format!("file ended while skipping to packet {ordinal}")))),
                };
                at += 1;
                if self.index.entries[at].id() != PacketEntry::of(&packet).id() {
                    return Ok(Err(Fallback(format!("packet {at} after a seek differs from the index"))));
                }
            }
            // The start packet has been read: keep it for the decode loop's next read.
            self.pending = Some(packet);
            return Ok(Ok(()));
        }
        Ok(Err(Fallback(format!("no seek landed at or before packet {ordinal}"))))
    }

    /// Decodes from the start of the file, numbering frames as they come out (the reference's method).
    fn decode_sequentially(
        &mut self,
        wanted: &[usize],
        options: &SampleOptions,
    ) -> Result<BTreeMap<usize, RgbImage>, VideoError> {
        let mut input = open_input(&self.path, &self.asset)?;
        let mut decoder = self.decoder(&input, options.threads)?;
        let mut converter = RgbConverter::new();
        let mut frames = BTreeMap::new();
        let last = *wanted.last().expect("not empty");
        let mut number = 0usize;
        let mut frame = VideoFrame::empty();
        let mut decode_error: Option<String> = None;
        let mut eof_sent = false;
        'decode: loop {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    if wanted.binary_search(&number).is_ok() {
                        let rgb = converter.convert(&frame).map_err(|e| self.undecodable(format!("to RGB: {e}")))?;
                        frames.insert(number, rgb);
                    }
                    number += 1;
                    if number > last {
                        break 'decode;
                    }
                }
                Err(ff::Error::Eof) => break 'decode,
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                    if eof_sent {
                        break 'decode;
                    }
                    let packet = loop {
                        match read_packet(&mut input) {
                            Ok(Some(p)) if is_frame_packet(&p, self.stream) => break Some(p),
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break None,
                        }
                    };
                    match packet {
                        Some(p) => {
                            if let Err(e) = decoder.send_packet(&p) {
                                decode_error = Some(format!("after frame {number}: {e}"));
                            }
                        }
                        None => {
                            let _ = decoder.send_eof();
                            eof_sent = true;
                        }
                    }
                }
                Err(e) => {
                    decode_error = Some(format!("after frame {number}: {e}"));
                    if eof_sent {
                        break 'decode;
                    }
                }
            }
        }
        if let Some(&missing) = wanted.iter().find(|n| !frames.contains_key(n)) {
            if let Some(e) = decode_error {
                tracing::debug!(asset = %self.asset, error = %e, "decoding failed");
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

//! Frames by seeking: the wanted frames grouped into segments (a keyframe and the wanted frames decoded from it),
//! decoded in parallel, one demuxer + decoder pair per thread, each seeking to its segment's keyframe, skipping the
//! non-reference frames nobody wants and draining the decoder right after the segment's last wanted packet.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ff::codec::discard::Discard;
use ff::format::context::Input;
use ff::util::frame::Video as VideoFrame;
use ff::Packet;
use ffmpeg_next as ff;

use super::convert::RgbConverter;
use super::reader::{is_frame_packet, read_packet, Fallback, PacketEntry, PacketIndex, VideoSource};
use super::{SampleOptions, VideoError};
use crate::media::RgbImage;

/// The wanted frames that one decode from one keyframe yields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// Ordinal of the keyframe packet decoding starts from.
    start: usize,
    /// Frame numbers wanted from this segment, ascending.
    frames: Vec<usize>,
    /// Ordinals of those frames' packets, ascending: decoded in full, while other non-reference packets may be
    /// skipped.
    packets: Vec<usize>,
}

impl Segment {
    /// The last packet to send: the decoder is drained after it.
    fn end(&self) -> usize {
        *self.packets.last().expect("a segment wants a frame")
    }
}

/// Groups `wanted` (sorted, unique frame numbers) by the keyframe each is decoded from.
fn plan_segments(index: &PacketIndex, presentation: &[i64], wanted: &[usize]) -> Vec<Segment> {
    let mut by_start: BTreeMap<usize, Segment> = BTreeMap::new();
    for &frame in wanted {
        let pts = presentation[frame];
        let start = index.start_for(pts);
        let segment =
            by_start.entry(start).or_insert_with(|| Segment { start, frames: Vec::new(), packets: Vec::new() });
        segment.frames.push(frame);
        segment.packets.push(index.ordinal_of_pts[&pts]);
    }
    let mut segments: Vec<Segment> = by_start.into_values().collect();
    for segment in &mut segments {
        segment.packets.sort_unstable();
    }
    segments
}

/// How many segments decode at once and with how many FFmpeg threads each: `options.threads` (0: one per CPU
/// core) shared out. One segment alone keeps FFmpeg's frame threading (0 = FFmpeg's automatic count when
/// `options.threads` is 0); several run side by side on single-threaded decoders (or a share of the threads), as
/// frame threading pays a pipeline flush at every seek.
fn workers_and_threads(segments: usize, options: &SampleOptions) -> (usize, usize) {
    let total = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let workers = total.min(segments).max(1);
    if workers == 1 {
        (1, options.threads)
    } else {
        (workers, total / workers)
    }
}

/// What every decoding thread shares.
struct Job<'a> {
    source: &'a VideoSource,
    index: &'a PacketIndex,
    frame_of_pts: HashMap<i64, usize>,
    segments: Vec<Segment>,
    options: &'a SampleOptions,
    decoder_threads: usize,
    /// The next segment to take (segments are ordered longest first).
    next: AtomicUsize,
    /// Set when a thread failed: the others take no new segment.
    stop: AtomicBool,
}

type Decoded = Result<Result<Vec<(usize, RgbImage)>, Fallback>, VideoError>;

/// Decodes `wanted` (sorted, unique) by seeking; `input` is the reader's demuxer (used by the calling thread),
/// other threads open the file again.
pub(super) fn decode_by_seeking(
    input: &mut Input,
    source: &VideoSource,
    index: &PacketIndex,
    wanted: &[usize],
    options: &SampleOptions,
) -> Result<Result<BTreeMap<usize, RgbImage>, Fallback>, VideoError> {
    let Some(presentation) = index.presentation.as_deref() else {
        return Ok(Err(Fallback("the packets do not all carry distinct timestamps".into())));
    };
    let mut segments = plan_segments(index, presentation, wanted);
    // Longest first, so that the last segments handed out are short ones.
    segments.sort_by_key(|s| std::cmp::Reverse(s.end() - s.start));
    let (workers, decoder_threads) = workers_and_threads(segments.len(), options);
    let job = Job {
        source,
        index,
        frame_of_pts: presentation.iter().enumerate().map(|(i, &p)| (p, i)).collect(),
        segments,
        options,
        decoder_threads,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    let results: Vec<Decoded> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut input = match source.open_input() {
                        Ok(input) => input,
                        Err(e) => {
                            job.stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    };
                    run_worker(&mut input, &job)
                })
            })
            .collect();
        let mut results = vec![run_worker(input, &job)];
        results.extend(others.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))));
        results
    });
    let mut frames = BTreeMap::new();
    let mut fallback = None;
    for result in results {
        match result? {
            Ok(decoded) => frames.extend(decoded),
            Err(f) => fallback = fallback.or(Some(f)),
        }
    }
    Ok(fallback.map_or(Ok(frames), Err))
}

/// Takes segments until none is left (or another thread failed) and decodes them on one demuxer + decoder.
fn run_worker(input: &mut Input, job: &Job) -> Decoded {
    let result = decode_segments(input, job);
    if !matches!(result, Ok(Ok(_))) {
        job.stop.store(true, Ordering::Relaxed);
    }
    result
}

fn decode_segments(input: &mut Input, job: &Job) -> Decoded {
    let decoder = job.source.decoder(input, job.decoder_threads)?;
    let cursor = Cursor { input, pending: None, source: job.source, index: job.index };
    let mut worker = SegmentDecoder { cursor, decoder, converter: RgbConverter::new(), job };
    let mut frames = Vec::new();
    while !job.stop.load(Ordering::Relaxed) {
        let Some(segment) = job.segments.get(job.next.fetch_add(1, Ordering::Relaxed)) else { break };
        if let Err(f) = worker.decode(segment, &mut frames)? {
            return Ok(Err(f));
        }
    }
    Ok(Ok(frames))
}

/// How a pass over a segment ended.
enum Pass {
    /// Every wanted frame came out.
    Done,
    /// The decoder, drained after the last wanted packet, gave up before handing out every wanted frame (FFmpeg
    /// 5.1's libdav1d wrapper with frame threads reports the end while frames are still in flight).
    DrainedEarly,
    Fallback(Fallback),
}

/// One thread's demuxer and decoder.
struct SegmentDecoder<'a> {
    cursor: Cursor<'a>,
    decoder: ff::decoder::Video,
    converter: RgbConverter,
    job: &'a Job<'a>,
}

impl SegmentDecoder<'_> {
    /// Decodes one segment from its keyframe, appending its wanted frames (as RGB) to `frames`: first draining
    /// the decoder right after the last wanted packet, and if that loses frames, again feeding it the packets
    /// that follow until they come out.
    fn decode(
        &mut self,
        segment: &Segment,
        frames: &mut Vec<(usize, RgbImage)>,
    ) -> Result<Result<(), Fallback>, VideoError> {
        let mut got = vec![false; segment.frames.len()];
        let pass = match self.pass(segment, true, &mut got, frames)? {
            Pass::DrainedEarly => self.pass(segment, false, &mut got, frames)?,
            pass => pass,
        };
        Ok(match pass {
            Pass::Done => Ok(()),
            Pass::Fallback(f) => Err(f),
            Pass::DrainedEarly => Err(Fallback("the decoder ended before handing out every wanted frame".into())),
        })
    }

    /// Decodes the segment's packets from its keyframe until the wanted frames not `got` yet come out.
    fn pass(
        &mut self,
        segment: &Segment,
        drain: bool,
        got: &mut [bool],
        frames: &mut Vec<(usize, RgbImage)>,
    ) -> Result<Pass, VideoError> {
        let job = self.job;
        if let Err(f) = self.cursor.seek_to(segment.start)? {
            return Ok(Pass::Fallback(f));
        }
        let decoder = &mut self.decoder;
        decoder.flush();
        decoder.skip_frame(Discard::Default);
        let mut skipping = false;
        let mut missing = got.iter().filter(|&&g| !g).count();
        let mut ordinal = segment.start;
        let mut eof_sent = false;
        let mut drained = false;
        let mut decode_error: Option<String> = None;
        let mut frame = VideoFrame::empty();
        let not_produced = |error: &Option<String>, got: &[bool]| {
            let first = segment.frames.iter().zip(got).find(|(_, &g)| !g).map_or(0, |(&f, _)| f);
            Pass::Fallback(Fallback(format!(
                "frame {first} not produced after seeking{}",
                error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            )))
        };
        while missing > 0 {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    let Some(pts) = frame.pts().or(frame.timestamp()) else {
                        return Ok(Pass::Fallback(Fallback("a decoded frame has no timestamp".into())));
                    };
                    let Some(&number) = job.frame_of_pts.get(&pts) else {
                        return Ok(Pass::Fallback(Fallback(format!(
                            "decoded frame with pts {pts} is not in the index"
                        ))));
                    };
                    if let Ok(i) = segment.frames.binary_search(&number) {
                        if !got[i] {
                            got[i] = true;
                            missing -= 1;
                            frames.push((number, job.source.to_rgb(&mut self.converter, &frame, job.options)?));
                        }
                    }
                }
                Err(ff::Error::Eof) if drained => return Ok(Pass::DrainedEarly),
                // Drained at the end of the file without a wanted frame: let the sequential decode decide (it
                // reports the error).
                Err(ff::Error::Eof) => return Ok(not_produced(&decode_error, got)),
                Err(e) => {
                    // EAGAIN: the decoder wants the next packet. Any other error is kept (the sequential decode
                    // reports it if the frame never comes) and decoding goes on with the next packet.
                    if !matches!(e, ff::Error::Other { errno } if errno == ff::util::error::EAGAIN) {
                        decode_error = Some(e.to_string());
                    }
                    if eof_sent {
                        return Ok(if drained { Pass::DrainedEarly } else { not_produced(&decode_error, got) });
                    }
                    let packet = match self.cursor.read_video_packet() {
                        Ok(Some(packet)) => packet,
                        Ok(None) | Err(_) => {
                            let _ = decoder.send_eof();
                            eof_sent = true;
                            continue;
                        }
                    };
                    if job.index.entries.get(ordinal).map(PacketEntry::id) != Some(PacketEntry::of(&packet).id()) {
                        return Ok(Pass::Fallback(Fallback(format!("packet {ordinal} differs from the index"))));
                    }
                    // Non-reference frames (nothing is predicted from them) that are not wanted need no decoding.
                    let skip = job.source.skip_nonref && segment.packets.binary_search(&ordinal).is_err();
                    if skip != skipping {
                        decoder.skip_frame(if skip { Discard::NonReference } else { Discard::Default });
                        skipping = skip;
                    }
                    match decoder.send_packet(&packet) {
                        Ok(()) => {}
                        // Frames still to take out first: send this packet again next time.
                        Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                            self.cursor.pending = Some(packet);
                            continue;
                        }
                        Err(e) => decode_error = Some(format!("packet {ordinal}: {e}")),
                    }
                    // Nothing after the last wanted packet is needed: drain the decoder for the frames it holds.
                    if drain && ordinal == segment.end() {
                        let _ = decoder.send_eof();
                        eof_sent = true;
                        drained = true;
                    }
                    ordinal += 1;
                }
            }
        }
        Ok(Pass::Done)
    }
}

/// Whether a stream's non-reference frames may be left undecoded (`AVDISCARD_NONREF`) without changing any other
/// frame. H.264: pictures with `nal_ref_idc` 0 are never referenced. HEVC: FFmpeg skips sub-layer non-reference
/// pictures (`TRAIL_N`, `RASL_N`, ...), which pictures of a higher temporal sub-layer may still reference, so only
/// streams with a single temporal sub-layer qualify. Other codecs are decoded in full.
pub(super) fn nonref_skipping_is_safe(codec: &str, extradata: &[u8]) -> bool {
    match codec {
        "h264" => true,
        "hevc" => hevc_temporal_sub_layers(extradata) == Some(1),
        _ => false,
    }
}

/// The temporal sub-layers of an HEVC stream, from its extradata: an `hvcC` record (ISO/IEC 14496-15; byte 21
/// holds `numTemporalLayers` in bits 5..3, 0 meaning unknown) or Annex B parameter sets (the first SPS's
/// `sps_max_sub_layers_minus1`, bits 3..1 of the byte after its two-byte NAL header). `None` when unknown.
fn hevc_temporal_sub_layers(extradata: &[u8]) -> Option<u8> {
    if extradata.len() >= 23 && extradata[0] == 1 {
        let layers = (extradata[21] >> 3) & 0x7;
        return (layers > 0).then_some(layers);
    }
    const SPS: u8 = 33;
    extradata.windows(6).find(|w| w[..3] == [0, 0, 1] && (w[3] >> 1) & 0x3f == SPS).map(|w| ((w[5] >> 1) & 0x7) + 1)
}

/// One demuxer's position in the video stream, by packet ordinal.
struct Cursor<'a> {
    input: &'a mut Input,
    /// A packet already read that the next `read_video_packet` returns (the keyframe a seek positioned on, or a
    /// packet the decoder refused until its frames were taken out).
    pending: Option<Packet>,
    source: &'a VideoSource,
    index: &'a PacketIndex,
}

impl Cursor<'_> {
    /// The next packet of the video stream (as the index counts them), `None` at the end of the file.
    fn read_video_packet(&mut self) -> Result<Option<Packet>, ff::Error> {
        if let Some(packet) = self.pending.take() {
            return Ok(Some(packet));
        }
        loop {
            match read_packet(self.input)? {
                Some(p) if is_frame_packet(&p, self.source.stream) => return Ok(Some(p)),
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
            // SAFETY: a plain FFmpeg call on the demuxer this cursor borrows.
            let ret = unsafe {
                ff::ffi::av_seek_frame(
                    self.input.as_mut_ptr(),
                    self.source.stream as i32,
                    ts,
                    ff::ffi::AVSEEK_FLAG_BACKWARD,
                )
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `hvcC` record's first 23 bytes with `numTemporalLayers` set.
    fn hvcc(temporal_layers: u8) -> Vec<u8> {
        let mut record = vec![0u8; 23];
        record[0] = 1;
        record[21] = 0b11 | (1 << 2) | (temporal_layers << 3);
        record
    }

    #[test]
    fn h264_always_skips_non_reference_frames_and_other_codecs_never() {
        assert!(nonref_skipping_is_safe("h264", &[]));
        for codec in ["vp9", "av1", "mpeg4"] {
            assert!(!nonref_skipping_is_safe(codec, &hvcc(1)), "{codec}");
        }
    }

    #[test]
    fn hevc_skips_non_reference_frames_only_with_one_temporal_sub_layer() {
        assert!(nonref_skipping_is_safe("hevc", &hvcc(1)));
        assert!(!nonref_skipping_is_safe("hevc", &hvcc(3)), "sub-layer non-reference pictures can be referenced");
        assert!(!nonref_skipping_is_safe("hevc", &hvcc(0)), "unknown");
        assert!(!nonref_skipping_is_safe("hevc", &[]), "no extradata");
        // Annex B: a VPS, then an SPS (NAL type 33: header 0x42 0x01) whose first byte is
        // sps_video_parameter_set_id (4 bits), sps_max_sub_layers_minus1 (3 bits), temporal_id_nesting (1 bit).
        let annex_b = |max_sub_layers_minus1: u8| {
            [&[0, 0, 0, 1, 0x40, 0x01, 0x0c][..], &[0, 0, 1, 0x42, 0x01, (max_sub_layers_minus1 << 1) | 1, 0x60]]
                .concat()
        };
        assert!(nonref_skipping_is_safe("hevc", &annex_b(0)));
        assert!(!nonref_skipping_is_safe("hevc", &annex_b(2)));
    }

    #[test]
    fn one_segment_keeps_ffmpegs_threads_and_several_share_the_cores() {
        let with = |threads| SampleOptions { threads, ..SampleOptions::default() };
        assert_eq!(workers_and_threads(1, &with(0)), (1, 0), "FFmpeg's automatic count");
        assert_eq!(workers_and_threads(1, &with(3)), (1, 3));
        assert_eq!(workers_and_threads(8, &with(2)), (2, 1));
        assert_eq!(workers_and_threads(8, &with(16)), (8, 2));
        assert_eq!(workers_and_threads(3, &with(8)), (3, 2));
        assert_eq!(workers_and_threads(8, &with(1)), (1, 1));
    }
}

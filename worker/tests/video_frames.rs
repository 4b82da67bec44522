//! Video frame sampling against PyAV: frame numbers, rgb24 bytes and metadata for the clips made by
//! `tools/make_video_fixtures.py`, seeking vs sequential decoding, rotation, and errors on broken inputs.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use vislingo_worker::media::video::{
    article_indices, rotate_clockwise, sample_bytes, sample_file, FrameCountSource, SampleMethod, SampleOptions,
    VideoError, VideoReader,
};
use vislingo_worker::media::RgbImage;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/videos")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap()
}

fn clips() -> Vec<(String, Value)> {
    let reference = reference();
    reference["clips"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn unrotated() -> SampleOptions {
    SampleOptions { rotate: false, ..SampleOptions::default() }
}

fn sha256(image: &RgbImage) -> String {
    Sha256::digest(&image.data).iter().map(|b| format!("{b:02x}")).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

#[test]
fn article_indices_equal_numpy_arange_for_many_frame_counts() {
    let cases: Vec<(usize, usize, Vec<usize>)> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("arange.json")).unwrap()).unwrap();
    assert!(cases.len() > 500);
    assert!(cases.iter().any(|(_, k, idx)| idx.len() != *k), "the cases include lengths other than k");
    assert!(cases.iter().any(|(n, k, _)| k > n), "the cases include k > N");
    for (n, k, expected) in cases {
        assert_eq!(article_indices(n, k), expected, "np.arange(0, {n}, {n}/{k}).astype(int)");
    }
}

#[test]
fn sampled_frames_are_pyavs_rgb24_bytes_for_every_clip() {
    for (name, clip) in clips() {
        let path = fixtures().join(&name);
        let sampled = sample_file(&path, &unrotated()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sampled.frame_indices, usizes(&clip["indices"]), "{name}: frame numbers");
        let expected = std::fs::read(path.with_extension("k8.rgb")).unwrap();
        let got: Vec<u8> = sampled.frames.iter().flat_map(|f| f.data.iter().copied()).collect();
        assert_eq!(got.len(), expected.len(), "{name}: bytes");
        for (i, (g, e)) in got.chunks(expected.len() / 8).zip(expected.chunks(expected.len() / 8)).enumerate() {
            let diff = g.iter().zip(e).filter(|(a, b)| a != b).count();
            assert!(
                diff == 0,
                "{name}: sampled frame {i} (#{}) differs from PyAV in {diff} bytes",
                sampled.frame_indices[i]
            );
        }
        assert_eq!(sampled.method, SampleMethod::Seek, "{name}: seeking was possible");
    }
}

#[test]
fn metadata_matches_the_container() {
    for (name, clip) in clips() {
        let reader = VideoReader::open(&fixtures().join(&name), &name).unwrap();
        let info = reader.info();
        assert_eq!(info.width as u64, clip["width"].as_u64().unwrap(), "{name}");
        assert_eq!(info.height as u64, clip["height"].as_u64().unwrap(), "{name}");
        assert_eq!(info.codec, clip["codec"].as_str().unwrap(), "{name}");
        assert_eq!(info.frame_count as u64, clip["frame_count"].as_u64().unwrap(), "{name}");
        let source = serde_json::to_value(info.frame_count_source).unwrap();
        assert_eq!(source, clip["frame_count_source"], "{name}");
        assert_eq!(info.packets as u64, clip["decoded_frames"].as_u64().unwrap(), "{name}: packets");
        assert_eq!(info.size_bytes, std::fs::metadata(fixtures().join(&name)).unwrap().len());
        assert!((info.duration_s - clip["duration_s"].as_f64().unwrap()).abs() < 1e-9, "{name}: {info:?}");
        assert!((info.fps - clip["fps"].as_f64().unwrap()).abs() < 1e-9, "{name}: {info:?}");
        let rotation = match name.as_str() {
            "rotated.mp4" => 270,
            "rotated_270.mp4" => 90,
            _ => 0,
        };
        assert_eq!(info.rotation, rotation, "{name}");
    }
    let vp9 = VideoReader::open(&fixtures().join("vp9.webm"), "vp9.webm").unwrap();
    assert_eq!(vp9.info().frame_count_source, FrameCountSource::DurationTimesRate);
    assert!((vp9.info().fps - 24.0).abs() < 1e-9 && (vp9.info().duration_s - 1.5).abs() < 1e-3, "{:?}", vp9.info());
    let offset = VideoReader::open(&fixtures().join("offset_bframes.mkv"), "offset").unwrap();
    assert!((offset.info().start_time_s - 1.5).abs() < 1e-3, "{:?}", offset.info());
}

#[test]
fn seeking_gives_every_frame_exactly_as_sequential_decoding_and_pyav() {
    for (name, clip) in clips() {
        let path = fixtures().join(&name);
        let all = clip["decoded_frames"].as_u64().unwrap() as usize;
        let pyav: Vec<String> =
            clip["frame_sha256"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().into()).collect();
        // Out of order and repeated, to exercise seeking backwards and the hand-out of repeats.
        let mut numbers: Vec<usize> = (0..all).rev().collect();
        numbers.extend([all / 2, 0, all - 1]);
        let mut reader = VideoReader::open(&path, &name).unwrap();
        let (seek, method) = reader.frames_at(&numbers, &unrotated()).unwrap();
        assert_eq!(method, SampleMethod::Seek, "{name}");
        let sequential = SampleOptions { method: SampleMethod::Sequential, ..unrotated() };
        let (seq, method) = reader.frames_at(&numbers, &sequential).unwrap();
        assert_eq!(method, SampleMethod::Sequential);
        for (i, &n) in numbers.iter().enumerate() {
            assert!(seek[i] == seq[i], "{name}: frame {n} by seeking differs from sequential decoding");
            assert_eq!(sha256(&seek[i]), pyav[n], "{name}: frame {n} differs from PyAV");
        }
    }
}

#[test]
fn seeking_on_one_thread_or_several_gives_pyavs_frames() {
    // Keyframe segments decoded one after the other on one decoder (1), or side by side on their own demuxers and
    // decoders whatever the machine's core count (3, 8: more threads than most clips have segments).
    for (name, clip) in clips() {
        let path = fixtures().join(&name);
        let all = clip["decoded_frames"].as_u64().unwrap() as usize;
        let pyav = clip["frame_sha256"].as_array().unwrap();
        let sampled_bytes = std::fs::read(path.with_extension("k8.rgb")).unwrap();
        for threads in [1, 3, 8] {
            let options = SampleOptions { threads, ..unrotated() };
            let sampled = sample_file(&path, &options).unwrap();
            assert_eq!(sampled.method, SampleMethod::Seek, "{name}, {threads} threads");
            let got: Vec<u8> = sampled.frames.iter().flat_map(|f| f.data.iter().copied()).collect();
            assert!(got == sampled_bytes, "{name}, {threads} threads: sampled frames differ from PyAV");
            let numbers: Vec<usize> = (0..all).step_by(2).rev().collect();
            let (frames, _) = VideoReader::open(&path, &name).unwrap().frames_at(&numbers, &options).unwrap();
            for (n, frame) in numbers.iter().zip(&frames) {
                assert_eq!(sha256(frame), pyav[*n].as_str().unwrap(), "{name}, {threads} threads: frame {n}");
            }
        }
    }
}

#[test]
fn single_frames_by_seeking_equal_pyav_one_seek_each() {
    // One fresh seek per frame (no decoding carried over from an earlier frame).
    for name in ["h264_bframes.mp4", "vfr.mp4", "offset_bframes.mkv", "hevc.mp4", "vp9.webm"] {
        let clip = &reference()["clips"][name];
        let all = clip["decoded_frames"].as_u64().unwrap() as usize;
        for n in (0..all).step_by(3) {
            let mut reader = VideoReader::open(&fixtures().join(name), name).unwrap();
            let (frames, _) = reader.frames_at(&[n], &unrotated()).unwrap();
            assert_eq!(sha256(&frames[0]), clip["frame_sha256"][n].as_str().unwrap(), "{name}: frame {n}");
        }
    }
}

#[test]
fn rotation_is_applied_by_default_and_skipped_on_request() {
    // rotated.mp4's display matrix is 90 degrees counter-clockwise (ffprobe: rotation=90), rotated_270.mp4's 90
    // degrees clockwise (ffprobe: -90, what phones write for clips shot upright).
    for (name, clockwise) in [("rotated.mp4", 270), ("rotated_270.mp4", 90)] {
        let path = fixtures().join(name);
        let upright = sample_file(&path, &SampleOptions::default()).unwrap();
        let stored = sample_file(&path, &unrotated()).unwrap();
        assert_eq!(upright.info.rotation, clockwise, "{name}");
        assert_eq!(upright.info.display_size(), (48, 64), "{name}");
        assert_eq!((stored.frames[0].width, stored.frames[0].height), (64, 48), "{name}");
        for (u, s) in upright.frames.iter().zip(&stored.frames) {
            assert_eq!(*u, rotate_clockwise(s, clockwise), "{name}");
        }
        // Byte for byte what ffmpeg shows for frame 0 (it applies the display matrix).
        let ffmpeg = std::fs::read(path.with_extension("ffmpeg_frame0.rgb")).unwrap();
        assert!(upright.frames[0].data == ffmpeg, "{name}: frame 0 differs from ffmpeg's autorotated frame");
        assert!(rotate_clockwise(&stored.frames[0], 360 - clockwise).data != ffmpeg);
    }
}

#[test]
fn more_frames_than_the_clip_has_gives_each_frame_once() {
    let options = SampleOptions { frames: 50, ..unrotated() };
    let sampled = sample_file(fixtures().join("rotated.mp4"), &options).unwrap();
    assert_eq!(sampled.frame_indices, (0..20).collect::<Vec<_>>());
    assert_eq!(sampled.frames.len(), 20);
}

#[test]
fn bytes_entry_point_gives_the_same_frames_as_the_file() {
    let path = fixtures().join("h264_bframes.mp4");
    let bytes = std::fs::read(&path).unwrap();
    let from_bytes = sample_bytes(&bytes, "s3://bucket/h264_bframes.mp4", &unrotated()).unwrap();
    let from_file = sample_file(&path, &unrotated()).unwrap();
    assert_eq!(from_bytes.frames, from_file.frames);
    assert_eq!(from_bytes.frame_indices, from_file.frame_indices);
}

#[test]
fn truncated_clip_reports_the_missing_frame_and_names_the_file() {
    let err = sample_file(fixtures().join("truncated.mp4"), &SampleOptions::default()).unwrap_err();
    assert!(matches!(err, VideoError::Truncated { frame_count: 40, .. }), "{err:?}");
    assert!(err.to_string().contains("truncated.mp4"), "{err}");
    assert!(err.asset().ends_with("truncated.mp4"));
    // The same error without seeking: frames are never replaced by others.
    let sequential = SampleOptions { method: SampleMethod::Sequential, ..SampleOptions::default() };
    let err = sample_file(fixtures().join("truncated.mp4"), &sequential).unwrap_err();
    assert!(matches!(err, VideoError::Truncated { .. }), "{err:?}");
}

#[test]
fn frames_before_the_truncation_are_still_readable() {
    let path = fixtures().join("truncated.mp4");
    let full = reference()["clips"]["h264_no_bframes.mp4"]["frame_sha256"].clone();
    let mut reader = VideoReader::open(&path, "truncated.mp4").unwrap();
    let (frames, _) = reader.frames_at(&[0, 5], &unrotated()).unwrap();
    assert_eq!(sha256(&frames[0]), full[0].as_str().unwrap());
    assert_eq!(sha256(&frames[1]), full[5].as_str().unwrap());
}

#[test]
fn not_a_video_is_refused_with_the_file_name() {
    let err = sample_file(fixtures().join("not_a_video.mp4"), &SampleOptions::default()).unwrap_err();
    assert!(matches!(err, VideoError::Open { .. } | VideoError::NoVideoStream { .. }), "{err:?}");
    assert!(err.to_string().contains("not_a_video.mp4"), "{err}");
    let err = sample_bytes(b"", "empty.mp4", &SampleOptions::default()).unwrap_err();
    assert!(err.to_string().contains("empty.mp4"), "{err}");
}

#[test]
fn audio_only_file_has_no_video_stream() {
    let err = sample_file(fixtures().join("audio_only.m4a"), &SampleOptions::default()).unwrap_err();
    assert!(matches!(err, VideoError::NoVideoStream { .. }), "{err:?}");
    assert!(err.to_string().contains("audio_only.m4a"), "{err}");
}

#[test]
fn frames_over_the_pixel_limit_are_refused_before_decoding() {
    let options = SampleOptions { max_frame_pixels: 1000, ..SampleOptions::default() };
    let err = sample_file(fixtures().join("vp9.webm"), &options).unwrap_err();
    assert!(matches!(err, VideoError::TooLarge { .. }) && err.to_string().contains("vp9.webm"), "{err}");
    let options = SampleOptions { max_output_bytes: 64 * 48 * 3 * 7, ..SampleOptions::default() };
    let err = sample_file(fixtures().join("vp9.webm"), &options).unwrap_err();
    assert!(matches!(err, VideoError::TooLarge { .. }), "{err}");
}

#[test]
fn video_info_round_trips_through_json() {
    let info = VideoReader::open(&fixtures().join("vp9.webm"), "vp9.webm").unwrap().info().clone();
    let json = serde_json::to_string(&info).unwrap();
    assert!(json.contains("\"frame_count_source\":\"duration_times_rate\""), "{json}");
    assert_eq!(serde_json::from_str::<vislingo_worker::media::VideoInfo>(&json).unwrap(), info);
}

#[test]
fn stream_without_timestamps_falls_back_to_sequential_decoding() {
    // The B-frame clip as a raw H.264 stream: packets carry no pts, so seeking cannot number frames.
    let path = fixtures().join("h264_bframes_raw.h264");
    let pyav = reference()["clips"]["h264_bframes.mp4"]["frame_sha256"].clone();
    let mut reader = VideoReader::open(&path, "h264_bframes_raw.h264").unwrap();
    let numbers = [44, 0, 7, 20, 7];
    let (frames, method) = reader.frames_at(&numbers, &unrotated()).unwrap();
    assert_eq!(method, SampleMethod::Sequential);
    for (frame, n) in frames.iter().zip(numbers) {
        assert_eq!(sha256(frame), pyav[n].as_str().unwrap(), "frame {n}");
    }
    let err = reader.frames_at(&[45], &unrotated()).unwrap_err();
    assert!(matches!(err, VideoError::Truncated { frame: 45, found: 45, .. }), "{err:?}");
}

#[test]
fn frames_subcommand_prints_info_and_writes_pngs() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["frames", "--frames", "4", "--format", "json", "--out"])
        .arg(out.path())
        .arg(fixtures().join("rotated_270.mp4"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(usizes(&json["frame_indices"]), vec![0, 3, 6, 9]);
    assert_eq!(json["info"]["rotation"], 90);
    assert_eq!(json["info"]["frame_count_source"], "container");
    let png = ::image::open(out.path().join("frame_000006.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (48, 64), "written upright");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 4);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["frames"])
        .arg(fixtures().join("audio_only.m4a"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("audio_only.m4a") && stderr.contains("no video stream"), "{stderr}");
}

#!/usr/bin/env python3
"""Video fixtures for worker/tests/video_frames.rs: small clips made with the `ffmpeg` CLI, and the reference
frames PyAV gives for them (the article's sampling: `np.arange(0, N, N / k).astype(int)` over
`container.decode(video=0)`, RGB by `frame.to_ndarray(format="rgb24")`).

Usage: /opt/vl/venv/bin/python tools/make_video_fixtures.py [OUT_DIR]   (default worker/tests/fixtures/videos)

Writes, per clip, NAME.EXT plus NAME.k8.rgb (the sampled frames' rgb24 bytes, concatenated), and reference.json:
metadata, sampled frame numbers, sha256 of every decoded frame, and numpy's arange results for many (N, k).
Deterministic: the ffmpeg filters used are synthetic (testsrc2, sine) and encoders run single-threaded.
"""

import hashlib
import json
import math
import os
import subprocess
import sys

import av
import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "worker/tests/fixtures/videos")
K = 8
SIZE = "64x48"

# Encoder settings shared by the H.264 clips: single thread and no scene-cut keyframes, so outputs are reproducible.
X264 = ["-c:v", "libx264", "-threads", "1", "-pix_fmt", "yuv420p", "-x264-params", "scenecut=0"]


def src(rate, frames, size=SIZE):
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-frames:v", str(frames)]


# name -> ffmpeg arguments after the input options (the output file is appended).
CLIPS = {
    # H.264 without B-frames, keyframe every 10 frames.
    "h264_no_bframes.mp4": src(30, 40) + X264 + ["-bf", "0", "-g", "10", "-movflags", "+faststart"],
    # H.264 with B-frames (pts order != decode order), keyframe every 12 frames; mp4 uses an edit list.
    "h264_bframes.mp4": src(25, 45) + X264 + ["-bf", "3", "-g", "12", "-movflags", "+faststart"],
    # VP9 in WebM: the container has no frame count.
    "vp9.webm": src(24, 36) + ["-c:v", "libvpx-vp9", "-threads", "1", "-g", "9", "-b:v", "200k", "-deadline",
                                "good", "-cpu-used", "4", "-row-mt", "0"],
    # Display matrices, set by a stream copy with a `rotate` tag in main() (FFmpeg 5.1 drops the tag when it
    # encodes). FFmpeg 5.1 turns `rotate=90` into a matrix of 90 degrees counter-clockwise (ffprobe: rotation=90),
    # and shows such a clip turned 90 degrees counter-clockwise; `rotate=270` the other way (ffprobe: -90, the
    # matrix phones write for clips shot upright).
    "rotated.mp4": src(30, 20, "64x48") + X264 + ["-bf", "0", "-g", "10"],
    "rotated_270.mp4": src(30, 12, "64x48") + X264 + ["-bf", "0", "-g", "10"],
    # Variable frame rate: frames 8..14 dropped, then every other frame, timestamps kept.
    "vfr.mp4": src(30, 60) + ["-vf", "select='lt(n\\,8)+gte(n\\,15)*not(mod(n\\,2))'", "-fps_mode", "vfr"]
    + X264 + ["-bf", "2", "-g", "8"],
    # Matroska with B-frames and a first timestamp of 1.5 s (and no frame count in the container).
    "offset_bframes.mkv": src(25, 40) + X264 + ["-bf", "2", "-g", "15", "-output_ts_offset", "1.5"],
    # HEVC with open GOPs (CRA keyframes with leading pictures).
    "hevc.mp4": src(25, 40) + ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params",
                               "pools=1:frame-threads=1:keyint=12:min-keyint=12:scenecut=0:open-gop=1:bframes=3:log-level=error"],
    # AV1 in Matroska.
    "av1.mkv": src(24, 30) + ["-c:v", "libaom-av1", "-threads", "1", "-cpu-used", "8", "-g", "10", "-b:v", "100k"],
    # MPEG-TS: packets re-parsed after every seek, timestamps at 90 kHz.
    "h264_ts.ts": src(25, 30) + X264 + ["-bf", "3", "-g", "12"],
    # MPEG-4 part 2 in AVI.
    "mpeg4.avi": src(25, 30) + ["-c:v", "mpeg4", "-threads", "1", "-bf", "0", "-g", "10", "-q:v", "4"],
}


def ffmpeg(args, out):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-nostdin"] + args + [out], check=True)


def article_indices(n, k):
    return np.arange(0, n, n / k).astype(int).tolist()


def read_video_pyav(container, indices):
    """The article's decode loop (LLaVA-NeXT-Video's example), verbatim but for returning rgb24 arrays."""
    frames = []
    container.seek(0)
    start_index = indices[0]
    end_index = indices[-1]
    for i, frame in enumerate(container.decode(video=0)):
        if i > end_index:
            break
        if i >= start_index and i in indices:
            frames.append(frame)
    return [x.to_ndarray(format="rgb24") for x in frames]


def duration_and_rate(c):
    """Seconds (the stream's duration, else the container's) and the average frame rate (else r_frame_rate)."""
    s = c.streams.video[0]
    duration = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
    return duration, s.average_rate or s.base_rate


def frame_count(path):
    """N as vislingo defines it: the container's nb_frames, else round(duration * average rate), capped at the
    frames the file holds."""
    with av.open(path) as c:
        s = c.streams.video[0]
        if s.frames > 0:
            return s.frames, "container"
        duration, rate = duration_and_rate(c)
        derived = int(math.floor(duration * float(rate) + 0.5))
        packets = sum(1 for p in c.demux(video=0) if p.size > 0)
        return (derived, "duration_times_rate") if derived <= packets else (packets, "packet_count")


def rgb_frames(path):
    """Every frame of the first video stream in decode order, as rgb24 bytes (the reference ignores rotation)."""
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def reference(path):
    n, source = frame_count(path)
    frames = rgb_frames(path)
    with av.open(path) as c:
        s = c.streams.video[0]
        info = {
            "width": s.codec_context.width,
            "height": s.codec_context.height,
            # FFmpeg's codec name (PyAV's codec_context.name is the decoder's, e.g. libdav1d).
            "codec": subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                     "stream=codec_name", "-of", "csv=p=0", path],
                                    check=True, capture_output=True, text=True).stdout.split()[0].split(",")[0],
            "container_frames": s.frames,
            "duration_s": duration_and_rate(c)[0],
            "fps": float(duration_and_rate(c)[1]),
        }
    indices = article_indices(n, K)
    with av.open(path) as c:
        sampled = read_video_pyav(c, indices)
    kept = sorted(set(i for i in indices if i < len(frames)))
    assert all((frames[i] == a).all() for i, a in zip(kept, sampled)), path
    with open(path.rsplit(".", 1)[0] + f".k{K}.rgb", "wb") as f:
        for a in sampled:
            f.write(a.tobytes())
    return {
        **info,
        "frame_count": n,
        "frame_count_source": source,
        "decoded_frames": len(frames),
        "k": K,
        "arange": indices,
        "indices": kept,
        "sampled_shape": list(sampled[0].shape),
        "frame_sha256": [hashlib.sha256(a.tobytes()).hexdigest() for a in frames],
    }


def corrupt_inputs():
    # Truncated halfway: the index (moov, at the front) lists frames whose bytes are missing.
    with open(os.path.join(OUT, "h264_no_bframes.mp4"), "rb") as f:
        data = f.read()
    with open(os.path.join(OUT, "truncated.mp4"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(OUT, "not_a_video.mp4"), "wb") as f:
        f.write(b"This is a text file with a video extension.\n" * 20)
    ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac"], os.path.join(OUT, "audio_only.m4a"))


def numpy_cases():
    """np.arange(0, N, N/k).astype(int) for many (N, k), k > N included: every case where float rounding makes the
    length differ from k, all small ones, and a few large ones."""
    cases = []
    for n in list(range(1, 130)) + [239, 240, 241, 1000, 1799, 1800, 2997, 8999, 26973, 107892, 1234567]:
        for k in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 24, 29, 31, 32, 49, 64, 97, 100, 128, 200]:
            cases.append((n, k))
    out = []
    for n, k in cases:
        idx = article_indices(n, k)
        if len(idx) != k or (n < 40 and k <= 32) or (n, k) in [(1000, 8), (1800, 8), (1234567, 8)]:
            out.append([n, k, idx])
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    refs = {}
    for name, args in CLIPS.items():
        path = os.path.join(OUT, name)
        if name.startswith("rotated"):
            tag = "270" if name == "rotated_270.mp4" else "90"
            ffmpeg(args, path + ".tmp.mp4")
            ffmpeg(["-i", path + ".tmp.mp4", "-c", "copy", "-metadata:s:v:0", f"rotate={tag}"], path)
            os.remove(path + ".tmp.mp4")
            # What ffmpeg shows (it applies the display matrix): frame 0, rgb24.
            ffmpeg(["-i", path, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24"],
                   path.rsplit(".", 1)[0] + ".ffmpeg_frame0.rgb")
        else:
            ffmpeg(args, path)
        refs[name] = reference(path)
        print(name, refs[name]["frame_count"], refs[name]["frame_count_source"], refs[name]["indices"])
    corrupt_inputs()
    doc = {
        "generator": "tools/make_video_fixtures.py",
        "pyav": av.__version__,
        "ffmpeg_in_pyav": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "numpy": np.__version__,
        "clips": refs,
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    # [N, k, np.arange(0, N, N / k).astype(int)], one case a line.
    with open(os.path.join(OUT, "arange.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, separators=(",", ":")) for c in numpy_cases()) + "\n]\n")


if __name__ == "__main__":
    main()

"""Video frame sampling against the article's own code: its PyAV loop (`read_video_pyav` and the frame numbers of
`process_video`, copied below as the article has them) timed side by side with vislingo's seeking
(`video-frames-bench --seek-only`), alternating the two, and both frame sets compared byte for byte.

    python3 bench/video_frames_pyav.py VIDEO --seek-bench target/release/video-frames-bench [--repeats 5]

Prints one JSON line: the medians, their ratio, whether the frames were identical, PyAV's version and the FFmpeg
libraries it bundles, the threading PyAV opened the decoder with, and the load average. `bench/video_frames.sh`
runs it with `VL_BASELINE=pyav` (av==14.0.1 and numpy as tools/requirements.txt pins them).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import av
import numpy as np


# --- the article's code (read_video_pyav and the indices of process_video), unchanged but for `self` ---
def read_video_pyav(container: av.container.input.InputContainer, indices: list[int]) -> np.ndarray:
    frames = []
    container.seek(0)
    start_index = indices[0]
    end_index = indices[-1]
    for i, frame in enumerate(container.decode(video=0)):
        if i > end_index:
            break
        if i >= start_index and i in indices:
            frames.append(frame)
    decoded_frames = np.stack([x.to_ndarray(format="rgb24") for x in frames])
    return decoded_frames


def process_video(container: av.container.input.InputContainer, k: int) -> np.ndarray:
    video_stream = container.streams.video[0]
    indices = np.arange(0, video_stream.frames, video_stream.frames / k).astype(int)
    return read_video_pyav(container, indices)
# --- end of the article's code ---


def article_loop(video: str, k: int) -> tuple[np.ndarray, dict]:
    """Opens the file afresh (as the seek side does) and runs the article's loop."""
    with av.open(video) as container:
        frames = process_video(container, k)
        codec = container.streams.video[0].codec_context
        threading = {"thread_type": str(codec.thread_type), "thread_count": codec.thread_count}
    return frames, threading


def seek_once(bench: str, video: str, k: int, frames_out: str) -> dict:
    out = subprocess.run(
        [bench, video, "--frames", str(k), "--repeats", "1", "--seek-only", "--write-frames", frames_out],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--seek-bench", required=True, help="the video-frames-bench binary")
    ap.add_argument("--frames", type=int, default=8, help="frames to sample (k)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each method")
    args = ap.parse_args()

    load_before = os.getloadavg()
    seek_s, pyav_s, identical = [], [], True
    indices = threading = seek = None
    with tempfile.TemporaryDirectory() as tmp:
        frames_out = os.path.join(tmp, "frames.rgb")
        for _ in range(args.repeats):
            # The seek side's own timing (sample_file from opening the file to the last RGB frame), not the
            # process start-up around it.
            seek = seek_once(args.seek_bench, args.video, args.frames, frames_out)
            seek_s.append(seek["seek_median_s"])
            started = time.perf_counter()
            frames, threading = article_loop(args.video, args.frames)
            pyav_s.append(time.perf_counter() - started)
            with open(frames_out, "rb") as f:
                ours = f.read()
            identical &= list(frames.shape) == [len(seek["frame_indices"]), *seek["frame_shape"]] and (
                frames.tobytes() == ours
            )
        with av.open(args.video) as container:
            n = container.streams.video[0].frames
            indices = np.arange(0, n, n / args.frames).astype(int).tolist()
    identical &= indices == seek["frame_indices"]

    seek_median, pyav_median = statistics.median(seek_s), statistics.median(pyav_s)
    print(json.dumps({
        "video": args.video,
        "frame_indices": indices,
        "repeats": args.repeats,
        "seek_s": seek_s,
        "article_pyav_s": pyav_s,
        "seek_median_s": seek_median,
        "article_pyav_median_s": pyav_median,
        "speedup": pyav_median / seek_median,
        "identical_frames": identical,
        "pyav": av.__version__,
        "pyav_ffmpeg": {name: ".".join(map(str, v)) for name, v in av.library_versions.items()},
        "pyav_decoder_threading": threading,
        "seek_threads": seek["threads"],
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }))
    if not identical:
        raise SystemExit("the article's PyAV loop and vislingo's seeking gave different frames")


if __name__ == "__main__":
    main()

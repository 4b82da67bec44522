#!/usr/bin/env bash
# Video frame sampling benchmark: seeking vs decoding every frame up to the last sampled one (see BENCHMARKS.md).
# Makes a 90 s 1080p H.264 clip with ffmpeg if missing (not committed), builds the release binary and runs it.
# Extra arguments go to video-frames-bench (e.g. --repeats 9 --frames 16 --threads 1).
#
#   VL_BENCH_VIDEO    the clip, default /var/tmp/vislingo-bench/h264_1080p_90s.mp4
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS as usual for cargo
set -euo pipefail
cd "$(dirname "$0")/.."

VIDEO="${VL_BENCH_VIDEO:-/var/tmp/vislingo-bench/h264_1080p_90s.mp4}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if [ ! -f "$VIDEO" ]; then
  mkdir -p "$(dirname "$VIDEO")"
  # testsrc2 moves every frame; libx264 defaults (preset medium, B-frames, keyframe at most every 250 frames),
  # as a phone or an editor would produce. ~2 min on 2 cores.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 90 \
    -c:v libx264 -pix_fmt yuv420p -preset veryfast -crf 23 "$VIDEO.part.mp4"
  mv "$VIDEO.part.mp4" "$VIDEO"
fi

CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p vislingo-bench --bin video-frames-bench -j "${CARGO_BUILD_JOBS:-2}"

exec "$TARGET_DIR/release/video-frames-bench" "$VIDEO" "$@"

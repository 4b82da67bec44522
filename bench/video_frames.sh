#!/usr/bin/env bash
# Video frame sampling benchmark: seeking vs decoding every frame up to the last sampled one (see BENCHMARKS.md).
# Makes a 90 s 1080p H.264 clip with ffmpeg if missing (not committed), builds the release binary and runs it.
# Extra arguments go to video-frames-bench (e.g. --repeats 9 --frames 16 --threads 1).
#
#   VL_BENCH_VIDEO    the clip, default /var/tmp/vislingo-bench/h264_1080p_90s.mp4
#   VL_CARGO_PROFILE  cargo profile of the binary, default release (the time is spent in FFmpeg's C libraries,
#                     which are the same in every profile; `dev` builds much faster from a warm target)
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

PROFILE="${VL_CARGO_PROFILE:-release}"
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --profile "$PROFILE" -p vislingo-bench --bin video-frames-bench \
  -j "${CARGO_BUILD_JOBS:-2}"
[ "$PROFILE" = dev ] && OUT_DIR=debug || OUT_DIR="$PROFILE"

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >&2
exec "$TARGET_DIR/$OUT_DIR/video-frames-bench" "$VIDEO" "$@"

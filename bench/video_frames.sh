#!/usr/bin/env bash
# Video frame sampling benchmark: seeking vs decoding every frame up to the last sampled one (see BENCHMARKS.md).
# Makes 90 s 1080p30 H.264 clips with ffmpeg if missing (cached, not committed), one per keyframe interval, builds
# the benchmark binary and runs it on each: one JSON line per clip. Extra arguments go to video-frames-bench
# (e.g. --repeats 9 --frames 16 --threads 1 --sequential-threads 1). Making the clips needs the `ffmpeg` command
# (Debian: apt-get install ffmpeg).
#
#   VL_BENCH_DIR      where the clips are cached, default /var/tmp/vislingo-bench
#   VL_BENCH_GOPS     keyframe intervals in frames, default "250 30": x264's default (8.3 s) and 1 s, as phones
#                     and cameras record
#   VL_CARGO_PROFILE  cargo profile of the binary, default release (the time is spent in FFmpeg's C libraries,
#                     the same in every profile; `dev` builds much faster from a warm target)
#   VL_BASELINE       sequential (default): the reference's method with vislingo's FFmpeg, in one process;
#                     pyav: the article's own PyAV loop (bench/video_frames_pyav.py, PyAV and numpy pinned as in
#                     tools/requirements.txt, installed into a venv under VL_BENCH_DIR), extra arguments to it
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS as usual for cargo
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${VL_BENCH_DIR:-/var/tmp/vislingo-bench}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PROFILE="${VL_CARGO_PROFILE:-release}"
[ "$PROFILE" = dev ] && OUT_DIR=debug || OUT_DIR="$PROFILE"

mkdir -p "$DIR"
for gop in ${VL_BENCH_GOPS:-250 30}; do
  video="$DIR/h264_1080p_90s_gop$gop.mp4"
  if [ ! -f "$video" ]; then
    command -v ffmpeg >/dev/null || { echo "bench/video_frames.sh: $video is missing and the ffmpeg command to make it is not installed (Debian: apt-get install ffmpeg)" >&2; exit 1; }
    # testsrc2 changes every frame; libx264 veryfast (3 B-frames), no scene-cut keyframes on this content.
    # A few minutes on 2 cores.
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 90 \
      -c:v libx264 -pix_fmt yuv420p -preset veryfast -crf 23 -g "$gop" "$video.part.mp4"
    mv "$video.part.mp4" "$video"
  fi
done

CARGO_TARGET_DIR="$TARGET_DIR" cargo build --profile "$PROFILE" -p vislingo-bench --bin video-frames-bench \
  -j "${CARGO_BUILD_JOBS:-2}"

BASELINE="${VL_BASELINE:-sequential}"
if [ "$BASELINE" = pyav ]; then
  venv="$DIR/pyav-venv"
  pins=$(grep -E '^(av|numpy)==' tools/requirements.txt)
  if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
    echo "$pins" >"$venv/.pins"
  fi
elif [ "$BASELINE" != sequential ]; then
  echo "bench/video_frames.sh: VL_BASELINE is sequential or pyav, not $BASELINE" >&2
  exit 2
fi

for gop in ${VL_BENCH_GOPS:-250 30}; do
  echo "gop $gop: load average before the run: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >&2
  video="$DIR/h264_1080p_90s_gop$gop.mp4"
  if [ "$BASELINE" = pyav ]; then
    "$venv/bin/python" bench/video_frames_pyav.py "$video" --seek-bench "$TARGET_DIR/$OUT_DIR/video-frames-bench" "$@"
  else
    "$TARGET_DIR/$OUT_DIR/video-frames-bench" "$video" "$@"
  fi
done

#!/usr/bin/env bash
# Gallery opening benchmark (see BENCHMARKS.md): writes a gallery of 10 000 generated records (describe, tags,
# sentiment and ad analysis, each translated into French, Hindi, Chinese, Arabic and Hebrew), then opens it in a
# fresh headless Chromium per run and reports when the first page was in the DOM and painted (since navigation
# start), and how long a tag search takes to cover every record. One JSON line; extra arguments go to
# gallery-open-bench (e.g. --runs 9 --records 50000 --tasks describe,tags).
#
#   VL_CARGO_PROFILE  cargo profile of the driver, default dev (the time measured is the browser's, not Rust's)
#   CHROMIUM          the browser binary (default: chromium on the PATH; .ci/run installs it)
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS as usual for cargo
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
PROFILE="${VL_CARGO_PROFILE:-dev}"
[ "$PROFILE" = dev ] && OUT_DIR=debug || OUT_DIR="$PROFILE"

CARGO_TARGET_DIR="$TARGET_DIR" cargo build --profile "$PROFILE" -p vislingo-bench --bin gallery-open-bench \
  -j "${CARGO_BUILD_JOBS:-2}"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >&2
mkdir -p bench/out
"$TARGET_DIR/$OUT_DIR/gallery-open-bench" "$@" | tee bench/out/gallery.json

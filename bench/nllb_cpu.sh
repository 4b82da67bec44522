#!/usr/bin/env bash
# NLLB-200 600M CPU benchmark: transformers vs CTranslate2 vs vislingo (see BENCHMARKS.md).
# Makes the random-weight checkpoint if missing, builds the release benchmark binary and runs the driver.
# Extra arguments go to bench/nllb_cpu.py (e.g. --repeats 3 --new-tokens 16 --profile).
#
#   VL_PYTHON     Python with torch 2.5.1, transformers 4.46.3, ctranslate2 (bench/requirements.txt)
#                 default /opt/vl/venv/bin/python
#   VL_NLLB_600M  checkpoint folder, default /opt/vl/nllb-600m-random (CTranslate2 copy: <folder>-ct2)
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS as usual for cargo
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${VL_PYTHON:-/opt/vl/venv/bin/python}"
MODEL="${VL_NLLB_600M:-/opt/vl/nllb-600m-random}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if [ ! -f "$MODEL/model.safetensors" ]; then
  # The 600M generator copies the tiny fixture's tokenizer; make that first if needed.
  [ -f worker/tests/fixtures/nllb-tiny/tokenizer.json ] || "$PY" tools/make_fixtures.py nllb
  "$PY" tools/make_fixtures.py nllb-600m-random --out "$MODEL"
fi

CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p vislingo-bench -j "${CARGO_BUILD_JOBS:-2}"

exec "$PY" bench/nllb_cpu.py --model "$MODEL" --bin "$TARGET_DIR/release/nllb-cpu-bench" "$@"

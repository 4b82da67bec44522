#!/usr/bin/env bash
# Peak memory of loading the full-size Llama 3.2 11B Vision architecture (random bf16 weights) through the
# worker's own loading path, with each --quant, one process per setting (see BENCHMARKS.md).
#   bash bench/mllama_memory.sh [QUANTS...]          default: q4k q8_0 none
#   VL_MLLAMA_11B  checkpoint folder, default /var/tmp/mllama-11b-random (made if missing, ~21 GB)
#   VL_PYTHON      Python with torch 2.5.1 + transformers 4.46.3, default /opt/vl/venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VL_PYTHON:-/opt/vl/venv/bin/python}"
MODEL="${VL_MLLAMA_11B:-/var/tmp/mllama-11b-random}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/vislingo-target}"
quants=("$@")
((${#quants[@]})) || quants=(q4k q8_0 none)

[ -f "$MODEL/model.safetensors.index.json" ] || "$PY" bench/make_mllama_11b_random.py --out "$MODEL"
cargo build --release -q -p vislingo-bench --bin mllama-load-bench
for q in "${quants[@]}"; do
  # Drop the page cache's copy of the shards so every setting reads them from disk alike.
  sync && echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true
  RUST_LOG=warn "$CARGO_TARGET_DIR/release/mllama-load-bench" --model "$MODEL" --quant "$q" --dtype bf16
done

#!/usr/bin/env bash
# Time per image and generated tokens per second of `worker run` with the tiny Mllama fixture on this CPU, at
# batch sizes 1 and 4, side by side in one invocation. The tiny model measures the pipeline's overheads
# (decoding, preprocessing, batching, the decode loop), not the 11B model's arithmetic.
#   bash bench/mllama_cpu.sh [COPIES] [NEW_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
copies="${1:-12}"
new_tokens="${2:-32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/vislingo-target}"
cargo build --release -q -p vislingo-worker
worker="$CARGO_TARGET_DIR/release/worker"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/images"
for i in $(seq -w 1 "$copies"); do
  for f in worker/tests/fixtures/mllama-tiny/images/{landscape.png,portrait.jpg,wide.png,square_small.png}; do
    cp "$f" "$work/images/${i}_$(basename "$f")"
  done
done
echo "| batch size | images | time per image (s) | generated tokens/s | total (s) |"
echo "|---|---|---|---|---|"
for batch in 1 4; do
  out="$work/out-$batch"
  RUST_LOG=error HF_HUB_OFFLINE=1 "$worker" run "$work/images" --out "$out" --no-progress --greedy \
    --max-new-tokens "$new_tokens" --tasks describe --batch-size "$batch" \
    --model worker/tests/fixtures/mllama-tiny >/dev/null
  python3 - "$out/summary.json" "$batch" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
a = s["assets"]
print(f"| {sys.argv[2]} | {a['processed']} | {s['average_time_per_asset_sec']:.4f} | {s['tokens_per_sec']:.0f} | {s['total_batch_time_sec']:.2f} |")
PY
done

#!/usr/bin/env bash
# Fleet benchmark (BENCHMARKS.md, "Fleet"): with the tiny fixture models on CPU,
#  1. `worker run` on N images vs. the same N images through dispatcher -> RabbitMQ -> one `worker serve` -> S3:
#     per-job overhead of the fleet (ms) and jobs per second through one worker;
#  2. `dispatcher enqueue` of 100 000 listed keys: listing, result check and publishing rates.
# Needs RabbitMQ on 127.0.0.1:5672 and s3s-fs (see .ci/run). Usage: bash bench/fleet.sh [N] [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
KEYS="${2:-100000}"
TOKENS="${TOKENS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/vislingo-target}"
cargo build -q -j 2 -p vislingo-worker -p vislingo-dispatcher
WORKER="$CARGO_TARGET_DIR/debug/worker"
DISPATCHER="$CARGO_TARGET_DIR/debug/dispatcher"
FIX=worker/tests/fixtures
S3S_FS="${S3S_FS:-$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")}"

WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export S3_ENDPOINT="http://127.0.0.1:$PORT" AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f" HF_HUB_OFFLINE=1
BUCKET=bench$$ ROUTE="bench-$$" BATCH="bench-$$"
mkdir -p "$WORK/s3/$BUCKET/in" "$WORK/folder"
"$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$WORK/s3" >/dev/null 2>&1 &
S3_PID=$!
WORKER_PID=""
cleanup() {
  [[ -n "$WORKER_PID" ]] && kill "$WORKER_PID" 2>/dev/null || true
  kill "$S3_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }

# N images: the fixture images in turn, in the folder and in the bucket (s3s-fs serves files of its folder).
mapfile -t IMAGES < <(ls "$FIX/mllama-tiny/images")
for ((i = 0; i < N; i++)); do
  name="${IMAGES[$((i % ${#IMAGES[@]}))]}"
  cp "$FIX/mllama-tiny/images/$name" "$WORK/folder/$(printf %04d "$i")-$name"
  cp "$FIX/mllama-tiny/images/$name" "$WORK/s3/$BUCKET/in/$(printf %04d "$i")-$name"
done
MODEL_FLAGS=(--model "$FIX/mllama-tiny" --translator "$FIX/nllb-tiny" --greedy --max-new-tokens "$TOKENS")
REQUEST=(--tasks describe,tags --langs fra_Latn)

# 1a. worker run: seconds of batches (model loading excluded) from its summary.
RUST_LOG=error "$WORKER" run "$WORK/folder" --out "$WORK/run-out" "${REQUEST[@]}" "${MODEL_FLAGS[@]}" --batch-size 4 --no-progress
RUN_S=$(python3 -c "import json;print(json.load(open('$WORK/run-out/summary.json'))['total_batch_time_sec'])")

# 1b. the fleet: a worker already consuming, then enqueue and wait for N records.
RUST_LOG=info "$WORKER" serve --route "$ROUTE" --listen 127.0.0.1:0 --batch-size 4 "${MODEL_FLAGS[@]}" 2>"$WORK/worker.log" &
WORKER_PID=$!
until grep -q consuming "$WORK/worker.log"; do sleep 0.1; done
T0=$(now)
"$DISPATCHER" enqueue "s3://$BUCKET/in/" --batch "$BATCH" "${REQUEST[@]}" --model-route "image=$ROUTE" >/dev/null
until [[ $(find "$WORK/s3/$BUCKET/results/$BATCH" -name '*.json' 2>/dev/null | wc -l) -ge $N ]]; do sleep 0.05; done
T1=$(now)
kill "$WORKER_PID"; wait "$WORKER_PID" 2>/dev/null || true; WORKER_PID=""
python3 - "$N" "$RUN_S" "$T0" "$T1" <<'EOF'
import sys
n, run_s, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
fleet_s = t1 - t0
print(f"images: {n}")
print(f"worker run: {run_s:.2f} s of batches, {1000 * run_s / n:.1f} ms/image, {n / run_s:.2f} images/s")
print(f"fleet (enqueue to last record): {fleet_s:.2f} s, {1000 * fleet_s / n:.1f} ms/job, {n / fleet_s:.2f} jobs/s")
print(f"fleet overhead per job: {1000 * (fleet_s - run_s) / n:.1f} ms")
EOF

# 2. enqueue rate: KEYS objects written straight into s3s-fs's folder, listed through S3, published.
mkdir -p "$WORK/s3/$BUCKET/many"
python3 - "$WORK/s3/$BUCKET/many" "$KEYS" <<'EOF'
import os, sys
root, keys = sys.argv[1], int(sys.argv[2])
for i in range(keys):
    folder = os.path.join(root, f"{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
        f.write(b"x")
EOF
MANY_ROUTE="bench-many-$$"
"$DISPATCHER" enqueue "s3://$BUCKET/many/" --batch "many-$$" --tasks describe --model-route "image=$MANY_ROUTE"
python3 - "$MANY_ROUTE" <<'EOF'
# Remove the benchmark's 100 000 jobs from the broker.
import subprocess, sys
for queue in (f"vislingo.jobs.{sys.argv[1]}", f"vislingo.jobs.{sys.argv[1]}.dead", f"vislingo.jobs.bench-{sys.argv[1].split('-')[-1]}", f"vislingo.jobs.bench-{sys.argv[1].split('-')[-1]}.dead"):
    subprocess.run(["rabbitmqctl", "delete_queue", queue], capture_output=True)
EOF

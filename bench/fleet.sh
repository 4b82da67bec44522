#!/usr/bin/env bash
# Fleet benchmark (BENCHMARKS.md, "Fleet"): with the tiny fixture models on CPU,
#  1. `worker run` on N images vs. the same N images through dispatcher -> RabbitMQ -> one `worker serve` -> S3,
#     alternated REPEATS times: medians of ms/job and jobs/s of each, and the difference per job (part e2e);
#  2. fleet-ops-bench: ms per job of each operation the fleet adds around the pipeline (publish with confirms,
#     delivery + ack, download, upload of the record + removal of the other record), medians of 5 runs (part ops,
#     after e2e: it uploads one of e2e's records);
#  3. `dispatcher enqueue` of KEYS listed keys: listing, record check and publishing rates (part enqueue);
#  4. `dispatcher status` of a batch of STATUS_KEYS records, one in ten an error record (part status).
# PARTS="e2e ops enqueue status" (the default) picks parts. Needs RabbitMQ on 127.0.0.1:5672 and s3s-fs (see
# .ci/run). Other builds share the machine, so run it as
#   setsid bash -c 'echo -20 > /proc/self/autogroup; exec nice -n -20 bash bench/fleet.sh [N] [KEYS] [REPEATS]'
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100}"
KEYS="${2:-100000}"
REPEATS="${3:-3}"
TOKENS="${TOKENS:-3}"
STATUS_KEYS="${STATUS_KEYS:-20000}"
PARTS="${PARTS:-e2e ops enqueue status}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/vislingo-target}"
cargo build -q -j 2 -p vislingo-worker -p vislingo-dispatcher
cargo build -q -j 2 -p vislingo-bench --bin fleet-ops-bench
WORKER="$CARGO_TARGET_DIR/debug/worker"
DISPATCHER="$CARGO_TARGET_DIR/debug/dispatcher"
OPS="$CARGO_TARGET_DIR/debug/fleet-ops-bench"
FIX=worker/tests/fixtures
S3S_FS="${S3S_FS:-$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")}"

WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export S3_ENDPOINT="http://127.0.0.1:$PORT" AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f" HF_HUB_OFFLINE=1
BUCKET=bench$$ ROUTE="bench-$$"
mkdir -p "$WORK/s3/$BUCKET/in" "$WORK/folder"
"$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$WORK/s3" >/dev/null 2>&1 &
S3_PID=$!
WORKER_PID=""
QUEUES=()
cleanup() {
  [[ -n "$WORKER_PID" ]] && kill "$WORKER_PID" 2>/dev/null || true
  kill "$S3_PID" 2>/dev/null || true
  for queue in "${QUEUES[@]}"; do rabbitmqctl delete_queue "$queue" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.1; done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rabbitmq: $(rabbitmqctl version 2>/dev/null || echo '?'), s3s-fs: $("$S3S_FS" --version 2>/dev/null || echo '?')"

# N images: the fixture images in turn, in the folder and in the bucket (s3s-fs serves files of its folder).
mapfile -t IMAGES < <(ls "$FIX/mllama-tiny/images")
for ((i = 0; i < N; i++)); do
  name="${IMAGES[$((i % ${#IMAGES[@]}))]}"
  cp "$FIX/mllama-tiny/images/$name" "$WORK/folder/$(printf %04d "$i")-$name"
  cp "$FIX/mllama-tiny/images/$name" "$WORK/s3/$BUCKET/in/$(printf %04d "$i")-$name"
done
MODEL_FLAGS=(--model "$FIX/mllama-tiny" --translator "$FIX/nllb-tiny" --greedy --max-new-tokens "$TOKENS")
REQUEST=(--tasks describe,tags --langs fra_Latn)

# 1. A worker consuming for the whole part (models loaded once), then alternating runs.
if part e2e; then
  QUEUES+=("vislingo.jobs.$ROUTE" "vislingo.jobs.$ROUTE.dead")
  RUST_LOG=info "$WORKER" serve --route "$ROUTE" --listen 127.0.0.1:0 --batch-size 4 "${MODEL_FLAGS[@]}" \
    2>"$WORK/worker.log" &
  WORKER_PID=$!
  until grep -q consuming "$WORK/worker.log"; do sleep 0.1; done
  : >"$WORK/e2e.txt"
  for ((r = 1; r <= REPEATS; r++)); do
    # worker run: seconds of batches (model loading excluded) from its summary.
    RUST_LOG=error "$WORKER" run "$WORK/folder" --out "$WORK/run-out-$r" "${REQUEST[@]}" "${MODEL_FLAGS[@]}" \
      --batch-size 4 --no-progress
    RUN_S=$(python3 -c "import json;print(json.load(open('$WORK/run-out-$r/summary.json'))['total_batch_time_sec'])")
    # the fleet: enqueue a fresh batch, wait for N records.
    BATCH="bench-$$-$r"
    T0=$(now)
    "$DISPATCHER" enqueue "s3://$BUCKET/in/" --batch "$BATCH" "${REQUEST[@]}" --model-route "image=$ROUTE" >/dev/null
    until [[ $(find "$WORK/s3/$BUCKET/results/$BATCH" -name '*.json' 2>/dev/null | wc -l) -ge $N ]]; do
      sleep 0.05
    done
    T1=$(now)
    echo "$RUN_S $T0 $T1" >>"$WORK/e2e.txt"
  done
  kill "$WORKER_PID"
  wait "$WORKER_PID" 2>/dev/null || true
  WORKER_PID=""
  python3 - "$N" "$WORK/e2e.txt" <<'PY'
import statistics, sys
n, runs = int(sys.argv[1]), [l.split() for l in open(sys.argv[2])]
run_ms = [1000 * float(r[0]) / n for r in runs]
fleet_ms = [1000 * (float(r[2]) - float(r[1])) / n for r in runs]
diff_ms = [f - w for f, w in zip(fleet_ms, run_ms)]
med = statistics.median
runs_of = lambda values: ", ".join(f"{x:.0f}" for x in values)
print(f"end to end, {n} images, {len(runs)} alternated runs each (medians):")
print(f"  worker run (batches only): {med(run_ms):.1f} ms/image, {1000 / med(run_ms):.2f} images/s   runs: "
      + runs_of(run_ms))
print(f"  fleet, one worker (enqueue to last record): {med(fleet_ms):.1f} ms/job, {1000 / med(fleet_ms):.2f} jobs/s"
      "   runs: " + runs_of(fleet_ms))
print(f"  fleet - worker run: {med(diff_ms):.1f} ms/job   runs: " + runs_of(diff_ms))
PY
fi

# 2. The fleet's operations alone (asset: a fixture image; record: one `worker run` wrote).
if part ops; then
  RECORD=$(find "$WORK/run-out-1" -name '*.json' ! -name summary.json | head -1)
  OPS_JSON=$("$OPS" "$FIX/mllama-tiny/images/${IMAGES[0]}" "$RECORD" --bucket "$BUCKET" --jobs 500 --repeats 5)
  python3 - "$OPS_JSON" <<'PY'
import json, sys
ops = json.loads(sys.argv[1])
print(f"fleet operations alone, ms/job (median of {ops['repeats']} runs of {ops['jobs']} jobs; asset "
      f"{ops['asset_bytes']} B, record {ops['record_bytes']} B):")
for name in ("publish_ms", "deliver_ack_ms", "download_ms", "upload_ms", "total_ms"):
    print(f"  {name}: {ops[name]:.2f}")
PY
fi

# 3. enqueue rate: KEYS objects written straight into s3s-fs's folder, listed through S3, published.
if part enqueue; then
  mkdir -p "$WORK/s3/$BUCKET/many"
  python3 - "$WORK/s3/$BUCKET/many" "$KEYS" <<'PY'
import os, sys
root, keys = sys.argv[1], int(sys.argv[2])
for i in range(keys):
    folder = os.path.join(root, f"{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
        f.write(b"x")
PY
  MANY_ROUTE="bench-many-$$"
  QUEUES+=("vislingo.jobs.$MANY_ROUTE" "vislingo.jobs.$MANY_ROUTE.dead")
  echo "enqueue of $KEYS listed keys:"
  REPORT=$("$DISPATCHER" enqueue "s3://$BUCKET/many/" --batch "many-$$" --tasks describe --model-route "image=$MANY_ROUTE")
  python3 - "$REPORT" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(json.dumps(r))
print(f"  listing: {r['list_seconds']:.1f} s ({r['listed_objects'] / r['list_seconds']:.0f} keys/s); record check: "
      f"{r['check_seconds']:.2f} s; publishing: {r['publish_seconds']:.1f} s ({r['publish_per_second']:.0f} jobs/s)")
PY
fi

# 4. status of a batch of STATUS_KEYS records written straight into s3s-fs's folder (every tenth an error record).
if part status; then
  SBATCH="status-$$"
  python3 - "$WORK/s3/$BUCKET" "$SBATCH" "$STATUS_KEYS" <<'PY'
import json, os, sys
root, batch, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
manifest = {"schema_version": 1, "batch": batch, "source": f"s3://x/{batch}/", "bucket": os.path.basename(root),
            "prefix": "", "tasks": ["describe"], "langs": [], "routes": {"image": "bench-status"}, "assets": keys,
            "images": keys, "videos": 0, "created_at": 0.0, "updated_at": 0.0, "published": keys}
os.makedirs(os.path.join(root, "batches"), exist_ok=True)
json.dump(manifest, open(os.path.join(root, "batches", f"{batch}.json"), "w"))
for i in range(keys):
    folder = os.path.join(root, "results", batch, f"{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(folder, exist_ok=True)
    suffix = ".error.json" if i % 10 == 0 else ".json"
    with open(os.path.join(folder, f"{i:06d}.jpg{suffix}"), "w") as f:
        f.write("{}")
PY
  T0=$(now)
  STATUS=$("$DISPATCHER" status "$SBATCH" --bucket "$BUCKET" --json)
  T1=$(now)
  echo "status of $STATUS_KEYS records: $STATUS"
  python3 -c "print(f'  {$T1 - $T0:.1f} s, {($STATUS_KEYS + 999) // 1000} LIST requests, no GET')"
fi

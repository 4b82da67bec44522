#!/usr/bin/env bash
# GPU benchmark and CUDA parity checks (see BENCHMARKS.md, "GPU").
#
#   bash bench/gpu.sh build        # here (no GPU): CUDA build of vlm-gpu-bench and the parity test binaries
#                                  # into .gpu/ (git-ignored through info/exclude; carried to the GPU machine)
#   bash bench/gpu.sh parity       # on the GPU machine: the tiny-model parity tests on cuda:0
#   bash bench/gpu.sh describe     # on the GPU machine: random full-size checkpoints, vislingo vs transformers
#                                  # (VL_COUNT, VL_BATCH, VL_REF_BATCH, VL_NEW_TOKENS, VL_QUANTS, VL_REFERENCE,
#                                  # VL_FRAMES for videos, VL_TASK_TOKENS=256,64,64,128 for a continuous
#                                  # batching run of four tasks per image, VL_ATTENTION="candle vislingo flash"
#                                  # to compare the attention kernels; parity takes it too; VL_ENGINES=vislingo
#                                  # or transformers runs one side only)
#   VL_FLASH_ATTN=1 bash bench/gpu.sh build   # adds flash attention to vlm-gpu-bench (~20 min more, once)
#
# The build follows ../shared/gpu (CUDA 13.0 wheels from PyPI, CUDA_COMPUTE_CAP=90: H100/H200 only). The GPU
# binaries are built without the `video` feature (no FFmpeg libraries on the GPU host) and with libjpeg linked
# statically. Environment: OUT (results folder, default /tmp/vl-out), VL_WORK (scratch, default /tmp/vl).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
GPU_DIR="$ROOT/.gpu"

build() {
  # shared/ sits beside the main checkout (also when this is a git worktree of it).
  local main_root
  main_root=$(git worktree list --porcelain | awk '/^worktree /{print $2; exit}')
  local setup="${VL_CUDA_SETUP:-$main_root/../shared/gpu}"
  bash "$setup/setup.sh" >/dev/null
  # shellcheck disable=SC1091
  source /opt/cuda-pip/env.sh
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/vislingo-cuda-target}" VISLINGO_STATIC_JPEG=1
  local features=(--no-default-features --features cuda) bench_features=(--no-default-features --features cuda)
  if [[ "${VL_FLASH_ATTN:-0}" == 1 ]]; then
    # Flash attention (worker/flash-attn) in the benchmark binary only: CUTLASS's headers from PyPI's
    # nvidia-cutlass wheel (the 3.5 line the kernels were written against), its kernel objects kept across builds.
    local cutlass=/opt/cutlass-pip
    if [[ ! -d "$cutlass/cutlass_library/source/include/cute" ]]; then
      rm -rf "$cutlass.tmp" && mkdir -p "$cutlass.tmp"
      python3 -m pip download --no-deps --disable-pip-version-check -q -d "$cutlass.tmp" nvidia-cutlass==3.5.1.0
      (cd "$cutlass.tmp" && python3 -m zipfile -e nvidia_cutlass-3.5.1.0-py3-none-any.whl .)
      rm -rf "$cutlass" && mv "$cutlass.tmp" "$cutlass"
    fi
    export VISLINGO_CUTLASS_DIR="$cutlass/cutlass_library/source/include"
    export VISLINGO_FLASH_ATTN_BUILD_DIR="${VISLINGO_FLASH_ATTN_BUILD_DIR:-/var/tmp/vislingo-flash-attn-objects}"
    bench_features=(--no-default-features --features cuda,flash-attn)
  fi
  cargo build --release -j "${CARGO_BUILD_JOBS:-2}" -p vislingo-bench "${bench_features[@]}" --bin vlm-gpu-bench
  local tests
  tests=$(cargo test --release -j "${CARGO_BUILD_JOBS:-2}" -p vislingo-worker "${features[@]}" --no-run \
    --test parity_mllama --test parity_nllb --test parity_llava_next --test softmax_kernels --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
  mkdir -p "$GPU_DIR"
  rm -f "$GPU_DIR"/*.xz
  # xz -6: ~20% smaller than -2 (the carried .gpu/ must stay under 64 MiB), ~30 s a binary on 2 cores.
  pack() { strip --strip-all -o "$GPU_DIR/$1" "$2" && xz -T2 -6 -f "$GPU_DIR/$1"; }
  pack vlm-gpu-bench "$CARGO_TARGET_DIR/release/vlm-gpu-bench"
  while read -r name path; do pack "$name" "$path"; done <<<"$tests"
  cp "$setup/run-on-gpu.sh" "$GPU_DIR/"
  # parity runs the benchmark's flash attention check when the binary has it.
  if [[ "${VL_FLASH_ATTN:-0}" == 1 ]]; then touch "$GPU_DIR/flash-attn"; else rm -f "$GPU_DIR/flash-attn"; fi
  # The test binaries read their fixtures under the path the crate had here.
  echo "$ROOT" >"$GPU_DIR/build-root"
  # info/exclude lives in the common git dir: .git is a file in a worktree.
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
  ls -la "$GPU_DIR"
}

# --- on the GPU machine ---
WORK="${VL_WORK:-/tmp/vl}"
OUT="${OUT:-/tmp/vl-out}"

unpack() {
  mkdir -p "$WORK/bin" "$OUT"
  for f in "$GPU_DIR"/*.xz; do
    local bin="$WORK/bin/$(basename "${f%.xz}")"
    # Unpacked again when the carried file is newer (a rebuild sent to a machine still warm).
    [[ -x "$bin" && "$bin" -nt "$f" ]] || { xz -dc "$f" >"$bin" && chmod +x "$bin"; }
  done
  # The test binaries find their fixtures under the path the crate had when built.
  local built
  built=$(cat "$GPU_DIR/build-root" 2>/dev/null || echo /work/main)
  if [[ ! -e "$built/worker" ]]; then
    mkdir -p "$(dirname "$built")"
    # An empty folder there (a checkout's parent) would take the link inside it.
    if [[ -d "$built" && ! -L "$built" ]]; then rmdir "$built"; fi
    ln -sfn "$ROOT" "$built"
  fi
}

gpu() { timeout "${VL_TIMEOUT:-900}" bash "$GPU_DIR/run-on-gpu.sh" "$@" 2>&1 | { grep --line-buffered -v '^run-on-gpu.sh: ' || true; }; }

# Peak GPU memory used while a command runs, sampled by nvidia-smi every 100 ms.
with_vram() {
  local name="$1"; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/vram-$name.txt" &
  local sampler=$!
  "$@"
  local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  echo "peak VRAM $name: $(sort -n "$OUT/vram-$name.txt" | tail -1) MiB" | tee -a "$OUT/summary.txt"
  return $rc
}

parity() {
  unpack
  export VISLINGO_TEST_DEVICE=cuda:0 HF_HUB_OFFLINE=1
  local failed=0
  # Flash attention against materialised attention (when built in), the softmax kernels against an f64 softmax
  # (both kernels in one run), then the model suites with each softmax kernel named in VL_ATTENTION (vislingo, the
  # default, and candle; the test binaries have no flash attention), and with the fused MLP kernel.
  if [[ -f "$GPU_DIR/flash-attn" ]]; then
    echo "== vlm-gpu-bench check-attention" | tee -a "$OUT/summary.txt"
    gpu "$WORK/bin/vlm-gpu-bench" check-attention --json "$OUT/check-attention.json" 2>&1 |
      tee "$OUT/check-attention.log" | tee -a "$OUT/summary.txt" || failed=1
    grep -q '"pass": true' "$OUT/check-attention.json" 2>/dev/null || failed=1
  fi
  local runs=(softmax_kernels:) kernel t variant
  for kernel in ${VL_ATTENTION:-vislingo}; do
    [[ "$kernel" == flash ]] && continue
    for t in parity_nllb parity_mllama parity_llava_next; do runs+=("$t:$kernel"); done
  done
  # The Llama MLPs' fused silu * up kernel (opt-in, VISLINGO_FUSED_MLP=1) through the two suites that use it.
  if [[ "${VL_FUSED_MLP:-1}" == 1 ]]; then runs+=(parity_mllama:fused parity_llava_next:fused); fi
  for run in "${runs[@]}"; do
    t="${run%%:*}" variant="${run#*:}"
    local log="$OUT/$t${variant:+-$variant}.log" kernel="${variant:-vislingo}" fused=0
    [[ "$variant" == fused ]] && kernel=vislingo fused=1
    echo "== $t on cuda:0${variant:+ (variant: $variant)}" | tee -a "$OUT/summary.txt"
    # Every suite runs, whatever the one before gave; the exit status says whether all passed.
    VISLINGO_SOFTMAX_KERNEL="$kernel" VISLINGO_FUSED_MLP="$fused" gpu "$WORK/bin/$t" --test-threads 1 --nocapture 2>&1 |
      tee "$log" | { grep -E '^test |test result|panicked|error|diff|max' || true; } | tail -40
    grep -q '^test result: ok' "$log" || failed=1
  done
  return "$failed"
}

checkpoints() {
  unpack
  local bench="$WORK/bin/vlm-gpu-bench"
  [[ -d "$WORK/inputs" ]] || python3 bench/gpu/make_inputs.py --out "$WORK/inputs" --images 64
  [[ -f "$WORK/mllama-11b/model.safetensors.index.json" ]] || gpu "$bench" make-checkpoint --family mllama \
    --config bench/gpu/mllama-11b.config.json --like worker/tests/fixtures/mllama-tiny \
    --merge 'preprocessor_config.json={"size": {"height": 560, "width": 560}}' --out "$WORK/mllama-11b"
  [[ -f "$WORK/nllb-600m/model.safetensors.index.json" ]] || gpu "$bench" make-checkpoint --family nllb \
    --config bench/gpu/nllb-600m.config.json --like worker/tests/fixtures/nllb-tiny --dtype f32 \
    --out "$WORK/nllb-600m"
  [[ -n "${VL_FRAMES:-}" && ! -f "$WORK/llava-7b/model.safetensors.index.json" ]] && gpu "$bench" make-checkpoint \
    --family llava-next-video --config bench/gpu/llava-next-video-7b.config.json \
    --like worker/tests/fixtures/llava-next-video-tiny \
    --merge "preprocessor_config.json=$(cat bench/gpu/llava-next-video-7b.preprocessor.json)" \
    --merge 'processor_config.json={"patch_size": 14}' --out "$WORK/llava-7b"
  return 0
}

# vislingo, then transformers, on the same checkpoints and inputs. VL_FRAMES=K: LLaVA-NeXT-Video on videos of K
# frames instead of Llama 3.2 Vision on images.
describe() {
  checkpoints
  python3 bench/gpu/bandwidth.py | tee "$OUT/bandwidth.json"
  local count="${VL_COUNT:-64}" tokens="${VL_NEW_TOKENS:-256}" model="$WORK/mllama-11b" tag=images frames=()
  if [[ -n "${VL_FRAMES:-}" ]]; then model="$WORK/llava-7b"; tag=videos; frames=(--frames "$VL_FRAMES"); fi
  local inputs=(--model "$model" --translator "$WORK/nllb-600m" --images "$WORK/inputs/images"
    --texts "$WORK/inputs/texts.json" --count "$count" --new-tokens "$tokens" "${frames[@]}")
  # One run per quantization and attention variant of VL_ATTENTION: flash (the default: flash attention in the
  # vision encoders, csrc/softmax.cu elsewhere; a VL_FLASH_ATTN=1 build), vislingo (csrc/softmax.cu everywhere),
  # candle (candle's softmax everywhere). VISLINGO_FUSED_MLP passes through.
  local quant variant kernel flash name engines="${VL_ENGINES:-vislingo transformers}"
  [[ " $engines " == *" vislingo "* ]] || VL_QUANTS=skip
  for quant in ${VL_QUANTS:-none}; do
    [[ "$quant" == skip ]] && continue
    for variant in ${VL_ATTENTION:-flash}; do
      name="vislingo-$tag-$quant" kernel="$variant" flash=0
      [[ "$variant" == flash ]] && kernel=vislingo flash=1
      [[ "$variant" == candle ]] || name="$name-$variant"
      VISLINGO_SOFTMAX_KERNEL="$kernel" VISLINGO_FLASH_ATTN="$flash" \
        with_vram "$name" gpu "$WORK/bin/vlm-gpu-bench" describe "${inputs[@]}" \
        --quant "$quant" --batch "${VL_BATCH:-64}" --step-batches "${VL_STEP_BATCHES:-1,${VL_BATCH:-64}}" \
        ${VL_TASK_TOKENS:+--task-tokens "$VL_TASK_TOKENS"} --json "$OUT/$name.json" \
        2>&1 | tee "$OUT/$name.log" | grep --line-buffered -v '^ *[0-9]*: ' || true
    done
  done
  if [[ " $engines " == *" transformers "* && "${VL_REFERENCE:-article,batched,best}" != none ]]; then
    with_vram "transformers-$tag" python3 bench/gpu_reference.py "${inputs[@]}" --batch "${VL_REF_BATCH:-32}" \
      --pipelines "${VL_REFERENCE:-article,batched,best}" --json "$OUT/transformers-$tag.json" || true
  fi
}

case "${1:-}" in
  build) build ;;
  parity) parity ;;
  checkpoints) checkpoints ;;
  describe) describe ;;
  *) sed -n '2,12p' "$0"; exit 64 ;;
esac

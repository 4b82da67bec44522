# The GPU plan of issue 6, most important first, for `bash bench/gpu/lease.sh start bench/gpu/plan-full.sh`
# (sourced by it; `step NAME COMMAND...`). About 22 minutes on an H100; what does not fit the lease is left out.
# 1. Correctness on cuda:0: flash attention against materialised attention, both softmax kernels against f64, and
#    the tiny-model parity suites with each softmax kernel.
step parity env VL_ATTENTION="vislingo candle" bash bench/gpu.sh parity
# 2. 64 images, 256 new tokens, 3 languages: vislingo bf16 and q4k with its defaults (flash attention in the vision
#    encoders, csrc/softmax.cu elsewhere) and a continuous-batching run of four tasks per image, then transformers
#    on the same machine: the article's pipeline, plain batched generate at 32, and its best.
step images-vislingo env VL_COUNT=64 VL_BATCH=64 VL_QUANTS="none q4k" VL_ATTENTION=flash \
  VL_TASK_TOKENS=256,64,64,128 VL_ENGINES=vislingo bash bench/gpu.sh describe
step images-transformers env VL_COUNT=64 VL_ENGINES=transformers bash bench/gpu.sh describe
# 3. 16 videos of 8 frames with LLaVA-NeXT-Video 7B, both engines.
step videos env VL_FRAMES=8 VL_COUNT=16 VL_BATCH=16 VL_REF_BATCH=16 VL_QUANTS=none VL_ATTENTION=flash \
  bash bench/gpu.sh describe
# 4. The fused silu * up kernel of the Llama MLPs (VISLINGO_FUSED_MLP=1; parity ran it above): fewer launches a step.
step images-fused-mlp env OUT=/tmp/vl-out/fused-mlp VISLINGO_FUSED_MLP=1 VL_COUNT=64 VL_BATCH=64 VL_QUANTS=none \
  VL_ATTENTION=flash VL_ENGINES=vislingo bash bench/gpu.sh describe
# 5. The 16 GB claim: the 11B model and NLLB at q4k with a batch of 8 images, peak device memory.
step images-q4k-small env OUT=/tmp/vl-out/q4k-small VL_COUNT=8 VL_BATCH=8 VL_STEP_BATCHES=1 VL_QUANTS=q4k \
  VL_ATTENTION=flash VL_ENGINES=vislingo bash bench/gpu.sh describe
# 6. Where the translator's time goes (VISLINGO_PROFILE=1 synchronizes after each phase: diagnosis, not figures).
step translation-profile env OUT=/tmp/vl-out/profile VISLINGO_PROFILE=1 VL_COUNT=32 VL_BATCH=32 VL_NEW_TOKENS=8 \
  VL_STEP_BATCHES=1 VL_QUANTS=none VL_ATTENTION=flash VL_ENGINES=vislingo bash bench/gpu.sh describe
# 7. The vision encoders' attention without flash attention: each softmax kernel.
step images-softmax env VL_COUNT=64 VL_BATCH=64 VL_QUANTS=none VL_ATTENTION="vislingo candle" VL_ENGINES=vislingo \
  bash bench/gpu.sh describe

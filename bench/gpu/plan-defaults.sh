# A short GPU plan (about 10 minutes on an H100) for `bash bench/gpu/lease.sh start bench/gpu/plan-defaults.sh`:
# vislingo's defaults (flash attention in the vision encoders, csrc/softmax.cu elsewhere) on 64 images, transformers
# at its best beside it, then 16 videos with both engines; first the parity suites with the default kernels.
step parity env VL_ATTENTION=vislingo bash bench/gpu.sh parity
step images-vislingo env VL_COUNT=64 VL_BATCH=64 VL_QUANTS=none VL_ATTENTION=flash VL_ENGINES=vislingo \
  bash bench/gpu.sh describe
step images-transformers-best env VL_COUNT=64 VL_ENGINES=transformers VL_REFERENCE=best bash bench/gpu.sh describe
step videos env VL_FRAMES=8 VL_COUNT=16 VL_BATCH=16 VL_REF_BATCH=16 VL_QUANTS=none VL_ATTENTION=flash \
  bash bench/gpu.sh describe
# Where the translator's time goes (VISLINGO_PROFILE=1 synchronizes after each phase: diagnosis, not figures).
step translation-profile env OUT=/tmp/vl-out/profile VISLINGO_PROFILE=1 VL_COUNT=32 VL_BATCH=32 VL_NEW_TOKENS=8 \
  VL_STEP_BATCHES=1 VL_QUANTS=none VL_ATTENTION=flash VL_ENGINES=vislingo bash bench/gpu.sh describe

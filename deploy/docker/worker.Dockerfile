# syntax=docker/dockerfile:1.7
# The GPU worker image (`worker serve`): built with `--features cuda` on the CUDA devel image, run on the CUDA
# runtime image with FFmpeg's and libjpeg-turbo's shared libraries, as a non-root user, models cached in /models.
#
#   docker build -f deploy/docker/worker.Dockerfile -t vislingo-worker .          # from the repository root
#   docker build --build-arg CUDA_COMPUTE_CAP=80 ...                              # A100 (90: H100, 89: L4/L40S)
#   docker build --build-arg WORKER_FEATURES=cuda,flash-attn ...                  # + flash attention (docs/gpu.md)
#
# Ubuntu 24.04 ships FFmpeg 6.1 (ffmpeg-next 9 supports 3.4 to 7.x) and libjpeg-turbo 2.1 (libjpeg.so.8).

ARG CUDA_VERSION=12.6.3
ARG UBUNTU_VERSION=24.04
ARG RUST_VERSION=1.85

# The Rust toolchain, copied into the CUDA build image below.
FROM rust:${RUST_VERSION}-bookworm AS rust

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
# candle's CUDA kernels are compiled for one compute capability; there is no GPU to ask at build time.
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config clang libclang-dev cmake ca-certificates \
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev \
      libjpeg-turbo8-dev python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
WORKDIR /src
COPY . .
# Cargo features of the worker. `cuda,flash-attn` adds flash attention for the vision encoders (about 20 minutes
# more of nvcc; 15% more images a second on an H100, BENCHMARKS.md): its kernels need CUTLASS 3.5's headers, taken
# from the nvidia-cutlass wheel on PyPI.
ARG WORKER_FEATURES=cuda
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case ",${WORKER_FEATURES}," in \
      *,flash-attn,*) python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check -q \
                        -d /tmp/cutlass nvidia-cutlass==3.5.1.0 \
                      && python3 -m zipfile -e /tmp/cutlass/nvidia_cutlass-3.5.1.0-py3-none-any.whl /opt/cutlass ;; \
    esac \
 && VISLINGO_CUTLASS_DIR=/opt/cutlass/cutlass_library/source/include \
    cargo build --release --locked -p vislingo-worker --features "${WORKER_FEATURES}" \
 && install -D target/release/worker /out/worker

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime
# FFmpeg 6.1 and libjpeg-turbo runtime libraries; curl for the health check; CA certificates for S3 and the Hub.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libavcodec60 libavformat60 libavutil58 libswscale7 libavfilter9 libavdevice60 libjpeg-turbo8 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /models --no-create-home vislingo \
 && mkdir -p /models/hf && chown -R vislingo:vislingo /models
COPY --from=build /out/worker /usr/local/bin/worker
# Hugging Face cache: mount a volume here so that the models are downloaded once (or pre-filled, with
# HF_HUB_OFFLINE=1).
ENV HF_HOME=/models/hf \
    VISLINGO_DEVICE=cuda \
    VISLINGO_LISTEN=0.0.0.0:9464 \
    VISLINGO_LOG_FORMAT=json
VOLUME ["/models"]
USER 10001:10001
EXPOSE 9464
# Ready = models loaded and broker connected (/healthz only says the process answers). Loading an 11B model from
# a cold cache takes minutes: the start period covers it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10m --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "4", "http://127.0.0.1:9464/readyz"]
ENTRYPOINT ["worker"]
CMD ["serve"]

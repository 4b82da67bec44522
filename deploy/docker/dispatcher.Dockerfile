# syntax=docker/dockerfile:1.7
# The dispatcher image (`dispatcher enqueue|status|collect`): built on the Rust image, run on a distroless base
# (glibc and libgcc, no shell, non-root). It links no OpenSSL (rustls for S3; AMQP without TLS).
#
#   docker build -f deploy/docker/dispatcher.Dockerfile -t vislingo-dispatcher .   # from the repository root

ARG RUST_VERSION=1.85

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vislingo-dispatcher \
 && install -D target/release/dispatcher /out/dispatcher

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/dispatcher /usr/local/bin/dispatcher
# distroless nonroot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dispatcher"]
CMD ["--help"]

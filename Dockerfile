# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain image, run as a non-root user on a slim
# Debian base. Configuration is by environment only (see README.md); the in-memory default runs
# with no further settings.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# jemalloc, the default allocator, is built from source with make.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY adapters ./adapters
COPY loadgen ./loadgen
COPY src ./src
RUN cargo build --release --locked --bin twine \
 && strip target/release/twine

# The demo page (--demo) and the two npm packages it loads, served as static files.
FROM node:20-bookworm-slim AS demo
WORKDIR /srv/twine
COPY js-fixtures/demo ./demo
RUN npm install --no-save --no-audit --no-fund twine-client-library@1.0.4 socket.io-client@4.8

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home twine
COPY --from=build /src/target/release/twine /usr/local/bin/twine
COPY --from=demo /srv/twine /srv/twine
USER twine
ENV PORT=3005 TWINE_DEMO_DIR=/srv/twine
EXPOSE 3005
# GET / answers 201 while the node is healthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT}/" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/twine"]

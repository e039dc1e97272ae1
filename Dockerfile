# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain image, run as a non-root user on a slim
# Debian base. Configuration is by environment only (see README.md); the in-memory default runs
# with no further settings.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY adapters ./adapters
COPY src ./src
RUN cargo build --release --locked --bin twine \
 && strip target/release/twine

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home twine
COPY --from=build /src/target/release/twine /usr/local/bin/twine
USER twine
ENV PORT=3005
EXPOSE 3005
# GET / answers 201 while the node is healthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT}/" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/twine"]

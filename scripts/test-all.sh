#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need, checks formatting and lints, runs
# the Rust unit and integration tests, builds the release binary and runs the JavaScript
# compatibility suite (real socket.io-client and Twine libraries) against it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo build --release --locked -p twine -p twine-loadgen

# A few seconds of every benchmark scenario against both servers: the harness works end to end
# and our server loses, repeats and drops nothing (the figures of record come from
# `loadgen bench`, see BENCHMARKS.md).
./target/release/loadgen bench --scale smoke --strict --out target/bench-smoke/BENCHMARKS.md

TWINE_BIN="$PWD/target/release/twine" \
  node --test --test-concurrency=1 --test-timeout=300000 compat-tests/*.test.mjs

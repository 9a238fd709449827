#!/usr/bin/env bash
# bitgrad's test command (the one the README shows, and the one CI runs through .ci/run).
# Formatting, lints, every test of every crate (unit, integration, property, doc tests),
# and the teaching example as a smoke run. No GPU and no Python are needed.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "== example 01_autograd (smoke run)"
cargo run --quiet --profile test --example 01_autograd

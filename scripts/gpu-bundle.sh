#!/usr/bin/env bash
# Builds everything a GPU machine without a Rust toolchain needs into gpu-bundle/ (ignored):
# every test executable of the workspace, the `bitgrad` binary, the examples below,
# scripts/gpu-check.sh and the PyTorch bench scripts, stripped, with a manifest — and packs it
# into gpu-bundle.tar.xz (ignored), the one file a GPU machine needs beside the checkout. A GPU
# machine accepts at most 64 MiB of build output: the script fails when the archive is larger.
# Runs on a build machine (no GPU needed). Then, on the GPU machine, from the repo root:
# bash scripts/gpu-check.sh (it unpacks the archive).
#
#   scripts/gpu-bundle.sh                  release build (what a GPU run uses)
#   scripts/gpu-bundle.sh --profile test   the test profile's executables as scripts/test.sh
#                                          built them (opt-level 2, stripped; no new build), for
#                                          CI's size check and gpu-check.sh --dry-run; its CLI
#                                          lacks the nccl feature (a rebuild of every crate)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
case "${1:-}" in
    "") ;;
    --profile) PROFILE="${2:?--profile needs release or test}" ;;
    *) echo "usage: scripts/gpu-bundle.sh [--profile release|test]" >&2; exit 2 ;;
esac
case "$PROFILE" in
    release) OUT_DIR=release ;;
    test) OUT_DIR=debug ;;
    *) echo "--profile must be release or test" >&2; exit 2 ;;
esac
LIMIT=$((64 * 1024 * 1024))

# Examples to bundle (cargo example names).
EXAMPLES=(01_autograd bench_conv bench_norm)

BUNDLE=gpu-bundle
TARBALL=gpu-bundle.tar.xz
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
rm -rf "$BUNDLE" "$TARBALL"
mkdir -p "$BUNDLE/tests" "$BUNDLE/bin"

echo "== cargo test --profile $PROFILE --no-run (test executables)"
cargo test --profile "$PROFILE" --workspace --no-run --message-format=json >"$BUNDLE/.cargo-tests.json"
# One "package target-kind target-name executable" line per test executable.
jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
       | [(.package_id | capture("(?<n>[A-Za-z0-9_-]+)[@#]?[0-9.]*$").n // "pkg"),
          .target.kind[0], .target.name, .executable] | @tsv' "$BUNDLE/.cargo-tests.json" \
    | sort -u >"$BUNDLE/.tests.tsv"
rm "$BUNDLE/.cargo-tests.json"

echo "== cargo build --profile $PROFILE (bitgrad + examples)"
example_args=()
for e in "${EXAMPLES[@]}"; do example_args+=(--example "$e"); done
if [ "$PROFILE" = test ]; then
    # --workspace, as scripts/test.sh builds them: the same features, nothing rebuilt.
    cargo build --profile test --quiet --workspace --bins --examples
else
    cargo build --release --quiet --bin bitgrad "${example_args[@]}"
    # The bundled CLI also has NCCL (loaded only by --dist nccl), for gpu-check.sh's NCCL run.
    cargo build --release --quiet --features nccl --bin bitgrad
fi

{
    echo "# gpu-bundle manifest"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "build_root: $PWD"
    echo "profile: $PROFILE$([ "$PROFILE" = test ] && echo ' (CLI without the nccl feature)')"
    echo "rustc: $(rustc --version)"
    echo
    echo "file	what"
} >"$BUNDLE/MANIFEST"

# Test executables, named <package>.<kind>.<target> (unique, no hash).
while IFS=$'\t' read -r pkg kind name exe; do
    dest="tests/$pkg.$kind.$name"
    # Stripped as copied (strip -o): no full-size copy is ever written.
    strip -o "$BUNDLE/$dest" "$exe"
    printf '%s\t%s\n' "$dest" "cargo test target $name ($kind) of $pkg" >>"$BUNDLE/MANIFEST"
done <"$BUNDLE/.tests.tsv"
rm "$BUNDLE/.tests.tsv"

strip -o "$BUNDLE/bin/bitgrad" "$TARGET_DIR/$OUT_DIR/bitgrad"
printf '%s\t%s\n' bin/bitgrad "the CLI (bitgrad bench gpu, bitgrad info)" >>"$BUNDLE/MANIFEST"
for e in "${EXAMPLES[@]}"; do
    strip -o "$BUNDLE/bin/$e" "$TARGET_DIR/$OUT_DIR/examples/$e"
    printf '%s\t%s\n' "bin/$e" "example $e" >>"$BUNDLE/MANIFEST"
done

cp scripts/gpu-check.sh scripts/bench_gpu_torch.py scripts/bench_gpu_layers_torch.py "$BUNDLE/"
printf '%s\t%s\n' gpu-check.sh "runs everything on the GPU machine" bench_gpu_torch.py "PyTorch side of bench gpu" \
    bench_gpu_layers_torch.py "PyTorch side of bench layers and of the training-step comparison" >>"$BUNDLE/MANIFEST"

count=$(find "$BUNDLE/tests" -type f | wc -l)
size=$(du -sb "$BUNDLE" | cut -f1)
echo "== packing $TARBALL ($count test executables, bitgrad, ${#EXAMPLES[@]} examples; $((size / 1024 / 1024)) MiB unpacked)"
# A fast preset with a 32 MiB dictionary: the test executables share most of their code (each
# links the engine), and a dictionary that spans several of them finds it. Measured on this
# bundle (309 MiB, 2 cores): 34 MiB in 24 s, against 49 MiB in 105 s for xz -6 (8 MiB dictionary).
tar -C "$BUNDLE" -cf - . | xz -T0 --lzma2=preset=1,dict=32MiB >"$TARBALL"
packed=$(stat -c %s "$TARBALL")
echo "== $TARBALL: $((packed / 1024 / 1024)) MiB ($packed bytes; limit $LIMIT)"
if [ "$packed" -gt "$LIMIT" ]; then
    echo "error: $TARBALL is over the 64 MiB a GPU machine accepts; drop examples or tests" >&2
    exit 1
fi

#!/usr/bin/env bash
# Builds everything a GPU machine without a Rust toolchain needs into gpu-bundle/ (ignored):
# every test executable of the workspace (release), the `bitgrad` binary, the examples below,
# scripts/gpu-check.sh and the PyTorch bench script, stripped, with a manifest. Runs on a build
# machine (no GPU needed). Then, on the GPU machine, from the repo root: bash gpu-bundle/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# Examples to bundle (cargo example names).
EXAMPLES=(01_autograd bench_conv bench_norm)

BUNDLE=gpu-bundle
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/tests" "$BUNDLE/bin"

echo "== cargo test --release --no-run (test executables)"
cargo test --release --workspace --no-run --message-format=json >"$BUNDLE/.cargo-tests.json"
# One "package target-kind target-name executable" line per test executable.
jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
       | [(.package_id | capture("(?<n>[A-Za-z0-9_-]+)[@#]?[0-9.]*$").n // "pkg"),
          .target.kind[0], .target.name, .executable] | @tsv' "$BUNDLE/.cargo-tests.json" \
    | sort -u >"$BUNDLE/.tests.tsv"
rm "$BUNDLE/.cargo-tests.json"

echo "== cargo build --release (bitgrad + examples)"
example_args=()
for e in "${EXAMPLES[@]}"; do example_args+=(--example "$e"); done
cargo build --release --quiet --bin bitgrad "${example_args[@]}"
# The bundled CLI also has NCCL (loaded only by --dist nccl), for gpu-check.sh's NCCL run.
cargo build --release --quiet --features nccl --bin bitgrad

{
    echo "# gpu-bundle manifest"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "build_root: $PWD"
    echo "rustc: $(rustc --version)"
    echo
    echo "file	what"
} >"$BUNDLE/MANIFEST"

# Test executables, named <package>.<kind>.<target> (unique, no hash).
while IFS=$'\t' read -r pkg kind name exe; do
    dest="tests/$pkg.$kind.$name"
    cp "$exe" "$BUNDLE/$dest"
    printf '%s\t%s\n' "$dest" "cargo test target $name ($kind) of $pkg" >>"$BUNDLE/MANIFEST"
done <"$BUNDLE/.tests.tsv"
rm "$BUNDLE/.tests.tsv"

cp "$TARGET_DIR/release/bitgrad" "$BUNDLE/bin/bitgrad"
printf '%s\t%s\n' bin/bitgrad "the CLI (bitgrad bench gpu, bitgrad info)" >>"$BUNDLE/MANIFEST"
for e in "${EXAMPLES[@]}"; do
    cp "$TARGET_DIR/release/examples/$e" "$BUNDLE/bin/$e"
    printf '%s\t%s\n' "bin/$e" "example $e" >>"$BUNDLE/MANIFEST"
done
# Line tables only help a backtrace; a GPU machine accepts at most 64 MiB of build output.
strip "$BUNDLE"/tests/* "$BUNDLE"/bin/*

cp scripts/gpu-check.sh scripts/bench_gpu_torch.py "$BUNDLE/"
printf '%s\t%s\n' gpu-check.sh "runs everything on the GPU machine" bench_gpu_torch.py "PyTorch side of bench gpu" \
    >>"$BUNDLE/MANIFEST"

count=$(find "$BUNDLE/tests" -type f | wc -l)
size=$(du -sb "$BUNDLE" | cut -f1)
echo "== $BUNDLE/: $count test executables, bitgrad, ${#EXAMPLES[@]} examples; $((size / 1024 / 1024)) MiB ($size bytes)"
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
    echo "warning: over the 64 MiB a GPU machine accepts; drop examples or tests" >&2
fi

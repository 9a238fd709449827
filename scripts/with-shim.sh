#!/usr/bin/env bash
# Runs a command with bitgrad's CUDA shim as the CUDA driver and cuBLAS, so that
# `--device cuda` and `Device::Cuda(0)` run the real CUDA host code (cudarc, NVRTC compiling every
# kernel for sm_90, module loading, launches, cuBLAS calls) against kernels/shim, whose kernels
# run on the CPU emulator. For debugging host code the way CI runs it, e.g.
#
#   scripts/with-shim.sh target/release/bitgrad forward --device cuda --weights W --input x.safetensors --out y.safetensors
#   scripts/with-shim.sh cargo test --workspace --test device_parity
#
# Builds the shim first when it is missing or older than its sources (test profile, the build
# scripts/test.sh makes), and installs the pinned NVRTC when it is missing. The shim's settings
# (BITGRAD_SHIM_DEVICES, BITGRAD_SHIM_MEM_MB, BITGRAD_SHIM_LATENCY_US, BITGRAD_SHIM_REJECT_CUBIN,
# BITGRAD_EMU …) pass through; docs/gpu-testing.md lists them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -eq 0 ]; then
    echo "usage: scripts/with-shim.sh COMMAND [ARGS…]" >&2
    exit 2
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SO="$TARGET/debug/libbitgrad_cuda_shim.so"
if [ ! -e "$SO" ] || [ -n "$(find "$ROOT/kernels" -newer "$SO" -type f \( -name '*.rs' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.cpp' -o -name '*.txt' \) -print -quit)" ]; then
    echo "== building the CUDA shim" >&2
    (cd "$ROOT" && cargo build --quiet --workspace --lib --profile test)
fi
# Only our libraries answer for the driver and cuBLAS: every name cudarc tries first
# (libcuda.so before libcuda.so.1, libcublas.so before .so.13 and .so.12) is here.
LIBDIR="$TARGET/cuda-shim"
mkdir -p "$LIBDIR"
for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.13; do
    ln -sfn ../debug/libbitgrad_cuda_shim.so "$LIBDIR/$name"
done
BITGRAD_ROOT="$ROOT" source "$ROOT/scripts/nvrtc-env.sh"
export LD_LIBRARY_PATH="$LIBDIR:$LD_LIBRARY_PATH"
exec "$@"

#!/usr/bin/env bash
# bitgrad's test command (the one the README shows, and the one CI runs through .ci/run).
# Formatting, lints, every test of every crate (unit, integration, property, doc tests),
# the kernel build check (NVRTC from PyPI, no GPU needed) and the teaching example as a smoke run.
# No GPU is needed; python3 with pip installs the pinned NVRTC once into .cuda-ci/ (ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each section's heading says how far into the run it starts (the whole run must stay under
# 30 minutes on a 2-core machine).
section() { echo "== [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }

# Incremental compilation off (unless the caller sets it): CI builds from a clean clone, where
# incremental mode only adds work (its dependency graph and query caches, written for a rebuild
# that never comes). Set CARGO_INCREMENTAL=1 to keep it for repeated local runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# NVRTC 13.0 for the kernel build check (engine/tests/nvrtc_build.rs) and the CUDA shim runs,
# pinned: a newer NVRTC emits PTX a CUDA 13.0 driver cannot load. See docs/cuda-toolchain.md.
source scripts/nvrtc-env.sh
export REQUIRE_NVRTC=1
# nvrtc-env.sh installed nvdisasm beside NVRTC: the static SASS check (engine/tests/sass_tc.rs)
# runs in the workspace test run below, where a missing tool fails instead of skipping.
export BITGRAD_REQUIRE_SASS=1

# The Debian packages the later sections need, installed in the background from the start (apt
# mostly waits on downloads): OpenMPI and libclang (the data-parallel tests), jq, xz and strip
# (the GPU bundle), and for the aarch64 run Debian's rustc-web, its arm64 standard library, the
# cross compilers and qemu-user. apt.status holds apt's exit code once it is over, apt.log its
# output. (The aarch64 build itself is not moved beside the others: the run is CPU-bound, and a
# run with it in the background from the start took longer, 22.2 against 21.5 minutes.)
CI_TMP=$(mktemp -d)
# On an early exit the background install stops with its whole tree.
kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill "$1" 2>/dev/null || true; }
trap 'for job in $(jobs -p); do kill_tree "$job"; done; rm -rf "$CI_TMP"' EXIT
x86_pkgs=()
for tool in jq xz strip; do command -v "$tool" >/dev/null || { x86_pkgs+=(jq xz-utils binutils); break; }; done
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null || ! ldconfig -p | grep 'libclang[-.0-9]*\.so' >/dev/null; then
    x86_pkgs+=(openmpi-bin libopenmpi-dev libclang-dev)
fi
read -r -a arm_pkgs <<<"$(scripts/test-aarch64.sh --missing-packages)"
install_packages() {
    [ $((${#x86_pkgs[@]} + ${#arm_pkgs[@]})) -gt 0 ] || return 0
    echo "installing ${x86_pkgs[*]} ${arm_pkgs[*]} (apt)"
    if [ ${#arm_pkgs[@]} -gt 0 ]; then dpkg --add-architecture arm64 || return; fi
    apt-get update -qq || return
    if [ ${#x86_pkgs[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${x86_pkgs[@]}" >/dev/null || return
    fi
    if [ ${#arm_pkgs[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${arm_pkgs[@]}" >/dev/null
    fi
}
(
    set +e
    install_packages
    echo $? >"$CI_TMP/apt.status"
) >"$CI_TMP/apt.log" 2>&1 &
# Waits for the background install (the sections that need its packages call it).
packages_installed() {
    while [ ! -s "$CI_TMP/apt.status" ]; do sleep 2; done
    cat "$CI_TMP/apt.log"
    : >"$CI_TMP/apt.log"
    [ "$(cat "$CI_TMP/apt.status")" = 0 ] || { echo "the apt install failed" >&2; exit 1; }
}

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test"
cargo test --workspace --all-targets
cargo test --workspace --doc

section "the CPU kernels and the timm parity at every lower instruction-set level this CPU has"
# The run above used the highest level; BITGRAD_CPU_ISA forces each lower one (engine/src/cpu/isa.rs).
# (The CLI the test run just built, so no other profile gets compiled.)
levels=$("${CARGO_TARGET_DIR:-target}/debug/bitgrad" info | sed -n 's/.*levels here: //p')
echo "levels here: $levels"
for isa in $levels; do
    [ "$isa" = "$(echo "$levels" | awk '{print $NF}')" ] && continue
    echo "-- BITGRAD_CPU_ISA=$isa"
    if [ "$isa" = avx512bf16 ]; then
        # Below amx only the bf16 convolutions change route (vdpbf16ps instead of AMX tiles);
        # every f32 kernel runs as at avx512.
        BITGRAD_CPU_ISA=$isa cargo test --quiet --workspace --lib -- std_conv2d bf16_gemm bf16_tiles
        continue
    fi
    BITGRAD_CPU_ISA=$isa cargo test --quiet --workspace --lib -- conv2d std_conv2d group_norm weight_std sgd batch_norm bf16_gemm
    BITGRAD_CPU_ISA=$isa cargo test --quiet --workspace --test parity_timm --test parity_ops
done

section "static SASS check of the tensor-core kernels (NVRTC + nvdisasm, no GPU; docs/gpu-testing.md)"
# Ran in the test run above (BITGRAD_REQUIRE_SASS=1); its table: registers, shared memory,
# blocks per SM and HMMA per main-loop iteration of each tensor-core kernel.
cat "${CARGO_TARGET_DIR:-target}/sass-tc.md"

section "the CUDA emulator: engine property tests, and device parity of every kernel under each mode alone"
# (The default run above already had every emulator check on at once.) Always --workspace with
# target filters, never -p: a -p build resolves features for one package only, which gives the
# shared crates another hash and rebuilds the whole chain (minutes on 2 cores).
BITGRAD_TEST_DEVICE=emu cargo test --quiet --workspace --test props
for mode in fast shuffle guard; do
    BITGRAD_EMU=$mode cargo test --quiet --workspace --test device_parity --test bottleneck_emu
    BITGRAD_EMU=$mode cargo test --quiet --workspace --lib gpu_tests
    BITGRAD_EMU=$mode cargo test --quiet --workspace --test parity_timm on_the_gpu_device
done

section "the real CUDA host path on the CUDA shim (kernels/shim; docs/gpu-testing.md)"
# cudarc, NVRTC (every kernel compiled for sm_90), module loading, launches and cuBLAS calls of
# Device::Cuda(0) against libcuda/libcublas built from the emulator: the planted host bugs, then
# the device suites with Cuda(0) as the GPU device under test — CUBINs first, then once more with
# CUBINs refused so that every module goes through the PTX fallback.
SHIM_TESTS=(--test cuda_shim --test device_parity --test bottleneck_emu --test parity_timm
            --test train_step --test train_checkpoint --test cli_models --test precision_bf16 --test fusion)
export BITGRAD_GPU_TEST_DEVICE=cuda BITGRAD_TEST_CUDA=1 BITGRAD_REQUIRE_SHIM=1
# (R50x1's bf16 logits once, on Emu above: the tiny model covers the same host path here.)
scripts/with-shim.sh cargo test --quiet --workspace "${SHIM_TESTS[@]}" -- --skip r50x1_bf16
scripts/with-shim.sh cargo test --quiet --workspace --lib gpu_tests
BITGRAD_SHIM_REJECT_CUBIN=1 scripts/with-shim.sh cargo test --quiet --workspace --test device_parity --test parity_timm
BITGRAD_SHIM_REJECT_CUBIN=1 scripts/with-shim.sh cargo test --quiet --workspace --lib gpu_tests
unset BITGRAD_GPU_TEST_DEVICE BITGRAD_TEST_CUDA BITGRAD_REQUIRE_SHIM

# The binaries of the test build, run directly: `cargo run` would resolve features for the root
# package alone and rebuild everything; a --workspace build reuses the test build's artifacts
# and only links the example and the CLI (seconds).
cargo build --quiet --workspace --profile test --examples --bins
BIN="${CARGO_TARGET_DIR:-target}/debug"
section "example 01_autograd (smoke run)"
"$BIN/examples/01_autograd"
section "the built-in fine-tuning demonstration (the README's main command, test profile)"
"$BIN/bitgrad" finetune

section "the GPU bundle: packed size (≤ 64 MiB) and gpu-check.sh --dry-run (docs/gpu-runs.md)"
# From the test build above (no new compilation): the archive a GPU machine takes, then every
# step of the GPU check through the CUDA shim at tiny sizes (PyTorch on the CPU when installed).
packages_installed
scripts/gpu-bundle.sh --profile test
OUT="${CARGO_TARGET_DIR:-target}/gpu-check-dry-run" scripts/gpu-check.sh --dry-run
# The unpacked bundle and the archive are only for this check: give their disk back.
rm -rf gpu-bundle gpu-bundle.tar.xz

section "data-parallel training under mpirun (OpenMPI through rsmpi; docs/distributed.md)"
# The `mpi` feature needs OpenMPI (mpirun, mpicc and the headers) and libclang (rsmpi's bindgen),
# installed in the background above. The --workspace test build with the features rebuilds
# rsmpi, bitgrad-models and the CLI; tests/dist_mpi.rs runs the tiny model under `mpirun
# --allow-run-as-root --oversubscribe -np 2` and `-np 4`. The same build has the `nccl` feature
# (cudarc loads NCCL at run time: no library needed to build), whose errors without NCCL and
# without a GPU tests/dist_nccl.rs checks.
packages_installed
# One test at a time: each starts up to 4 ranks on 2 cores.
cargo test --quiet --workspace --features mpi,nccl --test dist_mpi --test dist_nccl -- --test-threads=1

section "aarch64: the engine's and ops' unit tests cross-built and run under qemu-user (scripts/test-aarch64.sh)"
# The NEON micro-kernels of the direct convolution, and every other CPU kernel, on the other
# architecture bitgrad supports; Debian's cross toolchain and qemu, installed above.
packages_installed
scripts/test-aarch64.sh
section "done"

#!/usr/bin/env bash
# bitgrad on aarch64 without an aarch64 machine: the engine's and ops' unit tests built for
# aarch64-unknown-linux-gnu (warnings are errors) and run under qemu-user — every CPU kernel
# against its reference (the direct convolution's NEON micro-kernels at both aarch64 levels,
# neon and scalar; group norm, WS, SGD, elementwise, pooling) and the GPU emulator against the
# CPU twins. `--all` also builds every other crate's library and binaries for aarch64 and runs
# the timm and PyTorch parity tests (the models end to end) under qemu.
# scripts/test.sh calls it without `--all` (to stay within CI's time); it also runs alone.
#
# The toolchain comes from Debian 12, as root: rustc-web 1.96 with its aarch64 standard library
# (multiarch package libstd-rust-web-dev:arm64; the rustup toolchain has no aarch64 std and
# crates.io cannot supply one), the aarch64 GNU cross compilers (linker, and the kernels
# crate's C++ emulator) and qemu-user. The binaries are linked statically: under Debian 12's
# qemu 7.2 a dynamically linked aarch64 glibc hangs in its first pthread_create (it walks an
# uninitialised stack-cache list), and a test harness starts threads.
#
# The build goes to target/aarch64 (its own target dir: another compiler, other flags).
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTC_AARCH64=/usr/bin/rustc
need=()
std_dir=$("$RUSTC_AARCH64" --print target-libdir --target aarch64-unknown-linux-gnu 2>/dev/null || true)
[ -n "$std_dir" ] && [ -d "$std_dir" ] || need+=(rustc-web libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
# scripts/test.sh installs them itself (in the background, with its other packages) and asks first.
if [ "${1:-}" = --missing-packages ]; then
    echo "${need[@]}"
    exit 0
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (apt, arm64 multiarch)"
    dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$RUSTC_AARCH64" -V

export RUSTC="$RUSTC_AARCH64"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/aarch64"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -D warnings"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# The test profile at opt-level 1 here (2 for the x86-64 runs, Cargo.toml), dependencies
# included: with the workspace crates alone at 1 the build took half a minute less on 2 cores and
# the qemu run took the same time (26 s); procedural macros stay at 0 either way.
export CARGO_PROFILE_TEST_OPT_LEVEL=1
TARGET=(--target aarch64-unknown-linux-gnu)

echo "-- the engine's and the ops' unit tests under qemu-aarch64 (at neon, the detected level)"
cargo test --quiet "${TARGET[@]}" -p bitgrad-engine -p bitgrad-ops --lib
echo "-- the CPU kernels again at BITGRAD_CPU_ISA=scalar"
BITGRAD_CPU_ISA=scalar cargo test --quiet "${TARGET[@]}" -p bitgrad-ops --lib -- conv2d group_norm weight_std sgd
if [ "${1:-}" = --all ]; then
    # Every other crate's library and binaries too (about 8 more minutes on 2 cores: the CLI's
    # dependencies; --workspace resolves features apart from the -p run above, so it rebuilds
    # the engine and ops). Not the CUDA shim: a statically linked target cannot produce its
    # cdylib, and it stands in for NVIDIA's x86-64 libraries anyway.
    all=(--workspace --exclude bitgrad-cuda-shim)
    echo "-- every crate's library and binaries built for aarch64 (warnings are errors)"
    cargo build --quiet "${TARGET[@]}" --profile test "${all[@]}" --lib --bins
    echo "-- the timm and PyTorch parity tests under qemu-aarch64"
    cargo test --quiet "${TARGET[@]}" "${all[@]}" --test parity_timm --test parity_ops
fi

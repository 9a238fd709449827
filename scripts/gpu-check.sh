#!/usr/bin/env bash
# Runs on a GPU machine, from the repo root, with gpu-bundle/ (scripts/gpu-bundle.sh) present; no
# Rust toolchain needed. Prints the GPU and library versions, finds libnvrtc/libcublas (and
# libcudnn) and cuda_fp16.h (a PyTorch install has them under site-packages/nvidia/*), runs every
# bundled test executable with BITGRAD_TEST_CUDA=1 (the device-parity tests then run their Cuda
# case), then `bitgrad bench gpu` next to PyTorch, and prints a summary table last.
# Logs go to $OUT (if set) else ./gpu-logs. Each step has a timeout; the whole check stays < 8 min.
set -uo pipefail

BUNDLE="${BUNDLE:-gpu-bundle}"
[ -d "$BUNDLE" ] || BUNDLE="$(cd "$(dirname "$0")" && pwd)"
[ -x "$BUNDLE/bin/bitgrad" ] || { echo "no bundle: run scripts/gpu-bundle.sh on a build machine first" >&2; exit 2; }
LOGS="${OUT:-$PWD/gpu-logs}"
mkdir -p "$LOGS"
TEST_TIMEOUT="${TEST_TIMEOUT:-90}"   # seconds per test executable
BENCH_TIMEOUT="${BENCH_TIMEOUT:-150}"
SUMMARY="$LOGS/summary.md"
PY="${BITGRAD_PYTHON:-python3}"

echo "== GPU"
timeout 20 nvidia-smi 2>&1 | tee "$LOGS/nvidia-smi.txt" || echo "nvidia-smi failed or missing"

echo "== CUDA libraries"
# site-packages/nvidia/*/lib of the Python that has PyTorch (or the nvidia-* wheels).
NV_ROOT="$(timeout 30 "$PY" -c 'import nvidia, os; print(nvidia.__path__[0])' 2>/dev/null || true)"
search=()
[ -n "$NV_ROOT" ] && for d in "$NV_ROOT"/*/lib; do [ -d "$d" ] && search+=("$d"); done
for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && search+=("$d")
done
find_lib() { # prints the folder holding $1, first match in the search list
    local d
    for d in "${search[@]}"; do [ -e "$d/$1" ] && { echo "$d"; return 0; }; done
    return 1
}
libdirs=()
for lib in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9; do
    if dir="$(find_lib "$lib")"; then
        echo "  $lib: $dir"
        [[ " ${libdirs[*]:-} " == *" $dir "* ]] || libdirs+=("$dir")
    else
        echo "  $lib: not found$([ "$lib" = libcudnn.so.9 ] && echo ' (optional)')"
    fi
done
if [ "${#libdirs[@]}" -gt 0 ]; then
    LD_LIBRARY_PATH="$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
fi
if [ -z "${NVRTC_INCLUDE:-}" ]; then
    for d in ${NV_ROOT:+"$NV_ROOT"/*/include} "${CUDA_HOME:-/usr/local/cuda}/include"; do
        [ -e "$d/cuda_fp16.h" ] && { export NVRTC_INCLUDE="$d"; break; }
    done
fi
echo "  NVRTC_INCLUDE=${NVRTC_INCLUDE:-<not found: kernels needing cuda_fp16.h will fail>}"
echo "  LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
timeout 30 "$PY" -c 'import torch; print("  torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null \
    || echo "  torch: not importable with $PY"

# Tests that read fixtures through compile-time paths (CARGO_MANIFEST_DIR) look under the build
# machine's checkout; point that path at this checkout when it is free.
build_root="$(sed -n 's/^build_root: //p' "$BUNDLE/MANIFEST")"
if [ -n "$build_root" ] && [ ! -e "$build_root" ] && mkdir -p "$(dirname "$build_root")" 2>/dev/null; then
    ln -s "$PWD" "$build_root" && echo "  linked $build_root -> $PWD (the tests' compile-time paths)"
fi

echo "== bitgrad info"
timeout 60 "$BUNDLE/bin/bitgrad" info 2>&1 | tee "$LOGS/info.txt"

# The device suites then test Cuda(0) as their GPU device (compared with the CPU twin, as Emu is).
export BITGRAD_TEST_CUDA=1 BITGRAD_GPU_TEST_DEVICE=cuda RUST_BACKTRACE=1
export BITGRAD_KERNEL_CACHE="${BITGRAD_KERNEL_CACHE:-$LOGS/kernel-cache}"
echo "| test executable | result | passed | failed | ignored |" >"$SUMMARY.tests"
echo "| --- | --- | ---: | ---: | ---: |" >>"$SUMMARY.tests"
for t in "$BUNDLE"/tests/*; do
    name="$(basename "$t")"
    echo "== test $name"
    start=$SECONDS
    timeout "$TEST_TIMEOUT" "$t" --test-threads=1 >"$LOGS/test-$name.log" 2>&1
    rc=$?
    passed=$(grep -ho '[0-9]* passed' "$LOGS/test-$name.log" | awk '{s+=$1} END {print s+0}')
    failed=$(grep -ho '[0-9]* failed' "$LOGS/test-$name.log" | awk '{s+=$1} END {print s+0}')
    ignored=$(grep -ho '[0-9]* ignored' "$LOGS/test-$name.log" | awk '{s+=$1} END {print s+0}')
    case $rc in 0) res=pass ;; 124) res="TIMEOUT ${TEST_TIMEOUT}s" ;; *) res="FAIL (rc $rc)" ;; esac
    echo "   $res: $passed passed, $failed failed, $ignored ignored ($((SECONDS - start)) s)"
    [ "$rc" -ne 0 ] && tail -n 30 "$LOGS/test-$name.log"
    echo "| $name | $res | $passed | $failed | $ignored |" >>"$SUMMARY.tests"
done

echo "== NCCL: a world-size-1 data-parallel run (docs/distributed.md)"
# The bundled bitgrad is built with the nccl feature. NVIDIA's wheel ships libnccl.so.2, which
# bitgrad links as libnccl.so itself when BITGRAD_NCCL_LIB names its folder.
[ -n "$NV_ROOT" ] && [ -e "$NV_ROOT/nccl/lib/libnccl.so.2" ] && export BITGRAD_NCCL_LIB="$NV_ROOT/nccl/lib"
start=$SECONDS
NCCL_COMM_ID=127.0.0.1:29511 NCCL_DEBUG=WARN timeout 120 "$BUNDLE/bin/bitgrad" finetune \
    --weights assets/demo/upstream.safetensors --data assets/demo --format idx --shots 8 --steps 5 \
    --batch 16 --device cuda --dist nccl --out "$LOGS/nccl-run" >"$LOGS/nccl.log" 2>&1
rc=$?
grep -E "data-parallel|identical|trained|NCCL|error" "$LOGS/nccl.log" | head -n 20
case $rc in 0) res=pass ;; 124) res="TIMEOUT 120s" ;; *) res="FAIL (rc $rc)" ;; esac
echo "   $res ($((SECONDS - start)) s)"
echo "| nccl world-size-1 finetune | $res | | | |" >>"$SUMMARY.tests"

echo "== bitgrad bench gpu --device cuda (PyTorch side by side)"
timeout "$BENCH_TIMEOUT" "$BUNDLE/bin/bitgrad" bench gpu --device cuda --python "$PY" 2>&1 | tee "$LOGS/bench-gpu.txt"
bench_rc=${PIPESTATUS[0]}

{
    echo "# gpu-check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    head -n 4 "$BUNDLE/MANIFEST" | sed 's/^/    /'
    echo
    cat "$SUMMARY.tests"
    echo
    if [ "$bench_rc" -eq 0 ]; then echo "bench gpu:"; else echo "bench gpu: FAIL (rc $bench_rc; see bench-gpu.txt)"; fi
    echo
    sed -n '/^measurement/,/^$/p' "$LOGS/bench-gpu.txt" | sed 's/^/    /'
} >"$SUMMARY"
rm -f "$SUMMARY.tests"
echo
cat "$SUMMARY"
grep -q "FAIL\|TIMEOUT" "$SUMMARY" && exit 1
exit 0

#!/usr/bin/env bash
# The GPU check: runs on a GPU machine from the repo root, with gpu-bundle.tar.xz (made by
# scripts/gpu-bundle.sh on a build machine) beside it or gpu-bundle/ already unpacked; no Rust
# toolchain needed. Steps, each with a timeout, all inside one time budget (CHECK_BUDGET, 450 s,
# so the whole check stays under 8 minutes on one H100):
#
#   1. the GPU, the CUDA libraries (libnvrtc/libcublas/libcudnn and cuda_fp16.h, found in a
#      PyTorch install under site-packages/nvidia/*), `bitgrad info`;
#   2. the bf16 tensor-core plan of R50x1 at batch 64, 224 px (`bench gpu --plan`, estimates);
#   3. the mma numerics probe: the `mma_probe` test executable (engine/tests), filter `hardware_probe`,
#      writing under $LOGS/mma-probe (BITGRAD_PROBE_DIR); skipped when the bundle lacks it;
#   4. every bundled test executable with BITGRAD_TEST_CUDA=1 (device parity on Cuda(0));
#   5. a world-size-1 NCCL fine-tuning run;
#   6. `bench gpu`: copy, elementwise, f32 GEMM next to PyTorch;
#   7. `bench layers` in bf16: per-layer conv fprop/dgrad/wgrad against cuDNN (PyTorch bf16
#      channels_last), GN, WS and SGD as % of the HBM roof;
#   8. the training step in img/s against PyTorch AMP (bf16) + channels_last on timm's model;
#   9. `bench layers` in f32;
#  then a summary table (summary.md). Results and logs go to $OUT if set, else ./gpu-logs.
#
# --dry-run runs every step here, without a GPU: `Device::Cuda(0)` is the CUDA shim
# (scripts/with-shim.sh: kernels on the CPU emulator), sizes are tiny (resnetv2_tiny_bit for the
# measured steps, batch 2, 32 px, one timed run), PyTorch runs on the CPU (skipped, with the reason,
# without torch), test executables only list their tests, NCCL is skipped (it needs a GPU); it
# fails unless every step ran and wrote its output. scripts/test.sh runs it.
set -uo pipefail

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument $arg (only --dry-run)" >&2; exit 2 ;;
    esac
done
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ "$DRY_RUN" = 1 ] && [ -z "${BITGRAD_GPU_CHECK_SHIM:-}" ]; then
    # The shim stands in for libcuda/libcublas; with-shim.sh builds it when needed.
    [ -x "$HERE/with-shim.sh" ] || { echo "--dry-run runs from a checkout (scripts/with-shim.sh)" >&2; exit 2; }
    BITGRAD_GPU_CHECK_SHIM=1 exec "$HERE/with-shim.sh" bash "$0" "$@"
fi

# The bundle: gpu-bundle/ (unpacked from gpu-bundle.tar.xz when that is newer or the folder absent).
BUNDLE="${BUNDLE:-gpu-bundle}"
TARBALL="${BUNDLE_TAR:-gpu-bundle.tar.xz}"
if [ -f "$TARBALL" ] && { [ ! -x "$BUNDLE/bin/bitgrad" ] || [ "$TARBALL" -nt "$BUNDLE/MANIFEST" ]; }; then
    echo "== unpacking $TARBALL"
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE" && tar -xJf "$TARBALL" -C "$BUNDLE" || { echo "cannot unpack $TARBALL" >&2; exit 2; }
fi
[ -x "$BUNDLE/bin/bitgrad" ] || BUNDLE="$HERE"
[ -x "$BUNDLE/bin/bitgrad" ] || { echo "no bundle: run scripts/gpu-bundle.sh on a build machine first" >&2; exit 2; }
BIN="$BUNDLE/bin/bitgrad"
LOGS="${OUT:-$PWD/gpu-logs}"
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.md"
STEPS="$LOGS/.steps.md"
PY="${BITGRAD_PYTHON:-python3}"
TORCH_SCRIPT="$BUNDLE/bench_gpu_layers_torch.py"
[ -f "$TORCH_SCRIPT" ] || TORCH_SCRIPT="$HERE/bench_gpu_layers_torch.py"
BUDGET="${CHECK_BUDGET:-450}"
TEST_TIMEOUT="${TEST_TIMEOUT:-90}"
if [ "$DRY_RUN" = 1 ]; then
    MODEL="${MODEL:-resnetv2_tiny_bit}" BATCH="${BATCH:-2}" SIZE="${SIZE:-32}"
    REPS=(--reps 1 --rounds 1) GPU_REPS=(--reps 1 --rounds 1 --small) TORCH_DEV=cpu TEST_BUDGET="${TEST_BUDGET:-120}"
else
    MODEL="${MODEL:-resnetv2_50x1_bit}" BATCH="${BATCH:-64}" SIZE="${SIZE:-224}"
    REPS=(--reps 10 --rounds 3) GPU_REPS=() TORCH_DEV=cuda TEST_BUDGET="${TEST_BUDGET:-180}"
fi
# What each step writes (the dry run checks them all; a dry run starts without stale ones).
OUTPUTS=(info.txt plan.md mma-probe.log tests.md nccl.log bench-gpu.txt layers-bf16.md layers-f32.md
    train-bitgrad.txt train-torch.txt train.md summary.md)
[ "$DRY_RUN" = 1 ] && for f in "${OUTPUTS[@]}"; do rm -f "$LOGS/$f"; done
echo "| step | result | seconds | output |" >"$STEPS"
echo "| --- | --- | ---: | --- |" >>"$STEPS"

# Seconds a step may take: its own limit, cut to what is left of the budget (0: no time left).
cap() {
    local left=$((BUDGET - SECONDS))
    [ "$left" -lt "$1" ] && echo $((left > 0 ? left : 0)) || echo "$1"
}
# record STEP RC START OUTPUT [NOTE]: one row of the step table.
record() {
    local res
    case $2 in 0) res=pass ;; 124) res="TIMEOUT" ;; skip) res="skipped: $5" ;; *) res="FAIL (rc $2)" ;; esac
    [ "$2" != skip ] && [ -n "${5:-}" ] && res="$res ($5)"
    echo "   $1: $res ($((SECONDS - $3)) s)"
    echo "| $1 | $res | $((SECONDS - $3)) | ${4#"$LOGS"/} |" >>"$STEPS"
}
# step NAME LIMIT OUTPUT COMMAND…: runs COMMAND with the capped timeout, output to OUTPUT.
step() {
    local name=$1 limit=$2 t start=$SECONDS out=$3
    shift 3
    t=$(cap "$limit")
    echo "== $name"
    if [ "$t" -le 0 ]; then record "$name" skip "$start" "" "no time left in the ${BUDGET}s budget"; return; fi
    timeout "$t" "$@" >"$out" 2>&1
    record "$name" $? "$start" "$out"
}

echo "== GPU"
if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: no GPU; Device::Cuda(0) is the CUDA shim (kernels/shim) over the emulator" | tee "$LOGS/nvidia-smi.txt"
else
    timeout 20 nvidia-smi 2>&1 | tee "$LOGS/nvidia-smi.txt" || echo "nvidia-smi failed or missing"
fi

echo "== CUDA libraries"
NV_ROOT=""
if [ "$DRY_RUN" = 1 ]; then
    echo "  dry run: libcuda/libcublas from the shim, NVRTC from .cuda-ci (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
else
    # site-packages/nvidia/*/lib of the Python that has PyTorch (or the nvidia-* wheels).
    NV_ROOT="$(timeout 30 "$PY" -c 'import nvidia, os; print(nvidia.__path__[0])' 2>/dev/null || true)"
    search=()
    [ -n "$NV_ROOT" ] && for d in "$NV_ROOT"/*/lib; do [ -d "$d" ] && search+=("$d"); done
    for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
        [ -d "$d" ] && search+=("$d")
    done
    libdirs=()
    for lib in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9; do
        found=""
        for d in "${search[@]}"; do [ -e "$d/$lib" ] && { found="$d"; break; }; done
        if [ -n "$found" ]; then
            echo "  $lib: $found"
            [[ " ${libdirs[*]:-} " == *" $found "* ]] || libdirs+=("$found")
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
fi
timeout 30 "$PY" -c 'import torch; print("  torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null \
    || echo "  torch: not importable with $PY"

# Tests that read fixtures through compile-time paths (CARGO_MANIFEST_DIR) look under the build
# machine's checkout; point that path at this checkout when it is free.
build_root="$(sed -n 's/^build_root: //p' "$BUNDLE/MANIFEST")"
if [ -n "$build_root" ] && [ ! -e "$build_root" ] && mkdir -p "$(dirname "$build_root")" 2>/dev/null; then
    ln -s "$PWD" "$build_root" && echo "  linked $build_root -> $PWD (the tests' compile-time paths)"
fi

export BITGRAD_TEST_CUDA=1 BITGRAD_GPU_TEST_DEVICE=cuda RUST_BACKTRACE=1
export BITGRAD_KERNEL_CACHE="${BITGRAD_KERNEL_CACHE:-$LOGS/kernel-cache}"

step "bitgrad info" 60 "$LOGS/info.txt" "$BIN" info
cat "$LOGS/info.txt"

# The plan needs no GPU: always R50x1 at batch 64, 224 px, the sizes the measurements target.
step "plan (estimates)" 30 "$LOGS/plan.md" "$BIN" bench gpu --plan --model resnetv2_50x1_bit --batch 64 --size 224

start=$SECONDS
probe=$(find "$BUNDLE/tests" -name '*.mma_probe' -type f 2>/dev/null | head -n 1)
if [ -z "$probe" ]; then
    echo "== mma numerics probe"
    echo "the mma_probe test executable is not in this bundle" >"$LOGS/mma-probe.log"
    record "mma numerics probe" skip "$start" "$LOGS/mma-probe.log" "mma_probe is not in the bundle"
else
    mkdir -p "$LOGS/mma-probe"
    BITGRAD_PROBE_DIR="$LOGS/mma-probe" step "mma numerics probe" 90 "$LOGS/mma-probe.log" \
        "$probe" hardware_probe --nocapture --test-threads=1
fi

echo "== test executables$([ "$DRY_RUN" = 1 ] && echo ' (dry run: --list only)')"
start=$SECONDS
echo "| test executable | result | passed | failed | ignored |" >"$LOGS/tests.md"
echo "| --- | --- | ---: | ---: | ---: |" >>"$LOGS/tests.md"
test_rc=0
for t in "$BUNDLE"/tests/*; do
    name="$(basename "$t")"
    left=$((TEST_BUDGET - (SECONDS - start)))
    t_max=$(cap "$TEST_TIMEOUT")
    [ "$left" -lt "$t_max" ] && t_max=$left
    if [ "$t_max" -le 0 ]; then
        echo "| $name | not run (test budget ${TEST_BUDGET}s spent) | | | |" >>"$LOGS/tests.md"
        continue
    fi
    if [ "$DRY_RUN" = 1 ]; then
        timeout "$t_max" "$t" --list >"$LOGS/test-$name.log" 2>&1
    else
        timeout "$t_max" "$t" --test-threads=1 >"$LOGS/test-$name.log" 2>&1
    fi
    rc=$?
    passed=$(grep -ho '[0-9]* passed' "$LOGS/test-$name.log" | awk '{s+=$1} END {print s+0}')
    failed=$(grep -ho '[0-9]* failed' "$LOGS/test-$name.log" | awk '{s+=$1} END {print s+0}')
    ignored=$(grep -ho '[0-9]* ignored' "$LOGS/test-$name.log" | awk '{s+=$1} END {print s+0}')
    [ "$DRY_RUN" = 1 ] && passed="$(grep -c ': test$' "$LOGS/test-$name.log") listed"
    case $rc in 0) res=pass ;; 124) res="TIMEOUT ${t_max}s" ;; *) res="FAIL (rc $rc)" ;; esac
    [ "$rc" -ne 0 ] && { test_rc=$rc; tail -n 30 "$LOGS/test-$name.log"; }
    echo "   $name: $res; passed: $passed, failed: $failed"
    echo "| $name | $res | $passed | $failed | $ignored |" >>"$LOGS/tests.md"
done
record "test executables" "$test_rc" "$start" "$LOGS/tests.md"

start=$SECONDS
if [ "$DRY_RUN" = 1 ]; then
    echo "== NCCL"
    echo "dry run: NCCL communicators need a GPU" >"$LOGS/nccl.log"
    record "nccl world-size-1 finetune" skip "$start" "$LOGS/nccl.log" "needs a GPU"
else
    # The bundled bitgrad has the nccl feature. NVIDIA's wheel ships libnccl.so.2, which bitgrad
    # links as libnccl.so itself when BITGRAD_NCCL_LIB names its folder.
    [ -n "$NV_ROOT" ] && [ -e "$NV_ROOT/nccl/lib/libnccl.so.2" ] && export BITGRAD_NCCL_LIB="$NV_ROOT/nccl/lib"
    NCCL_COMM_ID=127.0.0.1:29511 NCCL_DEBUG=WARN step "nccl world-size-1 finetune" 120 "$LOGS/nccl.log" \
        "$BIN" finetune --weights assets/demo/upstream.safetensors --data assets/demo --format idx --shots 8 \
        --steps 5 --batch 16 --device cuda --dist nccl --out "$LOGS/nccl-run"
fi

step "bench gpu (PyTorch side by side)" 120 "$LOGS/bench-gpu.txt" "$BIN" bench gpu --device cuda --python "$PY" ${GPU_REPS[@]+"${GPU_REPS[@]}"}

layers() { # layers DTYPE
    step "bench layers $1 ($MODEL, batch $BATCH, $SIZE px)" 150 "$LOGS/layers-$1.md" "$BIN" bench layers \
        --device cuda --model "$MODEL" --batch "$BATCH" --size "$SIZE" --dtype "$1" "${REPS[@]}" \
        --python "$PY" --torch-device "$TORCH_DEV"
}
layers bf16

echo "== training step: bitgrad bf16 (tensor cores, channels-last) vs PyTorch AMP bf16 + channels_last"
start=$SECONDS
TRAIN_REPS=(--reps 3 --block 1 --max-rounds 4 --max-wait 1 --pause-ms 0)
[ "$DRY_RUN" = 1 ] && TRAIN_REPS=(--reps 1 --block 1 --max-rounds 1 --warmup 0 --max-wait 1 --pause-ms 0)
timeout "$(cap 120)" "$BIN" bench train --device cuda --precision bf16 --model "$MODEL" --batch "$BATCH" \
    --size "$SIZE" --no-reference "${TRAIN_REPS[@]}" >"$LOGS/train-bitgrad.txt" 2>&1
rc_ours=$?
ours=$(awk -v m="$MODEL" '$1 == m { print $3 }' "$LOGS/train-bitgrad.txt")
theirs_reps=(--reps 10 --rounds 3)
[ "$DRY_RUN" = 1 ] && theirs_reps=(--reps 1 --rounds 1)
timeout "$(cap 150)" "$PY" "$TORCH_SCRIPT" train "$MODEL" "$BATCH" "$SIZE" --device "$TORCH_DEV" "${theirs_reps[@]}" \
    >"$LOGS/train-torch.txt" 2>&1
rc_torch=$?
theirs=$(sed -n 's/.*"img_s": \([0-9.e+-]*\).*/\1/p' "$LOGS/train-torch.txt" | tail -n 1)
[ -n "$theirs" ] && theirs=$(printf '%.2f' "$theirs")
why=$(sed -n 's/.*"torch": false, "error": "\(.*\)"}.*/\1/p' "$LOGS/train-torch.txt" | head -n 1)
torch_desc=$(head -n 1 "$LOGS/train-torch.txt")
{
    echo "# Training step, $MODEL, batch $BATCH, $SIZE px"
    echo
    echo "| implementation | img/s |"
    echo "| --- | ---: |"
    echo "| bitgrad bf16 (bench train --device cuda --precision bf16) | ${ours:-FAIL (rc $rc_ours)} |"
    if [ -n "$theirs" ]; then
        echo "| PyTorch AMP bf16 + channels_last, timm ($TORCH_DEV) | $theirs |"
    else
        echo "| PyTorch AMP bf16 + channels_last, timm ($TORCH_DEV) | skipped: ${why:-rc $rc_torch, see train-torch.txt} |"
    fi
    [ -n "$ours" ] && [ -n "$theirs" ] && awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "\nbitgrad ÷ PyTorch: %.3f\n", a / b }'
    echo
    echo "PyTorch: $torch_desc"
} >"$LOGS/train.md"
cat "$LOGS/train.md"
train_rc=$rc_ours
[ -z "$ours" ] && [ "$train_rc" = 0 ] && train_rc=1
record "training step img/s" "$train_rc" "$start" "$LOGS/train.md" "$([ -z "$theirs" ] && echo "PyTorch skipped: ${why:-rc $rc_torch}")"

layers f32

{
    echo "# gpu-check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ))$([ "$DRY_RUN" = 1 ] && echo ' — DRY RUN: CUDA shim, tiny sizes, no timing is meaningful')"
    echo
    head -n 4 "$BUNDLE/MANIFEST" | sed 's/^/    /'
    echo
    cat "$STEPS"
    echo
    echo "## Tests"
    echo
    cat "$LOGS/tests.md"
    echo
    cat "$LOGS/train.md"
    echo
    echo "Per-layer tables: layers-bf16.md, layers-f32.md; plan: plan.md; bench gpu: bench-gpu.txt."
} >"$SUMMARY"
rm -f "$STEPS"
echo
cat "$SUMMARY"

status=0
grep -q "FAIL\|TIMEOUT" "$SUMMARY" && status=1
if [ "$DRY_RUN" = 1 ]; then
    # Every step must have written its output.
    for f in "${OUTPUTS[@]}"; do
        [ -s "$LOGS/$f" ] || { echo "dry run: $f is missing or empty" >&2; status=1; }
    done
    grep -q "^| fprop |" "$LOGS/plan.md" || { echo "dry run: plan.md has no GEMM table" >&2; status=1; }
    grep -q "| wgrad |" "$LOGS/layers-bf16.md" || { echo "dry run: layers-bf16.md has no conv rows" >&2; status=1; }
    grep -q "SGD" "$LOGS/layers-f32.md" || { echo "dry run: layers-f32.md has no SGD row" >&2; status=1; }
    [ "$status" = 0 ] && echo "dry run: every step ran and wrote its output"
fi
exit "$status"

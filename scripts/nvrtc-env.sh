# Sourced by scripts/test.sh and scripts/with-shim.sh: makes the pinned NVRTC 13.0 usable —
# installs it from PyPI into .cuda-ci/py once (ignored by git), puts its libraries on
# LD_LIBRARY_PATH and its headers in NVRTC_INCLUDE. Pinned: a newer NVRTC emits PTX that a
# CUDA 13.0 driver cannot load (docs/cuda-toolchain.md). Needs python3 with pip.
# Also nvdisasm for the static SASS check (engine/tests/sass_tc.rs), in NVDISASM: PyPI has no
# 13.0 nvdisasm, 13.2 is the oldest; it reads NVRTC 13.0's sm_80/sm_90 CUBINs.
BITGRAD_ROOT="${BITGRAD_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
CUDA_CI="$BITGRAD_ROOT/.cuda-ci/py"
if [ ! -e "$CUDA_CI/nvidia/cu13/lib/libnvrtc.so.13" ] || [ ! -e "$CUDA_CI/nvidia/cu13/include/cuda_fp16.h" ] \
    || [ ! -x "$CUDA_CI/nvidia/cu13/bin/nvdisasm" ]; then
    echo "== installing NVRTC 13.0 and nvdisasm 13.2 into .cuda-ci/py" >&2
    # --upgrade: the wheels share nvidia/cu13, which pip --target would otherwise keep as it was.
    python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$CUDA_CI" \
        nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvdisasm==13.2.86 >&2
fi
export LD_LIBRARY_PATH="$CUDA_CI/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NVRTC_INCLUDE="$CUDA_CI/nvidia/cu13/include"
export NVDISASM="$CUDA_CI/nvidia/cu13/bin/nvdisasm"

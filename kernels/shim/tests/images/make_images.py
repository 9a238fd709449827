#!/usr/bin/env python3
"""Regenerates the images the shim's image-reader tests read: one small kernel source compiled
by NVRTC 13.0 to a CUBIN for sm_90 and sm_80 and to PTX for compute_90.

    source scripts/nvrtc-env.sh && python3 kernels/shim/tests/images/make_images.py
"""
import ctypes
import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
SRC = rb'''
struct S { long long a; int b; float c[5]; };
extern "C" __global__ void __launch_bounds__(256) kern(float* p, int n, S s, double d, char c) {
  __shared__ float tile[300];
  tile[threadIdx.x] = n + s.b + d + c;
  __syncthreads();
  p[threadIdx.x] = tile[(threadIdx.x + 1) % 256];
}
extern "C" __global__ void plain(unsigned long long* q) { extern __shared__ int dyn[]; dyn[0]=1; q[0] = dyn[0]; }
'''

nvrtc = ctypes.CDLL("libnvrtc.so.13")  # found through LD_LIBRARY_PATH (scripts/nvrtc-env.sh)


def compile_to(arch: str, out: str) -> None:
    prog = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), SRC, b"k.cu", 0, None, None) == 0
    opts = (ctypes.c_char_p * 1)(f"--gpu-architecture={arch}".encode())
    assert nvrtc.nvrtcCompileProgram(prog, 1, opts) == 0, f"compiling for {arch} failed"
    n = ctypes.c_size_t()
    size, get = (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if arch.startswith("sm") else (
        nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
    size(prog, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value)
    get(prog, buf)
    (HERE / out).write_bytes(buf.raw)


if __name__ == "__main__":
    os.chdir(HERE)
    compile_to("sm_90", "k90.cubin")
    compile_to("sm_80", "k80.cubin")
    compile_to("compute_90", "k90.ptx")

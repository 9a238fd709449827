#!/usr/bin/env python3
"""PyTorch's side of `bitgrad bench gpu`: the same four measurements, on the same GPU, printed
as one flat JSON line (the bench reads it without a JSON library).

  python3 scripts/bench_gpu_torch.py [--copy-mib 256] [--n 67108864] [--gemm 4096] [--reps 20]
      [--rounds 5] [--device 0]

  {"torch": true, "torch_version": ..., "gpu": ..., "copy_gbs": ..., "add_gbs": ..., "relu_gbs": ...,
   "sum_gbs": ..., "gemm_tflops": ...}
  or {"torch": false, "error": "..."} when torch or a CUDA GPU is missing.

Method (as bitgrad's): warm-up, then `rounds` batches of `reps` runs between two
torch.cuda.synchronize() calls; the median batch mean is the time. Every op allocates its output
(PyTorch's caching allocator, like bitgrad's). GEMM in true f32: TF32 is switched off.
"""

import argparse
import json
import statistics
import time


def timed(torch, f, reps, rounds):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    means = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        torch.cuda.synchronize()
        means.append((time.perf_counter() - t0) / reps)
    return statistics.median(means)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--copy-mib", type=int, default=256)
    p.add_argument("--n", type=int, default=64 << 20)
    p.add_argument("--gemm", type=int, default=4096)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", type=int, default=0)
    a = p.parse_args()
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"torch": False, "error": f"no torch ({e})"}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"torch": False, "error": f"torch {torch.__version__} sees no CUDA GPU"}))
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda", a.device)
    out = {"torch": True, "torch_version": torch.__version__, "gpu": torch.cuda.get_device_name(dev)}

    words = a.copy_mib << 18
    src = torch.zeros(words, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    t = timed(torch, lambda: dst.copy_(src), a.reps, a.rounds)
    out["copy_gbs"] = 2 * words * 4 / t / 1e9
    del src, dst

    x = torch.zeros(a.n, dtype=torch.float32, device=dev)
    y = torch.zeros(a.n, dtype=torch.float32, device=dev)
    out["add_gbs"] = 3 * a.n * 4 / timed(torch, lambda: x + y, a.reps, a.rounds) / 1e9
    out["relu_gbs"] = 2 * a.n * 4 / timed(torch, lambda: torch.relu(x), a.reps, a.rounds) / 1e9
    out["sum_gbs"] = a.n * 4 / timed(torch, lambda: x.sum(), a.reps, a.rounds) / 1e9
    del x, y

    n = a.gemm
    ga = torch.randn(n, n, dtype=torch.float32, device=dev)
    gb = torch.randn(n, n, dtype=torch.float32, device=dev)
    t = timed(torch, lambda: ga @ gb, max(1, a.reps // 4), a.rounds)
    out["gemm_tflops"] = 2 * n**3 / t / 1e12
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # reported by the bench as the reason torch was skipped
        print(json.dumps({"torch": False, "error": f"{type(e).__name__}: {e}"}))

#!/usr/bin/env python3
"""PyTorch CPU reference timings for `examples/bench_norm.rs` (group norm and weight standardization).

The Rust example runs this file as a child process (`python -c <this file> --serve`) and sends one
request per line; each answer is one line. Both sides alternate on the same machine, so they see
the same load. Every timed repetition is a forward plus a backward (torch.autograd.grad with
respect to every input that needs a gradient), with torch.set_num_threads(2).

Requests (whitespace-separated):

  gn N C H W GROUPS ACT REPS      ACT = none | relu
      F.group_norm(x, GROUPS, gamma, beta, 1e-5), then an in-place ReLU for ACT = relu (timm's
      GroupNormAct); gradients of x, gamma and beta.
  ws O I KH KW EPS VARIANT REPS   VARIANT = timm | formula
      timm:    F.batch_norm(w.reshape(1, O, -1), None, None, training=True, momentum=0, eps=EPS)
               reshaped back (timm's StdConv2d, the form timm and HF use for BiT);
      formula: (w - mean) / sqrt(var + EPS) with torch.var_mean(unbiased=False) over dims 1.. ;
      gradient of w.

Answers: "ok TIMES..." (seconds, one per repetition, after one untimed warm-up) or "err MESSAGE".
The first line printed is "info torch=VERSION threads=N" or "notorch REASON" (then it exits).

One-shot use (prints the answer and exits):  python3 scripts/bench_norm_torch.py gn 8 256 32 32 32 relu 20
"""

import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # reported to the caller, who prints "torch not found, reference skipped"
    torch = None
    TORCH_ERROR = str(e).replace("\n", " ")

THREADS = 2
_cache = {}


def gn_case(n, c, h, w, groups, act):
    """Inputs made once per shape and kept, so repeated requests time only the op."""
    key = ("gn", n, c, h, w)
    if key not in _cache:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, h, w, generator=g).requires_grad_(True)
        gamma = (1.0 + 0.1 * torch.randn(c, generator=g)).requires_grad_(True)
        beta = (0.1 * torch.randn(c, generator=g)).requires_grad_(True)
        up = torch.randn(n, c, h, w, generator=g)
        _cache[key] = (x, gamma, beta, up)
    x, gamma, beta, up = _cache[key]

    def step():
        y = F.group_norm(x, groups, gamma, beta, 1e-5)
        if act == "relu":
            y = F.relu(y, inplace=True)
        torch.autograd.grad(y, (x, gamma, beta), up)

    return step


def ws_case(o, i, kh, kw, eps, variant):
    key = ("ws", o, i, kh, kw)
    if key not in _cache:
        g = torch.Generator().manual_seed(0)
        w = (0.05 * torch.randn(o, i, kh, kw, generator=g)).requires_grad_(True)
        up = torch.randn(o, i, kh, kw, generator=g)
        _cache[key] = (w, up)
    w, up = _cache[key]

    if variant == "timm":
        def standardize():
            flat = F.batch_norm(w.reshape(1, o, -1), None, None, training=True, momentum=0.0, eps=eps)
            return flat.reshape_as(w)
    elif variant == "formula":
        def standardize():
            var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
            return (w - mean) / torch.sqrt(var + eps)
    else:
        raise ValueError(f"unknown ws variant {variant!r}")

    def step():
        torch.autograd.grad(standardize(), (w,), up)

    return step


def answer(fields):
    kind = fields[0]
    if kind == "gn":
        n, c, h, w, groups = (int(v) for v in fields[1:6])
        step, reps = gn_case(n, c, h, w, groups, fields[6]), int(fields[7])
    elif kind == "ws":
        o, i, kh, kw = (int(v) for v in fields[1:5])
        step, reps = ws_case(o, i, kh, kw, float(fields[5]), fields[6]), int(fields[7])
    else:
        raise ValueError(f"unknown request {kind!r}")
    step()  # warm-up: allocator, autograd graph caches
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return "ok " + " ".join(f"{t:.9f}" for t in times)


def safe_answer(fields):
    try:
        return answer(fields)
    except Exception as e:  # one bad request must not end the session
        return "err " + f"{type(e).__name__}: {e}".replace("\n", " ")


def main():
    if torch is None:
        print("notorch " + TORCH_ERROR, flush=True)
        sys.exit(2)
    torch.set_num_threads(THREADS)
    if len(sys.argv) > 1 and sys.argv[1] != "--serve":
        print(safe_answer(sys.argv[1:]))
        return
    print(f"info torch={torch.__version__} threads={torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        if line.strip():
            print(safe_answer(line.split()), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch CPU reference timings for `examples/bench_conv.rs` (conv2d forward, grad-input, grad-weight).

Two ways to run it:

  python3 scripts/bench_conv_torch.py [--threads 2] [--reps 9] [--min]
      Times the BiT-R50x1 conv list on its own and prints a table (handy to look at PyTorch alone):
      the median (or with --min the minimum) of --reps repetitions per op.

  python3 scripts/bench_conv_torch.py --serve [--threads 2]
      What the Rust bench uses. Prints one line "info torch <version> threads <n> mkldnn <0|1>"
      (or "error <message>" and exit code 2 without torch), then answers requests, one per line:
        shape <n> <c> <h> <w> <o> <kh> <kw> <stride> <pad>   -> "ok"  (makes x, w, y, dy; keeps them)
        time <fwd|gi|gw> <reps>                              -> "times <s> <s> ..." (one per rep)
      until stdin closes. The Rust side alternates its own repetitions with ours, so both see the
      same machine load.

With --bf16 (both ways): x, w and dy are bfloat16 in channels_last (what
torch.autocast(bfloat16) with a channels_last model runs; the weight is converted once, outside
the timing).

What is timed (float32, NCHW unless --bf16, torch.set_num_threads(threads)):
  fwd: torch.nn.functional.conv2d(x, w, stride=, padding=) under no_grad;
  gi:  torch.autograd.grad(y, x, dy, retain_graph=True) with only x requiring grad;
  gw:  torch.autograd.grad(y, w, dy, retain_graph=True) with only w requiring grad.
"""

import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the Rust side prints "torch not found, reference skipped"
    torch = None
    TORCH_ERROR = str(e)


class Shape:
    """One convolution's tensors, made once and reused by every repetition."""

    def __init__(self, n, c, h, w, o, kh, kw, stride, pad):
        gen = torch.Generator().manual_seed(0)
        self.stride, self.pad = stride, pad
        self.x = torch.randn(n, c, h, w, generator=gen)
        self.w = torch.randn(o, c, kh, kw, generator=gen) * 0.05
        if "--bf16" in sys.argv:
            cl = torch.channels_last
            self.x = self.x.to(torch.bfloat16).contiguous(memory_format=cl)
            self.w = self.w.to(torch.bfloat16).contiguous(memory_format=cl)
        self.xg = self.x.clone().requires_grad_(True)
        self.wg = self.w.clone().requires_grad_(True)
        # Two graphs: one where only x needs a gradient, one where only w does, so each
        # backward computes exactly one gradient (as the Rust side does).
        self.y_x = F.conv2d(self.xg, self.w, stride=stride, padding=pad)
        self.y_w = F.conv2d(self.x, self.wg, stride=stride, padding=pad)
        self.dy = torch.randn(self.y_x.shape, generator=gen).to(self.x.dtype)
        if "--bf16" in sys.argv:
            self.dy = self.dy.contiguous(memory_format=torch.channels_last)

    def run(self, op):
        if op == "fwd":
            with torch.no_grad():
                F.conv2d(self.x, self.w, stride=self.stride, padding=self.pad)
        elif op == "gi":
            torch.autograd.grad(self.y_x, self.xg, self.dy, retain_graph=True)
        elif op == "gw":
            torch.autograd.grad(self.y_w, self.wg, self.dy, retain_graph=True)
        else:
            raise ValueError(f"unknown op {op!r}")

    def time(self, op, reps):
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            self.run(op)
            out.append(time.perf_counter() - t)
        return out


def reps_arg():
    if "--reps" in sys.argv:
        return int(sys.argv[sys.argv.index("--reps") + 1])
    return 9


def threads_arg():
    if "--threads" in sys.argv:
        return int(sys.argv[sys.argv.index("--threads") + 1])
    return 2


def serve():
    if torch is None:
        print(f"error {TORCH_ERROR}", flush=True)
        sys.exit(2)
    torch.set_num_threads(threads_arg())
    mkldnn = int(torch.backends.mkldnn.is_available())
    print(f"info torch {torch.__version__} threads {torch.get_num_threads()} mkldnn {mkldnn} isa {torch.backends.cpu.get_cpu_capability()}", flush=True)
    shape = None
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "shape":
                shape = Shape(*map(int, parts[1:10]))
                print("ok", flush=True)
            elif parts[0] == "time":
                ts = shape.time(parts[1], int(parts[2]))
                print("times " + " ".join(f"{t:.9f}" for t in ts), flush=True)
            else:
                print(f"error unknown request {parts[0]!r}", flush=True)
        except Exception as e:  # reported, and the session goes on
            print(f"error {type(e).__name__}: {e}".replace("\n", " "), flush=True)


# (n, c, h, w, o, kh, kw, stride, pad, count in R50x1) at 128 px, batch 8 — the same list as
# examples/bench_conv.rs.
R50X1_128 = [
    (8, 3, 128, 128, 64, 7, 7, 2, 3, 1),
    (8, 64, 32, 32, 64, 1, 1, 1, 0, 1),
    (8, 64, 32, 32, 64, 3, 3, 1, 1, 3),
    (8, 64, 32, 32, 256, 1, 1, 1, 0, 4),
    (8, 256, 32, 32, 64, 1, 1, 1, 0, 2),
    (8, 256, 32, 32, 128, 1, 1, 1, 0, 1),
    (8, 128, 32, 32, 128, 3, 3, 2, 1, 1),
    (8, 256, 32, 32, 512, 1, 1, 2, 0, 1),
    (8, 128, 16, 16, 512, 1, 1, 1, 0, 4),
    (8, 512, 16, 16, 128, 1, 1, 1, 0, 3),
    (8, 128, 16, 16, 128, 3, 3, 1, 1, 3),
    (8, 512, 16, 16, 256, 1, 1, 1, 0, 1),
    (8, 256, 16, 16, 256, 3, 3, 2, 1, 1),
    (8, 512, 16, 16, 1024, 1, 1, 2, 0, 1),
    (8, 256, 8, 8, 1024, 1, 1, 1, 0, 6),
    (8, 1024, 8, 8, 256, 1, 1, 1, 0, 5),
    (8, 256, 8, 8, 256, 3, 3, 1, 1, 5),
    (8, 1024, 8, 8, 512, 1, 1, 1, 0, 1),
    (8, 512, 8, 8, 512, 3, 3, 2, 1, 1),
    (8, 1024, 8, 8, 2048, 1, 1, 2, 0, 1),
    (8, 512, 4, 4, 2048, 1, 1, 1, 0, 3),
    (8, 2048, 4, 4, 512, 1, 1, 1, 0, 2),
    (8, 512, 4, 4, 512, 3, 3, 1, 1, 2),
]


def standalone():
    if torch is None:
        print(f"torch not found ({TORCH_ERROR})")
        sys.exit(2)
    torch.set_num_threads(threads_arg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    total = {"fwd": 0.0, "gi": 0.0, "gw": 0.0}
    for (n, c, h, w, o, kh, kw, s, p, count) in R50X1_128:
        sh = Shape(n, c, h, w, o, kh, kw, s, p)
        oh, ow = sh.dy.shape[2], sh.dy.shape[3]
        flops = 2 * n * o * c * kh * kw * oh * ow
        row = f"{n}x{c}x{h}x{w} -> {o} {kh}x{kw}/{s} p{p} (x{count}):"
        for op in ("fwd", "gi", "gw"):
            sh.time(op, 2)
            ts = sorted(sh.time(op, reps_arg()))
            t = ts[0] if "--min" in sys.argv else ts[len(ts) // 2]
            total[op] += count * t
            row += f"  {op} {t * 1e3:7.3f} ms {flops / t / 1e9:6.1f} GF/s"
        print(row)
    print("weighted total (ms): " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in total.items()))


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        standalone()

#!/usr/bin/env python3
"""PyTorch's side of `bitgrad bench layers` and of gpu-check.sh's train-step comparison: cuDNN
convolutions in bf16 `channels_last`, and timm's training step with AMP (bf16) + channels_last.

  python3 scripts/bench_gpu_layers_torch.py conv [--device cuda|cpu] [--reps 10] [--rounds 3]
      Prints an info line, then reads one request per stdin line and answers each with one line:
        conv ID N C H W K R S STRIDE PAD  ->  {"id": ID, "fwd": s, "dgrad": s, "wgrad": s}
      fwd:   F.conv2d(x, w, stride, padding);
      dgrad: torch.ops.aten.convolution_backward(dy, x, w, ..., output_mask=[True, False, False]);
      wgrad: the same with output_mask=[False, True, False] (cuDNN's own passes, no autograd graph).
  python3 scripts/bench_gpu_layers_torch.py train MODEL BATCH SIZE [--classes 1000] [--device cuda|cpu]
      [--reps 10] [--rounds 3]
      Prints an info line and {"img_s": ..., "step_s": ...}: timm's MODEL (random init) in train
      mode, channels_last, SGD (lr 0.003, momentum 0.9), forward and cross-entropy under
      torch.autocast(bfloat16), backward, step, zero_grad(set_to_none=True).

The info line is {"torch": true, "torch_version": ..., "device": ..., "cudnn": ...} or
{"torch": false, "error": ...} (then exit 0: the caller reports why PyTorch was skipped).
`--device cpu` is for dry runs at tiny sizes (bf16 on the CPU: oneDNN, not cuDNN).
Timing: warm-up, then `rounds` batches of `reps` runs between two synchronizations; the median
batch mean (seconds per run) is reported.
"""

import argparse
import json
import statistics
import sys
import time


def timer(torch, dev):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def timed(f, reps, rounds):
        for _ in range(2):
            f()
        sync()
        means = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            sync()
            means.append((time.perf_counter() - t0) / reps)
        return statistics.median(means)

    return timed


def conv(torch, dev, a):
    import torch.nn.functional as F

    timed = timer(torch, dev)
    cl = torch.channels_last
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        if f[0] != "conv" or len(f) != 11:
            print(json.dumps({"error": f"bad request {line.strip()!r}"}), flush=True)
            continue
        i, n, c, h, w, k, r, s, stride, pad = (int(v) for v in f[1:])
        g = torch.Generator(device="cpu").manual_seed(i)
        mk = lambda *shape: torch.randn(*shape, generator=g).to(dev, torch.bfloat16).contiguous(memory_format=cl)
        x, wt = mk(n, c, h, w), mk(k, c, r, s) * 0.05
        y = F.conv2d(x, wt, stride=stride, padding=pad)
        dy = torch.randn(y.shape, generator=g).to(dev, torch.bfloat16).contiguous(memory_format=cl)
        args = (dy, x, wt, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1)
        bw = torch.ops.aten.convolution_backward
        with torch.no_grad():
            out = {
                "id": i,
                "fwd": timed(lambda: F.conv2d(x, wt, stride=stride, padding=pad), a.reps, a.rounds),
                "dgrad": timed(lambda: bw(*args, [True, False, False]), a.reps, a.rounds),
                "wgrad": timed(lambda: bw(*args, [False, True, False]), a.reps, a.rounds),
            }
        print(json.dumps(out), flush=True)


# bitgrad's small configs (models/src/bit/config.rs), which timm does not register: layers, stem
# width, stage widths, GN groups. Built as timm builds its BiT models (scripts/bench_model_torch.py).
SMALL = {
    "resnetv2_tiny_bit": ([1, 1, 1, 1], 16, (32, 64, 128, 256), 4),
    "resnetv2_small_bit": ([2, 2, 2, 2], 32, (64, 128, 256, 512), 8),
}


def build(name, classes):
    import timm

    if name not in SMALL:
        return timm.create_model(name, pretrained=False, num_classes=classes)
    from functools import partial

    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    layers, stem, channels, groups = SMALL[name]
    return ResNetV2(layers=layers, channels=channels, stem_chs=stem, stem_type="fixed", preact=True,
                    conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=groups),
                    num_classes=classes)


def train(torch, dev, a):
    model = build(a.model, a.classes)
    model = model.to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g).to(dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,), generator=g).to(dev)

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = timer(torch, dev)(step, a.reps, a.rounds)
    print(json.dumps({"img_s": a.batch / t, "step_s": t}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("conv", "train"):
        q = sub.add_parser(name)
        q.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
        q.add_argument("--reps", type=int, default=10)
        q.add_argument("--rounds", type=int, default=3)
        if name == "train":
            q.add_argument("model")
            q.add_argument("batch", type=int)
            q.add_argument("size", type=int)
            q.add_argument("--classes", type=int, default=1000)
    a = p.parse_args()
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"torch": False, "error": f"no torch ({e})"}))
        return
    if a.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"torch": False, "error": f"torch {torch.__version__} sees no CUDA GPU"}))
        return
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    cudnn = torch.backends.cudnn.version() if dev.type == "cuda" else None
    info = {"torch": True, "torch_version": torch.__version__, "device": name, "cudnn": cudnn}
    if a.what == "train":
        try:
            import timm

            info["timm_version"] = timm.__version__
        except ImportError as e:
            print(json.dumps({"torch": False, "error": f"no timm ({e})"}))
            return
    print(json.dumps(info), flush=True)
    torch.backends.cudnn.benchmark = True
    (conv if a.what == "conv" else train)(torch, dev, a)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # reported by the caller as the reason PyTorch was skipped
        print(json.dumps({"torch": False, "error": f"{type(e).__name__}: {e}"}))

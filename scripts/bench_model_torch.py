#!/usr/bin/env python3
"""PyTorch/timm reference timings for `bitgrad bench forward|train` (same protocol as
scripts/bench_reference.py).

  python3 scripts/bench_model_torch.py --serve
      Prints one "info" JSON line, then answers one request per input line with one JSON line:
      {"op": "forward"|"train", "model": "resnetv2_50x1_bit", "batch": 8, "size": 128,
       "classes": 1000, "warmup": 1, "reps": 3, "precision": "f32"|"bf16"}
      (a model timm does not register also carries "layers", "channels", "stem_chs", "groups")
      forward: model.eval() under torch.inference_mode(), logits computed and freed.
      train:   model.train(); forward, mean cross-entropy, backward, SGD step (lr 0.003,
               momentum 0.9, as BiT), zero_grad(set_to_none=True).
      precision "bf16": the forward (and the loss) under torch.autocast(bfloat16), PyTorch's
      mixed precision, f32 master weights — what bitgrad's --precision bf16 is compared with.
  python3 scripts/bench_model_torch.py forward resnetv2_50x1_bit 8 128 [--reps 5]
      One-shot: prints the info line and one reply.

The model is timm's (random init, the same architecture as bitgrad's), float32, on the CPU with
torch's default intra-op threads (one per core). Inputs and labels are made once per request
shape and reused. Replies are flat JSON (times_s, wait_us lists), as the Rust side expects.
"""

import json
import os
import sys
import time

try:
    import torch
    import timm
except ImportError as e:
    torch = None
    IMPORT_ERROR = str(e)


def info():
    if torch is None:
        return {"kind": "info", "ok": False, "error": IMPORT_ERROR}
    return {
        "kind": "info",
        "ok": True,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


_cache = {}


def build(req):
    """timm's registered model by name, or — for bitgrad's small configs, which timm does not
    register — the same ResNetV2 built from the request's layers/stem/channels/groups, exactly
    as timm builds its BiT models (stem 'fixed', pre-activation, StdConv2d ε 1e-8, GroupNormAct)."""
    classes = req.get("classes", 1000)
    if "layers" not in req:
        return timm.create_model(req["model"], pretrained=False, num_classes=classes)
    from functools import partial
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2
    return ResNetV2(layers=req["layers"], channels=req["channels"], stem_chs=req["stem_chs"], stem_type="fixed",
                    preact=True, conv_layer=partial(StdConv2d, eps=1e-8),
                    norm_layer=partial(GroupNormAct, num_groups=req["groups"]), num_classes=classes)


def setup(req):
    key = (req["op"], req["model"], req["batch"], req["size"], req.get("classes", 1000), req.get("precision", "f32"))
    if key not in _cache:
        _cache.clear()  # one model at a time: R50x1 training state is ~300 MB
        torch.manual_seed(0)
        model = build(req)
        x = torch.randn(req["batch"], 3, req["size"], req["size"])
        y = torch.randint(0, req.get("classes", 1000), (req["batch"],))
        import contextlib
        if req.get("precision", "f32") == "bf16":
            amp = lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)  # noqa: E731
        else:
            amp = contextlib.nullcontext
        if req["op"] == "forward":
            model.eval()

            def step():
                with torch.inference_mode(), amp():
                    return model(x)

        elif req["op"] == "train":
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
            loss_fn = torch.nn.CrossEntropyLoss()

            def step():
                with amp():
                    loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss.item()

        else:
            raise ValueError(f"unknown op {req['op']!r}")
        _cache[key] = step
    return _cache[key]


def run_wait_us():
    try:
        total = 0
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        return total / 1e3
    except (OSError, IndexError, ValueError):
        return None


def measure(req):
    step = setup(req)
    for _ in range(int(req.get("warmup", 1))):
        step()
    times, waits = [], []
    for _ in range(int(req.get("reps", 3))):
        w0 = run_wait_us()
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        w1 = run_wait_us()
        times.append(t1 - t0)
        waits.append(None if w0 is None or w1 is None else w1 - w0)
    out = {"op": req["op"], "times_s": times}
    if all(w is not None for w in waits):
        out["wait_us"] = waits
    return out


def serve():
    print(json.dumps(info()), flush=True)
    if torch is None:
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = measure(json.loads(line))
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


def one_shot(argv):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", choices=["forward", "train"])
    p.add_argument("model")
    p.add_argument("batch", type=int)
    p.add_argument("size", type=int)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    a = p.parse_args(argv)
    print(json.dumps(info()))
    if torch is None:
        return 2
    req = {"op": a.op, "model": a.model, "batch": a.batch, "size": a.size, "classes": a.classes,
           "warmup": a.warmup, "reps": a.reps, "precision": a.precision}
    print(json.dumps(measure(req)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(one_shot(sys.argv[1:]))

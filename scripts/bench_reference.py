#!/usr/bin/env python3
"""NumPy reference timings for `bitgrad bench` (the numbers bitgrad is compared against).

Two ways to run it:

  python3 scripts/bench_reference.py matmul 64 576 3136 [--warmup 2] [--reps 7]
  python3 scripts/bench_reference.py add|mul|relu 16777216  [--warmup 2] [--reps 7]
      Times one op and prints one JSON line: {"op": ..., "times_s": [...], ...}.

  python3 scripts/bench_reference.py --serve
      What `bitgrad bench` uses: prints one "info" JSON line, then answers one request per input
      line ({"op": "matmul", "m": 64, "k": 576, "n": 3136, "warmup": 0, "reps": 1} or
      {"op": "add", "n": 16777216, ...}) with one JSON line, until stdin closes. Operands are made
      once per shape and kept, so the Rust side can interleave its own repetitions with ours.

Every JSON line is flat: strings, numbers, booleans, and lists of numbers ("times_s", and
"wait_us": how long this process's threads waited for a CPU during each run, from Linux's
/proc/self/task/*/schedstat, when it exists), so the Rust side can read it without a JSON library. Errors are reported as {"error": "..."}.

Without NumPy, the info line is {"kind": "info", "numpy": false, "error": "..."} (and exit code 2
in the one-shot mode). threadpoolctl is optional: without it the BLAS fields say "unknown".
"""

import json
import os
import sys
import time

try:
    import numpy as np
except ImportError as e:  # reported to the caller, who prints "numpy not found"
    np = None
    NUMPY_ERROR = str(e)


def info():
    """Which NumPy and which BLAS (library, kernel architecture, threads) this run uses."""
    if np is None:
        return {"kind": "info", "numpy": False, "error": NUMPY_ERROR}
    out = {
        "kind": "info",
        "numpy": True,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "blas": "unknown",
        "blas_version": "unknown",
        "blas_arch": "unknown",
        "blas_threads": -1,
        "threadpoolctl": False,
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return out
    out["threadpoolctl"] = True
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            out["blas"] = str(pool.get("internal_api", "unknown"))
            out["blas_version"] = str(pool.get("version", "unknown"))
            out["blas_arch"] = str(pool.get("architecture", "unknown"))
            out["blas_threads"] = int(pool.get("num_threads", -1))
            break
    return out


_operands = {}


def operands(req):
    """The inputs for a request, made once per (op, shape) and reused."""
    op = req["op"]
    key = (op, req.get("m"), req.get("k"), req.get("n"))
    if key not in _operands:
        rng = np.random.default_rng(0)
        if op == "matmul":
            m, k, n = req["m"], req["k"], req["n"]
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            _operands[key] = (a, b)
        else:
            n = req["n"]
            _operands[key] = (rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32))
    return _operands[key]


def kernel(req):
    """A zero-argument function doing one repetition; each allocates its output, like bitgrad."""
    op = req["op"]
    a, b = operands(req)
    if op == "matmul":
        return lambda: np.matmul(a, b)
    if op == "add":
        return lambda: np.add(a, b)
    if op == "mul":
        return lambda: np.multiply(a, b)
    if op == "relu":
        return lambda: np.maximum(a, np.float32(0))
    raise ValueError(f"unknown op {op!r}")


def run_wait_us():
    """Microseconds this process's threads have waited for a CPU while ready to run (Linux
    schedstat: second field of /proc/self/task/*/schedstat), or None where it is missing."""
    try:
        total = 0
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        return total / 1e3
    except (OSError, IndexError, ValueError):
        return None


def measure(req):
    f = kernel(req)
    for _ in range(int(req.get("warmup", 2))):
        f()
    times, waits = [], []
    for _ in range(int(req.get("reps", 7))):
        w0 = run_wait_us()
        t0 = time.perf_counter()
        f()  # the result is freed before the clock stops, as in bitgrad's timing
        t1 = time.perf_counter()
        w1 = run_wait_us()
        times.append(t1 - t0)
        waits.append(None if w0 is None or w1 is None else w1 - w0)
    out = {k: v for k, v in req.items() if k in ("op", "m", "k", "n")}
    out["times_s"] = times
    if all(w is not None for w in waits):
        out["wait_us"] = waits
    return out


def serve():
    print(json.dumps(info()), flush=True)
    if np is None:
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = measure(json.loads(line))
        except Exception as e:  # keep serving; the caller reports the error
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


def one_shot(argv):
    import argparse

    p = argparse.ArgumentParser(description="NumPy reference timings for bitgrad bench")
    p.add_argument("op", choices=["matmul", "add", "mul", "relu"])
    p.add_argument("dims", type=int, nargs="+", help="M K N for matmul, element count otherwise")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    print(json.dumps(info()))
    if np is None:
        return 2
    req = {"op": args.op, "warmup": args.warmup, "reps": args.reps}
    if args.op == "matmul":
        if len(args.dims) != 3:
            p.error("matmul takes M K N")
        req.update(m=args.dims[0], k=args.dims[1], n=args.dims[2])
    else:
        req["n"] = args.dims[0]
    print(json.dumps(measure(req)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(one_shot(sys.argv[1:]))

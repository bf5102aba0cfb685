"""What one launch of a CUDA kernel costs the host: tinygpt's numba-cuda kernels against a
CuPy operation, on arrays so small that the GPU's own work is negligible.

    python benchmarks/bench_launch.py                     # on the GPU
    python benchmarks/bench_launch.py --device cuda-sim --calls 3   # the script, in numba's simulator

A GPT-2 step launches a few hundred small kernels (AdamW alone: one per parameter, 148),
so what each launch costs the Python side decides how much of the step is spent queueing
work rather than doing it. Timed per call (median of --repeats batches of --calls calls):

  queued    the calls one after the other, with one wait for the device at the end: the
            host's cost of a launch (arguments converted, the kernel queued)
  waited    a wait for the device after every call: a launch and its round trip

for: AdamW's kernel through its launcher (kernels/cuda/__init__.py adamw_step: 4 arrays, 7
numbers), an empty numba-cuda kernel of 4 arrays, and CuPy's in-place multiply of one
array (one kernel of CuPy's own). ``cuda-sim`` checks the script only: its times are the
simulator's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# cuda_device.py: beside this script, whose folder is on sys.path
from cuda_device import add_device_argument, use_device


def per_call(fn, calls, repeats, synchronize, wait_each):
    """Median microseconds per call of ``fn`` over ``repeats`` batches of ``calls`` calls."""
    fn()                                      # compiled and warm
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
            if wait_each:
                synchronize()
        synchronize()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_argument(parser)
    parser.add_argument("--size", type=int, default=768, help="elements of each array (default: 768)")
    parser.add_argument("--calls", type=int, default=200, help="calls per timed batch (default: 200)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backend = use_device(args.device, "bench_launch")
    import numpy as np

    from autograd.kernels import cuda as kernels
    from autograd.kernels.cuda.launch import elementwise_grid, numba_cuda
    cuda = numba_cuda()

    @cuda.jit
    def empty(a, b, c, d):                    # 4 arrays in, nothing done
        pass

    rng = np.random.default_rng(0)
    p, g, m = (backend.asarray(rng.standard_normal(args.size).astype(np.float32)) for _ in range(3))
    v = backend.asarray(rng.random(args.size).astype(np.float32))   # a second moment: not negative
    blocks, threads = elementwise_grid(args.size)
    cases = [
        ("AdamW kernel (launcher, 4 arrays + 7 numbers)",
         lambda: kernels.adamw_step(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1e-3, 0.5)),
        ("empty numba-cuda kernel, 4 arrays", lambda: empty[blocks, threads](p, g, m, v)),
        ("CuPy: p *= 0.999 (one CuPy kernel)", lambda: p.__imul__(np.float32(0.999))),
    ]
    print(f"{backend.device_info()}: microseconds per call, arrays of {args.size} float32, "
          f"median of {args.repeats} x {args.calls} calls")
    print(f"{'':48}{'queued':>10}{'waited':>10}")
    for name, fn in cases:
        queued = per_call(fn, args.calls, args.repeats, backend.synchronize, wait_each=False)
        waited = per_call(fn, args.calls, args.repeats, backend.synchronize, wait_each=True)
        print(f"{name:48}{queued:10.1f}{waited:10.1f}")


if __name__ == "__main__":
    main()

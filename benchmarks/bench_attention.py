"""Causal attention on the GPU: the fused-softmax kernel (P kept) against the flash kernels
(P never formed), one forward and backward of one layer's attention.

    python benchmarks/bench_attention.py                      # GPT-2's layer: B 8, 12 heads, T 1024, hs 64
    python benchmarks/bench_attention.py --device cuda-sim --batch 1 --heads 1 --context 9 --head-size 4

For each: the milliseconds of a forward and backward (median of --repeats after a warm-up),
the peak of CuPy's memory pool above what the inputs take (P alone is B*nh*T*T floats:
384 MiB in float32 at GPT-2's layer), and the largest difference between the two
results (outputs and the three gradients). ``cuda-sim`` (numba's simulator, no GPU)
checks the script and the agreement on tiny shapes; it measures no memory.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_argument(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backend = use_device(args.device, "bench_attention")
    import numpy as np

    from autograd import Tensor
    from autograd import functional as F
    xp = backend.xp()
    shape = (args.batch, args.heads, args.context, args.head_size)
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    pool = xp.get_default_memory_pool() if args.device == "cuda" else None

    def run(flash):
        backend.use_flash_attention(flash)
        q, k, v = (Tensor(backend.asarray(a), requires_grad=True) for a in host[:3])
        g = backend.asarray(host[3])
        times, peak = [], 0
        for r in range(args.repeats + 1):
            for t in (q, k, v):
                t.grad = None
            backend.synchronize()
            if pool is not None:
                base = pool.used_bytes()
                pool.free_all_blocks()
            start = time.perf_counter()
            out = F.causal_attention(q, k, v)
            out.backward(g)
            backend.synchronize()
            if r:
                times.append((time.perf_counter() - start) * 1e3)
            if pool is not None:
                peak = max(peak, pool.total_bytes() - base)
            result = [backend.to_numpy(a) for a in (out.data, q.grad, k.grad, v.grad)]
        backend.use_flash_attention(False)
        return statistics.median(times), peak, result

    fused_ms, fused_peak, fused = run(False)
    flash_ms, flash_peak, flash = run(True)
    worst = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(flash, fused))
    print(f"attention forward+backward, B {args.batch}, {args.heads} heads, T {args.context}, hs {args.head_size}, "
          f"float32, {backend.device_info()}")
    for name, ms, peak in (("fused softmax (P kept)", fused_ms, fused_peak), ("flash (no P)", flash_ms, flash_peak)):
        memory = f"{peak / 2**20:9.1f} MiB" if pool is not None else "        -"
        print(f"  {name:24} {ms:9.2f} ms  peak above the inputs {memory}")
    print(f"  largest difference, relative to the largest value: {worst:.1e}")
    print(f"  P alone: {np.prod(shape[:3]) * args.context * 4 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

"""This machine's float32 matrix-product rate, with the OpenBLAS kernels its environment
asks for and with OpenBLAS's own choice for its processor.

    python benchmarks/bench_gemm.py                    # 2048 x 2048 x 2048, 5 pairs
    python benchmarks/bench_gemm.py --size 1536,128,50257 --pairs 3   # the default run's head

Every tinygpt figure on the CPU rests on NumPy's matrix products, and OpenBLAS picks the
kernels for them when it loads: for this processor, unless ``OPENBLAS_CORETYPE`` names
others (this project's development machine sets ``OPENBLAS_CORETYPE=Haswell``, AVX2
kernels, on a processor with AVX-512). Each measurement runs in a fresh process: one with
the environment as it is, one with ``OPENBLAS_CORETYPE`` removed, alternating (which goes
first turns each pair). A process multiplies an (M, K) by a (K, N) float32 matrix into a
preallocated result, once untimed, then for --seconds, and prints the median and the
fastest call as GFLOP/s (2 M N K flops a product) with the kernels' name as OpenBLAS
reports it. Printed: each pair, then the median and min-max over the pairs of each.
Both at the same thread count (threads.py: --threads, every core by default).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads import THREADS  # noqa: E402  (first: it fixes the thread count of every library)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402


def child(m: int, k: int, n: int, seconds: float) -> None:
    """In a fresh process: GFLOP/s of (m, k) @ (k, n) float32, as JSON."""
    import autograd  # noqa: F401  (before NumPy, as the tinygpt command: OpenBLAS's thread timeout)
    import numpy as np
    from autograd import backend

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    from common import call_times
    times = call_times(lambda: np.matmul(a, b, out=out), seconds, at_least=5)
    flops = 2.0 * m * n * k
    print(json.dumps({"kernels": backend.blas_kernel(), "median_gflops": flops / statistics.median(times) / 1e9,
                      "best_gflops": flops / min(times) / 1e9, "calls": len(times)}))


def run_child(shape, seconds, remove_coretype: bool) -> dict:
    env = dict(os.environ)
    if remove_coretype:
        env.pop("OPENBLAS_CORETYPE", None)
    result = subprocess.run([sys.executable, __file__, "--child", "--size", ",".join(map(str, shape)),
                             "--seconds", str(seconds), "--threads", str(THREADS)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"bench_gemm: the child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2048,2048,2048", help="M,K,N of the product (default 2048,2048,2048)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed calls per process, for about this long")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        shape = tuple(int(v) for v in args.size.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        parser.error(f"--size takes three positive integers M,K,N, got {args.size!r}")
    if args.pairs < 1 or not args.seconds > 0:
        parser.error("--pairs must be at least 1 and --seconds above 0")
    if args.child:
        child(*shape, args.seconds)
        return
    setting = os.environ.get("OPENBLAS_CORETYPE")
    sides = {"environment": False, "own choice": True}
    print(f"float32 ({shape[0]}, {shape[1]}) @ ({shape[1]}, {shape[2]}), {THREADS} threads, {args.pairs} alternating "
          f"pairs; OPENBLAS_CORETYPE={setting!r} in this environment", flush=True)
    runs = {name: [] for name in sides}
    for i in range(args.pairs):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        for name in order:
            runs[name].append(run_child(shape, args.seconds, sides[name]))
        print("  pair " + f"{i + 1}/{args.pairs}: " + ", ".join(
            f"{name} ({runs[name][-1]['kernels']}) {runs[name][-1]['median_gflops']:.0f} GFLOP/s" for name in sides),
            flush=True)
    report = {"shape": shape, "threads": THREADS, "pairs": args.pairs, "openblas_coretype": setting}
    for name, rows in runs.items():
        values = [r["median_gflops"] for r in rows]
        report[name] = {"kernels": sorted({str(r["kernels"]) for r in rows}),
                        "gflops": {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
                                   "max": round(max(values), 1)},
                        "best_call_gflops": round(max(r["best_gflops"] for r in rows), 1)}
        g = report[name]["gflops"]
        print(f"{name:12} {'/'.join(report[name]['kernels'])}: {g['median']:.0f} GFLOP/s "
              f"({g['min']:.0f}-{g['max']:.0f}, the median call of each process)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

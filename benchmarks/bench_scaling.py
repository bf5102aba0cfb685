"""Data-parallel scaling: training tokens/s with 1 and 2 ranks (MPI), one thread each.

    python benchmarks/bench_scaling.py                       # the default run's model: baby, GPT-2 BPE, B 12, T 128
    python benchmarks/bench_scaling.py --ranks 1,2,4 --steps 20
    python benchmarks/bench_scaling.py --preset tiny --tokenizer char --steps 2    # a smoke run

Each measurement is a real ``tinygpt train`` run (the same Trainer, all-reduce included)
started as ``mpiexec -n N python bench_scaling.py --worker ...`` (N = 1: plain python).
Every rank uses one thread: OMP/OPENBLAS/MKL_NUM_THREADS=1, and each rank pins itself to
one core, so that tinygpt's own row-splitting thread pool (which sizes itself by the
cores the process may use) has one worker too. Every rank keeps the per-rank batch
``--batch-size``, so N ranks process N times the tokens per step (weak scaling).

tokens/s = N * B * T / (median wall time of a training step after ``--warmup`` steps),
read from the run's log (forward, backward, all-reduce, clipping, AdamW; evaluations are
not in it). Scaling efficiency with N ranks = tokens/s(N) / (N * tokens/s(1)).
Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def find_mpiexec():
    """The mpiexec installed beside this Python (pip install "tinygpt[mpi]"), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


# ----------------------------------------------------------------------------- one rank's side
def worker(args):
    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[rank % len(cores)]})   # one core: tinygpt's thread pool gets one worker
    sys.path.insert(0, str(ROOT))
    from autograd import backend
    from tinygpt import TrainConfig
    from tinygpt.plots import read_log
    from tinygpt.train import Trainer

    cfg = TrainConfig(data=args.data, out=args.out, preset=args.preset, tokenizer=args.tokenizer,
                      batch_size=args.batch_size, max_iters=args.warmup + args.steps, warmup_iters=1,
                      eval_interval=10**9, eval_iters=1, sample_tokens=0, progress=False, seed=1337)
    summary = Trainer(cfg, out_stream=lambda *_: None).run()
    if summary["rank"] != 0:
        return
    records = [r for r in read_log(Path(args.out) / "log.jsonl") if r["kind"] == "train"]
    times = [r["dt"] for r in records[args.warmup:]]
    import tinygpt
    model = tinygpt.GPT2.load(args.out)
    tokens = summary["world_size"] * args.batch_size * model.config.block_size
    print(json.dumps({"ranks": summary["world_size"], "threads_per_rank": backend.host_threads(),
                      "ms_per_step": 1000 * statistics.median(times), "tokens_per_step": tokens,
                      "tokens_per_s": tokens / statistics.median(times),
                      "parameters": model.num_parameters()}), flush=True)


# ----------------------------------------------------------------------------- the driver
def measure(ranks, args):
    out = tempfile.mkdtemp(prefix=f"bench-scaling-{ranks}-")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", out,
           "--preset", args.preset, "--tokenizer", args.tokenizer, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.data:
        cmd += ["--data", args.data]
    if ranks > 1:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            sys.exit("bench_scaling: no mpiexec: pip install -e '.[mpi]' (mpi4py and MPICH)")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE")}
    env.update(ONE_THREAD)
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if result.returncode != 0:
        sys.exit(f"bench_scaling: the {ranks}-rank run failed:\n{result.stderr[-3000:]}")
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts; the first is the baseline")
    parser.add_argument("--preset", default="baby")
    parser.add_argument("--tokenizer", default="gpt2", choices=["gpt2", "char"])
    parser.add_argument("--data", default=None, help="corpus (default: the bundled Shakespeare)")
    parser.add_argument("--batch-size", type=int, default=12, help="sequences per rank per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    counts = [int(n) for n in args.ranks.split(",")]
    rows = [measure(n, args) for n in counts]
    base = rows[0]["tokens_per_s"] / rows[0]["ranks"]
    print(f"{args.preset} ({rows[0]['parameters']:,} parameters), {args.tokenizer} tokens, "
          f"batch {args.batch_size} per rank, 1 thread per rank, median of {args.steps} steps")
    print("| ranks | ms/step | tokens/step | tokens/s | scaling efficiency |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        row["efficiency"] = row["tokens_per_s"] / (row["ranks"] * base)
        print(f"| {row['ranks']} | {row['ms_per_step']:.0f} | {row['tokens_per_step']} | {row['tokens_per_s']:,.0f} "
              f"| {100 * row['efficiency']:.0f}% |")
    print(json.dumps({"preset": args.preset, "tokenizer": args.tokenizer, "batch_size": args.batch_size,
                      "steps": args.steps, "cpu_cores": os.cpu_count(), "runs": rows}))


if __name__ == "__main__":
    main()

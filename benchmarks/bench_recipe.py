"""A whole training recipe, tinygpt against PyTorch: wall time of each process and the
best validation loss it reached.

    python benchmarks/bench_recipe.py                                  # README's char recipe, three pairs
    python benchmarks/bench_recipe.py --pairs 5                        # five pairs, alternating the order
    python benchmarks/bench_recipe.py --max-iters 20 --eval-interval 10   # a smoke run

The recipe is README's character-level Shakespeare run:

    tinygpt train --tokenizer char --preset baby --block-size 64 --batch-size 12 --max-iters 2000 \\
      --lr 1e-3 --min-lr 1e-4 --warmup-iters 100 --beta2 0.99 --eval-interval 250 --out ...

and the same run in plain PyTorch, benchmarks/torch_trainer.py (same corpus, vocabulary,
split, batches, schedule, optimizer, evaluation batches, checkpoints at each evaluation
and samples; its docstring lists what differs). Each is started as a whole process
(``python -m tinygpt train ...`` and ``python benchmarks/torch_trainer.py ...``) and timed
from start to exit: interpreter start-up, imports, tokenizing, building the model, the
steps, the evaluations, the samples and the checkpoints, everything a user waits for.
Each tinygpt run gets a token cache of its own, empty (TINYGPT_CACHE), so that it
tokenizes the corpus as the PyTorch trainer does at every run. Before the timed pairs,
each trainer makes one short untimed run (2 steps): numba compiles tinygpt's CPU loops
into its on-disk cache there, as on a user's first run (README gives that time), and
the operating system's file cache holds both frameworks' libraries alike. The two run
back to back, one at a time; the order alternates (tinygpt first in pair 1, PyTorch
first in pair 2, ...). Both at the same thread count
(--threads, 2 by default): OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS for the children, torch's
set_num_threads in the PyTorch trainer, and with fewer threads than cores both are
pinned to the same first cores (see threads.py).

Read back: tinygpt's best val loss from its run folder (the eval lines of log.jsonl,
checked against latest/state.json), the PyTorch trainer's from the JSON line it prints.
Printed: wall seconds, best val loss and peak resident memory of every run (the process's
high-water mark, from the kernel when it exits: interpreter and libraries included), the
medians, and the ratios tinygpt / PyTorch of wall time and of peak memory (the median of the
per-pair ratios, with their min-max); then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# README's recipe, the flags both trainers take alike
BABY = {"n_layer": 4, "n_head": 4, "n_embd": 128}   # tinygpt's "baby" preset (tinygpt/config.py)
RECIPE = ["--block-size", "64", "--batch-size", "12", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-iters", "100",
          "--beta2", "0.99"]


def tinygpt_command(out, max_iters, eval_interval):
    return [sys.executable, "-m", "tinygpt", "train", "--tokenizer", "char", "--preset", "baby", *RECIPE,
            "--max-iters", str(max_iters), "--eval-interval", str(eval_interval), "--out", str(out)]


def torch_command(out, max_iters, eval_interval, threads):
    shape = [f"--{k.replace('_', '-')}={v}" for k, v in BABY.items()]
    return [sys.executable, str(HERE / "torch_trainer.py"), *shape, *RECIPE, "--max-iters", str(max_iters),
            "--eval-interval", str(eval_interval), "--out", str(out), "--threads", str(threads)]


def tinygpt_best_val(out: Path) -> float:
    """The lowest val loss of the run's evaluations (log.jsonl), checked against state.json."""
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    vals = [r["val_loss"] for r in evals if r.get("kind") == "eval"]
    if not vals:
        raise RuntimeError(f"no evaluation in {out / 'log.jsonl'}")
    best = min(vals)
    state = out / "latest" / "state.json"
    if state.exists():
        saved = json.loads(state.read_text())["best_val_loss"]
        if not math.isclose(saved, best, rel_tol=1e-6):
            raise RuntimeError(f"{out}: log.jsonl's best val loss {best} differs from state.json's {saved}")
    return best


def run_process(label, command, log_path, env=None):
    """Run ``command`` to its end; (wall seconds, stdout, peak resident bytes). Its output is
    kept in ``log_path``. The peak is the process's own high-water mark of resident memory,
    as the kernel reports it when the process is reaped (wait4's ru_maxrss): everything the
    user's machine had to hold for it, interpreter and libraries included."""
    stdout_path, stderr_path = log_path.with_suffix(".stdout"), log_path.with_suffix(".stderr")
    t0 = time.perf_counter()
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, text=True,
                                   env=dict(os.environ) if env is None else env)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)   # bytes on macOS, KiB on Linux
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    log_path.write_text(stdout + "\n--- stderr ---\n" + stderr)
    stdout_path.unlink()
    stderr_path.unlink()
    if process.returncode != 0:
        raise RuntimeError(f"{label} failed (exit {process.returncode}); its output is in {log_path}:\n"
                           f"{stderr[-3000:]}")
    return seconds, stdout, peak


def run_one(framework, folder: Path, args, max_iters=None, eval_interval=None):
    out = folder / "run"
    max_iters, eval_interval = max_iters or args.max_iters, eval_interval or args.eval_interval
    if framework == "tinygpt":
        env = dict(os.environ, TINYGPT_CACHE=str(folder / "token-cache"))   # empty: tokenizing is timed
        seconds, _, peak = run_process("tinygpt train", tinygpt_command(out, max_iters, eval_interval),
                                       folder / "output.txt", env=env)
        best = tinygpt_best_val(out)
    else:
        seconds, stdout, peak = run_process("torch_trainer.py", torch_command(out, max_iters, eval_interval,
                                                                              args.threads), folder / "output.txt")
        best = json.loads(stdout.strip().splitlines()[-1])["best_val_loss"]
    return {"wall_s": round(seconds, 2), "best_val_loss": round(best, 4), "peak_mb": round(peak / 2**20, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="runs of each (alternating which goes first; default 3)")
    parser.add_argument("--max-iters", type=int, default=2000, help="optimizer steps (the recipe: 2000)")
    parser.add_argument("--eval-interval", type=int, default=250, help="steps between evaluations (the recipe: 250)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--out-dir", default=None,
                        help="keep the run folders and outputs here (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.pairs < 1 or args.max_iters < 1 or args.eval_interval < 1:
        parser.error("--pairs, --max-iters and --eval-interval must be at least 1")
    import threads   # the thread variables and the pinning, inherited by both children
    threads.configure(args.threads)

    root = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    runs = {"tinygpt": [], "torch": []}
    try:
        for fw in ("tinygpt", "torch"):      # untimed: numba's cache, the OS's file cache
            folder = root / f"warm-up-{fw}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            print(f"warm-up: {fw}, 2 steps, untimed ...", flush=True)
            run_one(fw, folder, args, max_iters=2, eval_interval=1)
        for pair in range(args.pairs):
            order = ("tinygpt", "torch") if pair % 2 == 0 else ("torch", "tinygpt")
            for fw in order:
                folder = root / f"pair{pair + 1}-{fw}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                print(f"pair {pair + 1}/{args.pairs}: {fw} ...", flush=True)
                result = run_one(fw, folder, args)
                runs[fw].append(result)
                print(f"  {fw}: {result['wall_s']:.1f} s, best val loss {result['best_val_loss']:.4f}, "
                      f"peak {result['peak_mb']:.0f} MB", flush=True)
    finally:
        if not args.out_dir:
            shutil.rmtree(root, ignore_errors=True)

    ratios = [ours["wall_s"] / theirs["wall_s"] for ours, theirs in zip(runs["tinygpt"], runs["torch"])]
    memory = [ours["peak_mb"] / theirs["peak_mb"] for ours, theirs in zip(runs["tinygpt"], runs["torch"])]
    report = {"recipe": "shakespeare-char", "max_iters": args.max_iters, "eval_interval": args.eval_interval,
              "pairs": args.pairs, "threads": args.threads,
              "time_ratio": round(statistics.median(ratios), 3),
              "time_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
              "peak_memory_ratio": round(statistics.median(memory), 3),
              "peak_memory_ratio_range": [round(min(memory), 3), round(max(memory), 3)]}
    for fw, results in runs.items():
        report[fw] = {"wall_s_median": round(statistics.median(r["wall_s"] for r in results), 2),
                      "best_val_loss_median": round(statistics.median(r["best_val_loss"] for r in results), 4),
                      "peak_mb_median": round(statistics.median(r["peak_mb"] for r in results), 1),
                      "runs": results}
    print(f"\n{'':8} {'wall s (median)':>16} {'best val loss (median)':>23} {'peak MB (median)':>17}")
    for fw in runs:
        print(f"{fw:8} {report[fw]['wall_s_median']:>16.1f} {report[fw]['best_val_loss_median']:>23.4f} "
              f"{report[fw]['peak_mb_median']:>17.0f}")
    low, high = report["time_ratio_range"]
    print(f"wall time tinygpt / PyTorch: {report['time_ratio']:.2f} ({low:.2f}-{high:.2f} over {args.pairs} "
          f"pair{'s' if args.pairs > 1 else ''}), {args.threads} threads each")
    low, high = report["peak_memory_ratio_range"]
    print(f"peak resident memory tinygpt / PyTorch: {report['peak_memory_ratio']:.2f} ({low:.2f}-{high:.2f})\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""One training step of tinygpt at one revision of this repository against another, each
in its own process, alternating: how much faster (or slower) a change made the engine.

    python benchmarks/bench_revisions.py --base 16a28ea                # vs the working tree
    python benchmarks/bench_revisions.py --base 16a28ea --new HEAD --pairs 7
    python benchmarks/bench_revisions.py --base HEAD~3 --shape char

The base revision (and --new, if given; else this working tree) is extracted with
``git archive`` into a temporary folder. A child process puts that tree first on its
import path, imports autograd before NumPy (as the ``tinygpt`` command does), builds the
model of the shape with seeded weights, runs --warmup steps and times --steps training
steps (forward, backward, clip_grad_norm, AdamW on seeded random batches), and prints
its milliseconds per step. The parent runs base, new, then new, base, ... (the order
turns each pair, so that neither tree always runs first) for --pairs pairs and prints
each pair, then the median and min-max of the speed-up, base ms / new ms
(above 1: the new tree is faster), and of each tree's ms/step; the last line, as JSON.

With ``--whole-run``, each process is instead a whole ``python -m tinygpt train`` of that
tree with its defaults (the default run: 300 steps, evaluations at 0, 100, 200 and 300),
into a temporary run folder: what a user of the command waits for. Each tree first makes
one untimed two-step run, so that numba's compiled loops are cached for both alike. Read
back from each run's log.jsonl: its time from start to the last evaluation, and the median
of its steps' times (``dt``, a step from batch to update); the time outside its steps
(the first minus the sum of the steps: evaluations, samples, checkpoints, logging); and
the process's wall time.
Printed per pair and as median (min-max): the speed-up in steps per second by the run's own
time, by the median step and by the wall time.

    python benchmarks/bench_revisions.py --base 16a28ea --whole-run --pairs 3

``--base-env``/``--new-env`` set variables in one side's processes (``NAME=VALUE``; an empty
VALUE removes the variable): with the same revision on both sides, a setting against
another, e.g. the compiled loops and malloc's tuning switched off against on (the thread
counts are not settings for these flags: a step child sets them again from --threads; and
OPENBLAS_THREAD_TIMEOUT removed is set back to 20 by threads.py and by autograd, so give
it a value, 28 being OpenBLAS's default),

    python benchmarks/bench_revisions.py --base HEAD --new HEAD --shape char \
        --base-env "TINYGPT_MALLOC=0 TINYGPT_NUMBA=0"

Shapes: ``default`` is ``tinygpt train`` with its defaults (GPT-2's BPE, vocabulary
50257, 4 layers, 4 heads, 128 wide, context 128, batch 12); ``char`` is the README's
character-level recipe (vocabulary 65, context 64). Both trees get the same thread
count (threads.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads import THREADS  # noqa: E402  (first: it fixes the thread count of every library)

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHAPES = {  # vocabulary, context; every shape: 4 layers, 4 heads, 128 wide, batch 12
    "default": (50257, 128),
    "char": (65, 64),
}


def child(root: str, shape: str, warmup: int, steps: int) -> None:
    """In a fresh process: the step time of the tree at ``root``, as JSON."""
    sys.path.insert(0, root)
    import autograd  # noqa: F401  (before NumPy, as the tinygpt command)
    import numpy as np
    from autograd import backend, optim
    from tinygpt import GPT2, GPTConfig

    vocab, context = SHAPES[shape]
    backend.seed(0)
    model = GPT2(GPTConfig(vocab_size=vocab, block_size=context, n_layer=4, n_head=4, n_embd=128))
    opt = optim.AdamW(optim.decay_groups(model.named_parameters(), 0.1), lr=1e-3)
    rng = np.random.default_rng(0)

    def step():
        batch = rng.integers(0, vocab, (12, context + 1))
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - start) / steps * 1e3
    print(json.dumps({"root": root, "ms_per_step": ms, "engine": str(Path(autograd.__file__).parent)}))


def extract(revision: str, into: Path) -> Path:
    """The files of ``revision`` (git archive) under ``into``; a clear error if git cannot."""
    result = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision], capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"bench_revisions: git cannot read revision {revision!r}: "
                         f"{result.stderr.decode(errors='replace').strip()}")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        if hasattr(tarfile, "data_filter"):    # Python 3.12, and 3.10.12 / 3.11.4 on
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)
    return into


def parse_env(text: str, flag: str) -> dict:
    """``"A=1 B=2 C="`` -> {"A": "1", "B": "2", "C": None}: variables set in one side's
    processes, an empty value removing the variable."""
    changes = {}
    for item in shlex.split(text or ""):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"bench_revisions: {flag} takes NAME=VALUE items (an empty VALUE removes NAME), "
                             f"got {item!r}")
        changes[name] = value or None
    return changes


def side_env(changes: dict, base_env=None) -> dict:
    """This process's environment (the thread variables of threads.py) with ``changes`` made."""
    env = dict(os.environ if base_env is None else base_env)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_child(root: Path, args, changes=None) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(root), "--shape", args.shape,
                          "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(THREADS)],
                         capture_output=True, text=True, env=side_env(changes or {}))
    if out.returncode != 0:
        raise SystemExit(f"bench_revisions: the step of {root} failed:\n{out.stderr[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(report["engine"]).resolve() != (root / "autograd").resolve():
        raise SystemExit(f"bench_revisions: the child imported {report['engine']}, not {root}/autograd")
    return report["ms_per_step"]


def run_whole(root: Path, out: Path, extra=(), changes=None) -> dict:
    """One ``python -m tinygpt train`` of the tree at ``root`` into ``out``; its times.
    The tree comes first on the import path twice over: as the working folder (``-m`` puts
    it first) and as PYTHONPATH."""
    env = dict(side_env(changes or {}), PYTHONPATH=str(root))
    command = [sys.executable, "-m", "tinygpt", "train", "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench_revisions: tinygpt train of {root} failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [row["dt"] for row in rows if row.get("kind") == "train"]
    evals = [row for row in rows if row.get("kind") == "eval"]
    if not steps or not evals:
        raise SystemExit(f"bench_revisions: {out}/log.jsonl has no steps or no evaluation")
    # outside_s: the run's time to its last evaluation not spent in its steps: evaluations,
    # samples and checkpoints (but the last evaluation's own, which come after its time), logging
    return {"wall_s": wall, "run_s": evals[-1]["time"], "steps": len(steps),
            "step_ms": statistics.median(steps) * 1e3, "outside_s": evals[-1]["time"] - sum(steps),
            "val_loss": evals[-1]["val_loss"]}


def whole_runs(base: Path, new: Path, args, tmp: Path) -> None:
    print(f"whole runs of tinygpt train {args.train_args or '(its defaults)'}, {THREADS} threads: {sides(args)}, "
          f"{args.pairs} alternating pairs", flush=True)
    for name, root in (("base", base), ("new", new)):
        run_whole(root, tmp / f"warm-{name}", ["--max-iters", "2", "--eval-iters", "1"], args.env[name])
    runs = {"base": [], "new": []}
    for i in range(args.pairs):
        for name, root in pair_order(i, base, new):
            runs[name].append(run_whole(root, tmp / f"{name}-{i}", shlex.split(args.train_args), args.env[name]))
        b, n = runs["base"][-1], runs["new"][-1]
        print(f"  pair {i + 1}/{args.pairs}: base {b['steps']} steps in {b['run_s']:.1f} s (median step "
              f"{b['step_ms']:.1f} ms, {b['outside_s']:.1f} s outside the steps, wall {b['wall_s']:.1f} s, val "
              f"{b['val_loss']:.4f}); new {n['run_s']:.1f} s ({n['step_ms']:.1f} ms, {n['outside_s']:.1f} s, wall "
              f"{n['wall_s']:.1f} s, val {n['val_loss']:.4f}); speed-up "
              f"{b['run_s'] / n['run_s']:.3f} by the run, {b['step_ms'] / n['step_ms']:.3f} by the median step",
              flush=True)
    report = {"mode": "whole-run", "base": args.base, "new": args.new or "working tree", "threads": THREADS,
              "pairs": args.pairs, "train_args": args.train_args, "base_env": args.base_env, "new_env": args.new_env}
    for key, digits in (("run_s", 1), ("step_ms", 1), ("outside_s", 1), ("wall_s", 1), ("val_loss", 4)):
        report[key] = {name: _spread([r[key] for r in runs[name]], digits) for name in runs}
    for key in ("run_s", "step_ms", "wall_s"):
        ratios = [b[key] / n[key] for b, n in zip(runs["base"], runs["new"])]
        report[f"speedup_by_{key}"] = _spread(ratios, 3)
        report[f"speedup_by_{key}_per_pair"] = [round(x, 3) for x in ratios]
    print(f"speed-up in steps/s (base / new): by the run's own time {_text(report['speedup_by_run_s'], 3)}; "
          f"by the median step {_text(report['speedup_by_step_ms'], 3)}; by the wall time "
          f"{_text(report['speedup_by_wall_s'], 3)}")
    print(json.dumps(report))


def sides(args) -> str:
    """"16a28ea against the working tree", with each side's --base-env/--new-env."""
    def side(name, revision):
        extra = getattr(args, f"{name}_env")
        return revision + (f" [{extra}]" if extra else "")
    return f"{side('base', args.base)} against {side('new', args.new or 'the working tree')}"


def pair_order(i, base, new):
    """Pair i's (name, tree) in the order they run: base first in pairs 1, 3, ... (i = 0, 2, ...),
    new first in pairs 2, 4, ..., so that neither always runs first."""
    order = (("base", base), ("new", new))
    return order if i % 2 == 0 else order[::-1]


def _spread(values, digits):
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def _text(spread, digits):
    return f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}-{spread['max']:.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the revision to compare against (a commit, tag or branch)")
    parser.add_argument("--new", help="the revision measured against it (default: this working tree)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="default")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per process (default 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--whole-run", action="store_true",
                        help="time whole default `tinygpt train` runs instead of steps (--shape, --steps and "
                             "--warmup do not apply)")
    parser.add_argument("--train-args", default="",
                        help="with --whole-run: flags added to each timed `tinygpt train` (default: none, the "
                             "default run), e.g. \"--max-iters 50\"")
    parser.add_argument("--base-env", default="",
                        help="variables for the base's processes, \"NAME=VALUE ...\" (an empty VALUE removes "
                             "NAME); with --base and --new the same revision, this compares settings, e.g. "
                             "--base HEAD --new HEAD --base-env \"TINYGPT_NUMBA=0\"")
    parser.add_argument("--new-env", default="", help="the same for the new tree's processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.env = {"base": parse_env(args.base_env, "--base-env"), "new": parse_env(args.new_env, "--new-env")}
    if args.child:
        child(args.child, args.shape, args.warmup, args.steps)
        return
    if not args.base:
        parser.error("--base REVISION is needed (e.g. --base HEAD~1)")
    if args.pairs < 1 or args.steps < 1:
        parser.error("--pairs and --steps must be at least 1")
    with tempfile.TemporaryDirectory(prefix="tinygpt-revisions-") as tmp:
        base = extract(args.base, Path(tmp) / "base")
        new = extract(args.new, Path(tmp) / "new") if args.new else REPO
        if args.whole_run:
            whole_runs(base, new, args, Path(tmp))
            return
        print(f"{args.shape} step, {args.steps} timed steps per process, {THREADS} threads: {sides(args)}, "
              f"{args.pairs} alternating pairs", flush=True)
        base_ms, new_ms, speedups = [], [], []
        for i in range(args.pairs):
            ms = {name: run_child(root, args, args.env[name]) for name, root in pair_order(i, base, new)}
            base_ms.append(ms["base"])
            new_ms.append(ms["new"])
            speedups.append(base_ms[-1] / new_ms[-1])
            print(f"  pair {i + 1}/{args.pairs}: base {base_ms[-1]:.1f} ms, new {new_ms[-1]:.1f} ms, "
                  f"speed-up {speedups[-1]:.3f}", flush=True)
    report = {"shape": args.shape, "base": args.base, "new": args.new or "working tree", "threads": THREADS,
              "pairs": args.pairs, "steps": args.steps, "base_env": args.base_env, "new_env": args.new_env,
              "base_ms": _spread(base_ms, 1), "new_ms": _spread(new_ms, 1),
              "speedup": _spread(speedups, 3), "speedup_per_pair": [round(x, 3) for x in speedups]}
    print(f"base ms/step {_text(report['base_ms'], 1)}; new ms/step {_text(report['new_ms'], 1)}; "
          f"speed-up (base / new) {_text(report['speedup'], 3)}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

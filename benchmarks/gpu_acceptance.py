"""The whole GPU acceptance of tinygpt in one command, ending in one table.

    python benchmarks/gpu_acceptance.py            # about 3 minutes on an H200

Each part runs in its own process, with a time limit, on the CUDA device:

  tests    tests/autograd/test_cuda_kernels.py: every CUDA kernel against its NumPy
           reference in float32 and float64 on awkward shapes, the engine's kernels through
           their CUDA bodies, and one training step of a tiny GPT-2 (every kernel launched)
           equal to the NumPy step in float64; tests/autograd/test_cuda.py: each kernel
           against NumPy in float32 (1e-5), gradcheck in float64 on the GPU, the whole model,
           50 training steps following the CPU loss curve
  lessons  every lesson in demos/ with --device cuda --quick (run side by side)
  train    tinygpt train --device cuda, 50 steps: the default run, then the gpt2 preset
  bench    benchmarks/bench_train.py --device cuda --configs gpt2: GPT-2 124M, batch 8,
           context 1024, TF32 on both sides, against Hugging Face GPT-2 (eager and SDPA),
           each framework in its own process
  attention  benchmarks/bench_attention.py: one layer's attention (B 8, 12 heads, T 1024),
           the fused-softmax kernel against the flash kernels: time, memory, agreement
  profile  tinygpt train --profile 5 of GPT-2 124M at batch 8, context 1024 (TF32): where
           a step's time goes, kernel by kernel (every timing waits for the device)
  launch   benchmarks/bench_launch.py: what one kernel launch costs the host, numba-cuda's
           (AdamW's, an empty one) against one of CuPy's

The exit status is 0 only when every part passes; every part's log is kept and
its folder is printed. Without CuPy or a CUDA device it says so in one line and exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, log: Path, timeout: float, env=None):
    """(passed, seconds, output) of one command, its output also written to ``log``."""
    start = time.perf_counter()
    if env is None:   # this checkout's packages first, installed or not
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        text, ok = out.stdout + out.stderr, out.returncode == 0
    except subprocess.TimeoutExpired as exc:
        text = f"{exc.stdout or ''}{exc.stderr or ''}\nstopped after {timeout:.0f} s"
        text, ok = text if isinstance(text, str) else str(text), False
    log.write_text(text, encoding="utf-8")
    return ok, time.perf_counter() - start, text


def part_tests(logs: Path):
    ok, sec, text = run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                         "tests/autograd/test_cuda_kernels.py", "tests/autograd/test_cuda.py"],
                        logs / "tests.log", 300)
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    skipped = "skipped" in (summary[-1] if summary else "")
    return ok and not skipped, sec, summary[-1].strip("= ") if summary else "no summary (see the log)"


def part_lessons(logs: Path):
    lessons = sorted(ROOT.glob("demos/0*.py"))

    def one(path):
        return path.stem, run([sys.executable, str(path), "--device", "cuda", "--quick",
                               "--out", str(logs / path.stem)], logs / f"{path.stem}.log", 240)
    start = time.perf_counter()
    with ThreadPoolExecutor(len(lessons)) as pool:
        results = list(pool.map(one, lessons))
    failed = [name for name, (ok, _, _) in results if not ok]
    caught = any("caught: the gradient check rejected" in text for _, (_, _, text) in results)
    figure = f"{len(results) - len(failed)}/{len(results)} ran" + (f"; failed: {', '.join(failed)}" if failed else "")
    if not caught:
        figure += "; lesson 02 did not catch its broken backward"
    return not failed and caught, time.perf_counter() - start, figure


def part_train(logs: Path, preset: str | None):
    name = preset or "default"
    cmd = [sys.executable, "-m", "tinygpt", "train", "--device", "cuda", "--max-iters", "50", "--no-progress",
           "--out", str(logs / f"run-{name}")]
    if preset:
        cmd += ["--preset", preset, "--eval-interval", "50", "--eval-iters", "2"]
    ok, sec, text = run(cmd, logs / f"train-{name}.log", 300)
    done = re.search(r"done: 50 steps in (\S+) s, val loss ([0-9.]+)", text)
    return ok and done is not None, sec, (f"50 steps in {done.group(1)} s, val loss {done.group(2)}" if done
                                          else "did not finish (see the log)")


def part_bench(logs: Path):
    ok, sec, text = run([sys.executable, "benchmarks/bench_train.py", "--device", "cuda", "--configs", "gpt2",
                         "--rounds", "2", "--steps", "10", "--no-memory"], logs / "bench.log", 400)
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    if not (ok and rows):
        return False, sec, "no result (see the log)"
    r = rows[-1]
    return True, sec, (f"tinygpt {r['tinygpt']['ms_median']:.0f} ms/step; time ratio vs HF eager "
                       f"{r['time_ratio_vs_torch-eager']:.2f}, vs HF SDPA {r['time_ratio_vs_torch-sdpa']:.2f}")


def part_attention(logs: Path):
    ok, sec, text = run([sys.executable, "benchmarks/bench_attention.py"], logs / "attention.log", 300)
    rows = {name: line for line in text.splitlines() for name in ("fused softmax", "flash (no P)", "largest difference")
            if line.strip().startswith(name)}
    if not (ok and len(rows) == 3):
        return False, sec, "no result (see the log)"
    worst = float(rows["largest difference"].split()[-1])
    squeeze = " ".join(rows["fused softmax"].split()) + "; " + " ".join(rows["flash (no P)"].split())
    return worst <= 1e-4, sec, f"T 1024: {squeeze}; difference {worst:.1e}"


PROFILE_ROWS = (("CausalAttention", "attention"), ("LayerNorm", "layer norm"), ("GELU", "GELU"),
                ("AdamW (kernels/adamw.py)", "AdamW"), ("clip_grad_norm", "clipping"))


def profile_figure(text: str) -> str | None:
    """The profile table's step and the kernels of PROFILE_ROWS as one line, from the
    printed table of ``tinygpt train --profile`` (None without the table's last row)."""
    ms = {}
    for line in text.splitlines():
        match = re.match(r"\s+(\S.*?)\s{2,}.*?([\d.]+)\s+[\d.]+%$", line)   # name ... ms/step share%
        if match:
            ms[match.group(1)] = float(match.group(2))
    if "one step" not in ms:
        return None
    parts = [f"{short} {ms[name]:.1f}" for name, short in PROFILE_ROWS if name in ms]
    return f"GPT-2 step {ms['one step']:.1f} ms profiled; " + ", ".join(parts) + " ms"


def part_profile(logs: Path):
    env = dict(os.environ, CUPY_TF32="1",   # TF32 matmuls, as in the bench part
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    ok, sec, text = run([sys.executable, "-m", "tinygpt", "train", "--device", "cuda", "--preset", "gpt2",
                         "--block-size", "1024", "--batch-size", "8", "--profile", "5",
                         "--out", str(logs / "profile-run")], logs / "profile.log", 300, env=env)
    figure = profile_figure(text)
    return ok and figure is not None, sec, figure or "no table (see the log)"


def launch_figure(text: str) -> str | None:
    """bench_launch.py's rows as one line of queued microseconds per call (None without
    its three rows)."""
    rows = [re.match(r"(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)$", line) for line in text.splitlines()]
    rows = [(m.group(1).split(" (")[0].split(",")[0], float(m.group(2))) for m in rows if m]
    if len(rows) != 3:
        return None
    return "us per launch, queued: " + "; ".join(f"{name} {us:.1f}" for name, us in rows)


def part_launch(logs: Path):
    ok, sec, text = run([sys.executable, "benchmarks/bench_launch.py"], logs / "launch.log", 120)
    figure = launch_figure(text)
    return ok and figure is not None, sec, figure or "no result (see the log)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to leave out: tests,lessons,train,bench,attention,profile,launch")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from autograd import backend
    try:
        backend.use_backend("cupy")
        device = backend.device_info()
    except backend.BackendUnavailable as exc:
        sys.exit(f"gpu_acceptance: no CUDA device to accept: {exc}")
    finally:
        backend.use_backend("numpy")
    logs = Path(tempfile.mkdtemp(prefix="tinygpt-gpu-acceptance-"))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    parts = [("tests", lambda: part_tests(logs)), ("lessons", lambda: part_lessons(logs)),
             ("train", lambda: part_train(logs, None)), ("train gpt2", lambda: part_train(logs, "gpt2")),
             ("bench", lambda: part_bench(logs)), ("attention", lambda: part_attention(logs)),
             ("profile", lambda: part_profile(logs)), ("launch", lambda: part_launch(logs))]
    print(f"GPU acceptance on {device}; logs in {logs}", flush=True)
    rows = []
    for name, fn in parts:
        if name.split()[0] in skip:
            continue
        print(f"  {name} ...", flush=True)
        rows.append((name, *fn()))
    print(f"\n{'part':12} {'result':6} {'seconds':>8}  figure")
    for name, ok, sec, figure in rows:
        print(f"{name:12} {'pass' if ok else 'FAIL':6} {sec:8.0f}  {figure}")
    failed = [name for name, ok, _, _ in rows if not ok]
    print(f"\n{'every part passed' if not failed else 'FAILED: ' + ', '.join(failed)} "
          f"({sum(r[2] for r in rows):.0f} s); logs in {logs}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

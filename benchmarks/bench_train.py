"""A full training step of tinygpt against PyTorch, side by side on this machine.

    python benchmarks/bench_train.py                        # baby-char, small, mini
    python benchmarks/bench_train.py --configs small --steps 20 --rounds 7

For each configuration the same weights and the same batch go through
  * tinygpt: forward, backward, clip_grad_norm, AdamW;
  * Hugging Face GPT2LMHeadModel in PyTorch eager mode, with "eager" attention and with
    "sdpa" attention (torch.nn.functional.scaled_dot_product_attention): the same step;
float32, dropout 0, the same thread count for all (every core, unless --threads).

Process isolation: every timing runs in a fresh child process that holds one framework
only (the tinygpt child never imports torch). The child builds its model from the same
seeded weights and batch, runs --warmup steps, times --steps steps and prints their
times as JSON. The parent starts the children one after another, alternating, for
--rounds rounds, so that a slow moment of the machine hits every framework alike; the
order turns by one each round (tinygpt, eager, sdpa; then eager, sdpa, tinygpt; ...), so
that no framework always runs first. The PyTorch
children run with TINYGPT_MALLOC=0: they import autograd (for the shared weights), whose
import would otherwise tune glibc's malloc for the whole process (autograd/backend.py),
and PyTorch is timed as it runs for its users. The Hugging Face model is called with
use_cache=False, as a training step would be (its default builds a KV cache it never
uses). Why not alternate inside one
process: after a step, a framework's BLAS/OpenMP threads keep spinning for a while and
take the cores from the other framework's next step (on 2 cores the same SDPA step
measured 52 ms in one order and 143 ms in another, 55 ms in its own process).

Printed per configuration: ms per step (the median over rounds of each child's median
step, and the min-max over rounds), tokens/s, the peak memory a training step adds
(measured in a separate process per framework, after a warm-up step: the kernel's
resident-memory high-water mark during one step minus the resident memory before it;
see common.step_peak_bytes), the model FLOP utilisation against the float32 matmul peak
measured at the start of this same run (in a child process of its own as well: the
parent process only starts children and computes nothing), and for each PyTorch variant the ratio
tinygpt / PyTorch: the median over rounds of the per-round ratios, with their min-max.
Then one JSON line per configuration.

On a GPU (--device cuda; not run on the CPU-only development machine): both frameworks
on the device, a synchronize at the end of every step, TF32 matmuls allowed on both
sides (torch.backends.cuda.matmul.allow_tf32 in the torch children, CUPY_TF32=1 for
tinygpt's CuPy); the matmul peak is then CuPy's float32 rate, and peak memory (host
resident memory) is skipped.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads import THREADS  # noqa: E402  (first: it fixes the thread count of numpy and torch)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from common import (TRAIN_CONFIGS, flops_per_step, hf_model, measure_matmul_peak, step_peak_bytes,  # noqa: E402
                    tiny_gpt)

from autograd import backend, optim  # noqa: E402

FRAMEWORKS = ("tinygpt", "torch-eager", "torch-sdpa")
TORCH_VARIANTS = ("torch-eager", "torch-sdpa")


def make_steps(name, device, only=FRAMEWORKS):
    """Build the models of ``only`` on one batch; return {framework: step function}.

    torch is imported only when a PyTorch framework is asked for, so that a tinygpt
    child process runs without PyTorch's thread pools loaded."""
    cfg, batch, _ = TRAIN_CONFIGS[name]
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))   # (B, T)
    y = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))   # (B, T)
    ours = tiny_gpt(cfg)          # the weights every framework starts from
    steps = {}

    if "tinygpt" in only:
        opt = optim.AdamW(optim.decay_groups(ours.named_parameters(), 0.1), lr=1e-4, betas=(0.9, 0.95))
        params = ours.parameters()
        xd, yd = backend.asarray(x), backend.asarray(y)

        def step_ours():
            _, loss = ours(xd, yd)
            loss.backward()
            optim.clip_grad_norm(params, 1.0)
            opt.step()
            opt.zero_grad()
            backend.synchronize()
        steps["tinygpt"] = step_ours

    torch_labels = [label for label in TORCH_VARIANTS if label in only]
    if not torch_labels:
        return steps
    import torch
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    tx, ty = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    for label in torch_labels:
        attn = label.split("-", 1)[1]   # "eager" or "sdpa"
        model = hf_model(cfg, ours, attn).to(dev).train()
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=1e-4, betas=(0.9, 0.95))

        def step_torch(model=model, topt=topt):
            logits = model(input_ids=tx, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), ty.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            topt.step()
            topt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
        steps[label] = step_torch
    return steps


# ----------------------------------------------------------------------------- children
def _set_up_torch(device):
    import torch
    torch.set_num_threads(THREADS)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True   # TF32 on both sides alike (CUPY_TF32=1 for tinygpt)
    return torch


def _torch_version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def timing_child(name, framework, device, steps_n, warmup):
    """In a child process: warm up, time ``steps_n`` steps of one framework, print JSON."""
    if framework != "tinygpt":
        _set_up_torch(device)
    steps_n = steps_n or TRAIN_CONFIGS[name][2]
    step = make_steps(name, device, only=(framework,))[framework]
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps_n):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"framework": framework, "step_s": seconds}))


def memory_probe(name, framework, device):
    """In a child process: peak memory a training step adds for one framework."""
    if framework != "tinygpt":
        _set_up_torch(device)
    step = make_steps(name, device, only=(framework,))[framework]
    print(json.dumps({"peak_added_bytes": step_peak_bytes(step)}))


def peak_child():
    """In a child process: the float32 matmul peak of this machine now, and what it ran on."""
    print(json.dumps({"peak_gflops": measure_matmul_peak(), "device_info": backend.device_info()}))


def child_env(framework=None):
    """The environment of a child: this one's (the thread variables set by threads.py), and
    for a PyTorch child TINYGPT_MALLOC=0, so that importing autograd leaves its malloc as
    PyTorch's users have it."""
    env = dict(os.environ)
    if framework is not None and framework != "tinygpt":
        env["TINYGPT_MALLOC"] = "0"
    return env


def round_order(r, frameworks=FRAMEWORKS):
    """The order of round ``r`` (from 0): ``frameworks`` turned by r places."""
    k = r % len(frameworks)
    return tuple(frameworks[k:]) + tuple(frameworks[:k])


def run_child(*args, device, framework=None):
    """Run this script in a fresh process with ``args``; return the JSON of its last line.

    The child inherits the thread variables and the core pinning set by threads.py, and
    gets the same --threads; ``framework``: the one it runs, if any (see child_env)."""
    env = child_env(framework)
    if device == "cuda":
        env["CUPY_TF32"] = "1"   # tinygpt's float32 matmuls on the GPU may use TF32, as torch's do
    result = subprocess.run([sys.executable, __file__, *args, "--threads", str(THREADS), "--device", device],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_memory(name, device):
    out = {}
    for fw in FRAMEWORKS:
        out[fw] = run_child("--memory-probe", name, fw, device=device, framework=fw)["peak_added_bytes"]
    return out


def time_in_rounds(name, steps_n, warmup, device, rounds):
    """{framework: [median step seconds of each round's child]}, children alternated, the
    order turned each round (round_order)."""
    per_round = {fw: [] for fw in FRAMEWORKS}
    for r in range(rounds):
        for fw in round_order(r):
            child = run_child("--timing-child", name, fw, "--steps", str(steps_n), "--warmup", str(warmup),
                              device=device, framework=fw)
            per_round[fw].append(statistics.median(child["step_s"]))
        line = "  ".join(f"{fw} {per_round[fw][-1] * 1e3:.1f} ms" for fw in FRAMEWORKS)
        print(f"  round {r + 1}/{rounds}: {line}", flush=True)
    return per_round


# ----------------------------------------------------------------------------- the parent
def bench(name, steps_n, warmup, device, rounds, peak_gflops, with_memory):
    cfg, batch, default_steps = TRAIN_CONFIGS[name]
    steps_n = steps_n or default_steps
    per_round = time_in_rounds(name, steps_n, warmup, device, rounds)
    memory = measure_memory(name, device) if with_memory else {}
    tokens = batch * cfg.block_size
    flops = flops_per_step(cfg, batch)
    result = {"config": name, "device": device, "threads": THREADS, "batch": batch, "block_size": cfg.block_size,
              "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "vocab_size": cfg.vocab_size, "steps": steps_n,
              "warmup": warmup, "rounds": rounds, "peak_gflops": round(peak_gflops, 1), "torch": _torch_version()}
    for fw in FRAMEWORKS:
        rounds_s = per_round[fw]
        med = statistics.median(rounds_s)
        result[fw] = {"ms_median": round(med * 1e3, 2), "ms_min": round(min(rounds_s) * 1e3, 2),
                      "ms_max": round(max(rounds_s) * 1e3, 2), "ms_per_round": [round(s * 1e3, 2) for s in rounds_s],
                      "tokens_per_s": round(tokens / med, 1), "mfu": round(flops / med / (peak_gflops * 1e9), 4)}
        if fw in memory:
            result[fw]["peak_mb"] = round(memory[fw] / 2**20, 1)
    for fw in TORCH_VARIANTS:
        # the ratio of each round (tinygpt's child and this variant's, started moments apart)
        ratios = [ours / theirs for ours, theirs in zip(per_round["tinygpt"], per_round[fw])]
        result[f"time_ratio_vs_{fw}"] = round(statistics.median(ratios), 3)
        result[f"time_ratio_range_vs_{fw}"] = [round(min(ratios), 3), round(max(ratios), 3)]
        if memory:
            result[f"memory_ratio_vs_{fw}"] = round(memory["tinygpt"] / max(memory[fw], 1), 3)
    return result


def print_table(results):
    print()
    print(f"{'config':10} {'framework':12} {'ms/step median (min-max over rounds)':>38} {'tokens/s':>10} "
          f"{'peak MB':>9} {'MFU':>6}")
    for r in results:
        for fw in FRAMEWORKS:
            m = r[fw]
            span = f"{m['ms_median']:.1f} ({m['ms_min']:.1f}-{m['ms_max']:.1f})"
            peak = f"{m['peak_mb']:.0f}" if "peak_mb" in m else "-"
            print(f"{r['config']:10} {fw:12} {span:>38} {m['tokens_per_s']:>10.0f} {peak:>9} {m['mfu']:>6.1%}")
        for fw in TORCH_VARIANTS:
            low, high = r[f"time_ratio_range_vs_{fw}"]
            memory = f", memory {r[f'memory_ratio_vs_{fw}']:.2f}" if f"memory_ratio_vs_{fw}" in r else ""
            print(f"{'':10} tinygpt/{fw}: time {r[f'time_ratio_vs_{fw}']:.2f} ({low:.2f}-{high:.2f} over "
                  f"{r['rounds']} rounds){memory}")
    print()
    for r in results:
        print(json.dumps(r))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="baby-char,small,mini",
                        help=f"comma-separated, from: {', '.join(TRAIN_CONFIGS)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per child process (default: per config)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each child")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of one child per framework, alternated (default 5)")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads for both (default: every core)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory probes")
    parser.add_argument("--memory-probe", nargs=2, metavar=("CONFIG", "FRAMEWORK"), help=argparse.SUPPRESS)
    parser.add_argument("--timing-child", nargs=2, metavar=("CONFIG", "FRAMEWORK"), help=argparse.SUPPRESS)
    parser.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (args.steps is not None and args.steps < 1) or args.rounds < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be at least 1, --warmup at least 0")
    if args.device == "cuda" and (args.timing_child or args.memory_probe or args.peak_child):
        backend.use_backend("cupy")   # in the children only: the parent computes nothing
    if args.peak_child:
        peak_child()
        return
    if args.timing_child:
        timing_child(*args.timing_child, args.device, args.steps, args.warmup)
        return
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.device)
        return
    if args.device == "cuda" and not args.no_memory:
        print("note: peak memory is measured as host resident memory; GPU memory is not measured yet (--no-memory)")
        args.no_memory = True
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRAIN_CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(TRAIN_CONFIGS)}")
    if args.memory_only:
        for name in names:
            print(json.dumps({"config": name, "peak_added_mb": {fw: round(v / 2**20, 1) for fw, v in
                                                                 measure_memory(name, args.device).items()}}))
        return
    measured = run_child("--peak-child", device=args.device)   # in its own process too
    peak = measured["peak_gflops"]
    print(f"float32 matmul peak, measured now (8192x768 @ 768x3072, {THREADS} threads): {peak:.0f} GFLOP/s "
          f"[{measured['device_info']}, torch {_torch_version()}]")
    print(f"each framework in its own process, alternated (the order turned each round), {args.rounds} rounds; "
          f"PyTorch with TINYGPT_MALLOC=0", flush=True)
    results = []
    for name in names:
        print(f"timing {name} ...", flush=True)
        results.append(bench(name, args.steps, args.warmup, args.device, args.rounds, peak, not args.no_memory))
    print_table(results)


if __name__ == "__main__":
    main()

"""A full training step of tinygpt against PyTorch, side by side on this machine.

    python benchmarks/bench_train.py                        # baby-char, small, mini
    python benchmarks/bench_train.py --configs small --steps 20

For each configuration the same weights and the same batch go through
  * tinygpt: forward, backward, clip_grad_norm, AdamW;
  * Hugging Face GPT2LMHeadModel in PyTorch eager mode, with "eager" attention and with
    "sdpa" attention (torch.nn.functional.scaled_dot_product_attention): the same step;
float32, dropout 0, the same thread count (every core, unless --threads). After warm-up
the three alternate step by step, so that a slow moment of the machine hits all three.

Printed per configuration: ms per step (median, min, max), tokens/s, the peak memory a
training step adds (measured in a separate process per framework, after a warm-up step:
the kernel's resident-memory high-water mark during one step minus the resident memory
before it; see common.step_peak_bytes), the model FLOP
utilisation against the float32 matmul peak measured at the start of this same run, and
the ratios tinygpt / PyTorch. Then one JSON line per configuration.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads import THREADS  # noqa: E402  (first: it fixes the thread count of numpy and torch)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from common import (TRAIN_CONFIGS, flops_per_step, hf_model, measure_matmul_peak, step_peak_bytes,  # noqa: E402
                    tiny_gpt)

from autograd import backend, optim  # noqa: E402

np = backend.np
FRAMEWORKS = ("tinygpt", "torch-eager", "torch-sdpa")


def make_steps(name, device, only=FRAMEWORKS):
    """Build the models of ``only`` on one batch; return {framework: step function}."""
    import torch
    cfg, batch, _ = TRAIN_CONFIGS[name]
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
    y = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
    ours = tiny_gpt(cfg)
    steps = {}

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
    if "tinygpt" in only:
        steps["tinygpt"] = step_ours

    dev = torch.device("cuda" if device == "cuda" else "cpu")
    tx, ty = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    for attn, label in (("eager", "torch-eager"), ("sdpa", "torch-sdpa")):
        if label not in only:
            continue
        model = hf_model(cfg, ours, attn).to(dev).train()
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=1e-4, betas=(0.9, 0.95))

        def step_torch(model=model, topt=topt):
            logits = model(input_ids=tx).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), ty.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            topt.step()
            topt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
        steps[label] = step_torch
    return steps


def memory_probe(name, framework, device):
    """Run in a child process: peak memory a training step adds for one framework."""
    import torch
    torch.set_num_threads(THREADS)
    step = make_steps(name, device, only=(framework,))[framework]
    print(json.dumps({"peak_added_bytes": step_peak_bytes(step)}))


def measure_memory(name, device):
    out = {}
    for fw in FRAMEWORKS:
        result = subprocess.run([sys.executable, __file__, "--memory-probe", name, fw, "--threads", str(THREADS),
                                 "--device", device], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"memory probe {name}/{fw} failed:\n{result.stderr}")
        out[fw] = json.loads(result.stdout.strip().splitlines()[-1])["peak_added_bytes"]
    return out


def bench(name, steps_n, warmup, device, peak_gflops, with_memory):
    import torch
    cfg, batch, default_steps = TRAIN_CONFIGS[name]
    steps_n = steps_n or default_steps
    steps = make_steps(name, device)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {fw: [] for fw in FRAMEWORKS}
    for _ in range(steps_n):
        for fw in FRAMEWORKS:                       # alternate: one step of each, in turn
            t0 = time.perf_counter()
            steps[fw]()
            times[fw].append(time.perf_counter() - t0)
    del steps
    memory = measure_memory(name, device) if with_memory else {}
    tokens = batch * cfg.block_size
    flops = flops_per_step(cfg, batch)
    result = {"config": name, "device": device, "threads": THREADS, "batch": batch, "block_size": cfg.block_size,
              "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "vocab_size": cfg.vocab_size, "steps": steps_n,
              "peak_gflops": round(peak_gflops, 1), "torch": torch.__version__}
    for fw in FRAMEWORKS:
        med = statistics.median(times[fw])
        result[fw] = {"ms_median": round(med * 1e3, 2), "ms_min": round(min(times[fw]) * 1e3, 2),
                      "ms_max": round(max(times[fw]) * 1e3, 2), "tokens_per_s": round(tokens / med, 1),
                      "mfu": round(flops / med / (peak_gflops * 1e9), 4)}
        if fw in memory:
            result[fw]["peak_mb"] = round(memory[fw] / 2**20, 1)
    for fw in ("torch-eager", "torch-sdpa"):
        result[f"time_ratio_vs_{fw}"] = round(result["tinygpt"]["ms_median"] / result[fw]["ms_median"], 3)
        if memory:
            result[f"memory_ratio_vs_{fw}"] = round(memory["tinygpt"] / max(memory[fw], 1), 3)
    return result


def print_table(results):
    print()
    print(f"{'config':10} {'framework':12} {'ms/step median (min-max)':>28} {'tokens/s':>10} {'peak MB':>9} {'MFU':>6}")
    for r in results:
        for fw in FRAMEWORKS:
            m = r[fw]
            span = f"{m['ms_median']:.1f} ({m['ms_min']:.1f}-{m['ms_max']:.1f})"
            peak = f"{m['peak_mb']:.0f}" if "peak_mb" in m else "-"
            print(f"{r['config']:10} {fw:12} {span:>28} {m['tokens_per_s']:>10.0f} {peak:>9} {m['mfu']:>6.1%}")
        ratios = "  ".join(f"{k.replace('_ratio_vs_', ' tinygpt/')}: {v:.2f}" for k, v in r.items() if "_ratio_vs_" in k)
        print(f"{'':10} {ratios}")
    print()
    for r in results:
        print(json.dumps(r))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="baby-char,small,mini",
                        help=f"comma-separated, from: {', '.join(TRAIN_CONFIGS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per framework (default: per config)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=THREADS, help="threads for both (default: every core)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory probes")
    parser.add_argument("--memory-probe", nargs=2, metavar=("CONFIG", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    if args.device == "cuda":
        backend.use_backend("cupy")
        torch.backends.cuda.matmul.allow_tf32 = True   # TF32 on both sides alike
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
    peak = measure_matmul_peak()
    print(f"float32 matmul peak, measured now (8192x768 @ 768x3072, {THREADS} threads): {peak:.0f} GFLOP/s "
          f"[{backend.device_info()}, torch {torch.__version__}]")
    results = []
    for name in names:
        print(f"timing {name} ...", flush=True)
        if args.memory_only:
            print(json.dumps({"config": name, "peak_added_mb": {fw: round(v / 2**20, 1) for fw, v in
                                                                 measure_memory(name, args.device).items()}}))
            continue
        results.append(bench(name, args.steps, args.warmup, args.device, peak, not args.no_memory))
    if results:
        print_table(results)


if __name__ == "__main__":
    main()

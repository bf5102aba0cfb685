"""Generation speed: tinygpt with its KV cache against Hugging Face's generate(), and
against the memory-bandwidth bound of this machine, measured in the same run.

    python benchmarks/bench_generate.py                    # small and gpt2 (124M)
    python benchmarks/bench_generate.py --configs gpt2 --rounds 7

Greedy decoding of 100 new tokens after a 16-token prompt, batch 1, float32, the same
random weights on both sides; tinygpt's ``generate_ids(..., temperature=0)`` against
``GPT2LMHeadModel.generate(do_sample=False, use_cache=True, min_new_tokens=100,
max_new_tokens=100)`` with SDPA attention, the same thread count for both (every core,
or --threads).

Process isolation, as in bench_train.py: each measurement runs in a fresh child process
holding one framework (the tinygpt child never imports torch). A child builds its model
from the seeded weights, generates once to warm up, then times --repeats generations and
prints their times and its token ids as JSON. The parent alternates the children for
--rounds rounds, tinygpt first in odd rounds and Hugging Face first in even ones. Both
children do the same work between their timed generations (the GEMV calls below), and
the Hugging Face child runs with TINYGPT_MALLOC=0: it imports autograd for the shared
weights, whose import would otherwise tune glibc's malloc for the whole process
(autograd/backend.py), and PyTorch is timed as it runs for its users. Reported: tokens/s of each (the
median over rounds of each child's median), and the ratio tinygpt / HF (the median of
the per-round ratios, with their min-max). "same tokens": every child's greedy tokens are
identical, tinygpt's and Hugging Face's.

The bound. Batch-1 decoding reads every weight once per token, so it cannot go faster
than (memory bandwidth) / (bytes of the weights). Bytes per token: every parameter once,
float32, the tied head counted once (``GPTConfig.num_parameters() * 4``; the KV cache's
reads are left out, small next to the weights at this length). The bandwidth: the read
bandwidth of a GEMV on the head's matrix, ``W @ x`` for the (V, C) float32 token
embedding W and a (C,) vector, bytes of W over the time of a call, timed in each child
for GEMV_SECONDS just before and again just after each timed generation, so that the
two are measured at the same moment (the bound uses the tinygpt child's calls; the
Hugging Face child makes the same calls, so that both generations follow the same work) (on this shared machine the bandwidth moved by
a third from one minute to the next). Two bounds are printed from those calls:

- from the median call: the bandwidth the machine gave while the generation ran. A
  generation's time sums some 5,000 reads of matrices, so it is set by the typical read,
  and its median over --repeats is set against the median call. tinygpt's fraction of
  this bound is the target's figure.
- from the fastest call (the machine's best moment, as this script measured it before
  2026-11-30, then in a process of its own): stricter, and drifting up the more calls are
  made; printed beside it.

Both per round (the median over the repeats), then median and min-max over rounds; Hugging
Face's fraction uses the bound of the tinygpt child of the same round. The bound is a
reference, not a ceiling: a generation whose reads meet a faster moment than the median
call's can pass it, so a fraction can read above 100%.

Memory: after its timed generations each child runs one more, untimed, and reports the
resident memory that generation adds at its peak (common.step_peak_bytes: the kernel's
high-water mark, reset just before; the KV cache, logits and scratch, not the weights
every child already holds); printed per config with the ratio tinygpt / HF (median and
min-max over rounds). Linux only (it reads /proc).
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
from common import TRAIN_CONFIGS, call_times, hf_model, step_peak_bytes, tiny_gpt  # noqa: E402

PROMPT, NEW = 16, 100
CHILDREN = ("tinygpt", "hf-generate")
GEMV_SECONDS = 0.5   # of GEMV calls before and after each timed generation


def _prompt(cfg):
    return np.random.default_rng(0).integers(0, cfg.vocab_size, PROMPT).tolist()


# ----------------------------------------------------------------------------- children
def gemv_calls(w, seconds):
    """Times of ``W @ x`` calls (W (V, C) float32, x (C,)) made back to back for ``seconds``."""
    x = np.random.default_rng(1).standard_normal(w.shape[1], dtype=np.float32)   # (C,)
    out = np.empty(w.shape[0], dtype=np.float32)                                 # (V,)
    return call_times(lambda: np.matmul(w, x, out=out), seconds, at_least=10)


def generate_child(name, framework, repeats):
    """In a child process: warm up, time ``repeats`` generations, print times and tokens;
    tinygpt's child also times the head's GEMV around each generation (the bound)."""
    cfg = TRAIN_CONFIGS[name][0]
    prompt = _prompt(cfg)
    ours = tiny_gpt(cfg)
    head = ours.transformer.wte.weight.data                                       # (V, C)
    if framework == "tinygpt":
        from tinygpt.generate import generate_ids

        def run():
            return list(generate_ids(ours, prompt, NEW, temperature=0, stop_at_eot=False))
    else:
        import torch
        torch.set_num_threads(THREADS)
        hf = hf_model(cfg, ours, "sdpa").eval()
        head = head.copy()   # for the GEMV calls only; the rest of the weights live in the torch model now
        del ours
        tprompt = torch.tensor([prompt])
        attention_mask = torch.ones_like(tprompt)

        def run():
            with torch.no_grad():
                out = hf.generate(tprompt, attention_mask=attention_mask, do_sample=False, use_cache=True,
                                  max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0)
            return out[0, PROMPT:].tolist()
    tokens = run()   # also the warm-up
    seconds, gemv_median, gemv_best = [], [], []
    for _ in range(repeats):
        before = gemv_calls(head, GEMV_SECONDS)          # both children alike (the bound uses tinygpt's)
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
        calls = before + gemv_calls(head, GEMV_SECONDS)
        gemv_median.append(head.nbytes / statistics.median(calls))
        gemv_best.append(head.nbytes / min(calls))
    report = {"framework": framework, "seconds": seconds, "tokens": tokens,
              "peak_added_bytes": step_peak_bytes(run) if sys.platform.startswith("linux") else None}
    if gemv_median:
        report.update(gemv_bytes=head.nbytes, gemv_median_bytes_per_s=gemv_median, gemv_best_bytes_per_s=gemv_best)
    print(json.dumps(report))


def run_child(*args, framework=None):
    """Run this script in a fresh process (same --threads, inherited pinning); its last JSON line.
    A Hugging Face child gets TINYGPT_MALLOC=0 (see the docstring)."""
    env = dict(os.environ)
    if framework is not None and framework != "tinygpt":
        env["TINYGPT_MALLOC"] = "0"
    result = subprocess.run([sys.executable, __file__, *args, "--threads", str(THREADS)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the parent
def _spread(values, digits):
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def child_order(r):
    """Round r's children (r from 0): tinygpt first in rounds 0, 2, ..., Hugging Face in 1, 3, ..."""
    return CHILDREN if r % 2 == 0 else CHILDREN[::-1]


def bench(name, repeats, rounds):
    cfg = TRAIN_CONFIGS[name][0]
    weight_bytes = cfg.num_parameters() * 4   # float32, the tied head once
    per_round = {"tinygpt": [], "hf-generate": [], "bandwidth": [], "bandwidth_best": [], "bound": [],
                 "bound_best": [], "fraction": [], "fraction_best": []}
    peaks = {"tinygpt": [], "hf-generate": []}
    token_lists = []
    for r in range(rounds):
        for child in child_order(r):
            report = run_child("--generate-child", name, child, "--repeats", str(repeats), framework=child)
            per_round[child].append(NEW / statistics.median(report["seconds"]))
            if report["peak_added_bytes"] is not None:
                peaks[child].append(report["peak_added_bytes"])
            token_lists.append((child, report["tokens"]))
            if child == "tinygpt":   # each generation against the calls around it, then the median
                for key, calls in (("", report["gemv_median_bytes_per_s"]), ("_best", report["gemv_best_bytes_per_s"])):
                    per_round["bandwidth" + key].append(statistics.median(calls))
                    per_round["bound" + key].append(statistics.median(calls) / weight_bytes)
                    per_round["fraction" + key].append(statistics.median(
                        NEW / s / (bw / weight_bytes) for s, bw in zip(report["seconds"], calls)))
        print(f"  round {r + 1}/{rounds}: tinygpt {per_round['tinygpt'][-1]:.1f} tok/s, "
              f"hf-generate {per_round['hf-generate'][-1]:.1f} tok/s, GEMV {per_round['bandwidth'][-1] / 1e9:.1f} GB/s "
              f"median, {per_round['bandwidth_best'][-1] / 1e9:.1f} fastest -> bound {per_round['bound'][-1]:.1f} "
              f"({per_round['bound_best'][-1]:.1f}) tok/s", flush=True)
    same = all(tokens == token_lists[0][1] for _, tokens in token_lists)
    ratios = [ours / theirs for ours, theirs in zip(per_round["tinygpt"], per_round["hf-generate"])]
    hf_fractions = [theirs / bound for theirs, bound in zip(per_round["hf-generate"], per_round["bound"])]
    result = {"config": name, "threads": THREADS, "prompt_tokens": PROMPT, "new_tokens": NEW, "repeats": repeats,
              "rounds": rounds, "same_tokens": same, "torch": _torch_version(),
              "weight_bytes": weight_bytes, "gemv_bytes": cfg.vocab_size * cfg.n_embd * 4}
    for label in ("tinygpt", "hf-generate"):
        result[label] = {"tokens_per_s": round(statistics.median(per_round[label]), 1),
                         "tokens_per_s_min": round(min(per_round[label]), 1),
                         "tokens_per_s_max": round(max(per_round[label]), 1),
                         "tokens_per_s_per_round": [round(v, 1) for v in per_round[label]]}
        result[label]["peak_added_bytes"] = round(statistics.median(peaks[label])) if peaks[label] else None
        result[label]["peak_added_mb"] = (round(statistics.median(peaks[label]) / 2**20, 1)
                                          if peaks[label] else None)
    memory = [ours / theirs for ours, theirs in zip(peaks["tinygpt"], peaks["hf-generate"]) if theirs > 0]
    result["peak_added_ratio"] = _spread(memory, 3) if memory else None
    result["gemv_gb_per_s"] = _spread([b / 1e9 for b in per_round["bandwidth"]], 2)
    result["gemv_best_gb_per_s"] = _spread([b / 1e9 for b in per_round["bandwidth_best"]], 2)
    result["bound_tokens_per_s"] = _spread(per_round["bound"], 1)
    result["bound_best_tokens_per_s"] = _spread(per_round["bound_best"], 1)
    result["ratio_tokens_per_s"] = round(statistics.median(ratios), 3)
    result["ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    result["tinygpt_fraction_of_bound"] = _spread(per_round["fraction"], 3)
    result["tinygpt_fraction_of_best_call_bound"] = _spread(per_round["fraction_best"], 3)
    result["hf_fraction_of_bound"] = _spread(hf_fractions, 3)
    return result


def _torch_version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def print_table(results):
    print(f"\n{'config':8} {'tinygpt tok/s':>14} {'HF tok/s':>9} {'tinygpt/HF (min-max)':>21} {'GEMV GB/s':>10} "
          f"{'bound tok/s':>12} {'tinygpt/bound (min-max)':>24} {'of fastest-call bound':>22} {'same tokens':>12}")
    for r in results:
        low, high = r["ratio_range"]
        frac, best = r["tinygpt_fraction_of_bound"], r["tinygpt_fraction_of_best_call_bound"]
        ratio = f"{r['ratio_tokens_per_s']:.2f} ({low:.2f}-{high:.2f})"
        of_bound = f"{frac['median']:.0%} ({frac['min']:.0%}-{frac['max']:.0%})"
        of_best = f"{best['median']:.0%} ({best['min']:.0%}-{best['max']:.0%})"
        print(f"{r['config']:8} {r['tinygpt']['tokens_per_s']:>14.1f} {r['hf-generate']['tokens_per_s']:>9.1f} "
              f"{ratio:>21} {r['gemv_gb_per_s']['median']:>10.1f} {r['bound_tokens_per_s']['median']:>12.1f} "
              f"{of_bound:>24} {of_best:>22} {str(r['same_tokens']):>12}")
    print("(GEMV GB/s and the bound: the median call of those timed around each generation; "
          "the last fraction uses the fastest call)")
    for r in results:
        if r["peak_added_ratio"] is not None:
            memory = r["peak_added_ratio"]
            print(f"{r['config']}: a generation adds {r['tinygpt']['peak_added_mb']:.1f} MB of resident memory at its "
                  f"peak in tinygpt, {r['hf-generate']['peak_added_mb']:.1f} MB in Hugging Face's (tinygpt / HF "
                  f"{memory['median']:.2f}, {memory['min']:.2f}-{memory['max']:.2f})")
    print()
    for r in results:
        print(json.dumps(r))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="small,gpt2", help=f"comma-separated, from: {', '.join(TRAIN_CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per child process")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of one child per framework, alternated")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--generate-child", nargs=2, metavar=("CONFIG", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be at least 1")
    if args.generate_child:
        generate_child(*args.generate_child, args.repeats)
        return
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRAIN_CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(TRAIN_CONFIGS)}")
    print(f"each in its own process, alternated (tinygpt first in odd rounds, Hugging Face in even ones), "
          f"{args.rounds} rounds of {args.repeats} timed generations; {THREADS} threads; Hugging Face with "
          f"TINYGPT_MALLOC=0", flush=True)
    results = []
    for name in names:
        print(f"timing {name} ...", flush=True)
        results.append(bench(name, args.repeats, args.rounds))
    print_table(results)


if __name__ == "__main__":
    main()

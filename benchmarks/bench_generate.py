"""Generation speed: tinygpt with its KV cache against Hugging Face's generate().

    python benchmarks/bench_generate.py                    # small and gpt2 (124M)

Greedy decoding of 100 new tokens after a 16-token prompt, batch 1, float32, the same
random weights on both sides; tinygpt's ``generate_ids(..., temperature=0)`` against
``GPT2LMHeadModel.generate(do_sample=False, use_cache=True, min_new_tokens=100,
max_new_tokens=100)``, alternating after a warm-up, every core for both (or --threads).
Prints tokens/s (median of the repeats) and the ratio tinygpt / Hugging Face, then one
JSON line per configuration. The two must produce the same tokens (checked).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads import THREADS  # noqa: E402  (first: it fixes the thread count of numpy and torch)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from common import TRAIN_CONFIGS, hf_model, tiny_gpt  # noqa: E402

from autograd import backend  # noqa: E402
from tinygpt.generate import generate_ids  # noqa: E402

np = backend.np
PROMPT, NEW = 16, 100


def bench(name, repeats):
    import torch
    cfg = TRAIN_CONFIGS[name][0]
    ours = tiny_gpt(cfg)
    hf = hf_model(cfg, ours, "sdpa").eval()
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, PROMPT).tolist()
    tprompt = torch.tensor([prompt])
    attention_mask = torch.ones_like(tprompt)

    def run_ours():
        return list(generate_ids(ours, prompt, NEW, temperature=0, stop_at_eot=False))

    def run_hf():
        with torch.no_grad():
            out = hf.generate(tprompt, attention_mask=attention_mask, do_sample=False, use_cache=True,
                              max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0)
        return out[0, PROMPT:].tolist()

    same = run_ours() == run_hf()   # also the warm-up
    times = {"tinygpt": [], "hf-generate": []}
    for _ in range(repeats):
        for label, fn in (("tinygpt", run_ours), ("hf-generate", run_hf)):
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    result = {"config": name, "threads": THREADS, "prompt_tokens": PROMPT, "new_tokens": NEW, "repeats": repeats,
              "same_tokens": same, "torch": torch.__version__}
    for label, ts in times.items():
        result[label] = {"tokens_per_s": round(NEW / statistics.median(ts), 1),
                         "s_median": round(statistics.median(ts), 3), "s_min": round(min(ts), 3)}
    result["ratio_tokens_per_s"] = round(result["tinygpt"]["tokens_per_s"] / result["hf-generate"]["tokens_per_s"], 3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="small,gpt2", help=f"comma-separated, from: {', '.join(TRAIN_CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(THREADS)
    results = []
    for name in args.configs.split(","):
        print(f"timing {name} ...", flush=True)
        results.append(bench(name.strip(), args.repeats))
    print(f"\n{'config':8} {'tinygpt tok/s':>14} {'HF generate tok/s':>18} {'ratio':>7} {'same tokens':>12}")
    for r in results:
        print(f"{r['config']:8} {r['tinygpt']['tokens_per_s']:>14.1f} {r['hf-generate']['tokens_per_s']:>18.1f} "
              f"{r['ratio_tokens_per_s']:>7.2f} {str(r['same_tokens']):>12}")
    print()
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

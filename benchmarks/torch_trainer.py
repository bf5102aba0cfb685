"""A lean PyTorch trainer: the run ``tinygpt train --tokenizer char`` does, in plain PyTorch.

    python benchmarks/torch_trainer.py --block-size 64 --batch-size 12 --max-iters 2000 --lr 1e-3 \\
        --min-lr 1e-4 --warmup-iters 100 --beta2 0.99 --eval-interval 250 --out runs/torch-char

The other half of bench_recipe.py, which times it as a whole process against tinygpt's
own ``tinygpt train``. The model and the loop follow nanoGPT's (as facts: GPT-2 blocks,
the usual training loop); the data, the defaults and the evaluation follow tinygpt's
(tinygpt/train.py, config.py, data.py), so that the two runs do the same work.

The same as tinygpt's run:
  * corpus: the bundled tinygpt/assets/shakespeare.txt (or --data); characters as tokens,
    the vocabulary is the sorted set of the text's characters; the first 90% of the
    tokens train, the last 10% validate;
  * batches: drawn as tinygpt's TokenData.get_batch draws them, from the same seeds
    (training windows from numpy's default_rng(seed + 1); the fixed evaluation batches
    from default_rng(seed + 2), eval_iters train batches then eval_iters val batches),
    so both runs see the same windows in the same order;
  * model: GPT-2 with pre-LayerNorm blocks, learned positions, biases, the tanh GELU,
    the head tied to the token embedding, dropout (0 by default) on the embeddings and
    the two residual branches; GPT-2's initialisation: N(0, 0.02), the two residual
    projections N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm gains 1;
  * optimizer: AdamW (eps 1e-8), weight decay on every tensor of two or more dimensions
    (embeddings included), none on biases and LayerNorm; linear warm-up then cosine
    decay to min_lr (lr / 10 by default) at max_iters; the gradient's global norm
    clipped to grad_clip; a run stops if the loss or the norm is not finite;
  * evaluation: at step 0, every eval_interval steps and at the last step: the mean loss
    over the eval_iters fixed batches of each split; the best val loss is kept; after
    step 0 a checkpoint ``latest`` (weights and AdamW's moments) is written, and ``best``
    (weights) when val improved; a sample of sample_tokens characters (temperature 0.8,
    top-k 200, from a newline) is printed; one log line per step in log.jsonl.

What differs:
  * the initial weights come from torch's generator (seeded by --seed), not tinygpt's,
    so the two loss curves are alike, not equal;
  * attention is torch's scaled_dot_product_attention (is_causal), PyTorch's fast path;
  * checkpoints are torch.save files (one .pt per checkpoint, written to a temporary
    file, fsync'd and renamed), not safetensors plus a JSON state;
  * the sample recomputes the window for each character (no KV cache), as nanoGPT does;
  * no loss plot (tinygpt redraws loss.png in a background thread after each evaluation
    and once at the end) and no progress bar.

The last line printed is JSON: the best val loss, the last losses, the steps and the
seconds the training loop took in this process.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threads import THREADS  # noqa: E402  (first: it fixes the thread count of torch)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "tinygpt" / "assets" / "shakespeare.txt"
TRAIN_FRACTION = 0.9


# ----------------------------------------------------------------------------- the model
class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)   # q, k, v of every head at once
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)                 # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)                  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)          # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # GPT-2's GELU is the tanh approximation, not torch's default erf form
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))   # pre-LN: normalise the branch's input, add to the stream
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, residual_std)
            elif p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.ones_(p)   # LayerNorm gains

    def forward(self, ids, targets=None):
        B, T = ids.shape
        positions = torch.arange(T, device=ids.device)                  # (T,)
        x = self.drop(self.wte(ids) + self.wpe(positions))              # (B, T, C)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)                           # (B, T, V): the tied head
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


# ----------------------------------------------------------------------------- data
class CharData:
    """The corpus as character ids, split 90/10, with tinygpt's way of drawing windows."""

    def __init__(self, text, block_size, seed):
        self.chars = sorted(set(text))
        index = {c: i for i, c in enumerate(self.chars)}
        tokens = np.array([index[c] for c in text], dtype=np.uint16)
        cut = int(len(tokens) * TRAIN_FRACTION)
        self.splits = {"train": tokens[:cut], "val": tokens[cut:]}
        self.block_size = block_size
        self.rng = np.random.default_rng(seed)

    def get_batch(self, split, batch_size, rng=None):
        """x, y: (B, T) int64 tensors; y is x shifted left by one character."""
        ids = self.splits[split]
        rng = self.rng if rng is None else rng
        starts = rng.integers(0, len(ids) - self.block_size, size=batch_size)   # (B,)
        offsets = np.arange(self.block_size + 1)                                 # (T+1,)
        windows = torch.from_numpy(ids[starts[:, None] + offsets].astype(np.int64))   # (B, T+1)
        return windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------- pieces
def learning_rate(step, max_lr, min_lr, warmup, decay):
    """Linear warm-up, then cosine decay from max_lr to min_lr at step ``decay``."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step > decay:
        return min_lr
    if decay == warmup:
        return max_lr
    progress = (step - warmup) / (decay - warmup)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model, eval_batches):
    model.eval()
    losses = {split: sum(model(x, y)[1].item() for x, y in batches) / len(batches)
              for split, batches in eval_batches.items()}
    model.train()
    return losses


@torch.no_grad()
def sample(model, start_id, n_tokens, seed, temperature=0.8, top_k=200):
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[start_id]])
    for _ in range(n_tokens):
        logits, _ = model(ids[:, -model.block_size:])
        logits = logits[:, -1, :] / temperature                         # (1, V)
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)   # (1, 1)
        ids = torch.cat([ids, nxt], dim=1)
    model.train()
    return ids[0, 1:].tolist()


def save(path, obj):
    """torch.save to a temporary file, fsync, rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the loop
def train(args):
    torch.manual_seed(args.seed)
    text = Path(args.data).read_text(encoding="utf-8")
    data = CharData(text, args.block_size, seed=args.seed + 1)
    eval_rng = np.random.default_rng(args.seed + 2)   # fixed evaluation batches, apart from training's
    eval_batches = {split: [data.get_batch(split, args.batch_size, rng=eval_rng) for _ in range(args.eval_iters)]
                    for split in ("train", "val")}
    model = GPT(len(data.chars), args.block_size, args.n_layer, args.n_head, args.n_embd, args.dropout)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    min_lr = args.min_lr if args.min_lr is not None else args.lr / 10
    decay_end = max(args.max_iters, args.warmup_iters)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "w")
    newline = data.chars.index("\n") if "\n" in data.chars else 0
    n_params = sum(p.numel() for p in model.parameters())   # the tied matrix counted once
    print(f"training {n_params:,} parameters ({args.n_layer} layers, {args.n_head} heads, {args.n_embd} wide, "
          f"context {args.block_size}, char tokens) on {len(text):,} tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; run folder {out}", flush=True)

    best_val, losses, t0 = math.inf, {}, time.time()

    def eval_and_save(step):
        nonlocal best_val, losses
        losses = evaluate(model, eval_batches)
        improved = losses["val"] < best_val
        best_val = min(best_val, losses["val"])
        log.write(json.dumps({"kind": "eval", "step": step, "train_loss": losses["train"],
                              "val_loss": losses["val"], "time": time.time() - t0}) + "\n")
        log.flush()
        print(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
              + (" (best)" if improved else ""), flush=True)
        if step > 0:
            state = {"step": step, "val_loss": losses["val"], "best_val_loss": best_val, "config": vars(args)}
            save(out / "latest.pt", dict(state, model=model.state_dict(), optimizer=optimizer.state_dict()))
            if improved:
                save(out / "best.pt", dict(state, model=model.state_dict()))
        if step > 0 and args.sample_tokens > 0:   # as tinygpt: none from the untrained model
            ids = sample(model, newline, args.sample_tokens, args.seed)
            print("--- sample ---\n" + "".join(data.chars[i] for i in ids).strip("\n") + "\n--------------")

    eval_and_save(0)
    model.train()
    for step in range(args.max_iters):
        t_step = time.time()
        lr = learning_rate(step, args.lr, min_lr, args.warmup_iters, decay_end)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = data.get_batch("train", args.batch_size)
        _, loss = model(x, y)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)) if args.grad_clip > 0 \
            else math.nan
        loss_value = loss.item()
        if not math.isfinite(loss_value) or (args.grad_clip > 0 and not math.isfinite(norm)):
            raise SystemExit(f"the loss became {loss_value} at step {step}: training stopped")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.write(json.dumps({"kind": "train", "step": step + 1, "loss": loss_value, "lr": lr,
                              "grad_norm": norm if math.isfinite(norm) else None, "dt": time.time() - t_step}) + "\n")
        log.flush()
        if (step + 1) % args.eval_interval == 0 or step + 1 == args.max_iters:
            eval_and_save(step + 1)
    log.close()
    return {"framework": "torch", "steps": args.max_iters, "best_val_loss": best_val,
            "train_loss": losses.get("train"), "val_loss": losses.get("val"), "parameters": n_params,
            "seconds": time.time() - t0, "threads": torch.get_num_threads(), "torch": torch.__version__}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # the defaults are tinygpt's TrainConfig's, with the baby preset's shape
    parser.add_argument("--data", default=str(BUNDLED), help="a UTF-8 .txt file (default: the bundled Shakespeare)")
    parser.add_argument("--out", default="runs/torch-char", help="folder for log.jsonl and the checkpoints")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--max-iters", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-lr", type=float, default=None, help="default: lr / 10")
    parser.add_argument("--warmup-iters", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.99)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--eval-iters", type=int, default=10)
    parser.add_argument("--sample-tokens", type=int, default=80)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads (default: every core)")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    if args.eval_interval < 1 or args.eval_iters < 1 or args.batch_size < 1 or args.max_iters < 0:
        parser.error("--eval-interval, --eval-iters and --batch-size must be at least 1, --max-iters at least 0")
    torch.set_num_threads(THREADS)
    print(json.dumps(train(args)))


if __name__ == "__main__":
    main()

"""Lesson 8: what the model learned; embeddings, and gradients layer by layer.

This lesson writes the training loop out itself, with the public pieces that
tinygpt's Trainer is made of (GPT2, TokenData, AdamW, WarmupCosine, clip_grad_norm),
so that it can look inside each step: after ``loss.backward()`` and before clipping,
it measures the gradient norm of each part of the network,

    ||g_part|| = sqrt( sum over the part's parameters and their elements of g^2 )

for the embeddings, each transformer block, and the final layernorm. Then it projects
the learned token embeddings (the rows of wte, one C-wide vector per character) onto
their two principal components (PCA) to see which characters the model treats alike.

    python demos/08_what_the_model_learned.py
"""
import math
import time

import _common
from autograd import backend, optim
from autograd.backend import np
from tinygpt import GPT2, GPTConfig
from tinygpt.data import TokenData, load_corpus
from tinygpt.tokenizer import make_tokenizer


def part_of(name):
    """The part of the network a parameter belongs to, from its Hugging Face-style name."""
    if name.startswith("transformer.h."):
        return "block " + name.split(".")[2]
    if name.startswith("transformer.wte"):
        return "token embedding wte"
    if name.startswith("transformer.wpe"):
        return "position embedding wpe"
    return "final layernorm ln_f"


def short(part):
    """A column title for the printed table: wte, wpe, b0, b1, ..., ln_f."""
    return "b" + part.split()[1] if part.startswith("block") else part.split()[-1]


def principal_components(W):
    """The rows of W (V, C) projected on its two directions of largest variance, and the
    fraction of the variance each explains. PCA: centre the rows, take the SVD
    W - mean = U S V^T; the projections are U S, and direction k explains the fraction
    S_k^2 / sum(S^2) of the variance."""
    centred = W - W.mean(axis=0, keepdims=True)                  # (V, C)
    U, S, _ = np.linalg.svd(centred, full_matrices=False)        # U (V, C), S (C,)
    explained = S ** 2 / (S ** 2).sum()
    return U[:, :2] * S[:2], explained[:2]                       # (V, 2), (2,)


def kind_of(ch):
    if ch in "aeiou":
        return "vowel"
    if ch.islower():
        return "consonant"
    if ch in "AEIOU":
        return "capital vowel"
    if ch.isupper():
        return "capital consonant"
    return "space, digit, punctuation"


COLORS = {"vowel": "tab:red", "consonant": "tab:blue", "capital vowel": "tab:orange",
          "capital consonant": "tab:cyan", "space, digit, punctuation": "tab:gray"}


def main():
    p = _common.parser(__file__, "Token-embedding PCA and per-layer gradient norms over training.")
    _common.steps_flag(p, quick=30)
    args = p.parse_args()
    out = _common.setup(args)
    steps = args.steps if args.steps is not None else (30 if args.quick else 300)

    text, _ = load_corpus(None)                                   # the bundled Shakespeare
    tok = make_tokenizer("char", text)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64)
    backend.seed(1337)
    model = GPT2(config, tokenizer=tok)
    data = TokenData(text, tok, config.block_size, seed=1)
    params = model.parameters()
    named = list(model.named_parameters())
    opt = optim.AdamW(optim.decay_groups(named, 0.1), lr=1e-2, betas=(0.9, 0.99))
    schedule = optim.WarmupCosine(1e-2, 1e-3, min(30, max(1, steps // 5)), steps)
    wte_before = backend.to_numpy(model.transformer.wte.weight.data).copy()   # (V, C) at initialisation

    _common.heading(f"Training {model.num_parameters():,} parameters for {steps} steps, measuring each part's gradient")
    parts = list(dict.fromkeys(part_of(n) for n, _ in named))     # in the model's order
    history = {part: [] for part in parts}
    losses = []
    t0 = time.time()
    for step in range(steps):
        x, y = data.get_batch("train", 16)                        # (B, T) ids, (B, T) next ids
        _, loss = model(x, y)
        loss.backward()
        squares = dict.fromkeys(parts, 0.0)
        for name, p_ in named:                                    # before clipping: the raw gradient
            squares[part_of(name)] += float((p_.grad * p_.grad).sum())
        for part in parts:
            history[part].append(math.sqrt(squares[part]))
        optim.clip_grad_norm(params, 1.0)
        opt.set_lr(schedule(step))
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.data))
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"step {step + 1:4d}: loss {losses[-1]:.3f}   gradient norms: " +   # counted from 1, as in lesson 05
                  "  ".join(f"{short(part)} {history[part][-1]:.3f}" for part in parts))
    print(f"({time.time() - t0:.0f} s)")
    first = {part: float(np.mean(history[part][:5])) for part in parts}
    last = {part: float(np.mean(history[part][-5:])) for part in parts}
    print("mean gradient norm, first 5 steps -> last 5 steps:")
    for part in parts:
        print(f"  {part:<24}{first[part]:8.3f} -> {last[part]:.3f}")
    blocks = [part for part in parts if part.startswith("block")]
    print("Each block's output reaches the loss both through the blocks above it and directly, through the "
          "residual stream (x + f(x) has slope 1 + f'(x)), so the first block is not starved of gradient: "
          f"at the end, {blocks[0]} {last[blocks[0]]:.3f} and {blocks[-1]} {last[blocks[-1]]:.3f}.")
    print("The token embedding is also the output head (tied weights): it gets gradient from both ends.")

    fig, axes = _common.figure(2, 1, size=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    ax_norm, ax_loss = axes[:, 0]
    for part in parts:
        ax_norm.plot(range(1, steps + 1), history[part], linewidth=1.2, label=part)
    ax_norm.set_yscale("log")
    ax_norm.set_ylabel("gradient norm of the part\n(before clipping)")
    ax_norm.set_title("per-part gradient norms over training")
    ax_norm.grid(alpha=0.3, which="both")
    ax_norm.legend(loc="upper right", fontsize=9)
    ax_loss.plot(range(1, steps + 1), losses, color="black", linewidth=1)
    ax_loss.set_ylabel("training loss\n(nats/char)")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.grid(alpha=0.3)
    _common.save(fig, out, "08_gradient_norms.png")

    _common.heading("The token embeddings, projected on their two principal components")
    wte = backend.to_numpy(model.transformer.wte.weight.data).astype(np.float64)   # (V, C)
    fig, axes = _common.figure(1, 2, size=(15, 7))
    for ax, (title, W) in zip(axes[0], (("at initialisation (random)", wte_before.astype(np.float64)),
                                        (f"after {steps} steps", wte))):
        xy, explained = principal_components(W)                   # (V, 2)
        print(f"{title:<28} PC1 explains {explained[0]:.0%} of the variance, PC2 {explained[1]:.0%}")
        for kind, color in COLORS.items():
            rows = [i for i, ch in enumerate(tok.chars) if kind_of(ch) == kind]
            ax.scatter([], [], s=30, color=color, label=kind)     # a legend entry; the characters are the markers
            for i in rows:
                shown = tok.chars[i].replace(" ", "\u2423").replace("\n", "\\n")
                ax.annotate(shown, xy[i], fontsize=10, color=color, ha="center", va="center", fontweight="bold")
        ax.update_datalim(xy)                                     # text alone does not widen the axes
        ax.autoscale_view()
        ax.set_xlabel(f"principal component 1 ({explained[0]:.0%} of the variance)")
        ax.set_ylabel(f"principal component 2 ({explained[1]:.0%} of the variance)")
        ax.set_title(f"token embeddings {title}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    _common.save(fig, out, "08_embedding_pca.png")

    unit = wte / np.linalg.norm(wte, axis=1, keepdims=True)      # (V, C), cosine similarity = dot products
    similarity = unit @ unit.T                                    # (V, V)
    print("nearest characters by cosine similarity of their embeddings:")
    for ch in "aeE.t":
        if ch in tok.index:
            i = tok.index[ch]
            nearest = [j for j in np.argsort(-similarity[i]) if j != i][:4]
            print(f"  {ch!r}: " + ", ".join(f"{tok.chars[j]!r} {similarity[i, j]:.2f}" for j in nearest))


if __name__ == "__main__":
    _common.run(main)

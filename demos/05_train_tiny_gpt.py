"""Lesson 5: a short training run, and how to read its curves.

We train a small character-level GPT on the bundled Shakespeare with tinygpt's own
Trainer (tinygpt/train.py), the loop that ``tinygpt train`` runs. One step:

    x, y = data.get_batch("train")             (B, T) ids and the next character of each
    _, loss = model(x, y)                       mean cross-entropy, in nats per character
    loss.backward()                             every kernel's hand-written backward
    clip_grad_norm(params, 1.0)                 the global gradient norm is at most 1
    optimizer.set_lr(schedule(step)); step()    AdamW at the scheduled learning rate

Then we read the run's log (log.jsonl, one JSON line per step and per evaluation)
and plot the loss, the learning rate and the gradient norm. Last, ``autograd.trace``
lists what ``loss.backward()`` does in one step: the recorded graph, node by node, in
the order the backward pass visits it (llm.c writes the same list by hand in its
``gpt2_backward``).

    python demos/05_train_tiny_gpt.py
"""
import math

import _common
import autograd
from autograd import backend
from tinygpt.generate import generate_text
from tinygpt.plots import read_log


def main():
    p = _common.parser(__file__, "Train a tiny GPT and plot its loss, learning rate and gradient norm.")
    _common.steps_flag(p, quick=40)
    args = p.parse_args()
    out = _common.setup(args)
    steps = args.steps if args.steps is not None else (40 if args.quick else 300)

    _common.heading("Training")
    model = _common.trained_model(args, out, steps)
    vocab = model.config.vocab_size
    records = read_log(out / "model" / "log.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]

    _common.heading("What the numbers say")
    first, last = evals[0], evals[-1]
    print(f"step 0: loss {first['val_loss']:.3f}. An untrained model spreads its probability evenly over the "
          f"{vocab} characters, and -log(1/{vocab}) = ln {vocab} = {math.log(vocab):.3f}: the same number.")
    print(f"step {last['step']}: validation loss {last['val_loss']:.3f} nats/character, i.e. the right next "
          f"character gets on average probability exp(-{last['val_loss']:.2f}) = {math.exp(-last['val_loss']):.2f} "
          f"(perplexity {math.exp(last['val_loss']):.1f} instead of {vocab}).")
    gap = last["val_loss"] - last["train_loss"]
    print(f"validation - train loss = {gap:+.3f}: "
          + ("small, the model has not yet memorised its training text." if gap < 0.1 else
             "the model starts to fit its training text better than unseen text (overfitting)."))
    lrs = [r["lr"] for r in train]
    if lrs[-1] < max(lrs):
        print(f"learning rate: linear warm-up to {max(lrs):.1e}, then a cosine decay down to {lrs[-1]:.1e} "
              "(big steps while far from a minimum, small ones to settle into it).")
    else:   # a run too short to reach its decay
        print(f"learning rate: linear warm-up to {max(lrs):.1e}; the run ended before its cosine decay began.")
    norms = [r["grad_norm"] for r in train if r.get("grad_norm") is not None]
    clipped = sum(n > 1.0 for n in norms)
    print(f"gradient norm: {norms[0]:.2f} at the first step, {norms[-1]:.2f} at the last; "
          f"{clipped} of {len(norms)} steps were clipped to 1.0.")
    worst = max(range(len(norms)), key=lambda i: norms[i])
    if norms[worst] > 1.0 and len(norms) > 1:   # one step has no ordinary gradient to stand out from
        print(f"the largest, {norms[worst]:.1f} at step {train[worst]['step']}, was scaled down {norms[worst]:.1f}-fold "
              "by clipping: a spike (an unlucky batch, or too big a step early in training) enters AdamW's "
              "running averages of g and g^2 no bigger than an ordinary gradient.")
    print("a sample (temperature 0.8):")
    print("  " + generate_text(model, "ROMEO:", max_new_tokens=120, temperature=0.8, seed=0).replace("\n", "\n  "))

    fig, axes = _common.figure(3, 1, size=(9, 9), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 1.2]})
    ax_loss, ax_lr, ax_norm = axes[:, 0]
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", alpha=0.35,
                 linewidth=1, label="train, each step's batch")
    ax_loss.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue",
                 label="train, evaluated")
    ax_loss.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange",
                 label="validation, evaluated")
    ax_loss.axhline(math.log(vocab), color="gray", linestyle=":", label=f"ln V = {math.log(vocab):.2f} (uniform guess)")
    ax_loss.set_ylabel("cross-entropy (nats/char)")
    ax_loss.set_title(f"a {model.config.n_layer}-layer, {model.config.n_embd}-wide character GPT on Shakespeare")
    ax_loss.legend(loc="upper right", fontsize=9)
    ax_loss.grid(alpha=0.3)
    ax_lr.plot([r["step"] for r in train], lrs, color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax_lr.grid(alpha=0.3)
    ax_norm.plot([r["step"] for r in train if r.get("grad_norm") is not None], norms, color="tab:red", linewidth=1)
    ax_norm.axhline(1.0, color="gray", linestyle=":", label="clipping threshold")
    ax_norm.set_yscale("log")
    ax_norm.set_ylabel("gradient norm\n(before clipping)")
    ax_norm.set_xlabel("optimizer step")
    ax_norm.legend(loc="upper right", fontsize=9)
    ax_norm.grid(alpha=0.3, which="both")
    _common.save(fig, out, "05_training_curves.png")
    print(f"(the Trainer also drew its own figure: {out / 'model' / 'loss.png'}; "
          f"`tinygpt plot {out / 'model'}` redraws it from the log)")

    _common.heading("One step's backward pass, node by node")
    ids = backend.rng().integers(0, vocab, (1, 9))
    _, loss = model(ids[:, :-1], ids[:, 1:])                 # one forward pass records the graph
    lines = autograd.trace(loss, names=dict(model.named_parameters()), show=False)
    print("\n".join(lines[:9] + ["   ..."] + lines[-3:]))
    print("Read it top down: the loss's own node first (the fused head and cross-entropy), then each "
          "layer from the last to the first, and the two embeddings last. Every line is one kernel's "
          "backward; after <- come its inputs, #n being the node that computed one: the gradient this line "
          "computes for that input flows on to node n.")


if __name__ == "__main__":
    _common.run(main)

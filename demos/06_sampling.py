"""Lesson 6: from logits to text; greedy, temperature, top-k and top-p side by side.

At each step the model gives one logit z_v per token v of the vocabulary. Sampling
turns them into a distribution and draws the next token from it
(tinygpt/generate.py, ``next_token_distribution``):

    greedy           always the argmax: deterministic, and prone to loops
    temperature tau  p = softmax(z / tau): tau < 1 sharpens, tau > 1 flattens
    top-k            keep the k most likely tokens, renormalise
    top-p (nucleus)  keep the fewest most likely tokens whose total is >= p, renormalise

We take one trained model (trained here in a few seconds, or ``--checkpoint DIR`` from
``tinygpt train``), look at the next-token distribution after a prompt under each
setting, and let each setting write a continuation from the same random seed.

    python demos/06_sampling.py [--checkpoint runs/shakespeare] [--prompt "ROMEO:"]
"""
import _common
from autograd import backend, no_grad
from autograd.backend import np
from tinygpt.generate import generate_text, next_token_distribution

SETTINGS = [  # (label, temperature, top_k, top_p)
    ("greedy", 0.0, None, None),
    ("temperature 0.5", 0.5, None, None),
    ("temperature 1.0", 1.0, None, None),
    ("temperature 1.5", 1.5, None, None),
    ("top-k 5 (temperature 1)", 1.0, 5, None),
    ("top-p 0.9 (temperature 1)", 1.0, None, 0.9),
]


def main():
    p = _common.parser(__file__, "Greedy, temperature, top-k and top-p sampling from one model, side by side.")
    p.add_argument("--checkpoint", default=None, help="a run folder of tinygpt train (default: train a small model here)")
    p.add_argument("--prompt", default="ROMEO:\nWhat sha", help="the text to continue")
    args = p.parse_args()
    out = _common.setup(args)

    _common.heading("The model")
    model = _common.trained_model(args, out, 30 if args.quick else 300)
    tok = model.tokenizer
    ids = _common.prompt_ids(model, args.prompt, "--prompt")[-model.config.block_size:]

    _common.heading(f"The next-token distribution after {args.prompt!r}")
    with no_grad():
        logits, _ = model([ids], last_only=True)                    # (1, 1, V)
    z = backend.to_numpy(logits.data[0, -1]).astype(np.float64)      # (V,) raw logits
    order = np.argsort(-z)                                           # most likely first
    shown = order[:12 if args.quick else 20]                         # the tokens we plot, in this order
    dists = {}
    print(f"{'setting':<28}{'tokens left':>12}{'entropy (nats)':>16}   most likely three")
    for name, temperature, top_k, top_p in SETTINGS:
        probs = next_token_distribution(z, temperature, top_k, top_p)  # (V,) what is sampled from
        dists[name] = probs
        alive = probs > 0
        entropy = max(0.0, -(probs[alive] * np.log(probs[alive])).sum())   # (no "-0.000")
        top3 = ", ".join(f"{_common.token_label(tok, i)} {probs[i]:.2f}"
                         for i in np.argsort(-probs, kind="stable")[:3] if probs[i] > 0)   # cut tokens are not "likely"
        print(f"{name:<28}{int(alive.sum()):>12}{entropy:>16.3f}   {top3}")
    print("greedy keeps one token; a low temperature sharpens the distribution (lower entropy), a high one "
          "flattens it;\ntop-k and top-p cut the long tail of unlikely tokens, which is where nonsense comes from.")

    _common.heading("One continuation per setting, all from random seed 0")
    n_new = 60 if args.quick else 150
    for name, temperature, top_k, top_p in SETTINGS:
        text = generate_text(model, args.prompt, max_new_tokens=n_new, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=0)
        print(f"--- {name} ---")
        print(text.strip("\n"))

    fig, axes = _common.figure(2, 3, size=(15, 7.5), sharey=True)
    positions = np.arange(len(shown))
    for ax, (name, *_) in zip(axes.ravel(), SETTINGS):
        probs = dists[name][shown]
        ax.bar(positions, probs, color="tab:blue", label="this setting")
        reference = dists["temperature 1.0"][shown]                  # the model's own distribution
        ax.step(positions, reference, where="mid", color="black", linewidth=1, alpha=0.5,
                label="temperature 1.0, nothing cut")
        cut = int((probs == 0).sum())
        if cut:
            ax.plot(positions[probs == 0], np.full(cut, 0.02), "x", color="tab:red", label="cut (probability 0)")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(name + (f"  ({cut} of these cut)" if cut else ""), fontsize=10)
        ax.set_xticks(positions)
        ax.set_xticklabels([_common.token_label(tok, i) for i in shown], fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[:, 0]:
        ax.set_ylabel("probability of the next token")
    for ax in axes[1, :]:
        ax.set_xlabel("candidate next token (most likely under the raw logits first)")
    fig.suptitle(f"next token after {_common.shortened(args.prompt)}: "
                 "the same logits under six sampling settings")
    _common.save(fig, out, "06_next_token_distribution.png")


if __name__ == "__main__":
    _common.run(main)

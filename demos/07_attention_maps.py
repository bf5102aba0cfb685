"""Lesson 7: where a trained model looks; attention maps per layer and head.

Every head of every layer computes, for each position i of the text, weights
P[i, j] over the positions j <= i (autograd/kernels/attention.py): row i says how
much of each earlier position's value vector is mixed into position i. The model
hands them out when asked: ``model(ids, attention=maps)`` appends one array
(B, nh, T, T) per layer to the list ``maps``.

We draw them as heatmaps for one sentence (rows: the position reading, columns: the
position read), and summarise each head by its mean attention distance: how far back,
on average, it looks. A head that spread its weight evenly over every earlier position
would look (T - 1) / 4 back on average (the printed baseline); a head well below it reads
mostly the nearby characters (the local spelling), one near it gathers from the whole
context, and one well above it puts its weight on the first tokens (often a default place
to look, a "sink", when nothing nearby helps). A small model trained for seconds has heads that differ only a little; a longer
run (``--checkpoint`` of a ``tinygpt train`` run) separates them more.

    python demos/07_attention_maps.py [--checkpoint runs/shakespeare] [--text "..."]
"""
import _common
from autograd import backend, no_grad
from autograd.backend import np

COLUMNS = 2  # heads per row in each layer's figure


def main():
    p = _common.parser(__file__, "Attention heatmaps of a trained model, per layer and head.")
    p.add_argument("--checkpoint", default=None, help="a run folder of tinygpt train (default: train a small model here)")
    p.add_argument("--text", default="ROMEO:\nI love thee, my lord.", help="the sentence to look at")
    args = p.parse_args()
    out = _common.setup(args)

    _common.heading("The model")
    model = _common.trained_model(args, out, 30 if args.quick else 300)
    tok = model.tokenizer
    ids = _common.prompt_ids(model, args.text, "--text")
    if len(ids) > model.config.block_size:
        print(f"the text is {len(ids)} tokens, the context {model.config.block_size}: using the first "
              f"{model.config.block_size}")
        ids = ids[:model.config.block_size]
    shown = _common.shortened(tok.decode(ids))   # what is drawn, for the titles
    labels = [_common.token_label(tok, i) for i in ids]
    T = len(ids)

    maps = []
    with no_grad():
        model([ids], attention=maps)                             # maps: n_layer arrays (1, nh, T, T)
    P = np.stack([backend.to_numpy(m)[0] for m in maps])         # (n_layer, nh, T, T), on the host
    n_layer, nh = P.shape[:2]

    _common.heading(f"{T} tokens, {n_layer} layers x {nh} heads")
    offsets = np.arange(T)[:, None] - np.arange(T)[None, :]      # (T, T), i - j: how far back j is
    distance = (P * offsets).sum(axis=-1).mean(axis=-1)          # (n_layer, nh): mean over queries i
    previous = np.array([[np.diagonal(P[l, h], offset=-1).mean() for h in range(nh)] for l in range(n_layer)])
    itself = np.array([[np.diagonal(P[l, h]).mean() for h in range(nh)] for l in range(n_layer)])
    even = (T - 1) / 4                                           # mean over i of i/2: weight 1/(i+1) on each j <= i
    lift = P * (np.arange(T)[:, None] + 1)                       # P[i, j] against the even weight 1/(i+1)
    print(f"{'head':<10}{'mean distance':>15}{'on itself':>12}{'on previous':>13}   "
          "strongest link against an even spread (query@i <- key@j)")
    for layer in range(n_layer):
        for head in range(nh):
            m = lift[layer, head].copy()
            m[0, 0] = 0                                          # the first token can only look at itself
            i, j = np.unravel_index(np.argmax(m), m.shape)
            print(f"{layer}.{head:<8}{distance[layer, head]:>15.2f}{itself[layer, head]:>12.2f}"
                  f"{previous[layer, head]:>13.2f}   {labels[i]!s}@{i} <- {labels[j]!s}@{j} "
                  f"(P {P[layer, head, i, j]:.2f}, {m[i, j]:.1f}x even)")
    print(f"mean distance: sum_j P[i, j] (i - j), averaged over i; spread evenly it would be (T - 1) / 4 = {even:.2f}. "
          "'on itself' and 'on previous' average P[i, i] and P[i, i-1].")

    from matplotlib.colors import PowerNorm
    from matplotlib import colormaps
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)             # a square-root scale: small weights stay visible
    cmap = colormaps["viridis"].with_extremes(bad="white")     # the future (masked) drawn blank
    future = np.triu(np.ones((T, T), dtype=bool), k=1)          # (T, T), j > i
    size = min(2.5 + 0.12 * T, 7.0)                             # a heatmap's side in inches, grows with T
    font = 8 if T <= 40 else 6
    for stale in out.glob("07_attention_layer*.png"):   # a deeper model's figures from an earlier run
        stale.unlink()
    for layer in range(n_layer):
        cols = min(COLUMNS, nh)
        rows = -(-nh // cols)
        fig, axes = _common.figure(rows, cols, size=(cols * size + 1.5, rows * size + 0.8))
        for head, ax in enumerate(axes.ravel()):
            if head >= nh:
                ax.axis("off")
                continue
            image = ax.imshow(np.where(future, np.nan, P[layer, head]), cmap=cmap, norm=norm)
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.set_xticklabels(labels, fontsize=font)
            ax.set_yticklabels(labels, fontsize=font)
            ax.set_xlabel("key: the position read (j)")
            if head % cols == 0:
                ax.set_ylabel("query: the position reading (i)")
            ax.set_title(f"head {head}: mean distance {distance[layer, head]:.1f}", fontsize=10)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5, label="attention weight P[i, j] (square-root scale)")
        fig.suptitle(f"layer {layer}: attention weights on {shown}")
        _common.save(fig, out, f"07_attention_layer{layer}.png")

    fig, ax = _common.figure(size=(1.6 + 0.9 * nh, 1.4 + 0.7 * n_layer))
    image = ax.imshow(distance, cmap="magma", aspect="auto", vmin=0)   # from 0: differences at their true size
    for (layer, head), value in np.ndenumerate(distance):
        ax.text(head, layer, f"{value:.1f}", ha="center", va="center", fontsize=9,
                color="black" if value > distance.max() / 2 else "white")   # dark text on the bright half
    ax.set_xticks(range(nh))
    ax.set_yticks(range(n_layer))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"mean attention distance (positions back; spread evenly: {even:.1f})", fontsize=10)
    fig.colorbar(image, ax=ax, label="positions")
    _common.save(fig, out, "07_attention_distance.png")


if __name__ == "__main__":
    _common.run(main)

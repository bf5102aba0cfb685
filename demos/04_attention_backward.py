"""Lesson 4: causal attention's backward pass, derived one step at a time.

The forward pass of autograd/kernels/attention.py, for one head (q, k, v are (T, hs)):

    S = q k^T / sqrt(hs)                 scores, (T, T)
    S[i, j] = -inf where j > i           the causal mask: no looking at the future
    P[i, :] = softmax(S[i, :])           attention weights, each row sums to 1
    out = P v                            (T, hs)

With g = dL/dout given, we go back through the lines: dv and dP from the matrix
product, dS from the softmax, then dq and dk from the scores. Every intermediate is
checked numerically: treated as a free input of the rest of the forward pass, nudged
by +-h, and the central difference of L compared with the formula. Finally the kernel
itself, on the chosen device, is compared with the derivation.

    python demos/04_attention_backward.py
"""
import _common
from autograd import F, Tensor, backend
from autograd.backend import np

H = 1e-6


def softmax_rows(s):
    """Row-wise softmax; rows may hold -inf (masked), which become exactly 0."""
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main():
    args = _common.parser(__file__, "Attention's backward derived step by step, each step checked.").parse_args()
    out = _common.setup(args)
    T, hs = (4, 3) if args.quick else (6, 4)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((T, hs))           # (T, hs)
    k = rng.standard_normal((T, hs))           # (T, hs)
    v = rng.standard_normal((T, hs))           # (T, hs)
    g = rng.standard_normal((T, hs))           # (T, hs), g = dL/dout; L = sum(g * out)
    scale = 1.0 / np.sqrt(hs)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)   # (T, T), True where j > i

    def rest(q, k, v, S=None, P=None):
        """L from q, k, v, except that S or P, if given, is used as a free input."""
        if S is None:
            S = np.where(future, -np.inf, q @ k.T * scale)   # (T, T)
        if P is None:
            P = softmax_rows(S)                               # (T, T)
        return float((g * (P @ v)).sum())

    def numeric(name, value):
        """dL/d(value) by central differences: nudge one element at a time."""
        grad = np.zeros_like(value)
        inputs = {"q": q, "k": k, "v": v}
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += H                                  # -inf + h stays -inf: masked scores do not move
            minus[index] -= H
            if name in inputs:
                lp = rest(**{**inputs, name: plus})
                lm = rest(**{**inputs, name: minus})
            else:
                lp = rest(q, k, v, **{name: plus})
                lm = rest(q, k, v, **{name: minus})
            grad[index] = (lp - lm) / (2 * H)
        return grad

    def show(label, formula, analytic, name, value):
        err = np.abs(analytic - numeric(name, value)).max()
        print(f"{label:<6} = {formula:<44} shape {analytic.shape}, numeric check: max |diff| = {err:.1e}")
        assert err < 1e-6, f"{label} disagrees with finite differences"
        return analytic

    _common.heading(f"Forward, one head, T = {T} positions, head size hs = {hs}")
    S = np.where(future, -np.inf, q @ k.T * scale)
    P = softmax_rows(S)
    print("P (row i: how much position i attends to each position j <= i):")
    print(np.array2string(P, precision=3, suppress_small=True))
    print(f"row sums: {np.array2string(P.sum(axis=1), precision=6)}")

    _common.heading("Backward, one line of the forward at a time")
    print("out = P v, a matrix product (see linear.py): the gradient of each factor is g times the other")
    dv = show("dv", "P^T g", P.T @ g, "v", v)
    dP = show("dP", "g v^T", g @ v.T, "P", P)
    print("\nP[i,:] = softmax(S[i,:]): the partial derivative of P_ij by S_il is P_ij (delta_jl - P_il),")
    print("so the chain rule over j gives dS_il = sum_j dP_ij P_ij (delta_jl - P_il) = P_il (dP_il - sum_j dP_ij P_ij)")
    row = (dP * P).sum(axis=1, keepdims=True)                   # (T, 1), sum_j dP_ij P_ij: one number per row i
    dS = show("dS", "P * (dP - sum_j dP_ij P_ij)", P * (dP - row), "S", S)
    print(f"{'':<9}where P = 0 (the future) dS = 0 exactly: masked scores send no gradient back."
          f" max |dS| above the diagonal = {np.abs(dS[future]).max() if future.any() else 0.0:.1e}")
    print("\nS = q k^T / sqrt(hs), a matrix product again:")
    dq = show("dq", "dS k / sqrt(hs)", dS @ k * scale, "q", q)
    dk = show("dk", "dS^T q / sqrt(hs)", dS.T @ q * scale, "k", k)

    _common.heading(f"The kernel itself (autograd/kernels/attention.py) on {backend.device_info()}")
    tensors = [Tensor(a[None, None], dtype="float64", requires_grad=True) for a in (q, k, v)]  # (1, 1, T, hs)
    weights = []
    result = F.causal_attention(*tensors, weights=weights)
    (result * Tensor(g[None, None], dtype="float64")).sum().backward()
    print(f"P:  max |engine - derivation| = {np.abs(backend.to_numpy(weights[0])[0, 0] - P).max():.1e}")
    for name, t, ours in zip(("dq", "dk", "dv"), tensors, (dq, dk, dv)):
        print(f"{name}: max |engine - derivation| = {np.abs(backend.to_numpy(t.grad)[0, 0] - ours).max():.1e}")

    # Figure: the four (T, T) matrices of the derivation, with their values written in.
    from matplotlib import colormaps
    cmap = colormaps["RdBu_r"].with_extremes(bad="lightgrey")  # masked (NaN) cells in grey
    fig, axes = _common.figure(1, 4, size=(17, 4.8))
    panels = [("scores S = q k^T / sqrt(hs)\n(grey: masked, -inf)", np.where(future, np.nan, S)),
              ("weights P = softmax(S)", P),
              ("dP = g v^T", dP),
              ("dS = P * (dP - rowsum(dP * P))\n(0 where P = 0; row 0 all 0: its one P is 1)", dS)]
    for ax, (title, m) in zip(axes[0], panels):
        limit = np.nanmax(np.abs(m))
        if m is P:                                              # probabilities: 0 (white) .. 1
            image = ax.imshow(m, cmap="Reds", vmin=0.0, vmax=1.0)
        else:                                                   # signed: 0 is white, red +, blue -
            image = ax.imshow(m, cmap=cmap, vmin=-limit, vmax=limit)
        for (i, j), value in np.ndenumerate(m):
            if np.isnan(value):
                continue
            text = "0" if abs(value) < 0.005 else f"{value:.2f}"   # zeros (the mask; row 0's rounding) as a plain 0
            dark = abs(value) > 0.6 * limit                     # white text on dark cells
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        fig.colorbar(image, ax=ax, shrink=0.75)
    fig.suptitle("causal attention, one head: the forward (left) and the backward (right)")
    _common.save(fig, out, "04_attention_backward.png")


if __name__ == "__main__":
    _common.run(main)

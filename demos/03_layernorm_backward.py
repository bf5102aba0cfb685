"""Lesson 3: layernorm's backward pass, derived one step at a time.

The forward pass of autograd/kernels/layernorm.py, per row of C channels (i, j run
over the channels):

    mu     = (1/C) sum_i x_i
    var    = (1/C) sum_i (x_i - mu)^2
    rstd   = 1 / sqrt(var + eps)
    xhat_i = (x_i - mu) * rstd
    y_i    = w_i * xhat_i + b_i

With g = dL/dy given, we walk back through these lines, computing the gradient of L
with respect to each intermediate (xhat, rstd, var, mu, then x). Every one is checked
numerically: we treat that intermediate as a free input of the rest of the forward
pass, nudge it by +-h, and take the central difference of L. At the end the three
paths from x to L (direct, through mu, through var) are summed, simplified to the
kernel's compact formula, and compared with the kernel itself.

    python demos/03_layernorm_backward.py
"""
import _common
from autograd import F, Tensor, backend
from autograd.backend import np

EPS = 1e-5
H = 1e-6


def main():
    args = _common.parser(__file__, "LayerNorm's backward derived step by step, each step checked.").parse_args()
    out = _common.setup(args)
    N, C = (2, 6) if args.quick else (3, 8)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C)) * 2 + 0.5     # (N, C)
    w = 1.0 + 0.5 * rng.standard_normal(C)        # (C,)
    b = 0.1 * rng.standard_normal(C)              # (C,)
    g = rng.standard_normal((N, C))               # (N, C), g = dL/dy; L = sum(g * y)

    def rest(x, mu=None, var=None, rstd=None, xhat=None):
        """L computed from x, except that any intermediate given is used as is (a free
        input) instead of being computed from the lines above it."""
        if mu is None:
            mu = x.mean(axis=1, keepdims=True)                      # (N, 1)
        if var is None:
            var = ((x - mu) ** 2).mean(axis=1, keepdims=True)       # (N, 1)
        if rstd is None:
            rstd = 1.0 / np.sqrt(var + EPS)                         # (N, 1)
        if xhat is None:
            xhat = (x - mu) * rstd                                  # (N, C)
        y = w * xhat + b                                            # (N, C)
        return float((g * y).sum())

    def numeric(name, value):
        """dL/d(value) by central differences, with value (an intermediate named
        ``name``, or x itself) as a free input and everything below it recomputed."""
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += H
            minus[index] -= H
            if name == "x":
                grad[index] = (rest(plus) - rest(minus)) / (2 * H)
            else:
                grad[index] = (rest(x, **{name: plus}) - rest(x, **{name: minus})) / (2 * H)
        return grad

    def show(label, formula, analytic, name, value):
        check = numeric(name, value)
        err = np.abs(analytic - check).max()
        first = np.atleast_1d(analytic[0]).ravel()                    # row 0: C values, or one per row
        row0 = f"{first[0]:.4f}" if first.size == 1 else np.array2string(first, precision=4, suppress_small=True)
        print(f"{label:<10} = {formula}")
        print(f"{'':<10}   row 0: {row0}")
        print(f"{'':<10}   numeric check (nudge {name}, central difference): max |diff| = {err:.1e}")
        assert err < 1e-6, f"{label} disagrees with finite differences"
        return analytic

    _common.heading(f"Forward, {N} rows of C = {C} channels (row 0 shown)")
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mu) * rstd
    print(f"x[0]    = {np.array2string(x[0], precision=4)}")
    print(f"mu[0]   = {mu[0, 0]:.6f}    var[0] = {var[0, 0]:.6f}    rstd[0] = {rstd[0, 0]:.6f}")
    print(f"xhat[0] = {np.array2string(xhat[0], precision=4)}   (mean 0, variance 1)")
    print(f"L = sum(g * y) = {rest(x):.6f}")

    _common.heading("Backward, one line of the forward at a time")
    print("y_i = w_i xhat_i + b_i: the parameters' gradients sum over rows, and dL/dxhat is local")
    dw = (g * xhat).sum(axis=0)                                     # (C,)
    db = g.sum(axis=0)                                              # (C,)
    print(f"dL/dw_i   = sum over rows of g_i xhat_i = {np.array2string(dw, precision=4)}")
    print(f"dL/db_i   = sum over rows of g_i        = {np.array2string(db, precision=4)}")
    dxhat = show("dL/dxhat", "g_i * w_i", g * w, "xhat", xhat)

    print("\nxhat_i = (x_i - mu) rstd: rstd is shared by the whole row, so its gradient sums over i")
    drstd = show("dL/drstd", "sum_i dxhat_i (x_i - mu)", (dxhat * (x - mu)).sum(axis=1, keepdims=True),
                 "rstd", rstd)

    print("\nrstd = (var + eps)^(-1/2): d rstd / d var = -(1/2)(var + eps)^(-3/2) = -(1/2) rstd^3")
    dvar = show("dL/dvar", "dL/drstd * (-1/2) rstd^3", drstd * -0.5 * rstd ** 3, "var", var)

    print("\nmu reaches L twice: through xhat_i = (x_i - mu) rstd, and through var = mean((x - mu)^2)")
    dmu_direct = -rstd * dxhat.sum(axis=1, keepdims=True)           # (N, 1)
    dmu_var = dvar * (-2.0 * (x - mu)).mean(axis=1, keepdims=True)  # (N, 1): zero, sum_i (x_i - mu) = 0
    print(f"{'':<10}   through var: dL/dvar * mean_i(-2 (x_i - mu)) = {dmu_var[0, 0]:.1e}  (zero: the deviations sum to 0)")
    dmu = show("dL/dmu", "-rstd sum_i dxhat_i  (+ the zero term)", dmu_direct + dmu_var, "mu", mu)

    print("\nx_j reaches L by three paths: directly through xhat_j, through mu, through var")
    path_direct = dxhat * rstd                                      # (N, C)
    path_mu = np.broadcast_to(dmu / C, (N, C))                      # d mu / d x_j = 1/C
    path_var = dvar * 2.0 * (x - mu) / C                            # d var / d x_j = 2 (x_j - mu) / C
    dx = show("dL/dx", "dxhat_j rstd + dL/dmu / C + dL/dvar 2 (x_j - mu) / C",
              path_direct + path_mu + path_var, "x", x)

    _common.heading("Simplify: the compact formula in layernorm.py")
    # Substitute dL/dmu = -rstd sum dxhat and dL/dvar = -(1/2) rstd^3 sum dxhat (x - mu):
    #   dL/dx_j = rstd (dxhat_j - mean_i dxhat_i - xhat_j mean_i(dxhat_i xhat_i))
    compact = rstd * (dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    print("dL/dx_j = rstd * ( dxhat_j - mean_i(dxhat_i) - xhat_j * mean_i(dxhat_i xhat_i) )")
    print(f"max |three paths - compact formula| = {np.abs(compact - dx).max():.1e}")

    _common.heading(f"The kernel itself (autograd/kernels/layernorm.py) on {backend.device_info()}")
    xt = Tensor(x, dtype="float64", requires_grad=True)
    wt = Tensor(w, dtype="float64", requires_grad=True)
    bt = Tensor(b, dtype="float64", requires_grad=True)
    (F.layer_norm(xt, wt, bt, EPS) * Tensor(g, dtype="float64")).sum().backward()
    for name, engine, ours in (("x", xt.grad, dx), ("w", wt.grad, dw), ("b", bt.grad, db)):
        print(f"dL/d{name}: max |engine - derivation| = {np.abs(backend.to_numpy(engine) - ours).max():.1e}")

    # Figure: the three paths of dL/dx for row 0, and the Jacobian d xhat / d x.
    fig, axes = _common.figure(1, 2, size=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    ax_paths, ax_jac = axes[0]
    channels = np.arange(C)
    bar = 0.27
    ax_paths.bar(channels - bar, path_direct[0], bar, label="direct: dxhat_j rstd", color="tab:blue")
    ax_paths.bar(channels, path_mu[0], bar, label="through mu: dL/dmu / C", color="tab:orange")
    ax_paths.bar(channels + bar, path_var[0], bar, label="through var: dL/dvar 2(x_j - mu)/C", color="tab:purple")
    ax_paths.plot(channels, dx[0], "k*", markersize=11, label="dL/dx_j (the sum)")
    ax_paths.axhline(0, color="gray", linewidth=0.8)
    ax_paths.set_xticks(channels)
    ax_paths.set_xlabel("channel j (row 0)")
    ax_paths.set_ylabel("contribution to dL/dx_j")
    ax_paths.set_title("dL/dx for one row: three paths from x_j to L")
    ax_paths.grid(alpha=0.3, axis="y")
    ax_paths.legend(fontsize=9, loc="best")

    jac = rstd[0, 0] * (np.eye(C) - 1.0 / C - np.outer(xhat[0], xhat[0]) / C)   # d xhat_i / d x_j
    limit = np.abs(jac).max()
    image = ax_jac.imshow(jac, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax_jac.set_xticks(channels)
    ax_jac.set_yticks(channels)
    ax_jac.set_xlabel("input channel j")
    ax_jac.set_ylabel("output channel i")
    ax_jac.set_title("Jacobian d xhat_i / d x_j = rstd (delta_ij - 1/C - xhat_i xhat_j / C)", fontsize=10)
    fig.colorbar(image, ax=ax_jac, shrink=0.8)
    _common.save(fig, out, "03_layernorm_paths.png")


if __name__ == "__main__":
    _common.run(main)

"""Lesson 2: checking a hand-written gradient with finite differences.

A derivative is a limit: dL/dx_k = lim_{h->0} (L(x + h e_k) - L(x)) / h. With a small
but finite h we can evaluate it with two forward passes and no calculus at all:

    forward difference   (L(x + h e_k) - L(x)) / h               error ~ h       (Taylor: h/2 L'')
    central difference   (L(x + h e_k) - L(x - h e_k)) / (2h)    error ~ h^2     (the L'' terms cancel)

Too small an h fails too: L is computed with rounding error ~1e-16 |L| (float64) and the
difference divides it by h. The best h balances the two (about 1e-5 to 1e-6 for the
central difference in float64), and float32 (rounding ~1e-7) is far too coarse to check
anything finely. That is why ``autograd.gradcheck`` works in float64 with eps = 1e-6.

We run this on layernorm (autograd/kernels/layernorm.py), then give the check a
layernorm whose backward forgets one path of the chain rule, and watch it get caught.

    python demos/02_gradient_check.py
"""
import _common
from autograd import F, GradcheckError, Tensor, backend, gradcheck, no_grad
from autograd.backend import np
from autograd.kernels.layernorm import LayerNorm

N, C = 4, 8   # 4 rows of 8 channels: 32 elements of x, each checked


class ForgetfulLayerNorm(LayerNorm):
    """A layernorm with a deliberately broken backward: dL/dx leaves out the path
    through the variance (the term xhat_j * mean_i(dxhat_i xhat_i)). A mistake that
    is easy to make and hard to see: the result has the right shape and roughly the
    right size."""

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved
        g2 = g.reshape(-1, xhat.shape[1])                     # (N, C)
        dxhat = g2 * weight                                   # (N, C)
        dx = (dxhat - dxhat.mean(axis=1, keepdims=True)) * rstd   # direct + mean paths only
        return dx.reshape(ctx.shape), (g2 * xhat).sum(axis=0), g2.sum(axis=0), None


def main():
    args = _common.parser(__file__, "Finite differences, run on layernorm; a broken backward caught.").parse_args()
    out = _common.setup(args)
    rng = np.random.default_rng(0)
    x0 = backend.asarray(rng.standard_normal((N, C)))        # (N, C) float64
    w = Tensor(1.0 + 0.5 * rng.standard_normal(C), dtype="float64", requires_grad=True)   # (C,)
    b = Tensor(0.1 * rng.standard_normal(C), dtype="float64", requires_grad=True)         # (C,)
    g = backend.asarray(rng.standard_normal((N, C)))          # (N, C) weights of the outputs: L = sum(g * y)

    def loss(x_data, dtype="float64"):
        """L(x) = sum(g * layer_norm(x)), forward only (no graph)."""
        with no_grad():
            y = F.layer_norm(Tensor(x_data, dtype=dtype), w.astype(dtype), b.astype(dtype))
        return float((y.data.astype("float64") * g).sum())

    # The analytic gradient: one backward pass through the hand-written kernel.
    x = Tensor(x0, dtype="float64", requires_grad=True)
    (F.layer_norm(x, w, b) * Tensor(g, dtype="float64")).sum().backward()
    analytic = backend.to_numpy(x.grad)                       # (N, C)

    _common.heading("One element, by hand: x[0, 0]")
    k = (0, 0)
    h = 1e-6
    plus, minus = x0.copy(), x0.copy()
    plus[k] += h
    minus[k] -= h
    central = (loss(plus) - loss(minus)) / (2 * h)
    print(f"L(x + h e) = {loss(plus):.12f}    L(x - h e) = {loss(minus):.12f}    h = {h:g}")
    print(f"central difference (L+ - L-) / 2h = {central:.10f}")
    print(f"backward's dL/dx[0, 0]            = {analytic[k]:.10f}    |difference| = {abs(central - analytic[k]):.1e}")

    _common.heading("How the error depends on h (float64 and float32)")
    hs = np.logspace(-12, -1, 12 if args.quick else 45)
    errors = {"forward difference, float64": [], "central difference, float64": [],
              "central difference, float32": []}
    base = loss(x0)
    for step in hs:
        plus, minus = x0.copy(), x0.copy()
        plus[k] += step
        minus[k] -= step
        errors["forward difference, float64"].append(abs((loss(plus) - base) / step - analytic[k]))
        errors["central difference, float64"].append(abs((loss(plus) - loss(minus)) / (2 * step) - analytic[k]))
        # float32: the same formula, but x, w, b and the forward pass are rounded to float32
        p32 = (loss(plus, "float32") - loss(minus, "float32")) / (2 * step)
        errors["central difference, float32"].append(abs(p32 - analytic[k]))
    for name, errs in errors.items():
        best = int(np.argmin(errs))
        print(f"{name:<30} best h = {hs[best]:.0e}, error {errs[best]:.1e}")

    fig, ax = _common.figure(size=(8, 5))
    styles = {"forward difference, float64": ("tab:blue", "o-"), "central difference, float64": ("tab:green", "s-"),
              "central difference, float32": ("tab:red", "^-")}
    for name, errs in errors.items():
        color, marker = styles[name]
        ax.loglog(hs, np.maximum(errs, 1e-17), marker, color=color, markersize=3, label=name)
    ax.axvline(1e-6, color="gray", linestyle=":", label="gradcheck's eps = 1e-6")
    ax.set_xlabel("step h")
    ax.set_ylabel("|finite difference - backward's gradient|")
    ax.set_title("layernorm, dL/dx[0, 0]: truncation error (right) vs rounding error (left)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=9)
    _common.save(fig, out, "02_error_vs_step.png")

    _common.heading("autograd.gradcheck on layernorm: every element of x, w and b")
    xt = Tensor(x0, dtype="float64", requires_grad=True, name="x")
    report = gradcheck(lambda x_, w_, b_: F.layer_norm(x_, w_, b_), [xt, w, b])
    for name, n_el, abs_err, rel_err in zip(("x", "w", "b"), report.checked, report.max_abs_error, report.max_rel_error):
        print(f"{name}: {n_el:3d} elements checked, worst abs error {abs_err:.1e}, worst rel error {rel_err:.1e}")
    print("passed: the hand-written backward agrees with finite differences")

    _common.heading("A deliberately broken backward (the variance path forgotten)")
    broken = ForgetfulLayerNorm.apply
    try:
        gradcheck(lambda x_, w_, b_: broken(x_, w_, b_, 1e-5), [xt, w, b])
        print("NOT CAUGHT: the broken backward passed the check (this should not happen)")
    except GradcheckError as exc:
        print("caught: the gradient check rejected the broken backward")
        print("  " + str(exc)[:300])
        print("  (gradcheck reduces the output to one number with its own fixed random weights, not this")
        print("  lesson's g, so these values are a different dL/dx from the one compared above)")

    # Scatter of every element of dL/dx: numeric (x axis) against analytic (y axis).
    numeric = np.zeros((N, C))
    for i in range(N):
        for j in range(C):
            plus, minus = x0.copy(), x0.copy()
            plus[i, j] += 1e-6
            minus[i, j] -= 1e-6
            numeric[i, j] = (loss(plus) - loss(minus)) / 2e-6
    xb = Tensor(x0, dtype="float64", requires_grad=True)
    (broken(xb, w, b, 1e-5) * Tensor(g, dtype="float64")).sum().backward()
    wrong = backend.to_numpy(xb.grad)
    fig, ax = _common.figure(size=(6, 6))
    lim = 1.1 * max(abs(numeric).max(), abs(wrong).max())
    ax.plot([-lim, lim], [-lim, lim], color="gray", linewidth=1, label="analytic = numeric")
    ax.plot(numeric.ravel(), analytic.ravel(), "o", color="tab:green", label="layernorm.py's backward")
    ax.plot(numeric.ravel(), wrong.ravel(), "x", color="tab:red", label="backward without the variance path")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("numeric dL/dx (central difference, h = 1e-6)")
    ax.set_ylabel("analytic dL/dx (backward)")
    ax.set_title(f"all {N * C} elements of dL/dx")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    _common.save(fig, out, "02_broken_backward_caught.png")


if __name__ == "__main__":
    _common.run(main)

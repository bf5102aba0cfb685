"""Lesson 1: the chain rule by hand, and the engine doing the same.

We take one small expression of three numbers,

    e = a * b
    d = e + c
    t = tanh(d)
    L = t * a          (a is used twice: its gradient is the sum of two paths)

work out dL/da, dL/db, dL/dc by the chain rule, one node at a time from L back to the
inputs, and print them next to what ``L.backward()`` computes. The figure shows what a
gradient means: the slope of L when one input moves and the others stay put.

    python demos/01_autograd_by_hand.py
"""
import math

import _common
from autograd import Tensor, backend

A, B, C = 0.5, -1.5, 2.0


def forward(a, b, c):
    """The expression, for Tensors or plain floats alike (tanh picks the right one)."""
    e = a * b
    d = e + c
    t = d.tanh() if isinstance(d, Tensor) else math.tanh(d)
    return t * a


def main():
    args = _common.parser(__file__, "The chain rule by hand next to the engine's backward().").parse_args()
    out = _common.setup(args)

    _common.heading("Forward: compute and remember every intermediate value")
    e = A * B
    d = e + C
    t = math.tanh(d)
    L = t * A
    print(f"a = {A}, b = {B}, c = {C}")
    print(f"e = a * b     = {e:.6f}")
    print(f"d = e + c     = {d:.6f}")
    print(f"t = tanh(d)   = {t:.6f}")
    print(f"L = t * a     = {L:.6f}")

    _common.heading("Backward: from L to the inputs, one local derivative at a time")
    # Each line multiplies the gradient arriving from above (dL/d output) by the local
    # derivative of one node (d output / d input): that product is the chain rule.
    dL_dL = 1.0
    dL_dt = dL_dL * A                 # L = t * a      ->  dL/dt = a
    dL_da_direct = dL_dL * t          # L = t * a      ->  dL/da = t   (first path to a)
    dL_dd = dL_dt * (1 - t * t)       # t = tanh(d)    ->  dt/dd = 1 - tanh(d)^2
    dL_dc = dL_dd * 1.0               # d = e + c      ->  dd/dc = 1
    dL_de = dL_dd * 1.0               # d = e + c      ->  dd/de = 1
    dL_db = dL_de * A                 # e = a * b      ->  de/db = a
    dL_da_via_e = dL_de * B           # e = a * b      ->  de/da = b   (second path to a)
    dL_da = dL_da_direct + dL_da_via_e  # a reaches L by two paths: their gradients add up
    print("dL/dL = 1")
    print(f"dL/dt = a                        = {dL_dt:.6f}")
    print(f"dL/dd = dL/dt * (1 - t^2)        = {dL_dt:.6f} * {1 - t * t:.6f} = {dL_dd:.6f}")
    print(f"dL/dc = dL/dd * 1                = {dL_dc:.6f}")
    print(f"dL/de = dL/dd * 1                = {dL_de:.6f}")
    print(f"dL/db = dL/de * a                = {dL_de:.6f} * {A} = {dL_db:.6f}")
    print(f"dL/da = t + dL/de * b            = {t:.6f} + {dL_de:.6f} * {B} = {dL_da:.6f}")
    print("        (path L = t*a)  (path through e = a*b)")

    _common.heading("The engine: the same graph, recorded as it runs, then L.backward()")
    a = Tensor(A, dtype="float64", requires_grad=True)
    b = Tensor(B, dtype="float64", requires_grad=True)
    c = Tensor(C, dtype="float64", requires_grad=True)
    loss = forward(a, b, c)
    loss.backward()   # visits L = t*a, tanh, add, e = a*b: the forward in reverse; each backward is a line above
    print(f"engine's L = {float(loss.data):.6f}  (device: {backend.device_info()})")
    print(f"{'input':<6}{'by hand':>14}{'engine':>14}{'difference':>14}")
    worst = 0.0
    for name, by_hand, leaf in (("a", dL_da, a), ("b", dL_db, b), ("c", dL_dc, c)):
        engine = float(backend.to_numpy(leaf.grad))
        worst = max(worst, abs(engine - by_hand))
        print(f"{name:<6}{by_hand:>14.8f}{engine:>14.8f}{engine - by_hand:>14.1e}")
    print(f"largest difference: {worst:.1e} (rounding only: the engine applies the same rules)")

    # The figure: L against each input, the others fixed, with the tangent line whose
    # slope is the gradient. Near the point the tangent and the curve agree.
    fig, axes = _common.figure(1, 3, size=(13, 4))
    grads = {"a": dL_da, "b": dL_db, "c": dL_dc}
    point = {"a": A, "b": B, "c": C}
    width = 0.6 if args.quick else 1.5
    steps = 41 if args.quick else 201
    for ax, name in zip(axes[0], ("a", "b", "c")):
        xs = [point[name] - width + 2 * width * i / (steps - 1) for i in range(steps)]
        ys = []
        for x in xs:
            values = dict(point)
            values[name] = x
            ys.append(forward(values["a"], values["b"], values["c"]))
        tangent = [L + grads[name] * (x - point[name]) for x in xs]
        ax.plot(xs, ys, color="tab:blue", label=f"L as {name} varies")
        ax.plot(xs, tangent, "--", color="tab:orange", label=f"tangent, slope dL/d{name} = {grads[name]:.3f}")
        ax.plot([point[name]], [L], "o", color="black")
        ax.set_xlabel(name)
        ax.set_ylabel("L")
        ax.set_title(f"dL/d{name}: the slope at {name} = {point[name]}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("L = tanh(a*b + c) * a: each gradient is the slope of L along one input")
    _common.save(fig, out, "01_gradient_is_slope.png")


if __name__ == "__main__":
    _common.run(main)

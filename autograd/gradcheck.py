"""Check hand-written gradients against central finite differences, in float64.

For a function f of tensors x (every input that requires grad), and an output y = f(x)
of any shape, we reduce to one number with a fixed random projection R:

    L(x) = sum(f(x) * R)        (R ~ N(0, 1), seeded: every output element matters)

and compare, for each checked element x_k, the engine's dL/dx_k (one backward pass)
with the central difference

    (L(x + eps e_k) - L(x - eps e_k)) / (2 eps)      error O(eps^2)

An element passes when |analytic - numeric| <= atol + rtol * |numeric|. The absolute
term matters: some gradients are exactly zero by symmetry (the key bias in attention,
since softmax ignores a constant shift), and a purely relative test of a zero is noise.
float64 keeps the rounding error of the difference (about 1e-16 / eps) far below atol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import backend
from .function import no_grad
from .tensor import Tensor

__all__ = ["gradcheck", "GradcheckError", "GradcheckReport"]


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the finite-difference one."""


@dataclass
class GradcheckReport:
    """Per input: the number of elements checked and the worst errors seen."""

    checked: list = field(default_factory=list)
    max_abs_error: list = field(default_factory=list)
    max_rel_error: list = field(default_factory=list)
    ok: bool = True

    @property
    def worst_rel_error(self) -> float:
        return max(self.max_rel_error, default=0.0)

    @property
    def worst_abs_error(self) -> float:
        return max(self.max_abs_error, default=0.0)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, max_elements=200, seed=0, raise_on_failure=True):
    """Compare ``fn``'s backward with central differences for every input requiring grad.

    ``inputs`` is a list of Tensors (float64); ``fn(*inputs)`` returns a Tensor. Inputs
    with at most ``max_elements`` elements are checked at every element, larger ones
    at a seeded random subset of that many. Returns a GradcheckReport; on failure
    raises GradcheckError naming the input, the worst element's index, and the
    analytic and numeric values.
    """
    xp = backend.xp()
    inputs = list(inputs)
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != xp.float64:
            raise TypeError(f"gradcheck: input {i} is {t.dtype}; finite differences need float64 "
                            "(create it with dtype='float64')")
    with no_grad():
        probe = fn(*inputs)
    projection = backend.asarray(backend.np.random.default_rng(seed).standard_normal(probe.shape))

    def objective():
        with no_grad():
            out = fn(*inputs)
        return float((out.data * projection).sum())

    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    out = fn(*inputs)
    (out * Tensor(projection, dtype="float64")).sum().backward()

    picker = backend.np.random.default_rng(seed + 1)
    report = GradcheckReport()
    failures = []
    for i, t in enumerate(inputs):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = backend.to_numpy(t.grad if t.grad is not None else xp.zeros_like(t.data)).reshape(-1)
        n = t.data.size
        positions = range(n) if n <= max_elements else sorted(picker.choice(n, max_elements, replace=False).tolist())
        worst_abs = worst_rel = 0.0
        worst = None
        for k in positions:
            at = backend.np.unravel_index(k, t.shape)  # works on any layout, transposed views too
            original = float(t.data[at])
            t.data[at] = original + eps
            plus = objective()
            t.data[at] = original - eps
            minus = objective()
            t.data[at] = original
            numeric = (plus - minus) / (2 * eps)
            err = abs(analytic[k] - numeric)
            rel = err / max(abs(numeric), 1e-12)
            worst_abs = max(worst_abs, err)
            if abs(numeric) > atol:  # relative error is meaningful only away from zero
                worst_rel = max(worst_rel, rel)
            if err > atol + rtol * abs(numeric) and (worst is None or err > worst[1]):
                worst = (k, err, float(analytic[k]), numeric)
        report.checked.append(len(positions))
        report.max_abs_error.append(float(worst_abs))
        report.max_rel_error.append(float(worst_rel))
        if worst is not None:
            k, err, a, num = worst
            index = tuple(int(j) for j in backend.np.unravel_index(k, t.shape))
            label = t.name or f"input {i}"
            failures.append(f"{label} {tuple(t.shape)} at index {index}: analytic {a:.10g}, numeric "
                            f"{num:.10g}, |diff| {err:.3g} > atol {atol:g} + rtol {rtol:g} * |numeric|")
    if failures and raise_on_failure:
        raise GradcheckError("gradcheck failed: " + "; ".join(failures))
    report.ok = not failures
    return report


"""GELU, the tanh approximation used by OpenAI's GPT-2 (Hugging Face's ``gelu_new``).

    y = 0.5 x (1 + tanh(u)),   u = k (x + c x^3),   k = sqrt(2/pi),  c = 0.044715

(Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016, eq. for the tanh form.)
PyTorch's default ``nn.GELU()`` is the exact erf form; the two differ by up to about
5e-4 (4.7e-4 at |x| = 2.7), enough to break parity with GPT-2's weights, so this is the tanh form.

Shapes: elementwise, x and y of any shape (N, 4C in the MLP).

Backward (g = dL/dy), with t = tanh(u) and dt/du = 1 - t^2:
    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,    du/dx = k (1 + 3 c x^2)
    dL/dx = g * dy/dx

The forward saves x and t = tanh(u): the backward then needs no tanh (the costliest
elementwise function here), at the price of keeping t between the passes. (PyTorch's
autograd, running Hugging Face's GELU as separate operations, keeps more: x, tanh(u),
1 + tanh(u) and 0.5 x, the operands its pow, tanh and last product need.)
"""
from __future__ import annotations

import math

from .. import backend
from ..function import Function
from . import cpu, cuda

K = math.sqrt(2.0 / math.pi)
C = 0.044715


class GELU(Function):
    @staticmethod
    def forward(ctx, x):
        xp = backend.xp()
        t = xp.tanh(K * (x + C * x ** 3))                     # t = tanh(u)
        ctx.save_for_backward(x, t)
        return 0.5 * x * (1.0 + t)                           # y = 0.5 x (1 + t)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved
        du = K * (1.0 + 3.0 * C * x * x)                     # du/dx
        dydx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
        return (g * dydx,)                                   # dL/dx = g dy/dx

    @staticmethod
    def forward_fast(ctx, x):
        """float32: one compiled pass (cpu/loops.py, gelu_forward_f32) that reads x once and
        writes y and t once, its tanh a ratio of polynomials from Lambert's continued
        fraction (within 4e-7 of tanh; NumPy's tanh is a library call the loop could not
        vectorise): 0.09 ms for a (768, 512) MLP activation against 0.25 for the NumPy passes
        below on two threads (0.42 inside a training step, where BLAS holds the other core).
        float64, or without numba: NumPy in place, in one buffer per output, the rows split
        over the cores (_forward_threads)."""
        xp = backend.xp()
        x2 = xp.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1))   # rows
        y, t = xp.empty_like(x2), xp.empty_like(x2)
        compiled = cpu.compiled()
        if compiled is not None and x2.dtype == xp.float32:
            compiled.gelu_forward_f32(x2.reshape(-1), y.reshape(-1), t.reshape(-1))
        else:
            _forward_threads(x2, y, t)
        ctx.save_for_backward(x2, t)
        ctx.shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward_fast(ctx, g):
        """One compiled pass (cpu/loops.py, gelu_backward: arithmetic only, any dtype) where
        NumPy makes thirteen (backward, above); without numba, those NumPy passes split over the cores."""
        xp = backend.xp()
        x2, t = ctx.saved
        g2 = xp.ascontiguousarray(g.reshape(x2.shape))
        dx = xp.empty_like(x2)
        compiled = cpu.compiled()
        if compiled is not None:
            compiled.gelu_backward(g2.reshape(-1), x2.reshape(-1), t.reshape(-1), dx.reshape(-1))
        else:
            _backward_threads(g2, x2, t, dx)
        return (dx.reshape(ctx.shape),)

    @staticmethod
    def forward_cuda(ctx, x):
        """The same math, fused in one CUDA kernel (cuda/gelu.py)."""
        x = backend.xp().ascontiguousarray(x)
        y, t = cuda.gelu_forward(x)
        ctx.save_for_backward(x, t)
        return y

    @staticmethod
    def backward_cuda(ctx, g):
        x, t = ctx.saved
        return (cuda.gelu_backward(g, x, t),)


def _forward_threads(x2, y, t):
    """The forward in place in y and t, with NumPy, rows split over the cores (NumPy's
    elementwise loops use one core, and each temporary of the reference costs a pass)."""
    xp = backend.xp()

    def rows(a, b):
        xr, tr, yr = x2[a:b], t[a:b], y[a:b]
        xp.multiply(xr, xr, out=tr)              # x^2
        tr *= C
        tr += 1.0
        tr *= xr                                 # x + c x^3
        tr *= K                                  # u
        xp.tanh(tr, out=tr)                      # t = tanh(u)
        xp.add(tr, 1.0, out=yr)
        yr *= xr
        yr *= 0.5                                # y = 0.5 x (1 + t)
    backend.parallel_rows(rows, x2.shape[0])


def _backward_threads(g2, x2, t, dx):
    xp = backend.xp()

    def rows(a, b):
        xr, tr, out = x2[a:b], t[a:b], dx[a:b]
        du = xr * xr                             # x^2
        du *= 3.0 * C
        du += 1.0
        du *= K                                  # du/dx = k (1 + 3 c x^2)
        xp.multiply(tr, tr, out=out)
        xp.subtract(1.0, out, out=out)           # 1 - t^2
        out *= du
        out *= xr
        out += tr
        out += 1.0
        out *= 0.5                               # dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
        out *= g2[a:b]                           # dL/dx = g dy/dx
    backend.parallel_rows(rows, x2.shape[0])


def gelu(x):
    """GPT-2's GELU (tanh approximation), elementwise."""
    return GELU.apply(x)

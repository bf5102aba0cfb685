"""GELU, the tanh approximation used by OpenAI's GPT-2 (Hugging Face's ``gelu_new``).

    y = 0.5 x (1 + tanh(u)),   u = k (x + c x^3),   k = sqrt(2/pi),  c = 0.044715

(Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016, eq. for the tanh form.)
PyTorch's default ``nn.GELU()`` is the exact erf form; the two differ by up to about
1e-3, enough to break parity with GPT-2's weights, so this is the tanh form.

Shapes: elementwise, x and y of any shape (N, 4C in the MLP).

Backward (g = dL/dy), with t = tanh(u) and dt/du = 1 - t^2:
    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,    du/dx = k (1 + 3 c x^2)
    dL/dx = g * dy/dx

Only x is saved (as PyTorch does); t is recomputed in backward, trading one tanh per
element for not keeping a second (N, 4C) array alive between forward and backward.
"""
from __future__ import annotations

import math

from .. import backend
from ..function import Function

K = math.sqrt(2.0 / math.pi)
C = 0.044715


class GELU(Function):
    @staticmethod
    def forward(ctx, x):
        xp = backend.xp()
        ctx.save_for_backward(x)
        t = x * x                    # x^2; the chain below reuses this one buffer
        t *= C
        t += 1.0
        t *= x                       # x + c x^3
        t *= K                       # u
        xp.tanh(t, out=t)            # t = tanh(u)
        t += 1.0
        t *= x
        t *= 0.5                     # y = 0.5 x (1 + t)
        return t

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        (x,) = ctx.saved
        x2 = x * x                   # x^2
        t = x2 * C
        t += 1.0
        t *= x
        t *= K
        xp.tanh(t, out=t)            # t = tanh(u)
        # du/dx = k (1 + 3 c x^2), kept in x2's buffer
        x2 *= 3.0 * C
        x2 += 1.0
        x2 *= K
        # dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
        dydx = 1.0 - t * t           # 1 - t^2
        dydx *= x2
        dydx *= x
        dydx += t
        dydx += 1.0
        dydx *= 0.5
        dydx *= g
        return (dydx,)


def gelu(x):
    """GPT-2's GELU (tanh approximation), elementwise."""
    return GELU.apply(x)

"""Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

Shapes: elementwise. mask has x's shape.

Forward
    mask_i = [u_i >= p] / (1 - p),   u_i ~ Uniform[0, 1) from the engine's seeded RNG
    y_i    = x_i * mask_i            (the expected value of y_i is x_i)
Backward
    dL/dx_i = g_i * mask_i

In evaluation mode, or with p = 0, dropout is the identity and records nothing.
"""
from __future__ import annotations

from .. import backend
from ..function import Function


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        keep = backend.rng().random(x.shape, dtype=x.dtype) >= p
        mask = keep.astype(x.dtype)
        mask *= 1.0 / (1.0 - p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved
        return g * mask, None


def dropout(x, p=0.0, training=True):
    """Inverted dropout with drop probability ``p``; the identity when not training."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p)

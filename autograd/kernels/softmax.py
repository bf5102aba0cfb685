"""Softmax and log-softmax along one axis.

softmax, for one slice s along the axis
    y_i = exp(s_i - m) / sum_j exp(s_j - m),   m = max_j s_j
  (subtracting m changes nothing mathematically and keeps exp from overflowing)
  dy_i/ds_j = y_i (delta_ij - y_j), so with g = dL/dy
    dL/ds_j = sum_i g_i y_i (delta_ij - y_j) = y_j (g_j - sum_i g_i y_i)

log-softmax
    y_i = s_i - lse,   lse = m + log sum_j exp(s_j - m)
  dy_i/ds_j = delta_ij - softmax(s)_j, so
    dL/ds_j = g_j - softmax(s)_j sum_i g_i = g_j - exp(y_j) sum_i g_i
"""
from __future__ import annotations

from .. import backend
from ..function import Function


def softmax_inplace(s, axis=-1):
    """s <- softmax(s) along ``axis``, in place (entries at -inf become exactly 0)."""
    s -= s.max(axis=axis, keepdims=True)                # m: exp never overflows
    backend.xp().exp(s, out=s)
    s /= s.sum(axis=axis, keepdims=True)
    return s


def softmax_backward_inplace(y, g, axis=-1):
    """g <- dL/ds = y (g - sum_i g_i y_i) along ``axis``, in place, for y = softmax(s) and
    g = dL/dy (where y is 0 the result is 0). attention.py uses it too."""
    g -= (g * y).sum(axis=axis, keepdims=True)
    g *= y
    return g


class Softmax(Function):
    @staticmethod
    def forward(ctx, s, axis=-1):
        y = softmax_inplace(s.copy(), axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return softmax_backward_inplace(y, g.copy(), ctx.axis), None


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, s, axis=-1):
        xp = backend.xp()
        m = s.max(axis=axis, keepdims=True)
        shifted = s - m
        lse = xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        y = shifted
        y -= lse
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        (y,) = ctx.saved
        ds = xp.exp(y)
        ds *= -g.sum(axis=ctx.axis, keepdims=True)
        ds += g
        return ds, None


def softmax(x, axis=-1):
    return Softmax.apply(x, axis)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis)

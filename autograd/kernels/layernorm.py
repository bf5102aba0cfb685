"""Layer normalisation over the last axis: y = w * (x - mu) / sqrt(var + eps) + b.

Shapes
    x, y : (..., C)   flattened to N rows of C
    w, b : (C,)
    mu, rstd : (N, 1)  one mean and one reciprocal standard deviation per row

Forward, per row (index i runs over the C channels)
    mu     = (1/C) sum_i x_i
    var    = (1/C) sum_i (x_i - mu)^2          (biased, as GPT-2 and PyTorch)
    rstd   = 1 / sqrt(var + eps)
    xhat_i = (x_i - mu) * rstd
    y_i    = w_i * xhat_i + b_i

Backward (g_i = dL/dy_i)
    dL/dw_i = sum over rows of g_i * xhat_i
    dL/db_i = sum over rows of g_i
    dxhat_i = g_i * w_i

  Every xhat_i depends on every x_j of its row, through mu and through var:
    dmu/dx_j    = 1/C
    dvar/dx_j   = (2/C) (x_j - mu)         (the terms through mu sum to zero)
    drstd/dx_j  = -(1/2) (var + eps)^(-3/2) dvar/dx_j = -rstd^3 (x_j - mu) / C
    dxhat_i/dx_j = rstd (delta_ij - 1/C) + (x_i - mu) drstd/dx_j
                 = rstd (delta_ij - 1/C - xhat_i xhat_j / C)
  so, summing over i,
    dL/dx_j = sum_i dxhat_i dxhat_i/dx_j
            = rstd * ( dxhat_j - mean_i(dxhat_i) - xhat_j * mean_i(dxhat_i xhat_i) )

  Three terms: the direct path, the path through the mean, the path through the
  variance. We save xhat and rstd in the forward, so backward needs no recomputation.
"""
from __future__ import annotations

from .. import backend
from ..function import Function
from . import cpu, cuda


def _rows(x, weight, bias):
    """x as (N, C) rows, after checking weight and bias against its C."""
    channels = x.shape[-1]
    if weight.shape != (channels,) or (bias is not None and bias.shape != (channels,)):
        raise ValueError(f"layer_norm: input has {channels} channels but weight/bias have shapes "
                         f"{tuple(weight.shape)}/{None if bias is None else tuple(bias.shape)}")
    return x.reshape(-1, channels)


def _param_grads(ctx, g2, xhat):
    dw = (g2 * xhat).sum(axis=0) if ctx.needs_input_grad[1] else None   # (C,)
    db = g2.sum(axis=0) if ctx.needs_input_grad[2] else None            # (C,), None without bias
    return dw, db


class LayerNorm(Function):
    grads_are_new = True     # dx, dw, db: new arrays; the tape may add into them (tensor.py)

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        xp = backend.xp()
        x2 = _rows(x, weight, bias)                           # (N, C)
        mu = x2.mean(axis=1, keepdims=True)                   # (N, 1)
        xhat = x2 - mu                                        # (N, C), x - mu
        var = xp.mean(xhat * xhat, axis=1, keepdims=True)     # (N, 1)
        rstd = 1.0 / xp.sqrt(var + eps)                       # (N, 1)
        xhat *= rstd                                          # (N, C), normalised
        y = xhat * weight                                     # (N, C)
        if bias is not None:
            y += bias
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved
        g2 = g.reshape(xhat.shape)                            # (N, C)
        dw, db = _param_grads(ctx, g2, xhat)
        dx = None
        if ctx.needs_input_grad[0]:
            dxhat = g2 * weight                               # (N, C)
            mean_dxhat = dxhat.mean(axis=1, keepdims=True)    # (N, 1)
            mean_dxhat_xhat = (dxhat * xhat).mean(axis=1, keepdims=True)  # (N, 1)
            dx = dxhat - mean_dxhat                           # direct path + path through mu
            dx -= xhat * mean_dxhat_xhat                      # path through var
            dx *= rstd
            dx = dx.reshape(ctx.shape)
        return dx, dw, db, None

    @staticmethod
    def forward_fast(ctx, x, weight, bias, eps=1e-5):
        """The same per-row arithmetic as one compiled loop (cpu/loops.py): each row is read
        twice and written twice, where the reference makes a pass over memory (and a
        temporary) per operation. Without numba: the reference."""
        compiled = cpu.compiled()
        if compiled is None:
            return LayerNorm.forward(ctx, x, weight, bias, eps)
        xp = backend.xp()
        x2 = xp.ascontiguousarray(_rows(x, weight, bias))
        y, xhat = xp.empty_like(x2), xp.empty_like(x2)
        rstd = xp.empty((x2.shape[0], 1), dtype=x2.dtype)
        compiled.layernorm_forward(x2, weight, bias if bias is not None else weight, bias is not None, eps,
                                   y, xhat, rstd)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward_fast(ctx, g):
        compiled = cpu.compiled()
        if compiled is None:
            return LayerNorm.backward(ctx, g)
        xhat, rstd, weight = ctx.saved
        g2 = backend.xp().ascontiguousarray(g.reshape(xhat.shape))
        dw, db = _param_grads(ctx, g2, xhat)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = backend.xp().empty_like(xhat)
            compiled.layernorm_backward_dx(g2, xhat, rstd, weight, dx)
            dx = dx.reshape(ctx.shape)
        return dx, dw, db, None

    @staticmethod
    def forward_cuda(ctx, x, weight, bias, eps=1e-5):
        """The same math, one CUDA block per row (cuda/layernorm.py)."""
        y, xhat, rstd = cuda.layernorm_forward(_rows(x, weight, bias), weight, bias, eps)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward_cuda(ctx, g):
        xhat, rstd, weight = ctx.saved
        g2 = g.reshape(xhat.shape)
        dw, db = _param_grads(ctx, g2, xhat)                  # column sums: CuPy's reductions
        dx = cuda.layernorm_backward_dx(g2, xhat, rstd, weight).reshape(ctx.shape) if ctx.needs_input_grad[0] else None
        return dx, dw, db, None


def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise the last axis of ``x`` to zero mean and unit variance, then scale by
    ``weight`` and shift by ``bias`` (both (C,); ``bias`` may be None)."""
    return LayerNorm.apply(x, weight, bias, eps)

"""The language-model head and its loss in one kernel: cross_entropy(x W^T, targets).

Shapes
    x        : (..., C)  flattened to (N, C): the final hidden states
    W        : (V, C)    the output matrix (GPT-2 ties it to the token embedding)
    t        : (N,)      integer targets; rows with t_i == ignore_index are left out
    z = x W^T: (N, V)    the logits, formed one chunk of rows at a time
    loss     : ()

Forward, for each kept row i (n of them); this is linear.py followed by
cross_entropy.py, fused:
    z_i     = W x_i                                   (V,)
    lse_i   = m_i + log sum_j exp(z_ij - m_i),  m_i = max_j z_ij
    loss    = (1/n) sum_i (lse_i - z_{i, t_i})

Backward (g = dL/dloss, a scalar). With P = dloss/dz, the cross-entropy gradient,
    P_ij    = (softmax(z_i)_j - [j == t_i]) / n      for kept rows, 0 for ignored ones
the linear layer's rules (linear.py) give
    dL/dx   = g P W          (N, C)
    dL/dW   = g P^T x        (V, C)

Why fuse: with GPT-2's V = 50257 the logits are the largest array of the whole
network (N = 8192 positions: 1.6 GB in float32). Computed separately, the logits,
the softmax and their gradient are three such arrays. Here the forward computes each
chunk of logits and turns it, while it is still in cache, into P, in place, in one
(N, V) buffer: the softmax is evaluated once, and the backward is two matrix products
of P. Without gradients (evaluation) only one chunk of logits exists at a time.
The model returns no logits when it is given targets for this reason.
"""
from __future__ import annotations

from .. import backend
from ..function import Function
from . import cuda

CHUNK_ELEMENTS = 1 << 24   # about 64 MB of float32 logits per chunk of rows (large chunks keep the GEMM efficient)
CACHE_ELEMENTS = 1 << 17   # about 512 KB: the rows one core works through at a time


class LinearCrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index=-1):
        xp = backend.xp()
        vocab, channels = weight.shape
        if x.shape[-1] != channels:
            raise ValueError(f"linear_cross_entropy: input has {x.shape[-1]} features, weight is {tuple(weight.shape)}")
        x2 = x.reshape(-1, channels)                                        # (N, C)
        n_rows = x2.shape[0]
        targets = xp.asarray(targets).reshape(-1)
        if targets.shape[0] != n_rows:
            raise ValueError(f"linear_cross_entropy: {n_rows} rows but {targets.shape[0]} targets")
        keep = targets != ignore_index                                      # (N,)
        if not backend.is_cuda():
            bad = keep & ((targets < 0) | (targets >= vocab))
            if bad.any():
                raise IndexError(f"cross_entropy: target {int(targets[bad][0])} is outside [0, {vocab})")
        safe_targets = xp.where(keep, targets, 0)
        n_kept = int(keep.sum()) if not backend.is_cuda() else keep.sum()
        inv_n = 1.0 / xp.maximum(xp.asarray(n_kept, dtype=x2.dtype), 1)
        row_scale = (keep * inv_n).astype(x2.dtype)[:, None]                # (N, 1): 1/n, or 0 if ignored
        wt = weight.T                                                       # (C, V), a view
        step = max(1, CHUNK_ELEMENTS // vocab)
        ROWS_IN_CACHE = max(1, CACHE_ELEMENTS // vocab)
        if ctx.requires_grad:
            probs = xp.empty((n_rows, vocab), dtype=x2.dtype)               # becomes P, chunk by chunk
        losses = xp.empty(n_rows, dtype=xp.float64)                         # lse_i - z_{i,t_i}

        def softmax_rows(z, a, lo, hi):
            """Rows lo:hi of the chunk of logits z starting at row a -> loss terms, and P
            (in place) if gradients are wanted. Walks a few rows at a time so that the
            passes over each row (max, subtract, exp, sum, scale) hit the core's cache."""
            for r0 in range(lo, hi, ROWS_IN_CACHE):
                r1 = min(hi, r0 + ROWS_IN_CACHE)
                zz, tt = z[r0:r1], safe_targets[a + r0:a + r1]
                rows = xp.arange(r1 - r0)
                picked = zz[rows, tt]                                       # z_{i, t_i}
                m = zz.max(axis=1, keepdims=True)                           # (rows, 1)
                zz -= m
                xp.exp(zz, out=zz)                                          # exp(z_ij - m_i)
                s = zz.sum(axis=1, keepdims=True)                           # (rows, 1)
                losses[a + r0:a + r1] = m[:, 0] + xp.log(s[:, 0]) - picked  # lse_i - z_{i,t_i}
                if ctx.requires_grad:
                    scale = row_scale[a + r0:a + r1]                        # 1/n, or 0 if ignored
                    zz *= scale / s                                         # softmax(z_i) / n
                    zz[rows, tt] -= scale[:, 0]                             # - onehot(t_i) / n

        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            z = probs[a:b] if ctx.requires_grad else xp.empty((b - a, vocab), dtype=x2.dtype)
            xp.matmul(x2[a:b], wt, out=z)                                   # logits of these rows (BLAS threads)
            if backend.is_cuda():                                           # one CUDA block per row
                cuda.softmax_xent_rows(z, safe_targets[a:b], row_scale[a:b], losses[a:b], ctx.requires_grad)
            else:
                backend.parallel_rows(lambda lo, hi: softmax_rows(z, a, lo, hi), b - a)  # one thread per core
        total = (losses * keep).sum()
        if ctx.requires_grad:
            ctx.save_for_backward(x2, weight, probs)
            ctx.x_shape = x.shape
        return xp.asarray(total * inv_n, dtype=x2.dtype)

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        x2, weight, probs = ctx.saved
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = probs @ weight                                             # (N, C), P W
            dx *= g
            dx = dx.reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            dw = xp.matmul(probs.T, x2)                                     # (V, C), P^T x
            dw *= g
        return dx, dw, None, None


def linear_cross_entropy(x, weight, targets, ignore_index=-1):
    """cross_entropy(linear(x, weight), targets) without forming the logits twice."""
    from ..tensor import Tensor
    if isinstance(targets, Tensor):
        targets = targets.data
    return LinearCrossEntropy.apply(x, weight, targets, ignore_index)

"""Softmax cross-entropy, fused: mean over rows of -log softmax(z_i)[t_i].

Shapes
    z        : (N, V)   logits, one row per position
    t        : (N,)     integer targets; rows with t_i == ignore_index are left out
    lse      : (N,)     log-sum-exp of each row, saved for backward
    loss     : ()       a scalar

Forward, for each kept row i (n of them)
    m_i     = max_j z_ij
    lse_i   = m_i + log sum_j exp(z_ij - m_i)         (never overflows: every exponent <= 0)
    loss    = (1/n) sum_i (lse_i - z_{i, t_i})

Backward (g = dL/dloss, a scalar). d lse_i / d z_ij = exp(z_ij - lse_i) = softmax(z_i)_j, so

    dL/dz_ij = g * (softmax(z_i)_j - [j == t_i]) / n      for kept rows
    dL/dz_ij = 0                                            for ignored rows

Fusing the softmax into the loss gives this simple gradient (no division by a
probability that may be tiny) and lets us keep only lse (N floats) instead of the
(N, V) probabilities. Rows are processed in chunks so that the forward never
allocates a second (N, V) array: with GPT-2's V = 50257 and N = 8192 positions one
such array is 1.6 GB in float32.
"""
from __future__ import annotations

from .. import backend
from ..function import Function
from ..tensor import Tensor

CHUNK_ELEMENTS = 1 << 22   # about 16 MB of float32 per chunk


def _chunks(n_rows: int, n_cols: int):
    step = max(1, CHUNK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _targets(z, targets, ignore_index):
    """targets as (N,) integers checked against the (N, V) logits, and keep = t != ignore_index."""
    if z.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, V), got shape {tuple(z.shape)}")
    targets = backend.xp().asarray(targets).reshape(-1)
    if targets.shape[0] != z.shape[0]:
        raise ValueError(f"cross_entropy: {z.shape[0]} rows of logits but {targets.shape[0]} targets")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got {targets.dtype}")
    return targets, targets != ignore_index


def check_target_range(name, targets, keep, vocab):
    """One clear IndexError for a kept target outside [0, V). Reads the device: CPU only."""
    bad = keep & ((targets < 0) | (targets >= vocab))
    if bad.any():
        raise IndexError(f"{name}: target {int(targets[bad][0])} is outside [0, {vocab})")


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, z, targets, ignore_index=-1):
        targets, keep = _targets(z, targets, ignore_index)           # (N,), (N,)
        check_target_range("cross_entropy", targets, keep, z.shape[1])
        return _forward(ctx, z, targets, keep)

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        z, lse, safe_targets, keep, n_kept = ctx.saved
        n_rows, vocab = z.shape
        scale = (g / xp.maximum(n_kept, 1)).astype(z.dtype)           # g / n
        row_scale = xp.where(keep, scale, 0).astype(z.dtype)[:, None]  # (N, 1), 0 for ignored rows
        dz = xp.empty_like(z)                                         # (N, V)
        for a, b in _chunks(n_rows, vocab):
            block = dz[a:b]
            xp.subtract(z[a:b], lse[a:b, None], out=block)
            xp.exp(block, out=block)                                  # softmax(z_i)
            rows = xp.arange(b - a)
            block[rows, safe_targets[a:b]] -= 1.0                     # - onehot(t_i)
            block *= row_scale[a:b]                                   # * g / n, or 0 if ignored
        return dz, None, None

    @staticmethod
    def forward_cuda(ctx, z, targets, ignore_index=-1):
        """The same, without the range check (it would read the GPU back at every call): a
        kept target outside [0, V) makes the loss NaN instead (CuPy's indexing would wrap it
        around to another column without a sign), as in the fused head's CUDA kernel. The
        gradient of such a row is not meaningful (its target is taken as 0 there): the NaN
        loss is the sign, and the trainer stops on it."""
        targets, keep = _targets(z, targets, ignore_index)
        return _forward(ctx, z, targets, keep, nan_outside=True)

    backward_cuda = backward


def _forward(ctx, z, targets, keep, nan_outside=False):
    xp = backend.xp()
    n_rows, vocab = z.shape
    outside = keep & ((targets < 0) | (targets >= vocab)) if nan_outside else None
    inside = keep if outside is None else keep & ~outside
    safe_targets = xp.where(inside, targets, 0)                   # ignored rows read column 0
    lse = xp.empty(n_rows, dtype=z.dtype)                         # (N,)
    for a, b in _chunks(n_rows, vocab):
        block = z[a:b]                                            # (rows, V)
        m = block.max(axis=1, keepdims=True)                      # (rows, 1)
        e = block - m
        xp.exp(e, out=e)
        lse[a:b] = (m + xp.log(e.sum(axis=1, keepdims=True)))[:, 0]
    picked = z[xp.arange(n_rows), safe_targets]                   # (N,), z_{i, t_i}
    n_kept = keep.sum()
    per_row = xp.where(keep, lse - picked, 0)
    if outside is not None:                                       # on the device, nothing read back
        per_row = xp.where(outside, xp.nan, per_row)
    loss = per_row.sum() / xp.maximum(n_kept, 1)
    ctx.save_for_backward(z, lse, safe_targets, keep, n_kept)
    return xp.asarray(loss, dtype=z.dtype)


def cross_entropy(logits, targets, ignore_index=-1):
    """Mean softmax cross-entropy of ``logits`` (N, V) against integer ``targets`` (N,),
    leaving out rows whose target is ``ignore_index``."""
    if isinstance(targets, Tensor):
        targets = targets.data
    return CrossEntropy.apply(logits, targets, ignore_index)

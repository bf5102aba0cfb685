"""Embedding lookup: out = W[ids].

Shapes
    ids : (...) integers in [0, V)      (B, T) for token ids
    W   : (V, C)
    out : (..., C)

Forward
    out[n, :] = W[ids[n], :]       (n runs over every position of ids)

Backward (g = dL/dout, shape (..., C)). Row W[v] is copied to every position n with
ids[n] == v, so its gradient is the sum of the gradients of all those copies:

    dL/dW[v, :] = sum_{n : ids[n] == v} g[n, :]

This is a scatter-add. ``dW[ids] += g`` is wrong: when an id repeats (the same
token twice in a batch, which is the common case), NumPy's fancy assignment keeps
only one of the rows. ``backend.scatter_add_rows`` is exact: on CPU it sorts the ids
and sums each run of equal ids (``numpy.add.reduceat``), on CUDA it uses atomic adds.
The ids get no gradient (they are integers).
"""
from __future__ import annotations

from .. import backend
from ..function import Function
from ..tensor import RowGradient, Tensor
from . import cuda


def _ids(ids):
    ids = backend.xp().asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
    return ids


class Embedding(Function):
    @staticmethod
    def forward(ctx, ids, weight):
        ids = _ids(ids)
        vocab = weight.shape[0]
        if ids.size:                                         # out-of-range ids: one clear error
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= vocab:
                bad = low if low < 0 else high
                raise IndexError(f"embedding: id {bad} is outside the table of {vocab} rows")
        ctx.save_for_backward(ids)
        ctx.weight_shape, ctx.dtype = weight.shape, weight.dtype
        return weight[ids]                                   # (..., C)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved
        vocab, channels = ctx.weight_shape
        dw = backend.xp().zeros((vocab, channels), dtype=ctx.dtype)   # (V, C)
        backend.scatter_add_rows(dw, ids.reshape(-1), g.reshape(-1, channels))
        return None, dw

    forward_fast = forward

    @staticmethod
    def backward_fast(ctx, g):
        """The same gradient, handed to the tape as the rows and their ids (tensor.py's
        RowGradient) rather than as a (V, C) array: the tape adds them into the table's
        other gradient where there is one (GPT-2's tied head), and makes them dense
        where there is none."""
        (ids,) = ctx.saved
        vocab, channels = ctx.weight_shape
        return None, RowGradient(ids.reshape(-1), g.reshape(-1, channels), (vocab, channels), ctx.dtype)

    @staticmethod
    def forward_cuda(ctx, ids, weight):
        """The same gather, without the range check: reading ids back to the host would
        stall the GPU at every step (CuPy's indexing wraps or clips instead of raising)."""
        ids = _ids(ids)
        ctx.save_for_backward(ids)
        ctx.weight_shape, ctx.dtype = weight.shape, weight.dtype
        return weight[ids]

    @staticmethod
    def backward_cuda(ctx, g):
        """The scatter-add with atomic adds, one GPU thread per element (cuda/embedding.py)."""
        (ids,) = ctx.saved
        vocab, channels = ctx.weight_shape
        dw = backend.xp().zeros((vocab, channels), dtype=ctx.dtype)
        cuda.embedding_backward(ids.reshape(-1), g.reshape(-1, channels), dw)
        return None, dw


def embedding(ids, weight):
    """Rows of ``weight`` (V, C) picked by integer ``ids``; returns (..., C)."""
    if isinstance(ids, Tensor):
        ids = ids.data
    return Embedding.apply(ids, weight)

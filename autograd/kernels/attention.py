"""Causal scaled dot-product self-attention, one node with a hand-derived backward.

Shapes
    q       : (B, nh, Tq, hs)    queries
    k, v    : (B, nh, Tk, hs)    keys and values, Tk >= Tq
    S, P    : (B, nh, Tq, Tk)    scores and attention weights
    out     : (B, nh, Tq, hs)

In training Tq == Tk == T. With a KV cache, the Tq new queries are the last Tq
positions of the Tk keys: query i sits at absolute position i + (Tk - Tq).

Forward (Vaswani et al., "Attention Is All You Need", 2017, eq. 1, with a causal mask)
    S[i, j] = (q_i . k_j) / sqrt(hs)
    S[i, j] = -inf  where j > i + (Tk - Tq)        (no looking at the future)
    P[i, :] = softmax(S[i, :])                     (masked entries get P = 0 exactly)
    out_i   = sum_j P[i, j] v_j                    ->  out = P @ v

Backward (g = dL/dout, shape (B, nh, Tq, hs)), per batch and head:
    out = P v                      ->  dv = P^T g          (Tk, hs)
                                       dP = g v^T          (Tq, Tk)
    P[i,:] = softmax(S[i,:])       ->  dS[i, j] = P[i, j] (dP[i, j] - sum_l dP[i, l] P[i, l])
                                       (the softmax backward; dS = 0 wherever P = 0, so the
                                        masked entries send no gradient anywhere)
    S = q k^T / sqrt(hs)           ->  dq = dS k / sqrt(hs)    (Tq, hs)
                                       dk = dS^T q / sqrt(hs)  (Tk, hs)

Cost: six batched matrix products of Tq*Tk*hs multiply-adds per head (two forward, four
backward), and P (B*nh*Tq*Tk floats) is kept between forward and backward.
"""
from __future__ import annotations

import math

from .. import backend
from ..function import Function
from . import cpu, cuda
from .softmax import softmax_backward_inplace, softmax_inplace

_MASKS = {}


def _future_bias(tq: int, tk: int, dtype):
    """(Tq, Tk) additive mask: -inf where key j is in query i's future, 0 elsewhere.

    Adding it to the scores is one broadcast add; cached per shape and dtype."""
    xp = backend.xp()
    key = (tq, tk, str(dtype), xp.__name__)                  # numpy or cupy arrays
    bias = _MASKS.get(key)
    if bias is None:
        future = xp.triu(xp.ones((tq, tk), dtype=bool), k=tk - tq + 1)
        bias = xp.where(future, -xp.inf, 0.0).astype(dtype)
        if len(_MASKS) > 64:
            _MASKS.clear()
        _MASKS[key] = bias
    return bias


def _check(q, k, v):
    if q.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"causal_attention: expected q (B, nh, Tq, hs) and k, v (B, nh, Tk, hs), "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    tq, tk, hs = q.shape[2], k.shape[2], q.shape[3]
    if tk < tq:
        raise ValueError(f"causal_attention: {tk} keys cannot serve {tq} queries")
    return tq, tk, 1.0 / math.sqrt(hs)


class CausalAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, weights=None):
        xp = backend.xp()
        tq, tk, scale = _check(q, k, v)
        att = q @ xp.swapaxes(k, -1, -2)                     # (B, nh, Tq, Tk), q k^T
        att *= scale                                         # S
        if tq > 1:                                           # one query sees every key: no mask
            att += _future_bias(tq, tk, att.dtype)           # -inf on the future
        softmax_inplace(att)                                 # P, row by row
        return _finish_forward(ctx, q, k, v, att, scale, weights)

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        q, k, v, p = ctx.saved
        dv = xp.swapaxes(p, -1, -2) @ g                      # (B, nh, Tk, hs), P^T g
        ds = g @ xp.swapaxes(v, -1, -2)                      # (B, nh, Tq, Tk), dP = g v^T
        softmax_backward_inplace(p, ds)                      # dS, zero where masked
        ds *= ctx.scale                                      # fold 1/sqrt(hs) in once
        dq = ds @ k                                          # (B, nh, Tq, hs)
        dk = xp.swapaxes(ds, -1, -2) @ q                     # (B, nh, Tk, hs)
        return dq, dk, dv

    @staticmethod
    def forward_fast(ctx, q, k, v, weights=None):
        """The same softmax in compiled loops (cpu/loops.py). For float32, the scale, the
        mask, each row's max, exp, the sum and the division in one loop over each row's
        visible keys (causal_softmax_rows_f32), where NumPy's exp ran over the masked half
        of every row too: the default run's attention 20.7 -> 14.1 ms a step, forward and
        backward (--profile; with the backward below). For float64 (gradcheck), the scale,
        the mask and the max in one loop, NumPy's exp, then the sums and divisions in a
        second loop. On one core: split over the cores by Python threads, the default
        run's step was no faster (364 against 358 ms, medians of 4 runs in processes of
        their own). Without numba: the reference."""
        compiled = cpu.compiled()
        if compiled is None:
            return CausalAttention.forward(ctx, q, k, v, weights)
        xp = backend.xp()
        tq, tk, scale = _check(q, k, v)
        att = q @ xp.swapaxes(k, -1, -2)                     # (B, nh, Tq, Tk), q k^T
        rows = att.reshape(-1, tk)                           # row r is query r % Tq
        if att.dtype.name == "float32":
            compiled.causal_softmax_rows_f32(rows, tq, att.dtype.type(scale))
        else:
            compiled.scale_mask_shift(rows, tq, scale)       # S - max, -inf on the future
            xp.exp(att, out=att)
            compiled.normalize_rows(rows)                    # P
        return _finish_forward(ctx, q, k, v, att, scale, weights)

    @staticmethod
    def backward_fast(ctx, g):
        """The same products, with the softmax backward and the scale in one compiled pass
        over each row's visible keys (cpu/loops.py causal_softmax_backward_rows; 0 on the
        future ones) instead of five NumPy passes over whole rows. Without numba: the
        reference."""
        compiled = cpu.compiled()
        if compiled is None:
            return CausalAttention.backward(ctx, g)
        xp = backend.xp()
        q, k, v, p = ctx.saved
        tq, tk = p.shape[-2], p.shape[-1]
        dv = xp.swapaxes(p, -1, -2) @ g                      # P^T g
        ds = g @ xp.swapaxes(v, -1, -2)                      # dP = g v^T, contiguous
        compiled.causal_softmax_backward_rows(p.reshape(-1, tk), ds.reshape(-1, tk), tq,
                                              p.dtype.type(ctx.scale))   # dS / sqrt(hs), in place
        return ds @ k, xp.swapaxes(ds, -1, -2) @ q, dv

    @staticmethod
    def forward_cuda(ctx, q, k, v, weights=None):
        """The same, with scale, mask and softmax in one CUDA kernel (a block per row); or,
        when backend.use_flash_attention is on and P is not asked for, without P at all
        (cuda/flash_attention.py: tiled, online softmax, P recomputed in the backward)."""
        xp = backend.xp()
        _, _, scale = _check(q, k, v)
        ctx.flash = weights is None and backend.flash_attention() and q.shape[-1] <= cuda.FLASH_HEAD_SIZE_MAX
        if ctx.flash:
            out, lse = cuda.flash_attention_forward(q, k, v, scale)
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.scale = scale
            return out
        att = q @ xp.swapaxes(k, -1, -2)                     # (B, nh, Tq, Tk), q k^T
        cuda.causal_softmax_forward(att, scale)              # P, in place
        return _finish_forward(ctx, q, k, v, att, scale, weights)

    @staticmethod
    def backward_cuda(ctx, g):
        """The same, with the softmax backward and the scale in one CUDA kernel."""
        xp = backend.xp()
        if ctx.flash:
            return cuda.flash_attention_backward(*ctx.saved, g, ctx.scale)
        q, k, v, p = ctx.saved
        dv = xp.swapaxes(p, -1, -2) @ g                      # P^T g
        ds = g @ xp.swapaxes(v, -1, -2)                      # dP = g v^T
        cuda.softmax_backward(p, ds, ctx.scale)              # dS / sqrt(hs), in place
        return ds @ k, xp.swapaxes(ds, -1, -2) @ q, dv


def _finish_forward(ctx, q, k, v, p, scale, weights):
    if weights is not None:                                  # asked for: hand P out (read only)
        weights.append(p)
    ctx.save_for_backward(q, k, v, p)
    ctx.scale = scale
    return p @ v                                             # (B, nh, Tq, hs)


def causal_attention(q, k, v, weights=None):
    """softmax(q k^T / sqrt(hs) + causal mask) @ v for q, k, v of shape (B, nh, T, hs).

    ``weights``: a list to which the attention weights P (B, nh, Tq, Tk) are appended, for
    looking at them (the explorer, the attention-map demo). The array is the one the
    backward uses: read it, do not write to it. None (the default) costs nothing."""
    return CausalAttention.apply(q, k, v, weights=weights)

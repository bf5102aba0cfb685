"""Compiled CPU loops for the kernels' fast bodies, with numba's ``@njit``.

Each function here is the arithmetic of one NumPy reference body (named beside it),
written as the loop NumPy runs for us, with its passes over the data fused: a row (or
an element) is read once and its intermediate values stay in registers, where NumPy
makes a pass over memory, and allocates a temporary, per operation. That is a win where
a row's work is sums, additions and multiplications: layer norm, 3.4 ms of a baby-char
training step down to 1.2 ms (2 cores). It is not where an exp or a tanh dominates
(NumPy's are SIMD-vectorised, a compiled loop's are scalar calls: GELU and the softmaxes
keep their exp in NumPy; the attention softmax hands only its scale, mask and row max to
a loop here), nor for AdamW's update (measured slower than NumPy's ten
vectorised passes: the compiler cannot prove that p, g, m and v do not overlap, so it
does not vectorise the loop).

The loops run on one core (no ``parallel=True``): numba's OpenMP threads, spinning
after each loop, took the cores from the BLAS threads of the matrix products next to
them, and a whole training step got slower (47 ms became 306 ms in a measured run).
The sums are kept in float64 whatever the arrays' dtype; the fast-math flags (FAST) let
the compiler reorder them into SIMD lanes.

numba compiles each function the first time it is called with a given dtype (well under
a second each; ``cache=True`` keeps the machine code on disk for the next run). This
module imports numba; ``autograd/kernels/cpu/__init__.py`` imports it only when a fast
body first runs, so the engine imports and runs without numba.
"""
from __future__ import annotations

import math

from numba import njit

# reorder and fuse (SIMD sums), but keep NaN and inf meaning what they mean: a diverged run
# must still show a NaN loss
FAST = {"reassoc", "contract", "nsz", "arcp"}


# ---------------------------------------------------------------------------- layer norm (layernorm.py)
@njit(cache=True, fastmath=FAST)
def layernorm_forward(x, w, b, has_bias, eps, y, xhat, rstd):
    """Per row: mu, var (two passes, as the reference), rstd, xhat, y = w xhat + b."""
    n, c = x.shape
    for i in range(n):
        mu = 0.0
        for j in range(c):
            mu += x[i, j]
        mu /= c
        var = 0.0
        for j in range(c):
            d = x[i, j] - mu
            var += d * d
        r = 1.0 / math.sqrt(var / c + eps)
        rstd[i, 0] = r
        for j in range(c):
            h = (x[i, j] - mu) * r
            xhat[i, j] = h
            y[i, j] = w[j] * h + (b[j] if has_bias else 0.0)


@njit(cache=True, fastmath=FAST)
def layernorm_backward_dx(g, xhat, rstd, w, dx):
    """dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = g w, per row."""
    n, c = xhat.shape
    for i in range(n):
        m1 = 0.0
        m2 = 0.0
        for j in range(c):
            d = g[i, j] * w[j]
            m1 += d
            m2 += d * xhat[i, j]
        m1 /= c
        m2 /= c
        r = rstd[i, 0]
        for j in range(c):
            dx[i, j] = r * (g[i, j] * w[j] - m1 - xhat[i, j] * m2)


# ---------------------------------------------------------------------------- attention (attention.py)
@njit(cache=True, fastmath=FAST)
def scale_mask_shift(att, tq, scale):
    """In place on att (rows, Tk), rows in (batch, head, query) order: row r is query
    i = r % tq, which sees keys j <= i + (Tk - Tq). S = scale * att there, -inf beyond, and
    the row's max over the visible keys subtracted: what exp needs next (NumPy's exp, which
    is vectorised, then runs on the result). NumPy's max along a row of 64 was most of the
    softmax's time (0.19 of 0.4 ms per baby-char layer)."""
    rows, tk = att.shape
    for r in range(rows):
        last = r % tq + (tk - tq)
        m = -math.inf
        for j in range(last + 1):
            v = scale * att[r, j]
            att[r, j] = v
            if v > m:
                m = v
        for j in range(last + 1):
            att[r, j] -= m
        for j in range(last + 1, tk):
            att[r, j] = -math.inf

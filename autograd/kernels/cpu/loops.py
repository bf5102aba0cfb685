"""Compiled CPU loops for the kernels' fast bodies, with numba's ``@njit``.

Each function here is the arithmetic of one NumPy reference body (named beside it),
written as the loop NumPy runs for us, with its passes over the data fused: a row (or
an element) is read once and its intermediate values stay in registers, where NumPy
makes a pass over memory, and allocates a temporary, per operation. Layer norm, 3.4 ms
of a baby-char training step, became 1.2 ms (2 cores); GELU and AdamW, below, likewise.

For the compiler to turn an element loop into SIMD instructions (16 float32 lanes with
AVX-512), its body must have no branch that Python semantics would add: numba's default
``error_model="python"`` guards every division with a ZeroDivisionError check, and that
one branch keeps the loop scalar (GELU's forward: 1.39 ms against 0.08 ms vectorised over
393,216 float32, measured). Loops that divide therefore say ``error_model="numpy"``
(x / 0 is inf or NaN, as in NumPy). A call of math.exp or math.tanh stays a scalar
library call; so exp is written out in operations that vectorise (``exp_nonpositive_f32``,
for the softmaxes of float32 rows; float64 keeps NumPy's exp), and GELU's tanh as a
ratio of polynomials (``tanh_coefficients``).

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

import hashlib
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import config as numba_config
from numba.core import types
from numba.extending import intrinsic

# reorder and fuse (SIMD sums), but keep NaN and inf meaning what they mean: a diverged run
# must still show a NaN loss
FAST = {"reassoc", "contract", "nsz", "arcp"}

THIS_FILE = Path(__file__)
try:
    SOURCE_HASH = hashlib.sha256(THIS_FILE.read_bytes()).hexdigest()[:16]   # of this file's contents
except OSError:   # no source to read (a zipped install): numba's own cache folder, as for any function
    SOURCE_HASH = None


def njit_with_these_loops(**options):
    """``numba.njit(cache=True, **options)`` for a function in another file that calls the
    loops of this one (tinygpt/fast_decode.py). numba keys a cached function on the
    contents of its own file only, and compiles what it calls into it: after this file
    changed, a caller elsewhere would go on running the old loops from its cache (numba's
    documentation names the limitation; tests/tinygpt/test_fast_decode.py shows it). So
    its cache goes to a folder named after this file's contents, ``callers-<hash>``, under
    NUMBA_CACHE_DIR when that is set, else in the __pycache__ beside this file: a change
    here compiles the callers afresh."""
    def decorate(fn):
        if SOURCE_HASH is None:
            return njit(cache=True, **options)(fn)
        saved = numba_config.CACHE_DIR          # numba picks a function's cache folder here, once
        root = saved or str(THIS_FILE.parent / "__pycache__")
        numba_config.CACHE_DIR = os.path.join(root, f"callers-{SOURCE_HASH}")
        try:
            return njit(cache=True, **options)(fn)
        finally:
            numba_config.CACHE_DIR = saved
    return decorate


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



@njit(cache=True, fastmath=FAST, error_model="numpy")
def normalize_rows(att):
    """In place, rows of exp(S - max): each divided by its sum (P = softmax(S))."""
    rows, tk = att.shape
    for r in range(rows):
        total = 0.0
        for j in range(tk):
            total += att[r, j]
        inv = 1.0 / total
        for j in range(tk):
            att[r, j] *= inv


@njit(cache=True, fastmath=FAST, error_model="numpy")
def causal_softmax_rows_f32(att, tq, scale):
    """scale_mask_shift, exp and normalize_rows above in one loop over each float32 row
    of scores (rows, Tk), in (batch, head, query) order, and over its visible keys only:
    row r is query i = r % tq, which sees keys j <= i + (Tk - Tq). There
    m = scale max_j att_rj (scale > 0; _row_max below); e_j = exp(scale att_rj - m) by
    exp_nonpositive_f32 below (vectorised, where NumPy's exp also ran over the masked half
    of each row); P_rj = e_j / sum e; P = 0 exactly on the future keys. The sums: float32
    in SIMD lanes over SUM_BLOCK keys, added in float64, as in the head's softmax below.
    Default run's scores (6144 rows of 128), one core: 0.32-0.34 ms, against 0.71-0.76 for
    scale_mask_shift, NumPy's exp and normalize_rows (medians of 90 calls, 3 processes)."""
    rows, tk = att.shape
    lane = np.empty(LANES, dtype=att.dtype)
    for r in range(rows):
        row = att[r]
        n = r % tq + (tk - tq) + 1
        visible = row[:n]
        m = scale * _row_max(visible, lane)
        total = 0.0                                         # float64: float32 sums of SUM_BLOCK terms
        for start in range(0, n, SUM_BLOCK):
            block = visible[start:start + SUM_BLOCK]
            part = np.float32(0.0)
            for j in range(block.shape[0]):
                e = exp_nonpositive_f32(scale * block[j] - m)
                block[j] = e
                part += e
            total += part
        inv = np.float32(1.0 / total)
        for j in range(n):
            visible[j] *= inv
        future = row[n:]
        for j in range(future.shape[0]):
            future[j] = ZERO


@njit(cache=True, fastmath=FAST)
def causal_softmax_backward_rows(p, ds, tq, scale):
    """In place, per row of (rows, Tk), rows in (batch, head, query) order:
    ds <- scale * p (ds - sum_l ds_l p_l), softmax.py's backward with attention's
    1/sqrt(hs) folded in (ds holds dP on entry, dS / sqrt(hs) on return), over the
    visible keys j <= i + (Tk - Tq), i = r % tq; 0 beyond, where p is 0 and ds
    held dP = g v^T. Half the work of a loop over whole rows at Tq = Tk."""
    rows, tk = p.shape
    for r in range(rows):
        n = r % tq + (tk - tq) + 1
        prow, drow = p[r, :n], ds[r, :n]
        dot = 0.0
        for j in range(n):
            dot += drow[j] * prow[j]
        for j in range(n):
            drow[j] = scale * prow[j] * (drow[j] - dot)
        future = ds[r, n:]
        for j in range(future.shape[0]):
            future[j] = 0.0


# ---------------------------------------------------------------------------- GELU (gelu.py)
def tanh_coefficients(depth: int = 12):
    """tanh(u) ~= u P(u^2) / Q(u^2): the integer coefficients of P and Q (lowest power first),
    from Lambert's continued fraction (1768; e.g. Abramowitz & Stegun 4.5.70's form)

        tanh u = u / (1 + u^2 / (3 + u^2 / (5 + ... + u^2 / (2 depth + 1))))

    cut after ``depth`` levels and multiplied out. Written as fractions from the bottom up:
    the innermost level is (2 depth + 1) / 1, and each level above, r_k = (2k+1) + s / r_{k+1}
    with r_{k+1} = N / D, is ((2k+1) N + s D) / N. Then tanh u = u / r_0 = u D / N.

    With depth 12 (P and Q of degree 6 in s = u^2), used for |u| < 9 (beyond, t is +-1:
    tanh u is within 3e-8 of it), evaluated in float32: at most 4e-7 from tanh, against
    6e-8 for NumPy's tanh (tests/autograd/test_fast_bodies.py checks it on a dense grid).
    All coefficients are positive, so Horner's rule adds no cancellation."""
    num, den = [Fraction(2 * depth + 1)], [Fraction(1)]
    for k in range(depth - 1, -1, -1):
        new = [Fraction(0)] * max(len(num), len(den) + 1)
        for i, c in enumerate(num):
            new[i] += (2 * k + 1) * c                # (2k+1) N
        for i, c in enumerate(den):
            new[i + 1] += c                          # + s D
        num, den = new, num
    return [int(c) for c in den], [int(c) for c in num]   # P = D_0, Q = N_0


_P, _Q = tanh_coefficients()
P0, P1, P2, P3, P4, P5, P6 = (np.float32(c) for c in _P)
Q0, Q1, Q2, Q3, Q4, Q5, Q6 = (np.float32(c) for c in _Q)
TANH_CLAMP = np.float32(9.0)
GELU_K = np.float32(math.sqrt(2.0 / math.pi))
GELU_C = np.float32(0.044715)
HALF, ONE = np.float32(0.5), np.float32(1.0)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def gelu_forward_f32(x, y, t):
    """float32, 1-D: u = k (x + c x^3), t = tanh(u) as u P(u^2) / Q(u^2) for |u| < 9 and
    +-1 beyond (tanh 9 is 1 - 3e-8), then held to [-1, 1], y = 0.5 x (1 + t). A NaN stays
    NaN (every comparison is false). t exactly +-1 where the true tanh rounds to it matters
    to the backward: 1 - t^2 there is multiplied by x k (1 + 3 c x^2), which grows as x^3
    (the rational form reaches 1 + 2e-7, and at x = -12 had made dy/dx 1.2e-5 instead of 0).
    The two tests cost 0.045 ms a call on (1536 x 512) floats, 2 cores: 0.23 against 0.185."""
    for i in range(x.shape[0]):
        xi = x[i]
        u = GELU_K * (xi + GELU_C * xi * xi * xi)
        s = u * u
        p = (((((P6 * s + P5) * s + P4) * s + P3) * s + P2) * s + P1) * s + P0
        q = (((((Q6 * s + Q5) * s + Q4) * s + Q3) * s + Q2) * s + Q1) * s + Q0
        ti = u * p / q
        ti = ONE if ti > ONE or u >= TANH_CLAMP else ti
        ti = -ONE if ti < -ONE or u <= -TANH_CLAMP else ti
        t[i] = ti
        y[i] = HALF * xi * (ONE + ti)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def gelu_backward(g, x, t, dx):
    """1-D, any float dtype: dx = g (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2))."""
    k = x.dtype.type(math.sqrt(2.0 / math.pi))
    c3 = x.dtype.type(3.0 * 0.044715)
    half, one = x.dtype.type(0.5), x.dtype.type(1.0)
    for i in range(x.shape[0]):
        xi, ti = x[i], t[i]
        du = k * (one + c3 * xi * xi)
        dx[i] = g[i] * (half * (one + ti) + half * xi * (one - ti * ti) * du)


# ---------------------------------------------------------------------------- AdamW (adamw.py)
@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def adamw_update(p, g, m, v, decay, beta1, beta2, step_size, bias2_sqrt, eps):
    """1-D, in place, one pass: p <- p decay; m <- m + (1 - beta1)(g - m);
    v <- beta2 v + (1 - beta2) g^2; p <- p - step_size m / (sqrt(v) / bias2_sqrt + eps),
    with decay = 1 - lr wd, step_size = lr / (1 - beta1^t), bias2_sqrt = sqrt(1 - beta2^t).
    The scalars come in the arrays' dtype, so that float32 stays float32."""
    one = p.dtype.type(1.0)
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] + (one - beta1) * (gi - m[i])
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (math.sqrt(vi) / bias2_sqrt + eps)


# ---------------------------------------------------------------------------- exp, and the head's softmax (linear_cross_entropy.py)
LOG2E = np.float32(1.0 / math.log(2.0))
# ln 2 split in two (Cody & Waite 1980): LN2_HI has few enough significant bits that k * LN2_HI
# is exact for the |k| <= 128 used here, and LN2_LO carries the rest of ln 2
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(math.log(2.0) - 0.693359375)
EXP_LOW = np.float32(-87.0)            # exp(-87) = 1.6e-38, near float32's smallest normal number
INV_FACTORIALS = tuple(np.float32(1.0 / math.factorial(n)) for n in range(8))
E0, E1, E2, E3, E4, E5, E6, E7 = INV_FACTORIALS
K_LOW = np.float32(-126.0)              # 2^-126: float32's smallest normal number
EXPONENT_BIAS, MANTISSA_BITS = np.int32(127), np.int32(23)
ZERO = np.float32(0.0)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose 32 bits are those of the int32 ``bits`` (LLVM's bitcast, one
    instruction per SIMD lane; numba has no scalar way to say it)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=FAST, error_model="numpy")
def exp_nonpositive_f32(x):
    """exp(x) for float32 x <= 0, in operations the compiler turns into SIMD (a call of
    math.exp stays one scalar call per element). exp(x) = 2^k exp(r) with k = round(x / ln 2)
    and r = x - k ln 2 in [-ln2/2, ln2/2]; exp(r) by its Taylor series to r^7 (the first term
    left out is r^8/8! <= 5.2e-9 there, the whole remainder under 1e-8, below float32's
    6e-8); 2^k, k in [-126, 0], written straight into a float32's bits: exponent field k + 127, mantissa 0 (IEEE 754). Below -87
    (just above ln of float32's smallest normal number, -87.34) it returns 0, which also keeps
    k >= -126, the smallest exponent the bits can hold; and a NaN is returned as
    itself (its conversion to an integer means nothing). Within 3e-7 relative of exp over
    [-87, 0], as measured (tests/autograd/test_fast_bodies.py allows 4e-7).

    2^k from the bits replaced a product of 2^-(2^i) over the bits of -k, one comparison
    each: exp 2.8x faster (2M values: 0.63 -> 0.22 ms, one core), the head's softmax 19.4 ->
    12.1 ms for 768 rows of 50257, one core."""
    k = np.floor(x * LOG2E + np.float32(0.5))                 # round(x / ln 2), a float
    r = (x - k * LN2_HI) - k * LN2_LO
    p = ((((((E7 * r + E6) * r + E5) * r + E4) * r + E3) * r + E2) * r + E1) * r + E0
    k = max(k, K_LOW)                                          # -inf -> -126: the bits stay a normal number
    two_k = _float32_from_bits(np.int32((np.int32(k) + EXPONENT_BIAS) << MANTISSA_BITS))
    e = ZERO if x < EXP_LOW else p * two_k
    return x if x != x else e


@njit(cache=True, fastmath=FAST, error_model="numpy")
def exp_nonpositive_f32_array(x, out):
    """exp_nonpositive_f32 over a 1-D float32 array (for the tests)."""
    for i in range(x.shape[0]):
        out[i] = exp_nonpositive_f32(x[i])


LANES = 16          # float32 SIMD lanes of AVX-512; written out, so that the compiler keeps them
SUM_BLOCK = 1024    # exp terms summed in float32 (in SIMD lanes) before they join a float64 sum


@njit(inline="always", fastmath=FAST)
def _row_max(row, lane):
    """max_j row[j], with LANES partial maxima kept in ``lane`` (a float array of LANES that
    the caller allocates once, not once a row: for attention's rows of 128 keys that
    allocation was half of the softmax's time): a running max is one long chain of
    comparisons, which the compiler leaves scalar (twice as slow as NumPy's max)."""
    n = row.shape[0]
    whole = n // LANES * LANES
    lane[:] = row[0]
    for j in range(0, whole, LANES):
        for k in range(LANES):
            lane[k] = row[j + k] if row[j + k] > lane[k] else lane[k]
    m = lane[0]
    for k in range(1, LANES):
        m = lane[k] if lane[k] > m else m
    for j in range(whole, n):
        m = row[j] if row[j] > m else m
    return m


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _exp_shifted_sum(segment, m):
    """segment <- exp(segment - m) in place; returns their float32 sum, which fast-math
    spreads over SIMD lanes (SUM_BLOCK terms: a few roundings of 6e-8)."""
    total = np.float32(0.0)
    for j in range(segment.shape[0]):
        e = exp_nonpositive_f32(segment[j] - m)
        segment[j] = e
        total += e
    return total


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def softmax_xent_rows_f32(z, targets, row_scale, losses, write_grad):
    """linear_cross_entropy.softmax_xent_rows for float32 logits z (rows, V), C-contiguous, in
    three passes over each row while it is in the core's cache (NumPy makes five, each over
    memory: max, subtract, exp, sum, scale): m = max_j z_ij; z_ij <- exp(z_ij - m) and their sum s (float32 sums of
    SUM_BLOCK terms, added in float64); the loss m + log s - z_{i,t_i}; then, for the
    gradient, z_ij <- (row_scale_i / s) z_ij, and row_scale_i subtracted at t_i. ``nogil``:
    rows split over Python threads run at once.

    Each pass loops over a 1-D row (or a slice of it) from 0: a loop over z[i, j] with j
    from a start other than 0 ran scalar, 20 ns an element (numba cannot then rule out a
    negative index, and checks each). A NaN in the row makes s, and so the loss, NaN (the
    max's comparisons pass it over; exp(NaN - m) does not)."""
    rows, vocab = z.shape
    lane = np.empty(LANES, dtype=z.dtype)
    for i in range(rows):
        row = z[i]
        picked = row[targets[i]]
        m = _row_max(row, lane)
        total = 0.0
        for start in range(0, vocab, SUM_BLOCK):
            total += _exp_shifted_sum(row[start:start + SUM_BLOCK], m)
        losses[i] = m + math.log(total) - picked          # lse_i - z_{i,t_i}
        if write_grad:
            scale = np.float32(row_scale[i, 0] / total)   # softmax / n
            for j in range(vocab):
                row[j] *= scale
            row[targets[i]] -= row_scale[i, 0]            # - onehot(t_i) / n


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _exp_sum(segment, m):
    """sum_j exp(segment[j] - m), for segment <= m, in float32 SIMD lanes; reads only."""
    total = np.float32(0.0)
    for j in range(segment.shape[0]):
        total += exp_nonpositive_f32(segment[j] - m)
    return total


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def logsumexp_columns_f32(z, first, targets, m, s, picked):
    """One chunk of columns [first, first + width) of float32 logits z (rows, width),
    C-contiguous, folded into each row's running logsumexp (linear_cross_entropy's head
    without gradients). Over the columns seen so far, m_i is the largest logit and s_i =
    sum_j exp(z_ij - m_i) (float64 arrays; m starts at -inf, s at 0). A chunk with a larger
    maximum m'_i rescales the sum before adding to it:
        s_i <- s_i exp(m_i - m'_i) + sum_{j in chunk} exp(z_ij - m'_i),   m_i <- m'_i
    so that after the last chunk lse_i = m_i + log s_i, every exp having a non-positive
    argument (the online softmax normaliser of Milakov and Gimelshein, 2018). picked_i gets
    z_{i, t_i} from the chunk that holds column t_i. z is only read."""
    rows, width = z.shape
    lane = np.empty(LANES, dtype=z.dtype)
    for i in range(rows):
        row = z[i]
        k = targets[i] - first
        if k >= 0 and k < width:
            picked[i] = row[k]
        top = _row_max(row, lane)
        if top > m[i]:
            s[i] *= math.exp(m[i] - top)                   # exp(-inf) = 0 for the first chunk
            m[i] = top
        shift = np.float32(m[i])                           # a float32 logit: exact
        if m[i] == -math.inf:                              # no finite logit yet: exp(-inf - 0) = 0, and
            shift = np.float32(0.0)                        # a NaN stays NaN (-inf - -inf would be NaN)
        total = 0.0
        for start in range(0, width, SUM_BLOCK):
            total += _exp_sum(row[start:start + SUM_BLOCK], shift)
        s[i] += total

"""Launchers for the hand-written CUDA kernels (CUDA Python, compiled by numba-cuda).

Called from the CUDA bodies of the kernels in autograd/kernels/ (``forward_cuda`` and
``backward_cuda``, and ``adamw.update_cuda``), which ``Function.apply`` (and the optimizer,
through ``function.choose_body``) runs instead of the NumPy bodies when the kernels run on
CUDA: under the CuPy backend, or under the test backend ``cuda-sim``. A launcher checks the dtype (float32 or float64), allocates the outputs with the
active array module, picks the launch configuration (launch.py) and launches the kernel:

    launcher                  kernel (module.function)           mirrors
    layernorm_forward         layernorm.forward                  kernels/layernorm.py
    layernorm_backward_dx     layernorm.backward_dx
    gelu_forward              gelu.forward                       kernels/gelu.py
    gelu_backward             gelu.backward
    softmax_xent_rows         cross_entropy.softmax_xent_rows    kernels/linear_cross_entropy.py
    causal_softmax_forward    attention.causal_softmax_forward   kernels/attention.py
    softmax_backward          attention.softmax_backward
    embedding_backward        embedding.backward                 kernels/embedding.py
    adamw_step                adamw.step                         kernels/adamw.py
    flash_attention_forward   flash_attention.forward            kernels/attention.py, without P
    flash_attention_backward  flash_attention.backward_dq, _dkdv (backend.use_flash_attention)

launch.py imports numba and holds the launch configuration; reductions.py holds the
block-wide sum and max the row kernels share.

The kernel modules import numba, so each launcher imports its module when it is first
called: importing autograd never imports numba. numba compiles a kernel on its first
launch for each dtype (a second or so), then reuses it, and keeps the compiled code on disk
(``launch.cached_kernel``: in __pycache__ beside the source, or numba's cache folder, in a
folder named after the contents of launch.py and reductions.py, which every kernel compiles
in) for the next run. ``kernel[blocks, threads](...)``
launches ``blocks`` blocks of ``threads`` threads each.

Without a GPU, the same kernels run in numba's CUDA simulator on NumPy arrays
(NUMBA_ENABLE_CUDASIM=1 before numba is imported): see tests/autograd/test_cuda_kernels.py.
"""
from __future__ import annotations

import math

from ... import backend
from . import launch

np = backend.np

LAUNCHERS = ("layernorm_forward", "layernorm_backward_dx", "gelu_forward", "gelu_backward", "softmax_xent_rows",
             "causal_softmax_forward", "softmax_backward", "embedding_backward", "adamw_step")
FLASH_LAUNCHERS = ("flash_attention_forward", "flash_attention_backward")   # used when switched on
FLASH_HEAD_SIZE_MAX = launch.FLASH_HEAD_SIZE_MAX


def _real(*arrays):
    """The one dtype of these arrays, float32 or float64; TypeError otherwise."""
    dtype = np.dtype(arrays[0].dtype)
    if dtype.name not in ("float32", "float64"):
        raise TypeError(f"the CUDA kernels support float32 and float64 arrays, not {dtype.name}")
    for other in arrays[1:]:
        if other is not None and np.dtype(other.dtype) != dtype:
            raise TypeError(f"the CUDA kernels need arrays of one dtype, got {dtype.name} "
                            f"and {np.dtype(other.dtype).name}")
    return dtype


def _view(array, shape):
    """``array`` reshaped to ``shape`` as a view, for a kernel that writes into it in place."""
    if not array.flags.c_contiguous:
        raise ValueError(f"the CUDA kernels work in place on C-contiguous arrays, got shape {array.shape} "
                         f"with strides {array.strides}")
    return array.reshape(shape)


def layernorm_forward(x2, weight, bias, eps):
    """x2 (N, C), weight and bias (C,) (bias may be None) -> y, xhat (N, C), rstd (N, 1)."""
    from . import layernorm                    # the kernel module: imports numba on the first call
    xp = backend.xp()
    real = _real(x2, weight, bias)
    x2 = xp.ascontiguousarray(x2)
    rows, width = x2.shape
    y, xhat = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((rows, 1), dtype=real)
    has_bias = bias is not None
    b = bias if has_bias else weight           # without a bias, a stand-in the kernel does not read
    if rows:
        layernorm.forward[rows, launch.row_threads(width)](x2, weight, b, has_bias, real.type(eps), y, xhat, rstd)
    return y, xhat, rstd


def layernorm_backward_dx(g2, xhat, rstd, weight):
    """g2 = dL/dy, xhat (N, C), rstd (N, 1), weight (C,) -> dL/dx (N, C)."""
    from . import layernorm
    xp = backend.xp()
    _real(xhat, g2, rstd, weight)
    g2 = xp.ascontiguousarray(g2)
    rows, width = xhat.shape
    dx = xp.empty_like(xhat)
    if rows:
        layernorm.backward_dx[rows, launch.row_threads(width)](g2, xhat, rstd, weight, dx)
    return dx


def gelu_forward(x):
    """x (any shape) -> y = GELU(x) and t = tanh(u), both shaped as x."""
    from . import gelu
    xp = backend.xp()
    _real(x)
    x = xp.ascontiguousarray(x)
    y, t = xp.empty_like(x), xp.empty_like(x)
    if x.size:
        blocks, threads = launch.elementwise_grid(x.size)
        gelu.forward[blocks, threads](x.reshape(-1), y.reshape(-1), t.reshape(-1))
    return y, t


def gelu_backward(g, x, t):
    """g = dL/dy, x, t (one shape) -> dL/dx."""
    from . import gelu
    xp = backend.xp()
    _real(x, g, t)
    g, x, t = xp.ascontiguousarray(g), xp.ascontiguousarray(x), xp.ascontiguousarray(t)
    dx = xp.empty_like(x)
    if x.size:
        blocks, threads = launch.elementwise_grid(x.size)
        gelu.backward[blocks, threads](g.reshape(-1), x.reshape(-1), t.reshape(-1), dx.reshape(-1))
    return dx


def softmax_xent_rows(z, targets, row_scale, losses, write_grad):
    """In place on the chunk of logits z (rows, V): losses[i] = lse_i - z[i, t_i] (losses:
    float64, (rows,)), and z <- row_scale * (softmax(z) - onehot(t)) when write_grad.
    row_scale is (rows,) or (rows, 1)."""
    from . import cross_entropy
    xp = backend.xp()
    _real(z, row_scale)
    rows, vocab = z.shape
    targets = xp.ascontiguousarray(targets, dtype=xp.int64)
    row_scale = xp.ascontiguousarray(row_scale.reshape(-1))
    if rows:
        cross_entropy.softmax_xent_rows[rows, launch.row_threads(vocab)](
            z, targets, row_scale, bool(write_grad), losses)


def causal_softmax_forward(scores, scale):
    """In place: scores (..., Tq, Tk) -> softmax(scale * scores) with the future keys
    j > i + (Tk - Tq) of query i set to exactly 0."""
    from . import attention
    real = _real(scores)
    tq, tk = scores.shape[-2:]
    rows = _view(scores, (-1, tk))             # (B*nh*Tq, Tk)
    if rows.shape[0]:
        attention.causal_softmax_forward[rows.shape[0], launch.row_threads(tk)](rows, tq, real.type(scale))
    return scores


def softmax_backward(p, dp, scale):
    """In place: dp <- p * (dp - rowsum(dp * p)) * scale, rows along the last axis."""
    from . import attention
    xp = backend.xp()
    real = _real(p, dp)
    tk = p.shape[-1]
    dp_rows = _view(dp, (-1, tk))              # (rows, Tk)
    p_rows = xp.ascontiguousarray(p).reshape(-1, tk)
    if dp_rows.shape[0]:
        attention.softmax_backward[dp_rows.shape[0], launch.row_threads(tk)](p_rows, dp_rows, real.type(scale))
    return dp


def embedding_backward(ids, g2, dw):
    """In place: dw[ids[n]] += g2[n] for every n; ids (N,), g2 (N, C), dw (V, C).
    Repeated ids add up (atomic adds)."""
    from . import embedding
    xp = backend.xp()
    _real(dw, g2)
    ids = xp.ascontiguousarray(ids.reshape(-1), dtype=xp.int64)
    g2 = xp.ascontiguousarray(g2)
    if g2.size:
        blocks, threads = launch.elementwise_grid(g2.size)
        embedding.backward[blocks, threads](ids, g2, dw)


def adamw_step(p, g, m, v, lr, beta1, beta2, eps, decay, step_size, bc2_sqrt):
    """In place on the parameter p and its moments m, v (one shape, C-contiguous), with
    step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) for step t."""
    from . import adamw
    xp = backend.xp()
    real = _real(p, g, m, v).type
    if p.size == 0:
        return
    p1, m1, v1 = _view(p, -1), _view(m, -1), _view(v, -1)   # (n,) each
    g1 = xp.ascontiguousarray(g).reshape(-1)
    blocks, threads = launch.elementwise_grid(p.size)
    # 1 - lr decay, 1 - beta1 and 1 - beta2 in double precision, rounded once, as in kernels/adamw.py's NumPy update
    adamw.step[blocks, threads](p1, g1, m1, v1, real(1.0 - lr * decay), real(1.0 - beta1), real(beta2),
                                real(1.0 - beta2), real(eps), real(step_size), real(bc2_sqrt))


def _heads(a, hs):
    """(B, nh, T, hs) -> a C-contiguous (B*nh, T, hs)."""
    heads = math.prod(a.shape[:-2])            # not -1: ambiguous when T is 0
    return backend.xp().ascontiguousarray(a).reshape(heads, a.shape[-2], hs)


def flash_attention_forward(q, k, v, scale):
    """q (B, nh, Tq, hs), k and v (B, nh, Tk, hs) -> out (B, nh, Tq, hs) and L (B, nh, Tq), the
    log of each softmax denominator; P is never formed. hs <= FLASH_HEAD_SIZE_MAX."""
    from . import flash_attention as fa
    xp = backend.xp()
    real = _real(q, k, v)
    hs = q.shape[-1]
    if hs > launch.FLASH_HEAD_SIZE_MAX:
        raise ValueError(f"flash attention takes head sizes up to {launch.FLASH_HEAD_SIZE_MAX}, got {hs}")
    q3, k3, v3 = _heads(q, hs), _heads(k, hs), _heads(v, hs)
    out, lse = xp.empty_like(q3), xp.empty(q3.shape[:2], dtype=real)
    rows = launch.flash_rows()
    if q3.size:
        fa.forward[(q3.shape[0], -(-q3.shape[1] // rows)), rows](q3, k3, v3, out, lse, real.type(scale))
    return out.reshape(q.shape), lse.reshape(q.shape[:-1])


def flash_attention_backward(q, k, v, out, lse, g, scale):
    """dq, dk, dv of flash_attention_forward, with P recomputed from L (never stored)."""
    from . import flash_attention as fa
    xp = backend.xp()
    real = _real(q, k, v, out, g)
    hs = q.shape[-1]
    q3, k3, v3, o3, g3 = _heads(q, hs), _heads(k, hs), _heads(v, hs), _heads(out, hs), _heads(g, hs)
    lse3 = xp.ascontiguousarray(lse).reshape(q3.shape[:2])
    d = (g3 * o3).sum(axis=-1)                 # D_i = dout_i . out_i, (BH, Tq)
    dq, dk, dv = xp.empty_like(q3), xp.empty_like(k3), xp.empty_like(v3)
    rows = launch.flash_rows()
    if not q3.size:                            # no query: no key or value sent anything
        dk[...] = 0
        dv[...] = 0
    else:
        fa.backward_dq[(q3.shape[0], -(-q3.shape[1] // rows)), rows](q3, k3, v3, g3, lse3, d, dq, real.type(scale))
        fa.backward_dkdv[(k3.shape[0], -(-k3.shape[1] // rows)), rows](q3, k3, v3, g3, lse3, d, dk, dv,
                                                                        real.type(scale))
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)

"""Launchers for the hand-written CUDA kernels in kernels.cu (CuPy RawModule).

Used only when the CuPy backend is active: each NumPy kernel in autograd/kernels/
checks ``backend.is_cuda()`` and hands its hot loop to the function of the same name
here. The module is compiled on first use, once for float32 and once for float64.
"""
from __future__ import annotations

from pathlib import Path

from ... import backend

np = backend.np
SOURCE = Path(__file__).with_name("kernels.cu")
_modules = {}


def _module(dtype):
    key = np.dtype(dtype).name
    if key not in ("float32", "float64"):
        raise TypeError(f"the CUDA kernels support float32 and float64, not {key}")
    if key not in _modules:
        real = "float" if key == "float32" else "double"
        _modules[key] = backend.xp().RawModule(code=SOURCE.read_text(), options=(f"-DREAL={real}",))
    return _modules[key]


def _real(dtype, value):
    return np.dtype(dtype).type(value)


def _rows(n_cols):
    """Threads per block for a one-block-per-row kernel: a multiple of 32, up to 1024."""
    return int(min(1024, max(32, 32 * ((n_cols + 31) // 32))))


def _grid(n, threads=256):
    return (int(min(65535, max(1, (n + threads - 1) // threads))),), (threads,)


def layernorm_forward(x2, weight, bias, eps):
    xp = backend.xp()
    n, c = x2.shape
    y, xhat = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((n, 1), dtype=x2.dtype)
    b = bias if bias is not None else weight   # not read when has_bias is 0
    _module(x2.dtype).get_function("layernorm_forward")(
        (n,), (_rows(c),), (xp.ascontiguousarray(x2), weight, b, y, xhat, rstd, np.int32(c),
                            _real(x2.dtype, eps), np.int32(bias is not None)))
    return y, xhat, rstd


def layernorm_backward_dx(g2, xhat, rstd, weight):
    xp = backend.xp()
    n, c = xhat.shape
    dx = xp.empty_like(xhat)
    _module(xhat.dtype).get_function("layernorm_backward_dx")(
        (n,), (_rows(c),), (xp.ascontiguousarray(g2), xhat, rstd, weight, dx, np.int32(c)))
    return dx


def gelu_forward(x):
    xp = backend.xp()
    x = xp.ascontiguousarray(x)
    y, t = xp.empty_like(x), xp.empty_like(x)
    grid, block = _grid(x.size)
    _module(x.dtype).get_function("gelu_forward")(grid, block, (x, y, t, np.int64(x.size)))
    return y, t


def gelu_backward(g, x, t):
    xp = backend.xp()
    dx = xp.empty_like(x)
    grid, block = _grid(x.size)
    _module(x.dtype).get_function("gelu_backward")(grid, block, (xp.ascontiguousarray(g), x, t, dx, np.int64(x.size)))
    return dx


def softmax_xent_rows(z, targets, row_scale, losses, write_grad):
    """In place on the contiguous chunk z (rows, V): losses[i] = lse_i - z[i, t_i], and
    z <- row_scale * (softmax(z) - onehot(t)) when write_grad."""
    xp = backend.xp()
    rows, vocab = z.shape
    _module(z.dtype).get_function("softmax_xent_rows")(
        (rows,), (_rows(min(vocab, 1024)),),
        (z, xp.ascontiguousarray(targets, dtype=xp.int64), xp.ascontiguousarray(row_scale.reshape(-1)), losses,
         np.int32(vocab), np.int32(bool(write_grad))))


def causal_softmax_forward(scores, scale):
    """In place: scores (..., Tq, Tk) -> softmax(scale * scores) with the future masked."""
    tq, tk = scores.shape[-2:]
    rows = scores.size // tk
    _module(scores.dtype).get_function("causal_softmax_forward")(
        (rows,), (_rows(min(tk, 1024)),), (scores, np.int32(tq), np.int32(tk), _real(scores.dtype, scale)))
    return scores


def softmax_backward(p, dp, scale):
    """In place: dp <- p * (dp - rowsum(dp * p)) * scale."""
    tk = p.shape[-1]
    _module(p.dtype).get_function("softmax_backward")(
        (p.size // tk,), (_rows(min(tk, 1024)),), (p, dp, np.int32(tk), _real(p.dtype, scale)))
    return dp


def embedding_backward(ids, g2, dw):
    xp = backend.xp()
    n, c = g2.shape
    grid, block = _grid(n * c)
    _module(dw.dtype).get_function("embedding_backward")(
        grid, block, (xp.ascontiguousarray(ids, dtype=xp.int64), xp.ascontiguousarray(g2), dw, np.int64(n),
                      np.int32(c)))


def adamw_step(p, g, m, v, lr, beta1, beta2, eps, decay, step_size, bc2_sqrt):
    grid, block = _grid(p.size)
    dt = p.dtype
    _module(dt).get_function("adamw_step")(
        grid, block, (p, backend.xp().ascontiguousarray(g), m, v, np.int64(p.size), _real(dt, lr), _real(dt, beta1),
                      _real(dt, beta2), _real(dt, eps), _real(dt, decay), _real(dt, step_size), _real(dt, bc2_sqrt)))

"""Layer norm on the GPU: the CUDA face of autograd/kernels/layernorm.py (the math and
its derivation are there, in the same symbols).

One block per row of x (N, C); thread tid takes the channels i = tid, tid + blockDim, ...
and the block reductions (reductions.py) give every thread the row's sums.
"""
from __future__ import annotations

import math

from .launch import MAX_THREADS, cached_kernel, numba_cuda
from .reductions import block_sum

cuda = numba_cuda()


@cached_kernel
def forward(x, w, b, has_bias, eps, y, xhat, rstd):
    """x (N, C), w and b (C,) -> y, xhat (N, C) and rstd (N, 1), row n = blockIdx.x:
        mu     = (1/C) sum_i x_i
        var    = (1/C) sum_i (x_i - mu)^2      (two passes, as the NumPy kernel)
        rstd   = 1 / sqrt(var + eps)
        xhat_i = (x_i - mu) * rstd
        y_i    = w_i * xhat_i + b_i            (no b_i when has_bias is False)
    """
    real = x.dtype.type                        # float32 or float64: every constant in it
    scratch = cuda.shared.array(MAX_THREADS, x.dtype)
    n, tid, step = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    C = x.shape[1]
    part = real(0)
    for i in range(tid, C, step):
        part += x[n, i]
    mu = block_sum(part, scratch) / real(C)
    part = real(0)
    for i in range(tid, C, step):
        d = x[n, i] - mu
        part += d * d
    var = block_sum(part, scratch) / real(C)
    r = real(1) / math.sqrt(var + eps)         # rstd
    for i in range(tid, C, step):
        h = (x[n, i] - mu) * r                 # xhat_i
        xhat[n, i] = h
        if has_bias:
            y[n, i] = h * w[i] + b[i]
        else:
            y[n, i] = h * w[i]
    if tid == 0:
        rstd[n, 0] = r


@cached_kernel
def backward_dx(g, xhat, rstd, w, dx):
    """g = dL/dy, xhat (N, C), rstd (N, 1), w (C,) -> dx (N, C), row n = blockIdx.x:
        dxhat_i = g_i * w_i
        dx_j    = rstd * (dxhat_j - mean_i(dxhat_i) - xhat_j * mean_i(dxhat_i xhat_i))
    """
    real = g.dtype.type
    scratch = cuda.shared.array(MAX_THREADS, g.dtype)
    n, tid, step = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    C = g.shape[1]
    part_d = real(0)                           # this thread's share of sum_i dxhat_i
    part_dx = real(0)                          # ... and of sum_i dxhat_i xhat_i
    for i in range(tid, C, step):
        d = g[n, i] * w[i]
        part_d += d
        part_dx += d * xhat[n, i]
    mean_dxhat = block_sum(part_d, scratch) / real(C)
    mean_dxhat_xhat = block_sum(part_dx, scratch) / real(C)
    r = rstd[n, 0]
    for i in range(tid, C, step):
        d = g[n, i] * w[i]
        dx[n, i] = r * (d - mean_dxhat - xhat[n, i] * mean_dxhat_xhat)

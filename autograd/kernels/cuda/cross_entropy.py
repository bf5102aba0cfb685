"""Softmax cross-entropy rows on the GPU: the CUDA face of the row loop in
autograd/kernels/linear_cross_entropy.py (the same math as cross_entropy.py, whose CUDA
body uses CuPy operations instead).

One block per row i of the logits z (rows, V), three passes over the row:
    m_i    = max_j z_ij                                   (block max)
    lse_i  = m_i + log sum_j exp(z_ij - m_i)              (block sum)
    loss_i = lse_i - z_{i, t_i}
and, when the gradient is wanted, z_i is overwritten in place by
    P_ij   = s_i (softmax(z_i)_j - [j == t_i]),    softmax(z_i)_j = exp(z_ij - lse_i)
where s_i is the row's scale (1/n for a kept row, 0 for an ignored one).

A target outside [0, V) (the CPU body raises; here that would mean reading the GPU back
at every step) makes the row's loss NaN, and its gradient row NaN: a wrong target shows
as a NaN loss, where reading z[i, t] would have taken a logit of another row, or of
memory past the array. Ignored rows reach this kernel with target 0.
"""
from __future__ import annotations

import math

from .launch import MAX_THREADS, cached_kernel, numba_cuda
from .reductions import block_max, block_sum

cuda = numba_cuda()


@cached_kernel
def softmax_xent_rows(z, targets, row_scale, write_grad, losses):
    """z (rows, V), targets (rows,) int64, row_scale (rows,), losses (rows,) float64."""
    real = z.dtype.type
    scratch = cuda.shared.array(MAX_THREADS, z.dtype)
    i, tid, step = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    V = z.shape[1]
    part = real(-math.inf)
    for j in range(tid, V, step):
        part = max(part, z[i, j])
    m = block_max(part, scratch)
    part = real(0)
    for j in range(tid, V, step):
        part += math.exp(z[i, j] - m)
    lse = m + math.log(block_sum(part, scratch))
    t = targets[i]
    inside = t >= 0 and t < V
    if tid == 0:
        losses[i] = lse - z[i, t] if inside else math.nan
    if write_grad:
        cuda.syncthreads()                     # thread 0 has read z[i, t] before it is overwritten
        s = row_scale[i] if inside else real(math.nan)
        for j in range(tid, V, step):
            p = math.exp(z[i, j] - lse)        # softmax(z_i)_j
            if j == t:
                p -= real(1)
            z[i, j] = s * p

"""The attention softmax on the GPU: the CUDA face of the softmax in
autograd/kernels/attention.py (the derivation is there, in the same symbols).

The scores S (B, nh, Tq, Tk) are seen as B*nh*Tq rows of Tk keys; one block per row r.
Row r belongs to query i = r mod Tq, at absolute position i + (Tk - Tq), which may
see the keys j <= last = i + (Tk - Tq): the future keys j > last are masked.
Thread tid takes the keys j = tid, tid + blockDim, ...; it writes only the elements it
read, so no thread waits for another except inside the reductions.
"""
from __future__ import annotations

import math

from .launch import MAX_THREADS, cached_kernel, numba_cuda
from .reductions import block_max, block_sum

cuda = numba_cuda()


@cached_kernel
def causal_softmax_forward(S, Tq, scale):
    """In place, S (rows, Tk):  P[i, j] = exp(scale S[i, j] - m_i) / sum_{l <= last} exp(scale S[i, l] - m_i)
    for j <= last, P[i, j] = 0 for j > last, with m_i = max_{j <= last} scale S[i, j]."""
    real = S.dtype.type
    scratch = cuda.shared.array(MAX_THREADS, S.dtype)
    r, tid, step = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    Tk = S.shape[1]
    last = r % Tq + (Tk - Tq)                  # the last key this query may see
    part = real(-math.inf)
    for j in range(tid, last + 1, step):
        part = max(part, S[r, j] * scale)
    m = block_max(part, scratch)
    part = real(0)
    for j in range(tid, last + 1, step):
        part += math.exp(S[r, j] * scale - m)
    total = block_sum(part, scratch)
    for j in range(tid, Tk, step):
        if j <= last:
            S[r, j] = math.exp(S[r, j] * scale - m) / total
        else:
            S[r, j] = real(0)                  # the future: exactly zero


@cached_kernel
def softmax_backward(P, dP, scale):
    """In place, P and dP (rows, Tk):  dS[i, j] = P[i, j] (dP[i, j] - sum_l dP[i, l] P[i, l]) * scale,
    written over dP (dS = 0 wherever P = 0: the masked keys send no gradient)."""
    real = P.dtype.type
    scratch = cuda.shared.array(MAX_THREADS, P.dtype)
    r, tid, step = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    Tk = P.shape[1]
    part = real(0)
    for j in range(tid, Tk, step):
        part += dP[r, j] * P[r, j]
    row = block_sum(part, scratch)             # sum_l dP[i, l] P[i, l]
    for j in range(tid, Tk, step):
        dP[r, j] = P[r, j] * (dP[r, j] - row) * scale

"""Causal attention on the GPU without the T x T matrix: tiled, with an online softmax.

The same function as autograd/kernels/attention.py (its docstring has the derivation,
in these symbols), computed the way FlashAttention does (Dao et al., "FlashAttention",
2022, Algorithm 1 and its backward): the keys and values stream through shared memory
one tile of TILE rows at a time, and each query keeps only a running maximum m, a
running sum l and a running output, so neither S nor P (B, nh, T, T) ever exists. Memory
for a layer's attention drops from O(T^2) per head to O(T hs).

Forward, for query i (one GPU thread), over its visible keys j <= last(i) in order:
    s_j   = scale q_i . k_j
    m'    = max(m, s_j),   a = exp(m - m'),   p = exp(s_j - m')
    l     = a l + p,       o = a o + p v_j,   m = m'
then out_i = o / l, and L_i = m + log l (the log of the softmax's denominator) is kept.

Backward, with D_i = dout_i . out_i (= sum_j P_ij dP_ij) and P_ij = exp(s_ij - L_i)
recomputed from L, never stored:
    dP_ij = dout_i . v_j,     dS_ij = P_ij (dP_ij - D_i)
    dq_i  = scale sum_j dS_ij k_j          (one thread per query: backward_dq)
    dk_j  = scale sum_i dS_ij q_i          (one thread per key: backward_dkdv)
    dv_j  = sum_i P_ij dout_i
Each thread owns the row it writes, so there are no atomics; the other side of the
products streams through shared memory in tiles.

Limits: the head size is at most HS_MAX (its running row lives in the thread's local
memory); the launcher (kernels/cuda/__init__.py) says so. One thread per row and a loop
over the tile: simple and exact, not tuned (no tensor cores). On an H200, one layer at
GPT-2's shape (B 8, 12 heads, T 1024), forward and backward, took 90 ms against the fused
softmax's 4.8 ms, while adding 97 MiB of memory against its 1584 (benchmarks/README.md).
"""
from __future__ import annotations

import math

from .launch import FLASH_HEAD_SIZE_MAX as HS_MAX   # the largest head size: each thread's local rows
from .launch import FLASH_TILE as TILE              # rows of K and V (or of Q and dout) per shared tile
from .launch import cached_kernel, numba_cuda

cuda = numba_cuda()


@cuda.jit(device=True)
def load_tiles(A, B, As, Bs, bh, start, hs):
    """Rows start .. start + TILE - 1 of A[bh] and B[bh] (those that exist) into the shared
    tiles As and Bs, the block's threads taking the elements in turn."""
    tid, rows = cuda.threadIdx.x, cuda.blockDim.x
    for idx in range(tid, TILE * hs, rows):
        r, c = idx // hs, idx % hs
        if start + r < A.shape[1]:
            As[r, c] = A[bh, start + r, c]
            Bs[r, c] = B[bh, start + r, c]


@cached_kernel
def forward(Q, K, V, O, L, scale):
    """Q, O (BH, Tq, hs); K, V (BH, Tk, hs); L (BH, Tq). Block (bh, query tile); thread: a query."""
    Ks = cuda.shared.array((TILE, HS_MAX), Q.dtype)
    Vs = cuda.shared.array((TILE, HS_MAX), Q.dtype)
    q = cuda.local.array(HS_MAX, Q.dtype)
    o = cuda.local.array(HS_MAX, Q.dtype)
    real = Q.dtype.type
    bh, tid, rows = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    tq, tk, hs = Q.shape[1], K.shape[1], Q.shape[2]
    i = cuda.blockIdx.y * rows + tid
    valid = i < tq
    last = i + (tk - tq)                                   # the last key query i may see
    block_last = min(cuda.blockIdx.y * rows + rows - 1, tq - 1) + (tk - tq)
    m, l = real(-math.inf), real(0)
    for c in range(hs):
        q[c] = Q[bh, i, c] if valid else real(0)
        o[c] = real(0)
    for j0 in range(0, block_last + 1, TILE):
        load_tiles(K, V, Ks, Vs, bh, j0, hs)               # the block loads one tile together
        cuda.syncthreads()
        if valid:
            for r in range(min(TILE, last + 1 - j0)):      # the visible keys of this tile
                s = real(0)
                for c in range(hs):
                    s += q[c] * Ks[r, c]
                s *= scale
                m_new = max(m, s)
                a, p = math.exp(m - m_new), math.exp(s - m_new)
                l = a * l + p
                for c in range(hs):
                    o[c] = a * o[c] + p * Vs[r, c]
                m = m_new
        cuda.syncthreads()                                 # the tile is read before the next load
    if valid:
        for c in range(hs):
            O[bh, i, c] = o[c] / l
        L[bh, i] = m + math.log(l)


@cached_kernel
def backward_dq(Q, K, V, dO, L, D, dQ, scale):
    """dQ (BH, Tq, hs): one thread per query, K and V streamed in tiles."""
    Ks = cuda.shared.array((TILE, HS_MAX), Q.dtype)
    Vs = cuda.shared.array((TILE, HS_MAX), Q.dtype)
    q = cuda.local.array(HS_MAX, Q.dtype)
    do = cuda.local.array(HS_MAX, Q.dtype)
    dq = cuda.local.array(HS_MAX, Q.dtype)
    real = Q.dtype.type
    bh, tid, rows = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    tq, tk, hs = Q.shape[1], K.shape[1], Q.shape[2]
    i = cuda.blockIdx.y * rows + tid
    valid = i < tq
    last = i + (tk - tq)
    block_last = min(cuda.blockIdx.y * rows + rows - 1, tq - 1) + (tk - tq)
    li, di = (L[bh, i], D[bh, i]) if valid else (real(0), real(0))
    for c in range(hs):
        q[c] = Q[bh, i, c] if valid else real(0)
        do[c] = dO[bh, i, c] if valid else real(0)
        dq[c] = real(0)
    for j0 in range(0, block_last + 1, TILE):
        load_tiles(K, V, Ks, Vs, bh, j0, hs)
        cuda.syncthreads()
        if valid:
            for r in range(min(TILE, last + 1 - j0)):
                s, dp = real(0), real(0)
                for c in range(hs):
                    s += q[c] * Ks[r, c]
                    dp += do[c] * Vs[r, c]
                p = math.exp(s * scale - li)               # P_ij, recomputed
                ds = p * (dp - di)                         # dS_ij
                for c in range(hs):
                    dq[c] += ds * Ks[r, c]
        cuda.syncthreads()
    if valid:
        for c in range(hs):
            dQ[bh, i, c] = dq[c] * scale


@cached_kernel
def backward_dkdv(Q, K, V, dO, L, D, dK, dV, scale):
    """dK, dV (BH, Tk, hs): one thread per key, Q, dout, L and D streamed in tiles."""
    Qs = cuda.shared.array((TILE, HS_MAX), Q.dtype)
    dOs = cuda.shared.array((TILE, HS_MAX), Q.dtype)
    Ls = cuda.shared.array(TILE, Q.dtype)
    Ds = cuda.shared.array(TILE, Q.dtype)
    k = cuda.local.array(HS_MAX, Q.dtype)
    v = cuda.local.array(HS_MAX, Q.dtype)
    dk = cuda.local.array(HS_MAX, Q.dtype)
    dv = cuda.local.array(HS_MAX, Q.dtype)
    real = Q.dtype.type
    bh, tid, rows = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    tq, tk, hs = Q.shape[1], K.shape[1], Q.shape[2]
    j = cuda.blockIdx.y * rows + tid
    valid = j < tk
    shift = tk - tq                                        # query i sees key j when j <= i + shift
    first_query = max(0, cuda.blockIdx.y * rows - shift)   # the first query that sees any key of the block
    for c in range(hs):
        k[c] = K[bh, j, c] if valid else real(0)
        v[c] = V[bh, j, c] if valid else real(0)
        dk[c] = real(0)
        dv[c] = real(0)
    for i0 in range(first_query - first_query % TILE, tq, TILE):
        load_tiles(Q, dO, Qs, dOs, bh, i0, hs)
        for r in range(tid, TILE, rows):
            if i0 + r < tq:
                Ls[r] = L[bh, i0 + r]
                Ds[r] = D[bh, i0 + r]
        cuda.syncthreads()
        if valid:
            for r in range(min(TILE, tq - i0)):
                if j <= i0 + r + shift:                    # query i0 + r sees key j
                    s, dp = real(0), real(0)
                    for c in range(hs):
                        s += Qs[r, c] * k[c]
                        dp += dOs[r, c] * v[c]
                    p = math.exp(s * scale - Ls[r])
                    ds = p * (dp - Ds[r])
                    for c in range(hs):
                        dv[c] += p * dOs[r, c]
                        dk[c] += ds * Qs[r, c]
        cuda.syncthreads()
    if valid:
        for c in range(hs):
            dK[bh, j, c] = dk[c] * scale
            dV[bh, j, c] = dv[c]

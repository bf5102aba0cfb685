"""Sum and max over the threads of a block, through shared memory.

The row kernels give one row to one block: each thread first folds its share of the
row (elements tid, tid + blockDim, ...) into one value, then the block combines its
blockDim values into one, which every thread needs (the mean of a row, the max of a
row before the exponentials, ...). That second step is a tree in shared memory:

    scratch[t] = value of thread t                       t = 0 .. blockDim - 1
    half = blockDim / 2, blockDim / 4, ..., 1:
        scratch[t] = scratch[t] (+ or max) scratch[t + half]      for t < half
        syncthreads                                      (the next round reads this one)
    result = scratch[0]

log2(blockDim) rounds, so blockDim must be a power of two (launch.py makes it one).
``scratch`` is a shared array the kernel declares (``cuda.shared.array(MAX_THREADS,
dtype)``) and hands to every reduction it calls. (The CUDA C version reduced inside
warps with shuffles; numba's simulator has no shuffles, and this form runs in both.)
"""
from __future__ import annotations

from .launch import numba_cuda

cuda = numba_cuda()


@cuda.jit(device=True)
def block_sum(value, scratch):
    """sum over the block's threads t of value_t; every thread gets it."""
    t = cuda.threadIdx.x
    cuda.syncthreads()             # every thread has read the previous reduction's scratch[0]
    scratch[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            scratch[t] += scratch[t + half]
        cuda.syncthreads()
        half //= 2
    return scratch[0]


@cuda.jit(device=True)
def block_max(value, scratch):
    """max over the block's threads t of value_t; every thread gets it."""
    t = cuda.threadIdx.x
    cuda.syncthreads()             # every thread has read the previous reduction's scratch[0]
    scratch[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half and scratch[t + half] > scratch[t]:
            scratch[t] = scratch[t + half]
        cuda.syncthreads()
        half //= 2
    return scratch[0]

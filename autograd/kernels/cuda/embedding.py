"""The embedding's backward on the GPU: the CUDA face of autograd/kernels/embedding.py.

    dW[ids[n], c] += g[n, c]      for every position n and channel c

An id outside [0, V) is taken modulo V, as CuPy's gather in the forward takes it
(its integer indexing wraps around where NumPy's raises): the gradient is that of the
forward that ran, and no thread writes outside dW. (The model refuses such ids while they
are on the host, tinygpt/model.py; ids already on the GPU are not read back to check.)

A scatter-add: when an id repeats, several threads add into the same dW[v, c] at
once, and a plain ``+=`` (read, add, write) would lose all but one of the additions.
``cuda.atomic.add`` makes each read-add-write one indivisible step, so every
repeat is added. (The order of the additions is then the order the threads arrive in,
so float32 results may differ between runs in the last bits.)
"""
from __future__ import annotations

from .launch import cached_kernel, numba_cuda

cuda = numba_cuda()


@cached_kernel
def backward(ids, g, dW):
    """ids (N,) int64, g (N, C), dW (V, C) in place; one element k = n C + c per grid-stride step."""
    N, C = g.shape
    V = dW.shape[0]
    for k in range(cuda.grid(1), N * C, cuda.gridsize(1)):
        n = k // C
        c = k - n * C
        v = ids[n] % V                          # wrapped, as the forward's gather
        if v < 0:                               # (whatever sign the remainder takes)
            v += V
        cuda.atomic.add(dW, (v, c), g[n, c])

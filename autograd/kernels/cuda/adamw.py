"""One AdamW step on the GPU: the CUDA face of ``AdamW.step`` in autograd/optim.py.

For each element i of a parameter p with gradient g and moments m, v (flat, (n,)):
    p <- p (1 - lr decay)                                 (decoupled weight decay)
    m <- m + (1 - beta1) (g - m)
    v <- beta2 v + (1 - beta2) g^2
    p <- p - step_size m / (sqrt(v) / bc2_sqrt + eps)
with step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) for step t: the
bias corrections of m and v, folded in. The operations happen in the same order, with
the same roundings, as the NumPy update in kernels/adamw.py; the launcher forms 1 - lr decay,
1 - beta1 and 1 - beta2 in double precision, as Python does there. One pass over p, g,
m and v instead of the NumPy update's fourteen passes.
"""
from __future__ import annotations

import math

from .launch import cached_kernel, numba_cuda

cuda = numba_cuda()


@cached_kernel
def step(p, g, m, v, keep, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bc2_sqrt):
    """p, g, m, v (n,); keep = 1 - lr decay; the rest as in the module docstring."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        pi = p[i] * keep
        mi = m[i] + (gi - m[i]) * one_minus_beta1
        vi = v[i] * beta2 + gi * gi * one_minus_beta2
        m[i] = mi
        v[i] = vi
        p[i] = pi - mi / (math.sqrt(vi) / bc2_sqrt + eps) * step_size

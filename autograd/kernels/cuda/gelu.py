"""GPT-2's tanh GELU on the GPU: the CUDA face of autograd/kernels/gelu.py.

    y = 0.5 x (1 + t),   t = tanh(u),   u = k (x + c x^3),   k = sqrt(2/pi),  c = 0.044715

Elementwise on flat arrays, one grid-stride loop: thread idx of the grid takes the
elements idx, idx + gridsize, idx + 2 gridsize, ...
"""
from __future__ import annotations

import math

from .launch import cached_kernel, numba_cuda

cuda = numba_cuda()

K = math.sqrt(2.0 / math.pi)   # k (the same constants as autograd/kernels/gelu.py;
C = 0.044715                   # c  the tests compare the two kernels)


@cached_kernel
def forward(x, y, t):
    """x (n,) -> y (n,) and t = tanh(u) (n,), kept for the backward."""
    real = x.dtype.type
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        u = real(K) * (v + real(C) * v * v * v)
        th = math.tanh(u)
        t[i] = th
        y[i] = real(0.5) * v * (real(1) + th)


@cached_kernel
def backward(g, x, t, dx):
    """g = dL/dy, x, t (n,) -> dx (n,):
        du/dx = k (1 + 3 c x^2)
        dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,     dL/dx = g dy/dx
    """
    real = x.dtype.type
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v, th = x[i], t[i]
        du = real(K) * (real(1) + real(3 * C) * v * v)
        dx[i] = g[i] * (real(0.5) * ((real(1) + th) + v * (real(1) - th * th) * du))

"""One AdamW step on one parameter, in place: the update ``optim.AdamW.step`` applies.

AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019, Algorithm 2),
written as PyTorch's ``torch.optim.AdamW`` computes it, so that the two agree step for
step (the paper's decay eta_t lambda is lr * wd here, as in PyTorch: wd = lambda / alpha).
For a parameter p with gradient g, at step t (from 1):

    p   <- p * (1 - lr * wd)                       decoupled decay: not part of g
    m   <- m + (1 - beta1) (g - m)                 first moment (running mean of g)
    v   <- beta2 v + (1 - beta2) g^2               second moment (running mean of g^2)
    m^  =  m / (1 - beta1^t)                       bias corrections: m and v start at 0
    v^  =  v / (1 - beta2^t)
    p   <- p - lr * m^ / (sqrt(v^) + eps)

The optimizer has no backward: it consumes gradients. Like the differentiable kernels it
has a NumPy body, ``update`` (the reference, in place, in the parameter's own dtype), a
compiled CPU body, ``update_fast`` (cpu/loops.py), and a CUDA body, ``update_cuda`` (both
one fused pass over p, g, m, v; cuda/adamw.py); optim.py picks one with
``function.choose_body``, the engine's one device switch.
"""
from __future__ import annotations

import math

from .. import backend
from . import cpu, cuda

SPLIT_ELEMENTS = 1 << 18   # elements per thread at least: below, one core (the hand-off costs more)

# Whether optim.AdamW (and clip_grad_norm) should, by default, update a parameter group in
# one call over flat buffers instead of one call per parameter: where a call costs more
# than its arithmetic. On CUDA it does: a numba-cuda launch costs the host about 110 µs
# (benchmarks/bench_launch.py on an H200), GPT-2 has 148 parameters. On the CPU a call
# costs microseconds and the flat buffers would cost a copy of every gradient.
# Chosen like a body (function.choose_body), so that no code here asks for the device.
one_call_per_group = False
one_call_per_group_cuda = True


def update(p, g, m, v, lr, beta1, beta2, eps, wd, t):
    """p, m, v updated in place from g; t is the step, counted from 1."""
    xp = backend.xp()
    if wd:
        p *= 1.0 - lr * wd                              # decoupled decay
    tmp = g - m
    tmp *= 1.0 - beta1
    m += tmp                                            # m <- m + (1 - beta1)(g - m)
    xp.multiply(g, g, out=tmp)
    tmp *= 1.0 - beta2
    v *= beta2
    v += tmp                                            # v <- beta2 v + (1 - beta2) g^2
    step_size = lr / (1.0 - beta1 ** t)                 # lr / (1 - beta1^t): m^ folded in
    xp.sqrt(v, out=tmp)
    tmp /= math.sqrt(1.0 - beta2 ** t)                  # sqrt(v^)
    tmp += eps
    xp.divide(m, tmp, out=tmp)
    tmp *= step_size
    p -= tmp                                            # p <- p - lr m^ / (sqrt(v^) + eps)


def update_fast(p, g, m, v, lr, beta1, beta2, eps, wd, t):
    """The same update as one compiled loop (cpu/loops.py, adamw_update) that reads p, g, m, v
    once and writes p, m, v once, where the reference makes fourteen passes over memory:
    3.3 ms against 14.7 for 6.5 million float32 parameters (the baby model's embedding),
    measured on one core; a parameter of at least 2 SPLIT_ELEMENTS is split over the cores
    (the loop releases Python's lock): 3.8 -> 2.8 ms a default-run step (one profile each).
    Without numba, or for arrays that are not contiguous: the reference."""
    compiled = cpu.compiled()
    if compiled is None or not all(a.flags.c_contiguous for a in (p, g, m, v)) or g.dtype != p.dtype:
        return update(p, g, m, v, lr, beta1, beta2, eps, wd, t)
    s = p.dtype.type
    p, g, m, v = (a.reshape(-1) for a in (p, g, m, v))
    scalars = (s(1.0 - lr * wd), s(beta1), s(beta2), s(lr / (1.0 - beta1 ** t)), s(math.sqrt(1.0 - beta2 ** t)), s(eps))
    backend.parallel_rows(lambda lo, hi: compiled.adamw_update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], *scalars),
                          p.size, min_rows=SPLIT_ELEMENTS)


def update_cuda(p, g, m, v, lr, beta1, beta2, eps, wd, t):
    """The same update in one CUDA kernel: each thread reads p, g, m, v once and writes
    p, m, v once (the NumPy body makes fourteen passes over memory)."""
    cuda.adamw_step(p, g, m, v, lr, beta1, beta2, eps, wd, lr / (1.0 - beta1 ** t), math.sqrt(1.0 - beta2 ** t))

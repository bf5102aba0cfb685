"""The language-model head and its loss in one kernel: cross_entropy(x W^T, targets).

Shapes
    x        : (..., C)  flattened to (N, C): the final hidden states
    W        : (V, C)    the output matrix (GPT-2 ties it to the token embedding)
    t        : (N,)      integer targets; rows with t_i == ignore_index are left out
    z = x W^T: (N, V)    the logits, formed one chunk of rows at a time
    loss     : ()

Forward, for each kept row i (n of them); this is linear.py followed by
cross_entropy.py, fused:
    z_i     = W x_i                                   (V,)
    lse_i   = m_i + log sum_j exp(z_ij - m_i),  m_i = max_j z_ij
    loss    = (1/n) sum_i (lse_i - z_{i, t_i})

Backward (g = dL/dloss, a scalar). With P = dloss/dz, the cross-entropy gradient,
    P_ij    = (softmax(z_i)_j - [j == t_i]) / n      for kept rows, 0 for ignored ones
the linear layer's rules (linear.py) give
    dL/dx   = g P W          (N, C)
    dL/dW   = g P^T x        (V, C)

Why fuse: with GPT-2's V = 50257 the logits are the largest array of the whole
network (N = 8192 positions: 1.6 GB in float32). Computed separately, the logits,
the softmax and their gradient are three such arrays. Here the forward computes each
chunk of logits and turns it, while it is still in cache, into P, in place, in one
(N, V) buffer: the softmax is evaluated once, and the backward is two matrix products
of P. Without gradients (evaluation) only one chunk of logits exists at a time.
The model returns no logits when it is given targets for this reason.
"""
from __future__ import annotations

import weakref

from .. import backend
from ..function import Function
from ..tensor import Tensor
from . import cpu, cuda
from .cross_entropy import check_target_range

CHUNK_ELEMENTS = 1 << 24   # about 64 MB of float32 logits per chunk of rows (large chunks keep the GEMM efficient)
CACHE_ELEMENTS = 1 << 17   # about 512 KB: the rows one core works through at a time
COLUMN_CHUNK_ELEMENTS = 1 << 21   # about 8 MB: a chunk of logits that stays in the L3 cache (no gradients)
COLUMN_BLOCK_ROWS = 2048          # rows per block there, so that a chunk keeps >= 1024 columns


def softmax_xent_rows(z, targets, row_scale, losses, write_grad):
    """In place on a chunk of logits z (rows, V): losses[i] = lse_i - z[i, t_i], and, when
    ``write_grad``, z <- row_scale * (softmax(z) - onehot(t)) (row_scale (rows, 1): 1/n, or 0
    for an ignored row). The reference; cuda.softmax_xent_rows is the same, a block per row."""
    xp = backend.xp()
    rows = xp.arange(z.shape[0])
    picked = z[rows, targets]                                           # z_{i, t_i}
    m = z.max(axis=1, keepdims=True)                                    # (rows, 1)
    z -= m
    xp.exp(z, out=z)                                                    # exp(z_ij - m_i)
    s = z.sum(axis=1, keepdims=True)                                    # (rows, 1)
    losses[:] = m[:, 0] + xp.log(s[:, 0]) - picked                      # lse_i - z_{i,t_i}
    if write_grad:
        z *= row_scale / s                                              # softmax(z_i) / n
        z[rows, targets] -= row_scale[:, 0]                             # - onehot(t_i) / n


def _softmax_xent_rows_threads(z, targets, row_scale, losses, write_grad):
    """The same, split over the cores, a few rows at a time so that the five passes over
    each row (max, subtract, exp, sum, scale) stay in the core's cache. float32 rows
    take the compiled loop (cpu/loops.py: three passes a row, a vectorised exp; 13 against
    33 ms for the default run's (1536, 50257) logits, 2 cores; 20-21.5 while the exp built
    2^k from comparisons), where numba is there."""
    compiled = cpu.compiled()
    if compiled is not None and z.dtype.name == "float32" and z.flags.c_contiguous:
        backend.parallel_rows(lambda lo, hi: compiled.softmax_xent_rows_f32(
            z[lo:hi], targets[lo:hi], row_scale[lo:hi], losses[lo:hi], write_grad), z.shape[0])
        return
    in_cache = max(1, CACHE_ELEMENTS // z.shape[1])

    def rows(lo, hi):
        for a in range(lo, hi, in_cache):
            b = min(hi, a + in_cache)
            softmax_xent_rows(z[a:b], targets[a:b], row_scale[a:b], losses[a:b], write_grad)
    backend.parallel_rows(rows, z.shape[0])


_SPARE = {"probs": None, "owner": lambda: None}   # the last P buffer, and (weakly) the node that holds it


def _probs_buffer(ctx, shape, dtype):
    """An empty (N, V) array for P. On the CPU the previous step's is handed out again once the
    node that used it is gone (backward releases a node's saved arrays, and with them the
    node): NumPy maps an array this large (300 MB in the default run) freshly from the OS at
    each allocation and faults it in page by page, 10 ms of that run's 430 ms step. A graph
    kept alive (backward(retain_graph=True), or two losses at once) keeps its buffer: the next
    forward then gets a new one. Holds one such buffer between steps. (CPU bodies only: CuPy
    keeps freed device memory in its own pool.)"""
    probs = _SPARE["probs"]
    if probs is None or probs.shape != shape or probs.dtype != dtype or _SPARE["owner"]() is not None:
        probs = backend.xp().empty(shape, dtype=dtype)
    _SPARE["probs"], _SPARE["owner"] = probs, weakref.ref(ctx)
    return probs


def release_buffers():
    """Let go of the P buffer kept between steps (_probs_buffer): 300 MB after the default run,
    1.6 GB after GPT-2's 8 x 1024 tokens a step, held for as long as the process lives
    otherwise. The trainer calls it when its run ends; the next forward makes a new one."""
    _SPARE["probs"], _SPARE["owner"] = None, lambda: None


def _new_buffer(ctx, shape, dtype):
    return backend.xp().empty(shape, dtype=dtype)


def _losses_by_columns(compiled, x2, weight, targets, losses):
    """Without gradients, on the CPU in float32: losses[i] = lse_i - z_{i,t_i} from the logits
    of one chunk of vocabulary columns at a time, W[a:b] x_i, each chunk small enough to stay
    in the cache while the compiled loop (cpu/loops.py logsumexp_columns_f32) folds it into
    the rows' running logsumexp: the (N, V) logits never go out to memory and back. The
    default run's evaluation head (1536 rows, V 50257, 2 cores): 100 against 117-119 ms in
    64 MB chunks of rows, whose product writes each chunk to memory for the softmax to read
    it back (median of 15 alternations, two runs: 0.84x and 0.86x); the product alone, 81
    against 100 ms. Chunks of 2^19, 2^20, 2^22 elements: no faster, here or at 768 wide."""
    xp = backend.xp()                                                   # NumPy: a CPU body
    n_rows, vocab = x2.shape[0], weight.shape[0]
    for r0 in range(0, n_rows, COLUMN_BLOCK_ROWS):
        r1 = min(n_rows, r0 + COLUMN_BLOCK_ROWS)
        rows = r1 - r0
        width = max(1, min(vocab, COLUMN_CHUNK_ELEMENTS // rows))
        scratch = xp.empty(rows * width, dtype=x2.dtype)              # one chunk, reused
        m, s = xp.full(rows, -xp.inf), xp.zeros(rows)                  # running max and sum
        picked, t = xp.zeros(rows), targets[r0:r1]
        for a in range(0, vocab, width):
            b = min(vocab, a + width)
            z = scratch[:rows * (b - a)].reshape(rows, b - a)          # contiguous, even the last
            xp.matmul(x2[r0:r1], weight[a:b].T, out=z)                 # z = x W[a:b]^T
            backend.parallel_rows(lambda lo, hi: compiled.logsumexp_columns_f32(
                z[lo:hi], a, t[lo:hi], m[lo:hi], s[lo:hi], picked[lo:hi]), rows)
        losses[r0:r1] = m + xp.log(s) - picked                         # lse_i - z_{i,t_i}


def _forward(ctx, x, weight, targets, ignore_index, rows_kernel, check_range, buffer=_new_buffer, one_product=False,
             by_columns=False):
    xp = backend.xp()
    vocab, channels = weight.shape
    if x.shape[-1] != channels:
        raise ValueError(f"linear_cross_entropy: input has {x.shape[-1]} features, weight is {tuple(weight.shape)}")
    x2 = x.reshape(-1, channels)                                        # (N, C)
    n_rows = x2.shape[0]
    targets = xp.asarray(targets).reshape(-1)
    if targets.shape[0] != n_rows:
        raise ValueError(f"linear_cross_entropy: {n_rows} rows but {targets.shape[0]} targets")
    keep = targets != ignore_index                                      # (N,)
    if check_range:
        check_target_range("linear_cross_entropy", targets, keep, vocab)
    safe_targets = xp.where(keep, targets, 0)
    inv_n = 1.0 / xp.maximum(keep.sum().astype(x2.dtype), 1)            # 1/n, kept on the device
    row_scale = (keep * inv_n).astype(x2.dtype)[:, None]                # (N, 1): 1/n, or 0 if ignored
    if ctx.requires_grad:
        probs = buffer(ctx, (n_rows, vocab), x2.dtype)                  # becomes P, chunk by chunk
    losses = xp.empty(n_rows, dtype=xp.float64)                         # lse_i - z_{i,t_i}
    step = max(1, CHUNK_ELEMENTS // vocab)
    if one_product and ctx.requires_grad:
        step = n_rows                                                   # P is (N, V) anyway
    compiled = cpu.compiled() if by_columns and not ctx.requires_grad else None
    if compiled is not None and x2.dtype.name == "float32" and weight.dtype.name == "float32":
        _losses_by_columns(compiled, x2, weight, safe_targets, losses)
    else:
        if not ctx.requires_grad:
            # one chunk's logits, reused chunk after chunk: a fresh 64 MB array per chunk is mapped
            # from the OS and faulted in page by page (the default run's evaluation forward: the
            # head 6-12% faster, median of 12 alternations, two runs)
            scratch = xp.empty((min(step, n_rows), vocab), dtype=x2.dtype)
        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            z = probs[a:b] if ctx.requires_grad else scratch[:b - a]
            xp.matmul(x2[a:b], weight.T, out=z)                         # z = x W^T for these rows
            rows_kernel(z, safe_targets[a:b], row_scale[a:b], losses[a:b], ctx.requires_grad)
    if ctx.requires_grad:
        ctx.save_for_backward(x2, weight, probs)
        ctx.x_shape = x.shape
    return xp.asarray((losses * keep).sum() * inv_n, dtype=x2.dtype)


class LinearCrossEntropy(Function):
    # the backward's dx and dW are new arrays that nothing else holds: the tape may add the
    # other gradients of x and W into them in place (GPT-2's tied table: tensor.py)
    grads_are_new = True

    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index=-1):
        return _forward(ctx, x, weight, targets, ignore_index, softmax_xent_rows, check_range=True)

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        x2, weight, probs = ctx.saved
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = probs @ weight                                             # (N, C), P W
            dx *= g
            dx = dx.reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            dw = xp.matmul(probs.T, x2 * g)                                 # (V, C), P^T (g x): g on the small side
        return dx, dw, None, None

    @staticmethod
    def forward_fast(ctx, x, weight, targets, ignore_index=-1):
        """The softmax rows split over the cores (_softmax_xent_rows_threads), into the previous
        step's P buffer when it is free (_probs_buffer); with gradients, the logits in one
        product over all rows rather than chunk by chunk: P holds them all anyway, and the
        compiled softmax is as fast from memory as from the cache (default run's head with
        its softmax: 118-121 against 126-129 ms in 333-row chunks, 2 cores). Without gradients
        (evaluation), float32 logits chunk by chunk of columns (_losses_by_columns)."""
        return _forward(ctx, x, weight, targets, ignore_index, _softmax_xent_rows_threads, check_range=True,
                        buffer=_probs_buffer, one_product=True, by_columns=True)

    @staticmethod
    def forward_cuda(ctx, x, weight, targets, ignore_index=-1):
        """The softmax rows in one CUDA kernel, a block per row; no range check, which would
        read the GPU back at every step. With gradients, the logits in one product over all
        rows, as forward_fast does, P holding them all anyway: in 64 MB chunks GPT-2's
        8192 rows at batch 8 took 25 products and 25 launches of the rows kernel (a
        numba-cuda launch costs the host ~100 µs), each of 333 blocks, where an H200 runs
        264 blocks of 1024 threads at once. Not yet timed on a GPU: the profile's
        LinearCrossEntropy row (benchmarks/README.md, 20 ms a step before) will say."""
        return _forward(ctx, x, weight, targets, ignore_index, cuda.softmax_xent_rows, check_range=False,
                        one_product=True)

    backward_fast = backward
    backward_cuda = backward


def linear_cross_entropy(x, weight, targets, ignore_index=-1):
    """cross_entropy(linear(x, weight), targets) without forming the logits twice."""
    if isinstance(targets, Tensor):
        targets = targets.data
    return LinearCrossEntropy.apply(x, weight, targets, ignore_index)

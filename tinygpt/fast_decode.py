"""One generated token in one compiled call: the CPU fast path of batch-1 decoding.

With the KV cache, each new token runs the model on one position (model.py, T = 1):

    x   = wte[token] + wpe[pos]                                          (C,)
    per block:
        h   = layernorm_1(x)
        qkv = W_attn h + b_attn                                          (3C,)
        write k, v (the middle and last C of qkv) into the cache at pos
        per head: s_t = q . k_t / sqrt(hs) for t = 0..pos,  p = softmax(s),  y = sum_t p_t v_t
        x  += W_proj y + b_proj
        h   = layernorm_2(x)
        x  += W_mproj gelu(W_fc h + b_fc) + b_mproj
    logits = wte layernorm_f(x)                                          (V,), the tied head

No mask is needed: the one query is the newest position and may see every cached key.
This is exactly what GPT2.forward computes with a cache (tests/tinygpt/test_fast_decode.py
checks the two equal, float32 within 1e-5 of the largest logit, and the greedy tokens
identical); it is the same arithmetic written as loops that numba compiles, because at
one position the model's forward is mostly the cost of calling it.

What it buys. A token reads every weight once, 0.5 GB for GPT-2 124M, so decoding is
bound by memory bandwidth. Through the autograd graph a token is about 260 kernel calls
from Python, and each matrix-vector product hands off to BLAS's threads and back: on 2
cores GPT-2 124M ran 12.1-12.2 ms a token that way against 11.0 ms here (each in a
process of its own; benchmarks/bench_generate.py has the figures against the bound). Here the whole
token is one call from Python; each matrix-vector product splits its rows over numba's
threads (one contiguous block of rows each, so each thread streams its own part of W,
four rows at a time), and the rest (layer norms, attention over the cache, GELU) runs on
one core: about 0.1 ms of a GPT-2 token with 60 positions cached, attention's part
growing with the context (7 us a layer at 60 positions, 48 at 500). The layer norm and
GELU loops are those of the training kernels (autograd/kernels/cpu/loops.py).

generate.py takes this path on the CPU backend, float32, with the kernels' fast bodies on
and numba there (``TINYGPT_NUMBA=0`` or ``backend.use_fast_kernels(False)`` keep the graph
path); the first call compiles it, a few seconds once, then it is cached on disk (in a
folder keyed on cpu/loops.py's contents too: njit_with_these_loops).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from autograd.kernels.cpu.loops import (FAST, exp_nonpositive_f32, gelu_forward_f32, layernorm_forward,
                                       njit_with_these_loops)

# a matrix with fewer rows per thread than this is done on one core: handing rows to the
# other threads costs more than it saves
MIN_ROWS_PER_THREAD = 256


@njit_with_these_loops(fastmath=FAST, error_model="numpy")
def matvec_rows(w, x, b, out, lo, hi):
    """out[i] = sum_j W[i, j] x[j] + b[i] for the rows lo..hi-1 of W (n, k), row-major.
    Four rows at a time: four streams through memory in flight rather than one, and each
    x[j] loaded once for the four (GPT-2's 49 matrices of a token read 3-5% faster, in
    one process against one row at a time). The sums are float32, as BLAS's (fast-math
    lets them run in SIMD lanes): float64 sums made GPT-2's token 0.5 ms slower."""
    i = lo
    while i + 4 <= hi:
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for j in range(w.shape[1]):
            xj = x[j]
            s0 += w0[j] * xj
            s1 += w1[j] * xj
            s2 += w2[j] * xj
            s3 += w3[j] * xj
        out[i], out[i + 1], out[i + 2], out[i + 3] = s0 + b[i], s1 + b[i + 1], s2 + b[i + 2], s3 + b[i + 3]
        i += 4
    for r in range(i, hi):                             # the last rows, fewer than four
        s = np.float32(0.0)
        for j in range(w.shape[1]):
            s += w[r, j] * x[j]
        out[r] = s + b[r]


@njit_with_these_loops(parallel=True, fastmath=FAST, error_model="numpy")
def matvec(w, x, b, out, parts):
    """out = W x + b, the rows split into ``parts`` contiguous blocks, one per thread (each
    thread streams its own part of W)."""
    n = w.shape[0]
    for part in prange(parts):
        matvec_rows(w, x, b, out, part * n // parts, (part + 1) * n // parts)


@njit_with_these_loops(fastmath=FAST, error_model="numpy")
def attend_one(qkv, k_cache, v_cache, pos, y, scores):
    """One query (the token at ``pos``) against the cached keys 0..pos, every head.
    qkv (3C,) holds q, k, v side by side; k and v are first written into the caches
    (1, nh, block, hs) at ``pos``. y (C,) gets each head's sum_t p_t v_t, heads side by
    side; scores (block,) is scratch. float32 throughout, the exp that of the training
    kernels' softmax (cpu/loops.py, within 3e-7 of exp): float64 sums and math.exp kept
    these loops scalar."""
    c = y.shape[0]
    nh = k_cache.shape[1]
    hs = c // nh
    scale = np.float32(1.0 / math.sqrt(hs))
    for h in range(nh):
        q0, k0, v0 = h * hs, c + h * hs, 2 * c + h * hs
        for d in range(hs):
            k_cache[0, h, pos, d] = qkv[k0 + d]
            v_cache[0, h, pos, d] = qkv[v0 + d]
        top = np.float32(-np.inf)
        for t in range(pos + 1):                       # s_t = q . k_t / sqrt(hs)
            dot = np.float32(0.0)
            for d in range(hs):
                dot += qkv[q0 + d] * k_cache[0, h, t, d]
            scores[t] = dot * scale
            top = max(top, scores[t])
        total = np.float32(0.0)
        for t in range(pos + 1):                       # exp(s - max): the softmax's numerators
            e = exp_nonpositive_f32(scores[t] - top)
            scores[t] = e
            total += e
        for d in range(hs):
            y[q0 + d] = 0.0
        inv = np.float32(1.0) / total
        for t in range(pos + 1):                       # y = sum_t p_t v_t
            p = scores[t] * inv
            for d in range(hs):
                y[q0 + d] += p * v_cache[0, h, t, d]


@njit_with_these_loops(fastmath=FAST, error_model="numpy")
def product(w, x, b, out, parts):
    """matvec, or for one part matvec_rows in this thread: starting a parallel loop costs
    about a microsecond even for one part (a 12-layer, 64-wide model, all of one part:
    205 -> 151 us a token)."""
    if parts == 1:
        matvec_rows(w, x, b, out, 0, w.shape[0])
    else:
        matvec(w, x, b, out, parts)


@njit_with_these_loops(fastmath=FAST, error_model="numpy")
def decode_token(token, pos, wte, wpe, mats, vecs, k_caches, v_caches, has_bias, eps, parts, logits):
    """The formulas of the module docstring for one token. Per block l: mats[4l:4l+4] are
    W_attn, W_proj, W_fc, W_mproj; vecs[8l:8l+8] are the layer norms' gains and biases and
    the four linear biases (zeros when the model has none); vecs[-2:] is the final layer
    norm, then the head's zero bias. ``parts[i]``: the row blocks of mats[i]'s product (the
    last, of the head's)."""
    c = wte.shape[1]
    n_layer = len(k_caches)
    x = wte[token] + wpe[pos]                                            # (C,)
    h = np.empty((1, c), np.float32)
    xhat = np.empty((1, c), np.float32)
    rstd = np.empty((1, 1), np.float32)
    qkv = np.empty(3 * c, np.float32)
    y = np.empty(c, np.float32)
    out = np.empty(c, np.float32)
    fc = np.empty(4 * c, np.float32)
    act = np.empty(4 * c, np.float32)
    tanh = np.empty(4 * c, np.float32)
    scores = np.empty(wpe.shape[0], np.float32)
    x2 = x.reshape(1, c)
    for layer in range(n_layer):
        m, v = 4 * layer, 8 * layer
        layernorm_forward(x2, vecs[v], vecs[v + 1], has_bias, eps, h, xhat, rstd)
        product(mats[m], h[0], vecs[v + 2], qkv, parts[m])
        attend_one(qkv, k_caches[layer], v_caches[layer], pos, y, scores)
        product(mats[m + 1], y, vecs[v + 3], out, parts[m + 1])
        x += out
        layernorm_forward(x2, vecs[v + 4], vecs[v + 5], has_bias, eps, h, xhat, rstd)
        product(mats[m + 2], h[0], vecs[v + 6], fc, parts[m + 2])
        gelu_forward_f32(fc, act, tanh)     # tanh: scratch of its own (written over fc, the loop ran scalar)
        product(mats[m + 3], act, vecs[v + 7], out, parts[m + 3])
        x += out
    layernorm_forward(x2, vecs[8 * n_layer], vecs[8 * n_layer + 1], has_bias, eps, h, xhat, rstd)
    product(wte, h[0], vecs[8 * n_layer + 2], logits, parts[4 * n_layer])


def _parts(rows: int, threads: int) -> int:
    return max(1, min(threads, rows // MIN_ROWS_PER_THREAD))


class CompiledDecoder:
    """``step(token)`` runs one new token through ``model`` with ``cache`` (a KVCache with
    batch 1 that already holds the prompt) and returns its logits (V,), a new float32
    array, having written the token's keys and values into the cache: what
    ``model([token], cache=cache, last_only=True)`` does, in one compiled call."""

    def __init__(self, model, cache):
        tr = model.transformer
        cfg = model.config
        c = cfg.n_embd
        zeros = {n: np.zeros(n, np.float32) for n in (c, 3 * c, 4 * c, cfg.vocab_size)}

        def vector(p, n):
            return zeros[n] if p is None else p.data

        mats, vecs = [], []
        for block in tr.h:
            for lin in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                mats.append(lin.weight.data)
            vecs += [block.ln_1.weight.data, vector(block.ln_1.bias, c),
                     vector(block.attn.c_attn.bias, 3 * c), vector(block.attn.c_proj.bias, c),
                     block.ln_2.weight.data, vector(block.ln_2.bias, c),
                     vector(block.mlp.c_fc.bias, 4 * c), vector(block.mlp.c_proj.bias, c)]
        vecs += [tr.ln_f.weight.data, vector(tr.ln_f.bias, c), zeros[cfg.vocab_size]]   # the head has no bias
        # tuples (numba indexes a tuple of arrays of one type at run time): each depth of model
        # compiles once, then loads from the cache; numba's typed lists compiled their own
        # methods in every new process (0.3 s)
        self.mats, self.vecs = tuple(mats), tuple(vecs)
        self.k_caches = tuple(layer.k for layer in cache.layers)
        self.v_caches = tuple(layer.v for layer in cache.layers)
        threads = numba.get_num_threads()
        self.parts = np.array([_parts(w.shape[0], threads) for w in self.mats]
                              + [_parts(cfg.vocab_size, threads)], dtype=np.int64)
        self.wte, self.wpe = tr.wte.weight.data, tr.wpe.weight.data
        self.has_bias = tr.ln_f.bias is not None
        self.eps = float(tr.ln_f.eps)
        self.cache = cache

    @staticmethod
    def supports(model, cache) -> bool:
        """Whether every array is float32 and C-contiguous, the model is GPT-2's layout
        and the cache holds one sequence."""
        arrays = [p.data for p in model.parameters()]
        arrays += [a for layer in cache.layers for a in (layer.k, layer.v)]
        return (all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
                and cache.layers[0].k.shape[0] == 1 and model.config.n_embd % model.config.n_head == 0)

    def step(self, token: int) -> np.ndarray:
        pos = self.cache.length
        if pos >= self.k_caches[0].shape[2]:   # the compiled loop does not check: it would write past the arrays
            raise ValueError(f"the KV cache holds {pos} positions, all used: no room for another token")
        logits = np.empty(self.wte.shape[0], np.float32)
        decode_token(int(token), pos, self.wte, self.wpe, self.mats, self.vecs, self.k_caches, self.v_caches,
                     self.has_bias, self.eps, self.parts, logits)
        for layer in self.cache.layers:
            layer.length = pos + 1
        return logits

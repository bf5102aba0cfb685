"""GPT-2, exactly as OpenAI's (Radford et al. 2019), on the autograd engine.

One forward pass, shapes for a batch of B sequences of T tokens:

    ids (B, T) -> wte[ids] + wpe[0..T-1]                      x (B, T, C)
    n_layer x Block:
        x = x + attn(ln_1(x))        causal self-attention, nh heads of hs = C / nh
        x = x + mlp(ln_2(x))         C -> 4C -> GELU -> C
    ln_f(x) -> x @ wte^T                                       logits (B, T, V)

Pre-LayerNorm blocks, learned positions, and an output head tied to the token
embedding (the same (V, C) matrix maps ids to vectors and vectors to logits).
Parameter names follow Hugging Face's ``GPT2LMHeadModel`` (``transformer.h.0.attn.
c_attn.weight`` ...) so weights map across by name; the weights are stored as
(out_features, in_features), the transpose of Hugging Face's Conv1D layout.

Initialisation (GPT-2's, as in Hugging Face and nanoGPT): weights N(0, 0.02); the two
projections that write into the residual stream (attn.c_proj, mlp.c_proj) N(0,
0.02/sqrt(2 n_layer)), so the stream's variance does not grow with depth; biases 0;
LayerNorm gains 1.

Dropout (off by default) is applied to the embeddings and to each block's two
residual branches; unlike Hugging Face's model there is no dropout on the attention
probabilities (the fused attention kernel has none).
"""
from __future__ import annotations

import math

from autograd import Tensor, backend, nn
from autograd import functional as F

from .config import GPT2_VOCAB, GPTConfig
from .errors import TinyGPTError
from .tokenizer import GPT2Tokenizer


def _normal(shape, std):
    return backend.rng().standard_normal(shape, dtype=backend.xp().float32) * std


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, init=True):
        c = config.n_embd
        self.n_head = config.n_head
        self.c_attn = nn.Linear(c, 3 * c, bias=config.bias, init=init)   # q, k, v for every head at once
        self.c_proj = nn.Linear(c, c, bias=config.bias, init=init)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, attention=None):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        qkv = self.c_attn(x)                                     # (B, T, 3C)
        q, k, v = F.split(qkv, C, axis=2)                        # 3 x (B, T, C)
        q = q.reshape(B, T, nh, hs).transpose(1, 2)              # (B, nh, T, hs)
        k = k.reshape(B, T, nh, hs).transpose(1, 2)
        v = v.reshape(B, T, nh, hs).transpose(1, 2)
        if cache is not None:                                    # generation: keys of earlier tokens
            k, v = cache.extend(k, v)                            # (B, nh, T_past + T, hs)
        y = F.causal_attention(q, k, v, weights=attention)       # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)                   # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig, init=True):
        c = config.n_embd
        self.c_fc = nn.Linear(c, 4 * c, bias=config.bias, init=init)
        self.c_proj = nn.Linear(4 * c, c, bias=config.bias, init=init)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C) -> 4C -> C


class Block(nn.Module):
    def __init__(self, config: GPTConfig, init=True):
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, init)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config, init)

    def forward(self, x, cache=None, attention=None):
        x = x + self.attn(self.ln_1(x), cache, attention)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, config: GPTConfig, init=True):
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, init=init)
        self.wpe = nn.Embedding(config.block_size, config.n_embd, init=init)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, init) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)


class LayerCache:
    """Keys and values of one layer for the tokens seen so far, preallocated to the
    positions it will hold (``capacity``) so that each new token costs one write."""

    def __init__(self, batch, n_head, capacity, head_size, dtype):
        xp = backend.xp()
        self.k = xp.empty((batch, n_head, capacity, head_size), dtype=dtype)
        self.v = xp.empty((batch, n_head, capacity, head_size), dtype=dtype)
        self.length = 0

    def extend(self, k, v):
        t = k.shape[2]
        end = self.length + t
        if end > self.k.shape[2]:
            raise ValueError(f"the KV cache holds {self.k.shape[2]} positions; {self.length} are used and "
                             f"{t} more do not fit (make it with a larger capacity)")
        self.k[:, :, self.length:end] = k.data
        self.v[:, :, self.length:end] = v.data
        self.length = end
        return Tensor.wrap(self.k[:, :, :end]), Tensor.wrap(self.v[:, :, :end])


class KVCache:
    """One LayerCache per block, for incremental decoding under ``no_grad``. ``capacity``:
    the positions it can hold, the context length by default; a generation that knows it
    will stop sooner asks for fewer (GPT-2 124M's full cache is 72 MB, its keys and values
    for 116 positions 8 MB)."""

    def __init__(self, config: GPTConfig, batch: int, dtype="float32", capacity: int | None = None):
        capacity = config.block_size if capacity is None else int(capacity)
        if not 1 <= capacity <= config.block_size:
            raise ValueError(f"a KV cache holds 1 to {config.block_size} positions (the context); got {capacity}")
        dt = backend.xp().dtype(dtype)
        self.layers = [LayerCache(batch, config.n_head, capacity, config.head_size, dt)
                       for _ in range(config.n_layer)]

    @property
    def length(self) -> int:
        return self.layers[0].length


class GPT2(nn.Module):
    """The GPT-2 language model. ``GPT2(GPTConfig(...))`` builds a fresh one;
    ``GPT2.load(run_dir)`` reads a checkpoint written by ``tinygpt train``."""

    def __init__(self, config: GPTConfig | None = None, tokenizer=None, init=True):
        """``tokenizer`` turns text into token ids and back (see tinygpt/tokenizer.py); left
        out, a model with GPT-2's vocabulary of 50257 gets GPT-2's BPE (shipped with the
        package), so ``GPT2().generate("Once upon a time", max_length=100)`` works as it
        is; a model with another vocabulary then has none, and ``generate`` asks for one.

        ``init=False`` leaves the weights uninitialised, for a model whose weights are
        loaded next (a checkpoint, pretrained weights): it saves the random draws."""
        config = config or GPTConfig()
        self.config = config
        if tokenizer is None and config.vocab_size == GPT2_VOCAB:
            tokenizer = GPT2Tokenizer()
        if tokenizer is not None and getattr(tokenizer, "vocab_size", config.vocab_size) != config.vocab_size:
            # ids the one has and the other not: an embedding read past its table, or a sampled id
            # with no text (an IndexError at the first such token)
            raise TinyGPTError(f"the tokenizer has {tokenizer.vocab_size} tokens and the model a vocabulary of "
                               f"{config.vocab_size}: they must be the same")
        self.tokenizer = tokenizer
        self.transformer = Transformer(config, init)
        if init:
            self._init_weights()

    def _init_weights(self):
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                p.data[...] = _normal(p.shape, residual_std)
            elif name.endswith(".weight") and p.ndim == 2:
                p.data[...] = _normal(p.shape, std)
            elif name.endswith(".bias"):
                p.data[...] = 0.0
            else:  # LayerNorm gains
                p.data[...] = 1.0

    # ------------------------------------------------------------------ forward
    def forward(self, ids, targets=None, cache: KVCache | None = None, last_only=False,
                attention: list | None = None):
        """``(logits, None)``: logits (B, T, V) for token ids (B, T); or, with
        ``targets`` (B, T) of integer ids, -1 where a position has no target, ``(None, loss)``:
        the mean next-token cross-entropy over the positions that have one, computed by
        the fused head+loss kernel, which never keeps the (B*T, V) logits (see
        autograd/kernels/linear_cross_entropy.py). Call without targets for logits.

        ``cache``: continue from the keys/values of the tokens already in it (generation,
        under no_grad). ``last_only``: compute the head for the last position only
        (B, 1, V), all that sampling needs. ``attention``: a list that receives, layer by
        layer, the attention weights P of shape (B, nh, T, T_past + T) as backend arrays
        (row i: how much query i attends to each key); None, the default, costs nothing.
        """
        xp = backend.xp()
        ids = ids.data if isinstance(ids, Tensor) else ids
        _check_host_range("token id", ids, self.config.vocab_size)
        ids = backend.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise TinyGPTError(f"ids: one sequence (T,) or a batch (B, T) of token ids, at least one token; got "
                               f"shape {tuple(ids.shape)}")
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise TinyGPTError(f"sequence of {start + T} tokens is longer than the context "
                               f"({self.config.block_size})")
        tr = self.transformer
        positions = xp.arange(start, start + T)                          # (T,)
        x = F.embedding(ids, tr.wte.weight) + F.embedding(positions, tr.wpe.weight)  # (B, T, C)
        x = tr.drop(x)
        for i, block in enumerate(tr.h):
            x = block(x, cache.layers[i] if cache is not None else None, attention)
        x = tr.ln_f(x)                                                   # (B, T, C)
        if targets is not None:
            # the tied head and the loss in one kernel: the (B*T, V) logits are never kept
            targets = targets.data if isinstance(targets, Tensor) else targets
            _check_host_range("target", targets, self.config.vocab_size, ignore=-1)
            targets = backend.asarray(targets)
            if targets.ndim == 1:
                targets = targets[None, :]
            if targets.shape != ids.shape:   # (T, B) for (B, T) has as many, in the wrong places
                raise TinyGPTError(f"targets have shape {tuple(targets.shape)} and the ids {tuple(ids.shape)}: "
                                   "one target per position")
            if targets.dtype.kind not in "iu":
                raise TinyGPTError(f"targets must be integer token ids (-1 where there is none), got {targets.dtype}")
            return None, F.linear_cross_entropy(x, tr.wte.weight, targets.reshape(-1))
        if last_only:
            x = x[:, -1:, :]                                             # (B, 1, C)
        return F.linear(x, tr.wte.weight), None                          # (B, T, V), tied head

    # GPT2.load, GPT2.from_pretrained, model.save and model.generate live in checkpoint.py,
    # hf.py and generate.py, which import this module; tinygpt/__init__.py attaches them.


def _check_host_range(what: str, values, vocab: int, ignore=None) -> None:
    """One TinyGPTError for an integer id outside [0, vocab) (``ignore``, -1 for targets, is
    allowed), checked where the ids are on the host: a list, or a NumPy array (the trainer's
    batches, on every device). Not for ids already on the GPU: reading them back would stall
    it at every step; there the embedding's gather wraps such an id around (CuPy's indexing)
    and the loss kernel gives its row a NaN loss (autograd/kernels/cuda/)."""
    import numpy as np
    if not isinstance(values, (np.ndarray, list, tuple)):
        return
    array = np.asarray(values)
    if array.dtype.kind not in "iu" or array.size == 0:
        return                          # the shape and kind checks below name those
    bad = (array < 0) | (array >= vocab)
    if ignore is not None:
        bad &= array != ignore
    if bad.any():
        value = int(array[bad].flat[0])
        allowed = f", or {ignore} for none" if ignore is not None else ""
        raise TinyGPTError(f"{what} {value} is outside the model's vocabulary [0, {vocab}){allowed}")

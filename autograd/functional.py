"""The engine's functions in one namespace: ``from autograd import functional as F``.

Hand-written kernels (one graph node each, backward derived by hand in their files):
    linear, embedding, layer_norm, gelu, causal_attention, cross_entropy,
    linear_cross_entropy (the LM head and its loss, fused), softmax, log_softmax, dropout
Plain operations (autograd/ops.py):
    matmul, cat, stack, split, where, masked_fill, exp, log, sqrt, tanh, sum, mean, max,
    reshape, transpose, permute
"""
from __future__ import annotations

from .kernels.attention import causal_attention
from .kernels.cross_entropy import cross_entropy
from .kernels.dropout import dropout
from .kernels.embedding import embedding
from .kernels.gelu import gelu
from .kernels.layernorm import layer_norm
from .kernels.linear import linear
from .kernels.linear_cross_entropy import linear_cross_entropy
from .kernels.softmax import log_softmax, softmax
from .ops import (cat, exp, log, masked_fill, matmul, max, mean, permute, reshape, split, sqrt,
                  stack, sum, tanh, transpose, where)

__all__ = [
    "linear", "linear_cross_entropy", "embedding", "layer_norm", "gelu", "causal_attention", "cross_entropy", "softmax",
    "log_softmax", "dropout", "matmul", "cat", "stack", "split", "where", "masked_fill", "exp",
    "log", "sqrt", "tanh", "sum", "mean", "max", "reshape", "transpose", "permute",
]

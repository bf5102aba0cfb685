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
from . import ops
from .ops import (cat, exp, log, masked_fill, matmul, max, mean, permute, reshape, split, sqrt,
                  stack, sum, tanh, transpose, where)

__all__ = [
    "linear", "linear_cross_entropy", "embedding", "layer_norm", "gelu", "causal_attention", "cross_entropy", "softmax",
    "log_softmax", "dropout", "matmul", "cat", "stack", "split", "where", "masked_fill", "exp",
    "log", "sqrt", "tanh", "sum", "mean", "max", "reshape", "transpose", "permute", "attach_tensor_methods",
]


def _shape_args(args):
    """x.reshape(2, 3) and x.reshape((2, 3)) both mean the shape (2, 3)."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def attach_tensor_methods(tensor_class):
    """Give Tensor its operators and methods, each the function of the same meaning above:
    ``x + y`` is ``ops.add(x, y)``, ``x @ w`` is ``ops.matmul``, ``x.softmax()`` is the
    softmax kernel. Called once, by autograd/__init__.py, when every op is loaded: the
    Tensor class (tensor.py) sits below ops and kernels and cannot import them itself
    (DeZero's ``setup_variable`` does the same)."""
    methods = {
        "__add__": lambda a, b: ops.add(a, b), "__radd__": lambda a, b: ops.add(b, a),
        "__sub__": lambda a, b: ops.sub(a, b), "__rsub__": lambda a, b: ops.sub(b, a),
        "__mul__": lambda a, b: ops.mul(a, b), "__rmul__": lambda a, b: ops.mul(b, a),
        "__truediv__": lambda a, b: ops.div(a, b), "__rtruediv__": lambda a, b: ops.div(b, a),
        "__pow__": lambda a, b: ops.pow(a, b), "__rpow__": lambda a, b: ops.pow(b, a),
        "__matmul__": lambda a, b: ops.matmul(a, b), "__rmatmul__": lambda a, b: ops.matmul(b, a),
        "__neg__": ops.neg,
        "__iadd__": lambda a, b: ops.in_place(a, b, "add"), "__isub__": lambda a, b: ops.in_place(a, b, "subtract"),
        "__imul__": lambda a, b: ops.in_place(a, b, "multiply"),
        "__itruediv__": lambda a, b: ops.in_place(a, b, "true_divide"),
        "__getitem__": ops.getitem,
        "sum": ops.sum, "mean": ops.mean, "max": ops.max,
        "exp": ops.exp, "log": ops.log, "sqrt": ops.sqrt, "tanh": ops.tanh,
        "masked_fill": ops.masked_fill, "split": ops.split,
        "softmax": softmax, "log_softmax": log_softmax,
        "reshape": lambda a, *shape: ops.reshape(a, _shape_args(shape)),
        "view": lambda a, *shape: ops.reshape(a, _shape_args(shape)),
        "permute": lambda a, *axes: ops.permute(a, _shape_args(axes)),
        "transpose": ops.transpose,
        "T": property(lambda a: ops.permute(a, tuple(reversed(range(a.ndim))))),
    }
    for name, method in methods.items():
        setattr(tensor_class, name, method)

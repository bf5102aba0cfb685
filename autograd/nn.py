"""Modules: containers of parameters with a forward, in the style of ``torch.nn``.

A Module finds its parameters and sub-modules by looking at its own attributes, so
``self.fc = Linear(4, 8)`` is all it takes to register one. Parameter names are the
attribute paths joined by dots (``transformer.h.0.attn.c_attn.weight``); a parameter
reachable twice (a tied weight) is listed once, under its first name.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from . import backend
from .functional import dropout, embedding, layer_norm, linear
from .tensor import Tensor

__all__ = ["Parameter", "Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "Dropout",
           "StateDictError"]


class StateDictError(ValueError):
    """A state dict does not fit the module (missing or unexpected keys, wrong shapes)."""


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    def __init__(self, data, dtype=None, requires_grad=True):
        super().__init__(data, dtype=dtype, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class Module:
    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def _children(self):
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value

    def named_modules(self, prefix=""):
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            for child_name, child in module._children():
                if isinstance(child, Module):
                    stack.append((f"{name}.{child_name}" if name else child_name, child))

    def named_parameters(self, prefix=""):
        """(name, Parameter) pairs in definition order, each parameter once."""
        seen = set()
        yield from self._named_parameters(prefix, seen)

    def _named_parameters(self, prefix, seen):
        for name, value in self._children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, Parameter):
                if id(value) not in seen:
                    seen.add(id(value))
                    yield full, value
            else:
                yield from value._named_parameters(full, seen)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(int(p.size) for p in self.parameters())

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """name -> array (the live arrays, not copies), in definition order. Live as long as each
        parameter keeps its array: AdamW's one-call-per-group step (the default on CUDA) moves
        the weights into one flat buffer at its first step, so take the dict after it (or
        copy the arrays) to follow or keep the weights."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters, in place and in each parameter's dtype.

        With ``strict`` (the default) every parameter must be present and nothing
        else; any mismatch raises StateDictError naming the keys and shapes at fault.
        Returns (missing, unexpected) key lists.
        """
        params = OrderedDict(self.named_parameters())
        # lists or numbers as values: arrays first (their shapes are compared below)
        state = {k: v if hasattr(v, "shape") else backend.asarray(v) for k, v in state.items()}
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(p.shape)}"
                 for k, p in params.items() if k in state and tuple(state[k].shape) != tuple(p.shape)]
        def first(items, sep, shown=3):   # a few, then a count: a GPT-2 has 148 tensors
            return sep.join(items[:shown]) + (f"{sep}... and {len(items) - shown} more" if len(items) > shown else "")
        problems = []
        if strict and missing:
            problems.append("missing keys: " + first(missing, ", "))
        if strict and unexpected:
            problems.append("unexpected keys: " + first(unexpected, ", "))
        if wrong:
            problems.append("shape mismatch: " + first(wrong, "; "))
        if problems:
            raise StateDictError("load_state_dict: " + " | ".join(problems))
        for key, p in params.items():
            if key in state:
                value = state[key].data if isinstance(state[key], Tensor) else state[key]
                p.data[...] = backend.asarray(value, dtype=p.dtype)
        return missing, unexpected

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Convert every parameter to ``dtype``: "float32" or "float64" (e.g. for gradient checks),
        the dtypes the kernels compute in. The device is the backend's (``use_backend``)."""
        if str(dtype).lower() in ("cpu", "cuda", "gpu", "numpy", "cupy"):
            raise ValueError(f"to() takes a dtype; the device is the backend's, chosen before the model is made: "
                             f"autograd.use_backend({str(dtype)!r})")
        want = backend.xp().dtype(dtype)
        if want.name not in ("float32", "float64"):   # int32 truncated every weight; float16 failed at forward
            raise ValueError(f"to(): float32 or float64, the dtypes the kernels compute in; got {want.name}")
        for p in self.parameters():
            if p.data.dtype != want:
                p.data = p.data.astype(want)
                p.grad = None
        return self


class ModuleList(Module):
    """A list of modules, named 0, 1, 2, ... (``h.0.attn``...)."""

    def __init__(self, modules=()):
        self._items = []
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._items)), module)
        self._items.append(module)

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]


def _uniform(shape, bound, dtype, init=True):
    """Uniform in [-bound, bound]; with ``init=False`` uninitialised memory (for weights
    that are about to be overwritten, e.g. by a checkpoint)."""
    if not init:
        return backend.xp().empty(shape, dtype=dtype)
    return backend.rng().uniform(-bound, bound, size=shape).astype(dtype)


class Linear(Module):
    """y = x W^T + b with W (out_features, in_features), initialised as PyTorch does:
    uniform in +-1/sqrt(in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype="float32", init=True):
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype, init))
        self.bias = Parameter(_uniform((out_features,), bound, dtype, init)) if bias else None

    def forward(self, x):
        return linear(x, self.weight, self.bias)


class Embedding(Module):
    """A table of ``num`` vectors of size ``dim``; initialised N(0, 1) (``init=False``: not at all)."""

    def __init__(self, num, dim, dtype="float32", init=True):
        table = backend.rng().standard_normal((num, dim)).astype(dtype) if init else backend.xp().empty((num, dim), dtype)
        self.weight = Parameter(table)

    def forward(self, ids):
        return embedding(ids, self.weight)


class LayerNorm(Module):
    def __init__(self, dim, eps=1e-5, bias=True, dtype="float32"):
        xp = backend.xp()
        self.eps = eps
        self.weight = Parameter(xp.ones(dim, dtype=dtype))
        self.bias = Parameter(xp.zeros(dim, dtype=dtype)) if bias else None

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    def __init__(self, p=0.0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

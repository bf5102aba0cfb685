"""Function: one node of the computation graph, forward and backward side by side.

A Function subclass writes two static methods on raw arrays (NumPy or CuPy)::

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):          # arrays in, one array out
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):         # dL/d(out) in, one dL/d(input) per input out
            a, b = ctx.saved
            return grad * b, grad * a

``Mul.apply(x, y)`` unwraps Tensor arguments to arrays, runs ``forward``, wraps the
result in a Tensor and, unless gradients are off, records the node so that
``Tensor.backward`` can call ``backward`` later. Non-Tensor arguments (axes, shapes,
integer ids) pass through unchanged and receive no gradient.

Rules every backward follows (the engine relies on them):
  * return one entry per positional argument of forward (``None`` where there is no
    gradient, e.g. for an axis argument or an input that does not require grad);
  * each gradient has exactly the shape and dtype of its input;
  * never modify ``grad`` in place (it may be shared), and return arrays that may
    be written (no read-only broadcast views).
"""
from __future__ import annotations

import threading

from . import backend

__all__ = ["Function", "Context", "no_grad", "enable_grad", "is_grad_enabled"]


class _GradMode(threading.local):
    """Whether operations are recorded; per thread, so a server answering one request
    under no_grad does not switch recording off for another."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


class _SetGrad:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.previous = _grad_mode.enabled
        _grad_mode.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self.previous
        return False

    def __call__(self, fn):  # also usable as a decorator
        def wrapper(*args, **kwargs):
            with _SetGrad(self.enabled):
                return fn(*args, **kwargs)
        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = getattr(fn, "__doc__", None)
        return wrapper


def no_grad():
    """Context manager (or decorator): record nothing, so backward is impossible and
    no intermediate arrays are kept alive."""
    return _SetGrad(False)


def enable_grad():
    """Context manager (or decorator) that turns recording back on inside ``no_grad``."""
    return _SetGrad(True)


class Context:
    """What a node keeps for its backward: saved arrays, the inputs, and flags."""

    __slots__ = ("saved", "inputs", "needs_input_grad", "requires_grad", "fn", "__dict__")

    def __init__(self, fn, inputs, needs_input_grad, requires_grad):
        self.fn = fn
        self.inputs = inputs                    # Tensors (or None for non-Tensor args)
        self.needs_input_grad = needs_input_grad  # one bool per positional argument
        self.requires_grad = requires_grad      # False: forward may skip saving anything
        self.saved = ()

    def save_for_backward(self, *arrays):
        if self.requires_grad:
            self.saved = arrays


class Function:
    """Base class of every differentiable operation; see the module docstring."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor

        inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
        needs = tuple(t is not None and t.requires_grad for t in inputs)
        requires_grad = _grad_mode.enabled and any(needs)
        ctx = Context(cls, inputs, needs, requires_grad)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor(out, requires_grad=requires_grad, _keep=True)
        if requires_grad:
            result._ctx = ctx
        return result


def unbroadcast(grad, shape):
    """Sum ``grad`` back down to ``shape``: undo NumPy broadcasting in a backward.

    Broadcasting (1) prepends axes and (2) stretches size-1 axes. The gradient of a
    stretched input is the sum of the gradients of all its copies, so we sum over the
    prepended axes and, keeping dims, over the stretched ones.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return backend.xp().ascontiguousarray(grad).reshape(shape)

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
``Tensor.backward`` can call its backward later. Non-Tensor arguments (axes, shapes,
integer ids) pass through unchanged and receive no gradient.

Rules every backward follows (the engine relies on them):
  * return one entry per positional argument of forward (``None`` where there is no
    gradient, e.g. for an axis argument or an input that does not require grad);
  * each gradient has exactly the shape and dtype of its input;
  * never modify ``grad`` in place (it may be shared), and return arrays that may
    be written (no read-only broadcast views).
Two options: a table read by row ids may get a ``RowGradient`` (tensor.py) instead of its
dense gradient (Embedding's fast backward); and a class whose backward returns only new
arrays, sharing memory with nothing else nor with each other, may say so in its own body
with ``grads_are_new = True`` (a subclass does not inherit it): the tape then adds the
input's other gradients into those arrays in place rather than into a new one.

Three bodies, one choice (DESIGN's "three faces of one kernel"). ``forward`` and
``backward`` are the NumPy reference, what a learner reads. A kernel may also define
``forward_fast``/``backward_fast`` (a faster CPU version of the same math) and
``forward_cuda``/``backward_cuda`` (the same math with hand-written CUDA kernels,
autograd/kernels/cuda/). Which pair runs is decided in one place, ``body_suffix``
below, from the backend: the kernels' own code never asks which device it is on.
"""
from __future__ import annotations

import threading

from . import backend, profiler
from .tensor import Tensor

__all__ = ["Function", "Context", "no_grad", "enable_grad", "is_grad_enabled", "body_suffix", "choose_body",
           "unbroadcast"]


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
        self.previous = []             # a stack: one object may be entered again inside itself

    def __enter__(self):
        self.previous.append(_grad_mode.enabled)
        _grad_mode.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self.previous.pop()
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


def body_suffix() -> str:
    """Which body of every kernel runs now: ``"_cuda"`` when kernels run on CUDA (the CuPy
    backend, or numba's CUDA simulator in the tests), ``"_fast"`` on the CPU while fast
    bodies are on (the default; ``backend.use_fast_kernels(False)`` runs the references),
    else ``""``, the NumPy reference. This is the one place that looks at the device."""
    if backend.kernel_device() == "cuda":
        return "_cuda"
    return "_fast" if backend.fast_kernels() else ""


def choose_body(kernel, name: str):
    """``kernel.<name><suffix>`` if the kernel defines that body, else its reference ``<name>``."""
    suffix = body_suffix()
    if suffix:
        chosen = getattr(kernel, name + suffix, None)
        if chosen is not None:
            return chosen
    return getattr(kernel, name)


class Context:
    """What a node keeps for its backward: saved arrays, the inputs, flags, and which
    backward body to run (the partner of the forward body that ran). Kernels may set
    other attributes (``ctx.scale``, ``ctx.shape``) for their backward."""

    def __init__(self, fn, inputs, needs_input_grad, requires_grad, backward):
        self.fn = fn
        self.inputs = inputs                    # Tensors (or None for non-Tensor args)
        self.needs_input_grad = needs_input_grad  # one bool per positional argument
        self.requires_grad = requires_grad      # False: forward may skip saving anything
        self.backward = backward                # the backward body paired with the forward that ran
        self.saved = ()

    def save_for_backward(self, *arrays):
        if self.requires_grad:
            self.saved = arrays

    def run_backward(self, grad):
        return self.backward(self, grad)


class Function:
    """Base class of every differentiable operation; see the module docstring."""

    _bodies = ()                               # the suffixes of the other bodies that implement this class's math

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for suffix in ("_fast", "_cuda"):      # bodies come in pairs: each backward reads its own forward's ctx
            if hasattr(cls, "forward" + suffix) != hasattr(cls, "backward" + suffix):
                raise TypeError(f"{cls.__name__} defines one of forward{suffix}/backward{suffix} without the other")
        # A subclass that rewrites forward or backward (a lesson's deliberately broken kernel)
        # does not inherit its parent's fast or CUDA bodies: they compute the parent's math.
        here = [s for s in ("_fast", "_cuda") if "forward" + s in cls.__dict__]
        rewrites_reference = "forward" in cls.__dict__ or "backward" in cls.__dict__
        cls._bodies = tuple(here) if rewrites_reference else tuple(dict.fromkeys(cls._bodies + tuple(here)))

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        suffix = body_suffix()
        if suffix not in cls._bodies:
            suffix = ""
        inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
        needs = tuple(t is not None and t.requires_grad for t in inputs)
        requires_grad = _grad_mode.enabled and any(needs)
        ctx = Context(cls, inputs, needs, requires_grad, getattr(cls, "backward" + suffix))
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        prof = profiler.current()
        start = profiler.clock() if prof is not None else 0.0
        out = getattr(cls, "forward" + suffix)(ctx, *raw, **kwargs)
        if prof is not None:
            prof.add(cls.__name__, "forward", profiler.clock() - start)
        result = Tensor.wrap(out, requires_grad=requires_grad)
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

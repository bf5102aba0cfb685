"""Elementwise, reduction and shape operations, each a Function with its backward.

Notation: ``g`` is dL/d(out), the gradient arriving from above; each backward
returns dL/d(input) for every input. Elementwise rules are the scalar derivatives
applied per element (the chain rule: dL/da = dL/dout * dout/da).

Broadcasting: when an input was stretched to the output's shape, its gradient is
the sum over every copy, so backward ends with ``unbroadcast`` (see function.py).
"""
from __future__ import annotations

import builtins

from . import backend
from .function import Function, is_grad_enabled, unbroadcast
from .tensor import Tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "sum", "mean", "max", "reshape",
    "transpose", "permute", "getitem", "cat", "stack", "split", "exp", "log", "sqrt", "tanh",
    "where", "masked_fill", "in_place",
]


def _as_tensor(x, like=None):
    """Wrap a Python number or array as a constant Tensor, in ``like``'s float dtype."""
    if isinstance(x, Tensor):
        return x
    xp = backend.xp()
    dtype = like.dtype if like is not None and like.dtype.kind == "f" else None
    # None or a string: NumPy would make NaN (a float None) or text of them
    array = None if x is None or isinstance(x, (str, bytes)) else xp.asarray(x, dtype=dtype)
    if array is None or array.dtype.kind not in "biuf":
        raise TypeError(f"an operand of a Tensor must be a number, an array or a Tensor, not {type(x).__name__}")
    return Tensor.wrap(array)


def _pair(a, b):
    if not isinstance(a, Tensor):
        a = _as_tensor(a, b)
    if not isinstance(b, Tensor):
        b = _as_tensor(b, a)
    return a, b


# ----------------------------------------------------------------------------- arithmetic
class Add(Function):
    """out = a + b;  dL/da = g,  dL/db = g  (each summed over its broadcast axes)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    """out = a - b;  dL/da = g,  dL/db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(-g, sb)


class Mul(Function):
    """out = a * b;  dL/da = g * b,  dL/db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        da = unbroadcast(g * b, a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """out = a / b;  dL/da = g / b,  dL/db = -g * a / b**2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        da = unbroadcast(g / b, a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    """out = -a;  dL/da = -g."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return (-g,)


class Pow(Function):
    """out = a ** b;  dL/da = g * b * a**(b-1),  dL/db = g * a**b * log(a).

    ``b`` may be a plain number (then it gets no gradient) or a tensor.
    """

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        a, b, out = ctx.saved
        da = db = None
        if ctx.needs_input_grad[0]:
            # b a^(b-1), with the exponent 0 where b is 0: x^0 is 1 everywhere, slope 0, where
            # 0 * 0^(-1) would be 0 * inf = NaN at a = 0
            da = unbroadcast(g * b * a ** xp.where(b == 0, 1, b - 1), a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(g * out * xp.log(a), b.shape)
        return da, db


class MatMul(Function):
    """out = a @ b, batched: a (..., n, k), b (..., k, m) -> out (..., n, m).

    For one matrix product out[i, j] = sum_k a[i, k] b[k, j], so
        dL/da[i, k] = sum_j g[i, j] b[k, j]   ->  dL/da = g @ b^T    (n, k)
        dL/db[k, j] = sum_i a[i, k] g[i, j]   ->  dL/db = a^T @ g    (k, m)
    and leading batch axes that were broadcast are summed away. A 1-D operand is
    treated as a row (a) or column (b) vector, as NumPy does.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        a, b = ctx.saved
        a2 = a if a.ndim > 1 else a[None, :]        # (..., n, k)
        b2 = b if b.ndim > 1 else b[:, None]        # (..., k, m)
        g2 = g
        if b.ndim == 1:
            g2 = g2[..., None]                      # (..., n, 1)
        if a.ndim == 1:
            g2 = g2[..., None, :]                   # (..., 1, m)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(g2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(xp.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return da, db


# ----------------------------------------------------------------------------- reductions
def _normalise_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    for a in axis:    # a % ndim alone would take axis 2 of a 2-D tensor for its axis 0
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor of {ndim} axes")
    return tuple(sorted(a % ndim for a in axis))


def _expand_to_input(g, axes, keepdims, shape):
    """Re-insert reduced axes (if keepdims was False) and broadcast back to ``shape``."""
    xp = backend.xp()
    if not keepdims:
        g = xp.expand_dims(g, axes) if axes else g
    out = xp.empty(shape, dtype=g.dtype)
    out[...] = g  # a writable copy, not a read-only broadcast view
    return out


class Sum(Function):
    """out = sum of a over ``axis``;  every summed element gets dL/da = g."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes(axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        return backend.xp().asarray(a.sum(axis=ctx.axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        return _expand_to_input(g, ctx.axes, ctx.keepdims, ctx.shape), None, None


class Mean(Function):
    """out = mean of a over ``axis`` (n elements each);  dL/da = g / n."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes(axis, a.ndim)
        ctx.keepdims, ctx.shape = keepdims, a.shape
        ctx.n = 1
        for ax in ctx.axes:
            ctx.n *= a.shape[ax]
        return backend.xp().asarray(a.mean(axis=ctx.axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        return _expand_to_input(g / ctx.n, ctx.axes, ctx.keepdims, ctx.shape), None, None


class Max(Function):
    """out = max of a over ``axis``.

    The gradient flows to the maximal element; when several elements tie for the
    maximum it is shared equally between them (the same choice as PyTorch's ``amax``).
    """

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes(axis, a.ndim)
        ctx.keepdims = keepdims
        out = a.max(axis=ctx.axes, keepdims=True)
        ctx.save_for_backward(a, out)
        xp = backend.xp()
        return xp.asarray(out if keepdims else out.reshape([n for i, n in enumerate(a.shape) if i not in ctx.axes]))

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        a, out = ctx.saved
        mask = (a == out).astype(a.dtype)                # 1 where a is maximal
        count = mask.sum(axis=ctx.axes, keepdims=True)   # ties share the gradient
        if not ctx.keepdims:
            g = xp.expand_dims(g, ctx.axes)
        return mask * (g / count), None, None


# ----------------------------------------------------------------------------- shapes
class Reshape(Function):
    """out = a viewed with a new shape;  dL/da = g reshaped back."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Permute(Function):
    """out = a with its axes reordered by ``axes``;  dL/da = g with the inverse order."""

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = tuple(ax % a.ndim for ax in axes)
        return backend.xp().transpose(a, ctx.axes)

    @staticmethod
    def backward(ctx, g):
        inverse = tuple(sorted(range(len(ctx.axes)), key=ctx.axes.__getitem__))   # axis i goes back to axes[i]
        return backend.xp().transpose(g, inverse), None


def _is_advanced(index):
    """True when the index holds integer/boolean arrays (NumPy advanced indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "shape") and getattr(p, "ndim", 0) > 0 or isinstance(p, list) for p in parts)


def _raw_index(index):
    xp = backend.xp()

    def conv(p):
        if isinstance(p, Tensor):
            return p.data
        if isinstance(p, list):
            return xp.asarray(p)
        return p
    return tuple(conv(p) for p in index) if isinstance(index, tuple) else conv(index)


class GetItem(Function):
    """out = a[index] (slices, integers, integer or boolean arrays).

    Every element of out is one element of a, so dL/da is g placed back where it came
    from and zero elsewhere. An integer array may pick the same element twice; its
    gradients must then add up, which ``numpy.add.at`` does (plain assignment would
    keep only one of them).
    """
    grads_are_new = True     # the backward's array is new; the tape may add into it (tensor.py)

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        out = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_advanced(ctx.index):
            backend.index_add(out, ctx.index, g)
        else:
            out[ctx.index] = g
        return out, None


class Cat(Function):
    """out = the inputs joined along ``axis``;  each input gets its own slice of g."""

    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return backend.xp().concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        grads, start = [None], 0
        for n in ctx.sizes:
            index = [slice(None)] * g.ndim
            index[ctx.axis] = slice(start, start + n)
            grads.append(g[tuple(index)])
            start += n
        return tuple(grads)


class Stack(Function):
    """out = the inputs stacked along a new ``axis``;  input i gets g[..., i, ...]."""

    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis, ctx.n = axis, len(arrays)
        return backend.xp().stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        return (None,) + tuple(xp.take(g, i, axis=ctx.axis) for i in range(ctx.n))


# ----------------------------------------------------------------------------- elementwise maths
class Exp(Function):
    """out = exp(a);  dL/da = g * out."""

    @staticmethod
    def forward(ctx, a):
        out = backend.xp().exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return (g * out,)


class Log(Function):
    """out = log(a);  dL/da = g / a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.xp().log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return (g / a,)


class Sqrt(Function):
    """out = sqrt(a);  dL/da = g / (2 out)."""

    @staticmethod
    def forward(ctx, a):
        out = backend.xp().sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return (g / (2 * out),)


class Tanh(Function):
    """out = tanh(a);  dL/da = g * (1 - out**2)."""

    @staticmethod
    def forward(ctx, a):
        out = backend.xp().tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved
        return (g * (1 - out * out),)


class Where(Function):
    """out = a where cond else b;  dL/da = g where cond (0 elsewhere), dL/db the rest."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond, ctx.shapes = cond, (a.shape, b.shape)
        return backend.xp().where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        xp = backend.xp()
        zero = xp.zeros((), dtype=g.dtype)
        sa, sb = ctx.shapes
        da = unbroadcast(xp.where(ctx.cond, g, zero), sa) if ctx.needs_input_grad[1] else None
        db = unbroadcast(xp.where(ctx.cond, zero, g), sb) if ctx.needs_input_grad[2] else None
        return None, da, db


# ----------------------------------------------------------------------------- public functions
def add(a, b):
    return Add.apply(*_pair(a, b))


def sub(a, b):
    return Sub.apply(*_pair(a, b))


def mul(a, b):
    return Mul.apply(*_pair(a, b))


def div(a, b):
    return Div.apply(*_pair(a, b))


def neg(a):
    return Neg.apply(a)


def pow(a, b):
    if isinstance(b, (int, float)) and isinstance(a, Tensor):
        return Pow.apply(a, b)
    return Pow.apply(*_pair(a, b))


def matmul(a, b):
    return MatMul.apply(*_pair(a, b))


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, axis, keepdims)


def mean(a, axis=None, keepdims=False):
    return Mean.apply(a, axis, keepdims)


def max(a, axis=None, keepdims=False):
    return Max.apply(a, axis, keepdims)


def reshape(a, shape):
    return Reshape.apply(a, tuple(shape))


def permute(a, axes):
    if len(axes) != a.ndim or sorted(ax % a.ndim for ax in axes) != list(range(a.ndim)):
        raise ValueError(f"permute: {tuple(axes)} is not an ordering of the {a.ndim} axes")
    return Permute.apply(a, tuple(axes))


def transpose(a, axis1=-2, axis2=-1):
    if a.ndim < 2:
        raise ValueError(f"transpose swaps two axes; this tensor has {a.ndim}")
    axes = list(range(a.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Permute.apply(a, tuple(axes))


def getitem(a, index):
    return GetItem.apply(a, _raw_index(index))


def cat(tensors, axis=0):
    return Cat.apply(axis, *tensors)


def stack(tensors, axis=0):
    return Stack.apply(axis, *tensors)


def split(a, size_or_sections, axis=0):
    """Split along ``axis`` into pieces of ``size_or_sections`` (an int: equal pieces of
    that size, the last possibly smaller; a list: the size of each piece)."""
    n = a.shape[axis]
    if isinstance(size_or_sections, int):
        if size_or_sections < 1:
            raise ValueError(f"split: pieces of {size_or_sections} elements; give at least 1")
        sizes = [size_or_sections] * (n // size_or_sections)
        if n % size_or_sections:
            sizes.append(n % size_or_sections)
    else:
        sizes = list(size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}")
    pieces, start = [], 0
    for size in sizes:
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, start + size)
        pieces.append(getitem(a, tuple(index)))
        start += size
    return pieces


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def sqrt(a):
    return Sqrt.apply(a)


def tanh(a):
    return Tanh.apply(a)


def where(cond, a, b):
    cond = cond.data if isinstance(cond, Tensor) else backend.asarray(cond)
    a, b = _pair(a, b)
    return Where.apply(cond.astype(bool), a, b)


def masked_fill(a, mask, value):
    """``a`` with ``value`` wherever ``mask`` is True; those places get no gradient."""
    return where(mask, _as_tensor(value, a), a)


def in_place(a, b, ufunc: str):
    """``a += b`` (``ufunc`` "add"; "subtract", "multiply", "true_divide" for -=, *=, /=).
    Under no_grad, on ``a.data`` itself: the same tensor, changed (a hand-written SGD step,
    ``w -= lr * w.grad``, as in PyTorch). While recording: NotImplemented, so that Python
    falls back to ``a = a + b``, a new node, and nothing the graph saved is overwritten."""
    if is_grad_enabled():
        return NotImplemented
    xp = backend.xp()
    other = b.data if isinstance(b, Tensor) else b
    result = xp.result_type(a.data, other) if ufunc != "true_divide" else xp.result_type(a.data, other, 1.0)
    fits = xp.can_cast(result, a.dtype, casting="same_kind") and xp.broadcast_shapes(a.shape, xp.shape(other)) == a.shape
    if not fits:
        return NotImplemented     # ints divided, or a larger shape: a new tensor (a = a / b), as while recording
    getattr(xp, ufunc)(a.data, other, out=a.data, casting="same_kind")   # float64 into float32 weights: cast
    return a



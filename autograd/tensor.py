"""Tensor: an array plus what reverse-mode differentiation needs.

A Tensor holds ``data`` (a NumPy or CuPy array), ``grad`` (filled by ``backward``
for tensors that require it) and, when it was produced by a recorded operation,
``_ctx``: the Context of the Function node that made it, which remembers its inputs.

``loss.backward()`` walks those nodes from the loss back to the leaves in reverse
topological order (``backward_order``, computed with an explicit stack, so a graph of
any depth is fine), calls each node's hand-written backward once with the sum of all
gradients that reached it, and accumulates into ``.grad`` of the leaves that require it.
Two gradients of one tensor are added into a new array, or in place into one that the
tape knows nothing else holds (``_accumulate``); a backward may hand back ``RowGradient``,
rows to be added at some row ids, which the tape adds straight into the other gradient.
This file and function.py are the engine's core (the tape); nothing here knows any
particular operation.

Operators and methods (``x + y``, ``x @ w``, ``x[i]``, ``x.sum()``, ``x.softmax()`` ...)
are Functions defined above this core, in ops.py and kernels/. They are attached to
Tensor by ``autograd/__init__.py`` once everything is loaded (see
``functional.attach_tensor_methods``), so that imports only go one way: backend ->
tensor -> function -> ops, kernels -> functional -> nn, optim.
"""
from __future__ import annotations

from . import backend, profiler

__all__ = ["Tensor", "tensor", "backward_order", "RowGradient"]

_DTYPES = {"float32", "float64", "float16", "bfloat16", "int32", "int64", "uint16", "uint8", "bool"}


def _resolve_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        return backend.xp().dtype(dtype)
    return backend.xp().dtype(dtype)


class Tensor:
    """An n-dimensional array that can record how it was computed.

    ``Tensor(data)`` copies nothing when ``data`` is already an array of the active
    backend and of the wanted dtype. Which dtype, when ``dtype`` is not given (PyTorch's
    convention: ``torch.tensor`` and ``torch.from_numpy`` behave the same way):

      * an array (NumPy or CuPy, or a NumPy scalar such as ``np.float64(2.0)``) keeps its
        dtype: a float64 array stays float64, a float32 one float32;
      * Python numbers and (nested) lists or tuples of them: floats become float32
        (NumPy alone would make them float64), integers and booleans keep their kind;
      * ``dtype="float64"`` (or any dtype) converts whatever was given.

    So ``Tensor(np.array([2.0]))`` is float64 and ``Tensor([2.0])`` is float32.

    A backward uses the arrays its forward saved, the inputs' own ``data`` among them:
    writing into a tensor's ``data`` between a forward and its backward changes the
    gradients, and nothing checks for it (PyTorch counts versions for this). Optimizers
    write after the backward, as they should. ``w -= lr * w.grad`` under ``no_grad`` writes
    into ``w.data`` too (ops.in_place).
    """

    __array_priority__ = 1000  # so that ndarray (op) Tensor defers to Tensor's operators

    def __init__(self, data, dtype=None, requires_grad=False, name=None):
        xp = backend.xp()
        if isinstance(data, Tensor):
            data = data.data
        want = _resolve_dtype(dtype)
        is_array = hasattr(data, "dtype")              # NumPy/CuPy arrays and NumPy scalars
        array = backend.asarray(data)
        if array.dtype.kind not in "biuf":             # Tensor(None), Tensor("abc"): object or text arrays
            raise TypeError(f"a Tensor holds numbers: got {type(data).__name__} ({array.dtype})")
        if want is None and not is_array and array.dtype.kind == "f" and array.dtype != xp.float32:
            want = xp.dtype("float32")                 # Python floats: float32, as torch.tensor
        if want is not None and array.dtype != want:
            array = array.astype(want)
        self._init(array, requires_grad, name)

    @classmethod
    def wrap(cls, array, requires_grad=False, name=None):
        """A Tensor around ``array`` exactly as it is: no copy, no dtype change, no check
        that it belongs to the active backend. For arrays the engine made itself (a
        Function's output, a slice of a KV cache); ``Tensor(data)`` is for everything else."""
        tensor = cls.__new__(cls)
        tensor._init(array, requires_grad, name)
        return tensor

    def _init(self, array, requires_grad, name):
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad (got {self.data.dtype})")
        self.name = name
        self._ctx = None

    # ------------------------------------------------------------------ array-like
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The values as a host NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({backend.to_numpy(self.data)!r}{grad})"

    @property
    def is_leaf(self):
        return self._ctx is None

    def detach(self):
        """The same values, cut from the graph (shares memory, requires no grad)."""
        return Tensor.wrap(self.data)

    def astype(self, dtype):
        """A copy in another dtype, cut from the graph."""
        return Tensor.wrap(self.data.astype(_resolve_dtype(dtype)))

    def zero_grad(self):
        self.grad = None

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is dL/d(self); it may be left out only when self holds one value.
        Unless ``retain_graph``, each node's saved arrays are released once used.
        """
        xp = backend.xp()
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input had requires_grad=True, or it was computed under no_grad()")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {tuple(self.shape)} needs its gradient: "
                    "pass backward(grad) with that shape, or reduce to one value first (e.g. .sum())")
            grad = xp.ones_like(self.data)
        else:
            given = grad.data if isinstance(grad, Tensor) else grad
            grad = backend.asarray(given, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad): grad has shape {grad.shape}, expected {self.shape}")
            if grad is given:             # the caller's array: a leaf may get it as .grad, which
                grad = grad.copy()        # optimizers and clipping scale in place

        grads = {id(self): grad}
        owned = set()                             # keys of grads whose array nothing else holds
        prof = profiler.current()                 # autograd.profiler: time each backward, if asked
        for node in backward_order(self):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            owned.discard(id(node))               # from here on, the backward or the leaf holds it
            if isinstance(g, RowGradient):
                g = g.dense()
            ctx = node._ctx
            if ctx is None:  # a leaf
                if node.requires_grad:
                    node.grad = g if node.grad is None else node.grad + g
                continue
            if ctx is _FREED:
                raise RuntimeError(
                    "backward() through a part of the graph that an earlier backward() already went "
                    "through and released (its saved arrays are gone); to go through it twice, give "
                    "the first one retain_graph=True")
            start = profiler.clock() if prof is not None else 0.0
            input_grads = ctx.run_backward(g)     # the node's hand-written backward
            if prof is not None:
                prof.add(ctx.fn.__name__, "backward", profiler.clock() - start)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            new = ctx.fn.__dict__.get("grads_are_new", False)   # declared by the class itself
            seen = set()
            for inp, ig in zip(ctx.inputs, input_grads):
                if inp is None or ig is None or not inp.requires_grad:
                    continue
                if id(ig) in seen:  # the same array handed to two inputs: give each its own
                    ig = ig.copy()
                if ig.dtype != inp.dtype:   # a float32 weight used with float64 inputs: its gradient
                    ig = ig.astype(inp.dtype)   # in its own dtype, as function.py's rules say
                seen.add(id(ig))
                key = id(inp)
                if key in grads:
                    grads[key], mine = _accumulate(grads[key], ig, key in owned, new)
                else:
                    grads[key], mine = ig, new and not isinstance(ig, RowGradient)
                if mine:
                    owned.add(key)
                else:
                    owned.discard(key)
            if not retain_graph:
                node._ctx = _FREED  # release the saved arrays as we go; not a leaf for all that

    # Comparisons give plain boolean tensors (no gradient), handy for masks; == and != too,
    # element by element as NumPy's (a Tensor is still hashed by identity, as a dict key).
    def __eq__(self, other):
        return Tensor(self.data == _raw(other))

    def __ne__(self, other):
        return Tensor(self.data != _raw(other))

    def __lt__(self, other):
        return Tensor(self.data < _raw(other))

    def __le__(self, other):
        return Tensor(self.data <= _raw(other))

    def __gt__(self, other):
        return Tensor(self.data > _raw(other))

    def __ge__(self, other):
        return Tensor(self.data >= _raw(other))

    __hash__ = object.__hash__

    # A tensor of one value reads as a Python number (if loss < 1: ..., float(loss));
    # of several, NumPy's error: its truth is ambiguous.
    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())


class _Freed:
    """The ``_ctx`` of a tensor whose node a backward() has run and released: the tensor was
    computed, so it is no leaf, but its graph cannot be gone through again."""

    inputs = ()

    def __repr__(self):
        return "<released by backward()>"


_FREED = _Freed()


class RowGradient:
    """A gradient of shape (V, C) that is zero but for ``rows`` (N, C) added at row ``ids``
    (N,), ids possibly repeated: an embedding table's, where a batch reads N of its V rows.
    Handed to the tape by Embedding's fast backward (kernels/embedding.py) instead of the
    dense (V, C) array, so that GPT-2's tied table, whose other gradient comes dense from
    the language-model head, gets its rows added straight into that one: dense, the
    default run spent 5.2 ms a step on zeros, the scatter and the sum of two 25 MB arrays,
    where the scatter alone takes 0.9 (the tape's work now: ``--profile`` counts it in
    "the rest", not in Embedding's row). The tape turns it dense (``dense``) before any
    backward or leaf sees it."""

    __slots__ = ("dtype", "ids", "rows", "shape")

    def __init__(self, ids, rows, shape, dtype):
        self.ids, self.rows, self.shape, self.dtype = ids, rows, tuple(shape), dtype

    def add_to(self, out) -> None:
        """out[ids[n]] += rows[n] for every n, in place (backend.scatter_add_rows)."""
        backend.scatter_add_rows(out, self.ids, self.rows)

    def dense(self):
        out = backend.xp().zeros(self.shape, dtype=self.dtype)
        self.add_to(out)
        return out


def _accumulate(a, b, a_is_mine, b_is_new):
    """a + b, two gradients of one tensor, and whether the tape may write to the result.
    In place into an array that nothing else holds (one the tape made, or a new one from a
    backward whose class says ``grads_are_new``) rather than into a new array; a
    RowGradient is scattered into the dense side. Ownership is kept by tensor (the keys of
    ``grads``), not by array: an array's id can be reused once it is freed."""
    xp = backend.xp()
    if isinstance(a, RowGradient) and isinstance(b, RowGradient):
        return RowGradient(xp.concatenate([a.ids, b.ids]), xp.concatenate([a.rows, b.rows]), a.shape, a.dtype), False
    if isinstance(a, RowGradient):                  # the dense one first
        a, b, a_is_mine = b, a, b_is_new
    if isinstance(b, RowGradient):
        if not a_is_mine:
            a = a.copy()
        b.add_to(a)
        return a, True
    if a.shape == b.shape and a.dtype == b.dtype:
        if a_is_mine:
            a += b
            return a, True
        if b_is_new:
            b += a
            return b, True
    return a + b, True


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def tensor(data, dtype=None, requires_grad=False):
    """Shorthand for ``Tensor(data, dtype, requires_grad)``."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def backward_order(root):
    """Every tensor that ``root`` depends on through recorded nodes, each after all the
    tensors that use it (so a node's gradient is complete before it is propagated): the
    order in which ``backward`` visits them, ``root`` first.

    Iterative depth-first post-order with an explicit stack: no recursion limit.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:          # a released node (_FREED) has no inputs left to visit
            for inp in node._ctx.inputs:
                if inp is not None and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    order.reverse()
    return order

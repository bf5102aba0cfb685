"""Tensor and reverse-mode autodiff: graph walking, accumulation, no_grad, dtypes."""
import numpy as np
import pytest

import autograd
from autograd import Tensor, no_grad
from autograd import functional as F
from autograd.function import Function


def test_python_floats_become_float32_and_arrays_keep_their_dtype():
    # PyTorch's convention: torch.tensor([1.0]) is float32, torch.from_numpy keeps float64
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32
    assert Tensor(np.ones(3, dtype=np.float64)).dtype == np.float64
    assert Tensor(np.float64(2.0)).dtype == np.float64
    assert Tensor(np.ones(3, dtype=np.float32)).dtype == np.float32
    assert Tensor(np.ones(3, dtype=np.float64), dtype="float32").dtype == np.float32
    assert Tensor([1.0], dtype="float64").dtype == np.float64


def test_a_float64_expression_built_from_arrays_matches_torch_to_float64_precision():
    # micrograd's style of engine test, on float64 NumPy values and no dtype argument: with
    # the values rounded to float32 the gradients differed from PyTorch's by about 7e-5
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[parity]')")

    def expression(a, b):
        c = a + b
        d = a * b + b ** 3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + (b + a).tanh()
        d = d + 3 * d + (b - a).exp() * 0.1
        e = c - d
        f = e ** 2
        g = f / 2.0
        return g + 10.0 / f

    a, b = Tensor(np.array([-4.1]), requires_grad=True), Tensor(np.array([2.3]), requires_grad=True)
    out = expression(a, b).sum()
    out.backward()
    ta = torch.tensor([-4.1], dtype=torch.float64, requires_grad=True)
    tb = torch.tensor([2.3], dtype=torch.float64, requires_grad=True)
    tout = expression(ta, tb).sum()
    tout.backward()
    assert out.dtype == np.float64
    # both compute in float64; the order of a few operations differs: 1e-12 relative
    np.testing.assert_allclose(out.data, tout.item(), rtol=1e-12)
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-12)


def test_integer_data_keeps_its_type():
    assert Tensor(np.array([1, 2, 3])).dtype.kind == "i"


def test_a_tensor_used_twice_accumulates_both_gradients():
    x = Tensor([1.5, -2.0], dtype="float64", requires_grad=True)
    y = (x * x + x).sum()            # dy/dx = 2x + 1
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_gradients_accumulate_across_backward_calls_until_cleared():
    x = Tensor([3.0], dtype="float64", requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, [7.0])
    x.zero_grad()
    assert x.grad is None


def test_inputs_that_receive_the_same_gradient_array_get_independent_copies():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad *= 10.0  # an optimizer scaling one gradient in place must not touch the other
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_backward_never_writes_into_or_hands_out_the_callers_gradient():
    x = Tensor(np.ones((2, 3)), dtype="float64", requires_grad=True)
    w = Tensor(np.ones((2, 3)), dtype="float64", requires_grad=True)
    g = np.arange(6.0).reshape(2, 3)
    before = g.copy()
    (x + x.reshape(2, 3)).backward(g)             # x's two gradients are added: not into g
    np.testing.assert_array_equal(g, before)
    np.testing.assert_array_equal(x.grad, 2 * before)
    (w + 1.0).backward(g)                          # w's gradient is g itself, passed through
    w.grad *= 0.5                                  # clipping scales gradients in place
    np.testing.assert_array_equal(g, before)


class _Fresh(Function):
    """y = 2 x, whose backward returns a new array, as it declares."""
    grads_are_new = True

    @staticmethod
    def forward(ctx, x):
        return x * 2.0

    @staticmethod
    def backward(ctx, g):
        return g * 2.0


class _KeepsItsArray(_Fresh):
    """The same, with a backward that hands out an array it keeps: its parent's
    grads_are_new describes the parent's backward, and must not be inherited."""

    @staticmethod
    def forward(ctx, x):
        ctx.kept = np.full(x.shape, 2.0, dtype=x.dtype)
        return x * 2.0

    @staticmethod
    def backward(ctx, g):
        return ctx.kept


class _KeepsNoClaim(Function):
    forward = _KeepsItsArray.forward
    backward = _KeepsItsArray.backward


def test_the_tape_adds_in_place_only_into_arrays_nothing_else_holds():
    # a second gradient of a tensor is never added into an array a backward keeps
    for fn in (_KeepsItsArray, _KeepsNoClaim):
        for first_fresh in (False, True):
            x = Tensor(np.ones(3), dtype="float64", requires_grad=True)
            a = fn.apply(x)
            b = _Fresh.apply(x) if first_fresh else fn.apply(x)
            kept = [n._ctx.kept for n in (a, b) if hasattr(n._ctx, "kept")]
            (b + a).sum().backward()
            np.testing.assert_array_equal(x.grad, [4.0, 4.0, 4.0])
            for k in kept:
                np.testing.assert_array_equal(k, [2.0, 2.0, 2.0])


def test_embedding_rows_are_never_scattered_into_an_array_a_backward_keeps():
    for first in ("kept", "rows"):
        w = Tensor(np.ones((4, 2)), dtype="float64", requires_grad=True)
        kept_out = _KeepsNoClaim.apply(w)
        rows_out = F.embedding(np.array([1, 1, 3]), w)
        kept = kept_out._ctx.kept
        loss = kept_out.sum() + rows_out.sum() if first == "kept" else rows_out.sum() + kept_out.sum()
        loss.backward()
        np.testing.assert_array_equal(kept, np.full((4, 2), 2.0))
        np.testing.assert_array_equal(w.grad, [[2, 2], [4, 4], [2, 2], [3, 3]])


def test_gradients_of_two_dtypes_add_up_and_leave_kept_arrays_alone():
    # an owned float32 gradient meeting a float64 one is added into a new array; the tape's
    # ownership follows the tensor, so no later gradient is added into a backward's kept array
    x = Tensor(np.ones((3, 2)), dtype="float32", requires_grad=True)
    w = Tensor(np.full((4, 2), 0.5), dtype="float32")
    kept_out = _KeepsNoClaim.apply(x)
    kept = kept_out._ctx.kept
    loss = F.linear(x, w).sum() + (x * Tensor(np.full((3, 2), 3.0), dtype="float64")).sum() + kept_out.sum()
    loss.backward()
    np.testing.assert_allclose(x.grad, np.full((3, 2), 2.0 + 3.0 + 2.0))
    np.testing.assert_array_equal(kept, np.full((3, 2), 2.0))


def test_three_gradients_of_one_tensor_add_up_when_the_tape_adds_in_place():
    x = Tensor(np.arange(3.0), dtype="float64", requires_grad=True)
    (x * 2.0 + x * 3.0 + x.exp()).sum().backward()
    np.testing.assert_allclose(x.grad, 5.0 + np.exp(np.arange(3.0)))


def test_a_tied_table_gets_the_embedding_rows_added_into_the_heads_gradient(monkeypatch):
    # GPT-2's tied table: the embedding's rows are scattered into the head's dW, with no
    # dense (V, C) array of their own; the result is what the dense reference gives
    from autograd import backend
    from autograd.tensor import RowGradient
    rng = np.random.default_rng(0)
    ids, targets = np.array([[3, 1, 3, 0]]), np.array([1, 2, 3, 3])      # a repeated id
    table = rng.standard_normal((5, 4))

    def grad(fast):
        backend.use_fast_kernels(fast)
        try:
            w = Tensor(table, dtype="float64", requires_grad=True)
            F.linear_cross_entropy(F.embedding(ids, w), w, targets).backward()
            return w.grad
        finally:
            backend.use_fast_kernels(True)
    made_dense = []
    monkeypatch.setattr(RowGradient, "dense", lambda self: made_dense.append(1))
    fast = grad(True)
    assert not made_dense
    np.testing.assert_allclose(fast, grad(False), rtol=1e-12, atol=1e-15)   # float64 roundings
    monkeypatch.undo()
    w = Tensor(table, dtype="float64", requires_grad=True)   # the embedding alone: made dense
    F.embedding(ids, w).sum().backward()
    np.testing.assert_array_equal(w.grad, np.bincount(ids.ravel(), minlength=5)[:, None] * np.ones((1, 4)))


def test_backward_on_a_non_scalar_without_a_gradient_is_a_clear_error():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\) needs its gradient"):
        (x * 2.0).backward()


def test_backward_on_a_non_scalar_with_a_gradient_works():
    x = Tensor(np.ones((2, 3)), dtype="float64", requires_grad=True)
    (x * 3.0).backward(np.full((2, 3), 2.0))
    np.testing.assert_allclose(x.grad, np.full((2, 3), 6.0))


def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = F.gelu(x * 2.0)
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_works_as_a_decorator():
    @no_grad()
    def f(t):
        return t * 2.0

    assert not f(Tensor([1.0], requires_grad=True)).requires_grad
    assert autograd.is_grad_enabled()


def test_detach_cuts_the_graph_but_shares_the_values():
    x = Tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d._ctx is None
    np.testing.assert_array_equal(d.data, [2.0, 4.0])


def test_a_very_deep_graph_does_not_hit_the_recursion_limit():
    # a 48-layer GPT-2 records a few thousand nodes in a chain; use far more
    x = Tensor([1.0], dtype="float64", requires_grad=True)
    y = x
    for _ in range(20000):
        y = y + 1.0
    (y * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0])


def test_backward_releases_the_graph_so_memory_is_freed():
    import gc
    import weakref
    x = Tensor([1.0], requires_grad=True)
    y = (x * 2.0) * 3.0
    loss = y.sum()
    nodes = [weakref.ref(loss._ctx), weakref.ref(y._ctx)]
    loss.backward()
    gc.collect()
    assert all(node() is None for node in nodes)        # the nodes and their saved arrays are gone
    assert not y.is_leaf and y.grad is None             # y was computed: it gets no .grad of its own


def test_a_second_backward_through_a_released_graph_is_an_error_not_lost_gradients():
    """A second loss through y after y's graph was released: x's share from it was dropped
    (x.grad 2 where it is 2 + 6), and y took a .grad as if it were a leaf."""
    x = Tensor([1.0, 2.0, 3.0], dtype="float64", requires_grad=True)
    y = x * 2
    y.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        (y * 3).sum().backward()
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()                                 # the same loss twice
    x.grad = None
    y = x * 2
    y.sum().backward(retain_graph=True)
    (y * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [8.0, 8.0, 8.0])


def test_a_shared_subexpression_is_differentiated_once_with_the_summed_gradient():
    # diamond: h feeds two branches that meet again
    x = Tensor([0.3, -0.7], dtype="float64", requires_grad=True)
    h = x.tanh()
    y = (h * h + h * 3.0).sum()
    y.backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (2 * t + 3) * (1 - t ** 2), rtol=1e-12)


def test_only_float_tensors_can_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.array([1, 2]), requires_grad=True)


# ----------------------------------------------------------------------------- what a learner writes
def test_equality_is_elementwise_like_the_other_comparisons():
    """== and != fell back to identity: x.masked_fill(x == 2, -1) changed nothing."""
    x = Tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal((x == 2.0).data, [False, True, False])
    np.testing.assert_array_equal((x != 2.0).data, [True, False, True])
    np.testing.assert_array_equal(x.masked_fill(x == 2.0, -1.0).data, [1.0, -1.0, 3.0])
    assert {x: 1}[x] == 1 and x in [x]                  # still a dict key by identity


def test_a_one_value_tensor_reads_as_a_number_and_a_longer_one_refuses():
    loss = Tensor(0.5)
    assert (loss < 1) and not (loss > 1) and float(loss) == 0.5 and int(Tensor(3.0)) == 3
    assert not Tensor([0.0]) and Tensor([2.0])
    with pytest.raises(ValueError, match="ambiguous"):  # was True: the length of the array
        bool(Tensor([False, False]))


@pytest.mark.parametrize("axis", [2, -3, (0, 2)])
def test_an_axis_out_of_range_is_refused_not_wrapped(axis):
    x = Tensor(np.arange(6.0).reshape(2, 3))
    for reduce in (x.sum, x.mean, x.max):
        with pytest.raises(ValueError, match="out of range for a tensor of 2 axes"):
            reduce(axis=axis)                           # axis 2 summed axis 0


@pytest.mark.parametrize("bad", [None, "abc"])
def test_none_or_text_is_not_a_number(bad):
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="must be a number"):   # x + None was NaN, with a gradient
        x + bad
    with pytest.raises(TypeError, match="a Tensor holds numbers"):
        Tensor(bad)


def test_x_to_the_power_zero_has_slope_zero_at_zero():
    x = Tensor(np.array([0.0, 1.0, -2.0]), requires_grad=True)
    (x ** 0).sum().backward()                           # 0 * 0^(-1) was NaN at x = 0
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])
    x.grad = None
    (x ** 3).sum().backward()                           # the other exponents as before: 3 x^2
    np.testing.assert_array_equal(x.grad, [0.0, 3.0, 12.0])


def test_one_no_grad_object_entered_inside_itself_restores_recording():
    ng = no_grad()
    with ng:
        with ng:
            pass
        assert not autograd.is_grad_enabled()
    assert autograd.is_grad_enabled()                   # was left off for good


def test_an_sgd_step_written_by_hand_changes_the_weights_in_place_under_no_grad():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    ((w * w).sum()).backward()                          # grad 2w = [2, 4]
    same = w
    with no_grad():
        w -= 0.5 * w.grad
        w *= 2.0
    assert w is same and w.requires_grad and w.is_leaf   # was a new constant: the next backward failed
    np.testing.assert_array_equal(w.data, [0.0, 0.0])
    a = Tensor(np.array([1.0]), requires_grad=True)
    b = a
    b += 1.0                                            # recording: a new node, a left as it was
    assert b is not a and not b.is_leaf and a.data[0] == 1.0


def test_a_float32_weight_gets_a_float32_gradient_from_float64_inputs():
    from autograd import nn
    layer = nn.Linear(4, 3)
    layer(Tensor(np.random.default_rng(0).standard_normal((2, 4)))).sum().backward()   # float64 rows
    assert layer.weight.grad.dtype == np.float32 and layer.bias.grad.dtype == np.float32


def test_small_misuses_are_one_clear_error():
    with pytest.raises(ValueError, match="transpose swaps two axes"):
        Tensor([1.0, 2.0]).transpose()
    with pytest.raises(ValueError, match="give at least 1"):
        Tensor([1.0, 2.0]).split(0)
    from autograd import nn
    layer = nn.Linear(2, 1)
    layer.load_state_dict({"weight": [[0.5, 0.25]], "bias": [1.0]})   # lists: 'no attribute shape'
    np.testing.assert_array_equal(layer.weight.data, [[0.5, 0.25]])


def test_in_place_under_no_grad_makes_a_new_tensor_where_the_result_would_not_fit():
    """Ints divided (a float result), or a larger broadcast shape: NumPy's error under no_grad
    where, recording, the same line gave a new tensor. A float64 update of float32 weights is
    cast into them, in place."""
    with no_grad():
        a = Tensor(np.array([1, 2]))
        kept = a
        a /= 2
        assert a is not kept and a.data.tolist() == [0.5, 1.0]
        a = Tensor([1.0])
        kept = a
        a += Tensor([1.0, 2.0])
        assert a is not kept and a.data.tolist() == [2.0, 3.0]
        w = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
        kept = w
        w -= np.array([0.5, 0.5])                      # float64
        assert w is kept and w.dtype == np.float32 and w.data.tolist() == [0.5, 1.5]

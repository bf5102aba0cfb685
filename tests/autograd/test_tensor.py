"""Tensor and reverse-mode autodiff: graph walking, accumulation, no_grad, dtypes."""
import numpy as np
import pytest

import autograd
from autograd import Tensor, no_grad
from autograd import functional as F


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
    x = Tensor([1.0], requires_grad=True)
    y = (x * 2.0) * 3.0
    loss = y.sum()
    loss.backward()
    assert loss._ctx is None and y._ctx is None


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

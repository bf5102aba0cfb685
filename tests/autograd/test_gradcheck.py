"""gradcheck itself: it must catch a wrong backward and say where."""
import numpy as np
import pytest

from autograd import Function, GradcheckError, Tensor, gradcheck
from autograd import functional as F
from tests.helpers import rand


class WrongSquare(Function):
    """x^2 with a deliberately wrong derivative (x instead of 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (g * x,)


def test_a_wrong_backward_is_caught_and_located():
    x = rand(2, 3, name="x")
    with pytest.raises(GradcheckError, match=r"x \(2, 3\) at index \(\d, \d\): analytic .* numeric"):
        gradcheck(WrongSquare.apply, [x])


def test_gradcheck_reports_without_raising_when_asked():
    report = gradcheck(WrongSquare.apply, [rand(3)], raise_on_failure=False)
    assert not report.ok and report.worst_rel_error > 0.1


def test_float32_inputs_are_refused():
    with pytest.raises(TypeError, match="need float64"):
        gradcheck(F.gelu, [Tensor([1.0, 1.0, 1.0], requires_grad=True)])   # Python floats: float32


def test_exactly_zero_gradients_pass_through_the_absolute_tolerance():
    # softmax ignores a constant shift: the gradient with respect to a key bias is exactly 0
    q, k = rand(1, 1, 4, 3, seed=1), rand(1, 1, 4, 3, seed=2, requires_grad=False)
    v = rand(1, 1, 4, 3, seed=3, requires_grad=False)
    kb = rand(3, seed=4)
    report = gradcheck(lambda q, b: F.causal_attention(q, k + b, v), [q, kb])
    assert report.ok and report.max_abs_error[1] < 1e-8


def test_large_inputs_are_checked_on_a_random_subset():
    report = gradcheck(F.gelu, [rand(40, 40)], max_elements=50)
    assert report.checked == [50]

"""linear(x, weight, bias): gradcheck and PyTorch parity."""
import numpy as np
import pytest

from autograd import gradcheck
from autograd import functional as F
from tests.helpers import rand, torch_or_skip, transposed


@pytest.mark.parametrize("x_shape", [(5, 3), (2, 4, 3), (1, 3), (3,)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(x_shape, bias):
    x, w = rand(*x_shape, seed=1), rand(4, 3, seed=2)
    inputs = [x, w] + ([rand(4, seed=3)] if bias else [])
    report = gradcheck(lambda *t: F.linear(*t), inputs)
    assert report.ok and report.worst_rel_error < 1e-5


def test_linear_gradcheck_on_transposed_input_and_weight():
    assert gradcheck(lambda x, w: F.linear(x, w), [transposed(5, 3, seed=1), transposed(4, 3, seed=2)]).ok


def test_linear_is_one_node_in_the_graph():
    x, w, b = rand(2, 3), rand(4, 3), rand(4)
    y = F.linear(x, w, b)
    assert y._ctx.fn.__name__ == "Linear" and all(i is not None and i._ctx is None for i in y._ctx.inputs)


def test_linear_rejects_a_weight_of_the_wrong_shape():
    with pytest.raises(ValueError, match="input has 3 features"):
        F.linear(rand(2, 3), rand(3, 4))


def test_linear_matches_torch_forward_and_every_gradient():
    torch = torch_or_skip()
    x, w, b = rand(2, 5, 3, seed=1), rand(4, 3, seed=2), rand(4, seed=3)
    g = np.random.default_rng(4).standard_normal((2, 5, 4))
    y = F.linear(x, w, b)
    y.backward(g)
    tx, tw, tb = (torch.tensor(t.data, requires_grad=True) for t in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(g))
    # float64 on both sides: only summation order differs
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)

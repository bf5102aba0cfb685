"""layer_norm(x, weight, bias, eps): gradcheck and PyTorch parity."""
import numpy as np
import pytest

from autograd import gradcheck
from autograd import functional as F
from tests.helpers import rand, torch_or_skip, transposed


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5), (1, 7), (3, 1, 2)], ids=str)
def test_layer_norm_gradcheck(shape):
    c = shape[-1]
    report = gradcheck(lambda x, w, b: F.layer_norm(x, w, b), [rand(*shape, seed=1), rand(c, seed=2), rand(c, seed=3)])
    assert report.ok


def test_layer_norm_gradcheck_without_bias_and_on_a_transposed_input():
    assert gradcheck(lambda x, w: F.layer_norm(x, w, None), [transposed(5, 4), rand(4, seed=2)]).ok


def test_layer_norm_output_has_zero_mean_unit_variance_before_the_affine_part():
    x = rand(3, 16, scale=4.0)
    y = F.layer_norm(x, rand(16, requires_grad=False) * 0.0 + 1.0, rand(16, requires_grad=False) * 0.0)
    np.testing.assert_allclose(y.data.mean(axis=-1), 0.0, atol=1e-12)
    # exactly var / (var + eps) (population variance, eps 1e-5), up to float64 rounding
    v = x.data.var(axis=-1)
    np.testing.assert_allclose(y.data.var(axis=-1), v / (v + 1e-5), rtol=1e-12)


def test_layer_norm_matches_torch():
    torch = torch_or_skip()
    x, w, b = rand(2, 3, 8, seed=1, scale=3.0), rand(8, seed=2), rand(8, seed=3)
    g = np.random.default_rng(4).standard_normal((2, 3, 8))
    y = F.layer_norm(x, w, b, eps=1e-5)
    y.backward(g)
    tx, tw, tb = (torch.tensor(t.data, requires_grad=True) for t in (x, w, b))
    ty = torch.nn.functional.layer_norm(tx, (8,), tw, tb, eps=1e-5)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)

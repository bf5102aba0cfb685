"""gelu(x): GPT-2's tanh form; gradcheck and PyTorch parity."""
import numpy as np
import pytest

from autograd import gradcheck
from autograd import functional as F
from tests.helpers import rand, torch_or_skip, transposed


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 1, 5)], ids=str)
def test_gelu_gradcheck(shape):
    assert gradcheck(F.gelu, [rand(*shape, scale=3.0)]).ok


def test_gelu_gradcheck_on_a_transposed_input():
    assert gradcheck(F.gelu, [transposed(3, 5)]).ok


def test_gelu_matches_torch_tanh_form_not_the_erf_form():
    torch = torch_or_skip()
    x = rand(4, 9, scale=3.0)
    g = np.random.default_rng(1).standard_normal((4, 9))
    y = F.gelu(x)
    y.backward(g)
    tx = torch.tensor(x.data, requires_grad=True)
    ty = torch.nn.functional.gelu(tx, approximate="tanh")
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    erf_form = torch.nn.functional.gelu(torch.tensor(x.data)).numpy()
    assert np.abs(y.data - erf_form).max() > 1e-5  # the exact erf GELU is a different function

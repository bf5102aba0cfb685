"""cross_entropy(logits, targets, ignore_index): fused, stable; gradcheck and PyTorch parity."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck
from autograd import functional as F
from autograd.kernels import cross_entropy as ce_module
from tests.helpers import rand, torch_or_skip


def test_cross_entropy_gradcheck():
    targets = np.array([0, 3, 2, 2, 4])
    assert gradcheck(lambda z: F.cross_entropy(z, targets), [rand(5, 5, scale=2.0)]).ok


def test_cross_entropy_gradcheck_with_ignored_targets():
    targets = np.array([1, -1, 0, -1])
    assert gradcheck(lambda z: F.cross_entropy(z, targets), [rand(4, 3)]).ok


def test_ignored_targets_contribute_neither_loss_nor_gradient():
    z = rand(4, 6)
    targets = np.array([5, -1, 2, -1])
    loss = F.cross_entropy(z, targets)
    loss.backward()
    kept = F.cross_entropy(Tensor(z.data[[0, 2]], dtype="float64"), targets[[0, 2]])
    np.testing.assert_allclose(loss.data, kept.data, rtol=1e-14)
    assert np.all(z.grad[[1, 3]] == 0.0)
    assert np.all(z.grad[[0, 2]] != 0.0)


def test_a_custom_ignore_index():
    z = rand(3, 4)
    loss = F.cross_entropy(z, np.array([1, 7, 7]), ignore_index=7)
    expected = -np.log(np.exp(z.data[0, 1]) / np.exp(z.data[0]).sum())
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)


def test_logits_of_magnitude_1e4_stay_finite():
    z = Tensor(np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, 1e4, 1e4]]), dtype="float32", requires_grad=True)
    loss = F.cross_entropy(z, np.array([1, 2]))
    loss.backward()
    assert np.isfinite(loss.data) and np.all(np.isfinite(z.grad))
    # row 0: target at -1e4, max 1e4 -> loss 2e4; row 1: two tied maxima -> log 2
    np.testing.assert_allclose(loss.data, (2e4 + np.log(2)) / 2, rtol=1e-6)


def test_chunked_rows_give_the_same_result_as_one_chunk(monkeypatch):
    z = rand(37, 11)
    targets = np.random.default_rng(1).integers(0, 11, 37)
    whole = F.cross_entropy(z, targets)
    whole.backward()
    grad_whole = z.grad.copy()
    z.zero_grad()
    monkeypatch.setattr(ce_module, "CHUNK_ELEMENTS", 30)   # 2 rows per chunk
    chunked = F.cross_entropy(z, targets)
    chunked.backward()
    np.testing.assert_allclose(chunked.data, whole.data, rtol=1e-14)
    np.testing.assert_allclose(z.grad, grad_whole, rtol=1e-14)


def test_bad_targets_are_clear_errors():
    with pytest.raises(IndexError, match="target 9 is outside"):
        F.cross_entropy(rand(2, 4), np.array([1, 9]))
    with pytest.raises(ValueError, match="2 rows of logits but 3 targets"):
        F.cross_entropy(rand(2, 4), np.array([1, 2, 3]))


def test_cross_entropy_matches_torch():
    torch = torch_or_skip()
    z = rand(6, 10, scale=3.0)
    targets = np.array([0, 9, -1, 4, 4, -1])
    loss = F.cross_entropy(z, targets)
    loss.backward()
    tz = torch.tensor(z.data, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(targets), ignore_index=-1)
    tloss.backward()
    np.testing.assert_allclose(loss.data, tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-10, atol=1e-14)

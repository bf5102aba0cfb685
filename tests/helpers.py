"""Small helpers for the tests."""
import numpy as np
import pytest

from autograd import Tensor


def torch_or_skip():
    """Import torch, or skip the test with the reason (it is the test-only oracle)."""
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[parity]')")


def rand(*shape, seed=0, requires_grad=True, scale=1.0, name=None):
    """A float64 tensor of N(0, scale^2) values."""
    data = np.random.default_rng(seed).standard_normal(shape) * scale
    return Tensor(data, dtype="float64", requires_grad=requires_grad, name=name)


def transposed(*shape, seed=0):
    """A float64 leaf tensor whose data is a non-contiguous (transposed) view."""
    data = np.random.default_rng(seed).standard_normal(tuple(reversed(shape)))
    t = Tensor(data.T, dtype="float64", requires_grad=True)
    assert not t.data.flags["C_CONTIGUOUS"] or len(shape) < 2
    return t

"""embedding(ids, weight): scatter-add backward exact for repeated ids, gradcheck, PyTorch parity."""
import numpy as np

from autograd import Tensor, gradcheck
from autograd import functional as F
from tests.helpers import rand, torch_or_skip


def test_embedding_gradcheck_with_repeated_ids():
    ids = np.array([[1, 1, 2, 7], [7, 1, 0, 1]])
    assert gradcheck(lambda w: F.embedding(ids, w), [rand(8, 3)]).ok


def test_embedding_backward_equals_numpy_add_at_for_repeated_ids():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, size=(4, 16))          # 64 lookups in a table of 5: many repeats
    w = rand(5, 6)
    g = rng.standard_normal((4, 16, 6))
    F.embedding(ids, w).backward(g)
    expected = np.zeros((5, 6))
    np.add.at(expected, ids.reshape(-1), g.reshape(-1, 6))
    np.testing.assert_allclose(w.grad, expected, rtol=1e-12, atol=1e-12)


def test_embedding_accepts_an_integer_tensor_of_ids():
    w = rand(4, 2)
    out = F.embedding(Tensor(np.array([3, 0])), w)
    np.testing.assert_array_equal(out.data, w.data[[3, 0]])


def test_an_id_outside_the_table_is_a_clear_error():
    import pytest
    with pytest.raises(IndexError, match="id 9 is outside the table of 4 rows"):
        F.embedding(np.array([0, 9]), rand(4, 2))


def test_embedding_matches_torch():
    torch = torch_or_skip()
    ids = np.array([[0, 3, 3], [2, 0, 3]])
    w = rand(5, 4)
    g = np.random.default_rng(1).standard_normal((2, 3, 4))
    out = F.embedding(ids, w)
    out.backward(g)
    tw = torch.tensor(w.data, requires_grad=True)
    tout = torch.nn.functional.embedding(torch.tensor(ids), tw)
    tout.backward(torch.tensor(g))
    np.testing.assert_array_equal(out.data, tout.detach().numpy())
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), rtol=1e-12, atol=1e-12)

"""dropout(x, p, training): gradcheck with a fixed mask, identity in eval mode."""
import numpy as np
import pytest

from autograd import backend, gradcheck
from autograd import functional as F
from tests.helpers import rand


def test_dropout_gradcheck_with_a_fixed_mask():
    def fn(x):
        backend.seed(7)  # the same mask at every evaluation
        return F.dropout(x, 0.3, training=True)
    assert gradcheck(fn, [rand(4, 5)]).ok


def test_dropout_zeroes_about_p_and_keeps_the_expected_value():
    x = rand(200, 200, requires_grad=False) * 0.0 + 1.0
    y = F.dropout(x, 0.25).data
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert abs(y.mean() - 1.0) < 0.02
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75])


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero():
    x = rand(3, 3)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


def test_a_bad_probability_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.dropout(rand(2), 1.0)

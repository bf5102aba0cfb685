"""Modules: parameter discovery and naming, state dicts, train/eval."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck, nn
from tests.helpers import rand


class Block(nn.Module):
    def __init__(self):
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)


class Net(nn.Module):
    def __init__(self):
        self.emb = nn.Embedding(10, 4)
        self.h = nn.ModuleList([Block(), Block()])
        self.head_weight = self.emb.weight    # tied: listed once

    def forward(self, ids):
        x = self.emb(ids)
        for block in self.h:
            x = block.ln(x)
        return x


def test_parameters_are_named_by_attribute_path_and_tied_ones_listed_once():
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["emb.weight", "h.0.ln.weight", "h.0.ln.bias", "h.0.fc.weight", "h.0.fc.bias",
                     "h.1.ln.weight", "h.1.ln.bias", "h.1.fc.weight", "h.1.fc.bias"]
    assert Net().num_parameters() == 40 + 2 * (4 + 4 + 12 + 3)


def test_state_dict_round_trip():
    a, b = Net(), Net()
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_strict_loading_names_missing_and_unexpected_keys():
    state = dict(Net().state_dict())
    del state["h.1.fc.bias"]
    state["h.2.fc.bias"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(nn.StateDictError, match=r"missing keys: h\.1\.fc\.bias.*unexpected keys: h\.2\.fc\.bias"):
        Net().load_state_dict(state)
    missing, unexpected = Net().load_state_dict(state, strict=False)
    assert missing == ["h.1.fc.bias"] and unexpected == ["h.2.fc.bias"]


def test_loading_names_shape_mismatches():
    state = dict(Net().state_dict())
    state["emb.weight"] = np.zeros((11, 4), dtype=np.float32)
    with pytest.raises(nn.StateDictError, match=r"emb\.weight: checkpoint \(11, 4\) vs model \(10, 4\)"):
        Net().load_state_dict(state)


def test_a_long_list_of_problems_names_three_and_counts_the_rest():
    # a GPT-2 has 148 tensors: all of them named made one error line of about 10 kB
    state = {name: np.zeros((1,) + value.shape, dtype=value.dtype) for name, value in Net().state_dict().items()}
    n = len(state)
    with pytest.raises(nn.StateDictError) as err:
        Net().load_state_dict(state)
    message = str(err.value)
    assert message.count(" vs model ") == 3 and message.endswith(f"... and {n - 3} more")


def test_train_and_eval_reach_every_submodule():
    net = Net().eval()
    assert all(not m.training for _, m in net.named_modules())
    net.train()
    assert all(m.training for _, m in net.named_modules())
    x = rand(3, 4, requires_grad=False)
    net.eval()
    assert net.h[0].drop(x) is x


def test_to_float64_converts_every_parameter_and_modules_pass_gradcheck():
    net = Net().to("float64")
    assert all(p.dtype == np.float64 for p in net.parameters())
    block = net.h[0]
    assert gradcheck(lambda x: block.fc(block.ln(x)), [rand(2, 4)]).ok


def test_linear_module_matches_its_functional_form():
    layer = nn.Linear(3, 2)
    x = Tensor(np.ones((1, 3)))
    np.testing.assert_allclose(layer(x).data, np.ones((1, 3)) @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    assert nn.Linear(3, 2, bias=False).bias is None


def test_to_takes_the_kernels_dtypes_and_points_a_device_to_use_backend():
    """to('int32') truncated every weight; to('float16') failed only at the forward; to('cuda')
    was NumPy's 'data type not understood'."""
    from autograd import nn
    layer = nn.Linear(3, 2)
    for dtype in ("int32", "float16"):
        with pytest.raises(ValueError, match="float32 or float64"):
            layer.to(dtype)
    with pytest.raises(ValueError, match=r"use_backend\('cuda'\)"):
        layer.to("cuda")
    assert layer.weight.dtype == np.float32 and layer.to("float64").weight.dtype == np.float64

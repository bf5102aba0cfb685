"""autograd.trace lists the recorded graph in the order backward visits it."""
import io

import numpy as np

import autograd
from autograd import Tensor, functional as F


def _tiny_model():
    from tinygpt import GPT2, GPTConfig
    return GPT2(GPTConfig(vocab_size=11, block_size=4, n_layer=2, n_head=2, n_embd=8))


def test_a_two_layer_gpt2_is_listed_from_the_loss_down_to_the_embeddings():
    model = _tiny_model()
    tokens = np.random.default_rng(0).integers(0, 11, (1, 5))
    _, loss = model(tokens[:, :4], tokens[:, 1:])
    out = io.StringIO()
    lines = autograd.trace(loss, names=dict(model.named_parameters()), file=out)
    assert out.getvalue().splitlines() == lines
    rows = lines[1:]
    assert "LinearCrossEntropy" in rows[0] and "transformer.wte.weight (11, 8)" in rows[0]
    assert rows[-2].split()[1] == "Embedding" and rows[-1].split()[1] == "Embedding"
    assert {"transformer.wte.weight", "transformer.wpe.weight"} == {rows[-2].split("<- ")[1].split()[0],
                                                                      rows[-1].split("<- ")[1].split()[0]}
    kinds = [r.split()[1] for r in rows]
    assert kinds.count("CausalAttention") == 2 and kinds.count("LayerNorm") == 5 and kinds.count("GELU") == 2
    # each node is listed after every node that uses it: an input's number is larger than its user's
    for number, row in enumerate(rows, 1):
        for ref in [int(part.split()[0][1:]) for part in row.split("<- ")[1].split(", ") if part.startswith("#")]:
            assert ref > number, row


def test_trace_changes_nothing_and_says_when_the_graph_is_gone():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = (F.gelu(x) * 2.0).sum()
    autograd.trace(y, show=False)
    y.backward()
    expected = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    (F.gelu(expected) * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, expected.grad)
    assert autograd.trace(y, show=False)[0].startswith("no recorded graph")

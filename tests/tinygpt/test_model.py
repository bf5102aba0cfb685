"""GPT-2 on the engine against Hugging Face's GPT2LMHeadModel (an independent
implementation): logits, loss, every gradient, and a 10-step AdamW loss curve; plus
a whole-model float64 gradient check and the causal mask at model level."""
import numpy as np
import pytest

from autograd import Tensor, backend, gradcheck, optim
from tinygpt import GPT2, GPTConfig, preset
from tinygpt.hf import from_hf_state_dict, to_hf_state_dict
from tests.helpers import torch_or_skip

# a small, odd-sized configuration: 3 heads of 7, vocabulary 97, context 24
SMALL = GPTConfig(vocab_size=97, block_size=24, n_layer=2, n_head=3, n_embd=21)


def hf_pair(dtype="float32", config=SMALL, seed=0):
    """A random transformers GPT2LMHeadModel and a tinygpt GPT2 with the same weights."""
    torch = torch_or_skip()
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[parity]')")
    torch.manual_seed(seed)
    hf_cfg = transformers.GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                     n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     activation_function="gelu_new", layer_norm_epsilon=1e-5)
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    hf.config._attn_implementation = "eager"
    hf = hf.to(getattr(torch, dtype)).eval()
    ours = GPT2(config).to(dtype)
    ours.load_state_dict(from_hf_state_dict({k: v.detach().numpy() for k, v in hf.state_dict().items()}))
    return torch, hf, ours


def batch(config=SMALL, B=3, T=None, seed=1):
    rng = np.random.default_rng(seed)
    T = T or config.block_size
    return rng.integers(0, config.vocab_size, (B, T)), rng.integers(0, config.vocab_size, (B, T))


def test_parameter_names_follow_hugging_face():
    names = [n for n, _ in GPT2(SMALL).named_parameters()]
    assert names[:4] == ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                         "transformer.h.0.ln_1.bias"]
    assert "transformer.h.1.attn.c_attn.weight" in names and "transformer.h.1.mlp.c_proj.bias" in names
    assert names[-2:] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def test_gpt2_preset_has_the_parameter_count_hugging_face_reports():
    assert preset("gpt2").num_parameters() == 124_439_808
    assert GPT2(preset("gpt2")).num_parameters() == 124_439_808


def test_initialisation_scales_the_residual_projections():
    backend.seed(0)
    model = GPT2(GPTConfig(vocab_size=300, block_size=32, n_layer=8, n_head=4, n_embd=64))
    params = dict(model.named_parameters())
    # the std of n normal draws is off by about 1/sqrt(2n) relative: 0.6% for these 12288 and
    # 16384 weights; 4% is six of those, and tells 0.02/sqrt(2 * 8 layers) from 0.02/sqrt(24) (-18%)
    assert params["transformer.h.0.attn.c_attn.weight"].data.std() == pytest.approx(0.02, rel=0.04)
    for name in ("transformer.h.0.mlp.c_proj.weight", "transformer.h.0.attn.c_proj.weight"):
        assert params[name].data.std() == pytest.approx(0.02 / np.sqrt(16), rel=0.04), name
    assert np.all(params["transformer.h.0.attn.c_attn.bias"].data == 0)
    assert np.all(params["transformer.h.0.ln_1.weight"].data == 1)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-9)])
def test_logits_match_hugging_face(dtype, tol):
    torch, hf, ours = hf_pair(dtype)
    x, _ = batch()
    logits, loss = ours(x)
    with torch.no_grad():
        expected = hf(torch.tensor(x)).logits.numpy()
    assert loss is None and logits.dtype == np.dtype(dtype)
    assert np.abs(logits.data - expected).max() <= tol


def test_loss_and_every_gradient_match_hugging_face_in_float64():
    torch, hf, ours = hf_pair("float64")
    x, y = batch()
    _, loss = ours(x, y)
    loss.backward()
    out = hf(torch.tensor(x), labels=None)
    hf_loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, SMALL.vocab_size), torch.tensor(y).reshape(-1))
    hf_loss.backward()
    np.testing.assert_allclose(float(loss.data), hf_loss.item(), rtol=1e-12)
    hf_grads = to_hf_state_dict({n: p.grad for n, p in ours.named_parameters()})
    theirs = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    assert set(theirs) <= set(hf_grads)
    for name, g in theirs.items():
        # float64 on both sides; sums in different orders: measured 2e-12 relative at worst (the
        # entries above 1e-9), 1e-10 leaves the rounding of longer sums room; atol for entries near 0
        np.testing.assert_allclose(hf_grads[name], g, rtol=1e-10, atol=1e-14, err_msg=name)


def test_ten_adamw_steps_follow_torch_adamw_loss_for_loss():
    torch, hf, ours = hf_pair("float32")
    hyper = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    opt = optim.AdamW(optim.decay_groups(ours.named_parameters(), 0.1), **hyper)
    decay = [p for n, p in hf.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in hf.named_parameters() if p.ndim < 2]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             **hyper, foreach=False)
    ours_losses, theirs_losses = [], []
    x, y = batch(B=4, seed=100)      # one batch, fitted ever better: the loss must fall
    for step in range(10):
        _, loss = ours(x, y)
        loss.backward()
        optim.clip_grad_norm(ours.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ours_losses.append(float(loss.data))
        logits = hf(torch.tensor(x)).logits
        tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, SMALL.vocab_size), torch.tensor(y).reshape(-1))
        tloss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        topt.step()
        topt.zero_grad()
        theirs_losses.append(tloss.item())
    assert ours_losses[-1] < ours_losses[0] - 0.05  # it learns
    # float32 on both sides; small rounding differences compound over 10 steps
    np.testing.assert_allclose(ours_losses, theirs_losses, rtol=1e-4)


def test_whole_model_gradcheck_in_float64_on_the_tiny_preset():
    backend.seed(3)
    model = GPT2(preset("tiny", vocab_size=11)).to("float64")
    x, y = batch(model.config, B=2, T=6, seed=5)
    params = [p for _, p in model.named_parameters()]
    for name, p in model.named_parameters():
        p.name = name

    def loss_of(*_):
        return model(x, y)[1]
    # every parameter tensor, a random subset of 12 elements of each
    report = gradcheck(loss_of, params, max_elements=12, atol=1e-7, rtol=1e-5)
    assert report.ok and len(report.checked) == len(params)


def test_changing_future_tokens_leaves_earlier_logits_unchanged_bit_for_bit():
    backend.seed(0)
    model = GPT2(SMALL)
    x, _ = batch(B=2, T=16)
    base, _ = model(x)
    rng = np.random.default_rng(7)
    for t in (0, 5, 14):
        changed = x.copy()
        changed[:, t + 1:] = rng.integers(0, SMALL.vocab_size, changed[:, t + 1:].shape)
        logits, _ = model(changed)
        assert np.array_equal(logits.data[:, :t + 1], base.data[:, :t + 1])
        assert not np.array_equal(logits.data[:, t + 1:], base.data[:, t + 1:])   # the change is seen


def test_a_sequence_longer_than_the_context_is_refused():
    from tinygpt import TinyGPTError
    with pytest.raises(TinyGPTError, match="longer than the context"):
        GPT2(SMALL)(np.zeros((1, 25), dtype=np.int64))


def test_a_training_step_keeps_every_array_float32():
    backend.seed(0)
    model = GPT2(SMALL)
    opt = optim.AdamW(optim.decay_groups(model.named_parameters(), 0.1))
    x, y = batch()
    _, loss = model(x, y)
    assert loss.dtype == np.float32
    loss.backward()
    optim.clip_grad_norm(model.parameters(), 1.0)
    opt.step()
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name
        assert all(v.dtype == np.float32 for k, v in opt.state[id(p)].items() if k != "step"), name


def test_attention_weights_match_hugging_face_output_attentions():
    torch, hf, ours = hf_pair("float64")
    x, _ = batch(B=2, T=11)
    weights = []
    logits, _ = ours(x, attention=weights)
    with torch.no_grad():
        expected = hf(torch.tensor(x), output_attentions=True).attentions
    assert len(weights) == SMALL.n_layer
    for ours_p, hf_p in zip(weights, expected):
        assert ours_p.shape == (2, SMALL.n_head, 11, 11)
        assert np.abs(ours_p - hf_p.numpy()).max() <= 1e-12     # float64: rounding only


def test_attention_weights_are_causal_rows_of_probabilities_and_change_nothing():
    backend.seed(0)
    model = GPT2(SMALL)
    x, _ = batch(B=2, T=9)
    plain, _ = model(x)
    weights = []
    logits, _ = model(x, attention=weights)
    assert np.array_equal(plain.data, logits.data)
    for p in weights:
        assert np.all(np.triu(p, k=1) == 0)                      # nothing from the future
        assert np.allclose(p.sum(axis=-1), 1.0, atol=1e-6)       # float32 row sums


# ----------------------------------------------------------------------------- what the API refuses
def test_a_tokenizer_of_another_vocabulary_is_refused_when_the_model_is_made():
    """A 9-character tokenizer on a 50257 model saved and loaded, then generate() sampled an id
    past the alphabet: IndexError."""
    from tinygpt import TinyGPTError
    from tinygpt.tokenizer import CharTokenizer
    with pytest.raises(TinyGPTError, match="the tokenizer has 9 tokens and the model a vocabulary of 50257"):
        GPT2(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8), tokenizer=CharTokenizer.from_text("helo wrd\n"))


def test_targets_of_another_shape_or_kind_are_refused():
    from tinygpt import TinyGPTError
    backend.seed(0)
    model = GPT2(SMALL)
    x, y = batch(B=3, T=4)
    with pytest.raises(TinyGPTError, match=r"targets have shape \(4, 3\) and the ids \(3, 4\)"):
        model(x, y.T)                                  # as many targets, in the wrong places: was accepted
    with pytest.raises(TinyGPTError, match="targets must be integer token ids"):
        model(x, y.astype(np.float64))                 # was numba's TypingError
    for ids in (np.zeros((1, 2, 3), dtype=np.int64), np.zeros((1, 0), dtype=np.int64)):
        with pytest.raises(TinyGPTError, match="one sequence"):
            model(ids)
    assert model(x[0], y[0])[1] is not None           # one sequence and its targets, 1-D both


def test_ids_and_targets_outside_the_vocabulary_are_refused_on_the_host():
    """Checked before the arrays go to the device, so that on a GPU (where the kernels do not
    read the ids back) the trainer's batches are checked too; on the CPU it had been the
    embedding kernel's IndexError."""
    from tinygpt import TinyGPTError
    backend.seed(0)
    model = GPT2(SMALL)
    x, y = batch(B=2, T=4)
    V = SMALL.vocab_size
    bad = x.copy()
    bad[1, 2] = V
    with pytest.raises(TinyGPTError, match=rf"token id {V} is outside the model's vocabulary \[0, {V}\)"):
        model(bad)
    with pytest.raises(TinyGPTError, match="token id -2 is outside"):
        model([[1, -2, 3]])
    for value in (V, -2):
        wrong = y.copy()
        wrong[0, 0] = value
        with pytest.raises(TinyGPTError, match=rf"target {value} is outside .* or -1 for none"):
            model(x, wrong)
    ignored = y.copy()
    ignored[0, :2] = -1                                  # -1: no target at those positions
    assert np.isfinite(float(model(x, ignored)[1].data))


def test_a_prompt_of_ids_must_be_whole_numbers():
    from tinygpt import TinyGPTError
    from tinygpt.generate import generate_ids
    backend.seed(0)
    model = GPT2(SMALL)
    for prompt in ([1.7, 2.2], [[1, 2]], [True]):
        with pytest.raises(TinyGPTError, match="whole numbers"):    # 1.7 was token 1
            list(generate_ids(model, prompt, 2))
    assert len(list(generate_ids(model, np.array([1, 2]), 2, temperature=0))) == 2


def test_a_float64_checkpoint_loads_in_float64(tmp_path):
    """GPT2.load cast a float64 run's weights to float32, silently."""
    backend.seed(0)
    model = GPT2(SMALL).to("float64")
    model.save(tmp_path / "m")
    back = GPT2.load(tmp_path / "m")
    assert back.transformer.wte.weight.dtype == np.float64
    for (name, p), (_, q) in zip(model.named_parameters(), back.named_parameters()):
        assert np.array_equal(p.data, q.data), name


def test_a_float16_checkpoint_loads_into_float32(tmp_path):
    """The float64 rule first sent a float16 file to Module.to, which takes float32 or float64
    only: a traceback where float16 weights had loaded (cast) before."""
    from safetensors.numpy import load_file, save_file
    backend.seed(0)
    model = GPT2(SMALL)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    save_file({k: v.astype(np.float16) for k, v in load_file(str(path)).items()}, str(path))
    back = GPT2.load(tmp_path / "m")
    assert back.transformer.wte.weight.dtype == np.float32
    np.testing.assert_array_equal(back.transformer.wte.weight.data,
                                  model.transformer.wte.weight.data.astype(np.float16).astype(np.float32))


def test_zero_dimensional_integer_arrays_are_whole_numbers_in_a_prompt():
    """As a CuPy array's elements are: int() took them before, numbers.Integral does not."""
    from tinygpt.generate import generate_ids
    backend.seed(0)
    model = GPT2(SMALL)
    assert len(list(generate_ids(model, [np.array(1), np.array(2)], 2, temperature=0))) == 2

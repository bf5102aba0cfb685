"""Sampling: the KV cache changes nothing but the cost; top-k/top-p; long prompts."""
import numpy as np
import pytest

from autograd import backend
from tinygpt import GPT2, GPTConfig, TinyGPTError
from tinygpt.generate import draw, generate_ids, generate_text, next_token_distribution
from tinygpt.tokenizer import CharTokenizer

TEXT = "first citizen: before we proceed any further, hear me speak.\n"


def char_model(block_size=16, seed=0):
    backend.seed(seed)
    tok = CharTokenizer.from_text(TEXT)
    return GPT2(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16),
                tokenizer=tok)


@pytest.mark.parametrize("new_tokens", [5, 40])   # 40 runs well past the 16-token context
def test_greedy_output_is_identical_with_and_without_the_kv_cache(new_tokens):
    model = char_model()
    prompt = model.tokenizer.encode("hear me ")
    cached = list(generate_ids(model, prompt, new_tokens, temperature=0, use_cache=True))
    plain = list(generate_ids(model, prompt, new_tokens, temperature=0, use_cache=False))
    assert len(cached) == new_tokens and cached == plain


@pytest.mark.parametrize("fast", [True, False])               # the compiled step, and the model's forward
@pytest.mark.parametrize("new_tokens", [1, 2, 8, 9, 10])       # the cache full at the last token, or sliding
def test_the_cache_holds_only_the_positions_the_generation_uses(monkeypatch, fast, new_tokens):
    from tinygpt import generate
    monkeypatch.setattr(backend, "fast_kernels", lambda: fast)
    model = char_model()                                        # context 16
    prompt = model.tokenizer.encode("hear me ")                 # 8 tokens
    made = []

    class Recorded(generate.KVCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.layers[0].k.shape[2])
    monkeypatch.setattr(generate, "KVCache", Recorded)
    cached = list(generate_ids(model, prompt, new_tokens, temperature=0, use_cache=True))
    plain = list(generate_ids(model, prompt, new_tokens, temperature=0, use_cache=False))
    assert cached == plain and len(cached) == new_tokens
    # the prompt and every new token but the last are fed to the model
    assert made[0] == min(16, 8 + new_tokens - 1)
    assert all(capacity == 16 for capacity in made[1:])         # rebuilt when the window slides


def test_a_kv_cache_refuses_a_capacity_outside_the_context_and_positions_beyond_its_own():
    from autograd import Tensor
    from tinygpt.model import KVCache
    model = char_model()
    for capacity in (0, 17):
        with pytest.raises(ValueError, match="1 to 16 positions"):
            KVCache(model.config, 1, capacity=capacity)
    layer = KVCache(model.config, 1, capacity=3).layers[0]
    kv = Tensor.wrap(np.zeros((1, 2, 2, 8), np.float32))
    layer.extend(kv, kv)
    with pytest.raises(ValueError, match="holds 3 positions; 2 are used and 2 more do not fit"):
        layer.extend(kv, kv)


def test_sampled_output_is_identical_with_and_without_the_kv_cache_for_a_seed():
    model = char_model()
    a = list(generate_ids(model, "we ", 30, temperature=1.0, top_k=5, seed=4, use_cache=True))
    b = list(generate_ids(model, "we ", 30, temperature=1.0, top_k=5, seed=4, use_cache=False))
    assert a == b


def test_the_kv_cache_decodes_one_token_per_step(monkeypatch):
    # the model's forward, as on a GPU; on the CPU the steps after the prompt take the
    # compiled step, which tests/tinygpt/test_fast_decode.py follows the same way
    monkeypatch.setattr(backend, "fast_kernels", lambda: False)
    model = char_model(block_size=64)
    calls = []
    original = model.forward

    def spy(ids, *args, **kwargs):
        calls.append(len(ids) if isinstance(ids, list) else np.asarray(ids).shape[-1])
        return original(ids, *args, **kwargs)
    model.forward = spy
    list(generate_ids(model, "first ", 20, temperature=0))
    assert calls[0] == 6 and calls[1:] == [1] * 19


def test_a_seed_makes_sampling_reproducible():
    model = char_model()
    assert generate_text(model, "be", 20, seed=1) == generate_text(model, "be", 20, seed=1)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", float("inf"), float("nan")])
def test_a_seed_that_numpy_cannot_take_is_a_clear_error(seed):
    with pytest.raises(TinyGPTError, match="seed must be a whole number, 0 or more"):
        generate_text(char_model(), "be", 5, seed=seed)     # -1 was NumPy's ValueError


def test_later_samples_of_a_seed_are_not_the_next_seeds_samples():
    from tinygpt.generate import sample_seed
    assert sample_seed(None, 3) is None and sample_seed(7, 0) == 7
    firsts = {sample_seed(s, 0) for s in range(20)}
    later = {sample_seed(s, i) for s in range(20) for i in range(1, 5)}
    assert not firsts & later and len(later) == 80          # seed + i had made them overlap


def test_a_prompt_longer_than_the_context_keeps_its_tail_with_a_warning(capsys):
    model = char_model(block_size=16)
    out = list(generate_ids(model, TEXT, 3, temperature=0))
    err = capsys.readouterr().err
    assert "keeping the last 16" in err
    # the tail it kept is what it continued: one character is one token here
    assert len(out) == 3 and out == list(generate_ids(model, TEXT[-16:], 3, temperature=0))


def test_generation_stops_at_end_of_text():
    model = char_model()
    model.tokenizer.eot_id = model.tokenizer.index["e"]   # pretend 'e' ends the text
    model.transformer.wte.weight.data[...] = 0.0
    model.transformer.wte.weight.data[model.tokenizer.index["e"], 0] = 50.0
    model.transformer.ln_f.weight.data[...] = 0.0
    model.transformer.ln_f.bias.data[...] = 0.0
    model.transformer.ln_f.bias.data[0] = 1.0   # every position's logits favour 'e'
    out = list(generate_ids(model, "hi", 10, temperature=0))
    assert out == [model.tokenizer.index["e"]]


def test_temperature_zero_is_greedy_and_top_k_keeps_k():
    logits = np.array([1.0, 3.0, 2.0, -1.0, 0.5])
    np.testing.assert_array_equal(next_token_distribution(logits, 0), [0, 1, 0, 0, 0])
    p = next_token_distribution(logits, 1.0, top_k=2)
    assert np.count_nonzero(p) == 2 and p[1] > p[2] > 0 and p.sum() == pytest.approx(1)


def test_a_temperature_so_small_that_the_logits_overflow_is_the_greedy_limit(recwarn):
    """z / 1e-320 overflows: exp(inf - inf) was NaN, with NumPy's warnings and an error blaming
    a diverged checkpoint; softmax(z / tau) tends to the argmax's one-hot as tau -> 0."""
    logits = np.array([1.0, 3.0, 2.0, -1.0, 0.5])
    for tau in (1e-320, 1e-300):
        np.testing.assert_array_equal(next_token_distribution(logits, tau), [0, 1, 0, 0, 0])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    # small but not overflowing: still a distribution, all but one-hot
    p = next_token_distribution(logits, 1e-3)
    assert p[1] == pytest.approx(1.0) and p.sum() == pytest.approx(1.0)
    # logits that are not finite (a diverged model) are still the clear error of draw()
    assert np.isnan(next_token_distribution(np.array([np.nan, 1.0]), 1e-320)).any()


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = next_token_distribution(logits, 1.0, top_p=0.7)
    np.testing.assert_allclose(p, [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    p = next_token_distribution(logits, 1.0, top_p=0.5)
    np.testing.assert_allclose(p, [1, 0, 0, 0])


def nucleus_by_hand(probs, top_p):
    """Top-p the slow way: walk the tokens from most to least likely (ties: lower id first),
    keep each while the total before it is below p."""
    keep, total = np.zeros(probs.size, dtype=bool), 0.0
    for i in sorted(range(probs.size), key=lambda i: (-probs[i], i)):
        if total >= top_p:
            break
        keep[i] = True
        total += probs[i]
    return keep


@pytest.mark.parametrize("shape", ["peaked", "flat", "ties"])
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_keeps_what_a_walk_down_the_sorted_tokens_keeps(shape, top_p):
    # 3000 tokens: more than the 1024 candidates the fast path sorts. "peaked": the nucleus
    # lies among them; "flat": it does not (the full sort); "ties": 500 tokens at logit 2,
    # 2000 at 1 (the 1024th among them), 500 at -5, shuffled: the first 1024 hold 0.56 of the
    # probability, so for p = 0.5 the nucleus ends inside the tied group, whose lowest ids
    # must be the ones kept (a partition alone picks any of them)
    rng = np.random.default_rng(7)
    for _ in range(5):
        if shape == "peaked":
            logits = rng.standard_normal(3000) * 4
        elif shape == "flat":
            logits = rng.standard_normal(3000) * 0.01
        else:
            logits = rng.permutation(np.repeat([2.0, 1.0, -5.0], [500, 2000, 500]))
        probs = next_token_distribution(logits, 1.0)
        cut = next_token_distribution(logits, 1.0, top_p=top_p)
        keep = nucleus_by_hand(probs, top_p)
        np.testing.assert_array_equal(cut > 0, keep)
        np.testing.assert_allclose(cut[keep], probs[keep] / probs[keep].sum(), rtol=1e-12)


def test_bad_sampling_settings_are_clear_errors():
    with pytest.raises(TinyGPTError, match="bad sampling settings"):
        next_token_distribution(np.zeros(3), -1.0)


def test_bad_sampling_settings_are_refused_before_the_first_token_even_when_greedy():
    # temperature 0 takes the logits' argmax without building a distribution; the other
    # settings are still checked, once, before anything runs
    model = char_model()
    for kwargs in ({"top_k": 0}, {"top_p": 2.0}, {"temperature": -1.0}):
        tokens = generate_ids(model, "we ", 5, **{"temperature": 0, **kwargs})
        with pytest.raises(TinyGPTError, match="bad sampling settings"):
            next(tokens)


def test_greedy_tokens_are_the_argmax_of_the_models_logits_at_every_step():
    from autograd import no_grad
    model = char_model(block_size=64)
    prompt = model.tokenizer.encode("hear me ")
    out = list(generate_ids(model, prompt, 12, temperature=0, stop_at_eot=False))
    ids = list(prompt)
    model.eval()
    with no_grad():
        for token in out:   # the whole sequence through the model, no cache, no generate_ids
            logits, _ = model(ids)
            assert token == int(np.argmax(backend.to_numpy(logits.data)[0, -1]))
            ids.append(token)


def test_the_original_readme_api_returns_text_from_an_untrained_gpt2(monkeypatch):
    # the README tinygpt grew from: model = GPT2(); model.generate("Once upon a time", max_length=100)
    import tinygpt.generate as gen
    from tinygpt import GPT2
    sampled, real = [], gen.generate_ids
    monkeypatch.setattr(gen, "generate_ids", lambda *a, **k: (sampled.append(t) or t for t in real(*a, **k)))
    model = GPT2()
    assert model.config.vocab_size == 50257 and model.tokenizer.kind == "gpt2"
    out = model.generate("Once upon a time", max_length=100)
    assert isinstance(out, str) and out.startswith("Once upon a time") and len(out) > len("Once upon a time")
    assert 1 <= len(sampled) <= 100            # max_length counts the new tokens (fewer if <|endoftext|> comes)


def test_a_model_with_another_vocabulary_and_no_tokenizer_says_how_to_pass_one():
    from tinygpt import GPT2, GPTConfig, TinyGPTError
    model = GPT2(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=8))
    assert model.tokenizer is None
    with pytest.raises(TinyGPTError, match=r"no tokenizer .*vocabulary of 65.*GPT2\(config, tokenizer=\.\.\.\)"):
        model.generate("Once upon a time", max_length=5)
    model.tokenizer = CharTokenizer([chr(32 + i) for i in range(65)])   # 65 characters for 65 ids
    assert model.generate("ONCE UPON A TIME", max_length=5).startswith("ONCE UPON A TIME")   # upper case: in it


@pytest.mark.parametrize("flag,chat_command,value,setting", [
    ("--temperature", "/temp", "-0.5", "temperature"),
    ("--top-p", "/topp", "1.5", "top_p"),
    ("--max-new-tokens", "/max", "0", "max_new_tokens"),
])
def test_the_command_line_and_the_chat_refuse_a_sampling_setting_by_the_one_rule(flag, chat_command, value,
                                                                                    setting, capsys):
    """generate.check_sampling is the one home of the rules: the command line and the chat
    word their own line around the rule it gives."""
    import io

    from tinygpt.chat import Chat
    from tinygpt.cli import build_parser
    from tinygpt.generate import SamplingError, check_sampling
    parse = float if setting != "max_new_tokens" else int
    with pytest.raises(SamplingError) as refused:
        check_sampling(**{setting: parse(value)})
    rule = refused.value.rule
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", flag, value])
    assert f"argument {flag}: {rule}" in capsys.readouterr().err
    out = io.StringIO()
    chat = Chat.__new__(Chat)                       # only its command handling is exercised
    chat.out, chat.debug = out, False
    chat.temperature, chat.top_k, chat.top_p, chat.max_new_tokens = 0.8, 200, None, 150
    chat.command(f"{chat_command} {value}")
    assert f"bad value {value!r} for {chat_command}: {setting} {rule}" in out.getvalue()
    assert (chat.temperature, chat.top_p, chat.max_new_tokens) == (0.8, None, 150)   # unchanged


def test_a_drawn_id_follows_the_distribution():
    probs = np.array([0.5, 0.0, 0.2, 0.3, 0.0])
    rng = np.random.default_rng(0)
    counts = np.bincount([draw(probs, rng) for _ in range(20000)], minlength=5)
    assert counts[1] == counts[4] == 0                                   # a cut token is never drawn
    # 20000 draws: each frequency within 4 standard deviations, sqrt(p(1-p)/n) <= 0.0036
    np.testing.assert_allclose(counts / 20000, probs, atol=4 * 0.0036)
    assert draw(np.array([0.0, 0.0, 1.0]), rng) == 2


@pytest.mark.parametrize("probs", [[0.5, np.nan, 0.5], [0.0, 0.0, 0.0]], ids=["nan", "zeros"])
def test_probabilities_that_are_no_distribution_are_a_clear_error(probs):
    with pytest.raises(TinyGPTError, match="not finite"):
        draw(np.array(probs), np.random.default_rng(0))


def test_a_model_with_nan_weights_says_so_when_sampling():
    model = char_model()
    model.transformer.ln_f.weight.data[...] = np.nan                   # every logit NaN
    with pytest.raises(TinyGPTError, match="not finite"):
        list(generate_ids(model, "ab", max_new_tokens=3, temperature=0.8, seed=0))


class FixedUniform:
    """A generator whose uniform draws are the value given."""
    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


def test_draw_at_the_ends_of_the_uniforms_range():
    # u = 0 must pass over the cut tokens in front
    assert draw(np.array([0.0, 0.0, 0.25, 0.75]), FixedUniform(0.0)) == 2
    # ten 0.1s add up to 1 - 2^-53 in float64, the largest uniform there is: still the last id
    largest_below_one = np.nextafter(1.0, 0.0)
    assert np.cumsum(np.full(10, 0.1))[-1] == largest_below_one
    assert draw(np.full(10, 0.1), FixedUniform(largest_below_one)) == 9


@pytest.mark.parametrize("top_k,top_p", [(None, None), (1, None), (40, None), (None, 0.9)])
def test_draw_gives_the_ids_numpys_choice_gives_for_the_same_seed(top_k, top_p):
    """The same tokens for a seed as before draw replaced rng.choice (which makes the same
    steps), and the generator left in the same state."""
    row = np.random.default_rng(7).standard_normal(50257) * 3
    probs = next_token_distribution(row, 0.8, top_k, top_p)
    for seed in range(300):
        ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
        assert [draw(probs, ours) for _ in range(3)] == [int(numpys.choice(probs.size, p=probs)) for _ in range(3)]
        assert ours.random() == numpys.random()


def test_top_k_zero_means_every_token_on_the_command_line_and_in_the_chat(capsys):
    """The chat's /topk 0 turned top-k off while --top-k 0 was refused; both now read a user's
    top-k through generate.top_k_from_user, and refuse a negative one by its rule."""
    import io

    from tinygpt.chat import Chat
    from tinygpt.cli import build_parser
    from tinygpt.generate import top_k_from_user
    assert build_parser().parse_args(["generate", "--top-k", "0"]).top_k is None
    assert build_parser().parse_args(["generate", "--top-k", "7"]).top_k == 7
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--top-k", "-1"])
    assert "argument --top-k: must be 0 (every token) or a positive integer, got -1" in capsys.readouterr().err
    out = io.StringIO()
    chat = Chat.__new__(Chat)                       # only its command handling is exercised
    chat.out, chat.debug = out, False
    chat.temperature, chat.top_k, chat.top_p, chat.max_new_tokens = 0.8, 200, None, 150
    chat.command("/topk 0")
    assert chat.top_k is None and "(top-k off)" in out.getvalue()
    chat.command("/topk -1")
    assert chat.top_k is None and "must be 0 (every token) or a positive integer, got -1" in out.getvalue()
    assert top_k_from_user(3) == 3



@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), np.float32("nan")])
def test_a_top_k_or_length_that_is_not_finite_is_a_clear_error_naming_it(value):
    """int() of NaN or infinity raised ValueError or OverflowError, not a SamplingError (the
    explorer's JSON API takes NaN and Infinity, and crashed on them)."""
    from tinygpt.generate import SamplingError, check_sampling, top_k_from_user
    with pytest.raises(SamplingError, match="top_k"):
        top_k_from_user(value)
    with pytest.raises(SamplingError, match="top_k"):
        check_sampling(top_k=value)
    with pytest.raises(SamplingError, match="max_new_tokens"):
        check_sampling(max_new_tokens=value)
    assert top_k_from_user(10 ** 400) == 10 ** 400                  # past float's range, yet whole and finite
    check_sampling(top_k=10 ** 400, max_new_tokens=10 ** 400)

def test_the_python_api_reads_top_k_and_the_length_as_the_command_line_does():
    """model.generate: top_k 0 is every token (as --top-k 0 and /topk 0), max_new_tokens=0
    is not replaced by max_length, and a length below 1 is refused, not answered with the
    prompt alone."""
    model = char_model()
    assert model.generate("first", max_length=6, temperature=0, top_k=0) == \
        model.generate("first", max_length=6, temperature=0, top_k=None)
    for kwargs in ({"max_length": 0}, {"max_length": -3}, {"max_new_tokens": 0}, {"top_k": -1}):
        with pytest.raises(TinyGPTError, match="max_length|max_new_tokens|top_k"):
            model.generate("first", **kwargs)
    assert len(model.generate("first", max_length=50, max_new_tokens=3, stop_at_eot=False)) == len("first") + 3
    with pytest.raises(TinyGPTError, match="max_length must be"):      # named as the caller named it
        model.generate("first", max_length=0)
    assert len(model.generate("first", max_length=3.0, stop_at_eot=False)) == len("first") + 3


def test_a_seed_past_floats_range_is_a_seed_like_any_other():
    """math.isfinite(10**400) raises OverflowError: the check of a seed crashed on it."""
    from tinygpt.generate import SamplingError, check_seed
    model = char_model()
    big = 10 ** 400
    check_seed(big)
    first = list(generate_ids(model, "fir", 5, seed=big))
    assert first == list(generate_ids(model, "fir", 5, seed=big))      # a seed: the same sample again
    for bad in (float("nan"), float("inf"), -1, 1.5):
        with pytest.raises(SamplingError, match="seed"):
            check_seed(bad)


def test_a_char_models_text_begins_with_the_prompt_it_saw(capsys):
    """Characters outside the alphabet are left out of what the model reads; the text handed
    back had begun with the prompt as typed, as if the continuation had followed them."""
    model = char_model()
    typed = model.generate("hear é me☃", max_length=6, temperature=0)
    assert "not in the model's alphabet" in capsys.readouterr().err
    clean = model.generate("hear  me", max_length=6, temperature=0)
    assert typed == clean and typed.startswith("hear  me") and len(typed) == len("hear  me") + 6
    ids = model.tokenizer.encode("hear")
    assert generate_text(model, ids, max_new_tokens=2, temperature=0).startswith("hear")   # ids: decoded as they are

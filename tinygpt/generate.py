"""Sampling text from a GPT2: temperature, top-k, top-p, a KV cache, streaming.

Each step turns the last position's logits z (V,) into a distribution:

    temperature tau:  p = softmax(z / tau)      (tau -> 0 is greedy: always the argmax)
    top-k:            keep the k largest p, renormalise
    top-p (nucleus):  keep the smallest set of most likely tokens whose total is >= p
                      (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration")

KV cache: the keys and values of tokens already seen do not change, so each new token
runs the model on that one token and attends to the cached keys; a token costs the
same however long the output is. Once the context is full the window slides: the cache
is rebuilt from the last ``block_size`` tokens (exactly what the model without a cache
computes), so greedy output is identical with and without the cache. On the CPU (float32,
numba there) each token after the prompt runs through the model in one compiled call
(tinygpt/fast_decode.py, checked equal to the model's forward); elsewhere through the
model's forward.

Sampling happens on the host in float64 with its own seeded generator.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from autograd import backend, no_grad
from autograd.kernels import cpu

from .errors import TinyGPTError, warn
from .model import KVCache
from .tokenizer import StreamDecoder


class SamplingError(TinyGPTError):
    """A sampling setting outside its range; ``setting`` and ``rule`` let each interface
    word its own line ("--top-p: must be in (0, 1], got 2")."""

    def __init__(self, setting: str, rule: str):
        self.setting, self.rule = setting, rule
        super().__init__(f"bad sampling settings: {setting} {rule}")


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_sampling(temperature=0.0, top_k=None, top_p=None, max_new_tokens=1) -> None:
    """The one home of the sampling settings' rules, used by generate, the command line,
    the chat and the explorer: temperature >= 0 (0: always the most likely token), top_k
    an integer >= 1 or None (every token), top_p in (0, 1] or None (off), max_new_tokens an
    integer >= 1. Raises SamplingError naming the first setting that breaks its rule."""
    if not (_number(temperature) and math.isfinite(temperature) and temperature >= 0):
        raise SamplingError("temperature", f"must be a number, 0 or more, got {temperature!r}")
    # -inf < x < inf: not NaN or infinite, which int() refuses; unlike math.isfinite it takes
    # an integer past float's range
    if top_k is not None and not (_number(top_k) and -math.inf < top_k < math.inf and int(top_k) == top_k
                                  and top_k >= 1):
        raise SamplingError("top_k", f"must be an integer, at least 1, got {top_k!r}")
    if top_p is not None and not (_number(top_p) and 0 < top_p <= 1):
        raise SamplingError("top_p", f"must be in (0, 1], got {top_p!r}")
    if not (_number(max_new_tokens) and -math.inf < max_new_tokens < math.inf
            and int(max_new_tokens) == max_new_tokens and max_new_tokens >= 1):
        raise SamplingError("max_new_tokens", f"must be an integer, at least 1, got {max_new_tokens!r}")


def check_seed(seed) -> None:
    """A sampling seed: None (a new sample each time) or a whole number, 0 or more (NumPy's
    generators take no negative seed). Raises SamplingError otherwise."""
    # -inf < seed < inf rather than math.isfinite, which overflows on an integer past float's range
    if seed is not None and not (_number(seed) and -math.inf < seed < math.inf and int(seed) == seed and seed >= 0):
        raise SamplingError("seed", f"must be a whole number, 0 or more, got {seed!r}")


def sample_seed(seed, index: int):
    """The seed of the index-th sample (or chat reply) of a run given ``seed``: the seed itself
    for the first, then one drawn from (seed, index), so that the samples of --seed 1 are not
    those of --seed 2 shifted by one (seed + index made them so). None stays None."""
    if seed is None or index == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


def top_k_from_user(value: int):
    """A top-k typed by a user (the command line, the chat): 0 turns top-k off (None, every
    token), an integer >= 1 keeps that many; anything else is a SamplingError."""
    if value == 0:
        return None
    # not NaN or infinite, which int() refuses (see check_sampling)
    if not (_number(value) and -math.inf < value < math.inf and int(value) == value and value >= 1):
        raise SamplingError("top_k", f"must be 0 (every token) or a positive integer, got {value!r}")
    return int(value)


def next_token_distribution(logits, temperature=1.0, top_k=None, top_p=None):
    """Probabilities (V,) float64 after temperature, top-k and top-p; cut tokens get 0.

    ``temperature`` 0 gives a one-hot on the argmax.
    """
    check_sampling(temperature, top_k, top_p)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore"):
        scaled = z / temperature if temperature != 0 else None
    # temperature 0, or one so small that z / temperature overflows (1e-320: inf - inf would be
    # NaN): the limit of softmax(z / tau) as tau -> 0, a one-hot on the argmax
    if temperature == 0 or (np.isinf(scaled).any() and np.isfinite(z).all()):
        probs = np.zeros_like(z)
        probs[int(np.argmax(z))] = 1.0
        return probs
    z = scaled
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if top_p is not None and top_p < 1.0:
        order, cumulative = _most_likely_first(probs, top_p)
        keep_sorted = cumulative - probs[order] < top_p      # the token that crosses p is kept
        keep = np.zeros(probs.size, dtype=bool)
        keep[order[keep_sorted]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return probs


def draw(probs, rng) -> int:
    """One token id drawn from ``probs`` (V,) by inverting its cumulative distribution: with
    u uniform in [0, 1), the first id whose running total of probabilities, divided by the
    whole total, exceeds u. Id j is drawn when u falls in an interval of length probs[j],
    so a token cut to 0 never is, even for u = 0 ("exceeds", not "reaches"); and divided by
    the total, the last running total is 1 exactly, above every u, even when the
    probabilities' own sum rounds to just below it. The same steps as ``rng.choice(V,
    p=probs)`` (one uniform from rng: the same ids for the same seed), without its checks
    that probs is a distribution, which next_token_distribution has made it: 0.16 against
    0.26 ms a token for GPT-2's 50257 ids (float64 running totals, as choice's). One check
    stays: probabilities that are NaN, or all 0, which a model whose weights diverged
    gives, are a clear error rather than token 0."""
    cumulative = np.cumsum(probs, dtype=np.float64)
    total = cumulative[-1]
    if not (np.isfinite(total) and total > 0):
        raise TinyGPTError(f"the next token's probabilities add up to {total}, not 1: the model's outputs (or "
                           "outputs / temperature) are not finite numbers; a checkpoint from a run that diverged?")
    cumulative /= total
    return int(cumulative.searchsorted(rng.random(), side="right"))


NUCLEUS_CANDIDATES = 1024


def _most_likely_first(probs, top_p):
    """Token ids from most to least likely (ties in id order) and the running total of their
    probabilities, at least as far as the total reaches ``top_p``; what top-p keeps is decided
    within it. Sorting all 50257 probabilities took 3.7 ms a token, more than a token of the
    default model; usually the nucleus lies among the NUCLEUS_CANDIDATES most likely tokens.
    Those are every token at least as likely as the 1024th (ties included, so the order
    among them is the full sort's); when their running total reaches top_p, the tokens after
    them are cut just as after a full sort (each would start at or past top_p); otherwise
    everything is sorted."""
    if probs.size > NUCLEUS_CANDIDATES:
        kth = np.partition(probs, -NUCLEUS_CANDIDATES)[-NUCLEUS_CANDIDATES]
        ids = np.flatnonzero(probs >= kth)                    # in id order
        order = ids[np.argsort(-probs[ids], kind="stable")]
        cumulative = np.cumsum(probs[order])
        if order.size and cumulative[-1] >= top_p:
            return order, cumulative
    order = np.argsort(-probs, kind="stable")
    return order, np.cumsum(probs[order])


def no_tokenizer_error(model) -> TinyGPTError:
    """What to say when text is asked of a model without a tokenizer."""
    return TinyGPTError(
        f"this model has no tokenizer to turn text into tokens and back (its vocabulary of "
        f"{model.config.vocab_size} is not GPT-2's 50257): pass one, GPT2(config, tokenizer=...) or "
        "model.tokenizer = ..., e.g. tinygpt.tokenizer.CharTokenizer.from_text(your_text) for characters; "
        "or give the prompt as a list of token ids to generate_ids")


def _integer_array(value) -> bool:
    """A 0-d array of an integer dtype (a CuPy array's elements are), which int() takes."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind is not None and kind in "iu" and getattr(value, "ndim", 1) == 0


def _start_ids(model, prompt):
    tok = model.tokenizer
    if isinstance(prompt, str):
        if tok is None:
            raise no_tokenizer_error(model)
        ids = tok.encode(prompt)
    else:
        ids = list(prompt)
        odd = [i for i in ids if isinstance(i, bool) or not (isinstance(i, numbers.Integral) or _integer_array(i))]
        if odd:   # int(1.7) would be token 1; [[1, 2]], a batch, is not one prompt
            raise TinyGPTError(f"a prompt of token ids takes whole numbers (one sequence), got {odd[0]!r}")
        ids = [int(i) for i in ids]
    if not ids:  # an empty prompt: start from end-of-text (BPE) or a newline (characters)
        if tok is not None and tok.eot_id is not None:
            ids = [tok.eot_id]
        elif tok is not None and "\n" in getattr(tok, "index", {}):
            ids = [tok.index["\n"]]
        else:
            ids = [0]
    bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
    if bad:
        raise TinyGPTError(f"token id {bad[0]} is outside the vocabulary of {model.config.vocab_size}")
    return ids


def _prefill(model, ids, capacity):
    """A new KV cache of ``capacity`` positions holding ``ids``, and the logits (V,) of their
    last position."""
    cache = KVCache(model.config, batch=1, dtype=model.transformer.wte.weight.dtype, capacity=capacity)
    logits, _ = model(ids, cache=cache, last_only=True)
    return cache, backend.to_numpy(logits.data[0, -1])


def compiled_step(model, cache):
    """``step(token) -> logits (V,)``, one token through the model in one compiled call
    (tinygpt/fast_decode.py), where it applies: on the CPU backend, float32, with the
    kernels' fast bodies on and numba there. None elsewhere: the caller runs the model."""
    if backend.name() != "numpy" or not backend.fast_kernels() or cpu.compiled() is None:
        return None
    from .fast_decode import CompiledDecoder
    if not CompiledDecoder.supports(model, cache):
        return None
    return CompiledDecoder(model, cache).step


def generate_ids(model, prompt, max_new_tokens=100, temperature=0.8, top_k=None, top_p=None, seed=None,
                 stop_at_eot=True, use_cache=True, on_logits=None):
    """Yield new token ids one by one (a generator: print them as they come).

    ``on_logits(logits_row)``, if given, sees each step's raw logits (V,) as a host
    array before sampling (the chat's /debug view uses it).
    """
    check_sampling(temperature, top_k, top_p)
    check_seed(seed)
    ids = _start_ids(model, prompt)
    block = model.config.block_size
    if len(ids) > block:
        warn(f"the prompt has {len(ids)} tokens, more than the context of {block}; keeping the last {block}")
        ids = ids[-block:]
    rng = np.random.default_rng(None if seed is None else int(seed))
    eot = model.tokenizer.eot_id if (stop_at_eot and model.tokenizer is not None) else None
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            cache = step = None
            if use_cache:
                # the cache holds the prompt and every new token but the last, unless the window
                # slides first: no more positions than that (pages of memory are touched as written)
                cache, row = _prefill(model, ids, min(block, len(ids) + max(max_new_tokens - 1, 0)))
                step = compiled_step(model, cache)
            for i in range(max_new_tokens):
                if not use_cache:
                    logits, _ = model(ids[-block:], last_only=True)
                    row = backend.to_numpy(logits.data[0, -1])         # (V,)
                if on_logits is not None:
                    on_logits(row)
                if temperature == 0:   # greedy: the logits' own argmax, no distribution to build (0.1 ms a token)
                    nxt = int(np.argmax(row))
                else:
                    probs = next_token_distribution(row, temperature, top_k, top_p)
                    nxt = draw(probs, rng)
                yield nxt
                ids.append(nxt)
                if (eot is not None and nxt == eot) or i == max_new_tokens - 1:
                    return
                if use_cache:
                    if cache.length >= block:   # the window slides: rebuild from the last block tokens
                        cache, row = _prefill(model, ids[-block:], block)
                        step = compiled_step(model, cache)
                    elif step is not None:
                        row = step(nxt)
                    else:
                        logits, _ = model([nxt], cache=cache, last_only=True)
                        row = backend.to_numpy(logits.data[0, -1])
    finally:
        model.train(was_training)


def stream_text(model, prompt, **kwargs):
    """Yield pieces of text as tokens are sampled (UTF-8 characters never split)."""
    if model.tokenizer is None:
        raise no_tokenizer_error(model)
    decoder = StreamDecoder(model.tokenizer)
    eot = model.tokenizer.eot_id
    for token in generate_ids(model, prompt, **kwargs):
        if token == eot:
            break
        piece = decoder.push(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def prompt_as_seen(model, prompt):
    """A text prompt as the model sees it. For a character model: without the characters
    outside its alphabet (encode leaves them out, with one warning), so that a prompt shown
    in front of a continuation is the text the continuation followed. Other prompts (GPT-2's
    BPE reads any text; a list of ids) are returned as they are."""
    tokenizer = model.tokenizer
    if isinstance(prompt, str) and getattr(tokenizer, "kind", None) == "char":
        return tokenizer.decode(tokenizer.encode(prompt))
    return prompt


def generate_text(model, prompt="", max_new_tokens=100, **kwargs) -> str:
    """The prompt (as the model saw it: prompt_as_seen) followed by the generated
    continuation, as one string."""
    if model.tokenizer is None:
        raise no_tokenizer_error(model)
    prompt = prompt_as_seen(model, prompt)
    text = "".join(stream_text(model, prompt, max_new_tokens=max_new_tokens, **kwargs))
    return (prompt if isinstance(prompt, str) else model.tokenizer.decode(prompt)) + text

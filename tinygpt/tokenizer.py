"""Tokenizers: GPT-2's byte-pair encoding (through tiktoken, offline) and characters.

GPT-2 BPE: the 50,256 merge ranks ship inside the package (assets/gpt2.tiktoken,
byte for byte the ``r50k_base`` file tiktoken downloads; see assets/PROVENANCE.md),
so no network is ever needed. ``<|endoftext|>`` is token 50256.

Character level: one token per distinct character of the training text, in sorted
order; its alphabet is saved with the checkpoint so that generation uses the same ids.
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import sys
from functools import lru_cache
from importlib import resources

from .errors import TinyGPTError

EOT = "<|endoftext|>"
GPT2_EOT_ID = 50256
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def _asset_bytes(name: str) -> bytes:
    return resources.files("tinygpt").joinpath("assets", name).read_bytes()


@lru_cache(maxsize=1)
def _gpt2_encoding():
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    data = _asset_bytes("gpt2.tiktoken")
    if hashlib.sha256(data).hexdigest() != GPT2_RANKS_SHA256:
        raise TinyGPTError("tinygpt/assets/gpt2.tiktoken is damaged (SHA-256 mismatch); reinstall tinygpt")
    # The file format: one "base64(token bytes) rank" pair per line.
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={EOT: GPT2_EOT_ID})


class GPT2Tokenizer:
    """GPT-2's BPE: ``encode("Hello world!") == [15496, 995, 0]``."""

    kind = "gpt2"
    vocab_size = 50257
    eot_id = GPT2_EOT_ID

    def __init__(self):
        self._enc = _gpt2_encoding()

    def encode(self, text: str, warn: bool = True) -> list[int]:
        """Token ids of ``text``; the literal ``<|endoftext|>`` becomes token 50256. (``warn``:
        as CharTokenizer's; every text has tokens here.)"""
        return self._enc.encode(text, allowed_special={EOT})

    def decode(self, ids) -> str:
        return self._enc.decode([int(i) for i in ids], errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._enc.decode_single_token_bytes(int(token_id))

    def token_str(self, token_id: int) -> str:
        """One token shown on its own (partial UTF-8 shown as replacement characters)."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": "gpt2"}


class CharTokenizer:
    """One token per character; the alphabet comes from the training text."""

    kind = "char"
    eot_id = None

    def __init__(self, chars):
        self.chars = list(chars)
        if not self.chars:
            raise TinyGPTError("a character tokenizer needs a non-empty alphabet")
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self._warned = False

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    def unknown(self, text: str) -> str:
        """The characters of ``text`` outside the alphabet, each once, sorted, as a warning
        shows them: quoted, at most 40 ("..." after); "" when there are none."""
        unknown = "".join(sorted({c for c in text if c not in self.index}))
        return "" if not unknown else repr(unknown[:40]) + ("..." if len(unknown) > 40 else "")

    def encode(self, text: str, warn: bool = True) -> list[int]:
        """Ids of the characters of ``text``; characters outside the alphabet are
        skipped, with one warning per tokenizer (none with ``warn=False``: the chat
        warns about each typed line itself)."""
        ids = [self.index[c] for c in text if c in self.index]
        if warn and len(ids) != len(text) and not self._warned:
            shown = self.unknown(text)
            skipped = len(text) - len(ids)
            percent = 100 * skipped / len(text)
            percent = "<1" if percent < 1 else ">99" if 99 < percent < 100 else f"{percent:.0f}"
            share = f"{skipped:,} of {len(text):,} characters, {percent}%"
            print(f"warning: characters not in the model's alphabet are skipped ({share}): {shown}", file=sys.stderr)
            self._warned = True
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[int(token_id)].encode("utf-8")

    def token_str(self, token_id: int) -> str:
        return self.chars[int(token_id)]

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": "".join(self.chars)}


def tokenizer_from_dict(d: dict):
    """Rebuild the tokenizer saved in a checkpoint."""
    kind = d.get("kind")
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        return CharTokenizer(list(d["chars"]))
    raise TinyGPTError(f"unknown tokenizer {kind!r} in checkpoint")


def make_tokenizer(kind: str, text: str | None = None):
    """``gpt2``, or ``char`` (built from ``text``)."""
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        if not text:
            raise TinyGPTError("the char tokenizer is built from the corpus, which is empty")
        return CharTokenizer.from_text(text)
    raise TinyGPTError(f"unknown tokenizer {kind!r}; choose gpt2 or char")


class StreamDecoder:
    """Turns token ids into text one at a time, holding back bytes of a UTF-8
    character that a BPE token split (so streamed output never shows half a character)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)

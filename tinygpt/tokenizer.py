"""Tokenizers: GPT-2's byte-pair encoding (through tiktoken, offline) and characters.

GPT-2 BPE: the 50,256 merge ranks ship inside the package (assets/gpt2.tiktoken,
byte for byte the ``r50k_base`` file tiktoken downloads; see assets/PROVENANCE.md),
so no network is ever needed. ``<|endoftext|>`` is token 50256.

Character level: one token per distinct character of the training text, in sorted
order; its alphabet is saved with the checkpoint so that generation uses the same ids.

``encode`` returns a list of ints (for prompts and chat lines); ``encode_array`` returns the
same ids as a NumPy array without making a Python int per token (a list costs 8 to 36 bytes a
token), for whole corpora.
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import sys
from functools import lru_cache
from importlib import resources

import numpy as np

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

    def encode_array(self, text: str, warn: bool = True) -> np.ndarray:
        """``encode(text)`` as a uint32 array, through tiktoken's ``encode_to_numpy`` where the
        installed tiktoken has it (4 bytes a token, where a list of ints takes 36)."""
        if not hasattr(self._enc, "encode_to_numpy"):
            return np.array(self.encode(text), dtype=np.uint32)
        try:
            return self._enc.encode_to_numpy(text, allowed_special={EOT})
        except UnicodeEncodeError:
            # lone surrogates: tiktoken's encode() replaces them this way, its encode_to_numpy() does not
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._enc.encode_to_numpy(text, allowed_special={EOT})

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
        self._table = None    # code point -> id, built by encode_array when first needed

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    def unknown(self, text: str) -> str:
        """The characters of ``text`` outside the alphabet, each once, sorted, as a warning
        shows them: quoted, at most 40 ("..." after); "" when there are none."""
        return _shown(sorted({c for c in text if c not in self.index}))

    def encode(self, text: str, warn: bool = True) -> list[int]:
        """Ids of the characters of ``text``; characters outside the alphabet are
        skipped, with one warning per tokenizer (none with ``warn=False``: the chat
        warns about each typed line itself)."""
        ids = [self.index[c] for c in text if c in self.index]
        if warn and len(ids) != len(text) and not self._warned:
            self._warn(len(text), len(text) - len(ids), self.unknown(text))
        return ids

    CHUNK = 1 << 20   # characters encoded at a time by encode_array: 4 MB of code points

    def encode_array(self, text: str, warn: bool = True) -> np.ndarray:
        """``encode(text)`` as a NumPy array (uint16, or uint32 for an alphabet of more than
        65,535 characters), with the same ids and the same one warning, made a slice of
        ``text`` at a time: its code points (UTF-32) are looked up in a table of all of
        Unicode, so a 50 MB text needs 100 MB of ids and a few MB besides."""
        table = self._code_point_table()
        missing = self.vocab_size                     # the table's value for a character not in the alphabet
        ids = np.empty(len(text), dtype=table.dtype)
        count, unknown = 0, set()
        for start in range(0, len(text), self.CHUNK):
            # "surrogatepass": a lone surrogate (possible in a str, never in decoded UTF-8) is a code point too
            points = np.frombuffer(text[start:start + self.CHUNK].encode("utf-32-le", "surrogatepass"), dtype="<u4")
            chunk = table[points]
            known = chunk != missing
            kept = chunk[known]
            ids[count:count + kept.size] = kept
            count += kept.size
            if kept.size != chunk.size and warn and not self._warned:
                unknown.update(np.unique(points[~known]).tolist())
        if warn and count != len(text) and not self._warned:
            self._warn(len(text), len(text) - count, _shown(sorted(map(chr, unknown))))
        ids.resize(count, refcheck=False)    # in place, the skipped characters' room freed (no view of ids is left)
        return ids

    def _code_point_table(self) -> np.ndarray:
        """(0x110000,) every Unicode code point's id; vocab_size for those outside the alphabet."""
        if self._table is None:
            dtype = np.uint16 if self.vocab_size <= 65535 else np.uint32   # room for the marker
            self._table = np.full(0x110000, self.vocab_size, dtype=dtype)
            for c, i in self.index.items():
                if len(c) == 1:       # one character each, as encode() can only match one
                    self._table[ord(c)] = i
        return self._table

    def _warn(self, length: int, skipped: int, shown: str) -> None:
        percent = 100 * skipped / length
        percent = "<1" if percent < 1 else ">99" if 99 < percent < 100 else f"{percent:.0f}"
        share = f"{skipped:,} of {length:,} characters, {percent}%"
        print(f"warning: characters not in the model's alphabet are skipped ({share}): {shown}", file=sys.stderr)
        self._warned = True

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[int(token_id)].encode("utf-8")

    def token_str(self, token_id: int) -> str:
        return self.chars[int(token_id)]

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": "".join(self.chars)}


def _shown(chars) -> str:
    """Characters as a warning shows them: quoted, at most 40 ("..." after); "" for none."""
    chars = "".join(chars)
    return "" if not chars else repr(chars[:40]) + ("..." if len(chars) > 40 else "")


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

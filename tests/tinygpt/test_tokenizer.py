"""Tokenizers: GPT-2 BPE offline from the shipped ranks, and characters."""
import os
import types

import numpy as np
import pytest

from tinygpt import TinyGPTError
from tinygpt.tokenizer import (CharTokenizer, GPT2Tokenizer, StreamDecoder, make_tokenizer,
                               tokenizer_from_dict)


def test_gpt2_bpe_encodes_hello_world_like_openai(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # nothing may be fetched or cached
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world!") == [15496, 995, 0]
    assert tok.encode("<|endoftext|>") == [50256] and tok.eot_id == 50256
    assert tok.vocab_size == 50257
    assert os.listdir(tmp_path) == []


def test_gpt2_bpe_round_trips_unicode():
    tok = GPT2Tokenizer()
    text = "Wherefore art thou, Romeo? — naïve café ✓ 東京"
    assert tok.decode(tok.encode(text)) == text


def test_stream_decoder_never_emits_half_a_character():
    tok = GPT2Tokenizer()
    ids = tok.encode("東京")                     # multi-byte characters split over byte tokens
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == "東京"
    assert all("\ufffd" not in p for p in pieces)


def test_char_tokenizer_round_trip_and_saved_alphabet():
    tok = CharTokenizer.from_text("to be or not to be")
    assert tok.vocab_size == len(set("to be or not to be"))
    assert tok.decode(tok.encode("be not")) == "be not"
    again = tokenizer_from_dict(tok.to_dict())
    assert again.chars == tok.chars and again.encode("to be") == tok.encode("to be")


def test_char_tokenizer_skips_unknown_characters_with_a_warning(capsys):
    tok = CharTokenizer.from_text("abc")
    assert tok.encode("abzc") == [0, 1, 2]
    assert "'z'" in capsys.readouterr().err


def test_char_tokenizer_warning_says_how_much_is_skipped_and_stays_short(capsys):
    # resuming a char run on the wrong corpus: the share tells the user most of it is lost
    tok = CharTokenizer.from_text("ab")
    text = "ab" + "".join(chr(0x4E00 + i) for i in range(98))   # 98 unknown characters of 100
    assert tok.encode(text) == [0, 1]
    err = capsys.readouterr().err
    assert "98 of 100 characters, 98%" in err
    assert len(err) < 200 and err.rstrip().endswith("...")   # 98 unknowns shown as the first 40
    for known, share in ((999, "1 of 1,000 characters, <1%"), (1, "999 of 1,000 characters, >99%")):
        CharTokenizer.from_text("a").encode("a" * known + "z" * (1000 - known))
        assert share in capsys.readouterr().err               # not "0%" and "100%"
    CharTokenizer.from_text("a").encode("zzz")
    assert "3 of 3 characters, 100%" in capsys.readouterr().err


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(TinyGPTError, match="choose gpt2 or char"):
        make_tokenizer("sentencepiece")


# Texts on which encode_array must give exactly encode()'s ids (the alphabet below lacks some of
# their characters): unknown, multi-byte and astral-plane characters, a byte-order mark, CR LF.
ALPHABET = "abc é東\n\ufeff😀"
TEXTS = {"empty": "", "known": "abc cab", "unknown": "abzc QQ", "multi_byte": "café 東京 naïve",
         "bom": "\ufeffabc", "crlf": "a\r\nb\r\n", "astral": "a😀b🎉c𝄞", "all_unknown": "XYZQRS",
         "lone_surrogate": "a\ud800b"}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize("chunk", [3, 1 << 20], ids=["small_chunks", "one_chunk"])
def test_char_encode_array_gives_the_ids_and_the_warning_of_encode(text, chunk, capsys, monkeypatch):
    monkeypatch.setattr(CharTokenizer, "CHUNK", chunk)     # slices that cut the text anywhere
    want = CharTokenizer.from_text(ALPHABET).encode(text)
    warned = capsys.readouterr().err
    ids = CharTokenizer.from_text(ALPHABET).encode_array(text)
    assert ids.dtype == np.uint16 and ids.tolist() == want
    assert capsys.readouterr().err == warned               # the same one warning, or none
    tok = CharTokenizer.from_text(ALPHABET)
    tok.encode_array(text)
    tok.encode_array(text)
    assert capsys.readouterr().err == warned                # once per tokenizer
    assert CharTokenizer.from_text(ALPHABET).encode_array(text, warn=False).tolist() == want
    assert capsys.readouterr().err == ""


def test_char_encode_array_of_an_alphabet_beyond_uint16_is_uint32():
    alphabet = [chr(i) for i in range(0x20000, 0x20000 + 70_000)]
    tok = CharTokenizer(alphabet)
    text = "".join(alphabet[::-997]) + "a"
    ids = tok.encode_array(text, warn=False)
    assert ids.dtype == np.uint32 and ids.tolist() == tok.encode(text, warn=False) and int(ids.max()) > 65535


@pytest.mark.parametrize("text", [*TEXTS.values(), "one<|endoftext|>two"], ids=[*TEXTS.keys(), "eot"])
def test_gpt2_encode_array_gives_the_ids_of_encode(text, monkeypatch):
    tok = GPT2Tokenizer()
    want = tok.encode(text)
    assert tok.encode_array(text).tolist() == want
    # a tiktoken without encode_to_numpy: the list, converted
    monkeypatch.setattr(tok, "_enc", types.SimpleNamespace(encode=tok._enc.encode))
    assert tok.encode_array(text).tolist() == want

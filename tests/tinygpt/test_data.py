"""Corpus loading, the token cache, the split and the batches; every bad input."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygpt import TinyGPTError
from tinygpt.data import TokenData, cache_dir, load_corpus
from tinygpt.tokenizer import CharTokenizer, GPT2Tokenizer


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))


def test_the_bundled_corpus_is_the_default():
    text, name = load_corpus(None)
    assert name == "shakespeare" and len(text) == 1_186_712


def test_a_folder_of_text_files_is_joined_in_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "notes.md").write_text("ignored")
    text, name = load_corpus(tmp_path)
    assert text == "first\n\nsecond" and name == tmp_path.name


def test_a_folder_is_read_through_links_to_folders_without_hidden_entries(tmp_path):
    """A linked subfolder had been skipped (Python 3.11's rglob does not follow it) and a
    hidden one read (.ipynb_checkpoints' copies, a .venv's licences)."""
    corpus, other = tmp_path / "corpus", tmp_path / "other"
    (corpus / "sub").mkdir(parents=True)
    other.mkdir()
    (corpus / "a.txt").write_text("A")
    (corpus / "sub" / "b.txt").write_text("B")
    (other / "c.txt").write_text("C")
    (corpus / "linked").symlink_to(other, target_is_directory=True)
    (corpus / "sub" / "loop").symlink_to(corpus, target_is_directory=True)     # must end
    (corpus / ".hidden").mkdir()
    (corpus / ".hidden" / "h.txt").write_text("H")
    (corpus / ".dot.txt").write_text("D")
    text, name = load_corpus(corpus)
    assert text == "A\n\nC\n\nB" and name == "corpus"


def test_a_run_folder_is_named_after_the_corpus_read_even_through_a_link_and_dotdot(tmp_path, monkeypatch):
    from tinygpt.data import corpus_name
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "a.txt").write_text("A")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "deep").symlink_to(tmp_path / "real" / "sub", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "proj")
    assert load_corpus("deep/..")[1] == corpus_name("deep/..") == "real"     # the folder read, not proj
    assert corpus_name(".") == "proj" and corpus_name("deep") == "deep"    # a link keeps its own name
    assert corpus_name("gone.txt") == "gone" and corpus_name("/") == "corpus"


def test_a_folder_that_cannot_be_read_is_an_error_not_a_gap(tmp_path, monkeypatch):
    # as root chmod 000 reads anyway: the refusal is made by the listing itself here
    import os
    corpus = tmp_path / "corpus"
    (corpus / "locked").mkdir(parents=True)
    (corpus / "a.txt").write_text("A")
    (corpus / "locked" / "x.txt").write_text("X")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(TinyGPTError, match=r"cannot read the folder .*locked: Permission denied"):
        load_corpus(corpus)


def test_windows_files_read_as_text_their_line_ends_and_mark_dropped_and_upper_case_names_count(tmp_path):
    (tmp_path / "A.TXT").write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    (tmp_path / "b.txt").write_bytes(b"caf\xc3\xa9\r\n")
    text, _ = load_corpus(tmp_path)
    assert text == "line one\nline two\n\n\ncaf\u00e9\n"
    assert "\r" not in text and "\ufeff" not in text


def test_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(TinyGPTError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")


def test_an_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(TinyGPTError, match=r"has no text \(it is empty, or only whitespace\)"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(TinyGPTError, match="no .txt files"):
        load_corpus(tmp_path / "sub")


def test_bytes_that_are_not_utf8_name_the_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(TinyGPTError, match=r"latin1\.txt is not UTF-8 text: byte 3 \(0xe9\)"):
        load_corpus(path)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_in_one_line_before_it_is_read(device, monkeypatch):
    """--data /dev/zero had been read until the memory ran out."""
    if not os.path.exists(device):
        pytest.skip(f"no {device} on this system")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} was read"))
    with pytest.raises(TinyGPTError, match=f"^{device} is a device, not a text file .*a pipe$"):
        load_corpus(device)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_dev_stdin_is_read_from_a_pipe_but_not_from_a_device():
    """A pipe on the standard input is a corpus; /dev/zero there is refused as by its name."""
    def load_stdin(**how):
        # the memory capped, so that reading /dev/zero ends in a MemoryError, not a stalled machine
        cap = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
        code = cap + "from tinygpt.data import load_corpus; print(load_corpus('/dev/stdin')[0], end='')"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                              cwd=Path(__file__).resolve().parents[2],
                              env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), **how)
    piped = load_stdin(input="to be or not to be\n")
    assert piped.returncode == 0 and piped.stdout == "to be or not to be\n", piped.stderr
    with open("/dev/zero", "rb") as zero:
        refused = load_stdin(stdin=zero)
    assert refused.returncode != 0 and "/dev/stdin is a device, not a text file" in refused.stderr, refused.stderr


def test_a_corpus_shorter_than_one_window_is_a_clear_error():
    text = "abcdefghij" * 3
    with pytest.raises(TinyGPTError, match="too short.*--block-size"):
        TokenData(text, CharTokenizer.from_text(text), block_size=8)


@pytest.mark.parametrize("text", ["XYZQRS" * 100, "a" + "XYZQRS" * 100], ids=["none_known", "one_known"])
def test_a_corpus_outside_a_char_models_alphabet_says_so_not_too_short(text):
    """--resume of a char run on a corpus of other characters had said "the corpus is too
    short: 0 tokens ... use more text or a smaller --block-size"."""
    with pytest.raises(TinyGPTError) as caught:
        TokenData(text, CharTokenizer.from_text("abc"), block_size=8)
    message = str(caught.value)
    assert message.startswith("the corpus's characters are not in the model's alphabet")
    assert "'QRSXYZ'" in message and "too short" not in message and "\n" not in message


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_the_tokens_and_their_cache_are_the_ids_encode_gives(kind):
    """The array path gives encode()'s ids, and the cache keeps its format (raw uint16), so
    that a cache written before it is read the same."""
    text = "\ufeffthe quick brown fox\r\njumps over the lazy dog: caf\u00e9, \u6771\u4eac, \U0001f600. " * 40
    tok = GPT2Tokenizer() if kind == "gpt2" else CharTokenizer.from_text(text[: len(text) // 2].replace("\u6771", ""))
    want = np.array(tok.encode(text, warn=False), dtype=np.uint16)
    data = TokenData(text, tok, block_size=8)
    np.testing.assert_array_equal(data.tokens, want)
    (cached,) = cache_dir().iterdir()
    assert cached.read_bytes() == want.tobytes()


def test_tokens_are_cached_as_uint16_and_reused():
    text = "the quick brown fox jumps over the lazy dog. " * 50
    tok = GPT2Tokenizer()
    first = TokenData(text, tok, block_size=8)
    files = list(cache_dir().iterdir())
    assert len(files) == 1 and files[0].stat().st_size == 2 * len(first.tokens)
    assert isinstance(first.tokens, np.memmap) and first.tokens.dtype == np.uint16
    second = TokenData(text, tok, block_size=8)
    np.testing.assert_array_equal(first.tokens, second.tokens)
    # a different tokenizer gets its own cache entry
    TokenData(text, CharTokenizer.from_text(text), block_size=8)
    assert len(list(cache_dir().iterdir())) == 2


@pytest.mark.parametrize("cut", [1, 2, "all"], ids=["odd_bytes", "one_token", "empty"])
def test_a_cache_file_cut_short_is_tokenized_again(cut):
    """An odd size and an empty file had been NumPy tracebacks; a cut of whole tokens had
    silently trained on fewer tokens."""
    text = "the quick brown fox jumps over the lazy dog. " * 50
    tok = GPT2Tokenizer()
    want = np.array(TokenData(text, tok, block_size=8).tokens)
    (cached,) = cache_dir().iterdir()
    whole = cached.read_bytes()
    cached.write_bytes(b"" if cut == "all" else whole[:-cut])
    again = TokenData(text, tok, block_size=8)
    np.testing.assert_array_equal(again.tokens, want)


def test_the_split_is_90_10_and_batches_are_shifted_windows():
    text = "".join(chr(97 + (i * 7) % 26) for i in range(2000))
    data = TokenData(text, CharTokenizer.from_text(text), block_size=16, seed=3)
    assert len(data.splits["train"]) == 1800 and len(data.splits["val"]) == 200
    x, y = data.get_batch("train", 5)
    assert x.shape == y.shape == (5, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_batches_are_reproducible_from_the_seed_and_the_saved_state():
    text = "".join(chr(97 + (i * 11) % 26) for i in range(3000))
    tok = CharTokenizer.from_text(text)
    a, b = TokenData(text, tok, 8, seed=1), TokenData(text, tok, 8, seed=1)
    np.testing.assert_array_equal(a.get_batch("train", 4)[0], b.get_batch("train", 4)[0])
    state = a.rng_state()
    expected = a.get_batch("train", 4)[0]
    c = TokenData(text, tok, 8, seed=99)
    c.set_rng_state(state)
    np.testing.assert_array_equal(c.get_batch("train", 4)[0], expected)


def test_a_large_text_is_announced_before_it_is_tokenized_and_not_when_cached(monkeypatch):
    import tinygpt.data as data_module
    monkeypatch.setattr(data_module, "LARGE_TEXT", 1000)    # so that a small text counts as large
    text = "the quick brown fox jumps over the lazy dog. " * 50  # 2250 characters
    said = []
    TokenData(text, GPT2Tokenizer(), block_size=8, say=said.append)
    assert len(said) == 1 and said[0].startswith("tokenizing 0 million characters") and "cached" in said[0]
    TokenData(text, GPT2Tokenizer(), block_size=8, say=said.append)   # from the cache: nothing to say
    TokenData(text[:900], GPT2Tokenizer(), block_size=8, say=said.append)   # below the threshold
    assert len(said) == 1

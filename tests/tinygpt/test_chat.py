"""The chat REPL, driven through a pipe."""
import io

from autograd import backend
from tinygpt import GPT2, GPTConfig
from tinygpt.chat import Chat
from tinygpt.tokenizer import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyz ,.?!\n"


def model(block_size=32):
    backend.seed(0)
    tok = CharTokenizer.from_text(TEXT)
    return GPT2(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=8),
                tokenizer=tok)


def chat(lines, **kw):
    out = io.StringIO()
    c = Chat(model(), stdin=io.StringIO("".join(line + "\n" for line in lines)), stdout=out, seed=0, **kw)
    c.run()
    return c, out.getvalue()


def test_piped_turns_each_get_a_reply_and_end_of_input_exits():
    c, out = chat(["hello there", "how are you"], max_new_tokens=8)
    assert out.count("bot> ") == 2
    assert c.turns[0] == "hello there" and c.turns[2] == "how are you" and len(c.turns) == 4


def test_commands_change_the_settings():
    c, out = chat(["/temp 0", "/topk 5", "/topp 0.9", "/max 7", "/help", "/nonsense", "/temp hot"])
    assert c.temperature == 0 and c.top_k == 5 and c.top_p == 0.9 and c.max_new_tokens == 7
    assert "/debug" in out and "unknown command /nonsense" in out and "bad value 'hot' for /temp" in out


def test_reset_forgets_and_quit_stops_reading():
    c, out = chat(["hi", "/reset", "/quit", "never read"], max_new_tokens=4)
    assert c.turns == [] and "(conversation cleared)" in out and out.count("bot> ") == 1


def debug_rows(out):
    """(chosen token, p model, p sampled, [(candidate, p model)]) for every /debug row."""
    import re
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s+'(.*?)'\s+([\d.]+)% ->\s+([\d.]+)%   \| (.*)$", line)
        if m:
            cands = re.findall(r"'(.*?)' ([\d.]+)%", m.group(4))
            rows.append((m.group(1), float(m.group(2)), float(m.group(3)), [(t, float(p)) for t, p in cands]))
    return rows


def test_debug_rows_show_the_chosen_token_before_and_after_the_settings_then_the_top_5():
    c, out = chat(["/debug", "hi"], max_new_tokens=3, temperature=0)
    lines = out.splitlines()
    assert lines[0] == "(debug view on)" and "each row: the token chosen" in lines[1]   # a one-line legend
    assert lines[2] == "bot>"                                  # in a pipe too, rows start on their own line
    rows = debug_rows(out)
    assert len(rows) == 3
    for token, before, after, cands in rows:
        assert len(cands) == 5
        # greedy: the chosen token is the model's most likely, drawn with probability 1
        assert after == 100.0 and cands[0] == (token, before)


def test_debug_shows_the_chosen_token_even_when_it_is_not_among_the_top_5():
    # top-k 3 at temperature 2 flattens the distribution: the chosen token is one of the
    # model's three most likely, and its sampled probability is about a third
    c, out = chat(["/debug", "/topk 3", "/temp 2", "hello", "again"], max_new_tokens=6)
    rows = debug_rows(out)
    assert len(rows) >= 6
    for token, before, after, cands in rows:
        assert token in [t for t, _ in cands[:3]] and 20.0 < after < 50.0
    # with no top-k, tokens outside the five shown get chosen too, and their row still names them
    c, out = chat(["/debug", "/topk 0", "/temp 1.5", "a", "b", "c"], max_new_tokens=10)
    rows = debug_rows(out)
    assert any(token not in [t for t, _ in cands] for token, _, _, cands in rows)


def test_the_oldest_turns_drop_first_when_the_context_is_full():
    c = Chat(model(block_size=32), stdin=io.StringIO(""), stdout=io.StringIO(), max_new_tokens=8)
    c.turns = ["first turn is long", "second turn", "third"]
    ids = c.context_ids()
    text = c.tok.decode(ids)
    assert len(ids) <= 32 - 8 and "third" in text and "first" not in text


def test_the_context_ends_with_a_blank_line_tokenized_as_in_running_text():
    # GPT-2 BPE merges a trailing "\n\n" into one token (628) that the corpus only has at
    # the end of a text; before a word the same blank line is two "\n" tokens (198, 198)
    from tinygpt.tokenizer import GPT2Tokenizer
    backend.seed(0)
    m = GPT2(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=1, n_embd=4), tokenizer=GPT2Tokenizer())
    c = Chat(m, stdin=io.StringIO(""), stdout=io.StringIO(), max_new_tokens=8)
    c.turns = ["Good morrow."]
    assert c.context_ids()[-2:] == [198, 198]
    assert m.tokenizer.encode("Good morrow.\n\nROMEO")[4:6] == [198, 198]   # as in the corpus
    assert m.tokenizer.encode("Good morrow.\n\n")[-1] == 628                  # what plain encoding gives


def test_a_reply_of_only_spaces_is_called_empty(monkeypatch):
    """A barely trained model may answer with spaces alone: the chat says so instead of
    leaving a blank line that looks stuck."""
    import tinygpt.chat as chat_module
    space = CharTokenizer.from_text(TEXT).encode(" ")[0]
    monkeypatch.setattr(chat_module, "generate_ids", lambda *a, **k: iter([space, space, space]))
    c, out = chat(["hello"], max_new_tokens=3)
    assert "bot>    (an empty reply)\n" in out
    monkeypatch.setattr(chat_module, "generate_ids", lambda *a, **k: iter(CharTokenizer.from_text(TEXT).encode("hi")))
    c, out = chat(["hello"], max_new_tokens=3)
    assert "bot> hi\n" in out and "empty" not in out


class Terminal(io.StringIO):
    """Typed lines, as from a terminal; None in ``lines`` is a Ctrl-C at the prompt."""

    def __init__(self, lines):
        super().__init__()
        self.lines = list(lines)

    def isatty(self):
        return True

    def readline(self):
        if not self.lines:
            return ""
        line = self.lines.pop(0)
        if line is None:
            raise KeyboardInterrupt
        return line + "\n"


def test_ctrl_c_in_a_terminal_stops_the_reply_or_clears_the_line_and_the_chat_goes_on(monkeypatch):
    from tinygpt import chat as chat_module
    real = chat_module.generate_ids
    calls = []

    def interrupted(*args, **kwargs):             # the first reply: three tokens, then Ctrl-C
        calls.append(1)
        for i, token in enumerate(real(*args, **kwargs)):
            if len(calls) == 1 and i == 3:
                raise KeyboardInterrupt
            yield token
    monkeypatch.setattr(chat_module, "generate_ids", interrupted)
    out = io.StringIO()
    c = Chat(model(), stdin=Terminal(["hello", None, "/temp 0", "again"]), stdout=out, seed=0,
             max_new_tokens=8, temperature=1.0)
    c.run()
    assert "(stopped)" in out.getvalue() and out.getvalue().count("bot> ") == 2
    assert len(c.turns) == 4 and len(c.turns[1]) <= 3        # the stopped reply is kept, as far as it went
    assert c.temperature == 0                                  # the settings survived both Ctrl-Cs


def test_ctrl_c_with_a_pipe_on_stdin_still_ends_the_chat(monkeypatch):
    from tinygpt import chat as chat_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield
    monkeypatch.setattr(chat_module, "generate_ids", interrupted)
    c = Chat(model(), stdin=io.StringIO("hello\n"), stdout=io.StringIO(), seed=0)
    try:
        c.run()
    except KeyboardInterrupt:
        return
    raise AssertionError("Ctrl-C in a pipe should end the chat")


def _context_by_dropping_one_turn_at_a_time(c):
    """The rule written plainly: every turn joined, the oldest dropped until the rest fits."""
    from tinygpt.chat import SEPARATOR
    block = c.model.config.block_size
    budget = max(block - c.max_new_tokens, block // 2)
    turns = list(c.turns)
    while True:
        ids = c.tok.encode(SEPARATOR.join(turns), warn=False) + c.separator_ids()
        if len(ids) <= budget or len(turns) == 1:
            return ids[-budget:]
        turns.pop(0)


def test_the_context_is_the_plain_rules_and_each_reply_encodes_only_what_can_fit(monkeypatch):
    """The context had been found by encoding the whole history once per dropped turn: a
    400-line conversation took 38 s instead of 1. It is the same context, from a bounded
    number of encodings of the newest turns."""
    from tinygpt.tokenizer import GPT2Tokenizer
    rng = __import__("numpy").random.default_rng(3)
    words = ["to", "be", "or", "not", "the", "question", "a", "Good morrow", "!", "\n"]
    for tok in (model().tokenizer, GPT2Tokenizer()):
        vocab = tok.vocab_size if hasattr(tok, "chars") else 50257
        m = GPT2(GPTConfig(vocab_size=vocab, block_size=48, n_layer=1, n_head=1, n_embd=4), tokenizer=tok)
        for max_new in (8, 30):
            c = Chat(m, stdin=io.StringIO(""), stdout=io.StringIO(), max_new_tokens=max_new)
            c.turns = [" ".join(rng.choice(words, size=rng.integers(1, 9))) for _ in range(400)]
            calls = []
            original = tok.encode
            monkeypatch.setattr(tok, "encode", lambda text, warn=True, calls=calls, original=original:
                                calls.append(len(text)) or original(text, warn))
            got = c.context_ids()
            assert sum(calls) < 2000                         # the newest turns, not 400 turns 400 times
            monkeypatch.undo()
            assert got == _context_by_dropping_one_turn_at_a_time(c)


def test_turns_that_merge_at_the_separators_still_get_the_plain_rules_context():
    # "\n" + "\n\n" + "\n" is two GPT-2 tokens, not three: the joined turns are shorter than
    # their lengths alone say, and the context takes the older turns that still fit
    from tinygpt.tokenizer import GPT2Tokenizer
    m = GPT2(GPTConfig(vocab_size=50257, block_size=64, n_layer=1, n_head=1, n_embd=4), tokenizer=GPT2Tokenizer())
    for turns in (["\n"] * 40, ["a\n", "\nb", "\n"] * 15, ["x" * 200]):
        c = Chat(m, stdin=io.StringIO(""), stdout=io.StringIO(), max_new_tokens=32)
        c.turns = list(turns)
        assert c.context_ids() == _context_by_dropping_one_turn_at_a_time(c)


def test_unknown_characters_are_warned_about_for_each_line_typed_and_only_those(capsys):
    _, out = chat(["hello WORLD", "fine", "and YOU"], max_new_tokens=4)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    # both lines with capitals, each naming its own; not the separator, not "fine"
    assert len(err) == 2 and "'DLORW'" in err[0] and "'OUY'" in err[1]
    assert "bot> warning" not in out


def test_the_separator_is_not_warned_about_when_the_alphabet_has_no_newline(capsys):
    backend.seed(0)
    tok = CharTokenizer.from_text("ab ")
    m = GPT2(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=4), tokenizer=tok)
    Chat(m, stdin=io.StringIO("ab ba\nab\n"), stdout=io.StringIO(), max_new_tokens=3, seed=0).run()
    assert "warning" not in capsys.readouterr().err          # it had warned about '\n', which no one typed


def test_a_line_of_only_unknown_characters_is_not_sent(capsys):
    """It had been sent as an empty turn, and the model answered the blank context."""
    c, out = chat(["HELLO", "hi"], max_new_tokens=4)
    assert "(none of 'EHLO' is in the model's alphabet: the line was not sent)" in out
    assert out.count("bot> ") == 1 and c.turns[0] == "hi"


def test_debug_takes_on_and_off_and_refuses_anything_else():
    c, out = chat(["/debug off", "/debug off", "/debug banana", "/debug on", "/debug"])
    assert out.splitlines()[:2] == ["(debug view off)", "(debug view off)"]   # 'off' had switched it on
    assert "bad value 'banana' for /debug" in out and not c.debug          # on, then switched off again


def test_debug_keeps_only_the_latest_steps_logits(monkeypatch):
    """Every step's logits row (V floats: 200 KB for GPT-2) was kept for the whole reply."""
    import gc
    import weakref

    import numpy as np

    import tinygpt.chat as chat_module
    alive = []

    def fake_generate_ids(model, ids, max_new_tokens, on_logits=None, **kw):
        for step in range(max_new_tokens):
            row = np.zeros(model.config.vocab_size, dtype=np.float32)
            row[step % 5] = 1.0
            alive.append(weakref.ref(row))
            on_logits(row)
            del row
            gc.collect()
            assert sum(ref() is not None for ref in alive) <= 1       # the chat holds the latest one only
            yield 0
    monkeypatch.setattr(chat_module, "generate_ids", fake_generate_ids)
    chat(["/debug", "hi"], max_new_tokens=6)
    assert len(alive) == 6


def test_bytes_that_are_not_utf8_on_stdin_are_replaced_not_a_traceback(tmp_path):
    """A strict UTF-8 standard input (a usual desktop locale) raised UnicodeDecodeError on the
    whole chunk: not even the valid line before the bad one got a reply."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    model().save(tmp_path / "m")
    result = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--checkpoint", str(tmp_path / "m"),
                             "--max-new-tokens", "3", "--seed", "1"], input=b"hello\nhel\xff\xfelo\n",
                            capture_output=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
                            env=dict(os.environ, PYTHONIOENCODING="utf-8:strict"))
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert result.stdout.count(b"bot> ") == 2

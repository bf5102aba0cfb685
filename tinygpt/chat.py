"""A terminal conversation with a trained model.

The conversation is kept as turns of text separated by a blank line; each reply is
the model's continuation of the whole conversation, up to the next blank line (or
<|endoftext|>, or the token limit). When the conversation no longer fits in the
context window, the oldest turns are dropped first.

Commands: /help /reset /temp X /topk K /topp P /max N /debug /quit. ``/debug``
shows one row per generated token: the token, its probability under the model and
under the sampling settings (temperature, top-k, top-p: the distribution it was
actually drawn from), then the model's five most likely tokens at that step.
Ctrl-D (end of input) leaves; in a terminal Ctrl-C stops the reply being written (what
was written stays in the conversation) or clears the line being typed, as in Python's
own prompt. A pipe on stdin works too (one turn per line; there Ctrl-C ends the chat).
"""
from __future__ import annotations

import sys

import numpy as np


from .generate import (SamplingError, check_sampling, generate_ids, next_token_distribution, no_tokenizer_error,
                       sample_seed, top_k_from_user)
from .tokenizer import StreamDecoder

SEPARATOR = "\n\n"
DEBUG_LEGEND = ("  each row: the token chosen, its probability under the model -> under /temp /topk /topp "
                "(what it was drawn from) | the model's five most likely tokens")

HELP = """commands:
  /help        this list
  /reset       forget the conversation
  /temp X      sampling temperature (0 = greedy), now {temperature}
  /topk K      sample among the K most likely tokens (0 = all), now {top_k}
  /topp P      nucleus sampling threshold in (0, 1] (1 = off), now {top_p}
  /max N       at most N tokens per reply, now {max_new_tokens}
  /debug       show each generated token's probabilities and the model's top 5 ({debug}; on, off)
  /quit        leave (Ctrl-D too)"""


class Chat:
    def __init__(self, model, temperature=0.8, top_k=200, top_p=None, max_new_tokens=150, seed=None,
                 stdin=None, stdout=None):
        if model.tokenizer is None:          # before the first turn, not as a traceback inside it
            raise no_tokenizer_error(model)
        self.model = model
        self.tok = model.tokenizer
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.max_new_tokens = max_new_tokens
        self.rng_seed = seed
        self.turns: list[str] = []
        self._lengths: dict[str, int] = {}
        self.debug = False
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.interactive = hasattr(self.stdin, "isatty") and self.stdin.isatty()

    # ------------------------------------------------------------------ io
    def _write(self, text):
        self.out.write(text)
        self.out.flush()

    def _read(self):
        if self.interactive and self.stdin is sys.stdin:
            try:
                return input("you> ")
            except EOFError:
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def run(self):
        if hasattr(self.stdin, "reconfigure"):
            # bytes that are not UTF-8 (a Latin-1 terminal, a binary pipe) become U+FFFD, as the
            # corpus reader would not take them either; strict decoding raised on the whole chunk
            self.stdin.reconfigure(errors="replace")
        if self.interactive:
            cfg = self.model.config
            self._write(f"chatting with a {cfg.n_layer}-layer model (context {cfg.block_size} tokens). "
                        "/help for commands, Ctrl-C stops a reply, Ctrl-D leaves.\n")
        while True:
            try:
                line = self._read()
            except KeyboardInterrupt:
                if not self.interactive:
                    raise
                self._write("\n")                 # Ctrl-C at the prompt: the line is dropped, a new prompt
                continue
            if line is None:
                if self.interactive:
                    self._write("\n")
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            self.reply(line)

    # ------------------------------------------------------------------ commands
    def command(self, line) -> bool:
        """Handle a /command; False means quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            if name in ("/quit", "/exit"):
                return False
            if name == "/help":
                self._write(HELP.format(temperature=self.temperature, top_k=self.top_k or "off",
                                        top_p=self.top_p or "off", max_new_tokens=self.max_new_tokens,
                                        debug="on" if self.debug else "off") + "\n")
            elif name == "/reset":
                self.turns, self._lengths = [], {}
                self._write("(conversation cleared)\n")
            elif name == "/temp":
                value = float(arg)
                check_sampling(temperature=value)
                self.temperature = value
                self._write(f"(temperature {value})\n")
            elif name == "/topk":
                self.top_k = top_k_from_user(int(arg))         # 0: off
                self._write(f"(top-k {self.top_k or 'off'})\n")
            elif name == "/topp":
                value = float(arg)
                check_sampling(top_p=value)
                self.top_p = None if value == 1 else value     # 1: off
                self._write(f"(top-p {self.top_p or 'off'})\n")
            elif name == "/max":
                value = int(arg)
                check_sampling(max_new_tokens=value)
                self.max_new_tokens = value
                self._write(f"(at most {value} tokens per reply)\n")
            elif name == "/debug":
                if arg not in ("", "on", "off"):
                    raise ValueError(arg)
                self.debug = not self.debug if not arg else arg == "on"    # no argument: switch it
                self._write(f"(debug view {'on' if self.debug else 'off'})\n")
                if self.debug:
                    self._write(DEBUG_LEGEND + "\n")
            else:
                self._write(f"unknown command {name}; /help lists them\n")
        except ValueError:
            self._write(f"bad value {arg!r} for {name}; /help shows what it takes\n")
        except SamplingError as exc:
            self._write(f"bad value {arg!r} for {name}: {exc.setting} {exc.rule}\n")
        return True

    # ------------------------------------------------------------------ replies
    def separator_ids(self) -> list[int]:
        """The separator's tokens as they appear in running text, before a word.

        BPE tokenizes a blank line at the very end of a text differently (one merged
        token) from a blank line followed by more text (as in the training corpus); a
        context ending in the merged token leaves the model somewhere it has never been.
        """
        ids = self.tok.encode(SEPARATOR + "a", warn=False)
        tail = self.tok.encode("a", warn=False)
        return ids[:-len(tail)] if ids[-len(tail):] == tail else self.tok.encode(SEPARATOR, warn=False)

    def _length(self, turn: str) -> int:
        """Tokens of one turn alone, remembered (the turns do not change once said)."""
        if turn not in self._lengths:
            self._lengths[turn] = len(self.tok.encode(turn, warn=False))
        return self._lengths[turn]

    def context_ids(self) -> list[int]:
        """The conversation's tokens, oldest turns dropped until there is room to reply.

        The newest turns that might fit are found from each turn's own length, one more is
        added, and those are encoded together; then the oldest are dropped while the joined
        tokens are too many, or older turns taken while they still fit (joined text can
        tokenize shorter at the separators). The result is the longest run of newest turns
        that fits, as dropping one turn at a time from the whole history gives, but each
        reply encodes about what the context holds: re-encoding the whole history once per
        dropped turn had made a 400-line conversation take 38 s instead of 1."""
        block = self.model.config.block_size
        budget = max(block - self.max_new_tokens, block // 2)
        separator, estimate, keep = len(self.separator_ids()), 0, 0
        for turn in reversed(self.turns):
            keep += 1
            estimate += self._length(turn) + separator
            if estimate > budget:
                break
        start = max(0, len(self.turns) - keep - 1)

        def encoded(first):
            return self.tok.encode(SEPARATOR.join(self.turns[first:]), warn=False) + self.separator_ids()
        ids = encoded(start)
        while len(ids) > budget and start < len(self.turns) - 1:   # too many: drop the oldest
            start += 1
            ids = encoded(start)
        while start > 0 and len(ids) <= budget:                    # room left (turns that merge at the
            longer = encoded(start - 1)                             # separators): take older ones
            if len(longer) > budget:
                break
            start, ids = start - 1, longer
        return ids[-budget:]

    def reply(self, text: str) -> str:
        unknown = self.tok.unknown(text) if hasattr(self.tok, "unknown") else ""
        if unknown and not self.tok.encode(text, warn=False):   # nothing left to say: no turn, no reply
            self._write(f"(none of {unknown} is in the model's alphabet: the line was not sent)\n")
            return ""
        if unknown:   # each line that has some, on its own line; the context's own separators are not the user's
            print(f"warning: not in the model's alphabet, left out of this line: {unknown}", file=sys.stderr)
        self.turns.append(text)
        decoder = StreamDecoder(self.tok)
        reply, pending, started = "", "", False
        seen = [None]                                 # the latest step's logits (a row of V), for /debug
        on_logits = (lambda row: seen.__setitem__(0, row)) if self.debug else None
        seed = sample_seed(self.rng_seed, len(self.turns) - 1)     # the first reply: --seed itself
        self._write("bot>\n" if self.debug else "bot> ")   # debug rows start on their own lines
        stopped = False
        try:
            for token in generate_ids(self.model, self.context_ids(), max_new_tokens=self.max_new_tokens,
                                      temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                                      seed=seed, on_logits=on_logits):
                if token == self.tok.eot_id:
                    break
                piece = decoder.push(token)
                reply += piece
                if SEPARATOR in reply.lstrip("\n"):
                    reply = reply.lstrip("\n").split(SEPARATOR)[0]
                    break
                if self.debug:
                    self._debug_line(token, seen[0])
                    continue
                pending += piece
                if not started:                       # a reply never starts with blank lines
                    pending = pending.lstrip("\n")
                shown = pending.rstrip("\n")           # newlines wait: they may begin the separator
                if shown:
                    self._write(shown)
                    pending = pending[len(shown):]
                    started = True
        except KeyboardInterrupt:                     # Ctrl-C in a terminal: this reply stops, the chat goes on
            if not self.interactive:
                raise
            stopped = True
        reply = reply.strip("\n")
        if self.debug:
            self._write(f"(reply: {reply!r})" + (" (stopped)" if stopped else "") + "\n")
        elif stopped:
            self._write((" " if started else "") + "(stopped)\n")
        else:   # nothing but spaces, or the turn ended at once: say so, or the chat looks stuck
            self._write("\n" if reply.strip() else "(an empty reply)\n")
        self.turns.append(reply)
        return reply

    def _debug_line(self, token, logits):
        """One row: the chosen token, p(model) -> p(sampled from), then the model's top 5."""
        model = next_token_distribution(logits, 1.0)                     # the model's own softmax
        sampled = next_token_distribution(logits, self.temperature, self.top_k, self.top_p)
        top = np.argsort(-model, kind="stable")[:5]
        cands = "  ".join(f"{self.tok.token_str(int(i))!r} {model[i]:.1%}" for i in top)
        chosen = f"{self.tok.token_str(token)!r:>14} {model[token]:6.1%} -> {sampled[token]:6.1%}"
        self._write(f"  {chosen}   | {cands}\n")

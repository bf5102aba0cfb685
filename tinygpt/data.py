"""Text in, batches of token ids out.

1. ``load_corpus(path)``: a .txt file, or a folder of them (joined in sorted order,
   separated by a blank line), or a pipe (/dev/stdin); ``None`` means the bundled
   Shakespeare. Bytes that are not UTF-8 are reported with the file and byte offset; a
   device (/dev/zero, a disk) is refused, as reading it would not end with its text.
2. ``TokenData``: the text is tokenized once and cached as a uint16 memory-mapped file
   named by the text's SHA-256, the tokenizer and the token count, so a second run starts
   instantly (and a file cut short, whose size is not twice its count, is tokenized again).
   The tokens come from the tokenizer's ``encode_array`` (no Python int per token). The
   first 90% of the tokens train, the last 10% validate.
3. ``get_batch``: B random windows of T+1 tokens from one split, drawn with the
   dataset's own seeded generator (its state is saved in checkpoints, so a resumed run
   draws exactly the batches the uninterrupted run would have).
4. Under mpiexec every rank draws its own batches: rank r's generator is seeded by
   ``stream_seed(seed, r)``, a child of ``seed`` independent of every other rank's.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from importlib import resources
from pathlib import Path

import numpy as np


from .errors import TinyGPTError


BUNDLED_NAME = "shakespeare"
TRAIN_FRACTION = 0.9
LARGE_TEXT = 20_000_000   # characters: tokenizing more takes seconds (about 2 s per 20 MB here), so it is announced


def cache_dir() -> Path:
    """Where token caches live: $TINYGPT_CACHE, else ~/.cache/tinygpt."""
    root = os.environ.get("TINYGPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinygpt")
    return Path(root) / "tokens"


def _read_text(path: Path) -> str:
    """A text file's text: UTF-8, with Windows line ends (CR LF) read as LF and a leading
    byte-order mark dropped; else one line saying where the bytes are not UTF-8. (A lone
    CR, old Mac line ends, stays as it is.)"""
    _refuse_a_device(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise TinyGPTError(f"{path} is not UTF-8 text: byte {exc.start} (0x{data[exc.start]:02x}) "
                           "cannot be decoded; convert the file to UTF-8") from None


def _refuse_a_device(path: Path) -> None:
    """One line for a character or block device (/dev/zero, /dev/urandom, a disk), which had
    been read until the memory ran out. Read are regular files, pipes (``--data /dev/stdin``
    fed by ``cat``) and the terminal on the standard input (text typed, ended by Ctrl-D)."""
    info = path.stat()    # through links: /dev/stdin is a link to what fd 0 is
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        return
    if os.isatty(0) and os.fstat(0).st_rdev == info.st_rdev:
        return
    raise TinyGPTError(f"{path} is a device, not a text file (reading it would not stop at the end of a text); "
                       "give a .txt file, a folder of them, or a pipe")


def corpus_name(path=None) -> str:
    """The name a corpus gives its default run folder (runs/<name>), without reading it:
    a file's stem, a folder's name, ``shakespeare`` for the bundled corpus. The path is
    made absolute first (through its links where it has ".."), so that ``--data .`` names the
    folder it is (its last part had been empty: runs/), and a file gives its stem whether or
    not it is still there (a --resume whose corpus was deleted finds its run, then says so)."""
    if path is None:
        return BUNDLED_NAME
    p = Path(path).expanduser()
    # ".." after a link is the link target's parent (the folder read), so it is resolved then
    p = Path(os.path.realpath(p) if ".." in p.parts else os.path.abspath(p))
    return (p.name if p.is_dir() else p.stem) or "corpus"     # "corpus": the root folder


def text_files(folder: Path) -> list[Path]:
    """The .txt files under ``folder`` (NOTES.TXT too), in sorted order: in its subfolders
    as well, through links to folders (each folder once, so a link loop ends), leaving out
    hidden files and folders (".git", ".ipynb_checkpoints", a ".venv" full of licences). A
    folder that cannot be read is an error rather than a silent gap in the corpus."""
    found, seen = [], set()

    def refuse(exc):
        raise TinyGPTError(f"cannot read the folder {exc.filename}: {exc.strerror or exc}") from None
    for top, folders, names in os.walk(folder, onerror=refuse, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:                     # reached again through a link: already listed
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [Path(top) / n for n in names if not n.startswith(".") and n.lower().endswith(".txt")
                  and (Path(top) / n).is_file()]
    return sorted(found)


def load_corpus(path=None) -> tuple[str, str]:
    """(text, name) of a .txt file, a folder of .txt files, or the bundled corpus."""
    if path is None:
        text = resources.files("tinygpt").joinpath("assets", "shakespeare.txt").read_text(encoding="utf-8")
        return text, BUNDLED_NAME
    p = Path(path).expanduser()
    if not p.exists():
        raise TinyGPTError(f"data path {path} does not exist")
    if p.is_dir():
        files = text_files(p)
        if not files:
            raise TinyGPTError(f"folder {path} has no .txt files")
        text = "\n\n".join(_read_text(f) for f in files)
    else:
        text = _read_text(p)
    if not text.strip():
        raise TinyGPTError(f"the corpus at {path} has no text (it is empty, or only whitespace)")
    return text, corpus_name(p)


def stream_seed(seed: int, rank: int = 0, step: int | None = None):
    """The seed of rank ``rank``'s random stream, as a ``numpy.random.SeedSequence``.

    Rank 0 of a fresh run gets ``seed`` itself, so one process draws exactly what it
    always drew. Rank r > 0 gets the child of ``seed`` with spawn key (r,) (NumPy's way
    of deriving independent streams from one seed); ``step`` (a run resumed on a
    different number of ranks) adds it to the key, so that a rank's new stream does
    not replay batches from the start of the run.
    """
    key = () if step is None else (int(step),)
    if rank or step is not None:
        key = (int(rank),) + key
    return np.random.SeedSequence(int(seed), spawn_key=key)


class TokenData:
    """The corpus as token ids, split 90/10, with seeded random windows.

    ``seed``: an int or a ``SeedSequence`` (see ``stream_seed``). ``write_cache=False``
    reads the token cache if it is there but never writes it (ranks other than 0). ``say``
    (a print function) is told when a large text is about to be tokenized."""

    def __init__(self, text: str, tokenizer, block_size: int, seed=0, write_cache: bool = True, say=None):
        self.block_size = int(block_size)
        self.corpus_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]   # names the text (and its cache)
        self.tokens = self._tokens(text, tokenizer, write_cache, say, key=self.corpus_sha)
        n = len(self.tokens)
        cut = int(n * TRAIN_FRACTION)
        self.splits = {"train": self.tokens[:cut], "val": self.tokens[cut:]}
        need = self.block_size + 1
        for split, ids in self.splits.items():
            if len(ids) < need:
                # a char model's alphabet lacks most of the text (a --resume on another corpus):
                # the text's characters, not its length, are what to change
                skipped = len(text) - n if tokenizer.kind == "char" else 0
                if skipped > len(text) / 2:
                    raise TinyGPTError(
                        f"the corpus's characters are not in the model's alphabet: {skipped:,} of its {len(text):,} characters "
                        f"are not (such as {tokenizer.unknown(text)}); use the corpus the model was trained on, "
                        "or train a new model on this one")
                raise TinyGPTError(
                    f"the corpus is too short: {n} tokens give a {split} split of {len(ids)}, but one "
                    f"window of context {self.block_size} needs {need}; use more text or a smaller --block-size")
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _tokens(text: str, tokenizer, write_cache, say, key: str):
        tok = tokenizer.to_dict()
        tok_key = hashlib.sha256(json.dumps(tok, sort_keys=True).encode()).hexdigest()[:12]
        prefix = f"{key}-{tok['kind']}-{tok_key}"
        for cached in sorted(cache_dir().glob(prefix + "-*.u16")):   # "-<count>": a cut file is not used
            count = cached.stem.rsplit("-", 1)[1]
            try:
                whole = count.isdigit() and int(count) > 0 and cached.stat().st_size == 2 * int(count)
            except OSError:
                whole = False
            if whole:
                return np.memmap(cached, dtype=np.uint16, mode="r")
        if say is not None and len(text) >= LARGE_TEXT:
            say(f"tokenizing {len(text) / 1e6:.0f} million characters (once: the tokens are cached for the "
                "next run) ...")
        if hasattr(tokenizer, "encode_array"):
            ids = tokenizer.encode_array(text)    # (N,) uint16 or uint32, as encode(text) gives them
        else:                                     # a tokenizer of the user's own, with encode() only
            ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
        if ids.size and int(ids.max()) > 65535:
            raise TinyGPTError("token ids above 65535 do not fit the uint16 cache")
        ids = ids.astype(np.uint16, copy=False)   # the cache's format, unchanged: an old cache reads the same
        if not write_cache or not ids.size:
            return ids
        path = cache_dir() / f"{prefix}-{ids.size}.u16"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            ids.tofile(tmp)
            os.replace(tmp, path)  # atomic: a reader never sees half a cache
            return np.memmap(path, dtype=np.uint16, mode="r")
        except OSError:
            return ids  # an unwritable cache folder only costs the re-tokenization next time

    def get_batch(self, split: str, batch_size: int, rng=None):
        """x, y: (B, T) int64 host arrays; y is x shifted left by one token."""
        ids = self.splits[split]
        rng = self.rng if rng is None else rng
        starts = rng.integers(0, len(ids) - self.block_size, size=batch_size)   # (B,)
        offsets = np.arange(self.block_size + 1)                                 # (T+1,)
        windows = np.asarray(ids[starts[:, None] + offsets], dtype=np.int64)     # (B, T+1)
        return windows[:, :-1], windows[:, 1:]

    def rng_state(self) -> dict:
        return _jsonable(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "item"):
        return obj.item()
    return obj
